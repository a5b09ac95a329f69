//! Hot-path steps in isolation (criterion): tenant resolution for each rule,
//! building the upstream request from an incoming one, the whole gateway
//! handling a request against an in-process loopback upstream (beside the
//! same request sent direct), and loading configs of 10, 1,000 and 10,000
//! tenants. Load against nginx and haproxy is `bench/load.sh`; memory is
//! `bench/memory.sh`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use pleo_gateway::clients::Client;
use pleo_gateway::config::Config;
use pleo_gateway::credential::Sessions;
use pleo_gateway::metrics::Metrics;
use pleo_gateway::proxy::routes::Routes;
use pleo_gateway::proxy::steps::tenant;
use pleo_gateway::state::FileStore;
use pleo_gateway::upstream::{strip_hop_by_hop, Upstreams};

/// `tenants` API-key tenants on `upstream`; with `client`, a gateway client
/// bound to the middle tenant (so every rule, `client_key` too, can resolve).
fn config_yaml(tenants: usize, upstream: &str, client: bool) -> String {
    let mut yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naccess_log: {{ format: off }}\nenvironments:\n  staging: {{ base_url: {upstream} }}\n  production: {{ base_url: {upstream} }}\ntenant_from:\n  - header: X-Pleo-Tenant\n  - path_prefix: /tenants/\n  - host_suffix: .gw.internal\n"
    );
    if client {
        yaml += &format!(
            "  - client_key\nclients:\n  - name: erp\n    key_sha256: \"{}\"\n    tenants: [t{}]\n",
            "ab".repeat(32),
            tenants / 2
        );
    }
    yaml += "tenants:\n";
    for i in 0..tenants {
        yaml += &format!(
            "  t{i}:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: key-number-{i:08} }}\n"
        );
    }
    yaml
}

/// Config text -> validated config -> routing table: what start and reload do.
fn load(yaml: &str, dir: &std::path::Path, sessions: &Sessions, metrics: &Metrics) -> Routes {
    let config = Config::from_yaml(yaml, &dir.join("g.yaml")).unwrap();
    Routes::build(&config, &Upstreams::build(&config).unwrap(), metrics, sessions)
}

struct Loader {
    dir: tempfile::TempDir,
    metrics: Arc<Metrics>,
    sessions: Sessions,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Loader {
    fn new() -> Loader {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::register(&prometheus::Registry::new(), false).unwrap());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let store = Arc::new(FileStore::new(dir.path().join("state")));
        let sessions = Sessions::new(store, metrics.clone(), stopped);
        Loader { dir, metrics, sessions, _stop: stop }
    }

    fn routes(&self, yaml: &str) -> Routes {
        load(yaml, self.dir.path(), &self.sessions, &self.metrics)
    }
}

fn resolve(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let loader = Loader::new();
    let client = Arc::new(Client {
        name: "erp".into(),
        tenants: ["t500".into()].into_iter().collect(),
        bound_tenant: Some("t500".into()),
        in_flight: pleo_gateway::share::Share::new(usize::MAX),
    });
    let mut g = c.benchmark_group("resolve_tenant");
    // The same lookups in a table of 1,000 and of 100,000 tenants: flat.
    for tenants in [1_000, 100_000] {
        let routes = Arc::new(loader.routes(&config_yaml(tenants, "http://127.0.0.1:9", true)));
        let client = client.clone();
        for (name, uri, header, host, key) in [
            ("header", "/v2/employees", Some("t500"), None, false),
            ("path_prefix", "/tenants/t500/v2/employees?x=1", None, None, false),
            ("host_suffix", "/v2/employees", None, Some("t500.gw.internal"), false),
            ("client_key", "/v2/employees", None, None, true),
        ] {
            g.bench_function(BenchmarkId::new(name, tenants), |b| {
                b.iter(|| {
                    let mut req = Request::get(uri).body(()).unwrap();
                    if let Some(h) = header {
                        req.headers_mut().insert("x-pleo-tenant", HeaderValue::from_static(h));
                    }
                    if let Some(h) = host {
                        req.headers_mut().insert("host", HeaderValue::from_static(h));
                    }
                    let client = key.then(|| client.clone());
                    tenant::resolve(req, routes.clone(), client, None).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn upstream_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let routes = Loader::new().routes(&config_yaml(10, "https://external.staging.pleo.io", false));
    let upstream = routes.tenants["t1"].upstream.clone();
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("accept", "*/*"),
        ("user-agent", "legacy-erp/1.0"),
        ("content-type", "application/json"),
        ("x-request-id", "abc"),
        ("connection", "keep-alive"),
        ("host", "127.0.0.1:8080"),
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
    c.bench_function("build_upstream_request", |b| {
        b.iter(|| {
            let mut req = Request::get("/v2/expenses?limit=50&offset=100").body(()).unwrap();
            *req.headers_mut() = base.clone();
            upstream.prepare(&mut req).unwrap();
            req
        })
    });
}

fn config_load(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("config_load");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for n in [10, 1_000, 10_000] {
        let yaml = config_yaml(n, "http://127.0.0.1:9", true);
        let loader = Loader::new();
        g.bench_with_input(BenchmarkId::from_parameter(n), &yaml, |b, yaml| b.iter(|| loader.routes(yaml)));
    }
    g.finish();
}

/// A minimal origin: 200 with a small JSON body, keep-alive.
async fn origin() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn whole_service(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, upstream) = rt.block_on(async {
        let upstream = origin().await;
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, config_yaml(3, &format!("http://{upstream}"), false)).unwrap();
        let config = Config::load(&path).unwrap();
        let running = pleo_gateway::gateway::start(&config).await.unwrap();
        running.credential_check().await;
        (running, upstream)
    });
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut g = c.benchmark_group("whole_service");
    for (name, url) in [
        ("direct", format!("http://{upstream}/v2/employees")),
        ("through_gateway", format!("http://{}/v2/employees", gateway.addr)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let req = Request::get(url.as_str()).header("x-pleo-tenant", "t1").body(Full::default()).unwrap();
                    let resp = client.request(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.into_body().collect().await.unwrap().to_bytes()
                })
            })
        });
    }
    g.finish();
    rt.block_on(gateway.shutdown());
}

criterion_group!(benches, resolve, upstream_request, whole_service, config_load);
criterion_main!(benches);
