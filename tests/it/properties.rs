//! Bad input never crashes, and no client input reaches Pleo as a
//! credential or changes the upstream host. Property tests (proptest) over:
//!
//! - the config loader: generated and mutated gateway.yaml files never panic,
//!   and every error says file, line and key;
//! - the request path's pure steps (legacy, guard, client auth, tenant,
//!   scrub, credential, upstream rewrite) on generated request heads: a
//!   refusal is a contract error, and what would go to Pleo carries exactly
//!   the tenant's credential, Pleo's Host, an origin-form target and none of
//!   the client's credential or hop-by-hop headers.
//!
//! CI runs 256 cases per property; `bench/properties.sh` runs 1,000,000
//! (PROPTEST_CASES) and prints the counts each property reports here.

use std::sync::Arc;

use http::{header, Request};
use pleo_gateway::config::Config;
use pleo_gateway::credential::Sessions;
use pleo_gateway::error::GatewayError;
use pleo_gateway::metrics::Metrics;
use pleo_gateway::proxy::routes::{Routes, Snapshot};
use pleo_gateway::proxy::steps::{self, attach, scrub};
use pleo_gateway::state::FileStore;
use pleo_gateway::upstream::Upstreams;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestRunner};

/// Cases per property: PROPTEST_CASES, or 256.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    TestRunner::new(RunConfig { cases, failure_persistence: None, ..RunConfig::default() })
}

fn report(property: &str, runner: &TestRunner) {
    // Read by bench/properties.sh.
    println!("property {property}: {} cases passed", runner.config().cases);
}

// === config loader ===

const TOP_KEYS: [&str; 21] = [
    "listen",
    "admin_listen",
    "workers",
    "environments",
    "tenant_from",
    "default_tenant",
    "state_dir",
    "tenants",
    "clients",
    "allow_unauthenticated_clients",
    "limits",
    "metrics",
    "tls",
    "client_ca",
    "legacy_tokens",
    "access_log",
    "allowed_hosts",
    "allowed_origins",
    "admin",
    "sandbox",
    "no_such_key",
];
const SUB_KEYS: [&str; 16] = [
    "staging",
    "production",
    "base_url",
    "environment",
    "auth",
    "model",
    "key",
    "env",
    "file",
    "header",
    "path_prefix",
    "max_in_flight",
    "idle_timeout",
    "tokens",
    "name",
    "sha256",
];

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_./:-]{0,14}",
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("~".to_string()),
        Just("oauth2".to_string()),
        Just("integrated_api_key".to_string()),
        Just("http://127.0.0.1:9".to_string()),
        Just("10s".to_string()),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(SUB_KEYS.to_vec()), inner), 0..4).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

fn generated_yaml() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(TOP_KEYS.to_vec()), value()), 0..8)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| format!("{k}: {v}\n")).collect())
}

const VALID: &str = "listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
environments:
  staging: { base_url: http://127.0.0.1:9 }
  production: { base_url: http://127.0.0.1:9 }
tenant_from:
  - header: X-Pleo-Tenant
  - path_prefix: /tenants/
  - host_suffix: .gw.internal
default_tenant: globex
limits:
  max_in_flight: 100
  idle_timeout: 60s
tenants:
  acme:
    environment: production
    auth:
      model: oauth2
      access_token: at_prop_acme_token_value
  globex:
    environment: staging
    auth:
      model: integrated_api_key
      key: ik_prop_globex_key_value
  initech:
    environment: staging
    auth:
      model: standalone_api_key
      key: sk_prop_initech_key_value
";

/// The valid config with one line replaced, dropped, doubled or re-indented.
fn mutated_yaml() -> impl Strategy<Value = String> {
    let lines = VALID.lines().count();
    (0..lines, 0..4u8, scalar()).prop_map(|(at, how, new)| {
        let mut out: Vec<String> = VALID.lines().map(String::from).collect();
        let line = out[at].clone();
        match how {
            0 => {
                let indent = line.len() - line.trim_start().len();
                let key = line.trim_start().split(':').next().unwrap_or("").to_string();
                out[at] = format!("{}{key}: {new}", " ".repeat(indent));
            }
            1 => {
                out.remove(at);
            }
            2 => out.insert(at, line),
            _ => out[at] = format!(" {line}"),
        }
        out.join("\n") + "\n"
    })
}

#[test]
fn the_config_loader_never_panics_and_every_error_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    assert!(Config::from_yaml(VALID, &path).is_ok(), "the seed config is valid");
    // Found by this property: a key spanning lines, and a file-wide error with no line.
    for text in ["{a\n\na", " listen: 127.0.0.1:0\nadmin_listen: x\n"] {
        let e = Config::from_yaml(text, &path).unwrap_err();
        assert!(e.issues.iter().all(|i| i.line.is_some()), "{e:?}");
        assert!(e.to_string().lines().all(|l| l.starts_with(&e.file)), "{e}");
    }
    let mut runner = runner();
    let result = runner.run(&prop_oneof![generated_yaml(), mutated_yaml(), "[ -~\n]{0,200}"], |text| {
        if let Err(e) = Config::from_yaml(&text, &path) {
            prop_assert!(!e.issues.is_empty());
            for issue in &e.issues {
                prop_assert!(issue.line.is_some(), "no line: {issue:?}\n--- config:\n{text}");
                prop_assert!(!issue.message.is_empty());
            }
            let shown = e.to_string();
            prop_assert!(shown.lines().all(|l| l.starts_with(&e.file)), "{shown}");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    report("config_loader", &runner);
}

// === the request path ===

struct Path {
    routes: Arc<Routes>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn routes() -> Path {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_yaml(VALID, &dir.path().join("gateway.yaml")).unwrap();
    let metrics = Arc::new(Metrics::register(&prometheus::Registry::new(), false).unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sessions = Sessions::new(Arc::new(FileStore::new(dir.path().join("state"))), metrics.clone(), stopped);
    let routes = Routes::build(&config, &Upstreams::build(&config).unwrap(), &metrics, &sessions);
    Path { routes: Arc::new(routes), _dir: dir, _stop: stop }
}

/// What a client puts in the credential-bearing headers: it must never reach Pleo.
const MARKER: &str = "client-marker-7f3e";

const HEADER_NAMES: [&str; 18] = [
    "x-pleo-tenant",
    "host",
    "connection",
    "cookie",
    "x-api-key",
    "authorization",
    "proxy-authorization",
    "x-forwarded-for",
    "forwarded",
    "te",
    "upgrade",
    "keep-alive",
    "trailer",
    "x-custom",
    "origin",
    "sec-fetch-site",
    "x-request-id",
    "api-key",
];

fn header_value(name: &'static str) -> BoxedStrategy<String> {
    match name {
        "cookie" | "x-api-key" | "authorization" | "proxy-authorization" | "api-key" => {
            prop_oneof![Just(format!("Bearer {MARKER}")), Just(format!("session={MARKER}")), Just(MARKER.to_string())]
                .boxed()
        }
        "connection" => prop::sample::subsequence(HEADER_NAMES.to_vec(), 0..4).prop_map(|v| v.join(", ")).boxed(),
        _ => prop_oneof![
            Just("acme".to_string()),
            Just("globex".to_string()),
            Just("ACME".to_string()),
            Just("nosuch".to_string()),
            Just("127.0.0.1:8080".to_string()),
            Just("acme.gw.internal".to_string()),
            Just("openapi.pleo.io".to_string()),
            Just("evil.example".to_string()),
            Just("same-origin".to_string()),
            "[a-zA-Z0-9 ._:/-]{0,16}",
        ]
        .boxed(),
    }
}

pub(crate) fn request_head() -> impl Strategy<Value = (String, String, Vec<(&'static str, String)>)> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]);
    let name = prop::sample::select(vec!["acme", "globex", "initech", "ACME", "nosuch", ""]);
    let prefix = prop::sample::select(vec!["/tenants/", "/Tenants/", "/tenants", "/", "//", "/tenants//"]);
    let rest = "[a-zA-Z0-9/%._~-]{0,20}";
    let query = prop_oneof![Just(String::new()), "\\?[a-z0-9=&_%.-]{0,20}", Just(format!("?access_token={MARKER}"))];
    let path = (prefix, name, rest, query).prop_map(|(p, n, r, q)| format!("{p}{n}/{r}{q}"));
    let headers = prop::collection::vec(
        prop::sample::select(HEADER_NAMES.to_vec()).prop_flat_map(|n| header_value(n).prop_map(move |v| (n, v))),
        0..8,
    );
    (method.prop_map(String::from), path, headers)
}

#[test]
fn no_client_input_reaches_pleo_as_a_credential_or_moves_the_upstream() {
    let path = routes();
    let mut runner = runner();
    let result = runner.run(&request_head(), |(method, target, headers)| {
        let mut b = Request::builder().method(method.as_str()).uri(target.as_str());
        for (n, v) in &headers {
            b = b.header(*n, v.as_str());
        }
        // Heads hyper would refuse to parse never reach the gateway's steps.
        let Ok(mut req) = b.body(()) else { return Ok(()) };
        req.extensions_mut().insert(Snapshot(path.routes.clone()));
        // The stack's decisions (steps 3-7), then its scrub, as a real request gets them.
        let mut routed = match steps::route(req, 1) {
            Ok(r) => r,
            Err(e) => {
                prop_assert!(e.downcast_ref::<GatewayError>().is_some(), "not a contract refusal: {e}");
                return Ok(());
            }
        };
        scrub::scrub(routed.req.headers_mut(), scrub::Keep::of(&routed.routes));
        let (tenant, mut req) = (routed.tenant, routed.req);
        // Resolution: the tenant header, the first rule, wins when given once.
        let tags: Vec<&String> = headers.iter().filter(|(n, _)| *n == "x-pleo-tenant").map(|(_, v)| v).collect();
        if let [tag] = tags.as_slice() {
            prop_assert_eq!(&*tenant.id, tag.as_str());
        }
        let Ok(attach::Credentialed::Header(authorization)) = attach::credential(&tenant) else {
            unreachable!("the test config has static credentials only")
        };
        let authorization = &authorization;
        // What the attach step does for a static credential, then the rewrite.
        req.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
        tenant.upstream.prepare(&mut req).unwrap();

        let auth: Vec<_> = req.headers().get_all(header::AUTHORIZATION).iter().collect();
        prop_assert_eq!(auth, vec![authorization]);
        prop_assert_eq!(req.headers().get(header::HOST), Some(tenant.upstream.host()));
        prop_assert!(req.uri().authority().is_none() && req.uri().scheme().is_none(), "{}", req.uri());
        // Everything the generator sends may pass except these (the gateway sets or checks them).
        let may_pass = ["host", "authorization", "x-custom", "origin", "sec-fetch-site", "x-request-id"];
        for gone in HEADER_NAMES.iter().filter(|n| !may_pass.contains(n)) {
            prop_assert!(!req.headers().contains_key(*gone), "{gone} would reach Pleo");
        }
        for (name, value) in req.headers() {
            prop_assert!(!value.as_bytes().windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "{name}");
        }
        prop_assert!(!req.uri().to_string().contains(MARKER));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    report("request_path", &runner);
}
