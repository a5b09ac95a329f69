//! Step 4 of 12: refuse what belongs to the deprecated legacy API.
//!
//! Reads the Host header and the request target; refuses `openapi.pleo.io`
//! (421 `legacy_host_refused`) and a `Proxy-Authorization` credential (401
//! `legacy_token_refused`). The `Authorization` header is judged by
//! `client_auth`, the only step that can tell a gateway key from a foreign one.
//! Nothing refused here is ever forwarded.

use http::{header, Request};

use crate::config::model::is_legacy_host;
use crate::error::{ErrorCode, GatewayError};

pub fn refuse_legacy<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let host_header = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let target = req.uri().host();
    if host_header.into_iter().chain(target).any(is_legacy_host) {
        return Err(GatewayError::new(ErrorCode::LegacyHostRefused));
    }
    if req.headers().contains_key(header::PROXY_AUTHORIZATION) {
        return Err(GatewayError::new(ErrorCode::LegacyTokenRefused));
    }
    Ok(())
}
