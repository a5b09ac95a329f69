//! The access log through the real binary: one JSON line per request on
//! stdout with who, which tenant, what and how long; no query string unless
//! switched on; never a credential (client key, tenant key, legacy token, or
//! a secret an app put in the query).

use crate::support::*;

const CLIENT_KEY: &str = "gw_access_log_client_key_4f3e2d1c";
const QUERY_SECRET: &str = "query_secret_value_9a8b7c";

async fn run(access_log: &str, requests: &[(&str, Vec<(&str, String)>)]) -> Vec<serde_json::Value> {
    let staging = sandbox(staging_spec()).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(CLIENT_KEY));
    let extra = format!(
        "clients:\n  - name: erp\n    key_sha256: \"{digest}\"\n    tenants: [acme, globex]\naccess_log: {access_log}\n"
    );
    let path = write_standard_config(dir.path(), &base_url(&staging), &base_url(&production), &extra);
    let gw = Process::spawn(&["--config", path.to_str().unwrap()], &[("RUST_LOG", "debug")]);
    let (addr, _) = gw.listening().await;
    let client = http_client();
    for (path, headers) in requests {
        let mut b = http::Request::get(format!("http://{addr}{path}"));
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let resp = client.request(b.body(Default::default()).unwrap()).await.unwrap();
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    }
    // Lines are written when a response's body is done. The drain on
    // SIGTERM waits for every connection, so no line can be lost here.
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    let (exit, log) = tokio::task::spawn_blocking(move || gw.wait()).await.unwrap();
    assert!(exit.success());
    staging.shutdown().await;
    production.shutdown().await;

    let base64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    for secret in [CLIENT_KEY, GLOBEX_KEY, ACME_TOKEN, INITECH_KEY, LEGACY_TOKEN, QUERY_SECRET] {
        if secret == QUERY_SECRET && access_log.contains("include_query: true") {
            continue;
        }
        assert!(!log.contains(secret), "{secret} in the output:\n{log}");
        assert!(!log.contains(&base64(&format!("{secret}:"))), "Basic form of {secret} in the output");
    }
    log.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_access_lines_say_who_what_and_how_long_and_never_a_secret() {
    let key = format!("Bearer {CLIENT_KEY}");
    let requests = vec![
        (
            "/v2/employees?signature=query_secret_value_9a8b7c",
            vec![("authorization", key.clone()), ("x-pleo-tenant", "globex".to_string())],
        ),
        ("/sandbox/bytes/5000", vec![("authorization", key.clone()), ("x-pleo-tenant", "acme".to_string())]),
        ("/v2/x", vec![("authorization", format!("Bearer {LEGACY_TOKEN}"))]),
        ("/v2/x", vec![("authorization", key.clone()), ("x-pleo-tenant", "initech".to_string())]),
    ];
    let lines = run("{ format: json }", &requests).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");

    let ok = &lines[0];
    assert_eq!(ok["client"], "erp");
    assert_eq!(ok["tenant"], "globex");
    assert_eq!(ok["auth_model"], "integrated_api_key");
    assert_eq!(ok["environment"], "staging");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/v2/employees", "no query string by default");
    assert_eq!(ok["status"], 200);
    assert!(ok["bytes"].as_u64().unwrap() > 0);
    assert!(ok["duration_ms"].as_f64().unwrap() >= ok["upstream_ms"].as_f64().unwrap());
    assert_eq!(ok["request_id"].as_str().unwrap().len(), 24);
    assert!(ok["timestamp"].as_str().unwrap().starts_with("20"));

    assert_eq!(lines[1]["bytes"], 5000, "bytes counts the body as sent");
    assert_eq!(lines[1]["auth_model"], "oauth2");
    assert_eq!(lines[1]["environment"], "production");

    let refused = &lines[2];
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["error"], "legacy_token_refused");
    assert!(refused.get("tenant").is_none() && refused.get("upstream_ms").is_none());

    assert_eq!(lines[3]["status"], 403);
    assert_eq!(lines[3]["error"], "tenant_forbidden");
    assert_eq!(lines[3]["client"], "erp");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_string_is_logged_only_when_switched_on_and_off_means_no_lines() {
    let key = format!("Bearer {CLIENT_KEY}");
    let requests = vec![(
        "/v2/employees?signature=query_secret_value_9a8b7c",
        vec![("authorization", key.clone()), ("x-pleo-tenant", "globex".to_string())],
    )];
    let lines = run("{ format: json, include_query: true }", &requests).await;
    assert_eq!(lines[0]["path"], format!("/v2/employees?signature={QUERY_SECRET}"));
    let lines = run("{ format: off }", &requests).await;
    assert!(lines.is_empty(), "{lines:?}");
}
