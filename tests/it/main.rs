//! The integration tests, one binary: each module is one behaviour of the
//! gateway driven through real sockets (or the real binary), sharing the kit
//! in `support`. One binary links the crate once instead of once per file.

mod support;

mod access_log;
mod admin;
mod browser;
mod cli;
mod compose;
mod connect_links;
mod degraded;
mod deploy;
mod docs;
mod explain_agrees;
mod guard;
mod h2_isolation;
mod installation;
mod installs;
mod legacy;
mod lifecycle;
mod limits;
mod metrics;
mod migration;
mod module_layers;
mod monitoring;
mod oauth;
mod oauth_process;
mod properties;
mod proxy;
mod reload;
mod sandbox;
mod scrub;
mod secrets;
mod state_dir;
mod streaming;
mod telemetry;
mod tls;
mod upstream_errors;
mod upstream_pool;
mod validation;
