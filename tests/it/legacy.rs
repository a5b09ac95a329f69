//! Refusals: every one is the contract's JSON plus `x-pleo-gateway-error`,
//! is counted in `pleo_gateway_refused_total{reason}`, and sends nothing to Pleo.

use std::io::{Read, Write};

use crate::support::*;

#[tokio::test]
async fn legacy_tokens_and_hosts_are_refused_and_never_forwarded() {
    let kit = Kit::start("").await;
    let tagged = ("x-pleo-tenant", "acme");

    let auth = format!("Bearer {LEGACY_TOKEN}");
    let j =
        kit.get("/v1/expenses", &[tagged, ("authorization", &auth)]).await.assert_refused(401, "legacy_token_refused");
    assert!(!j.to_string().contains(LEGACY_TOKEN), "the refusal never echoes the token");
    // A Pleo key sent by the app itself is foreign to the gateway too.
    kit.get("/v1/expenses", &[tagged, ("authorization", &basic(GLOBEX_KEY))])
        .await
        .assert_refused(401, "legacy_token_refused");
    kit.get("/v1/expenses", &[tagged, ("proxy-authorization", "Basic eDp5")])
        .await
        .assert_refused(401, "legacy_token_refused");
    // Even without a tenant, the legacy token is what gets reported.
    kit.get("/v1/expenses", &[("authorization", &auth)]).await.assert_refused(401, "legacy_token_refused");

    kit.get("/v1/expenses", &[tagged, ("host", "openapi.pleo.io")]).await.assert_refused(421, "legacy_host_refused");
    kit.get("/v1/expenses", &[tagged, ("host", "OpenAPI.pleo.io:443")])
        .await
        .assert_refused(421, "legacy_host_refused");

    assert_eq!(kit.upstream_count(), 0, "nothing refused reached an upstream");
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "legacy_token_refused")]), 4.0);
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "legacy_host_refused")]), 2.0);
    kit.stop().await;
}

#[tokio::test]
async fn absolute_form_target_to_the_legacy_host_is_refused() {
    let kit = Kit::start("").await;
    let addr = kit.gw.addr;
    // A raw request line: clients configured with the gateway as HTTP proxy send this.
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET http://openapi.pleo.io/v1/expenses HTTP/1.1\r\nHost: openapi.pleo.io\r\nX-Pleo-Tenant: acme\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(answer.contains("x-pleo-gateway-error: legacy_host_refused"));
    assert_eq!(kit.upstream_count(), 0);
    kit.stop().await;
}

#[tokio::test]
async fn missing_and_unknown_tenants_are_refused() {
    let kit = Kit::start("").await;
    kit.get("/v2/employees", &[]).await.assert_refused(400, "tenant_required");
    let j = kit.get("/v2/employees", &[("x-pleo-tenant", "wayne")]).await.assert_refused(403, "unknown_tenant");
    assert!(j["message"].as_str().unwrap().contains("wayne"));
    kit.get("/tenants/wayne/v2/employees", &[]).await.assert_refused(403, "unknown_tenant");
    // Odd header values are not echoed back.
    let j = kit.get("/v2/employees", &[("x-pleo-tenant", "<script>")]).await.assert_refused(403, "unknown_tenant");
    assert!(!j.to_string().contains("<script>"));
    assert_eq!(kit.upstream_count(), 0);
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "tenant_required")]), 1.0);
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "unknown_tenant")]), 3.0);
    kit.stop().await;
}

#[tokio::test]
async fn gateway_client_keys_allow_forbid_and_require() {
    use sha2::Digest;
    let erp_key = "gw_erp_key_7d0c1f2e3a4b5c6d";
    let bi_key = "gw_bi_key_0a1b2c3d4e5f6071";
    let extra = format!(
        "allow_unauthenticated_clients: false\nclients:\n  - name: erp\n    key_sha256: \"{}\"\n    tenants: [acme]\n  - name: bi\n    key_sha256: \"{}\"\n    tenants: [globex, initech]\ntenant_from:\n  - header: X-Pleo-Tenant\n  - client_key\n",
        hex::encode(sha2::Sha256::digest(erp_key)),
        hex::encode(sha2::Sha256::digest(bi_key)),
    );
    let kit = Kit::start(&extra).await;
    let erp = format!("Bearer {erp_key}");
    let bi = format!("Bearer {bi_key}");

    // Allowed: the key picks its only tenant, and never goes upstream.
    let r = kit.get("/v2/employees", &[("authorization", &erp)]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = kit.production.requests().pop().unwrap();
    assert_eq!(seen.headers["authorization"], format!("Bearer {ACME_TOKEN}").as_str());
    assert!(!format!("{:?}", seen.headers).contains(erp_key));
    let r = kit.get("/v2/employees", &[("authorization", &bi), ("x-pleo-tenant", "initech")]).await;
    assert_eq!(r.status, 200);

    // Forbidden, missing, wrong.
    kit.get("/v2/x", &[("authorization", &erp), ("x-pleo-tenant", "globex")])
        .await
        .assert_refused(403, "tenant_forbidden");
    kit.get("/v2/x", &[("authorization", &bi)]).await.assert_refused(400, "tenant_required");
    kit.get("/v2/x", &[("x-pleo-tenant", "acme")]).await.assert_refused(401, "client_unauthenticated");
    kit.get("/v2/x", &[("authorization", "Bearer gw_wrong_key"), ("x-pleo-tenant", "acme")])
        .await
        .assert_refused(401, "legacy_token_refused");
    assert_eq!(kit.upstream_count(), 2);
    kit.stop().await;
}

#[tokio::test]
async fn refused_legacy_tokens_are_counted_by_app_name() {
    use sha2::Digest;
    let extra = format!(
        "legacy_tokens:\n  - {{ name: old-erp, sha256: \"{}\" }}\n",
        hex::encode(sha2::Sha256::digest(LEGACY_TOKEN))
    );
    let kit = Kit::start(&extra).await;
    let legacy = format!("Bearer {LEGACY_TOKEN}");
    for _ in 0..3 {
        kit.get("/v2/x", &[("authorization", &legacy), ("x-pleo-tenant", "acme")])
            .await
            .assert_refused(401, "legacy_token_refused");
    }
    kit.get("/v2/x", &[("authorization", "Bearer some_other_token"), ("x-pleo-tenant", "acme")])
        .await
        .assert_refused(401, "legacy_token_refused");
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_legacy_token_refused_total", &[("app", "old-erp")]), 3.0);
    assert_eq!(sample(&m, "pleo_gateway_legacy_token_refused_total", &[("app", "unnamed")]), 1.0);
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "legacy_token_refused")]), 4.0);
    assert!(!m.contains(LEGACY_TOKEN));
    assert_eq!(kit.upstream_count(), 0);
    kit.stop().await;
}
