//! Only the gateway decides the credential: nothing a client sends can
//! remove or replace it, carry another credential to Pleo, or pick a
//! tenant by ambiguity. Each request here is what an attacker would try.

use crate::support::*;
use http::Method;

#[tokio::test]
async fn connection_cannot_remove_the_credential_and_client_credentials_never_leave() {
    let kit = Kit::start("").await;
    let hostile = [
        ("x-pleo-tenant", "globex"),
        ("connection", "authorization, host, x-request-id"),
        ("cookie", "session=stolen_cookie_value"),
        ("x-api-key", "client_chosen_key_value"),
        ("x-forwarded-for", "10.9.8.7"),
        ("forwarded", "for=10.9.8.7"),
        ("x-real-ip", "10.9.8.7"),
        ("x-request-id", "req-abc-123"),
    ];
    let r = kit.get("/v2/employees", &hostile).await;
    assert_eq!(r.status, 200, "the gateway's credential survived: {:?}", r.body);
    let seen = kit.staging.requests().pop().unwrap();
    assert_eq!(seen.headers["authorization"], basic(GLOBEX_KEY).as_str());
    assert_eq!(seen.headers["host"], kit.staging.addr.to_string().as_str());
    assert_eq!(seen.headers["x-request-id"], "req-abc-123");
    for gone in ["cookie", "x-api-key", "x-forwarded-for", "forwarded", "x-real-ip", "connection"] {
        assert!(!seen.headers.contains_key(gone), "{gone} reached Pleo");
    }
    // Pleo never saw a 401, so nothing counts as a rejected credential.
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_credential_rejected_total", &[("auth_model", "integrated_api_key")]), 0.0);
    kit.stop().await;
}

#[tokio::test]
async fn forwarding_headers_pass_only_when_trusted() {
    let kit = Kit::start("trust_forwarded_headers: true\n").await;
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "initech"), ("x-forwarded-for", "10.9.8.7")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(kit.staging.requests().pop().unwrap().headers["x-forwarded-for"], "10.9.8.7");
    kit.stop().await;
}

#[tokio::test]
async fn legacy_tokens_in_the_query_are_refused_and_counted() {
    let digest = pleo_gateway::clients::key_sha256(LEGACY_TOKEN.as_bytes());
    let kit = Kit::start(&format!("legacy_tokens:\n  - {{ name: old-erp, sha256: \"{digest}\" }}\n")).await;
    for q in [format!("access_token={LEGACY_TOKEN}"), format!("x=1&API_KEY={LEGACY_TOKEN}"), "apikey=zzz".into()] {
        let r = kit.get(&format!("/v2/x?{q}"), &[("x-pleo-tenant", "acme")]).await;
        let j = r.assert_refused(401, "legacy_token_refused");
        assert!(!j.to_string().contains(LEGACY_TOKEN));
    }
    assert_eq!(kit.upstream_count(), 0);
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_legacy_token_refused_total", &[("app", "old-erp")]), 2.0);
    assert_eq!(sample(&m, "pleo_gateway_legacy_token_refused_total", &[("app", "unnamed")]), 1.0);
    kit.stop().await;
}

#[tokio::test]
async fn ambiguous_tenant_tags_and_look_alike_prefixes_are_refused() {
    let kit = Kit::start("default_tenant: acme\n").await;
    // Two tenant tags: never guess which one was meant.
    let req = http::Request::get(kit.url("/v2/x"))
        .header("x-pleo-tenant", "globex")
        .header("x-pleo-tenant", "initech")
        .body(Default::default())
        .unwrap();
    kit.send(req).await.assert_refused(400, "ambiguous_request");
    // Paths that look like the tenant prefix must not fall through to default_tenant.
    for p in ["/Tenants/globex/v2/x", "/tenants//v2/x", "/TENANTS/globex", "/tenants"] {
        kit.get(p, &[]).await.assert_refused(400, "tenant_required");
    }
    assert_eq!(kit.upstream_count(), 0, "none went out with acme's credential");
    // The real forms still work.
    assert_eq!(kit.get("/tenants/globex/v2/x", &[]).await.status, 200);
    assert_eq!(kit.get("/v2/x", &[]).await.status, 200, "default tenant");
    kit.stop().await;
}

#[tokio::test]
async fn methods_pleo_does_not_use_get_405_and_are_never_forwarded() {
    let kit = Kit::start("").await;
    for m in ["TRACE", "CONNECT", "PROPFIND"] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let uri = if m == "CONNECT" { kit.gw.addr.to_string() } else { kit.url("/v2/x") };
        let req = http::Request::builder().method(method).uri(uri).header("x-pleo-tenant", "globex");
        let r = kit.send(req.body(Default::default()).unwrap()).await;
        r.assert_refused(405, "method_not_allowed");
    }
    assert_eq!(kit.upstream_count(), 0);
    for m in [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS] {
        assert_eq!(kit.request(m.clone(), "/v2/x", &[("x-pleo-tenant", "globex")], "".into()).await.status, 200, "{m}");
    }
    kit.stop().await;
}

#[tokio::test]
async fn a_key_holder_cannot_tell_unknown_tenants_from_forbidden_ones() {
    let key = "pgw_test_client_key_for_scrub_tests_0123456789";
    let digest = pleo_gateway::clients::key_sha256(key.as_bytes());
    let kit =
        Kit::start(&format!("clients:\n  - {{ name: erp, key_sha256: \"{digest}\", tenants: [globex] }}\n")).await;
    let auth = format!("Bearer {key}");
    let forbidden = kit.get("/v2/x", &[("authorization", &auth), ("x-pleo-tenant", "initech")]).await;
    let unknown = kit.get("/v2/x", &[("authorization", &auth), ("x-pleo-tenant", "nosuchtenant")]).await;
    forbidden.assert_refused(403, "tenant_forbidden");
    unknown.assert_refused(403, "tenant_forbidden");
    assert_eq!(forbidden.body, unknown.body, "the same answer, byte for byte");
    kit.stop().await;
}
