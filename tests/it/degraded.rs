//! A tenant whose credential cannot be had (here: the token endpoint refuses
//! its OAuth client) degrades alone: it answers 503 `credential_unavailable`
//! (never reaching Pleo's API) while the others serve.
//! And request heads over `limits.max_header_bytes` get 431.

use crate::support::*;

const MANAGED_OAUTH_TENANT: &str = "  hooli:
    environment: production
    auth:
      model: oauth2
      client_id: hooli-client
      client_secret: { file: hooli.secret }
      refresh_token: { file: hooli.refresh }
";

#[tokio::test]
async fn a_tenant_without_a_usable_credential_degrades_alone() {
    let staging = sandbox(staging_spec()).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hooli.secret"), "hooli-client-secret-value").unwrap();
    std::fs::write(dir.path().join("hooli.refresh"), "hooli-refresh-token-value").unwrap();
    let yaml = standard_yaml(dir.path(), &base_url(&staging), &base_url(&production), MANAGED_OAUTH_TENANT);
    let gw = start_gateway(&yaml, dir.path()).await;
    let client = http_client();
    let get = |tenant: &'static str| {
        let req = http::Request::get(format!("http://{}/v2/x", gw.addr)).header("x-pleo-tenant", tenant);
        client.request(req.body(Default::default()).unwrap())
    };

    let resp = get("hooli").await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-pleo-gateway-error"], "credential_unavailable");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["error"], "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("client_id/client_secret"), "says what is wrong: {j}");
    let api_calls = production.requests().iter().filter(|r| r.target != "/oauth/token").count();
    assert_eq!(api_calls, 0, "only the token endpoint was asked; nothing went to the API for it");

    assert_eq!(get("acme").await.unwrap().status(), 200, "the other tenants serve");
    let m = admin_get(gw.admin_addr, "/metrics").await.1;
    let labels = [("auth_model", "oauth2"), ("environment", "production"), ("status", "503")];
    assert_eq!(sample(&m, "pleo_gateway_requests_total", &labels), 1.0);
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "credential_unavailable")]), 1.0);
    let tenants = admin_get(gw.admin_addr, "/tenants").await.1;
    let j: serde_json::Value = serde_json::from_str(&tenants).unwrap();
    let hooli = j["tenants"].as_array().unwrap().iter().find(|t| t["name"] == "hooli").unwrap().clone();
    assert_eq!(hooli["state"], "client_rejected");
    assert!(!tenants.contains("hooli-refresh-token-value") && !tenants.contains("hooli-client-secret-value"));
    gw.shutdown().await;
    staging.shutdown().await;
    production.shutdown().await;
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let kit = Kit::start("limits: { max_header_bytes: 16384 }\n").await;
    let big = "x".repeat(20_000);
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "globex"), ("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(kit.upstream_count(), 0);
    let fits = "x".repeat(8_000);
    assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "globex"), ("x-big", &fits)]).await.status, 200);
    kit.stop().await;
}
