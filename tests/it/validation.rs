//! Credential validation: every API-key tenant's key is checked with
//! `GET /v1/installations/me` at start and after each reload. A key Pleo
//! refuses marks that tenant `rejected` (503 `credential_unavailable` for
//! its requests) and leaves the others and readiness alone; `--strict`
//! makes it fatal at start.

use crate::support::*;
use pleo_gateway::config::Environment;
use pleo_gateway::sandbox::SandboxSpec;

const INITECH_NEW_KEY: &str = "sk_initech_staging_renewed_77aa";

fn tenant<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["tenants"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()
}

#[tokio::test]
async fn a_key_pleo_refuses_degrades_only_its_tenant_until_it_is_fixed() {
    // Pleo no longer accepts initech's configured key, but knows its renewed one.
    let staging = SandboxSpec::new(Environment::Staging)
        .api_key(GLOBEX_KEY, "company-globex")
        .api_key(INITECH_NEW_KEY, "company-initech");
    let kit = Kit::start_with(staging, production_spec(), "").await;
    let summary = kit.gw.credential_check().await;
    assert_eq!(summary.connected, 1);
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.failed[0].0, "initech");
    assert!(summary.failed[0].1.contains("401"), "{:?}", summary.failed);

    let (status, text) = admin_get(kit.gw.admin_addr, "/tenants").await;
    assert_eq!(status, 200);
    for secret in ALL_SECRETS {
        assert!(!text.contains(secret), "/tenants shows a secret");
    }
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let globex = tenant(&list, "globex");
    assert_eq!(globex["state"], "connected");
    assert_eq!(globex["company_id"], "company-globex");
    assert_eq!(globex["pleo_status"], 200);
    assert!(globex["credential"].as_str().unwrap().ends_with(&GLOBEX_KEY[GLOBEX_KEY.len() - 4..]));
    let initech = tenant(&list, "initech");
    assert_eq!(initech["state"], "rejected");
    assert_eq!(initech["pleo_status"], 401);

    // Only the rejected tenant is refused; the gateway stays ready.
    let before = kit.staging.requests().len();
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "initech")]).await;
    let j = r.assert_refused(503, "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("rejected"), "{j}");
    assert_eq!(kit.staging.requests().len(), before, "a request with a rejected key is not sent");
    assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await.status, 200);
    assert_eq!(admin_get(kit.gw.admin_addr, "/readyz").await.0, 200);

    // The operator puts the renewed key in place: the reload checks it, and only it.
    std::fs::write(kit.dir.path().join("initech.key"), INITECH_NEW_KEY).unwrap();
    kit.gw.reload().await.unwrap();
    let summary = kit.gw.credential_check().await;
    assert_eq!((summary.connected, summary.failed.len()), (2, 0));
    // Two checks at start, one after the reload (the changed key); none of them counted as traffic.
    assert_eq!(kit.staging.credential_checks(), 3);
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "initech")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["companyId"], "company-initech");
    kit.stop().await;
}

#[tokio::test]
async fn an_unreachable_pleo_leaves_the_tenant_serving_unverified() {
    // Nothing listens there: a port from below the ephemeral range, which no test binds.
    let dead_addr = format!("127.0.0.1:{}", free_port());
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = standard_yaml(dir.path(), &format!("http://{dead_addr}"), &base_url(&production), "");
    let gw = start_gateway(&yaml, dir.path()).await;
    let summary = gw.credential_check().await;
    assert_eq!(summary.failed.len(), 2);
    assert!(summary.failed.iter().all(|(_, why)| why.contains("could not verify")), "{:?}", summary.failed);
    let list: serde_json::Value = serde_json::from_str(&admin_get(gw.admin_addr, "/tenants").await.1).unwrap();
    assert_eq!(tenant(&list, "globex")["state"], "unverified");
    // Not refused by the gateway: the request goes on and meets the outage (502).
    let req = http::Request::get(format!("http://{}/v2/x", gw.addr)).header("x-pleo-tenant", "globex");
    let resp = http_client().request(req.body(Default::default()).unwrap()).await.unwrap();
    assert_eq!(resp.headers()["x-pleo-gateway-error"], "upstream_unavailable");
    gw.shutdown().await;
    production.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_refuses_to_start_when_a_key_is_rejected() {
    let staging = sandbox(SandboxSpec::new(Environment::Staging).api_key(GLOBEX_KEY, "company-globex")).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_standard_config(dir.path(), &base_url(&staging), &base_url(&production), "");
    let gw = Process::spawn(&["--config", path.to_str().unwrap(), "--strict"], &[]);
    let (exit, log) = tokio::task::spawn_blocking(move || gw.wait()).await.unwrap();
    assert_eq!(exit.code(), Some(69), "{log}");
    assert!(log.contains("--strict") && log.contains("initech") && log.contains("401"), "{log}");
    assert!(!log.contains("pleo-gateway listening"));
    for secret in ALL_SECRETS {
        assert!(!log.contains(secret));
    }
    staging.shutdown().await;
    production.shutdown().await;
}
