//! Traces from the built binary to a real OTLP/HTTP receiver
//! (`support::otlp`, on the official `opentelemetry-proto` types): the span
//! trees of a proxied request continuing the app's `traceparent`, a
//! path-prefix tenant, a 401 replay with its forced refresh, and a refused
//! request; the trace context kept from Pleo unless `propagate_upstream`;
//! no secret in any attribute; and a collector that is down costing the
//! requests nothing while the dropped spans are counted.

use std::time::Duration;

use crate::support::oauth::*;
use crate::support::otlp::{Received, Receiver};
use crate::support::*;
use nix::sys::signal::Signal;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const INTERNAL: i32 = 1;

struct Traced {
    gw: Process,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    sandbox: pleo_gateway::sandbox::Sandbox,
    _dir: tempfile::TempDir,
}

async fn start(receiver: &Receiver, telemetry_extra: &str) -> Traced {
    let sandbox = sandbox(spec(Duration::from_secs(900), &[INITIAL_RT])).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "limits: {{ forced_refresh_interval: 1ms }}\ntenant_from:\n  - header: X-Pleo-Tenant\n  - path_prefix: /tenants/\n\
         telemetry:\n  otlp_endpoint: http://{}\n  service_name: gw-under-test\n{telemetry_extra}",
        receiver.addr
    );
    let yaml = config_yaml(dir.path(), &sandbox, Some(INITIAL_RT), &extra);
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml).unwrap();
    let gw = Process::spawn(&["--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]);
    let (addr, admin) = gw.listening().await;
    Traced { gw, addr, admin, sandbox, _dir: dir }
}

async fn send(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut req = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
    http_client().request(req).await.unwrap().status().as_u16()
}

fn children<'a>(spans: &'a [Received], of: &Received) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.parent_span_id == of.span_id && s.trace_id == of.trace_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_span_trees_arrive_at_a_real_receiver() {
    let receiver = Receiver::start().await;
    let t = start(&receiver, "").await;
    let tagged = [("x-pleo-tenant", "hooli")];

    // 1. A proxied request that arrives inside the app's trace.
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let headers = [("x-pleo-tenant", "hooli"), ("traceparent", traceparent.as_str()), ("tracestate", "app=1")];
    assert_eq!(send(t.addr, "GET", "/v2/employees", &headers, "").await, 200);
    let server = receiver.wait_for("for GET /v2/employees", |s| s.attr("url.path") == Some("/v2/employees")).await;
    assert_eq!((server.kind, server.name.as_str()), (SERVER, "GET /v2/employees"));
    assert_eq!(
        (server.trace_id.as_str(), server.parent_span_id.as_str()),
        (TRACE, PARENT),
        "the app's trace continues"
    );
    assert_eq!(server.service, "gw-under-test");
    assert_eq!(server.attr("http.route"), Some("/v2/employees"));
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("pleo_gateway.tenant"), Some("hooli"));
    assert_eq!(server.attr("pleo_gateway.auth_model"), Some("oauth2"));
    assert_eq!(server.attr("pleo_gateway.tenant_rule"), Some("header:x-pleo-tenant"));
    let spans = receiver.spans();
    let client = children(&spans, &server);
    assert_eq!(client.len(), 1, "one attempt: {client:#?}");
    assert_eq!((client[0].kind, client[0].name.as_str()), (CLIENT, "GET /v2/employees"));
    assert_eq!(client[0].attr("url.full"), Some(format!("http://{}/v2/employees", t.sandbox.addr).as_str()));
    assert_eq!(client[0].attr("server.port"), Some(t.sandbox.addr.port().to_string().as_str()));
    assert_eq!(client[0].attr("http.response.status_code"), Some("200"));
    assert_eq!(client[0].attr("http.request.resend_count"), None);
    // Pleo never sees the app's trace context (propagate_upstream is off).
    let upstream = t.sandbox.requests().into_iter().find(|r| r.target == "/v2/employees").unwrap();
    assert!(upstream.headers.get("traceparent").is_none() && upstream.headers.get("tracestate").is_none());
    // The access log line names the trace.
    t.gw.line_with(&format!("\"trace_id\":\"{TRACE}\""), Duration::from_secs(5)).await;

    // 2. A path-prefix tenant: the route holds the rule and the template, never the ids.
    let path = "/tenants/hooli/v2/expenses/3f2b1c9e-aaaa-4bbb-8ccc-1234567890ab?token=query-secret-1";
    assert_eq!(send(t.addr, "GET", path, &[], "").await, 200);
    let prefixed =
        receiver.wait_for("for the prefixed path", |s| s.kind == SERVER && s.name.contains("{tenant}")).await;
    assert_eq!(prefixed.name, "GET /tenants/{tenant}/v2/expenses/{id}");
    assert_eq!(prefixed.attr("http.route"), Some("/tenants/{tenant}/v2/expenses/{id}"));
    assert_eq!(prefixed.attr("pleo_gateway.tenant_rule"), Some("path_prefix:/tenants/"));
    let spans = receiver.spans();
    let upstream = children(&spans, &prefixed);
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].name, "GET /v2/expenses/{id}");
    let url = upstream[0].attr("url.full").unwrap();
    assert!(url.ends_with("/v2/expenses/3f2b1c9e-aaaa-4bbb-8ccc-1234567890ab"), "{url}: no query");

    // 3. Pleo drops the access token: the small POST is replayed after a forced refresh.
    t.sandbox.expire_access_tokens();
    assert_eq!(send(t.addr, "POST", "/v2/expenses", &tagged, "{\"amount\":1}").await, 200);
    let post =
        receiver.wait_for("for the POST", |s| s.kind == SERVER && s.attr("http.request.method") == Some("POST")).await;
    let refresh = receiver
        .wait_for("for the forced refresh", |s| {
            s.name == "oauth refresh" && s.attr("pleo_gateway.forced") == Some("true")
        })
        .await;
    let spans = receiver.spans();
    let mut attempts = children(&spans, &post);
    attempts.sort_by_key(|s| s.attr("http.request.resend_count").is_some());
    assert_eq!(attempts.len(), 2, "sent, rejected, sent again: {attempts:#?}");
    assert_eq!(attempts[0].attr("http.response.status_code"), Some("401"));
    assert_eq!(attempts[0].status, 2, "a client span with 401 is an error");
    assert_eq!(attempts[1].attr("http.request.resend_count"), Some("1"));
    assert_eq!(attempts[1].attr("http.response.status_code"), Some("200"));
    assert_eq!(refresh.kind, INTERNAL);
    assert_eq!(refresh.parent_span_id, "", "a refresh is a trace of its own");
    assert_eq!(refresh.attr("pleo_gateway.tenant"), Some("hooli"));
    assert_eq!(refresh.attr("pleo_gateway.oauth.status"), Some("connected"));
    let link = |from: &Received, to: &Received, why: &str| {
        from.links.iter().any(|(trace, span, a)| {
            *trace == to.trace_id && *span == to.span_id && a.get("pleo_gateway.link").map(String::as_str) == Some(why)
        })
    };
    assert!(link(&refresh, &post, "started_by"), "the refresh links to the request that forced it: {refresh:#?}");
    assert!(link(&post, &refresh, "waited_on"), "the request links to the refresh it waited on: {post:#?}");

    // 4. A refused request: a server span with the gateway's error code, nothing upstream.
    let legacy = format!("Bearer {LEGACY_TOKEN}");
    let refused = [("x-pleo-tenant", "hooli"), ("authorization", legacy.as_str())];
    assert_eq!(send(t.addr, "GET", "/v2/refused-here", &refused, "").await, 401);
    let r = receiver.wait_for("for the refusal", |s| s.attr("url.path") == Some("/v2/refused-here")).await;
    assert_eq!((r.kind, r.name.as_str()), (SERVER, "GET"), "no route before a tenant is known");
    assert_eq!(r.attr("error.type"), Some("legacy_token_refused"));
    assert_eq!(r.attr("http.response.status_code"), Some("401"));
    assert!(children(&receiver.spans(), &r).is_empty(), "nothing went upstream");
    // A method of the client's own making names no span.
    assert_eq!(send(t.addr, "PROPFIND-X", "/v2/odd-method", &tagged, "").await, 405);
    let odd = receiver.wait_for("for the odd method", |s| s.attr("url.path") == Some("/v2/odd-method")).await;
    assert_eq!(odd.name, "HTTP");
    assert_eq!(odd.attr("http.request.method"), Some("_OTHER"));
    assert_eq!(odd.attr("http.request.method_original"), Some("PROPFIND-X"));
    assert_eq!(odd.attr("error.type"), Some("method_not_allowed"));

    // No secret anywhere: tokens, client secret, the legacy token, the query.
    let all = format!("{:?}", receiver.spans());
    assert_no_secret_in(&all, &t.sandbox);
    for s in [LEGACY_TOKEN, "query-secret-1", "Bearer", "Basic "] {
        assert!(!all.contains(s), "{s} in a span");
    }
    let m = admin_get(t.admin, "/metrics").await.1;
    assert!(sample(&m, "pleo_gateway_spans_exported_total", &[]) >= 8.0, "{m}");
    assert_eq!(sample(&m, "pleo_gateway_spans_dropped_total", &[("reason", "export_failed")]), 0.0);

    t.gw.signal(Signal::SIGTERM);
    let (status, log) = t.gw.wait();
    assert!(status.success(), "{log}");
    assert_no_secret_in(&log, &t.sandbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_propagate_upstream_pleo_gets_the_gateways_own_context() {
    let receiver = Receiver::start().await;
    let t = start(&receiver, "  propagate_upstream: true\n").await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let headers = [("x-pleo-tenant", "hooli"), ("traceparent", traceparent.as_str())];
    assert_eq!(send(t.addr, "GET", "/v2/employees", &headers, "").await, 200);
    let server = receiver.wait_for("for the request", |s| s.kind == SERVER && s.trace_id == TRACE).await;
    let spans = receiver.spans();
    let client = children(&spans, &server);
    assert_eq!(client.len(), 1);
    let upstream = t.sandbox.requests().into_iter().find(|r| r.target == "/v2/employees").unwrap();
    let sent = upstream.headers["traceparent"].to_str().unwrap().to_string();
    assert_eq!(sent, format!("00-{TRACE}-{}-01", client[0].span_id), "the CLIENT span is Pleo's parent");
    t.gw.signal(Signal::SIGTERM);
    assert!(t.gw.wait().0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_requests_nothing_and_drops_are_counted() {
    let receiver = Receiver::start().await;
    let t = start(&receiver, "").await;
    let tagged = [("x-pleo-tenant", "hooli")];
    assert_eq!(send(t.addr, "GET", "/v2/before", &tagged, "").await, 200);
    receiver.wait_for("before the collector went down", |s| s.attr("url.path") == Some("/v2/before")).await;

    receiver.stop();
    for i in 0..20 {
        assert_eq!(send(t.addr, "GET", &format!("/v2/while-down/{i}"), &tagged, "").await, 200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = admin_get(t.admin, "/metrics").await.1;
        let dropped = sample(&m, "pleo_gateway_spans_dropped_total", &[("reason", "export_failed")]);
        if dropped >= 40.0 {
            break; // 20 requests, a SERVER and a CLIENT span each
        }
        assert!(std::time::Instant::now() < deadline, "dropped spans were not counted: {dropped}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!receiver.spans().iter().any(|s| s.attr("url.path").is_some_and(|p| p.contains("while-down"))));
    // SIGTERM still ends the process promptly: the last flush fails fast.
    t.gw.signal(Signal::SIGTERM);
    let (status, log) = t.gw.wait();
    assert!(status.success(), "{log}");
}
