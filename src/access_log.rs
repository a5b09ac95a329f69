//! The access log: one structured line per request, written when its
//! response body has been sent (or dropped), so `bytes` and `duration_ms`
//! are the real ones. Lines are `tracing` events with target `access`;
//! `main` sends that target to stdout as JSON or text (`access_log.format`)
//! and everything else to stderr.
//!
//! What a line holds is chosen, never dumped: time, request id, client name,
//! tenant, auth model, environment, method, path (the query string only with
//! `access_log.include_query`, since apps put secrets there), status, the
//! gateway's error code if it answered itself, bytes sent, total and
//! upstream durations, and the trace id when traces are exported. Never a
//! header value, never a credential.
//!
//! Steps deeper in the stack learn the tenant, the client and Pleo's timing;
//! they write them into the request's [`AccessSlot`], which exists only when
//! the access log is on.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Uri};

pub use crate::config::model::{AccessLogConfig, Format};
use crate::config::model::{AuthModel, Environment};

/// What the inner steps learn about a request, for its access line: labels
/// only, so this module depends on nothing of theirs.
#[derive(Debug, Default)]
pub struct AccessSlot {
    pub tenant: OnceLock<TenantLabels>,
    pub client: OnceLock<Arc<str>>,
    /// The `rewrites` rule that changed the path, if one did.
    pub rewrite: OnceLock<Arc<str>>,
    /// Time to Pleo's response head, summed over the attempts (the OAuth 401 retry).
    pub upstream: std::sync::Mutex<Option<Duration>>,
}

/// The tenant as an access line names it.
#[derive(Clone, Debug)]
pub struct TenantLabels {
    pub name: Arc<str>,
    pub model: AuthModel,
    pub environment: Environment,
}

impl AccessSlot {
    /// Adds one attempt's time to Pleo's response head.
    pub fn add_upstream(&self, took: Duration) {
        let mut up = self.upstream.lock().unwrap_or_else(|p| p.into_inner());
        *up = Some(up.unwrap_or_default() + took);
    }
}

/// One request's access line, filled as the request travels and written on drop.
#[derive(Debug)]
pub struct AccessLine {
    started: Instant,
    method: Method,
    path: String,
    request_id: HeaderValue,
    pub slot: Arc<AccessSlot>,
    pub status: u16,
    /// The gateway's error code, when it answered itself (rescue puts it on the response).
    pub error: Option<crate::error::ErrorCode>,
    pub bytes: u64,
    /// The request's trace, when traces are exported (`telemetry`).
    pub trace_id: Option<String>,
}

impl AccessLine {
    pub fn start(method: &Method, uri: &Uri, include_query: bool, request_id: HeaderValue) -> AccessLine {
        let path = match (include_query, uri.path_and_query()) {
            (true, Some(pq)) => pq.as_str().to_string(),
            _ => uri.path().to_string(),
        };
        AccessLine {
            started: Instant::now(),
            method: method.clone(),
            path,
            request_id,
            slot: Arc::default(),
            status: 0,
            error: None,
            bytes: 0,
            trace_id: None,
        }
    }
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        let tenant = self.slot.tenant.get();
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            client = self.slot.client.get().map(|c| &**c),
            tenant = tenant.map(|t| &*t.name),
            auth_model = tenant.map(|t| t.model.as_str()),
            environment = tenant.map(|t| t.environment.as_str()),
            method = self.method.as_str(),
            path = self.path.as_str(),
            rewrite = self.slot.rewrite.get().map(|r| &**r),
            status = self.status,
            error = self.error.map(|e| e.as_str()),
            bytes = self.bytes,
            duration_ms = ms(self.started.elapsed()),
            upstream_ms = self.slot.upstream.lock().ok().and_then(|u| *u).map(ms),
            trace_id = self.trace_id.as_deref(),
        );
    }
}
