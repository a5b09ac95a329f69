//! pleo-gateway: an authenticating reverse proxy in front of Pleo's External API.
//!
//! Modules follow the path of a request (DESIGN.md "The request's path"):
//! `listener` -> `stack` (`admit` -> `legacy` -> `guard` -> `client_auth` -> `tenant`
//! -> `admit::Shares` -> `scrub` -> `credential` -> `upstream`) with `error` as the one rescue at the edge and `metrics`
//! counting on the way. `config` and `secret` turn gateway.yaml into the
//! validated values those steps read; `admin` serves /metrics and the probes;
//! `sandbox` is the offline stand-in for Pleo used by the demo config and tests;
//! `connect` onboards an OAuth tenant (authorization code + PKCE).
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, missing_debug_implementations)]

pub mod access_log;
pub mod admin;
pub mod admit;
pub mod body;
pub mod client_auth;
pub mod config;
pub mod connect;
pub mod credential;
pub mod error;
pub mod gateway;
pub mod guard;
pub mod legacy;
pub mod listener;
pub mod manage;
pub mod metrics;
pub mod observe;
pub mod reload;
pub mod routes;
pub mod sandbox;
pub mod scrub;
pub mod secret;
pub mod share;
pub mod stack;
pub mod tenant;
pub mod tls;
pub mod upstream;

/// The error type tower's `Filter` and our services exchange. Gateway refusals
/// travel inside it as [`error::GatewayError`] and are recovered by the rescue.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
