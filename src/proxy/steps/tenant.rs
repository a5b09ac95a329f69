//! Step 7 of 12: which tenant is this request for?
//!
//! Tries `tenant_from` in order (header, path prefix, host suffix, client key),
//! first match wins, then `default_tenant`. Makes the request a `Routed`
//! (tenant, client, rule, rewrite as fields); strips the tenant header and,
//! for a path-prefix match, the prefix, so neither reaches Pleo. Refuses 400 `tenant_required`,
//! 403 `unknown_tenant`, and 403 `tenant_forbidden` when the authenticated
//! client may not use the tenant.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{header, Request, Uri};

use crate::access_log::AccessSlot;
use crate::clients::Client;
use crate::config::Selector;
use crate::error::{ErrorCode, GatewayError};
use crate::proxy::context::{Rewritten, Routed};
use crate::proxy::routes::{Routes, Tenant};

/// What a rule found: a tenant name, and for a path prefix the path to send on.
#[derive(Debug, PartialEq, Eq)]
struct Match<'a> {
    name: &'a str,
    rest: Option<String>,
}

/// Step 7: the tenant a request is for, by the first `tenant_from` rule
/// that names one, else `default_tenant`. The tag never goes on: the
/// tenant header is removed and a path prefix cut off; then a `rewrites`
/// rule may move the path.
pub fn resolve<B>(
    mut req: Request<B>,
    routes: Arc<Routes>,
    client: Option<Arc<Client>>,
    access: Option<Arc<AccessSlot>>,
) -> Result<Routed<B>, GatewayError> {
    let (tenant, rest, rule) = match find(&routes.selectors, &req, client.as_ref())? {
        Some((i, m)) => match routes.tenants.get(m.name) {
            Some(t) => (t.clone(), m.rest, Some(i)),
            // A key holder learns no more than "not yours": whether a
            // tenant exists is none of its business.
            None if client.is_some() => return Err(GatewayError::new(ErrorCode::TenantForbidden)),
            None => return Err(unknown(m.name)),
        },
        None => match &routes.default_tenant {
            Some(t) => (t.clone(), None, None),
            None => return Err(GatewayError::new(ErrorCode::TenantRequired)),
        },
    };
    if let Some(c) = &client {
        // By name, or (an installed tenant) by its app: `app:<name>`.
        let granted =
            c.tenants.contains(&*tenant.id) || tenant.install.as_ref().is_some_and(|i| c.tenants.contains(&*i.grant));
        if !granted {
            return Err(GatewayError::new(ErrorCode::TenantForbidden));
        }
    }
    for h in &routes.tenant_headers {
        req.headers_mut().remove(h);
    }
    if let Some(rest) = rest {
        set_path(&mut req, rest)?;
    }
    let rewrite = if tenant.rewrites.is_empty() && routes.rewrites.is_empty() {
        None
    } else {
        rewrite(&routes, &tenant, &mut req)?
    };
    Ok(Routed { req, tenant, client, rule, rewrite, access, routes })
}

fn set_path<B>(req: &mut Request<B>, pq: String) -> Result<(), GatewayError> {
    let pq = PathAndQuery::try_from(pq).map_err(|e| GatewayError::new(ErrorCode::TenantRequired).with_source(e))?;
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query = Some(pq);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| GatewayError::new(ErrorCode::TenantRequired).with_source(e))?;
    Ok(())
}

/// Applies the first `rewrites` rule that matches: the path changes, the
/// query stays as sent; host and credential are the tenant's whatever the
/// rule says. The tenant's own rules are tried first, then the top-level
/// ones. Counted and logged where the request is recorded (`record`).
fn rewrite<B>(routes: &Routes, tenant: &Tenant, req: &mut Request<B>) -> Result<Option<Rewritten>, GatewayError> {
    let mut rules = tenant.rewrites.iter().chain(routes.rewrites.iter());
    let Some((r, path)) = rules.find_map(|r| r.rule.apply(req.method(), req.uri().path()).map(|p| (r, p))) else {
        return Ok(None);
    };
    let original = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let pq = match original.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    set_path(req, pq)?;
    Ok(Some(Rewritten { label: r.label.clone(), counter: r.counter.clone(), original }))
}

fn unknown(name: &str) -> GatewayError {
    // Echo the name only when it is short and plain, so the answer cannot carry
    // anything odd a client put in the header.
    let plain = name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        GatewayError::new(ErrorCode::UnknownTenant).with_detail(format!("Tenant `{name}` is not configured."))
    } else {
        GatewayError::new(ErrorCode::UnknownTenant)
    }
}

/// The first rule that names a tenant, with its index.
fn find<'r, B>(
    selectors: &[Selector],
    req: &'r Request<B>,
    client: Option<&'r Arc<Client>>,
) -> Result<Option<(usize, Match<'r>)>, GatewayError> {
    for (i, selector) in selectors.iter().enumerate() {
        let found = match selector {
            Selector::Header(name) => {
                let mut values = req.headers().get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(_), Some(_)) => {
                        return Err(GatewayError::new(ErrorCode::AmbiguousRequest)
                            .with_detail(format!("The request has more than one {name} header.")))
                    }
                    (v, _) => v.map(|v| Match { name: v.to_str().unwrap_or("\u{0}"), rest: None }),
                }
            }
            Selector::PathPrefix(prefix) => from_path(req.uri(), prefix)?,
            Selector::HostSuffix(suffix) => host(req).and_then(|h| from_host(h, suffix)),
            Selector::ClientKey => {
                client.and_then(|c| c.bound_tenant.as_deref()).map(|name| Match { name, rest: None })
            }
        };
        if let Some(m) = found {
            return Ok(Some((i, m)));
        }
    }
    Ok(None)
}

/// `/tenants/acme/v2/x?q` with prefix `/tenants/` -> acme, `/v2/x?q`.
/// A path that only looks like the prefix (`/Tenants/acme`, `/tenants//x`,
/// `/tenants`) is refused rather than passed on to the next rule or the
/// default tenant, which would send it with another tenant's credential.
fn from_path<'a>(uri: &'a Uri, prefix: &str) -> Result<Option<Match<'a>>, GatewayError> {
    let path = uri.path();
    let Some(after) = path.strip_prefix(prefix) else {
        let stem = prefix.trim_end_matches('/');
        let looks_alike = path.len() >= stem.len()
            && path.is_char_boundary(stem.len())
            && path[..stem.len()].eq_ignore_ascii_case(stem)
            && matches!(path.as_bytes().get(stem.len()), None | Some(b'/'));
        if looks_alike {
            return Err(malformed_prefix(prefix));
        }
        return Ok(None);
    };
    let (name, tail) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    if name.is_empty() {
        return Err(malformed_prefix(prefix));
    }
    let rest = match uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    Ok(Some(Match { name, rest: Some(rest) }))
}

fn malformed_prefix(prefix: &str) -> GatewayError {
    GatewayError::new(ErrorCode::TenantRequired)
        .with_detail(format!("The path starts like the tenant prefix `{prefix}` but names no tenant the way it must (`{prefix}<tenant>/...`, same case)."))
}

fn host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().host().or_else(|| req.headers().get(header::HOST)?.to_str().ok())
}

/// `acme.gw.internal:8080` with suffix `.gw.internal` -> acme.
fn from_host<'a>(host: &'a str, suffix: &str) -> Option<Match<'a>> {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let cut = name.len().checked_sub(suffix.len())?;
    if cut == 0 || !name.is_char_boundary(cut) || !name[cut..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    Some(Match { name: &name[..cut], rest: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefix_keeps_rest_and_query_byte_for_byte() {
        let uri: Uri = "/tenants/acme/v2/employees%2Fx?a=%20b&c".parse().unwrap();
        let m = from_path(&uri, "/tenants/").unwrap().unwrap();
        assert_eq!(m.name, "acme");
        assert_eq!(m.rest.as_deref(), Some("/v2/employees%2Fx?a=%20b&c"));
        let uri: Uri = "/tenants/acme".parse().unwrap();
        assert_eq!(from_path(&uri, "/tenants/").unwrap().unwrap().rest.as_deref(), Some("/"));
        let uri: Uri = "/v2/employees".parse().unwrap();
        assert_eq!(from_path(&uri, "/tenants/").unwrap(), None);
        let uri: Uri = "/tenantsx/acme".parse().unwrap();
        assert_eq!(from_path(&uri, "/tenants/").unwrap(), None);
    }

    #[test]
    fn look_alike_prefixes_are_refused_not_passed_on() {
        for p in ["/tenants//v2", "/Tenants/acme/v2", "/TENANTS/acme", "/tenants", "/tenants/"] {
            let uri: Uri = p.parse().unwrap();
            let e = from_path(&uri, "/tenants/").unwrap_err();
            assert_eq!(e.code, ErrorCode::TenantRequired, "{p}");
        }
    }

    #[test]
    fn host_suffix() {
        assert_eq!(from_host("acme.gw.internal:8080", ".gw.internal").unwrap().name, "acme");
        assert_eq!(from_host("ACME.GW.INTERNAL", ".gw.internal").unwrap().name, "ACME");
        assert_eq!(from_host(".gw.internal", ".gw.internal"), None);
        assert_eq!(from_host("gw.internal", ".gw.internal"), None);
    }
}
