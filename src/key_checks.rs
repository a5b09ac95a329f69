//! Credential checks over a routing table: each API-key tenant's key and
//! installation (`credential::check`), at most [`CONCURRENCY`] at a time.
//!
//! - At start every tenant is checked; after a reload only the new and
//!   changed ones (a reload of 10,000 tenants with one changed asks Pleo
//!   once: the rest keep their check, see `Routes::build_after`).
//! - Tenants that are not connected are checked again every [`RECHECK`], so
//!   a key the customer re-enables, or a Pleo outage that ends, heals itself.
//! - Connected tenants are checked again on a slow schedule
//!   ([`CONNECTED_RECHECK`] plus a per-tenant spread of up to a third of it),
//!   at most [`RECHECK_RATE`] per second, so a revoked key or an installation
//!   that went inactive is noticed without bursts of calls to Pleo.
//! - An operator can ask for a check of every tenant now (`POST /api/checks`).
//!
//! Counts `pleo_gateway_installations{status}`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::config::AuthModel;
use crate::credential::check::{check_key_interlocked, describe, CheckState, Detail};
use crate::metrics::Metrics;
use crate::proxy::routes::{Routes, SharedRoutes, Tenant};

/// How often tenants that are not connected are checked again.
pub const RECHECK: Duration = Duration::from_secs(60);
/// Checks in flight at once (a config may have thousands of tenants).
const CONCURRENCY: usize = 16;
/// How often a connected tenant's key is checked again (plus its spread).
pub const CONNECTED_RECHECK: Duration = Duration::from_secs(30 * 60);
/// Scheduled re-checks of connected tenants per second, at most.
pub const RECHECK_RATE: u32 = 10;

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

/// Checks `routes`' API-key tenants that were never checked (all at start;
/// after a reload, the new and changed ones), then keeps re-checking as the
/// module says, until `routes` is replaced by a reload or `stop` is set.
/// The receiver gets the summary of the whole table after the first pass.
/// `all`: check every tenant now (an operator's `POST /api/checks`).
pub fn spawn(
    routes: Arc<Routes>,
    shared: SharedRoutes,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    all: bool,
) -> (watch::Receiver<Option<Summary>>, tokio::task::AbortHandle) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        // `all` (a start): every key in the config; installed keys keep the
        // check they had when installed (the schedule asks again later).
        let first = pass(&routes, |t| (all && t.install.is_none()) || t.check.checked_at().is_none()).await;
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
            scheduled(&routes, &mut stop).await;
            count_installations(&routes, &metrics);
            if !again.failed.is_empty() || again.connected > 0 {
                log(&again);
            }
        }
    });
    (rx, task.abort_handle())
}

/// The connected tenants whose last check is older than `CONNECTED_RECHECK`
/// plus their spread, one at a time at most `RECHECK_RATE` per second.
async fn scheduled(routes: &Routes, stop: &mut watch::Receiver<bool>) {
    let now = std::time::Instant::now();
    let due: Vec<&Arc<Tenant>> = routes
        .tenants
        .values()
        .filter(|t| is_api_key(t) && t.check.state() == CheckState::Connected)
        .filter(|t| t.check.checked_at().is_some_and(|at| now.duration_since(at) >= CONNECTED_RECHECK + spread(&t.id)))
        .collect();
    let pause = Duration::from_secs(1) / RECHECK_RATE;
    for t in due {
        let (state, detail) = check(t).await;
        if state != CheckState::Connected {
            tracing::warn!(tenant = %t.id, "scheduled credential check: {}", describe(state, &detail));
        }
        t.check.set(state, detail);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A tenant's fixed share of the spread: tenants started together are not
/// checked together again (a hash of the name, up to a third of the interval).
fn spread(tenant: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tenant.hash(&mut h);
    let third = CONNECTED_RECHECK.as_millis() as u64 / 3;
    Duration::from_millis(h.finish() % third.max(1))
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

/// Checks the API-key tenants `which` selects, at most CONCURRENCY at a
/// time, and sums up where every API-key tenant of the table stands.
pub async fn pass(routes: &Routes, which: impl Fn(&Tenant) -> bool) -> Summary {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for t in routes.tenants.values().filter(|t| is_api_key(t) && which(t)) {
        // The permit before the task: at most CONCURRENCY checks exist at
        // once, so 100,000 tenants do not mean 100,000 waiting tasks.
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let t = t.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let (state, detail) = check(&t).await;
            t.check.set(state, detail);
        });
        // Reap finished ones as we go: the set holds at most CONCURRENCY.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut summary = Summary::default();
    for t in routes.tenants.values().filter(|t| is_api_key(t)) {
        let (state, detail) = (t.check.state(), t.check.detail());
        match state {
            CheckState::Connected => {
                summary.connected += 1;
                if let Some(note) = detail.note {
                    summary.notes.push((t.id.to_string(), note));
                }
            }
            _ => summary.failed.push((t.id.to_string(), describe(state, &detail))),
        }
    }
    summary.failed.sort();
    summary.notes.sort();
    summary
}

async fn check(t: &Tenant) -> (CheckState, Detail) {
    use tracing::Instrument;
    let Some(authorization) = t.credential.key_authorization() else {
        let reason = "not connected yet: send a connect link".to_string();
        return (CheckState::Pending, Detail { reason: Some(reason), ..Detail::default() });
    };
    let other = t.interlock.environment;
    // With traces exported, each check is a span (GET /v1/installations/me).
    let span = crate::telemetry::background_span("key check", &t.id, crate::telemetry::current_context());
    let checked = check_key_interlocked(&authorization, &t.upstream, t.environment, &t.interlock, other)
        .instrument(span.clone())
        .await;
    crate::telemetry::set_attribute(&span, "pleo_gateway.key_check.state", checked.0.as_str());
    checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Sandbox, SandboxSpec};

    #[test]
    fn tenants_are_spread_over_a_third_of_the_interval() {
        let spreads: std::collections::HashSet<Duration> = (0..100).map(|i| spread(&format!("t{i}"))).collect();
        assert!(spreads.len() > 90, "tenants started together are not checked together");
        assert!(spreads.iter().all(|s| *s < CONNECTED_RECHECK / 3));
        assert_eq!(spread("acme"), spread("acme"), "a tenant keeps its place");
    }

    /// Connected tenants whose check is old are checked again, one after
    /// another at RECHECK_RATE per second at most; fresh ones are left alone.
    #[tokio::test]
    async fn the_schedule_rechecks_old_checks_at_a_bounded_rate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut spec = SandboxSpec::new(crate::config::Environment::Staging);
        let mut yaml = format!(
            "environments:\n  staging: {{ base_url: \"http://{}\" }}\ntenants:\n",
            listener.local_addr().unwrap()
        );
        for i in 0..12 {
            spec = spec.api_key(&format!("ik_schedule_key_{i:04}"), &format!("company-{i}"));
            yaml.push_str(&format!(
                "  t{i}:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: ik_schedule_key_{i:04} }}\n"
            ));
        }
        let sandbox = Sandbox::spawn(listener, spec, None);
        let (routes, _registry) = crate::proxy::routes::for_tests(&yaml);
        pass(&routes, |_| true).await;
        assert_eq!(sandbox.credential_checks(), 12);
        // Nothing is due yet.
        let (_tx, mut stop) = watch::channel(false);
        scheduled(&routes, &mut stop).await;
        assert_eq!(sandbox.credential_checks(), 12);
        // Eleven checks are a day old: they are due, the twelfth is not.
        let old = std::time::Instant::now().checked_sub(Duration::from_secs(24 * 3600)).unwrap();
        for i in 0..11 {
            routes.tenants[format!("t{i}").as_str()].check.age_to(old);
        }
        let started = std::time::Instant::now();
        scheduled(&routes, &mut stop).await;
        assert_eq!(sandbox.credential_checks(), 12 + 11);
        // The rate bound: eleven checks take at least ten pauses.
        assert!(started.elapsed() >= Duration::from_secs(1) / RECHECK_RATE * 10);
        sandbox.shutdown().await;
    }
}
