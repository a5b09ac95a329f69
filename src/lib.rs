//! pleo-gateway: an authenticating reverse proxy in front of Pleo's External API.
//!
//! `steps/` holds the request's path, one file per step in the order a
//! request travels (`stack.rs` assembles them; docs/architecture.md). Below the steps, in layers that only import downwards
//! (`tests/module_layers.rs` keeps it so; docs/architecture.md explains
//! them): types (`secret`, `share`, `tls`, `error`), `config`, `access_log`
//! and `metrics`, `body` and `clients`, `upstream`, `credential`, `routes`.
//! Above them: `key_checks`, `listener`, then `stack`, `admin`, `reload`,
//! `connect`, `manage`, `sandbox` (the offline stand-in for Pleo), and
//! `gateway`, which starts and stops it all.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod clients;
pub mod config;
pub mod connect;
pub mod connections;
pub mod credential;
pub mod error;
pub mod explain;
pub mod gateway;
pub mod key_checks;
pub mod listener;
pub mod manage;
pub mod metrics;
pub mod migration;
pub mod portal;
pub mod reload;
pub mod routes;
pub mod sandbox;
pub mod secret;
pub mod share;
pub mod stack;
pub mod steps;
pub mod tls;
pub mod upstream;

/// The error type tower's `Filter` and our services exchange. Gateway refusals
/// travel inside it as [`error::GatewayError`] and are recovered by the rescue.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
