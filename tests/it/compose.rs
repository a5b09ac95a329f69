//! deploy/compose stays true: its three replica configs and the sandbox
//! command, run as processes on this host (they share loopback as the
//! containers share the sandbox's network) against a throwaway PostgreSQL,
//! serve both tenants on every replica with one OAuth chain between them.

use crate::support;

use std::path::Path;
use std::time::Duration;

use crate::support::postgres::Postgres;
use crate::support::*;
use serde::Deserialize;

fn compose() -> yaml_serde::Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/compose.yaml")).unwrap();
    let mut v = yaml_serde::Value::deserialize(yaml_serde::Deserializer::from_str(&text)).unwrap();
    // The services share an anchor (`<<: *gateway`), as docker compose merges it.
    v.apply_merge().unwrap();
    v
}

fn free() -> String {
    format!("127.0.0.1:{}", crate::support::free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_replicas_serve_together_on_one_database() {
    let Some(pg) = Postgres::start("the_compose_replicas_serve_together") else { return };
    let c = compose();
    let services = &c["services"];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // The sandbox service's command: `--config <replica-1> sandbox --staging A --production B`.
    let sandbox_cmd: Vec<String> =
        services["sandbox"]["command"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(sandbox_cmd[2], "sandbox");
    let (staging, production) = (sandbox_cmd[4].clone(), sandbox_cmd[6].clone());
    let (staging_here, production_here) = (free(), free());

    // Each replica's config, with its fixed ports and the stand-in's moved
    // to free ones, and the mounted paths mapped back into the repository.
    let dir = tempfile::tempdir().unwrap();
    let mut configs = Vec::new();
    for name in ["gateway-1", "gateway-2", "gateway-3"] {
        let svc = &services[name];
        assert_eq!(svc["network_mode"], "service:sandbox", "{name} shares the stand-in's loopback");
        let url = svc["environment"]["PLEO_GATEWAY_DATABASE_URL"].as_str().unwrap();
        assert!(url.starts_with("postgres://"));
        let path = svc["command"][1].as_str().unwrap().replace("/etc/pleo-gateway/", "");
        let text = std::fs::read_to_string(root.join(&path)).unwrap();
        let text = text
            .replace(&staging, &staging_here)
            .replace(&production, &production_here)
            .replace("../../sandbox/", &format!("{}/sandbox/", root.display()))
            .lines()
            .map(|l| {
                if l.starts_with("listen:") || l.starts_with("admin_listen:") {
                    format!("{}: 127.0.0.1:0", l.split(':').next().unwrap())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        configs.push(file);
    }

    let db = pg.url();
    let envs = [("PLEO_GATEWAY_DATABASE_URL", db.as_str())];
    let first = configs[0].to_str().unwrap();
    let sandbox = Process::spawn(
        &["--config", first, "sandbox", "--staging", &staging_here, "--production", &production_here],
        &envs,
    );
    sandbox.line_with("sandbox (offline Pleo stand-in) listening", Duration::from_secs(20)).await;
    let mut replicas = Vec::new();
    for file in &configs {
        let p = Process::spawn(&["--config", file.to_str().unwrap()], &envs);
        let addrs = p.listening().await;
        replicas.push((p, addrs));
    }
    let client = http_client();
    for (_, (addr, admin)) in &replicas {
        for tenant in ["acme", "globex"] {
            let req = http::Request::get(format!("http://{addr}/v2/expenses"))
                .header("x-pleo-tenant", tenant)
                .body(Default::default())
                .unwrap();
            let status = client.request(req).await.unwrap().status();
            assert_eq!(status, 200, "{tenant} on {addr}");
        }
        let tenants = admin_get(*admin, "/tenants").await.1;
        assert!(tenants.contains("\"kind\":\"postgres\""), "{tenants}");
    }
    // One chain for acme in the database, shared by the three.
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM pleo_gateway_oauth_state WHERE refresh_token IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    for (p, _) in replicas {
        p.signal(nix::sys::signal::Signal::SIGTERM);
        let (status, log) = tokio::task::spawn_blocking(move || p.wait()).await.unwrap();
        assert!(status.success(), "{log}");
        assert!(!log.contains(support::postgres::DB_PASSWORD));
    }
    sandbox.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = tokio::task::spawn_blocking(move || sandbox.wait()).await.unwrap();
    assert!(status.success());
}
