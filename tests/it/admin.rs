//! The admin listener: `/tenants` (company ids, client ids, key suffixes)
//! needs an admin token when one is configured, and a non-loopback
//! `admin_listen` must have one (or an explicit opt-out); probes and scrapes
//! stay open.

use std::process::Command;

use crate::support::*;
use http_body_util::BodyExt;

const ADMIN_TOKEN: &str = "pgw_admin_token_for_tests_0123456789abcdef";

async fn admin(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = http_client().request(req.body(Default::default()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tenants_needs_the_admin_token_and_probes_stay_open() {
    let digest = pleo_gateway::clients::key_sha256(ADMIN_TOKEN.as_bytes());
    let kit = Kit::start(&format!("admin:\n  tokens:\n    - {{ name: oncall, sha256: \"{digest}\" }}\n")).await;
    let a = kit.gw.admin_addr;
    let (status, body) = admin(a, "/tenants", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("admin_unauthenticated") && !body.contains("company"), "{body}");
    assert_eq!(admin(a, "/tenants", Some("Bearer not-the-token")).await.0, 401);
    let (status, body) = admin(a, "/tenants", Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("globex"));
    for open in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(admin(a, open, None).await.0, 200, "{open}");
    }
    kit.stop().await;
}

#[test]
fn check_refuses_a_public_admin_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("admin_listen: 0.0.0.0:9464\n{}", tenants_yaml(dir.path()));
    let check = |yaml: &str| {
        std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_pleo-gateway"))
            .args(["check", "--config"])
            .arg(dir.path().join("gateway.yaml"))
            .output()
            .unwrap()
    };
    let out = check(&base);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("admin_listen") && stderr.contains("hash-key --admin"), "{stderr}");
    let digest = pleo_gateway::clients::key_sha256(ADMIN_TOKEN.as_bytes());
    let with_token = format!("{base}admin:\n  tokens:\n    - {{ name: oncall, sha256: \"{digest}\" }}\n");
    assert!(check(&with_token).status.success());
    let opted_out = format!("{base}admin: {{ allow_unauthenticated: true }}\n");
    assert!(check(&opted_out).status.success());
}

#[test]
fn hash_key_makes_an_admin_token_entry() {
    let out = Command::new(env!("CARGO_BIN_EXE_pleo-gateway"))
        .args(["hash-key", "--admin", "--name", "oncall"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    let key = stdout.lines().next().unwrap().strip_prefix("key: ").unwrap();
    let digest = pleo_gateway::clients::key_sha256(key.as_bytes());
    assert!(stdout.contains(&format!("- {{ name: oncall, sha256: \"{digest}\" }}")), "{stdout}");
}
