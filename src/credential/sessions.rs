//! The runtime credentials of a gateway: the OAuth sessions, one per
//! managed-OAuth tenant, and the slots of keys made on connect links. They
//! live here rather than in the routing table so that they outlive a config
//! swap: a session holds the newest refresh token, and two sessions for one
//! tenant would refresh twice and replay a token; a reload must not
//! disconnect a customer's key.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::{broadcast, watch};

use super::key_slot::KeySlot;
use super::refresh::{Common, OAuthSession, SessionConfig};
use super::token_state::Status;
use crate::metrics::Metrics;
use crate::state::{StateLock, TokenStore};

#[derive(Debug)]
pub struct Sessions {
    map: Arc<DashMap<Arc<str>, Arc<OAuthSession>>>,
    /// What the sessions share (the store, refresh metrics, the steps).
    common: Arc<Common>,
    stop: watch::Receiver<bool>,
    /// This process's lock on `state_dir`, taken once there is a managed
    /// OAuth tenant and given back after the last refresh at shutdown.
    state_lock: StateLock,
    /// Connected API keys (`source: connection`), by tenant.
    keys: DashMap<Box<str>, Arc<KeySlot>>,
    /// False for a dry run (`explain`): sessions exist but never refresh.
    drive: bool,
    /// Bounds the background refreshes spawned at once. Apart from `steps`:
    /// a background refresh holds its turn while its step waits, so one
    /// semaphore for both could deadlock.
    turns: Arc<tokio::sync::Semaphore>,
    /// The schedule of background refreshes, started with the first session.
    schedule: std::sync::OnceLock<super::schedule::Wakes>,
}

impl Sessions {
    /// Sessions saving to `store`; their background refreshes end when `stop` turns true.
    /// With a shared store, changes other replicas make are taken up as
    /// they are announced (needs a tokio runtime then).
    pub fn new(store: Arc<dyn TokenStore>, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Sessions {
        let sessions = Sessions::with(store, &metrics, stop, true);
        if let Some(changes) = sessions.common.store().changes() {
            let (store, stop) = (sessions.common.store().clone(), sessions.stop.clone());
            tokio::spawn(follow(changes, sessions.map.clone(), store, stop));
        }
        sessions
    }

    /// Sessions that never load, refresh or follow anything: for building a
    /// routing table that only answers questions (`explain`).
    pub fn offline(store: Arc<dyn TokenStore>, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Sessions {
        Sessions::with(store, &metrics, stop, false)
    }

    fn with(store: Arc<dyn TokenStore>, metrics: &Metrics, stop: watch::Receiver<bool>, drive: bool) -> Sessions {
        let steps = Arc::new(tokio::sync::Semaphore::new(super::refresh::REFRESH_STEPS));
        Sessions {
            map: Arc::new(DashMap::new()),
            common: Common::new(store, metrics.refresh_metrics(), steps),
            stop,
            state_lock: StateLock::default(),
            keys: DashMap::new(),
            drive,
            turns: Arc::new(tokio::sync::Semaphore::new(super::refresh::REFRESH_STEPS)),
            schedule: std::sync::OnceLock::new(),
        }
    }

    pub fn store(&self) -> &Arc<dyn TokenStore> {
        self.common.store()
    }

    /// The tenant's connected-key slot (empty until a connection is made).
    pub fn key_slot(&self, tenant: &str) -> Arc<KeySlot> {
        if let Some(slot) = self.keys.get(tenant) {
            return slot.clone();
        }
        self.keys.entry(tenant.into()).or_default().clone()
    }

    /// Empties the key slots of tenants `keep` does not name (disconnected elsewhere).
    pub fn clear_key_slots_except(&self, keep: impl Fn(&str) -> bool) {
        for entry in self.keys.iter().filter(|e| !keep(e.key())) {
            entry.clear();
        }
    }

    /// The OAuth session of `tenant`, if it is a managed OAuth tenant.
    pub fn session(&self, tenant: &str) -> Option<Arc<OAuthSession>> {
        self.map.get(tenant).map(|s| s.clone())
    }

    /// The tenant's session, started (and put on the schedule of background refreshes) on
    /// first use; on a reload, the same session with the new settings. Must
    /// be called inside a tokio runtime.
    pub fn get_or_start(&self, cfg: SessionConfig) -> Arc<OAuthSession> {
        if let Some(session) = self.map.get(&*cfg.tenant).map(|s| s.clone()) {
            session.reconfigure(cfg);
            return session;
        }
        let session =
            self.map.entry(cfg.tenant.clone()).or_insert_with(|| OAuthSession::new(cfg, self.common.clone())).clone();
        if self.drive {
            let wakes = self.schedule.get_or_init(|| super::schedule::spawn(self.turns.clone(), self.stop.clone()));
            session.drive(wakes.clone());
        }
        session
    }

    /// After a reload: stops the background refresh of tenants that are no
    /// longer managed OAuth tenants. Their sessions stay, retired, so a
    /// tenant that comes back continues its own token chain.
    pub fn retire_all_but(&self, keep: impl Fn(&str) -> bool) {
        for entry in self.map.iter() {
            if !keep(entry.key()) && !entry.is_retired() {
                tracing::info!(tenant = %entry.key(), "OAuth tenant removed from the config; its token state is kept");
                entry.retire();
            }
        }
    }

    /// Checks `state_dir` and locks it for this process (once; see [`StateLock`]).
    pub fn lock_state(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.state_lock.acquire(dir)
    }

    /// Shutdown: no refresh starts any more, and those in flight finish and
    /// store their rotated tokens, waiting at most `bound` (a token call is
    /// bounded by `limits.token_timeout`; saving takes milliseconds).
    pub async fn finish_all(&self, bound: std::time::Duration) {
        let sessions: Vec<Arc<OAuthSession>> = self.map.iter().map(|e| e.value().clone()).collect();
        // Stop them all first; then wait for each (they run concurrently).
        for s in &sessions {
            s.stop_refreshing();
        }
        let all = async {
            for s in &sessions {
                s.finish().await;
            }
        };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::error!("an OAuth refresh did not finish before shutdown; its tenant may need a new consent");
        }
        self.state_lock.release();
    }

    /// Appends `pleo_gateway_token_expiry_seconds` and
    /// `pleo_gateway_token_refresh_failing` for each managed OAuth tenant to
    /// a scrape (`metrics::TenantGauge`: nothing is kept between scrapes).
    pub fn write_token_gauges(&self, out: &mut Vec<u8>) {
        let now = Instant::now();
        let live = || self.map.iter().filter(|e| !e.is_retired());
        let rows: Vec<(Arc<str>, f64, bool)> = live()
            .map(|entry| {
                let current = entry.current();
                let left = current.expires_at.map_or(0.0, |e| e.saturating_duration_since(now).as_secs_f64());
                let failing =
                    matches!(current.status, Status::RefreshFailing | Status::PersistFailed | Status::StoreUnavailable);
                (entry.key().clone(), left, failing)
            })
            .collect();
        crate::metrics::TOKEN_EXPIRY.write(out, rows.iter().map(|(t, left, _)| (&**t, *left)));
        crate::metrics::TOKEN_REFRESH_FAILING
            .write(out, rows.iter().map(|(t, _, failing)| (&**t, if *failing { 1.0 } else { 0.0 })));
    }
}

/// How long announced changes are gathered before one read takes them all up.
const FOLLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(20);

/// Hands the announced changes to their tenants' sessions: gathered for
/// FOLLOW_BATCH and read in one round trip (a refresh storm announces
/// hundreds a second). A lagging receiver re-reads every tenant.
async fn follow(
    mut changes: broadcast::Receiver<Box<str>>,
    map: Arc<DashMap<Arc<str>, Arc<OAuthSession>>>,
    store: Arc<dyn TokenStore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut names: Vec<Box<str>> = tokio::select! {
            c = changes.recv() => match c {
                Ok(tenant) => vec![tenant],
                Err(broadcast::error::RecvError::Lagged(_)) => map.iter().map(|e| (**e.key()).into()).collect(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = stop.changed() => return,
        };
        tokio::time::sleep(FOLLOW_BATCH).await;
        loop {
            match changes.try_recv() {
                Ok(tenant) => names.push(tenant),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    names = map.iter().map(|e| (**e.key()).into()).collect();
                }
                Err(_) => break,
            }
        }
        names.sort();
        names.dedup();
        // Epochs before the read: a session that moved on since ignores it.
        let mut sessions: std::collections::HashMap<Box<str>, (Arc<OAuthSession>, u64)> =
            names.iter().filter_map(|n| map.get(&**n).map(|s| (n.clone(), (s.clone(), s.epoch())))).collect();
        let Ok(stored) = store.load_many(&names).await else { continue };
        for (tenant, chain) in stored {
            if let Some((session, epoch)) = sessions.remove(&tenant) {
                tokio::spawn(async move { session.adopt(chain, epoch).await });
            }
        }
    }
}
