//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (config loaded and the gateway listener is up),
//! `/tenants` (each tenant's environment, model, masked credential and state:
//! the OAuth session's, or for API keys what Pleo's `/v1/installations/me`
//! said; never a secret). Readiness is the gateway's, not each tenant's: a
//! tenant whose key Pleo rejects is degraded alone (see `/tenants`). Kept off the app-facing port so scrapes never mix with traffic.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::config::AuthModel;
use crate::credential::Sessions;
use crate::onboarding::Onboarding;

mod api;
use crate::proxy::routes::SharedRoutes;

#[derive(Debug)]
pub struct AdminState {
    pub registry: Registry,
    pub routes: SharedRoutes,
    pub sessions: Arc<Sessions>,
    pub ready: AtomicBool,
    /// Requests in flight; `pleo_gateway_in_flight_requests` reports it.
    pub in_flight: crate::share::InFlightCount,
    pub in_flight_gauge: prometheus::IntGauge,
    /// Connect links and connections, for `/api/`.
    pub connections: Arc<Onboarding>,
    pub installs: Arc<crate::onboarding::installs::Installs>,
    /// Pleo's 404/405 answers and legacy tokens, for `/migration`.
    pub migration: Arc<crate::migration::MigrationLog>,
    /// For the gauges set at scrape time.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The admin service, ready for `listener::serve`.
pub fn service(
    state: Arc<AdminState>,
) -> impl tower::Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
{
    tower::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            if req.uri().path().starts_with("/api/") {
                return Ok::<_, Infallible>(api::handle(&state, req).await);
            }
            if req.uri().path() == "/explain" && req.method() == Method::POST {
                return Ok(api::explain(&state, req).await);
            }
            Ok(handle(&state, &req))
        }
    })
}

impl AdminState {
    /// The in-flight gauge, set from the count admission uses (at scrape time,
    /// so the request path touches one counter, not two).
    fn metrics_in_flight(&self) {
        self.in_flight_gauge.set(self.in_flight.get() as i64);
    }
}

/// A tenant's credential state (`/tenants`' `state` before an install's
/// own, and `pleo_gateway_tenant_states`): the OAuth session's, or what
/// the API-key check found.
fn credential_state(t: &crate::proxy::routes::Tenant) -> &'static str {
    match t.model {
        AuthModel::IntegratedApiKey | AuthModel::StandaloneApiKey => t.check.state().as_str(),
        AuthModel::OAuth2 => t.credential.state(),
    }
}

fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let routes = state.routes.load();
    // DNS rebinding and cross-site reads apply here too: /tenants lists
    // company ids and masked credentials. No browser origin is allowed.
    if let Err(e) = crate::proxy::steps::guard::check(req.uri(), req.headers(), &routes.browsers.admin_hosts, &[]) {
        return e.to_response();
    }
    match req.uri().path() {
        "/metrics" => {
            state.installs.update_gauges();
            state.metrics_in_flight();
            state.metrics.in_flight_limit.set(routes.max_in_flight as i64);
            state.metrics.set_tenant_states(routes.tenants.values().map(|t| (t.model, credential_state(t))));
            let encoder = TextEncoder::new();
            let mut buf = Vec::new();
            if let Err(e) = encoder.encode(&state.registry.gather(), &mut buf) {
                tracing::error!(error = %e, "cannot encode metrics");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n");
            }
            state.sessions.write_token_gauges(&mut buf);
            let mut resp = Response::new(Full::new(Bytes::from(buf)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/migration" => {
            if !admin_authorized(&routes, req) {
                return crate::error::GatewayError::new(crate::error::ErrorCode::AdminUnauthenticated).to_response();
            }
            let body = serde_json::to_string(&state.migration.report()).unwrap_or_default();
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        // Ready even when the shared store is down: requests are still
        // served on current tokens, and pulling every replica out of a
        // balancer would turn a store outage into a full one. The body says it.
        "/readyz" if state.ready.load(Ordering::Acquire) => match state.sessions.store().health() {
            h if h.up => text(StatusCode::OK, "ready\n"),
            h => text(
                StatusCode::OK,
                format!(
                    "ready, degraded: the token store ({}) is unreachable ({}); OAuth tenants are served while \
                     their access tokens are valid\n",
                    h.kind,
                    h.error.unwrap_or_default()
                ),
            ),
        },
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/tenants" => {
            if !admin_authorized(&routes, req) {
                return crate::error::GatewayError::new(crate::error::ErrorCode::AdminUnauthenticated).to_response();
            }
            let mut list: Vec<_> = routes.tenants.values().collect();
            list.sort_by(|a, b| a.id.cmp(&b.id));
            let tenants: Vec<_> = list
                .iter()
                .map(|t| {
                    let mut entry = serde_json::json!({
                        "name": &*t.id,
                        "environment": t.environment.as_str(),
                        "auth_model": t.model.as_str(),
                        "credential": t.credential.masked(),
                        // Against `max_in_flight_per_tenant` (past it only by borrowing).
                        "in_flight": t.in_flight.used(),
                    });
                    entry["state"] = credential_state(t).into();
                    if matches!(t.model, AuthModel::IntegratedApiKey | AuthModel::StandaloneApiKey) {
                        // What GET /v1/installations/me said about the key.
                        let d = t.check.detail();
                        entry["company_id"] = d.company_id.into();
                        entry["pleo_status"] = d.status.into();
                        if let Some(reason) = d.reason {
                            entry["reason"] = reason.into();
                        }
                        // What Pleo's installation document says.
                        entry["installation_status"] = d.installation.map(|s| s.as_str()).into();
                        if let Some(code) = d.error_code {
                            entry["installation_error"] =
                                format!("{code}: {}", crate::pleo::installation::explain_error_code(&code)).into();
                        }
                        if let Some(note) = d.note {
                            entry["note"] = note.into();
                        }
                    }
                    entry["source"] = if t.from_connection { "connection" } else { "config" }.into();
                    if let Some(i) = &t.install {
                        // An install from Pleo: what, for whom, by whom, and where it stands.
                        let view = api::install_view(&routes, &i.record);
                        entry["source"] = "install".into();
                        for k in [
                            "app",
                            "resource",
                            "company_id",
                            "installation_status",
                            "installed_by",
                            "installed_at_ms",
                            "state",
                        ] {
                            entry[k] = view[k].clone();
                        }
                    } else if let Some(kind) = t.check.detail().resource {
                        entry["resource"] = kind.as_str().into();
                    }
                    if let crate::credential::Credential::Connected { slot } = &t.credential {
                        if let Some(k) = slot.get() {
                            entry["connected_at_ms"] = k.meta.connected_at_ms.into();
                            entry["connected_by"] = k.meta.by.clone().into();
                            entry["connect_link"] = k.meta.link_id.clone().into();
                        }
                    }
                    if let Some(session) = t.credential.session() {
                        // Expiry only, never a token.
                        let left = session.current().expires_at.map(|e| {
                            e.saturating_duration_since(std::time::Instant::now()).as_secs_f64().floor() as u64
                        });
                        entry["token_expires_in_seconds"] = left.into();
                    }
                    entry
                })
                .collect();
            let store = state.sessions.store().health();
            let store = serde_json::json!({ "kind": store.kind, "up": store.up, "error": store.error });
            let body = serde_json::json!({ "tenants": tenants, "store": store }).to_string();
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz, /readyz, /tenants or /migration\n"),
    }
}

/// `/tenants` is open when no admin tokens are configured (validation allows
/// that on loopback only, or with `admin.allow_unauthenticated`); otherwise
/// it takes `Authorization: Bearer <token>` whose SHA-256 is listed.
fn admin_authorized<B>(routes: &crate::proxy::routes::Routes, req: &Request<B>) -> bool {
    routes.admin_open || admin_token(routes, req).is_some()
}

/// The name of the admin token the request carries, if it is one of `admin.tokens`.
fn admin_token<B>(routes: &crate::proxy::routes::Routes, req: &Request<B>) -> Option<String> {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let token = req.headers().get(header::AUTHORIZATION).and_then(|v| {
        v.as_bytes().get(..7).filter(|p| p.eq_ignore_ascii_case(b"bearer ")).map(|_| &v.as_bytes()[7..])
    })?;
    let digest: [u8; 32] = Sha256::digest(token.trim_ascii()).into();
    let mut found = None;
    // Every entry compared, in constant time each: no early exit to time.
    for (k, name) in &routes.admin_tokens {
        if bool::from(k.ct_eq(&digest)) {
            found = Some(name.to_string());
        }
    }
    found
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
