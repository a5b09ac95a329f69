//! Installs on replicas sharing PostgreSQL: an install on one replica is
//! served by the others within a second, taken up by the store's
//! notification (the poll is set to 30 s, so it cannot be the path); and
//! an install while the store is down says so and leaves nothing behind.

use std::time::{Duration, Instant};

use crate::support::connect::{free_port, STORE_KEY};
use crate::support::install::*;
use crate::support::postgres::Postgres;
use crate::support::*;
use pleo_gateway::gateway::Running;
use pleo_gateway::sandbox::Sandbox;

const COMPANY: &str = "0b9c6a1e-1111-4c2d-9e8f-123456789abc";

fn pg_store(pg: &Postgres) -> String {
    format!(
        "store:\n  kind: postgres\n  url: \"{}\"\n  poll_interval: 30s\n  statement_timeout: 2s\n  encryption_key: {STORE_KEY}\n",
        pg.url()
    )
}

/// A replica: its own ports and directory, the shared store and sandboxes.
async fn replica(pg: &Postgres, staging: &Sandbox, production: &Sandbox, port: u16) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = standard_yaml(
        dir.path(),
        &base_url(staging),
        &base_url(production),
        &format!("{}{}", apps_yaml(staging, production), connect_yaml(port, &pg_store(pg))),
    );
    (start_gateway(&yaml, dir.path()).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_on_one_replica_serves_through_the_others_within_a_second() {
    let Some(pg) = Postgres::start("an_install_on_one_replica_serves_through_the_others_within_a_second") else {
        return;
    };
    let port = free_port();
    let (staging, production) = sandboxes(port, Duration::from_secs(900)).await;
    let (a, _da) = replica(&pg, &staging, &production, port).await;
    let (b, _db) = replica(&pg, &staging, &production, free_port()).await;
    let (c, _dc) = replica(&pg, &staging, &production, free_port()).await;
    let tenant = format!("erp-{COMPANY}");
    let client = http_client();
    let get = |addr: std::net::SocketAddr| {
        let req = http::Request::get(format!("http://{addr}/v1/expenses"))
            .header("x-pleo-tenant", tenant.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let client = client.clone();
        async move { client.request(req).await.unwrap().status().as_u16() }
    };
    assert_eq!(get(b.addr).await, 403, "not installed yet");

    let mut browser = Browser::default();
    let done =
        browser.follow(&format!("http://{}/marketplace/connect?app=erp&company={COMPANY}", production.addr)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let installed = Instant::now();
    assert_eq!(get(a.addr).await, 200, "the replica that installed serves at once");
    for other in [&b, &c] {
        loop {
            if get(other.addr).await == 200 {
                break;
            }
            assert!(installed.elapsed() < Duration::from_secs(1), "another replica took longer than 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A key install too: the sealed key reaches the others with it.
    let company = "5d1c2b3a-2222-4e5f-8a9b-abcdefabcdef";
    let mut k = Browser::default();
    let modal = k.get(&format!("http://{}/marketplace/connect?app=ledger&company={company}", staging.addr)).await;
    let key = element(&modal.body, "key").unwrap();
    let form = k.follow(&href(&modal.body, "continue").unwrap()).await;
    let public_url = format!("http://127.0.0.1:{port}");
    let csrf = crate::support::connect::csrf_of(&form.body);
    let done =
        k.post(&format!("{public_url}/install/ledger/key"), &public_url, &[("csrf", &csrf), ("key", &key)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let installed = Instant::now();
    let ledger = format!("ledger-{company}");
    loop {
        let req = http::Request::get(format!("http://{}/v1/expenses", c.addr))
            .header("x-pleo-tenant", ledger.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        if client.request(req).await.unwrap().status() == 200 {
            break;
        }
        assert!(
            installed.elapsed() < Duration::from_secs(1),
            "the key install took longer than 1 s to reach a replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for g in [a, b, c] {
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_while_the_store_is_down_says_so_and_leaves_nothing() {
    let Some(pg) = Postgres::start("an_install_while_the_store_is_down_says_so_and_leaves_nothing") else { return };
    let port = free_port();
    let (staging, production) = sandboxes(port, Duration::from_secs(900)).await;
    let (gw, _dir) = replica(&pg, &staging, &production, port).await;
    pg.stop();
    let mut b = Browser::default();
    let done = b.follow(&format!("http://{}/marketplace/connect?app=erp&company={COMPANY}", production.addr)).await;
    assert_eq!(done.status, 502, "{}", done.body);
    assert!(done.body.contains("cannot reach its store"), "{}", done.body);
    pg.start_again();
    // Nothing half-written: no install, no chain.
    let store = pleo_gateway::state::PostgresStore::for_command(&pleo_gateway::config::PostgresConfig {
        url: pleo_gateway::secret::Secret::new(pg.url()),
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        ca_file: None,
        poll_interval: Duration::from_secs(30),
    })
    .unwrap();
    use pleo_gateway::state::{OnboardingStore, TokenStore};
    assert!(store.installs(&[]).await.unwrap().is_empty());
    assert!(store.load(&format!("erp-{COMPANY}")).await.unwrap().is_none());
    // And once it is back, the same install goes through.
    let mut b = Browser::default();
    let done = b.follow(&format!("http://{}/marketplace/connect?app=erp&company={COMPANY}", production.addr)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    gw.shutdown().await;
}
