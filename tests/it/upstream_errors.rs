//! When Pleo cannot be reached: 502 `upstream_unavailable` (connect refused,
//! TLS failure), 504 `upstream_timeout` (no answer in time), counted both as
//! refusals and as the tenant's requests.

use crate::support::*;

async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn connection_refused_and_tls_failure_are_502() {
    let dir = tempfile::tempdir().unwrap();
    let plain = sandbox(production_spec()).await;
    let dead = closed_port().await;
    // Staging is unreachable; production speaks plain HTTP where TLS is expected.
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlimits: {{ upstream_connect_timeout: 2s }}\nenvironments:\n  staging: {{ base_url: http://{dead} }}\n  production: {{ base_url: https://{} }}\n{}",
        plain.addr,
        tenants_yaml(dir.path())
    );
    let gw = start_gateway(&yaml, dir.path()).await;
    let client = http_client();
    for tenant in ["globex", "acme"] {
        let req = http::Request::get(format!("http://{}/v2/x", gw.addr))
            .header("x-pleo-tenant", tenant)
            .body(Default::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 502, "{tenant}");
        assert_eq!(resp.headers()["x-pleo-gateway-error"], "upstream_unavailable");
    }
    let m = admin_get(gw.admin_addr, "/metrics").await.1;
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "upstream_unavailable")]), 2.0);
    let labels = [("auth_model", "integrated_api_key"), ("environment", "staging"), ("status", "502")];
    assert_eq!(sample(&m, "pleo_gateway_requests_total", &labels), 1.0);
    gw.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let kit = Kit::start("limits: { upstream_timeout: 300ms }\n").await;
    kit.get("/sandbox/delay/5000", &[("x-pleo-tenant", "globex")]).await.assert_refused(504, "upstream_timeout");
    // A quick answer on the same gateway is unaffected.
    assert_eq!(kit.get("/sandbox/delay/1", &[("x-pleo-tenant", "globex")]).await.status, 200);
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "upstream_timeout")]), 1.0);
    kit.stop().await;
}
