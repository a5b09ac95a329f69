//! The OAuth sessions of a gateway, one per managed-OAuth tenant. They live
//! here rather than in the routing table so that they outlive a config swap:
//! a session holds the newest refresh token, and two sessions for one tenant
//! would refresh twice and replay a token.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::watch;

use super::refresh::{OAuthSession, SessionConfig};
use super::store::TokenStore;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Sessions {
    map: DashMap<Box<str>, Arc<OAuthSession>>,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Sessions {
    /// Sessions saving to `store`; their background tasks end when `stop` turns true.
    pub fn new(store: Arc<dyn TokenStore>, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Sessions {
        Sessions { map: DashMap::new(), store, metrics, stop }
    }

    /// The tenant's session, started (with its background refresh task) on
    /// first use. Must be called inside a tokio runtime.
    pub fn get_or_start(&self, cfg: SessionConfig) -> Arc<OAuthSession> {
        self.map
            .entry(cfg.tenant.as_str().into())
            .or_insert_with(|| {
                let session = OAuthSession::new(cfg, self.store.clone(), self.metrics.refresh_metrics());
                tokio::spawn(session.clone().drive(self.stop.clone()));
                session
            })
            .clone()
    }

    /// Sets `pleo_gateway_token_expiry_seconds` for each tenant; called at scrape time.
    pub fn update_gauges(&self) {
        let now = Instant::now();
        for entry in self.map.iter() {
            let left = entry.current().expires_at.map_or(0.0, |e| e.saturating_duration_since(now).as_secs_f64());
            self.metrics.token_expiry(entry.key()).set(left);
        }
    }
}
