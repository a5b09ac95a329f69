//! The OAuth state directory as an operator (or an attacker with a shell on
//! the box) meets it: shared or foreign directories are refused with a fix,
//! a second gateway on the same state refuses to start and names the first,
//! and a state file swapped for a symlink is never followed.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::oauth::*;
use crate::support::*;
use nix::sys::signal::Signal;

fn write_config(dir: &std::path::Path, state_dir: &str) -> String {
    let sandbox_url = "http://127.0.0.1:9";
    std::fs::write(dir.join("hooli.secret"), format!("{CLIENT_SECRET}\n")).unwrap();
    std::fs::write(dir.join("hooli.refresh"), format!("{INITIAL_RT}\n")).unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{}state_dir: {state_dir}\ntenants:\n  hooli:\n    environment: production\n    auth:\n      model: oauth2\n      client_id: {CLIENT_ID}\n      client_secret: {{ file: hooli.secret }}\n      refresh_token: {{ file: hooli.refresh }}\n",
        environments_yaml(sandbox_url, sandbox_url)
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_shared_or_foreign_state_dir_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = write_config(dir.path(), "./state");
    let (status, log) = Process::spawn(&["--config", &config], &[]).wait();
    assert_eq!(status.code(), Some(69), "{log}");
    assert!(log.contains("writable by its group or by everyone") && log.contains("chmod 700"), "{log}");

    // Owned by someone else (root can hand it over to test this).
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
        let (status, log) = Process::spawn(&["--config", &config], &[]).wait();
        assert_eq!(status.code(), Some(69), "{log}");
        assert!(log.contains("owned by uid 65534"), "{log}");
        std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
    }
    // Private and ours: it starts.
    let ok = Process::spawn(&["--config", &config], &[]);
    ok.listening().await;
    ok.signal(Signal::SIGTERM);
    assert!(ok.wait().0.success());
}

#[tokio::test]
async fn a_second_gateway_on_the_same_state_dir_refuses_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "./state");
    let first = Process::spawn(&["--config", &config], &[]);
    first.listening().await;
    let pid = first.child.id();

    let (status, log) = Process::spawn(&["--config", &config], &[]).wait();
    assert_eq!(status.code(), Some(69), "{log}");
    assert!(log.contains(&format!("process {pid}")), "names the holder: {log}");
    assert!(log.contains("own state_dir"), "{log}");

    // Once the first has stopped, the lock is free again.
    first.signal(Signal::SIGTERM);
    assert!(first.wait().0.success());
    let again = Process::spawn(&["--config", &config], &[]);
    again.listening().await;
    again.signal(Signal::SIGTERM);
    assert!(again.wait().0.success());
}

#[tokio::test]
async fn a_state_file_replaced_by_a_symlink_is_not_followed() {
    let sandbox = sandbox(spec(Duration::from_secs(900), &[INITIAL_RT])).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Someone points hooli.json at a file of their choosing.
    let planted = dir.path().join("planted.json");
    std::fs::write(
        &planted,
        format!("{{\"version\":1,\"tenant\":\"hooli\",\"refresh_token\":\"{SECOND_CONSENT_RT}\",\"access_token\":null,\"access_issued_at_ms\":null,\"access_expires_at_ms\":null,\"imported_from\":null,\"reauthorization_required\":false,\"updated_at_ms\":0}}"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&planted, state.join("hooli.json")).unwrap();
    let yaml = config_yaml(dir.path(), &sandbox, None, "");
    let gw = start_gateway(&yaml, dir.path()).await;
    let (_, tenants) = admin_get(gw.admin_addr, "/tenants").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut tenants = tenants;
    while !tenants.contains("state_error") {
        assert!(std::time::Instant::now() < deadline, "{tenants}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        tenants = admin_get(gw.admin_addr, "/tenants").await.1;
    }
    assert!(sandbox.presented_refresh_tokens().is_empty(), "the planted token was never sent");
    gw.shutdown().await;
    sandbox.shutdown().await;
}
