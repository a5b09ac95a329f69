//! Hot reload, on SIGHUP and when a file the config is made of changes.
//!
//! A reload reads and validates the whole new config and prepares
//! everything that can fail (upstream clients, CA files) before it touches
//! anything; only then does it swap the routing table in one atomic store.
//! Requests in flight finish on the snapshot they started with. A config
//! that does not load is logged with its error, counted as
//! `config_reloads_total{result="failure"}`, and the old one keeps serving.
//!
//! OAuth sessions are not rebuilt: `Sessions` hands the same session (and so
//! the same token chain) to the new routing table with the new settings, and
//! retires the sessions of tenants that left.
//!
//! Addresses, worker threads, the sandbox and `state_dir` are fixed for the
//! life of the process; a reload that changes them says so and keeps the old
//! values. Listener limits apply to connections accepted after the reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Mutex};

use crate::config::{AuthConfig, Config, ConfigError};
use crate::credential::Sessions;
use crate::key_checks::{self, Summary};
use crate::listener::ServeOptions;
use crate::metrics::Metrics;
use crate::onboarding::installs::Installs;
use crate::proxy::routes::{Routes, SharedRoutes};
use crate::tls::{self, SharedTls, TlsError};
use crate::upstream::{UpstreamError, Upstreams};

/// How often the watched files are compared with what was loaded.
pub const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config:\n{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("state_dir {path} cannot hold OAuth token state: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a reload may not change (needs a restart), as loaded at start.
#[derive(Debug, PartialEq)]
struct Fixed {
    listen: std::net::SocketAddr,
    admin_listen: std::net::SocketAddr,
    workers: Option<usize>,
    sandbox: String,
    state_dir: PathBuf,
    /// The store's kind (its settings are read once, at start).
    store: &'static str,
    /// Whether `listen` speaks TLS (its files may change; this may not).
    tls: bool,
    /// The connect pages' listener, URL and name, and the encryption keys'
    /// ids: read at start by the pages and the connection store.
    connect: String,
    /// Traces: the exporter and propagation are set up once, at start.
    telemetry: crate::config::model::TelemetryConfig,
}

impl Fixed {
    fn of(c: &Config) -> Fixed {
        Fixed {
            listen: c.listen,
            admin_listen: c.admin_listen,
            workers: c.workers,
            sandbox: format!("{:?}", c.sandbox),
            state_dir: c.state_dir.clone(),
            store: c.store.kind(),
            tls: c.tls.is_some(),
            connect: connect_key(c),
            telemetry: c.telemetry.clone(),
        }
    }
}

fn connect_key(c: &Config) -> String {
    use sha2::{Digest, Sha256};
    // Key ids only (a hash prefix per key), never a key.
    let keys: Vec<String> =
        c.encryption_keys.iter().map(|k| hex::encode(&Sha256::digest(k.expose_secret().as_bytes())[..4])).collect();
    let connect = c.connect.as_ref().map(|x| (x.listen, x.public_url.clone(), x.integration_name.clone(), x.link_ttl));
    format!("{connect:?} {keys:?}")
}

/// What the upstream clients are built from: same key, same pools.
fn upstreams_key(c: &Config) -> String {
    // Environment configs hold URLs and paths only, never a secret.
    let l = &c.limits;
    format!(
        "{:?} {:?} {:?} {:?}",
        c.environments, l.upstream_connect_timeout, l.upstream_timeout, l.upstream_idle_timeout
    )
}

pub fn serve_options(c: &Config) -> ServeOptions {
    ServeOptions {
        header_read_timeout: c.limits.header_read_timeout,
        idle_timeout: c.limits.idle_timeout,
        drain_timeout: c.limits.drain_timeout,
        max_header_bytes: c.limits.max_header_bytes,
        response_write_timeout: c.limits.response_write_timeout,
        max_connections: c.limits.max_connections,
    }
}

#[derive(Debug)]
struct Loaded {
    /// The config serving now: installs rebuild the routing table from it.
    config: Arc<Config>,
    fixed: Fixed,
    upstreams_key: String,
    upstreams: Upstreams,
    watched: Vec<PathBuf>,
    /// The watched files' fingerprint when a reload last read them (by
    /// any cause: the watcher, SIGHUP, the API), so the watcher does not
    /// reload again what another reload already read.
    seen: [u8; 32],
}

#[derive(Debug)]
pub struct Reloader {
    source: PathBuf,
    routes: SharedRoutes,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    serve_options: Arc<ArcSwap<ServeOptions>>,
    tls: Option<SharedTls>,
    /// The connect pages' TLS (`connect.tls`), re-read like `tls`.
    connect_tls: Option<SharedTls>,
    /// Held for the whole reload: two reloads never interleave.
    loaded: Mutex<Loaded>,
    /// The credential check of the routing table now serving, and its task
    /// (one per table: a new one replaces it).
    checked: std::sync::Mutex<(watch::Receiver<Option<Summary>>, tokio::task::AbortHandle)>,
    stop: watch::Receiver<bool>,
    /// Tenants installs from Pleo made, built into every routing table.
    installs: Option<Arc<Installs>>,
}

/// Whether a config (with its installs) has managed OAuth tenants: their
/// rotated tokens need the file store's directory, locked.
pub fn has_managed_oauth(config: &Config) -> bool {
    config.tenants.values().any(|t| matches!(t.auth, AuthConfig::OAuth2Managed { .. }))
        || config.apps.values().any(|a| a.model() == crate::config::AuthModel::OAuth2)
}

impl Reloader {
    #[allow(clippy::too_many_arguments)] // each is one shared piece of the running gateway
    pub fn new(
        config: &Config,
        upstreams: Upstreams,
        routes: SharedRoutes,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        serve_options: Arc<ArcSwap<ServeOptions>>,
        tls: Option<SharedTls>,
        stop: watch::Receiver<bool>,
    ) -> Reloader {
        let checked = key_checks::spawn(routes.load_full(), routes.clone(), metrics.clone(), stop.clone(), true);
        Reloader {
            source: config.source.clone(),
            routes,
            sessions,
            metrics,
            serve_options,
            tls,
            connect_tls: None,
            loaded: Mutex::new(Loaded {
                config: Arc::new(config.clone()),
                fixed: Fixed::of(config),
                upstreams_key: upstreams_key(config),
                upstreams,
                watched: config.watched_files.clone(),
                seen: [0; 32],
            }),
            checked: std::sync::Mutex::new(checked),
            stop,
            installs: None,
        }
    }

    /// Installs from Pleo: their tenants join every routing table, and an
    /// install rebuilds the table (`rebuild`).
    pub fn with_installs(mut self, installs: Arc<Installs>) -> Reloader {
        self.installs = Some(installs);
        self
    }

    fn install_records(&self) -> Arc<Vec<Arc<crate::state::InstallRecord>>> {
        self.installs.as_ref().map(|i| i.records()).unwrap_or_default()
    }

    /// Builds the routing table again from the config serving now and the
    /// installs as they are now (after an install or uninstall). Requests in
    /// flight finish on the table they started with.
    pub async fn rebuild(&self) {
        let loaded = self.loaded.lock().await;
        let records = self.install_records();
        let previous = self.routes.load_full();
        let routes = Arc::new(Routes::build_with(
            &loaded.config,
            &loaded.upstreams,
            &self.metrics,
            &self.sessions,
            Some(&previous),
            &records,
            // The table serving was built from `loaded` too: both rebuild
            // and reload hold its lock while they build and store.
            true,
        ));
        self.routes.store(routes.clone());
        let next = key_checks::spawn(routes, self.routes.clone(), self.metrics.clone(), self.stop.clone(), false);
        std::mem::replace(&mut *self.checked.lock().expect("reloader lock"), next).1.abort();
        self.retire(&loaded.config, &records);
    }

    /// Sessions of tenants that are no longer managed OAuth tenants stop refreshing.
    fn retire(&self, config: &Config, records: &[Arc<crate::state::InstallRecord>]) {
        let installed: std::collections::HashSet<&str> = records
            .iter()
            .filter(|r| {
                r.is_installed()
                    && config
                        .apps
                        .get(&*r.app)
                        .is_some_and(|a| a.model() == crate::config::AuthModel::OAuth2 && a.model() == r.model)
            })
            .map(|r| &*r.tenant)
            .collect();
        self.sessions.retire_all_but(|t| {
            config.tenants.get(t).is_some_and(|t| matches!(t.auth, AuthConfig::OAuth2Managed { .. }))
                || installed.contains(t)
        });
    }

    /// The connect listener's TLS, renewed on reload like `listen`'s.
    pub fn with_connect_tls(mut self, connect_tls: Option<SharedTls>) -> Reloader {
        self.connect_tls = connect_tls;
        self
    }

    /// Reads the config file again and applies it, or keeps the old one.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let mut loaded = self.loaded.lock().await;
        let result = self.apply(&mut loaded).await;
        loaded.seen = fingerprint(&loaded.watched).await;
        match &result {
            Ok(tenants) => {
                self.metrics.config_reloads_total.with_label_values(&["success"]).inc();
                self.metrics.config_loaded(true);
                tracing::info!(config = %self.source.display(), tenants, "config reloaded");
            }
            Err(e) => {
                self.metrics.config_reloads_total.with_label_values(&["failure"]).inc();
                self.metrics.config_loaded(false);
                tracing::error!(config = %self.source.display(), error = %e, "config reload failed; the previous config keeps serving");
            }
        }
        result.map(|_| ())
    }

    async fn apply(&self, loaded: &mut Loaded) -> Result<usize, ReloadError> {
        let source = self.source.clone();
        // Reading secret files and env is blocking work.
        let config = tokio::task::spawn_blocking(move || Config::load(&source))
            .await
            .map_err(|e| ConfigError::io(&self.source, &e.to_string()))??;
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let fixed = Fixed::of(&config);
        if fixed != loaded.fixed {
            tracing::warn!(
                "listen, admin_listen, workers, sandbox, state_dir, store, connect, telemetry, the encryption keys \
                 and whether listen uses TLS only change with a restart; keeping the running values, applying the rest"
            );
        }
        // Everything that can fail, before anything changes. The first
        // managed OAuth tenant may arrive with this reload: its rotated
        // tokens need the (running) state_dir writable before it refreshes.
        let file_store = loaded.fixed.store == "file";
        if file_store && has_managed_oauth(&config) {
            let dir = loaded.fixed.state_dir.clone();
            self.sessions.lock_state(&dir).map_err(|source| ReloadError::StateDir { path: dir, source })?;
        }
        let key = upstreams_key(&config);
        let upstreams = if key == loaded.upstreams_key { loaded.upstreams.clone() } else { Upstreams::build(&config)? };
        // Certificate and key are read again: a renewed certificate is
        // served to new handshakes; open connections keep theirs.
        let server_tls = match (&self.tls, &config.tls) {
            (Some(_), Some(files)) => Some(tls::server_config(files)?),
            _ => None,
        };
        let connect_tls = match (&self.connect_tls, config.connect.as_ref().and_then(|c| c.tls.as_ref())) {
            (Some(_), Some(files)) => Some(tls::server_config(files)?),
            _ => None,
        };

        // From here on nothing fails.
        if let Some(installs) = &self.installs {
            installs.configure(&config, &upstreams);
        }
        let records = self.install_records();
        let previous = self.routes.load_full();
        let routes = Arc::new(Routes::build_with(
            &config,
            &upstreams,
            &self.metrics,
            &self.sessions,
            Some(&previous),
            &records,
            false,
        ));
        self.routes.store(routes.clone());
        let next = key_checks::spawn(routes, self.routes.clone(), self.metrics.clone(), self.stop.clone(), false);
        std::mem::replace(&mut *self.checked.lock().expect("reloader lock"), next).1.abort();
        self.retire(&config, &records);
        self.serve_options.store(Arc::new(serve_options(&config)));
        if let (Some(shared), Some(server_tls)) = (&self.tls, server_tls) {
            shared.store(Arc::new(server_tls));
        }
        if let (Some(shared), Some(connect_tls)) = (&self.connect_tls, connect_tls) {
            shared.store(Arc::new(connect_tls));
        }
        // The files served from now (TLS on listen is fixed at start, its files are not).
        let listen_files = self.tls.as_ref().and(config.tls.as_ref());
        let connect_files = self.connect_tls.as_ref().and(config.connect.as_ref().and_then(|c| c.tls.as_ref()));
        self.metrics.set_certificate_expiry(&tls::expiries(listen_files, connect_files));
        loaded.upstreams_key = key;
        loaded.upstreams = upstreams;
        loaded.watched = config.watched_files.clone();
        let tenants = config.tenants.len();
        loaded.config = Arc::new(config);
        Ok(tenants)
    }

    /// Checks every API-key tenant of the table now serving with Pleo now
    /// (`POST /api/checks`), instead of on its schedule; `checked` then
    /// waits for this pass.
    pub async fn recheck_all(&self) -> Summary {
        let _reload = self.loaded.lock().await;
        let routes = self.routes.load_full();
        let next = key_checks::spawn(routes, self.routes.clone(), self.metrics.clone(), self.stop.clone(), true);
        std::mem::replace(&mut *self.checked.lock().expect("reloader lock"), next).1.abort();
        drop(_reload);
        self.checked().await
    }

    /// The result of the first credential check of the routing table now
    /// serving (waits for it).
    pub async fn checked(&self) -> Summary {
        let mut rx = self.checked.lock().expect("reloader lock").0.clone();
        let summary = match rx.wait_for(Option::is_some).await {
            Ok(s) => s.clone().unwrap_or_default(),
            Err(_) => Summary::default(),
        };
        summary
    }

    /// Polls the config's files and reloads when one of them changes.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        {
            let mut loaded = self.loaded.lock().await;
            loaded.seen = fingerprint(&loaded.watched).await;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
            let (files, seen) = {
                let loaded = self.loaded.lock().await;
                (loaded.watched.clone(), loaded.seen)
            };
            let now = fingerprint(&files).await;
            if now == seen {
                continue;
            }
            tracing::info!("a config file changed; reloading");
            // A broken edit is reported once, not every second: the next
            // change to any file tries again.
            let _ = self.reload().await;
        }
    }
}

/// A digest of the files' identity: inode, size and modification time
/// (nanoseconds). A stat per file, not a read, so a config naming thousands
/// of secret files stays cheap to watch; an edit, a rename over the file or
/// Kubernetes swapping a mounted volume's symlink all change it. A missing
/// file counts as a state too.
async fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        match tokio::fs::metadata(f).await {
            Ok(m) => {
                h.update([1]);
                for n in [m.dev(), m.ino(), m.len(), m.mtime() as u64, m.mtime_nsec() as u64] {
                    h.update(n.to_le_bytes());
                }
            }
            Err(_) => h.update([0]),
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FileStore;
    use std::path::Path;

    const TENANT: &str = "environments:\n  staging: { base_url: \"http://127.0.0.1:9\" }\ntenants:\n  t1:\n    environment: staging\n    auth: { model: integrated_api_key, key: ik_unit_0123456789abcdef }\n";

    fn config(text: &str) -> Config {
        Config::from_yaml(text, Path::new("/tmp/unit.yaml")).unwrap()
    }

    #[test]
    fn what_needs_a_restart_is_told_apart_from_what_a_reload_applies() {
        let base = config(TENANT);
        let more_tenants = config(&format!("{TENANT}  t2:\n    environment: staging\n    auth: {{ model: standalone_api_key, key: sk_unit_0123456789abcdef }}\n"));
        let other_port = config(&format!("listen: 127.0.0.1:8081\n{TENANT}"));
        let slower = config(&format!("limits: {{ upstream_timeout: 90s }}\n{TENANT}"));
        assert_eq!(Fixed::of(&base), Fixed::of(&more_tenants), "tenants are applied by a reload");
        assert_ne!(Fixed::of(&base), Fixed::of(&other_port), "a listen address needs a restart");
        // Upstream pools are kept across a reload unless what they are built from changed.
        assert_eq!(upstreams_key(&base), upstreams_key(&more_tenants));
        assert_ne!(upstreams_key(&base), upstreams_key(&slower));
    }

    #[test]
    fn the_upstreams_key_never_holds_a_secret() {
        let c = config(TENANT);
        assert!(!upstreams_key(&c).contains("ik_unit_0123456789abcdef"));
    }

    #[tokio::test]
    async fn the_fingerprint_follows_edits_renames_and_removals_but_not_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        let files = [a.clone(), b.clone()];
        let first = fingerprint(&files).await;
        let _ = std::fs::read(&a).unwrap();
        assert_eq!(fingerprint(&files).await, first, "reading changes nothing");
        // A same-size edit still moves the modification time or the inode.
        let swapped = dir.path().join("a.key.new");
        std::fs::write(&swapped, "ONE").unwrap();
        std::fs::rename(&swapped, &a).unwrap();
        let renamed = fingerprint(&files).await;
        assert_ne!(renamed, first, "a file renamed over the watched one");
        std::fs::remove_file(&b).unwrap();
        assert_ne!(fingerprint(&files).await, renamed, "a removed file");
    }

    /// A reloader over a config file in a temporary directory, serving it.
    async fn reloader(text: &str) -> (Reloader, SharedRoutes, prometheus::Registry, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(Metrics::register(&registry, true).unwrap());
        let upstreams = Upstreams::build(&config).unwrap();
        let (_stop, stopped) = watch::channel(false);
        let store = Arc::new(FileStore::new(dir.path().join("state")));
        let sessions = Arc::new(Sessions::new(store, metrics.clone(), stopped.clone()));
        let routes: SharedRoutes =
            Arc::new(ArcSwap::from_pointee(Routes::build(&config, &upstreams, &metrics, &sessions)));
        let options = Arc::new(ArcSwap::from_pointee(serve_options(&config)));
        let r = Reloader::new(&config, upstreams, routes.clone(), sessions, metrics, options, None, stopped);
        (r, routes, registry, dir)
    }

    fn reloads(registry: &prometheus::Registry, result: &str) -> f64 {
        crate::proxy::routes::counter(registry, "pleo_gateway_config_reloads_total", &[("result", result)])
    }

    #[tokio::test]
    async fn a_bad_config_keeps_the_old_routes_and_a_good_one_swaps_them_at_once() {
        let (r, routes, registry, dir) = reloader(TENANT).await;
        let before = routes.load_full();
        std::fs::write(dir.path().join("gateway.yaml"), format!("{TENANT}    bogus: 1\n")).unwrap();
        let err = r.reload().await.unwrap_err();
        assert!(matches!(err, ReloadError::Config(_)), "{err}");
        assert!(Arc::ptr_eq(&before, &routes.load_full()), "the old routing table keeps serving");
        assert_eq!((reloads(&registry, "failure"), reloads(&registry, "success")), (1.0, 0.0));

        let two = format!("{TENANT}  t2:\n    environment: staging\n    auth: {{ model: standalone_api_key, key: sk_unit_0123456789abcdef }}\n");
        std::fs::write(dir.path().join("gateway.yaml"), two).unwrap();
        r.reload().await.unwrap();
        let after = routes.load_full();
        assert!(after.tenants.contains_key("t2"), "the new tenant is routed");
        // The unchanged tenant keeps its upstream pool: nothing was rebuilt for it.
        assert!(Arc::ptr_eq(&after.tenants["t1"].upstream, &before.tenants["t1"].upstream));
        assert_eq!(reloads(&registry, "success"), 1.0);
    }
}
