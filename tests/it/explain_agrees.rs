//! `explain` and a real request agree: the dry run runs the same step
//! functions the stack does, and this checks it from outside. Each request
//! goes once through `explain` on the running gateway's routes and once
//! through the gateway's socket; the tenant (by the credential Pleo
//! received), its auth model, the upstream URL and the refusal code must
//! match. The requests: one for every rule of the demo config's routing
//! (header, path prefix, default tenant) plus a host suffix, a rewrite and
//! each kind of refusal, then the property tests' generator's requests.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use pleo_gateway::proxy::explain::{self, Explanation};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use crate::support::*;

const ROUTING: &str = "tenant_from:
  - header: X-Pleo-Tenant
  - path_prefix: /tenants/
  - host_suffix: .gw.internal
default_tenant: acme
rewrites:
  - { method: GET, from: \"/v1/moved/{id}\", to: \"/v2/moved/{id}\" }
";

/// What happened to one request, as comparable facts.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent { tenant: String, auth_model: String, upstream: String },
    Refused { status: u16, code: String },
}

fn predicted(x: &Explanation) -> Outcome {
    match &x.refused {
        Some(r) => Outcome::Refused { status: r.status, code: r.error.to_string() },
        None => Outcome::Sent {
            tenant: x.tenant.clone().unwrap_or_default(),
            auth_model: x.auth_model.unwrap_or_default().to_string(),
            upstream: x.upstream.clone().unwrap_or_default(),
        },
    }
}

/// The tenant a credential Pleo received belongs to, with its auth model.
fn by_credential() -> HashMap<String, (&'static str, &'static str)> {
    HashMap::from([
        (format!("Bearer {ACME_TOKEN}"), ("acme", "oauth2")),
        (basic(GLOBEX_KEY), ("globex", "integrated_api_key")),
        (basic(INITECH_KEY), ("initech", "standalone_api_key")),
    ])
}

/// Sends the request through the gateway; `None` when the gateway's steps
/// never judged it (the client or hyper refused the head).
async fn observed(kit: &Kit, method: &str, target: &str, headers: &[(String, String)]) -> Option<Outcome> {
    let mut b = Request::builder().method(method).uri(kit.url(target));
    for (n, v) in headers {
        b = b.header(n.as_str(), v.as_str());
    }
    let req = b.body(Full::new(Bytes::new())).ok()?;
    let before = (kit.staging.requests().len(), kit.production.requests().len());
    let resp = kit.client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    if let Some(code) = resp.headers().get("x-pleo-gateway-error") {
        return Some(Outcome::Refused { status, code: code.to_str().unwrap().to_string() });
    }
    let (staging, production) = (kit.staging.requests(), kit.production.requests());
    let (sandbox, recorded) = if staging.len() > before.0 {
        (&kit.staging, staging.last().cloned()?)
    } else if production.len() > before.1 {
        (&kit.production, production.last().cloned()?)
    } else {
        return None;
    };
    let authorization = recorded.headers.get("authorization")?.to_str().ok()?.to_string();
    let (tenant, model) = by_credential().get(&authorization).copied().unwrap_or(("?", "?"));
    Some(Outcome::Sent {
        tenant: tenant.to_string(),
        auth_model: model.to_string(),
        upstream: format!("{} {}{}", recorded.method, base_url(sandbox), recorded.target),
    })
}

async fn agree(kit: &Kit, method: &str, target: &str, headers: &[(String, String)]) -> bool {
    let Ok(req) = explain::request(method, target, headers) else { return false };
    let routes = kit.gw.admin.routes.load_full();
    let predicted = predicted(&explain::explain(&routes, req));
    let Some(observed) = observed(kit, method, target, headers).await else { return false };
    assert_eq!(predicted, observed, "{method} {target} {headers:?}");
    true
}

/// A hand-written request: method, target, headers.
type Case<'a> = (&'a str, &'a str, Vec<(String, String)>);

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn explain_and_a_real_request_agree_on_every_rule_and_refusal() {
    let kit = Kit::start(ROUTING).await;
    let legacy = format!("Bearer {LEGACY_TOKEN}");
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/v2/employees?limit=5", h(&[("x-pleo-tenant", "globex")])),
        ("POST", "/v2/expenses", h(&[("x-pleo-tenant", "initech")])),
        ("GET", "/tenants/initech/v2/expenses?x=1", h(&[])),
        ("GET", "/v2/employees", h(&[("host", "globex.gw.internal")])),
        ("GET", "/v2/employees", h(&[])),
        ("GET", "/v1/moved/42?q=1", h(&[("x-pleo-tenant", "globex")])),
        ("DELETE", "/v1/moved/42", h(&[("x-pleo-tenant", "globex")])),
        ("GET", "/v2/x", h(&[("x-pleo-tenant", "nosuch")])),
        ("GET", "/v2/x", h(&[("x-pleo-tenant", "globex"), ("x-pleo-tenant", "initech")])),
        ("GET", "/Tenants/globex/v2/x", h(&[])),
        ("GET", "/v2/x", h(&[("authorization", &legacy)])),
        ("GET", "/v2/x?access_token=abc", h(&[])),
        ("GET", "/v2/x", h(&[("host", "openapi.pleo.io")])),
        ("GET", "/v2/x", h(&[("host", "evil.example")])),
        ("GET", "/v2/x", h(&[("sec-fetch-site", "cross-site")])),
        ("TRACE", "/v2/x", h(&[])),
        ("POST", "/v2/x", h(&[("content-length", "99999999999")])),
    ];
    for (method, target, headers) in &cases {
        assert!(agree(&kit, method, target, headers).await, "{method} {target} reached the gateway's steps");
    }

    // The property tests' generator: the same heads that must never leak a credential.
    let mut runner = TestRunner::deterministic();
    let strategy = crate::properties::request_head();
    let (mut judged, total) = (0, 200);
    for _ in 0..total {
        let (method, target, headers) = strategy.new_tree(&mut runner).unwrap().current();
        let headers: Vec<(String, String)> = headers.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        // HEAD answers carry no body to tell apart; GET stands in for it.
        let method = if method == Method::HEAD.as_str() { "GET".to_string() } else { method };
        judged += usize::from(agree(&kit, &method, &target, &headers).await);
    }
    // Heads the HTTP client or server refuses never reach the steps; most do.
    assert!(judged > total / 2, "only {judged} of {total} generated requests reached the gateway's steps");
    kit.stop().await;
}
