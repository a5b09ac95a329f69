//! Hot-path steps in isolation: tenant resolution per rule, and the header
//! work done on every request. End-to-end load is measured with the wrk
//! harness (../shared/bench), not here.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request};
use pleo_gateway::config::Config;
use pleo_gateway::credential::store::FileStore;
use pleo_gateway::credential::Sessions;
use pleo_gateway::metrics::Metrics;
use pleo_gateway::routes::{Routes, Snapshot};
use pleo_gateway::tenant::ResolveTenant;
use pleo_gateway::upstream::{strip_hop_by_hop, Upstreams};
use tower::filter::Predicate;

fn routes(tenants: usize) -> Arc<Routes> {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from(
        "environments:\n  staging: { base_url: http://127.0.0.1:9 }\n  production: { base_url: http://127.0.0.1:9 }\ntenant_from:\n  - header: X-Pleo-Tenant\n  - path_prefix: /tenants/\n  - host_suffix: .gw.internal\ntenants:\n",
    );
    for i in 0..tenants {
        yaml += &format!(
            "  t{i}:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: key-number-{i:08} }}\n"
        );
    }
    let config = Config::from_yaml(&yaml, &dir.path().join("g.yaml")).unwrap();
    let metrics = Arc::new(Metrics::register(&prometheus::Registry::new(), false).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let store = Arc::new(FileStore::new(dir.path().join("state")));
    let sessions = Sessions::new(store, metrics.clone(), stopped);
    Arc::new(Routes::build(&config, &Upstreams::build(&config).unwrap(), &metrics, &sessions))
}

fn resolve(c: &mut Criterion) {
    let routes = routes(1000);
    let mut g = c.benchmark_group("resolve_tenant");
    for (name, uri, header, host) in [
        ("header", "/v2/employees", Some("t500"), None),
        ("path_prefix", "/tenants/t500/v2/employees?x=1", None, None),
        ("host_suffix", "/v2/employees", None, Some("t500.gw.internal")),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut req = Request::get(uri).body(()).unwrap();
                if let Some(h) = header {
                    req.headers_mut().insert("x-pleo-tenant", HeaderValue::from_static(h));
                }
                if let Some(h) = host {
                    req.headers_mut().insert("host", HeaderValue::from_static(h));
                }
                req.extensions_mut().insert(Snapshot(routes.clone()));
                ResolveTenant.check(req).unwrap()
            })
        });
    }
    g.finish();
}

fn headers(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("accept", "*/*"),
        ("user-agent", "legacy-erp/1.0"),
        ("content-type", "application/json"),
        ("x-request-id", "abc"),
    ] {
        base.insert(k, HeaderValue::from_static(v));
    }
    c.bench_function("strip_hop_by_hop", |b| {
        b.iter(|| {
            let mut h = base.clone();
            strip_hop_by_hop(&mut h);
            h
        })
    });
}

criterion_group!(benches, resolve, headers);
criterion_main!(benches);
