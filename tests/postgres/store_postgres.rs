//! The shared token store against a real PostgreSQL server: the schema
//! migrations, the lease and its fencing generation, the in-flight mark a
//! dead refresher leaves, import that never overwrites, and what check and
//! errors say (never the URL's password).

use std::sync::Arc;
use std::time::Duration;

use crate::support::postgres::{Postgres, DB_PASSWORD};
use pleo_gateway::config::PostgresConfig;
use pleo_gateway::metrics::Metrics;
use pleo_gateway::secret::Secret;
use pleo_gateway::state::postgres::{PostgresStore, SCHEMA_VERSION};
use pleo_gateway::state::{Leased, StoreError, StoredToken, TokenStore};

fn config(url: &str) -> PostgresConfig {
    PostgresConfig {
        url: Secret::new(url.to_string()),
        pool_size: 2,
        connect_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(2),
        ca_file: None,
        poll_interval: Duration::from_secs(1),
    }
}

fn store(pg: &Postgres) -> (Arc<PostgresStore>, Metrics) {
    let metrics = Metrics::register(&prometheus::Registry::new(), false).unwrap();
    (Arc::new(PostgresStore::new(&config(&pg.url()), metrics.store.clone()).unwrap()), metrics)
}

fn chain(rt: &str, at: &str) -> StoredToken {
    StoredToken {
        refresh_token: Secret::new(rt.to_string()),
        access_token: Some(Secret::new(at.to_string())),
        access_issued_at_ms: Some(1_000),
        access_expires_at_ms: Some(901_000),
        imported_from: None,
        reauthorization_required: false,
    }
}

fn held(l: Leased) -> (pleo_gateway::state::Lease, Option<StoredToken>, bool) {
    match l {
        Leased::Held { lease, stored, interrupted } => (lease, stored, interrupted),
        Leased::Busy => panic!("expected the lease"),
    }
}

#[tokio::test]
async fn a_lease_is_exclusive_and_a_holder_whose_lease_ran_out_is_fenced() {
    let Some(pg) = Postgres::start("a_lease_is_exclusive") else { return };
    let (a, _) = store(&pg);
    let (b, _) = store(&pg);
    assert_eq!(a.schema_version().await.unwrap(), SCHEMA_VERSION, "the schema is created at first use");

    // Replica A takes the lease; B finds it busy. (2 s, not less: with
    // 300 ms a stall of the loaded test host between these lines let the
    // lease run out before B looked, 1 run in ~30.)
    let (lease_a, stored, interrupted) = held(a.lease("hooli", Duration::from_secs(2)).await.unwrap());
    assert!(stored.is_none() && !interrupted);
    assert!(matches!(b.lease("hooli", Duration::from_secs(5)).await.unwrap(), Leased::Busy));
    a.mark_in_flight("hooli", lease_a).await.unwrap();

    // A stalls past its lease; B takes over once the server's clock says it
    // ran out (a wait on that state, not a margin), and sees A's refresh was interrupted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (lease_b, _, interrupted) = loop {
        match b.lease("hooli", Duration::from_secs(5)).await.unwrap() {
            Leased::Busy => {
                assert!(std::time::Instant::now() < deadline, "A's 2 s lease never ran out");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            taken => break held(taken),
        }
    };
    assert!(interrupted, "the in-flight mark nobody committed is reported");
    assert!(lease_b.generation > lease_a.generation);

    // A wakes up and tries to write its (older) view: refused.
    let late = a.commit("hooli", lease_a, &chain("rt_a", "at_a")).await;
    assert!(matches!(late, Err(StoreError::Fenced)), "{late:?}");
    assert!(matches!(a.mark_in_flight("hooli", lease_a).await, Err(StoreError::Fenced)));
    b.commit("hooli", lease_b, &chain("rt_b", "at_b")).await.unwrap();
    let now = a.load("hooli").await.unwrap().unwrap();
    assert_eq!(now.refresh_token.expose_secret(), "rt_b", "B's chain stands");

    // Committed: the lease is free again and nothing is marked in flight.
    let (lease, stored, interrupted) = held(a.lease("hooli", Duration::from_secs(5)).await.unwrap());
    assert_eq!(stored.unwrap().access_token.unwrap().expose_secret(), "at_b");
    assert!(!interrupted);
    a.release("hooli", lease).await.unwrap();
    assert!(matches!(b.lease("hooli", Duration::from_secs(5)).await.unwrap(), Leased::Held { .. }));
}

#[tokio::test]
async fn a_new_consent_ends_a_refresh_in_flight_and_import_never_overwrites() {
    let Some(pg) = Postgres::start("a_new_consent_ends_a_refresh") else { return };
    let (a, _) = store(&pg);
    let (lease, _, _) = held(a.lease("hooli", Duration::from_secs(30)).await.unwrap());
    // `connect` stores a new consent meanwhile: the refresh may not commit over it.
    a.save("hooli", &chain("rt_consent", "at_consent")).await.unwrap();
    assert!(matches!(a.commit("hooli", lease, &chain("rt_old", "at_old")).await, Err(StoreError::Fenced)));
    // Importing a state_dir into a database that has the tenant changes nothing.
    assert!(!a.import("hooli", &chain("rt_file", "at_file")).await.unwrap());
    assert!(a.import("globex", &chain("rt_file", "at_file")).await.unwrap());
    assert_eq!(a.load("hooli").await.unwrap().unwrap().refresh_token.expose_secret(), "rt_consent");
    assert_eq!(a.load("globex").await.unwrap().unwrap().refresh_token.expose_secret(), "rt_file");
}

#[tokio::test]
async fn a_database_from_a_newer_gateway_is_refused_untouched() {
    let Some(pg) = Postgres::start("a_database_from_a_newer_gateway") else { return };
    let (a, _) = store(&pg);
    a.schema_version().await.unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.execute("INSERT INTO pleo_gateway_schema (version) VALUES (99)", &[]).await.unwrap();
    let (fresh, _) = store(&pg);
    let err = fresh.load("hooli").await.unwrap_err().to_string();
    assert!(err.contains("version 99") && err.contains("newer"), "{err}");
    let n: i64 = client.query_one("SELECT count(*) FROM pleo_gateway_schema", &[]).await.unwrap().get(0);
    assert_eq!(n, i64::from(SCHEMA_VERSION) + 1, "nothing was changed");
}

#[tokio::test]
async fn an_unreachable_store_is_reported_without_the_url_and_counted() {
    let Some(pg) = Postgres::start("an_unreachable_store_is_reported") else { return };
    let (a, metrics) = store(&pg);
    a.save("hooli", &chain("rt", "at")).await.unwrap();
    assert_eq!(metrics.store.up.get(), 1);
    pg.stop();
    let err = a.load("hooli").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let text = format!("{err} {err:?} {:?}", a.health());
    assert!(!text.contains(DB_PASSWORD), "the password shows: {text}");
    assert!(!a.health().up);
    assert_eq!(metrics.store.up.get(), 0);
    // Back: the same store answers again.
    pg.start_again();
    assert_eq!(a.load("hooli").await.unwrap().unwrap().refresh_token.expose_secret(), "rt");
    assert!(a.health().up);
}
