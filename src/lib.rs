//! pleo-gateway: an authenticating reverse proxy in front of Pleo's External API.
//!
//! One home for each concept (docs/architecture.md draws the layers;
//! `tests/it/module_layers.rs` keeps imports pointing down):
//!
//! - `proxy/`: the request's path. `stack.rs` assembles the steps
//!   (`steps/`, one file each, in the order a request travels), `routes.rs`
//!   is the routing table they read, `explain.rs` the dry run over the same
//!   steps.
//! - `pleo/`: the one client of Pleo's own endpoints (token endpoint,
//!   installation, authorize URL and PKCE), with one timeout policy.
//! - `state/`: everything kept between requests (token chains, links,
//!   onboarded keys) in one store, files or PostgreSQL.
//! - `credential/`: a tenant's credential at run time: static headers, OAuth
//!   sessions and their refresh, onboarded key slots, key checks.
//! - `onboarding/`: everything a customer touches to give the gateway a
//!   credential: connect links, their pages, sealing.
//! - `cli/`: one file per subcommand.
//!
//! Below them: types (`secret`, `share`, `tls`, `error`, `migration`),
//! `config`, `access_log` and `metrics`, `body` and `clients`, `upstream`.
//! Above: `key_checks`, `listener`, `admin`, `reload`, `sandbox` (the
//! offline stand-in for Pleo), and `gateway`, which starts and stops it all.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cli;
pub mod clients;
pub mod config;
pub mod credential;
pub mod error;
pub mod gateway;
pub mod key_checks;
pub mod listener;
pub mod metrics;
pub mod migration;
pub mod onboarding;
pub mod pleo;
pub mod proxy;
pub mod reload;
pub mod sandbox;
pub mod secret;
pub mod share;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;

/// The error type tower's `Filter` and our services exchange. Gateway refusals
/// travel inside it as [`error::GatewayError`] and are recovered by the rescue.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
