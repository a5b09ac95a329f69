//! Credential validation for API-key tenants: `GET /v1/installations/me`
//! in the tenant's environment, at start and after every reload (the new
//! routing table's tenants are checked afresh), concurrently but bounded.
//!
//! - 2xx: `connected`, with the company id Pleo reports.
//! - 401/403: `rejected` with Pleo's status. The tenant is degraded: its
//!   requests get 503 `credential_unavailable` instead of a sure 401 from
//!   Pleo. Other tenants are untouched.
//! - anything else (timeout, 5xx, connection): `unverified`. The tenant
//!   keeps serving; Pleo being down is not the key's fault.
//!
//! Tenants that are not connected are checked again every [`RECHECK`], so a
//! key the customer re-enables, or a Pleo outage that ends, heals itself.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{watch, Semaphore};

use crate::body::RequestBody;
use crate::config::AuthModel;
use crate::routes::{Routes, SharedRoutes, Tenant};

/// How often tenants that are not connected are checked again.
pub const RECHECK: Duration = Duration::from_secs(60);
/// Checks in flight at once (a config may have thousands of tenants).
const CONCURRENCY: usize = 16;
const USER_AGENT: &str = concat!("pleo-gateway-credential-check/", env!("CARGO_PKG_VERSION"));
/// One check may take this long.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CheckState {
    /// Not an API-key tenant, or not checked yet.
    Pending = 0,
    Connected = 1,
    Rejected = 2,
    Unverified = 3,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pending => "pending",
            CheckState::Connected => "connected",
            CheckState::Rejected => "rejected",
            CheckState::Unverified => "unverified",
        }
    }
}

/// One tenant's validation result. The state is an atomic because the
/// request path reads it (is the tenant rejected?); the details are for
/// `/tenants`.
#[derive(Debug, Default)]
pub struct KeyCheck {
    state: AtomicU8,
    detail: Mutex<Detail>,
}

#[derive(Clone, Debug, Default)]
pub struct Detail {
    pub company_id: Option<String>,
    /// Pleo's status when it answered.
    pub status: Option<u16>,
    /// Why a check could not decide (no secret in it: our words and an error kind).
    pub reason: Option<String>,
}

impl KeyCheck {
    pub fn state(&self) -> CheckState {
        match self.state.load(Ordering::Relaxed) {
            1 => CheckState::Connected,
            2 => CheckState::Rejected,
            3 => CheckState::Unverified,
            _ => CheckState::Pending,
        }
    }

    pub fn is_rejected(&self) -> bool {
        self.state.load(Ordering::Relaxed) == CheckState::Rejected as u8
    }

    pub fn detail(&self) -> Detail {
        self.detail.lock().expect("check lock").clone()
    }

    fn set(&self, state: CheckState, detail: Detail) {
        *self.detail.lock().expect("check lock") = detail;
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

/// What one pass over a routing table found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub connected: usize,
    /// Tenant names with what went wrong.
    pub failed: Vec<(String, String)>,
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
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Option<Summary>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let first = pass(&routes, |_| true).await;
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
            if !again.failed.is_empty() || again.connected > 0 {
                log(&again);
            }
        }
    });
    rx
}

fn log(s: &Summary) {
    for (tenant, why) in &s.failed {
        tracing::warn!(tenant = %tenant, "credential check: {why}");
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
            CheckState::Connected => summary.connected += 1,
            CheckState::Rejected => {
                summary.failed.push((tenant, format!("Pleo rejected the key ({})", detail.status.unwrap_or_default())))
            }
            _ => summary
                .failed
                .push((tenant, format!("could not verify the key: {}", detail.reason.unwrap_or_default()))),
        }
    }
    summary.failed.sort();
    summary
}

async fn check(t: &Tenant) -> (CheckState, Detail) {
    let crate::credential::Credential::Static { authorization, .. } = &t.credential else {
        return (CheckState::Pending, Detail::default());
    };
    let up = &t.upstream;
    let uri = format!("{}/v1/installations/me", up.base);
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = match uri.parse() {
        Ok(u) => u,
        Err(_) => return (CheckState::Unverified, Detail { reason: Some("bad base URL".into()), ..Detail::default() }),
    };
    req.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
    req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    // Says what this call is, in Pleo's logs (and to the sandbox).
    req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    let resp = match tokio::time::timeout(TIMEOUT, up.client().request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let reason = if e.is_connect() { "cannot connect to Pleo" } else { "the request to Pleo failed" };
            return (CheckState::Unverified, Detail { reason: Some(reason.into()), ..Detail::default() });
        }
        Err(_) => {
            return (
                CheckState::Unverified,
                Detail { reason: Some("Pleo did not answer in time".into()), ..Detail::default() },
            )
        }
    };
    let status = resp.status();
    let detail = Detail { status: Some(status.as_u16()), ..Detail::default() };
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return (CheckState::Rejected, detail);
    }
    if !status.is_success() {
        return (CheckState::Unverified, Detail { reason: Some(format!("Pleo answered {status}")), ..detail });
    }
    // Small JSON; a body that will not read is still a yes from Pleo.
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await;
    let company_id = body.ok().and_then(|b| b.ok()).and_then(|b| company_id(&b.to_bytes()));
    (CheckState::Connected, Detail { company_id, ..detail })
}

/// The company id from an installation document: `companyId`, or `company.id`.
fn company_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = v.get("companyId").or_else(|| v.get("company_id")).or_else(|| v.get("company")?.get("id"))?;
    id.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn company_id_shapes() {
        assert_eq!(super::company_id(br#"{"companyId":"c1"}"#).as_deref(), Some("c1"));
        assert_eq!(super::company_id(br#"{"company":{"id":"c2"}}"#).as_deref(), Some("c2"));
        assert_eq!(super::company_id(b"not json"), None);
    }
}
