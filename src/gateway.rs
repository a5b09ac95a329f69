//! Start and stop a whole gateway: config -> routes -> listeners. `main` uses
//! it, and so do the integration tests, which run gateways in-process on
//! port 0 with a registry of their own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::{Config, Environment};
use crate::credential::Sessions;
use crate::key_checks::Summary;
use crate::listener;
use crate::metrics::Metrics;
use crate::onboarding::installs::Installs;
use crate::onboarding::pages::Portal;
use crate::onboarding::Onboarding;
use crate::proxy::routes::{Routes, SharedRoutes};
use crate::proxy::stack;
use crate::reload::{self, ReloadError, Reloader};
use crate::sandbox::{Sandbox, SandboxSpec};
use crate::tls::{self, SharedTls, TlsError};
use crate::upstream::{UpstreamError, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--strict: {} tenant credential(s) did not check out: {}", .0.len(), strict_list(.0))]
    Strict(Vec<(String, String)>),
    #[error("store: {0}")]
    Store(String),
    #[error("state_dir {path} cannot hold OAuth token state: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn strict_list(failed: &[(String, String)]) -> String {
    failed.iter().map(|(t, why)| format!("{t}: {why}")).collect::<Vec<_>>().join("; ")
}

/// A running gateway. Dropping it does not stop it: call `shutdown`.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The connect pages' listener, when `connect` is configured.
    pub connect_addr: Option<SocketAddr>,
    pub sandboxes: BTreeMap<Environment, Sandbox>,
    pub metrics: Arc<Metrics>,
    pub admin: Arc<AdminState>,
    pub sessions: Arc<Sessions>,
    pub onboarding: Arc<Onboarding>,
    pub installs: Arc<Installs>,
    pub reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// How long shutdown waits for an OAuth refresh in flight.
    refresh_bound: std::time::Duration,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
}

pub async fn start(config: &Config) -> Result<Running, StartError> {
    start_with(config, false).await
}

/// `strict`: every API-key tenant's credential must check out with Pleo
/// before the gateway serves, or it does not start.
pub async fn start_with(config: &Config, strict: bool) -> Result<Running, StartError> {
    let registry = Registry::new();
    let metrics = Arc::new(Metrics::register(&registry, config.per_tenant_metrics)?);
    // The span counters are the process's (one exporter per process).
    crate::telemetry::stats::register(&registry)?;
    let upstreams = Upstreams::build(config)?;
    let (stop, stopped) = watch::channel(false);
    let store = crate::state::open(config, &metrics, stopped.clone()).map_err(StartError::Store)?;
    let sessions = Arc::new(Sessions::new(store.clone(), metrics.clone(), stopped.clone()));
    let connections = Arc::new(Onboarding::new(config, store, sessions.clone(), metrics.onboardings_total.clone()));
    // Keys customers connected: in service before the first request. A
    // store that does not answer leaves those tenants not connected (503)
    // until it does; the shared store is read again every poll interval.
    match connections.load().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(connections = n, "connected API keys loaded"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read connected API keys; their tenants answer 503 until the store does")
        }
    }
    if let crate::config::StoreConfig::Postgres(pg) = &config.store {
        connections.spawn_follow(pg.poll_interval, stopped.clone());
    }
    // Rotated OAuth tokens must be writable before the first refresh needs
    // it, and no other process may refresh the same chains (the shared
    // store has its own lock per refresh instead).
    let file_store = matches!(config.store, crate::config::StoreConfig::File);
    if file_store && reload::has_managed_oauth(config) {
        sessions
            .lock_state(&config.state_dir)
            .map_err(|source| StartError::StateDir { path: config.state_dir.clone(), source })?;
    }
    // Tenants installs made: in the first routing table, so they serve from
    // the first request and the first credential check covers them. A store
    // that does not answer leaves them unknown until it announces a change.
    let records: Vec<Arc<crate::state::InstallRecord>> = match connections.store.installs(&[]).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read installs; their tenants are unknown until the store answers");
            Vec::new()
        }
    };
    if !records.is_empty() {
        tracing::info!(installs = records.len(), "installed tenants loaded");
    }
    let routes: SharedRoutes = Arc::new(ArcSwap::from_pointee(Routes::build_with(
        config, &upstreams, &metrics, &sessions, None, &records, false,
    )));
    let installs = Arc::new(Installs::new(connections.clone(), sessions.clone(), routes.clone(), &metrics));
    installs.configure(config, &upstreams);
    installs.set_records(records);

    // The built-in Pleo stand-in comes up first, so the first request finds it.
    let mut sandboxes = BTreeMap::new();
    for (env, addr) in &config.sandbox {
        let listener = bind("sandbox", *addr).await?;
        let sandbox = Sandbox::spawn(listener, SandboxSpec::for_gateway(config, *env), None);
        tracing::info!(environment = env.as_str(), addr = %sandbox.addr, "sandbox (offline Pleo stand-in) listening");
        sandboxes.insert(*env, sandbox);
    }

    let gateway_listener = bind("listen", config.listen).await?;
    let connect_listener = match &config.connect {
        Some(c) => Some((bind("connect.listen", c.listen).await?, c.clone())),
        None => None,
    };
    let admin_listener = bind("admin_listen", config.admin_listen).await?;
    let addr = gateway_listener.local_addr().map_err(|source| StartError::Bind {
        what: "listen",
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind {
        what: "admin_listen",
        addr: config.admin_listen,
        source,
    })?;

    let in_flight = crate::share::InFlightCount::default();
    let admin = Arc::new(AdminState {
        registry,
        routes: routes.clone(),
        sessions: sessions.clone(),
        ready: Default::default(),
        in_flight: in_flight.clone(),
        in_flight_gauge: metrics.in_flight.clone(),
        connections: connections.clone(),
        installs: installs.clone(),
        migration: metrics.migration.clone(),
        metrics: metrics.clone(),
    });
    let options = Arc::new(ArcSwap::from_pointee(reload::serve_options(config)));
    let tls: Option<SharedTls> = match &config.tls {
        Some(files) => Some(Arc::new(ArcSwap::from_pointee(tls::server_config(files)?))),
        None => None,
    };
    let connect_tls: Option<SharedTls> = match config.connect.as_ref().and_then(|c| c.tls.as_ref()) {
        Some(files) => Some(Arc::new(ArcSwap::from_pointee(tls::server_config(files)?))),
        None => None,
    };
    metrics.set_certificate_expiry(&tls::expiries(
        config.tls.as_ref(),
        config.connect.as_ref().and_then(|c| c.tls.as_ref()),
    ));
    metrics.config_loaded(true);
    let reloader = Arc::new(
        Reloader::new(
            config,
            upstreams,
            routes.clone(),
            sessions.clone(),
            metrics.clone(),
            options.clone(),
            tls.clone(),
            stopped.clone(),
        )
        .with_connect_tls(connect_tls.clone())
        .with_installs(installs.clone()),
    );
    // An install rebuilds the routing table through the reloader, which
    // holds the config and the upstreams (weakly: the reloader owns installs).
    let weak = Arc::downgrade(&reloader);
    installs.set_rebuild(Arc::new(move || {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(r) = weak.upgrade() {
                r.rebuild().await;
            }
        })
    }));
    installs.spawn_follow(stopped.clone());
    if strict {
        let checked = reloader.checked().await;
        if !checked.failed.is_empty() {
            let _ = stop.send(true);
            return Err(StartError::Strict(checked.failed));
        }
    }
    let mut connect_addr = None;
    let mut connect_task = None;
    if let Some((listener, c)) = connect_listener {
        connect_addr = listener.local_addr().ok();
        let portal = Arc::new(Portal {
            routes: routes.clone(),
            connections: connections.clone(),
            sessions: sessions.clone(),
            installs: installs.clone(),
            integration: c.integration_name.clone(),
            public_url: c.public_url.clone(),
            hsts: c.tls.is_some(),
        });
        tracing::info!(addr = ?connect_addr, public_url = %c.public_url, "connect pages listening");
        connect_task = Some(tokio::spawn(listener::serve(
            listener,
            crate::onboarding::pages::service(portal),
            options.clone(),
            connect_tls,
            listener_metrics(&metrics, "connect"),
            stopped.clone(),
        )));
    }
    let service = stack::build(routes, metrics.clone(), in_flight);
    let mut tasks = vec![
        tokio::spawn(listener::serve(
            gateway_listener,
            service,
            options.clone(),
            tls,
            listener_metrics(&metrics, "gateway"),
            stopped.clone(),
        )),
        tokio::spawn(listener::serve(
            admin_listener,
            admin::service(admin.clone()),
            options,
            None,
            listener_metrics(&metrics, "admin"),
            stopped.clone(),
        )),
        tokio::spawn(reloader.clone().watch(stopped)),
    ];
    tasks.extend(connect_task);
    admin.ready.store(true, Ordering::Release);
    tracing::info!(%addr, %admin_addr, tenants = config.tenants.len(), "pleo-gateway listening");
    let refresh_bound = config.limits.token_timeout + std::time::Duration::from_secs(2);
    Ok(Running {
        addr,
        admin_addr,
        connect_addr,
        sandboxes,
        metrics,
        admin,
        sessions,
        onboarding: connections,
        installs,
        reloader,
        stop,
        tasks,
        refresh_bound,
    })
}

impl Running {
    /// Reads the config file again and swaps it in (SIGHUP does this), or
    /// keeps the running one and says why.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload().await
    }

    /// Checks every API-key tenant with Pleo now (a reload checks only new
    /// and changed keys) and returns what it found.
    pub async fn recheck_all(&self) -> Summary {
        self.reloader.recheck_all().await
    }

    /// Waits for the credential check of the config now serving and returns what it found.
    pub async fn credential_check(&self) -> Summary {
        self.reloader.checked().await
    }

    /// Stops accepting, drains open connections (up to the drain timeout), then returns.
    pub async fn shutdown(self) {
        self.admin.ready.store(false, Ordering::Release);
        let _ = self.stop.send(true);
        // No OAuth refresh starts from now on; one in flight is finished and
        // stored while the connections drain.
        let refreshes = self.sessions.finish_all(self.refresh_bound);
        let connections = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        tokio::join!(refreshes, connections);
        for (_, s) in self.sandboxes {
            s.shutdown().await;
        }
    }
}

/// The series of one listener (`gateway`, `connect` or `admin`).
fn listener_metrics(metrics: &Metrics, name: &str) -> listener::ListenerMetrics {
    listener::ListenerMetrics {
        open: metrics.open_connections.with_label_values(&[name]),
        evicted: metrics.idle_connections_evicted.with_label_values(&[name]),
    }
}
