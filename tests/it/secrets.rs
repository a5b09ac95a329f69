//! No configured secret ever shows in the gateway's logs: a real gateway
//! process at TRACE level (ours and every dependency's) serves each auth
//! model, every kind of refusal and an upstream failure, is stopped with
//! SIGTERM, and its whole output is searched for every secret and its
//! encodings.

use crate::support::*;

#[tokio::test]
async fn no_secret_appears_in_trace_logs_of_a_full_run() {
    let staging = sandbox(staging_spec()).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let client_key = "gw_client_key_55aa66bb77cc88dd";
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(client_key));
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{}tenants:\n  acme:\n    environment: production\n    auth:\n      model: oauth2\n      access_token: {{ env: PGW_ACME_TOKEN }}\n  globex:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: {{ env: PGW_GLOBEX_KEY }}\n  initech:\n    environment: staging\n    auth:\n      model: standalone_api_key\n      key: {INITECH_KEY}\nclients:\n  - name: app\n    key_sha256: \"{digest}\"\n    tenants: [acme, globex, initech]\n",
        environments_yaml(&format!("http://{}", staging.addr), &format!("http://{}", production.addr)),
    );
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();

    let gw = Process::spawn(
        &["--config", path.to_str().unwrap()],
        &[("RUST_LOG", "trace"), ("PGW_ACME_TOKEN", ACME_TOKEN), ("PGW_GLOBEX_KEY", GLOBEX_KEY)],
    );
    let (addr, admin) = gw.listening().await;

    let client = http_client();
    let app = format!("Bearer {client_key}");
    let legacy = format!("Bearer {LEGACY_TOKEN}");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("/v2/employees?token=1", vec![("authorization", &app), ("x-pleo-tenant", "acme")], 200),
        ("/v2/employees", vec![("authorization", &app), ("x-pleo-tenant", "globex")], 200),
        ("/v2/employees", vec![("authorization", &app), ("x-pleo-tenant", "initech")], 200),
        ("/sandbox/status/401", vec![("authorization", &app), ("x-pleo-tenant", "globex")], 401),
        ("/v2/employees", vec![("authorization", &legacy), ("x-pleo-tenant", "acme")], 401),
        ("/v2/employees", vec![("authorization", &app), ("host", "openapi.pleo.io")], 421),
        ("/v2/employees", vec![("authorization", &app), ("x-pleo-tenant", "nobody")], 403),
        ("/v2/employees", vec![("x-pleo-tenant", "acme")], 401),
    ];
    for (path, headers, status) in &cases {
        let mut b = http::Request::get(format!("http://{addr}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = client.request(b.body(Default::default()).unwrap()).await.unwrap();
        assert_eq!(resp.status().as_u16(), *status, "{path} {headers:?}");
    }
    // Pleo going away mid-run: the failure is logged with its cause, not a secret.
    staging.shutdown().await;
    let req = http::Request::get(format!("http://{addr}/v2/x"))
        .header("authorization", &app)
        .header("x-pleo-tenant", "globex");
    assert_eq!(client.request(req.body(Default::default()).unwrap()).await.unwrap().status(), 502);
    let (status, _) = admin_get(admin, "/tenants").await;
    assert_eq!(status, 200);

    gw.signal(nix::sys::signal::Signal::SIGTERM);
    let (exit, log) = gw.wait();
    assert!(exit.success(), "SIGTERM ends the gateway cleanly: {exit:?}");
    production.shutdown().await;

    assert!(log.contains("TRACE"), "the run was captured at trace level");
    assert!(log.contains("legacy_token_refused") && log.contains("upstream_unavailable"));
    assert!(log.contains("inline"), "the inline secret is warned about (by key, not value)");
    let base64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    for secret in [ACME_TOKEN, GLOBEX_KEY, INITECH_KEY, LEGACY_TOKEN, client_key] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
        assert!(!log.contains(&base64(&format!("{secret}:"))), "Basic form of {secret} leaked");
        assert!(!log.contains(&base64(secret)), "base64 of {secret} leaked");
    }
}
