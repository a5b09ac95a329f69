//! Credential checks over a routing table: every API-key tenant's key and
//! installation (`credential::check`) at start and after every reload (the
//! new table's tenants are checked afresh), at most [`CONCURRENCY`] at a
//! time; tenants that are not connected are checked again every
//! [`RECHECK`], so a key the customer re-enables, or a Pleo outage that
//! ends, heals itself. Counts `pleo_gateway_installations{status}`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::config::AuthModel;
use crate::credential::check::{check_key_interlocked, describe, CheckState, Detail};
use crate::metrics::Metrics;
use crate::routes::{Routes, SharedRoutes, Tenant};

/// How often tenants that are not connected are checked again.
pub const RECHECK: Duration = Duration::from_secs(60);
/// Checks in flight at once (a config may have thousands of tenants).
const CONCURRENCY: usize = 16;

/// What one pass over a routing table found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub connected: usize,
    /// Tenant names with what went wrong.
    pub failed: Vec<(String, String)>,
    /// Connected tenants with something to say (installation not active yet).
    pub notes: Vec<(String, String)>,
}

fn is_api_key(t: &Tenant) -> bool {
    matches!(t.model, AuthModel::IntegratedApiKey | AuthModel::StandaloneApiKey)
}

/// Checks `routes`' API-key tenants now and then keeps re-checking the ones
/// not connected, until `routes` is replaced by a reload or `stop` is set.
/// The receiver gets the first pass's summary.
pub fn spawn(
    routes: Arc<Routes>,
    shared: SharedRoutes,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Option<Summary>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let first = pass(&routes, |_| true).await;
        count_installations(&routes, &metrics);
        log(&first);
        let _ = tx.send(Some(first));
        loop {
            // Look every second whether a reload replaced these routes, so
            // an old table is not kept alive for a whole RECHECK.
            for _ in 0..RECHECK.as_secs() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                if !Arc::ptr_eq(&shared.load(), &routes) {
                    return;
                }
            }
            let again = pass(&routes, |t| t.check.state() != CheckState::Connected).await;
            count_installations(&routes, &metrics);
            if !again.failed.is_empty() || again.connected > 0 {
                log(&again);
            }
        }
    });
    rx
}

/// `pleo_gateway_installations{status}`: the API-key tenants by what Pleo
/// said about their installation.
fn count_installations(routes: &Routes, metrics: &Metrics) {
    let seen: Vec<crate::config::model::InstallationStatus> =
        routes.tenants.values().filter_map(|t| t.check.detail().installation).collect();
    metrics.set_installations(|s| seen.iter().filter(|x| **x == s).count() as i64);
}

fn log(s: &Summary) {
    for (tenant, why) in &s.failed {
        tracing::warn!(tenant = %tenant, "credential check: {why}");
    }
    for (tenant, note) in &s.notes {
        tracing::info!(tenant = %tenant, "credential check: {note}");
    }
    tracing::info!(connected = s.connected, failed = s.failed.len(), "credential check of API-key tenants done");
}

/// Checks the API-key tenants `which` selects, at most CONCURRENCY at a time.
pub async fn pass(routes: &Routes, which: impl Fn(&Tenant) -> bool) -> Summary {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for t in routes.tenants.values().filter(|t| is_api_key(t) && which(t)) {
        let (t, permits) = (t.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (state, detail) = check(&t).await;
            t.check.set(state, detail.clone());
            (t.id.to_string(), state, detail)
        });
    }
    let mut summary = Summary::default();
    while let Some(Ok((tenant, state, detail))) = tasks.join_next().await {
        match state {
            CheckState::Connected => {
                summary.connected += 1;
                if let Some(note) = detail.note {
                    summary.notes.push((tenant, note));
                }
            }
            _ => summary.failed.push((tenant, describe(state, &detail))),
        }
    }
    summary.failed.sort();
    summary.notes.sort();
    summary
}

async fn check(t: &Tenant) -> (CheckState, Detail) {
    let Some(authorization) = t.credential.key_authorization() else {
        let reason = "not connected yet: send a connect link".to_string();
        return (CheckState::Pending, Detail { reason: Some(reason), ..Detail::default() });
    };
    let other = t.interlock.environment;
    check_key_interlocked(&authorization, &t.upstream, t.environment, &t.interlock, other).await
}
