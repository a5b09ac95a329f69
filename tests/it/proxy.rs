//! What leaves the gateway: the credential bytes per auth model, Host, path
//! and query byte for byte, method and body, environment routing, and the
//! headers that must never reach Pleo (or come back from it).

use crate::support::*;
use bytes::Bytes;
use http::{Method, Version};

#[tokio::test]
async fn each_auth_model_sends_its_exact_credential_to_its_environment() {
    let kit = Kit::start("").await;
    for (tenant, expected_auth, production) in [
        ("acme", format!("Bearer {ACME_TOKEN}"), true),
        ("globex", basic(GLOBEX_KEY), false),
        ("initech", basic(INITECH_KEY), false),
    ] {
        let r = kit.get("/v2/employees?limit=5", &[("x-pleo-tenant", tenant)]).await;
        assert_eq!(r.status, 200, "{tenant}: {:?}", r.body);
        assert_eq!(r.json()["companyId"], format!("company-{tenant}"));

        let sandbox = if production { &kit.production } else { &kit.staging };
        let other = if production { &kit.staging } else { &kit.production };
        let seen = sandbox.requests().pop().expect("the request reached its environment");
        assert_eq!(seen.headers["authorization"], expected_auth.as_str(), "{tenant}");
        assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
        assert_eq!(seen.headers["host"], sandbox.addr.to_string());
        assert_eq!(seen.target, "/v2/employees?limit=5");
        assert!(seen.headers.get("x-pleo-tenant").is_none(), "tenant tag stripped");
        assert!(other.requests().iter().all(|r| r.headers["authorization"] != expected_auth.as_str()));
    }
    kit.stop().await;
}

#[tokio::test]
async fn method_body_path_and_query_are_forwarded_byte_for_byte() {
    let kit = Kit::start("").await;
    let body = Bytes::from_static(br#"{"amount": 42, "note": "caf\u00e9"}"#);
    let path = "/v2/expenses/a%2Fb%20c/receipts?filter=%5Bx%5D&q=a+b&empty=&dup=1&dup=2";
    let r = kit
        .request(
            Method::PATCH,
            path,
            &[("x-pleo-tenant", "globex"), ("content-type", "application/json")],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = kit.staging.requests().pop().unwrap();
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.target, path);
    assert_eq!(seen.body_len, body.len() as u64);
    assert_eq!(seen.body_sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)));
    assert_eq!(seen.headers["content-type"], "application/json");
    kit.stop().await;
}

#[tokio::test]
async fn path_prefix_selects_the_tenant_and_is_stripped() {
    let kit = Kit::start("").await;
    let r = kit.get("/tenants/initech/v2/teams%2F7?x=%20", &[]).await;
    assert_eq!(r.status, 200);
    let seen = kit.staging.requests().pop().unwrap();
    assert_eq!(seen.target, "/v2/teams%2F7?x=%20");
    assert_eq!(seen.headers["authorization"], basic(INITECH_KEY).as_str());
    // The header rule comes first: it wins over the path.
    let r = kit.get("/tenants/initech/v2/x", &[("x-pleo-tenant", "acme")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(kit.production.requests().pop().unwrap().target, "/tenants/initech/v2/x");
    kit.stop().await;
}

#[tokio::test]
async fn default_tenant_and_host_suffix_rules() {
    let kit = Kit::start("tenant_from:\n  - host_suffix: .gw.internal\ndefault_tenant: globex\n").await;
    let r = kit.get("/v1/installations/me", &[]).await;
    assert_eq!(r.json()["resource"], "urn:pleo:company:company-globex");
    let r = kit.get("/v1/installations/me", &[("host", "initech.gw.internal:8080")]).await;
    assert_eq!(r.json()["resource"], "urn:pleo:company:company-initech");
    let seen = kit.staging.requests().pop().unwrap();
    assert_eq!(seen.headers["host"], kit.staging.addr.to_string(), "Host is the upstream's");
    kit.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways_and_request_id_set() {
    let kit = Kit::start("").await;
    let r = kit
        .get(
            "/sandbox/hop",
            &[
                ("x-pleo-tenant", "globex"),
                ("connection", "keep-alive, x-app-hop"),
                ("x-app-hop", "secret-hop"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("upgrade", "websocket"),
                ("x-app-kept", "1"),
                ("x-request-id", "app-id-123"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = kit.staging.requests().pop().unwrap();
    for h in ["connection", "x-app-hop", "keep-alive", "proxy-connection", "te", "upgrade", "transfer-encoding"] {
        assert!(seen.headers.get(h).is_none(), "{h} must not reach Pleo");
    }
    assert_eq!(seen.headers["x-app-kept"], "1");
    assert_eq!(seen.headers["x-request-id"], "app-id-123", "the app's request id is propagated");
    assert_eq!(r.headers["x-request-id"], "app-id-123");
    // The sandbox answered with its own hop-by-hop headers.
    for h in ["x-sandbox-hop", "keep-alive", "proxy-connection"] {
        assert!(r.headers.get(h).is_none(), "{h} must not reach the app");
    }
    assert_eq!(r.headers["x-sandbox-kept"], "1");

    // Without one, the gateway makes an id and sends it both ways.
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await;
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 24);
    assert_eq!(kit.staging.requests().pop().unwrap().headers["x-request-id"], id.as_str());
    kit.stop().await;
}

#[tokio::test]
async fn pleo_statuses_and_headers_pass_through() {
    let kit = Kit::start("").await;
    let r = kit.get("/sandbox/status/429", &[("x-pleo-tenant", "initech")]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "7");
    assert!(r.headers.get("x-pleo-gateway-error").is_none(), "Pleo's answer, not the gateway's");
    kit.stop().await;
}

#[tokio::test]
async fn http2_requests_from_apps_are_served() {
    let kit = Kit::start("").await;
    let stream = tokio::net::TcpStream::connect(kit.gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://{}/v2/employees?h2=1", kit.gw.addr))
        .header("x-pleo-tenant", "acme")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    let seen = kit.production.requests().pop().unwrap();
    assert_eq!(seen.target, "/v2/employees?h2=1");
    assert_eq!(seen.headers["authorization"], format!("Bearer {ACME_TOKEN}").as_str());
    kit.stop().await;
}

#[tokio::test]
async fn https_upstream_with_a_private_ca_negotiates_http2() {
    let (secure, ca_pem) = h2_tls_sandbox(staging_spec()).await;
    let plain = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = tls_staging_yaml(dir.path(), &secure, &ca_pem, &plain);
    let gw = start_gateway(&yaml, dir.path()).await;
    let client = http_client();
    for _ in 0..3 {
        let req = http::Request::get(format!("http://{}/v1/installations/me", gw.addr))
            .header("x-pleo-tenant", "globex")
            .body(Default::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let seen = secure.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.version == Version::HTTP_2), "ALPN picked h2 upstream");
    assert_eq!(seen[0].headers["authorization"], basic(GLOBEX_KEY).as_str());
    gw.shutdown().await;
    secure.shutdown().await;
    plain.shutdown().await;
}
