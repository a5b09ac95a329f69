//! The admin listener: metrics move by exactly the requests sent, labelled by
//! auth model and environment; probes and /tenants answer without secrets.

use crate::support::*;

#[tokio::test]
async fn request_metrics_move_by_exactly_the_requests_sent() {
    let kit = Kit::start("").await;
    for _ in 0..5 {
        assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "acme")]).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(kit.get("/sandbox/status/404", &[("x-pleo-tenant", "initech")]).await.status, 404);
    }
    // Pleo refusing the credential is counted for the model.
    assert_eq!(kit.get("/sandbox/status/401", &[("x-pleo-tenant", "initech")]).await.status, 401);

    let m = kit.metrics().await;
    let req = |model, env, status| {
        sample(&m, "pleo_gateway_requests_total", &[("auth_model", model), ("environment", env), ("status", status)])
    };
    assert_eq!(req("oauth2", "production", "200"), 5.0);
    assert_eq!(req("integrated_api_key", "staging", "200"), 3.0);
    assert_eq!(req("standalone_api_key", "staging", "404"), 2.0);
    assert_eq!(req("standalone_api_key", "staging", "401"), 1.0);
    assert_eq!(req("oauth2", "staging", "200"), 0.0);
    let count = |name, model, env| sample(&m, name, &[("auth_model", model), ("environment", env)]);
    assert_eq!(count("pleo_gateway_request_duration_seconds_count", "oauth2", "production"), 5.0);
    assert_eq!(count("pleo_gateway_upstream_duration_seconds_count", "integrated_api_key", "staging"), 3.0);
    assert_eq!(sample(&m, "pleo_gateway_credential_rejected_total", &[("auth_model", "standalone_api_key")]), 1.0);
    assert_eq!(count("pleo_gateway_tenants", "oauth2", "production"), 1.0);
    assert_eq!(count("pleo_gateway_tenants", "integrated_api_key", "staging"), 1.0);
    assert_eq!(count("pleo_gateway_tenants", "integrated_api_key", "production"), 0.0);
    assert_eq!(sample(&m, "pleo_gateway_in_flight_requests", &[]), 0.0);
    for family in [
        "pleo_gateway_refused_total",
        "pleo_gateway_token_refresh_total",
        "pleo_gateway_config_reloads_total",
        "pleo_gateway_credential_rejected_total",
    ] {
        assert!(m.contains(&format!("# TYPE {family} counter")), "{family} is exported");
    }
    assert!(!m.contains("tenant=\""), "no tenant label unless switched on");
    for s in ALL_SECRETS {
        assert!(!m.contains(s));
    }
    kit.stop().await;
}

#[tokio::test]
async fn a_tenant_label_can_be_switched_on() {
    let kit = Kit::start("metrics: { per_tenant: true }\n").await;
    kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await;
    let m = kit.metrics().await;
    let labels =
        [("auth_model", "integrated_api_key"), ("environment", "staging"), ("tenant", "globex"), ("status", "200")];
    assert_eq!(sample(&m, "pleo_gateway_requests_total", &labels), 1.0);
    kit.stop().await;
}

#[tokio::test]
async fn probes_and_tenants_endpoint() {
    let kit = Kit::start("").await;
    assert_eq!(admin_get(kit.gw.admin_addr, "/healthz").await.0, 200);
    assert_eq!(admin_get(kit.gw.admin_addr, "/readyz").await.0, 200);
    let (status, body) = admin_get(kit.gw.admin_addr, "/tenants").await;
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tenants = j["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 3);
    assert_eq!(tenants[1]["name"], "globex");
    assert_eq!(tenants[1]["auth_model"], "integrated_api_key");
    assert_eq!(tenants[1]["environment"], "staging");
    assert_eq!(tenants[1]["credential"], format!("key ••••{}", &GLOBEX_KEY[GLOBEX_KEY.len() - 4..]));
    for s in ALL_SECRETS {
        assert!(!body.contains(s));
        assert!(!body.contains(&basic(s)));
    }
    // Metrics are not served on the app-facing port.
    assert_eq!(kit.get("/metrics", &[]).await.status, 400);
    kit.stop().await;
}

/// The series the alert rules and the dashboard read (deploy/monitoring/):
/// Pleo's own 5xx apart from the gateway's, tenants by state, the in-flight
/// limit and the open connections.
#[tokio::test]
async fn the_series_alerts_read_are_exported() {
    let kit = Kit::start("limits: { max_in_flight: 40 }\n").await;
    for _ in 0..2 {
        assert_eq!(kit.get("/sandbox/status/500", &[("x-pleo-tenant", "globex")]).await.status, 500);
    }
    assert_eq!(kit.get("/sandbox/status/503", &[("x-pleo-tenant", "acme")]).await.status, 503);
    kit.gw.credential_check().await;
    let m = kit.metrics().await;
    let five =
        |model, env| sample(&m, "pleo_gateway_upstream_5xx_total", &[("auth_model", model), ("environment", env)]);
    assert_eq!(five("integrated_api_key", "staging"), 2.0);
    assert_eq!(five("oauth2", "production"), 1.0);
    assert_eq!(five("standalone_api_key", "staging"), 0.0);
    let state = |model, state| sample(&m, "pleo_gateway_tenant_states", &[("auth_model", model), ("state", state)]);
    assert_eq!(state("integrated_api_key", "connected"), 1.0);
    assert_eq!(state("standalone_api_key", "connected"), 1.0);
    assert_eq!(state("integrated_api_key", "rejected"), 0.0, "every closed state is listed, zeros too");
    let oauth: f64 = pleo_gateway::metrics::OAUTH_STATES.iter().map(|s| state("oauth2", s)).sum();
    assert_eq!(oauth, 1.0, "acme, in one state");
    assert_eq!(sample(&m, "pleo_gateway_in_flight_limit", &[]), 40.0);
    // The kit's client keeps its connection open; this scrape holds one to the admin listener.
    assert!(sample(&m, "pleo_gateway_open_connections", &[("listener", "gateway")]) >= 1.0);
    assert!(sample(&m, "pleo_gateway_open_connections", &[("listener", "admin")]) >= 1.0);
    assert_eq!(sample(&m, "pleo_gateway_config_last_reload_successful", &[]), 1.0);
    let loaded = sample(&m, "pleo_gateway_config_last_reload_success_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(loaded > now - 60.0 && loaded <= now, "the start counts as a load: {loaded}");
    kit.stop().await;
}
