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
use prometheus::{Encoder, Registry, TextEncoder};

use crate::config::AuthModel;
use crate::credential::Sessions;
use crate::routes::SharedRoutes;

#[derive(Debug)]
pub struct AdminState {
    pub registry: Registry,
    pub routes: SharedRoutes,
    pub sessions: Arc<Sessions>,
    pub ready: AtomicBool,
}

/// The admin service, ready for `listener::serve`.
pub fn service<B>(
    state: Arc<AdminState>,
) -> impl tower::Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send
where
    B: Send + 'static,
{
    tower::service_fn(move |req: Request<B>| {
        let resp = handle(&state, &req);
        std::future::ready(Ok::<_, Infallible>(resp))
    })
}

fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            state.sessions.update_gauges();
            let encoder = TextEncoder::new();
            let mut buf = Vec::new();
            if let Err(e) = encoder.encode(&state.registry.gather(), &mut buf) {
                tracing::error!(error = %e, "cannot encode metrics");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n");
            }
            let mut resp = Response::new(Full::new(Bytes::from(buf)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/tenants" => {
            let routes = state.routes.load();
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
                        "state": t.credential.state(),
                    });
                    if matches!(t.model, AuthModel::IntegratedApiKey | AuthModel::StandaloneApiKey) {
                        // What GET /v1/installations/me said about the key.
                        let d = t.check.detail();
                        entry["state"] = t.check.state().as_str().into();
                        entry["company_id"] = d.company_id.into();
                        entry["pleo_status"] = d.status.into();
                        if let Some(reason) = d.reason {
                            entry["reason"] = reason.into();
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
            let body = serde_json::json!({ "tenants": tenants }).to_string();
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz, /readyz or /tenants\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
