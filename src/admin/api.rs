//! The management API under `/api/` on the admin listener. Always behind an
//! admin token (`admin.tokens`, SHA-256), even on loopback: it changes
//! credentials. JSON in and out; refusals in the contract's error shape.
//!
//! - `POST   /api/tenants/{tenant}/connect-links`  `{"expires": "7d"}` -> 201 the link's URL (shown once)
//! - `GET    /api/connect-links[?tenant=T]`        -> the links, without tokens
//! - `DELETE /api/connect-links/{id}`              -> revoked
//! - `PUT    /api/tenants/{tenant}/key`            `{"key": "..."}` -> tested with Pleo, then stored
//! - `DELETE /api/tenants/{tenant}/connection`     -> disconnected

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{admin_token, AdminState};
use crate::onboarding::{Actor, LinkView};
use crate::secret::Secret;
use crate::state::unix_now_ms;

const MAX_BODY: usize = 16 * 1024;

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The contract's error shape: `{"error", "message"}` and `x-pleo-gateway-error`.
fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = reply(status, json!({ "error": code, "message": message.into() }));
    resp.headers_mut().insert("x-pleo-gateway-error", HeaderValue::from_static(code));
    resp
}

pub async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let routes = state.routes.load_full();
    if let Err(e) = crate::proxy::steps::guard::check(req.uri(), req.headers(), &routes.browsers.admin_hosts, &[]) {
        return e.to_response();
    }
    // Never open: with no admin tokens configured, nobody may change credentials here.
    let Some(admin) = admin_token(&routes, &req) else {
        return crate::error::GatewayError::new(crate::error::ErrorCode::AdminUnauthenticated).to_response();
    };
    let by = Actor::Admin(admin);
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    let method = req.method().clone();
    let body = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let connections = &state.connections;
    let unknown = |t: &str| refuse(StatusCode::NOT_FOUND, "unknown_tenant", format!("no tenant `{t}` in the config"));
    let store_down = |e: crate::state::StoreError| {
        tracing::error!(error = %e, "management API: store error");
        refuse(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the store did not answer; nothing was changed")
    };
    match (method, segments.as_slice()) {
        (Method::POST, ["tenants", tenant, "connect-links"]) => {
            let Some(t) = routes.tenants.get(*tenant) else { return unknown(tenant) };
            if connections.public_url().is_none() {
                return refuse(
                    StatusCode::CONFLICT,
                    "connect_not_configured",
                    "configure `connect` (listen and public_url) so customers have somewhere to open links",
                );
            }
            let ttl = match body.get("expires").and_then(Value::as_str) {
                None => connections.link_ttl,
                Some(text) => match humantime::parse_duration(text) {
                    Ok(d) if d >= Duration::from_secs(60) && d <= crate::onboarding::MAX_LINK_TTL => d,
                    _ => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "`expires` must be a duration from 1m to 90d, such as 7d",
                        )
                    }
                },
            };
            match connections.create_link(&t.id, ttl, &by).await {
                Ok((link, url)) => reply(
                    StatusCode::CREATED,
                    json!({ "id": link.id, "tenant": link.tenant, "url": url, "expires_at_ms": link.expires_at_ms }),
                ),
                Err(e) => store_down(e),
            }
        }
        (Method::GET, ["connect-links"]) => {
            let tenant =
                form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "tenant").map(|(_, v)| v.into_owned());
            match connections.store.links().await {
                Ok(links) => {
                    let now = unix_now_ms();
                    let views: Vec<LinkView<'_>> = links
                        .iter()
                        .filter(|l| tenant.as_ref().is_none_or(|t| *t == l.tenant))
                        .map(|l| LinkView::of(l, now))
                        .collect();
                    reply(StatusCode::OK, json!({ "links": views }))
                }
                Err(e) => store_down(e),
            }
        }
        (Method::DELETE, ["connect-links", id]) => match connections.revoke_link(id, &by).await {
            Ok(Some(l)) => reply(StatusCode::OK, json!({ "link": LinkView::of(&l, unix_now_ms()) })),
            Ok(None) => refuse(StatusCode::NOT_FOUND, "unknown_link", format!("no connect link `{id}`")),
            Err(e) => store_down(e),
        },
        (Method::PUT, ["tenants", tenant, "key"]) => {
            let Some(t) = routes.tenants.get(*tenant) else { return unknown(tenant) };
            let Some(key) = body.get("key").and_then(Value::as_str) else {
                return refuse(StatusCode::BAD_REQUEST, "bad_request", "send {\"key\": \"<the API key>\"}");
            };
            match connections.connect_key(t, &Secret::new(key), &by, None).await {
                Ok(done) => reply(
                    StatusCode::OK,
                    json!({ "tenant": &*t.id, "credential": done.masked, "company_id": done.company_id, "rotated": done.rotated }),
                ),
                Err(refused) => {
                    let (status, code) = match refused.result {
                        "unreachable" => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
                        "error" if refused.message.contains("does not take a key") => {
                            (StatusCode::CONFLICT, "not_a_connection_tenant")
                        }
                        "error" => (StatusCode::SERVICE_UNAVAILABLE, "key_not_stored"),
                        _ => (StatusCode::UNPROCESSABLE_ENTITY, "key_rejected"),
                    };
                    refuse(status, code, refused.message)
                }
            }
        }
        (Method::POST, ["checks"]) => {
            // Every API-key tenant, now (a reload asks only about new and changed keys).
            let summary = crate::key_checks::pass(&routes, |_| true).await;
            crate::onboarding::audit("recheck", "*", &by, "ok");
            reply(
                StatusCode::OK,
                json!({ "connected": summary.connected, "failed": summary.failed, "notes": summary.notes }),
            )
        }
        (Method::DELETE, ["tenants", tenant, "connection"]) => {
            if !routes.tenants.contains_key(*tenant) {
                return unknown(tenant);
            }
            match connections.disconnect(&routes, tenant, &by).await {
                Ok(done) => reply(StatusCode::OK, json!({ "tenant": tenant, "disconnected": done })),
                Err(e) => store_down(e),
            }
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown API path: see docs/connect.md for /api/tenants/{tenant}/connect-links, /api/connect-links, \
             /api/tenants/{tenant}/key and /api/tenants/{tenant}/connection",
        ),
    }
}

/// The request's JSON body (`{}` when empty), bounded in size and time.
async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Full<Bytes>>> {
    let collected =
        tokio::time::timeout(Duration::from_secs(10), Limited::new(req.into_body(), MAX_BODY).collect()).await;
    let bytes = match collected {
        Ok(Ok(b)) => b.to_bytes(),
        _ => return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "bad_request", "the body is too large or too slow")),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    // serde_json's error names a position, never the content (a key may be in it).
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "bad_request", "the body must be a JSON object"))
}

/// `POST /explain`: `{"method": "GET", "url": "/v2/x", "headers": {"X-Pleo-Tenant": "acme"}}`
/// -> what the gateway would do with that request (nothing is sent).
pub async fn explain(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let routes = state.routes.load_full();
    if let Err(e) = crate::proxy::steps::guard::check(req.uri(), req.headers(), &routes.browsers.admin_hosts, &[]) {
        return e.to_response();
    }
    if admin_token(&routes, &req).is_none() && !routes.admin_open {
        return crate::error::GatewayError::new(crate::error::ErrorCode::AdminUnauthenticated).to_response();
    }
    let body = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let method = body.get("method").and_then(Value::as_str).unwrap_or("GET");
    let Some(url) = body.get("url").and_then(Value::as_str) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send {\"method\": \"GET\", \"url\": \"/v2/...\", \"headers\": {...}}",
        );
    };
    let headers: Vec<(String, String)> = match body.get("headers") {
        Some(Value::Object(m)) => {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
        }
        _ => Vec::new(),
    };
    match crate::proxy::explain::request(method, url, &headers) {
        Ok(r) => {
            reply(StatusCode::OK, serde_json::to_value(crate::proxy::explain::explain(&routes, r)).unwrap_or_default())
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    }
}
