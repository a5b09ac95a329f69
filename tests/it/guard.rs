//! What a web page can do to a gateway on loopback (no client keys): DNS
//! rebinding and cross-site requests are refused on the app listener and the
//! admin listener, and nothing refused reaches Pleo.

use std::io::{Read, Write};

use crate::support::*;
use http::Method;

/// A raw HTTP/1.1 exchange: what a browser or an attacker's client sends byte
/// for byte (hyper's client would fix up the Host header).
fn raw(addr: std::net::SocketAddr, request: String) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn a_dns_rebinding_shaped_request_is_refused_on_both_listeners() {
    let kit = Kit::start("allowed_hosts: [gateway.internal, \"*.gw.internal\"]\n").await;
    let (addr, admin) = (kit.gw.addr, kit.gw.admin_addr);
    // evil.example resolved to 127.0.0.1: the browser sends its own name as Host.
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "GET /tenants/acme/v2/employees HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n".into(),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(answer.contains("x-pleo-gateway-error: host_not_allowed"), "{answer}");
    assert!(!answer.contains(ACME_TOKEN));

    let answer = tokio::task::spawn_blocking(move || {
        raw(admin, "GET /tenants HTTP/1.1\r\nHost: evil.example:9464\r\nConnection: close\r\n\r\n".into())
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "the admin listener too: {answer}");
    assert!(!answer.contains("company"), "{answer}");

    // Two Host headers: the first one used to win silently.
    let answer = tokio::task::spawn_blocking(move || {
        raw(addr, "GET /v2/x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nX-Pleo-Tenant: globex\r\nConnection: close\r\n\r\n".into())
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("x-pleo-gateway-error: ambiguous_request"), "{answer}");

    // Loopback names, IP literals and the configured names are served.
    for host in ["127.0.0.1", "localhost:8080", "gateway.internal", "acme.gw.internal:443", "[::1]:8080"] {
        let r = kit.get("/v2/x", &[("host", host), ("x-pleo-tenant", "globex")]).await;
        assert_eq!(r.status, 200, "{host}: {:?}", r.body);
    }
    assert_eq!(kit.upstream_count(), 5, "only the allowed requests reached Pleo");
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "host_not_allowed")]), 1.0);
    kit.stop().await;
}

#[tokio::test]
async fn a_cross_site_no_cors_post_is_refused_and_never_forwarded() {
    let kit = Kit::start("").await;
    // fetch('http://127.0.0.1:8080/tenants/acme/v2/expenses', {mode: 'no-cors', method: 'POST', body})
    // from a page on another site: the browser adds Origin and Sec-Fetch-*.
    let browser = [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "no-cors"),
        ("content-type", "text/plain;charset=UTF-8"),
    ];
    let r = kit.request(Method::POST, "/tenants/acme/v2/expenses", &browser, "x".into()).await;
    r.assert_refused(403, "cross_site_refused");
    // Without Origin (a navigation or form the browser labels), Sec-Fetch-Site is enough.
    let r =
        kit.request(Method::POST, "/tenants/acme/v2/expenses", &[("sec-fetch-site", "same-site")], "x".into()).await;
    r.assert_refused(403, "cross_site_refused");
    // An Origin alone, not allowed: refused too.
    kit.get("/tenants/acme/v2/x", &[("origin", "null")]).await.assert_refused(403, "cross_site_refused");
    assert_eq!(kit.upstream_count(), 0, "nothing a browser sent cross-site reached Pleo");
    // A server-side app sends neither and is served; so is a same-origin browser request.
    assert_eq!(kit.get("/tenants/acme/v2/x", &[]).await.status, 200);
    assert_eq!(kit.get("/tenants/acme/v2/x", &[("sec-fetch-site", "same-origin")]).await.status, 200);
    kit.stop().await;
}

#[tokio::test]
async fn an_allowed_origin_may_call() {
    let kit = Kit::start("allowed_origins: [\"https://ops.example.com\"]\n").await;
    let r =
        kit.get("/tenants/acme/v2/x", &[("origin", "https://ops.example.com"), ("sec-fetch-site", "cross-site")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    kit.get("/tenants/acme/v2/x", &[("origin", "https://evil.example")])
        .await
        .assert_refused(403, "cross_site_refused");
    kit.stop().await;
}
