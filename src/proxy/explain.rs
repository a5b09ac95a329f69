//! A dry run (`pleo-gateway explain`, `POST /explain`): what the gateway
//! would do with a request, without sending it. The request goes through
//! the very functions the stack runs (`steps::route`, the scrub, the
//! credential step's decision, the upstream rewrite), which decide without
//! counting anything, and stops where it would be sent: the tenant and the
//! rule that picked it, or the refusal and why; the environment, auth model
//! and masked credential; the rewrite; the final upstream URL; the headers
//! that would be removed.

use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use serde::Serialize;

use super::routes::{Routes, Snapshot};
use super::steps::{self, attach, scrub};
use crate::config::Selector;
use crate::error::GatewayError;

#[derive(Debug, Default, Serialize)]
pub struct Explanation {
    pub request: String,
    /// The refusal the gateway would answer with, if any.
    pub refused: Option<Refusal>,
    pub client: Option<String>,
    pub tenant: Option<String>,
    /// `tenant_from[1] (path_prefix /tenants/)`, or `default_tenant`.
    pub tenant_rule: Option<String>,
    pub environment: Option<&'static str>,
    pub auth_model: Option<&'static str>,
    /// The credential kind, masked (`key ••••ab12`).
    pub credential: Option<String>,
    pub credential_state: Option<String>,
    pub rewrite: Option<RewriteStep>,
    /// `GET https://external.pleo.io/v2/expenses/42?limit=5`.
    pub upstream: Option<String>,
    /// Header names that would not reach Pleo.
    pub headers_removed: Vec<String>,
    /// Always false: explain never sends.
    pub sent: bool,
}

#[derive(Debug, Serialize)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct RewriteStep {
    pub rule: String,
    pub from: String,
    pub to: String,
}

/// Why a request could not even be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Builds the request an app would send: `url` is absolute
/// (`http://127.0.0.1:8080/v2/x`, its authority becoming `Host` unless one
/// is given) or a path (`/v2/x`).
pub fn request(method: &str, url: &str, headers: &[(String, String)]) -> Result<Request<()>, BadRequest> {
    let method: Method = method.parse().map_err(|_| BadRequest(format!("`{method}` is not an HTTP method")))?;
    let uri: Uri = url.parse().map_err(|_| BadRequest(format!("`{url}` is not a URL or a path")))?;
    let mut req = Request::new(());
    *req.method_mut() = method;
    for (name, value) in headers {
        let name =
            HeaderName::try_from(name.trim()).map_err(|_| BadRequest(format!("`{name}` is not a header name")))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|_| BadRequest(format!("the {name} header's value is not valid")))?;
        req.headers_mut().append(name, value);
    }
    if let Some(authority) = uri.authority() {
        if !req.headers().contains_key(header::HOST) {
            let host = HeaderValue::try_from(authority.as_str()).map_err(|_| BadRequest("bad host".into()))?;
            req.headers_mut().insert(header::HOST, host);
        }
    }
    *req.uri_mut() = uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    Ok(req)
}

fn describe(s: &Selector) -> String {
    match s {
        Selector::Header(h) => format!("header {h}"),
        Selector::PathPrefix(p) => format!("path_prefix {p}"),
        Selector::HostSuffix(h) => format!("host_suffix {h}"),
        Selector::ClientKey => "client_key".to_string(),
    }
}

fn refusal(e: crate::BoxError) -> Refusal {
    match e.downcast::<GatewayError>() {
        Ok(g) => Refusal { status: g.code.status().as_u16(), error: g.code.as_str(), message: g.full_message() },
        Err(e) => Refusal { status: 502, error: "upstream_unavailable", message: e.to_string() },
    }
}

/// Runs `req` through the steps against `routes`, sending nothing.
pub fn explain(routes: &Arc<Routes>, mut req: Request<()>) -> Explanation {
    let mut out = Explanation { request: format!("{} {}", req.method(), req.uri()), ..Explanation::default() };
    let before: Vec<HeaderName> = req.headers().keys().cloned().collect();
    req.extensions_mut().insert(Snapshot(routes.clone()));
    // No other request is in flight for a dry run: this one alone.
    let mut routed = match steps::route(req, 1) {
        Ok(r) => r,
        Err(e) => {
            out.refused = Some(refusal(e));
            return out;
        }
    };
    let tenant = routed.tenant.clone();
    out.client = routed.client.as_ref().map(|c| c.name.to_string());
    out.tenant_rule = Some(match routed.rule {
        Some(i) => format!("tenant_from[{i}] ({})", describe(&routes.selectors[i])),
        None => "default_tenant".to_string(),
    });
    out.tenant = Some(tenant.id.to_string());
    out.environment = Some(tenant.environment.as_str());
    out.auth_model = Some(tenant.model.as_str());
    out.credential = Some(tenant.credential.masked());
    out.credential_state = Some(tenant.credential.state().to_string());
    if let Some(r) = &routed.rewrite {
        out.rewrite = Some(RewriteStep {
            rule: r.label.to_string(),
            from: r.original.path().to_string(),
            to: routed.req.uri().path().to_string(),
        });
    }
    scrub::scrub(routed.req.headers_mut(), scrub::Keep::of(routes));
    let after: Vec<&HeaderName> = routed.req.headers().keys().collect();
    out.headers_removed = before.iter().filter(|h| !after.contains(h)).map(|h| h.as_str().to_string()).collect();
    if let Err(e) = attach::credential(&tenant) {
        out.refused = Some(refusal(e.into()));
    }
    match tenant.upstream.prepare(&mut routed.req) {
        Ok(()) => {
            let base = &tenant.upstream.base;
            out.upstream =
                Some(format!("{} {}://{}{}", routed.req.method(), base.scheme, base.authority, routed.req.uri()));
        }
        Err(e) => out.refused = Some(Refusal { status: 502, error: "upstream_unavailable", message: e.to_string() }),
    }
    out
}

impl Explanation {
    /// The dry run as lines for a terminal.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "request:          {}", self.request);
        if let Some(c) = &self.client {
            let _ = writeln!(s, "client:           {c}");
        }
        if let Some(t) = &self.tenant {
            let _ = writeln!(s, "tenant:           {t} (picked by {})", self.tenant_rule.as_deref().unwrap_or("?"));
        }
        for (k, v) in [("environment:", self.environment), ("auth model:", self.auth_model)] {
            if let Some(v) = v {
                let _ = writeln!(s, "{k:<18}{v}");
            }
        }
        if let Some(c) = &self.credential {
            let _ = writeln!(s, "credential:       {c} ({})", self.credential_state.as_deref().unwrap_or("-"));
        }
        if let Some(r) = &self.rewrite {
            let _ = writeln!(s, "rewrite:          {} -> {} (rule {})", r.from, r.to, r.rule);
        }
        if let Some(u) = &self.upstream {
            let _ = writeln!(s, "upstream:         {u}");
        }
        if !self.headers_removed.is_empty() {
            let _ = writeln!(s, "headers removed:  {}", self.headers_removed.join(", "));
        }
        if let Some(r) = &self.refused {
            let _ = writeln!(s, "refused:          {} {}: {}", r.status, r.error, r.message);
        }
        let _ = writeln!(s, "sent:             nothing (a dry run)");
        s
    }
}
