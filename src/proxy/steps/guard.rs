//! Step 5 of 12: what a browser could be made to send is refused.
//!
//! The gateway holds every tenant's Pleo credential, and on loopback it needs
//! no client key. So a web page must not be able to use it:
//!
//! - DNS rebinding: a page on `evil.example` whose name resolves to
//!   127.0.0.1 reaches the gateway with `Host: evil.example`. Only loopback
//!   names, IP literals (a rebinding needs a name), `host_suffix` tenant
//!   names and `allowed_hosts` are served; anything else is 421
//!   `host_not_allowed`. The admin listener applies the same rule.
//! - Cross-site requests (`fetch(.., {mode: 'no-cors'})`, form posts): the
//!   browser marks them with `Origin` and `Sec-Fetch-Site`. An `Origin` not in
//!   `allowed_origins`, or `Sec-Fetch-Site: cross-site|same-site`, is 403
//!   `cross_site_refused`. Apps that are not browsers send neither.
//! - Two `Host` headers, or a `Host` that disagrees with the request
//!   target's authority: 400 `ambiguous_request` (never guess which one
//!   the client meant).

use std::net::IpAddr;

use http::{header, HeaderMap, Request, Uri};

use crate::error::{ErrorCode, GatewayError};
use crate::proxy::routes::Routes;

pub fn guard<B>(req: &Request<B>, routes: &Routes) -> Result<(), GatewayError> {
    check(req.uri(), req.headers(), &routes.browsers.hosts, &routes.browsers.origins)
}

/// The whole check, shared with the admin listener (which allows no origins).
/// `hosts` holds exact names and `.suffix` patterns, lowercase.
pub fn check(uri: &Uri, headers: &HeaderMap, hosts: &[String], origins: &[String]) -> Result<(), GatewayError> {
    let host = request_host(uri, headers)?;
    if let Some(host) = host {
        if !host_allowed(host, hosts) {
            return Err(GatewayError::new(ErrorCode::HostNotAllowed));
        }
    }
    let mut origin_values = headers.get_all(header::ORIGIN).iter();
    let origin_ok = match (origin_values.next(), origin_values.next()) {
        (None, _) => None,
        (Some(o), None) => Some(o.to_str().is_ok_and(|o| origins.iter().any(|a| a.eq_ignore_ascii_case(o)))),
        (Some(_), Some(_)) => Some(false),
    };
    if origin_ok == Some(false) {
        return Err(GatewayError::new(ErrorCode::CrossSiteRefused));
    }
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    let cross =
        matches!(site, Some(s) if s.eq_ignore_ascii_case(b"cross-site") || s.eq_ignore_ascii_case(b"same-site"));
    if cross && origin_ok != Some(true) {
        return Err(GatewayError::new(ErrorCode::CrossSiteRefused));
    }
    Ok(())
}

/// The host the request is addressed to: the target's authority (absolute
/// form, h2 `:authority`) or the one `Host` header; both must agree.
fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<Option<&'a str>, GatewayError> {
    let ambiguous = || GatewayError::new(ErrorCode::AmbiguousRequest);
    let mut values = headers.get_all(header::HOST).iter();
    let header_host = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(v), None) => Some(v.to_str().map_err(|_| ambiguous())?),
        (Some(_), Some(_)) => return Err(ambiguous().with_detail("The request has more than one Host header.")),
    };
    match (uri.authority().map(|a| a.as_str()), header_host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            Err(ambiguous().with_detail("The Host header and the request target name different hosts."))
        }
        (Some(a), _) => Ok(Some(a)),
        (None, h) => Ok(h),
    }
}

/// Loopback names, IP literals, and the configured names and `.suffix` patterns.
pub fn host_allowed(authority: &str, allowed: &[String]) -> bool {
    let name = strip_port(authority).trim_end_matches('.');
    if name.starts_with('[') {
        // An IPv6 literal: "[::1]".
        return name.ends_with(']') && name[1..name.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return true;
    }
    allowed.iter().any(|a| match a.strip_prefix('.') {
        Some(suffix) => lower.len() > a.len() && lower.ends_with(a.as_str()) && !suffix.is_empty(),
        None => lower == *a,
    })
}

fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        // Not the colons inside an IPv6 literal.
        Some((name, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["gateway.internal".into(), ".gw.internal".into()]
    }

    #[test]
    fn hosts() {
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost",
            "[::1]:8080",
            "10.0.0.7:80",
            "gateway.internal",
            "Gateway.Internal:443",
            "acme.gw.internal",
        ] {
            assert!(host_allowed(ok, &allowed()), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "gw.internal", "localhost.evil.example", "[zz]", ""] {
            assert!(!host_allowed(bad, &allowed()), "{bad}");
        }
    }

    #[test]
    fn browsers_marked_cross_site_are_refused() {
        let uri: Uri = "/v2/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(check(&uri, &h, &[], &[]).is_ok());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(check(&uri, &h, &[], &[]).is_ok());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert_eq!(check(&uri, &h, &[], &[]).unwrap_err().code, ErrorCode::CrossSiteRefused);
        h.remove("sec-fetch-site");
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(check(&uri, &h, &[], &[]).unwrap_err().code, ErrorCode::CrossSiteRefused);
        assert!(check(&uri, &h, &[], &["https://evil.example".into()]).is_ok());
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert_eq!(check(&uri, &h, &[], &[]).unwrap_err().code, ErrorCode::CrossSiteRefused);
    }

    #[test]
    fn two_hosts_are_ambiguous() {
        let uri: Uri = "/".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append(header::HOST, "127.0.0.1".parse().unwrap());
        h.append(header::HOST, "evil.example".parse().unwrap());
        assert_eq!(check(&uri, &h, &[], &[]).unwrap_err().code, ErrorCode::AmbiguousRequest);
        let uri: Uri = "http://127.0.0.1/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "localhost".parse().unwrap());
        assert_eq!(check(&uri, &h, &[], &[]).unwrap_err().code, ErrorCode::AmbiguousRequest);
    }
}
