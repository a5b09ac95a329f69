//! OAuth as a real process lives it: killed with SIGKILL right after a
//! refresh and restarted on the same state, and onboarded with the
//! `connect` command. The sandbox runs in the test; the gateway is the
//! built binary at TRACE level, and its whole output is searched for tokens.

use std::time::{Duration, Instant};

use crate::support::oauth::*;
use crate::support::*;
use nix::sys::signal::Signal;

fn state_refresh_token(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("state/hooli.json")).ok()?;
    let j: serde_json::Value = serde_json::from_str(&text).ok()?;
    j["refresh_token"].as_str().map(String::from)
}

async fn get_hooli(addr: std::net::SocketAddr) -> u16 {
    let req = http::Request::get(format!("http://{addr}/v1/installations/me")).header("x-pleo-tenant", "hooli");
    http_client().request(req.body(Default::default()).unwrap()).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_a_refresh_then_restart_presents_the_newest_refresh_token() {
    let sandbox = sandbox(spec(Duration::from_secs(2), &[INITIAL_RT])).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(dir.path(), &sandbox, Some(INITIAL_RT), "");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml).unwrap();
    let args = ["--config", config.to_str().unwrap()];

    let first = Process::spawn(&args, &[("RUST_LOG", "trace")]);
    let (addr, _) = first.listening().await;
    assert_eq!(get_hooli(addr).await, 200);
    // Wait for a rotation the gateway has finished (saved), then kill it at once.
    let initial = loop {
        if let Some(rt) = state_refresh_token(dir.path()) {
            break rt;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let newest = loop {
        match state_refresh_token(dir.path()) {
            Some(rt) if rt != initial => break rt,
            _ => assert!(Instant::now() < deadline, "no second refresh"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    first.signal(Signal::SIGKILL);
    let (status, log1) = first.wait();
    assert!(!status.success(), "killed");
    let refreshes_at_kill = sandbox.token_stats().refreshes;

    let second = Process::spawn(&args, &[("RUST_LOG", "trace")]);
    let (addr, _) = second.listening().await;
    // The stored token may still be good; then the next refresh comes on schedule.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.token_stats().refreshes == refreshes_at_kill {
        assert!(Instant::now() < deadline, "the restarted gateway never refreshed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let presented = sandbox.presented_refresh_tokens();
    assert_eq!(
        presented[refreshes_at_kill as usize].expose_secret(),
        newest,
        "the first refresh after the restart presents the token saved right before the kill"
    );
    assert_eq!(get_hooli(addr).await, 200);
    let stats = sandbox.token_stats();
    assert_eq!((stats.reuse_detected, stats.invalid_grant), (0, 0), "{stats:?}");
    let mut unique = presented.iter().map(|t| t.expose_secret().to_string()).collect::<Vec<_>>();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), presented.len(), "no refresh token was ever presented twice");

    second.signal(Signal::SIGTERM);
    let (status, log2) = second.wait();
    assert!(status.success());
    assert!(log1.contains("TRACE") && log2.contains("TRACE"));
    assert_no_secret_in(&log1, &sandbox);
    assert_no_secret_in(&log2, &sandbox);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_onboards_a_tenant_end_to_end() {
    let sandbox = sandbox(spec(Duration::from_secs(900), &[])).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(dir.path(), &sandbox, None, "");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml).unwrap();
    let config = config.to_str().unwrap();

    let connect = Process::spawn(
        &["--config", config, "connect", "hooli", "--redirect-uri", "http://127.0.0.1:0/callback"],
        &[("RUST_LOG", "trace")],
    );
    let line = connect.line_with("/oauth/authorize?", Duration::from_secs(20)).await;
    let url = line.split_whitespace().find(|w| w.contains("/oauth/authorize?")).unwrap();
    for param in ["code_challenge_method=S256", "code_challenge=", "state=", "client_id=hooli-client"] {
        assert!(url.contains(param), "{param} missing from {url}");
    }
    assert_eq!(consent_in_browser(url).await, 200);
    // Off the runtime: the sandbox answering the code exchange runs on it.
    let (status, log) = tokio::task::spawn_blocking(move || connect.wait()).await.unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("Tenant `hooli` is connected"), "{log}");
    assert_eq!(sandbox.token_stats().code_exchanges, 1);
    assert_no_secret_in(&log, &sandbox);

    // A gateway on that state serves the tenant with the connected tokens.
    let gw = Process::spawn(&["--config", config], &[("RUST_LOG", "debug")]);
    let (addr, admin) = gw.listening().await;
    assert_eq!(get_hooli(addr).await, 200);
    assert_eq!(sandbox.token_stats().refreshes, 0, "the access token from connect is used");
    let tenants = admin_get(admin, "/tenants").await.1;
    assert!(tenants.contains("\"connected\""), "{tenants}");
    gw.signal(Signal::SIGTERM);
    let (_, log) = gw.wait();
    assert_no_secret_in(&log, &sandbox);

    // connect refuses what it cannot do, with a usage exit code.
    let (status, log) =
        Process::spawn(&["--config", config, "connect", "nobody", "--redirect-uri", "http://127.0.0.1:0/cb"], &[])
            .wait();
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(log.contains("no tenant `nobody`"), "{log}");
    let (status, log) =
        Process::spawn(&["--config", config, "connect", "hooli", "--redirect-uri", "http://example.com/cb"], &[])
            .wait();
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(log.contains("loopback"), "{log}");
    assert_eq!(sandbox.token_stats().reuse_detected, 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_refresh_waits_for_it_and_the_restart_presents_the_newest_token() {
    use pleo_gateway::sandbox::TokenFault;
    let sandbox = sandbox(spec(Duration::from_secs(3), &[INITIAL_RT])).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(dir.path(), &sandbox, Some(INITIAL_RT), "");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml).unwrap();
    let args = ["--config", config.to_str().unwrap()];

    // The first refresh is committed by "Pleo" at once, but its answer takes 2 s.
    sandbox.inject_token_faults([TokenFault::CommitThenHold(Duration::from_secs(2))]);
    let first = Process::spawn(&args, &[("RUST_LOG", "debug")]);
    first.listening().await;
    eventually("a refresh committed", Duration::from_secs(10), || sandbox.token_stats().refreshes > 0).await;
    // A routine rollout's SIGTERM lands while the answer is still on its way.
    first.signal(Signal::SIGTERM);
    let (status, log1) = tokio::task::spawn_blocking(move || first.wait()).await.unwrap();
    assert!(status.success(), "{log1}");
    let stored = state_refresh_token(dir.path()).expect("the rotated token was stored before the exit");
    assert_ne!(stored, INITIAL_RT);
    assert!(sandbox.is_live_refresh_token(&stored), "the stored token is the one Pleo just issued");
    assert_eq!(sandbox.token_stats().refreshes, 1, "no refresh started after SIGTERM");

    // The restart refreshes (3 s tokens) with the newest token: no replay, consent intact.
    let second = Process::spawn(&args, &[("RUST_LOG", "debug")]);
    let (addr, _) = second.listening().await;
    eventually("the restarted gateway's refresh", Duration::from_secs(10), || sandbox.token_stats().refreshes >= 2)
        .await;
    assert_eq!(sandbox.presented_refresh_tokens()[1].expose_secret(), stored);
    assert_eq!(get_hooli(addr).await, 200);
    let stats = sandbox.token_stats();
    assert_eq!((stats.reuse_detected, stats.invalid_grant), (0, 0), "{stats:?}");
    second.signal(Signal::SIGTERM);
    let (status, log2) = tokio::task::spawn_blocking(move || second.wait()).await.unwrap();
    assert!(status.success());
    assert_no_secret_in(&log1, &sandbox);
    assert_no_secret_in(&log2, &sandbox);
    sandbox.shutdown().await;
}
