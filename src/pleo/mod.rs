//! The one client of Pleo's own endpoints: the OAuth token endpoint
//! (`token_endpoint`), the installation (`installation`: show, check,
//! activate), and the authorization-code flow's URL and PKCE (`authorize`).
//! Every call is bounded by one timeout policy ([`TIMEOUT`]).

pub mod authorize;
pub mod handover;
pub mod installation;
pub mod token_endpoint;

use std::time::Duration;

/// How long one call to Pleo's API (not the token endpoint, which has
/// `limits.token_timeout`) may take, head and body together.
pub const TIMEOUT: Duration = Duration::from_secs(10);
