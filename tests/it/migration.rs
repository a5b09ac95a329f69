//! Moving a legacy app (docs/migration.md), through real sockets against
//! the sandbox's legacy-shaped paths: what Pleo answers 404/405 is counted
//! per template and client (`/migration`, the metric, `migration-report`),
//! a rewrite sends a moved path to its twin, `explain` says what would
//! happen and sends nothing, a key from the wrong environment is named as
//! such, and `policy: partner` enforces the Early Access Programme's rule.

use crate::support::connect::sha256_hex;
use crate::support::logs::Logs;
use crate::support::*;
use http::{header, Method, StatusCode};

const ERP_KEY: &str = "pgw_legacy_erp_client_key_0123456789";
const OPS_KEY: &str = "pgw_ops_client_key_9876543210abcdef";
const STAGING_ONLY_KEY: &str = "ik_staging_only_key_4d5e6f7a8b9c";
const RULE: &str = "GET /v1/expenses/{id} -> /v2/expenses/{id}";

fn extra() -> String {
    format!(
        "clients:
  - {{ name: legacy-erp, key_sha256: \"{}\", tenants: [globex] }}
  - {{ name: ops, key_sha256: \"{}\", tenants: [globex, initech] }}
legacy_tokens:
  - {{ name: old-erp, sha256: \"{}\" }}
rewrites:
  - {{ method: GET, from: \"/v1/expenses/{{id}}\", to: \"/v2/expenses/{{id}}\" }}
",
        sha256_hex(ERP_KEY),
        sha256_hex(OPS_KEY),
        sha256_hex(LEGACY_TOKEN)
    )
}

fn binary(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let secrets: Vec<&str> =
        ALL_SECRETS.iter().copied().chain([ERP_KEY, OPS_KEY, LEGACY_TOKEN, STAGING_ONLY_KEY]).collect();
    run_binary(config, args, &secrets)
}

#[tokio::test]
async fn a_legacy_app_is_measured_rewritten_and_reported() {
    let logs = Logs::capture();
    let kit = Kit::start(&extra()).await;
    let erp = format!("Bearer {ERP_KEY}");
    let call = |method: Method, path: &'static str| {
        let (kit, erp) = (&kit, erp.clone());
        async move {
            kit.request(method, path, &[("authorization", &erp), ("x-pleo-tenant", "globex")], Default::default())
                .await
                .status
        }
    };
    // Two paths with no twin: 404 from Pleo, ids folded.
    assert_eq!(call(Method::GET, "/v1/users/12345").await, 404);
    assert_eq!(call(Method::GET, "/v1/users/3f2b9c1e-8a7d-4e6f-9b0a-1c2d3e4f5a6b").await, 404);
    assert_eq!(call(Method::GET, "/v1/export-jobs/987654?format=csv").await, 404);
    // A moved path, rewritten to its twin: 200, and Pleo saw the new path.
    assert_eq!(call(Method::GET, "/v1/expenses/555?limit=5").await, 200);
    let seen = kit.staging.requests().last().unwrap().target.clone();
    assert_eq!(seen, "/v2/expenses/555?limit=5", "rewritten, query kept");
    // The twin takes GET only.
    assert_eq!(call(Method::DELETE, "/v2/expenses/555").await, 405);
    // An app still on its old openapi token: refused, counted under its name.
    let old = kit.get("/v1/expenses", &[("authorization", &format!("Bearer {LEGACY_TOKEN}"))]).await;
    old.assert_refused(401, "legacy_token_refused");

    let (status, body) = admin_get(kit.gw.admin_addr, "/migration").await;
    assert_eq!(status, StatusCode::OK);
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failures = m["clients"]["legacy-erp"]["not_found"].as_array().unwrap();
    let find = |t: &str, s: u16| failures.iter().find(|f| f["template"] == t && f["status"] == s).cloned();
    let users = find("/v1/users/{id}", 404).expect("the users template");
    assert_eq!((users["count"].as_u64(), users["tenants"][0].as_str()), (Some(2), Some("globex")), "{users}");
    assert!(users["first_seen_ms"].as_u64() <= users["last_seen_ms"].as_u64());
    assert!(find("/v1/export-jobs/{id}", 404).is_some(), "{m}");
    assert!(find("/v2/expenses/{id}", 405).is_some(), "{m}");
    assert!(find("/v1/expenses/{id}", 404).is_none() && find("/v2/expenses/{id}", 404).is_none(), "the rewrite worked");
    assert_eq!(m["clients"]["anonymous"]["legacy_tokens"]["old-erp"]["count"], 1, "{m}");
    assert!(!body.contains(ERP_KEY) && !body.contains(LEGACY_TOKEN));

    let metrics = kit.metrics().await;
    assert_eq!(sample(&metrics, "pleo_gateway_upstream_not_found_total", &[("template", "/v1/users/{id}")]), 2.0);
    assert_eq!(sample(&metrics, "pleo_gateway_rewrites_total", &[("rule", RULE)]), 1.0);
    let log = logs.text();
    assert!(log.contains(&format!("rewrite=\"{RULE}\"")), "the access line names the rule");

    // The same as a table, from the running gateway.
    let config = kit.dir.path().join("gateway.yaml");
    let admin = kit.gw.admin_addr.to_string();
    let (code, out) =
        tokio::task::spawn_blocking(move || binary(&config, &["migration-report", "--admin", &admin])).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("legacy-erp") && out.contains("/v1/users/{id}") && out.contains("Pleo 404"), "{out}");
    assert!(out.contains("old-erp") && out.contains("legacy token"), "{out}");
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_what_would_happen_and_sends_nothing() {
    // Every test here installs its log first: the first to emit an event
    // must not find no subscriber at all, or the access line's interest is
    // cached as "never" for the test that reads it.
    let _logs = Logs::capture();
    let kit = Kit::start(&extra()).await;
    kit.gw.credential_check().await;
    let sent_before = (kit.staging.requests().len(), kit.production.requests().len());
    let checks_before = kit.staging.credential_checks() + kit.production.credential_checks();
    let config = kit.dir.path().join("gateway.yaml");
    let run = |args: Vec<String>| {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all = vec!["explain".to_string()];
                all.extend(args);
                binary(&config, &all.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .unwrap()
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let staging = base_url(&kit.staging);

    let erp = format!("Authorization: Bearer {ERP_KEY}");
    let ops = format!("Authorization: Bearer {OPS_KEY}");
    // A header rule, a rewrite, the headers that stay home (the client key among them).
    let (code, out) = run(s(&[
        "-H",
        &erp,
        "-H",
        "X-Pleo-Tenant: globex",
        "-H",
        "Cookie: s=1",
        "GET",
        "http://127.0.0.1:8080/v1/expenses/42",
    ]))
    .await;
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "tenant:           globex (picked by tenant_from[0] (header x-pleo-tenant))",
        "environment:      staging",
        "auth model:       integrated_api_key",
        "credential:       key ••••",
        &format!("rewrite:          /v1/expenses/42 -> /v2/expenses/42 (rule {RULE})"),
        &format!("upstream:         GET {staging}/v2/expenses/42"),
        "client:           legacy-erp",
        "headers removed:  authorization, x-pleo-tenant, cookie",
        "sent:             nothing",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    // The path-prefix rule, query kept.
    let (_, out) = run(s(&["-H", &ops, "GET", "/tenants/initech/v2/employees?limit=5"])).await;
    assert!(out.contains("initech (picked by tenant_from[1] (path_prefix /tenants/))"), "{out}");
    assert!(out.contains(&format!("upstream:         GET {staging}/v2/employees?limit=5")), "{out}");
    // Refusals, each with why.
    let legacy = format!("Authorization: Bearer {LEGACY_TOKEN}");
    for (args, want) in [
        (s(&["-H", &legacy, "GET", "/v2/x"]), "refused:          401 legacy_token_refused"),
        (s(&["GET", "http://openapi.pleo.io/v1/x"]), "refused:          421 legacy_host_refused"),
        (s(&["GET", "/v2/x"]), "refused:          401 client_unauthenticated"),
        (s(&["-H", &ops, "GET", "/v2/x"]), "refused:          400 tenant_required"),
        (s(&["-H", &erp, "-H", "X-Pleo-Tenant: initech", "GET", "/v2/x"]), "refused:          403 tenant_forbidden"),
        (s(&["-H", &ops, "TRACE", "/v2/x"]), "refused:          405 method_not_allowed"),
    ] {
        let (code, out) = run(args).await;
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }

    // The same on the running gateway's admin listener, as JSON.
    let req = http::Request::post(format!("http://{}/explain", kit.gw.admin_addr))
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            format!(r#"{{"method": "GET", "url": "/v1/expenses/7", "headers": {{"X-Pleo-Tenant": "globex", "Authorization": "Bearer {ERP_KEY}"}}}}"#),
        )))
        .unwrap();
    let resp = kit.send(req).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let j = resp.json();
    assert_eq!((j["tenant"].as_str(), j["rewrite"]["to"].as_str()), (Some("globex"), Some("/v2/expenses/7")), "{j}");
    assert_eq!(j["sent"], false);

    assert_eq!((kit.staging.requests().len(), kit.production.requests().len()), sent_before, "nothing was sent");
    assert_eq!(kit.staging.credential_checks() + kit.production.credential_checks(), checks_before);
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_rewrites_total", &[("rule", RULE)]), 0.0, "a dry run counts nothing");
    assert_eq!(sample(&m, "pleo_gateway_legacy_token_refused_total", &[("app", "old-erp")]), 0.0);
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_key_configured_for_production_is_named_and_no_traffic_crosses() {
    let _logs = Logs::capture();
    let staging = staging_spec().api_key(STAGING_ONLY_KEY, "company-wrongenv");
    let extra =
        format!("  wrongenv:\n    environment: production\n    auth: {{ model: integrated_api_key, key: {STAGING_ONLY_KEY} }}\n");
    let kit = Kit::start_with(staging, production_spec(), &extra).await;
    let summary = kit.gw.credential_check().await;
    let (_, why) = summary.failed.iter().find(|(t, _)| t == "wrongenv").expect("wrongenv fails its check");
    assert!(why.contains("this is a staging key; the tenant is configured for production"), "{why}");

    let tenants: serde_json::Value = serde_json::from_str(&admin_get(kit.gw.admin_addr, "/tenants").await.1).unwrap();
    let t = tenants["tenants"].as_array().unwrap().iter().find(|t| t["name"] == "wrongenv").unwrap();
    assert_eq!(t["state"], "rejected");
    assert!(t["reason"].as_str().unwrap().contains("staging key"), "{t}");

    let r = kit.get("/v2/expenses", &[("x-pleo-tenant", "wrongenv")]).await;
    let j = r.assert_refused(503, "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("this is a staging key"), "{j}");
    assert!(kit.staging.requests().is_empty(), "production traffic never went to staging");

    let config = kit.dir.path().join("gateway.yaml");
    let (code, out) = tokio::task::spawn_blocking(move || binary(&config, &["check", "--online"])).await.unwrap();
    assert_eq!(code, Some(69), "{out}");
    assert!(out.lines().any(|l| l.starts_with("wrongenv") && l.contains("this is a staging key")), "{out}");
    kit.stop().await;
}

#[test]
fn policy_partner_refuses_a_production_standalone_key_and_without_it_warns() {
    let _logs = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let tenant = "tenants:\n  initech:\n    environment: production\n    auth: { model: standalone_api_key, key: sk_production_standalone_0001 }\n";
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, format!("policy: partner\n{tenant}")).unwrap();
    let (code, out) = binary(&path, &["check"]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("tenants.initech.auth.model") && out.contains("Early Access Programme"), "{out}");
    assert!(out.contains("gateway.yaml:5:"), "located: {out}");
    std::fs::write(&path, tenant).unwrap();
    let (code, out) = binary(&path, &["check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: tenants.initech.auth.model: standalone_api_key in production"), "{out}");
}

/// The other tenant rules: host suffix, the client's key, and the default.
#[test]
fn explain_names_host_suffix_client_key_and_default_tenant_rules() {
    let _logs = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "environments:
  staging: {{ base_url: http://127.0.0.1:9, token_url: http://127.0.0.1:9/oauth/token }}
allowed_hosts: [\"*.gw.internal\"]
tenant_from:
  - host_suffix: .gw.internal
  - client_key
default_tenant: globex
clients:
  - {{ name: ops, key_sha256: \"{}\", tenants: [initech] }}
rewrites:
  - {{ from: /v1/x, to: /v2/everyone }}
tenants:
  globex:
    environment: staging
    auth: {{ model: integrated_api_key, key: ik_globex_explain_0001 }}
  initech:
    environment: staging
    auth: {{ model: standalone_api_key, key: sk_initech_explain_0002 }}
    rewrites:
      - {{ from: /v1/x, to: /v2/initech-only }}
",
            sha256_hex(OPS_KEY)
        ),
    )
    .unwrap();
    let ops = format!("Authorization: Bearer {OPS_KEY}");
    let (_, out) = binary(&path, &["explain", "-H", &ops, "GET", "http://initech.gw.internal/v2/x"]);
    assert!(out.contains("initech (picked by tenant_from[0] (host_suffix .gw.internal))"), "{out}");
    let (_, out) = binary(&path, &["explain", "-H", &ops, "GET", "http://127.0.0.1:8080/v2/x"]);
    assert!(out.contains("initech (picked by tenant_from[1] (client_key))"), "{out}");
    // A tenant's own rule comes before the top-level one.
    let (_, out) = binary(&path, &["explain", "-H", &ops, "GET", "http://127.0.0.1:8080/v1/x"]);
    assert!(out.contains("rewrite:          /v1/x -> /v2/initech-only"), "{out}");
    // A key for two tenants binds none (client_key needs exactly one): the default applies.
    let two = std::fs::read_to_string(&path).unwrap().replace("tenants: [initech]", "tenants: [initech, globex]");
    std::fs::write(&path, two).unwrap();
    let (_, out) = binary(&path, &["explain", "-H", &ops, "GET", "http://127.0.0.1:8080/v2/x"]);
    assert!(out.contains("tenant:           globex (picked by default_tenant)"), "{out}");
    let (_, out) = binary(&path, &["explain", "-H", &ops, "GET", "http://127.0.0.1:8080/v1/x"]);
    assert!(out.contains("rewrite:          /v1/x -> /v2/everyone"), "the top-level rule for the others: {out}");
    let (_, out) = binary(&path, &["explain", "GET", "http://127.0.0.1:8080/v2/x"]);
    assert!(out.contains("refused:          401 client_unauthenticated"), "{out}");
}
