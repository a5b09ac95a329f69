//! Step 1: refuse what belongs to the deprecated legacy API.
//!
//! Reads the Host header and the request target; refuses `openapi.pleo.io`
//! (421 `legacy_host_refused`) and a `Proxy-Authorization` credential (401
//! `legacy_token_refused`). The `Authorization` header is judged by
//! `client_auth`, the only step that can tell a gateway key from a foreign one.
//! Nothing refused here is ever forwarded.

use http::{header, Request};
use tower::filter::Predicate;

use crate::error::{ErrorCode, GatewayError};
use crate::BoxError;

const LEGACY_HOSTS: [&str; 2] = ["openapi.pleo.io", "openapi.staging.pleo.io"];

#[derive(Clone, Copy, Debug, Default)]
pub struct RefuseLegacy;

impl<B> Predicate<Request<B>> for RefuseLegacy {
    type Request = Request<B>;

    fn check(&mut self, req: Request<B>) -> Result<Request<B>, BoxError> {
        let host_header = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let target = req.uri().host();
        if host_header.into_iter().chain(target).any(is_legacy_host) {
            return Err(GatewayError::new(ErrorCode::LegacyHostRefused).into());
        }
        if req.headers().contains_key(header::PROXY_AUTHORIZATION) {
            return Err(GatewayError::new(ErrorCode::LegacyTokenRefused).into());
        }
        Ok(req)
    }
}

/// `openapi.pleo.io`, any case, with or without a port or trailing dot.
/// Also used by config validation to refuse it as a base URL.
pub(crate) fn is_legacy_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_end_matches('.');
    LEGACY_HOSTS.iter().any(|l| name.eq_ignore_ascii_case(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_host_forms() {
        assert!(is_legacy_host("openapi.pleo.io"));
        assert!(is_legacy_host("OpenAPI.Pleo.IO:443"));
        assert!(is_legacy_host("openapi.pleo.io."));
        assert!(is_legacy_host("openapi.staging.pleo.io"));
        assert!(!is_legacy_host("external.pleo.io"));
        assert!(!is_legacy_host("127.0.0.1:8080"));
        assert!(!is_legacy_host("notopenapi.pleo.io"));
    }
}
