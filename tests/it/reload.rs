//! Hot reload through real sockets: a rotated API key (a changed secret
//! file, noticed by the watcher) takes effect under steady load with zero
//! failed requests; tenants come and go without a restart (a request in
//! flight finishes on the config it started with); a broken config
//! is refused and the old one keeps serving; SIGHUP reloads the binary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

const GLOBEX_ROTATED: &str = "ik_globex_staging_rotated_9f8e7d";

#[tokio::test(flavor = "multi_thread")]
async fn rotating_an_api_key_file_under_load_fails_no_request() {
    // During a rotation the customer's old and new key both work at Pleo.
    let staging = staging_spec().api_key(GLOBEX_ROTATED, "company-globex");
    let kit = Arc::new(Kit::start_with(staging, production_spec(), "").await);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (kit, stop, served, failed) = (kit.clone(), stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = kit.get("/v2/employees", &[("x-pleo-tenant", "globex")]).await;
                    let counter = if r.status == 200 { &served } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    // Paced, so the sandbox's record (10,000 requests) still
                    // holds the old-key requests when the test reads it.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The mounted secret changes (Kubernetes writes a new file and swaps it in).
    let tmp = kit.dir.path().join("globex.key.new");
    std::fs::write(&tmp, format!("{GLOBEX_ROTATED}\n")).unwrap();
    std::fs::rename(&tmp, kit.dir.path().join("globex.key")).unwrap();
    let rotated = basic(GLOBEX_ROTATED);
    eventually("the rotated key upstream", Duration::from_secs(10), || {
        kit.staging.requests().last().is_some_and(|r| r.headers["authorization"] == rotated.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed across the reload");
    assert!(served.load(Ordering::Relaxed) > 100, "load was steady: {}", served.load(Ordering::Relaxed));
    // Once swapped, only the new key is sent: after the first new-key request
    // at most the other workers' requests in flight (snapshots taken before
    // the swap) still carry the old one.
    let seen = kit.staging.requests();
    let is_new = |r: &pleo_gateway::sandbox::Recorded| r.headers["authorization"] == rotated.as_str();
    let first_new = seen.iter().position(is_new).unwrap();
    let old_after = seen[first_new..].iter().filter(|r| !is_new(r)).count();
    assert!(old_after <= 3, "{old_after} old-key requests after the swap");
    let last_old = seen.iter().rposition(|r| !is_new(r)).unwrap();
    assert!(seen.len() - last_old > 50, "the new key was used steadily after the swap");
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_config_reloads_total", &[("result", "success")]), 1.0);
    assert_eq!(sample(&m, "pleo_gateway_config_reloads_total", &[("result", "failure")]), 0.0);
    Arc::into_inner(kit).unwrap().stop().await;
}

#[tokio::test]
async fn tenants_are_added_and_removed_without_a_restart() {
    let staging = staging_spec().api_key("sk_hooli_staging_0f1e2d", "company-hooli");
    let kit = Kit::start_with(staging, production_spec(), "").await;
    std::fs::write(kit.dir.path().join("hooli.key"), "sk_hooli_staging_0f1e2d").unwrap();
    let without_initech = kit.yaml.replace(
        "  initech:\n    environment: staging\n    auth:\n      model: standalone_api_key\n      key: { file: initech.key }\n",
        "  hooli:\n    environment: staging\n    auth:\n      model: standalone_api_key\n      key: { file: hooli.key }\n",
    );
    assert_ne!(without_initech, kit.yaml);
    // A request in flight for initech when it is removed finishes on the old config.
    let in_flight = tokio::spawn(kit.get_owned("/sandbox/delay/800".into(), "initech"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while kit.staging.requests().is_empty() {
        assert!(Instant::now() < deadline, "the slow request never reached the sandbox");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kit.write_config(&without_initech);
    kit.gw.reload().await.unwrap();
    assert_eq!(in_flight.await.unwrap(), 200, "the request in flight finished on the old config");

    let r = kit.get("/v2/x", &[("x-pleo-tenant", "hooli")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["companyId"], "company-hooli");
    kit.get("/v2/x", &[("x-pleo-tenant", "initech")]).await.assert_refused(403, "unknown_tenant");
    let tenants = admin_get(kit.gw.admin_addr, "/tenants").await.1;
    assert!(tenants.contains("hooli") && !tenants.contains("initech"), "{tenants}");
    let m = kit.metrics().await;
    let standalone = [("auth_model", "standalone_api_key"), ("environment", "staging")];
    assert_eq!(sample(&m, "pleo_gateway_tenants", &standalone), 1.0);
    // The file watcher sees the same edit. The reload above read it, so the
    // watcher does not reload again: a second reload replaced the key
    // checks in flight (an operator's `POST /api/checks` then reported
    // nothing), and at 100,000 tenants it builds the table twice.
    tokio::time::sleep(pleo_gateway::reload::POLL * 2 + Duration::from_millis(500)).await;
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_config_reloads_total", &[("result", "success")]), 1.0);
    kit.stop().await;
}

#[tokio::test]
async fn a_broken_config_is_refused_and_the_old_one_keeps_serving() {
    let kit = Kit::start("").await;
    for broken in [
        format!("{}\nnot_a_key: 1\n", kit.yaml),
        kit.yaml.replace("file: globex.key", "file: missing.key"),
        "tenants: [".to_string(),
    ] {
        kit.write_config(&broken);
        let e = kit.gw.reload().await.unwrap_err().to_string();
        assert!(e.contains("gateway.yaml"), "the error names the file: {e}");
        let r = kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await;
        assert_eq!(r.status, 200, "the old config serves");
        assert!(!e.contains(GLOBEX_KEY));
    }
    // At least our three (the file watcher may also have tried a broken file).
    let m = kit.metrics().await;
    assert!(sample(&m, "pleo_gateway_config_reloads_total", &[("result", "failure")]) >= 3.0);
    assert_eq!(sample(&m, "pleo_gateway_config_reloads_total", &[("result", "success")]), 0.0);
    // Fixed again: the next reload applies.
    kit.write_config(&kit.yaml);
    kit.gw.reload().await.unwrap();
    let m = kit.metrics().await;
    assert!(sample(&m, "pleo_gateway_config_reloads_total", &[("result", "success")]) >= 1.0);
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_running_binary() {
    let staging = sandbox(staging_spec().api_key("sk_hooli_staging_0f1e2d", "company-hooli")).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hooli.key"), "sk_hooli_staging_0f1e2d").unwrap();
    let path = write_standard_config(dir.path(), &base_url(&staging), &base_url(&production), "");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let gw = Process::spawn(&["--config", path.to_str().unwrap()], &[]);
    let (addr, _) = gw.listening().await;
    let client = http_client();
    let status = |tenant: &'static str| {
        let req = http::Request::get(format!("http://{addr}/v2/x")).header("x-pleo-tenant", tenant);
        let client = client.clone();
        async move { client.request(req.body(Default::default()).unwrap()).await.unwrap().status().as_u16() }
    };
    assert_eq!(status("hooli").await, 403);

    std::fs::write(
        &path,
        format!("{yaml}  hooli:\n    environment: staging\n    auth: {{ model: standalone_api_key, key: {{ file: hooli.key }} }}\n"),
    )
    .unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.line_with("SIGHUP: reloading the config", Duration::from_secs(5)).await;
    gw.line_with("config reloaded", Duration::from_secs(5)).await;
    assert_eq!(status("hooli").await, 200);
    assert_eq!(status("globex").await, 200);

    gw.signal(nix::sys::signal::Signal::SIGTERM);
    let (exit, _) = tokio::task::spawn_blocking(move || gw.wait()).await.unwrap();
    assert!(exit.success());
    staging.shutdown().await;
    production.shutdown().await;
}

#[tokio::test]
async fn a_managed_oauth_tenant_added_by_a_reload_needs_a_usable_state_dir_then_connects() {
    use pleo_gateway::sandbox::OAuthClient;
    use pleo_gateway::secret::Secret;
    let production = production_spec().oauth_client(OAuthClient {
        client_id: "late-client".into(),
        client_secret: Secret::new("late-client-secret-value"),
        company_id: "company-late".into(),
        refresh_tokens: vec![Secret::new("rt_late_tenant_initial_0042")],
    });
    let kit = Kit::start_with(staging_spec(), production, "").await;
    let state_dir = kit.dir.path().join("state");
    assert!(!state_dir.exists(), "no managed OAuth tenant yet, so no state_dir");
    std::fs::write(kit.dir.path().join("late.secret"), "late-client-secret-value").unwrap();
    std::fs::write(kit.dir.path().join("late.refresh"), "rt_late_tenant_initial_0042").unwrap();
    kit.write_config(&format!(
        "{}  late:\n    environment: production\n    auth:\n      model: oauth2\n      client_id: late-client\n      client_secret: {{ file: late.secret }}\n      refresh_token: {{ file: late.refresh }}\n",
        kit.yaml
    ));
    // A state_dir that cannot hold tokens fails the reload (the old config
    // serves) rather than refreshing a token the gateway could not keep.
    std::fs::write(&state_dir, "not a directory").unwrap();
    let e = kit.gw.reload().await.unwrap_err().to_string();
    assert!(e.contains("state_dir"), "{e}");
    kit.get("/v2/x", &[("x-pleo-tenant", "late")]).await.assert_refused(403, "unknown_tenant");
    assert_eq!(kit.production.token_stats().refreshes, 0);

    std::fs::remove_file(&state_dir).unwrap();
    kit.gw.reload().await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "late")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["companyId"], "company-late");
    assert!(state_dir.join("late.json").is_file(), "the rotated token was saved");
    assert_eq!(kit.production.token_stats().reuse_detected, 0);
    kit.stop().await;
}

/// A reload where one of many API-key tenants changed asks Pleo about that
/// one only: the others keep their checks (10,000 tenants would otherwise
/// mean 10,000 calls per reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_checks_only_the_changed_key_among_many() {
    const N: usize = 1_000;
    let mut spec = staging_spec();
    for i in 0..N {
        spec = spec.api_key(&format!("ik_many_tenant_key_{i:06}"), &format!("company-many-{i}"));
    }
    spec = spec.api_key("ik_many_tenant_key_renewed", "company-many-7");
    let mut extra = String::new();
    for i in 0..N {
        extra.push_str(&format!(
            "  many{i}:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: ik_many_tenant_key_{i:06} }}\n"
        ));
    }
    let kit = Kit::start_with(spec, production_spec(), &extra).await;
    let first = kit.gw.credential_check().await;
    assert_eq!(first.connected, N + 2, "{:?}", first.failed.first());
    let before = kit.staging.credential_checks();
    assert_eq!(before, N + 2, "every key is checked at start");

    kit.write_config(&kit.yaml.replace("ik_many_tenant_key_000007", "ik_many_tenant_key_renewed"));
    kit.gw.reload().await.unwrap();
    let after = kit.gw.credential_check().await;
    assert_eq!(after.connected, N + 2, "the summary covers the whole table");
    assert_eq!(kit.staging.credential_checks() - before, 1, "exactly one check: the changed key");
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "many7")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["companyId"], "company-many-7");

    // An operator can still have every key checked now.
    let all = kit.gw.recheck_all().await;
    assert_eq!(all.connected, N + 2);
    assert_eq!(kit.staging.credential_checks() - before, 1 + N + 2);
    kit.stop().await;
}
