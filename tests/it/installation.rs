//! Pleo's installation document, end to end against a sandbox that answers
//! as Pleo's API reference describes: the company id comes from `resource`,
//! the status decides whether a tenant is connected, `installation activate`
//! moves it, and the company id reaches requests only where the operator
//! asked for it.

use crate::support::*;

async fn tenants(kit: &Kit) -> serde_json::Value {
    let body = admin_get(kit.gw.admin_addr, "/tenants").await.1;
    for s in ALL_SECRETS {
        assert!(!body.contains(s), "a secret in /tenants");
    }
    serde_json::from_str(&body).unwrap()
}

fn tenant<'a>(all: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    all["tenants"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()
}

/// Ask Pleo about every key now (a reload of the same config asks about
/// none: nothing changed), and wait for the answers.
async fn recheck(kit: &Kit) {
    kit.gw.recheck_all().await;
}

fn gateway(kit: &Kit, args: &[&str]) -> (Option<i32>, String) {
    run_binary(&kit.dir.path().join("gateway.yaml"), args, &ALL_SECRETS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_ids_come_from_the_resource_and_the_status_decides() {
    let kit = Kit::start("").await;
    kit.gw.credential_check().await;
    let all = tenants(&kit).await;
    for name in ["globex", "initech"] {
        let t = tenant(&all, name);
        assert_eq!(t["company_id"], format!("company-{name}"), "{t}");
        assert_eq!((t["state"].as_str(), t["installation_status"].as_str()), (Some("connected"), Some("ACTIVATED")));
    }
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_installations", &[("status", "activated")]), 2.0);

    // Pleo: globex's company is no longer entitled to the integration.
    kit.staging.set_installation("company-globex", "INACTIVE", Some("NOT_ENTITLED"));
    // initech's installation is authorized but not active yet.
    kit.staging.set_installation("company-initech", "AUTHORIZED", None);
    recheck(&kit).await;
    let all = tenants(&kit).await;
    let globex = tenant(&all, "globex");
    assert_eq!(globex["state"], "degraded", "{globex}");
    assert_eq!(globex["installation_status"], "INACTIVE");
    assert!(globex["installation_error"].as_str().unwrap().contains("NOT_ENTITLED"), "{globex}");
    let initech = tenant(&all, "initech");
    assert_eq!(initech["state"], "connected", "usable, with a note: {initech}");
    assert!(initech["note"].as_str().unwrap().contains("not active yet (AUTHORIZED)"), "{initech}");

    let r = kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await;
    let j = r.assert_refused(503, "credential_unavailable");
    let message = j["message"].as_str().unwrap();
    assert!(message.contains("NOT_ENTITLED") && message.contains("not entitled to the integration"), "{message}");
    assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "initech")]).await.status, 200, "the other tenant is unaffected");
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_installations", &[("status", "inactive")]), 1.0);
    assert_eq!(sample(&m, "pleo_gateway_installations", &[("status", "authorized")]), 1.0);

    // check --online says the same, and fails while a tenant is not connected.
    let (code, out) = gateway(&kit, &["check", "--online"]);
    assert_eq!(code, Some(69), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("globex") && l.contains("degraded") && l.contains("NOT_ENTITLED")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("initech") && l.contains("company-initech")), "{out}");

    // The operator activates both; /tenants follows at the next check.
    for name in ["globex", "initech"] {
        let (code, out) = gateway(&kit, &["installation", name, "activate"]);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("installation is now ACTIVATED"), "{out}");
    }
    assert_eq!(kit.staging.installation("company-globex").unwrap()["status"], "ACTIVATED");
    assert!(kit.staging.installation("company-globex").unwrap().get("errorCode").is_none());
    recheck(&kit).await;
    let all = tenants(&kit).await;
    assert_eq!(tenant(&all, "globex")["state"], "connected");
    assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await.status, 200);
    let (code, out) = gateway(&kit, &["installation", "globex", "show"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"resource\": \"urn:pleo:company:company-globex\""), "{out}");
    let (code, out) = gateway(&kit, &["installation", "nosuch", "show"]);
    assert_eq!(code, Some(64), "{out}");
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_resource_gives_a_note_not_a_wrong_id() {
    let kit = Kit::start("").await;
    kit.staging.set_installation_resource("company-initech", "urn:pleo:employee:e-123");
    recheck(&kit).await;
    let all = tenants(&kit).await;
    let initech = tenant(&all, "initech");
    assert_eq!(initech["company_id"], serde_json::Value::Null, "{initech}");
    assert!(initech["note"].as_str().unwrap().contains("not a company or organisation URN"), "{initech}");
    assert_eq!(initech["state"], "connected", "the key works; only the id is unknown");
    assert_eq!(tenant(&all, "globex")["company_id"], "company-globex");
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_company_id_is_added_only_where_the_operator_asked() {
    let kit = Kit::start("").await;
    let yaml = kit
        .yaml
        .replace(
            "      key: { file: globex.key }\n",
            "      key: { file: globex.key }\n    company_id_header: X-Pleo-Company-Id\n",
        )
        .replace(
            "      key: { file: initech.key }\n",
            "      key: { file: initech.key }\n    company_id_query: companyId\n",
        );
    assert_ne!(yaml, kit.yaml);
    kit.write_config(&yaml);
    // The keys did not change: the reload keeps their checks (and company ids), asking Pleo nothing.
    kit.gw.credential_check().await;
    let checks = kit.staging.credential_checks();
    kit.gw.reload().await.unwrap();
    kit.gw.credential_check().await;
    assert_eq!(kit.staging.credential_checks(), checks, "a reload asks only about new and changed keys");

    assert_eq!(kit.get("/v2/employees", &[("x-pleo-tenant", "globex")]).await.status, 200);
    assert_eq!(kit.get("/v2/expenses?limit=5", &[("x-pleo-tenant", "initech")]).await.status, 200);
    assert_eq!(kit.get("/v2/expenses?companyId=mine", &[("x-pleo-tenant", "initech")]).await.status, 200);
    assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "acme")]).await.status, 200);
    let seen = kit.staging.requests();
    let globex = seen.iter().find(|r| r.target == "/v2/employees").unwrap();
    assert_eq!(globex.headers["x-pleo-company-id"], "company-globex");
    let targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert!(targets.contains(&"/v2/expenses?limit=5&companyId=company-initech"), "{targets:?}");
    assert!(targets.contains(&"/v2/expenses?companyId=mine"), "an app's own parameter is left alone: {targets:?}");
    let acme = kit.production.requests().pop().unwrap();
    assert!(!acme.headers.contains_key("x-pleo-company-id") && !acme.target.contains("companyId"));

    // Only API-key tenants can opt in: the key check is where the id comes from.
    let bad = kit.yaml.replace(
        "      access_token: { file: acme.token }\n",
        "      access_token: { file: acme.token }\n    company_id_header: X-Pleo-Company-Id\n",
    );
    std::fs::write(kit.dir.path().join("bad.yaml"), bad).unwrap();
    let e = pleo_gateway::config::Config::load(&kit.dir.path().join("bad.yaml")).unwrap_err().to_string();
    assert!(e.contains("tenants.acme.company_id_header") && e.contains("only API-key tenants"), "{e}");
    kit.stop().await;
}
