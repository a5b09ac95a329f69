//! The shared token store (`store.kind: postgres`): every replica keeps its
//! OAuth chains in one table, and one refresh per expiry happens across all
//! of them (docs/oauth.md, "Replicas").
//!
//! - A refresh holds a lease on the tenant's row: `lease` takes it when free
//!   or run out, and bumps the row's `generation`. `commit` writes only
//!   `WHERE generation = $lease`, so a holder whose lease ran out (a long
//!   pause, a lost connection) can never overwrite a newer chain.
//! - Before the token endpoint is called the row is marked in flight. A lease
//!   taken over a mark nobody committed is reported as interrupted: the
//!   stored refresh token is tried once and Pleo's answer decides.
//! - Commits `NOTIFY` (naming the committer, which skips its own); each
//!   replica `LISTEN`s and also re-reads what changed every `poll_interval`,
//!   so a missed notification only delays, never loses.
//! - Requests never touch the database: only the refresh path does.
//!
//! The URL is a secret: errors carry the server's words, never the URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, Pool, Runtime};
use tokio::sync::{broadcast, watch, OnceCell};
use tokio_postgres::{AsyncMessage, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

mod onboarding;

use crate::config::PostgresConfig;
use crate::metrics::StoreMetrics;
use crate::secret::{is_header_safe, Secret};
use crate::state::{Lease, Leased, StoreError, StoreFuture, StoreHealth, StoredToken, TokenStore};

/// The schema this build reads and writes. Migrations only ever add.
pub const SCHEMA_VERSION: i32 = 3;

const MIGRATIONS: [(i32, &str); 3] = [
    (
        1,
        "CREATE TABLE pleo_gateway_oauth_state (
        tenant text PRIMARY KEY,
        generation bigint NOT NULL DEFAULT 0,
        refresh_token text,
        access_token text,
        access_issued_at_ms bigint,
        access_expires_at_ms bigint,
        imported_from text,
        reauthorization_required boolean NOT NULL DEFAULT false,
        lease_holder text,
        lease_until timestamptz,
        refresh_started_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    )",
    ),
    (
        2,
        // Connect links (only the token's hash) and connections (the key sealed).
        "CREATE TABLE pleo_gateway_connect_links (
        token_sha256 text PRIMARY KEY,
        id text NOT NULL UNIQUE,
        tenant text NOT NULL,
        created_by text NOT NULL,
        created_at_ms bigint NOT NULL,
        expires_at_ms bigint NOT NULL,
        used_at_ms bigint,
        revoked_at_ms bigint,
        attempts integer NOT NULL DEFAULT 0
    );
    CREATE TABLE pleo_gateway_connections (
        tenant text PRIMARY KEY,
        model text NOT NULL,
        sealed_key text,
        masked text NOT NULL,
        company_id text,
        connected_at_ms bigint NOT NULL,
        link_id text,
        connected_by text NOT NULL
    )",
    ),
    (
        3,
        // Tenants installs from Pleo made (the record as JSON: nothing secret).
        "CREATE TABLE pleo_gateway_installs (
        tenant text PRIMARY KEY,
        app text NOT NULL,
        record text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )",
    ),
];

/// Serialises migrations across replicas starting together.
const MIGRATION_LOCK: i64 = 0x706c_656f_6777; // "pleogw"

const CHANNEL: &str = "pleo_gateway_oauth";
/// Installs made or changed (payload: the tenant).
pub(crate) const INSTALL_CHANNEL: &str = "pleo_gateway_installs";

const TOKEN_COLUMNS: &str = "refresh_token, access_token, access_issued_at_ms, access_expires_at_ms, \
                             imported_from, reauthorization_required";

pub struct PostgresStore {
    pool: Pool,
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// This replica, as the lease holder: host, pid and a random part.
    holder: String,
    schema: OnceCell<()>,
    metrics: StoreMetrics,
    changes: broadcast::Sender<Box<str>>,
    install_changes: broadcast::Sender<()>,
    last_error: Mutex<Option<String>>,
    poll_interval: Duration,
    /// The client-side bound on one operation.
    op_timeout: Duration,
}

// The connection config holds the password: show only what identifies this store.
impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("holder", &self.holder).finish_non_exhaustive()
    }
}

/// Turns a driver or pool error into words that are safe to show: the
/// error and its causes (the server's message), never the URL.
pub(crate) fn unavailable(e: impl std::error::Error) -> StoreError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    StoreError::Unavailable(text)
}

/// The same for a situation described in words.
fn unanswered(what: &str) -> StoreError {
    StoreError::Unavailable(what.to_string())
}

impl PostgresStore {
    /// Builds the pool; connects lazily, so a database that is down at
    /// start degrades OAuth tenants instead of stopping the gateway.
    pub fn new(cfg: &PostgresConfig, metrics: StoreMetrics) -> Result<PostgresStore, String> {
        let mut pg: tokio_postgres::Config =
            cfg.url.expose_secret().parse().map_err(|_| "store.url is not a PostgreSQL connection URL".to_string())?;
        let timeout_ms = cfg.statement_timeout.as_millis();
        pg.connect_timeout(cfg.connect_timeout)
            .keepalives(true)
            .application_name("pleo-gateway")
            .options(format!("-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"));
        let tls = MakeRustlsConnect::new(client_tls(cfg.ca_file.as_deref())?);
        let manager = Manager::new(pg.clone(), tls.clone());
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.connect_timeout + cfg.statement_timeout))
            .create_timeout(Some(cfg.connect_timeout))
            .recycle_timeout(Some(cfg.statement_timeout))
            .build()
            .map_err(|e| format!("cannot build the PostgreSQL pool: {e}"))?;
        let (changes, _) = broadcast::channel(1024);
        let (install_changes, _) = broadcast::channel(16);
        Ok(PostgresStore {
            pool,
            pg,
            tls,
            holder: holder_id(),
            schema: OnceCell::new(),
            metrics,
            changes,
            install_changes,
            last_error: Mutex::new(None),
            poll_interval: cfg.poll_interval,
            op_timeout: cfg.statement_timeout * 2,
        })
    }

    /// For an operator command (`connect`, `check`, `store import`): the
    /// same store, its metrics kept to itself (nobody scrapes a command).
    pub fn for_command(cfg: &PostgresConfig) -> Result<PostgresStore, String> {
        let metrics = crate::metrics::Metrics::register(&prometheus::Registry::new(), false)
            .map_err(|e| format!("metrics registry: {e}"))?;
        PostgresStore::new(cfg, metrics.store.clone())
    }

    /// Runs `op` on a pooled connection (the schema made current first),
    /// timed and counted as `name`.
    pub(crate) async fn run<T>(
        &self,
        name: &'static str,
        op: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = async {
            let client = self.pool.get().await.map_err(unavailable)?;
            // The server's statement_timeout cannot help when the network
            // itself stalls (a frozen connection, a partition): bound every
            // operation here too, and never reuse a connection that stalled.
            let done = tokio::time::timeout(self.op_timeout, async {
                self.schema.get_or_try_init(|| self.migrate(&client)).await?;
                op(&client).await
            })
            .await;
            match done {
                Ok(result) => result,
                Err(_) => {
                    drop(deadpool_postgres::Object::take(client));
                    Err(StoreError::Unavailable(format!(
                        "no answer within {:?} (the connection was dropped)",
                        self.op_timeout
                    )))
                }
            }
        }
        .await;
        let ok = !matches!(result, Err(StoreError::Unavailable(_)));
        self.metrics.observe(name, started.elapsed().as_secs_f64(), ok);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(StoreError::Unavailable(e)) => *last = Some(e.clone()),
            _ => *last = None,
        }
        result
    }

    /// Creates or upgrades the schema, under a transaction-scoped advisory
    /// lock so replicas starting together take turns. Never drops anything;
    /// a database from a newer gateway is refused, not touched.
    async fn migrate(&self, client: &deadpool_postgres::Client) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = async {
            client.batch_execute("BEGIN").await.map_err(unavailable)?;
            let applied = async {
                client.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(unavailable)?;
                client
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS pleo_gateway_schema (
                            version integer PRIMARY KEY,
                            applied_at timestamptz NOT NULL DEFAULT now())",
                    )
                    .await
                    .map_err(unavailable)?;
                let row = client
                    .query_one("SELECT coalesce(max(version), 0) FROM pleo_gateway_schema", &[])
                    .await
                    .map_err(unavailable)?;
                let current: i32 = row.get(0);
                if current > SCHEMA_VERSION {
                    return Err(StoreError::Refused(format!(
                        "the database schema is at version {current}, newer than this gateway's \
                         {SCHEMA_VERSION}: run a newer pleo-gateway"
                    )));
                }
                for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
                    client.batch_execute(sql).await.map_err(unavailable)?;
                    client
                        .execute("INSERT INTO pleo_gateway_schema (version) VALUES ($1)", &[version])
                        .await
                        .map_err(unavailable)?;
                    tracing::info!(version, "token store schema migrated");
                }
                Ok(())
            }
            .await;
            let end = if applied.is_ok() { "COMMIT" } else { "ROLLBACK" };
            client.batch_execute(end).await.map_err(unavailable)?;
            applied
        }
        .await;
        self.metrics.observe("migrate", started.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    /// For `check`: the schema version the database is at (migrating it if
    /// it is older), or why it cannot be reached.
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        self.run("load", async |c| {
            let row = c.query_one("SELECT max(version) FROM pleo_gateway_schema", &[]).await.map_err(unavailable)?;
            Ok(row.get::<_, Option<i32>>(0).unwrap_or(0))
        })
        .await
    }

    /// Copies a chain into an empty row only: `store import` never
    /// overwrites a chain the database already has. `true` if written.
    pub async fn import(&self, tenant: &str, token: &StoredToken) -> Result<bool, StoreError> {
        let columns = Columns::of(token);
        self.run("save", async |c| {
            let n = c
                .execute(
                    "INSERT INTO pleo_gateway_oauth_state AS s (tenant, refresh_token, access_token, \
                     access_issued_at_ms, access_expires_at_ms, imported_from, reauthorization_required) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant) DO UPDATE SET refresh_token = EXCLUDED.refresh_token, \
                     access_token = EXCLUDED.access_token, access_issued_at_ms = EXCLUDED.access_issued_at_ms, \
                     access_expires_at_ms = EXCLUDED.access_expires_at_ms, imported_from = EXCLUDED.imported_from, \
                     reauthorization_required = EXCLUDED.reauthorization_required, updated_at = now() \
                     WHERE s.refresh_token IS NULL",
                    &columns.params(&[&tenant], &[]),
                )
                .await
                .map_err(unavailable)?;
            if n == 1 {
                c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &tenant]).await.map_err(unavailable)?;
            }
            Ok(n == 1)
        })
        .await
    }

    /// Listens for other replicas' commits and re-reads what changed every
    /// `poll_interval`, reconnecting with backoff; ends when `stop` is set.
    pub fn spawn_watch(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            let mut seen: HashMap<Box<str>, i64> = HashMap::new();
            loop {
                let watched = this.watch_once(&mut seen, &mut stop).await;
                if *stop.borrow() {
                    return;
                }
                if let Err(e) = watched {
                    failures += 1;
                    tracing::warn!(error = %e, "lost the token store's change feed; reconnecting");
                }
                let wait = Duration::from_millis(250 * (1u64 << failures.min(7))).min(Duration::from_secs(30));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    async fn watch_once(
        &self,
        seen: &mut HashMap<Box<str>, i64>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let (client, mut connection) = tokio::time::timeout(self.op_timeout, self.pg.connect(self.tls.clone()))
            .await
            .map_err(|_| unanswered("connecting for the change feed got no answer"))?
            .map_err(unavailable)?;
        let (changes, me) = (self.changes.clone(), self.holder.clone());
        let installs = self.install_changes.clone();
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) if n.channel() == INSTALL_CHANNEL => {
                        let _ = installs.send(());
                    }
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        // "tenant holder" from a refresh's commit: this
                        // replica's own needs no second look. "tenant" alone
                        // (a new consent, an import) is news to everyone.
                        let (tenant, holder) = n.payload().split_once(' ').unwrap_or((n.payload(), ""));
                        if holder != me {
                            let _ = changes.send(tenant.into());
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = closed_tx.send(e.to_string());
                        return;
                    }
                    None => {
                        let _ = closed_tx.send("connection closed".into());
                        return;
                    }
                }
            }
        });
        // The table must exist before it is polled.
        self.run("load", async |_| Ok(())).await?;
        client.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {INSTALL_CHANNEL}")).await.map_err(unavailable)?;
        // Installs changed while the feed was down are read again now.
        let _ = self.install_changes.send(());
        let mut installs_seen: Option<String> = None;
        loop {
            let started = Instant::now();
            // Row by row, and each tenant's time as a number: at 50,000
            // OAuth tenants the whole result, and the times as text, were
            // ~7 MB, held between polls or made anew at each.
            let poll = async {
                let no_params: [Param<'_>; 0] = [];
                let rows = client
                    .query_raw(
                        "SELECT tenant, (extract(epoch FROM updated_at) * 1000000)::int8 FROM pleo_gateway_oauth_state",
                        no_params,
                    )
                    .await?;
                let mut rows = std::pin::pin!(rows);
                while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
                    let (tenant, updated): (&str, i64) = (row.get(0), row.get(1));
                    if seen.get(tenant) != Some(&updated) {
                        let _ = self.changes.send(tenant.into());
                        seen.insert(tenant.into(), updated);
                    }
                }
                Ok::<_, tokio_postgres::Error>(())
            };
            let polled = match tokio::time::timeout(self.op_timeout, poll).await {
                Ok(done) => done.map_err(unavailable),
                Err(_) => Err(unanswered("the change feed's poll got no answer")),
            };
            self.metrics.observe("poll", started.elapsed().as_secs_f64(), polled.is_ok());
            polled?;
            // A missed install notification is caught here: one row of summary.
            let summary = client.query_one(
                "SELECT count(*)::text || ' ' || coalesce(max(updated_at)::text, '') FROM pleo_gateway_installs",
                &[],
            );
            if let Ok(Ok(row)) = tokio::time::timeout(self.op_timeout, summary).await {
                let now: String = row.get(0);
                if installs_seen.as_ref().is_some_and(|s| *s != now) {
                    let _ = self.install_changes.send(());
                }
                installs_seen = Some(now);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                e = &mut closed => return Err(unanswered(&e.unwrap_or_default())),
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

/// A chain as the table's token columns, in `TOKEN_COLUMNS` order.
struct Columns<'a> {
    refresh_token: &'a str,
    access_token: Option<&'a str>,
    issued: Option<i64>,
    expires: Option<i64>,
    imported_from: &'a Option<String>,
    reauthorization_required: bool,
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

impl<'a> Columns<'a> {
    fn of(token: &'a StoredToken) -> Columns<'a> {
        Columns {
            refresh_token: token.refresh_token.expose_secret(),
            access_token: token.access_token.as_ref().map(|t| t.expose_secret()),
            issued: ms(token.access_issued_at_ms),
            expires: ms(token.access_expires_at_ms),
            imported_from: &token.imported_from,
            reauthorization_required: token.reauthorization_required,
        }
    }

    /// Statement parameters: `before`, the six token columns, then `after`.
    fn params<'p>(&'p self, before: &[Param<'p>], after: &[Param<'p>]) -> Vec<Param<'p>> {
        let columns: [Param<'p>; 6] = [
            &self.refresh_token,
            &self.access_token,
            &self.issued,
            &self.expires,
            self.imported_from,
            &self.reauthorization_required,
        ];
        before.iter().copied().chain(columns).chain(after.iter().copied()).collect()
    }
}

fn ms(v: Option<u64>) -> Option<i64> {
    v.map(|v| v.min(i64::MAX as u64) as i64)
}

/// A row's chain; `None` for a row that has only ever held a lease.
fn stored_from(row: &Row, at: usize) -> Result<Option<StoredToken>, StoreError> {
    let Some(rt) = row.get::<_, Option<String>>(at) else {
        return Ok(None);
    };
    let access: Option<String> = row.get(at + 1);
    if !is_header_safe(&rt) || access.as_deref().is_some_and(|t| !is_header_safe(t)) {
        return Err(StoreError::Refused("a stored token is empty or not visible ASCII".into()));
    }
    let unsigned = |v: Option<i64>| v.map(|v| v.max(0) as u64);
    Ok(Some(StoredToken {
        refresh_token: Secret::new(rt),
        access_token: access.map(Secret::new),
        access_issued_at_ms: unsigned(row.get(at + 2)),
        access_expires_at_ms: unsigned(row.get(at + 3)),
        imported_from: row.get(at + 4),
        reauthorization_required: row.get(at + 5),
    }))
}

/// rustls with the public roots, plus `ca_file` when the server's
/// certificate comes from a private CA.
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read store.ca_file {}: {e}", path.display()))?
        {
            let cert = cert.map_err(|e| format!("cannot read store.ca_file {}: {e}", path.display()))?;
            roots.add(cert).map_err(|e| format!("store.ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = crate::tls::provider();
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn holder_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    format!("{host}/{}/{}", std::process::id(), hex::encode(b))
}

impl TokenStore for PostgresStore {
    fn load<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        Box::pin(self.run("load", async move |c| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM pleo_gateway_oauth_state WHERE tenant = $1");
            match c.query_opt(&sql, &[&tenant]).await.map_err(unavailable)? {
                Some(row) => stored_from(&row, 0),
                None => Ok(None),
            }
        }))
    }

    fn load_many<'a>(&'a self, tenants: &'a [Box<str>]) -> StoreFuture<'a, Vec<(Box<str>, StoredToken)>> {
        Box::pin(self.run("load", async move |c| {
            let names: Vec<&str> = tenants.iter().map(|t| &**t).collect();
            let sql = format!("SELECT tenant, {TOKEN_COLUMNS} FROM pleo_gateway_oauth_state WHERE tenant = ANY($1)");
            let mut out = Vec::new();
            for row in c.query(&sql, &[&names]).await.map_err(unavailable)? {
                if let Some(stored) = stored_from(&row, 1)? {
                    out.push((row.get::<_, String>(0).into_boxed_str(), stored));
                }
            }
            Ok(out)
        }))
    }

    fn save<'a>(&'a self, tenant: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        Box::pin(self.run("save", async move |c| {
            let columns = Columns::of(token);
            // A new consent replaces the chain whatever holds the lease: the
            // generation moves on, so a refresh in flight cannot commit over it.
            c.execute(
                "WITH w AS (INSERT INTO pleo_gateway_oauth_state AS s (tenant, refresh_token, access_token, \
                 access_issued_at_ms, access_expires_at_ms, imported_from, reauthorization_required) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant) DO UPDATE SET generation = s.generation + 1, \
                 refresh_token = EXCLUDED.refresh_token, access_token = EXCLUDED.access_token, \
                 access_issued_at_ms = EXCLUDED.access_issued_at_ms, \
                 access_expires_at_ms = EXCLUDED.access_expires_at_ms, imported_from = EXCLUDED.imported_from, \
                 reauthorization_required = EXCLUDED.reauthorization_required, lease_holder = NULL, \
                 lease_until = NULL, refresh_started_at = NULL, updated_at = now() RETURNING tenant) \
                 SELECT pg_notify($8, tenant) FROM w",
                &columns.params(&[&tenant], &[&CHANNEL]),
            )
            .await
            .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn lease<'a>(&'a self, tenant: &'a str, ttl: Duration) -> StoreFuture<'a, Leased> {
        Box::pin(self.run("lease", async move |c| {
            let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
            // One round trip: create the row if there is none, take the
            // lease if it is free or ran out, and read the chain under it.
            let sql = format!(
                "INSERT INTO pleo_gateway_oauth_state AS s (tenant, generation, lease_holder, lease_until) \
                 VALUES ($1, 1, $2, now() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (tenant) DO UPDATE SET generation = s.generation + 1, lease_holder = $2, \
                 lease_until = now() + $3::bigint * interval '1 millisecond' \
                 WHERE s.lease_until IS NULL OR s.lease_until < now() \
                 RETURNING generation, refresh_started_at IS NOT NULL, {TOKEN_COLUMNS}"
            );
            let Some(row) = c.query_opt(&sql, &[&tenant, &self.holder, &ttl_ms]).await.map_err(unavailable)? else {
                return Ok(Leased::Busy);
            };
            Ok(Leased::Held {
                lease: Lease { generation: row.get(0) },
                interrupted: row.get(1),
                stored: stored_from(&row, 2)?,
            })
        }))
    }

    fn mark_in_flight<'a>(&'a self, tenant: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(self.run("mark", async move |c| {
            let n = c
                .execute(
                    "UPDATE pleo_gateway_oauth_state SET refresh_started_at = now() \
                     WHERE tenant = $1 AND generation = $2 AND lease_holder = $3 AND lease_until > now()",
                    &[&tenant, &lease.generation, &self.holder],
                )
                .await
                .map_err(unavailable)?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::Fenced)
            }
        }))
    }

    fn commit<'a>(&'a self, tenant: &'a str, lease: Lease, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        Box::pin(self.run("commit", async move |c| {
            let columns = Columns::of(token);
            // Fenced by the generation alone, not by the lease's clock: a
            // holder whose lease ran out may still commit as long as nobody
            // took the lease after it (its rotated token is the live one).
            let rows = c
                .query(
                    "WITH w AS (UPDATE pleo_gateway_oauth_state SET refresh_token = $3, access_token = $4, \
                     access_issued_at_ms = $5, access_expires_at_ms = $6, imported_from = $7, \
                     reauthorization_required = $8, lease_holder = NULL, lease_until = NULL, \
                     refresh_started_at = NULL, updated_at = now() \
                     WHERE tenant = $1 AND generation = $2 RETURNING tenant) \
                     SELECT pg_notify($9, tenant || ' ' || $10) FROM w",
                    &columns.params(&[&tenant, &lease.generation], &[&CHANNEL, &self.holder]),
                )
                .await
                .map_err(unavailable)?;
            if rows.is_empty() {
                Err(StoreError::Fenced)
            } else {
                Ok(())
            }
        }))
    }

    fn release<'a>(&'a self, tenant: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(self.run("release", async move |c| {
            c.execute(
                "UPDATE pleo_gateway_oauth_state SET lease_holder = NULL, lease_until = NULL, \
                 refresh_started_at = NULL WHERE tenant = $1 AND generation = $2",
                &[&tenant, &lease.generation],
            )
            .await
            .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn changes(&self) -> Option<broadcast::Receiver<Box<str>>> {
        Some(self.changes.subscribe())
    }

    fn health(&self) -> StoreHealth {
        let error = self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        StoreHealth { kind: "postgres", up: error.is_none(), error }
    }
}
