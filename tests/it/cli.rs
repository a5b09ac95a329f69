//! The CLI as users run it: `check` exits 0 with a masked table, or 64 with
//! an error that names file, line and key; secrets from `{ env }` never print;
//! `hash-key` makes a client key that works.

use crate::support;

use std::process::Command;

use crate::support::*;

fn gateway_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pleo-gateway"))
}

#[test]
fn check_prints_tenants_with_masked_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "environments:\n  staging: { base_url: http://127.0.0.1:1 }\ntenants:\n  globex:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: { env: PGW_CLI_GLOBEX_KEY }\n  acme:\n    environment: production\n    auth:\n      model: oauth2\n      access_token: { file: acme.token }\n".to_string();
    std::fs::write(dir.path().join("acme.token"), ACME_TOKEN).unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let out = gateway_bin()
        .args(["check", "--config"])
        .arg(dir.path().join("gateway.yaml"))
        .env("PGW_CLI_GLOBEX_KEY", GLOBEX_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("valid (2 tenants)"));
    let globex = stdout.lines().find(|l| l.starts_with("globex")).unwrap();
    assert!(globex.contains("staging") && globex.contains("integrated_api_key"));
    assert!(globex.contains(&format!("••••{}", &GLOBEX_KEY[GLOBEX_KEY.len() - 4..])));
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("acme") && l.contains("oauth2") && l.contains("https://external.pleo.io")));
    for s in [ACME_TOKEN, GLOBEX_KEY] {
        assert!(!stdout.contains(s) && !stderr.contains(s));
        assert!(!stdout.contains(&basic(s)));
    }
}

#[test]
fn check_fails_with_located_errors_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "tenants:\n  globex:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: { env: PGW_CLI_UNSET_VAR }\n",
    )
    .unwrap();
    let out = gateway_bin().args(["check", "--config"]).arg(&path).env_remove("PGW_CLI_UNSET_VAR").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("{}:6:7: tenants.globex.auth.key", path.display())), "{stderr}");
    assert!(stderr.contains("PGW_CLI_UNSET_VAR is not set"));

    // Running (not just checking) refuses the same config before binding anything.
    let out = gateway_bin().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));

    let out = gateway_bin().args(["check", "--config", "/nonexistent/gateway.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot read the config file"));
}

#[test]
fn shipped_gateway_yaml_is_valid() {
    let out = gateway_bin()
        .args(["check", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for model in ["oauth2", "integrated_api_key", "standalone_api_key"] {
        assert!(stdout.contains(model), "the shipped config shows every auth model");
    }
}

/// `hash-key` makes a key whose printed digest, pasted into `clients`,
/// authenticates that key through a running gateway; `--stdin` hashes a
/// given key and prints nothing else.
#[tokio::test]
async fn hash_key_output_configures_a_working_client() {
    let out = gateway_bin().args(["hash-key", "--name", "erp", "--tenants", "globex"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().find_map(|l| l.strip_prefix("key: ")).unwrap().to_string();
    assert!(key.starts_with("pgw_") && key.len() >= 40, "{key}");
    let snippet = &text[text.find("clients:").unwrap()..];
    assert!(snippet.contains("name: erp") && snippet.contains("tenants: [globex]"));

    let mut hashed = gateway_bin()
        .args(["hash-key", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    hashed.stdin.take().unwrap().write_all(format!("{key}\n").as_bytes()).unwrap();
    let hashed = hashed.wait_with_output().unwrap();
    let digest = String::from_utf8(hashed.stdout).unwrap().trim().to_string();
    assert!(snippet.contains(&format!("key_sha256: \"{digest}\"")), "--stdin agrees with the generated digest");
    assert!(!digest.contains(&key));

    let kit = support::Kit::start(&format!("{snippet}tenant_from:\n  - client_key\n")).await;
    let r = kit.get("/v2/x", &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["companyId"], "company-globex");
    kit.get("/v2/x", &[]).await.assert_refused(401, "client_unauthenticated");
    kit.stop().await;
}
