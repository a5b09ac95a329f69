//! The management API under `/api/` on the admin listener. Always behind an
//! admin token (`admin.tokens`, SHA-256), even on loopback: it changes
//! credentials. JSON in and out; refusals in the contract's error shape.
//!
//! - `POST   /api/tenants/{tenant}/connect-links`  `{"expires": "7d"}` -> 201 the link's URL (shown once)
//! - `GET    /api/connect-links[?tenant=T]`        -> the links, without tokens
//! - `DELETE /api/connect-links/{id}`              -> revoked
//! - `PUT    /api/tenants/{tenant}/key`            `{"key": "..."}` -> tested with Pleo, then stored
//! - `DELETE /api/tenants/{tenant}/connection`     -> disconnected
//! - `GET    /api/installs[?app=A]`                -> tenants installs from Pleo made
//! - `GET    /api/installs/{tenant}`               -> one of them
//! - `DELETE /api/installs/{tenant}`               -> uninstalled (Pleo's DELETE, then forgotten)

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
            let expires = match string_field(&body, "expires", "a duration such as \"7d\"") {
                Ok(v) => v,
                Err(resp) => return resp,
            };
            let ttl = match expires {
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
            let key = match string_field(&body, "key", "the API key") {
                Ok(Some(k)) => k,
                Ok(None) => return refuse(StatusCode::BAD_REQUEST, "bad_request", "send {\"key\": \"<the API key>\"}"),
                Err(resp) => return resp,
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
        (Method::GET, ["installs"]) => {
            let app = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "app").map(|(_, v)| v.into_owned());
            let mut list: Vec<Value> = state
                .installs
                .records()
                .iter()
                .filter(|r| app.as_ref().is_none_or(|a| **a == *r.app))
                .map(|r| install_view(&routes, r))
                .collect();
            list.sort_by(|a, b| a["tenant"].as_str().cmp(&b["tenant"].as_str()));
            reply(StatusCode::OK, json!({ "installs": list }))
        }
        (Method::GET, ["installs", tenant]) => match state.installs.find(tenant) {
            Some(r) => reply(StatusCode::OK, install_view(&routes, &r)),
            None => refuse(StatusCode::NOT_FOUND, "unknown_tenant", format!("no install made tenant `{tenant}`")),
        },
        (Method::DELETE, ["installs", tenant]) => {
            if state.installs.find(tenant).is_none() {
                return refuse(StatusCode::NOT_FOUND, "unknown_tenant", format!("no install made tenant `{tenant}`"));
            }
            match state.installs.uninstall(tenant, &by).await {
                Ok(r) => reply(StatusCode::OK, install_view(&state.routes.load(), &r)),
                Err(f) => refuse(StatusCode::BAD_GATEWAY, "uninstall_failed", f.message),
            }
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown API path: see docs/connect.md for /api/tenants/{tenant}/connect-links, /api/connect-links, \
             /api/tenants/{tenant}/key and /api/tenants/{tenant}/connection, and docs/installs.md for /api/installs",
        ),
    }
}

/// An install as the API shows it (never a credential).
pub fn install_view(routes: &crate::proxy::routes::Routes, r: &crate::state::InstallRecord) -> Value {
    let tenant = routes.tenants.get(&*r.tenant);
    let (resource, id) =
        crate::pleo::installation::parse_resource(&r.resource).map_or(("company", ""), |(k, id)| (k.as_str(), id));
    json!({
        "tenant": r.tenant,
        "app": r.app,
        "environment": r.environment,
        "auth_model": r.model,
        "resource": resource,
        "company_id": id,
        "installation_status": r.status,
        "state": crate::onboarding::installs::state_of(r, tenant.map(|t| &**t)),
        "installed_by": r.installed_by,
        "installed_at_ms": r.installed_at_ms,
        "updated_at_ms": r.updated_at_ms,
        "uninstalled_at_ms": r.uninstalled_at_ms,
        "uninstalled_by": r.uninstalled_by,
        "last_error": r.last_error,
    })
}

/// A string field of a JSON body: absent (or null) is `None`; any other
/// type is a 400 that names the field, never a silent default.
#[allow(clippy::result_large_err)] // the refusal itself, built once per bad request
fn string_field<'a>(body: &'a Value, name: &str, what: &str) -> Result<Option<&'a str>, Response<Full<Bytes>>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => {
            Err(refuse(StatusCode::BAD_REQUEST, "bad_request", format!("`{name}` must be a JSON string ({what})")))
        }
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
    let method = match string_field(&body, "method", "an HTTP method such as \"GET\"") {
        Ok(m) => m.unwrap_or("GET"),
        Err(resp) => return resp,
    };
    let url = match string_field(&body, "url", "a request target such as \"/v2/expenses\"") {
        Ok(Some(u)) => u,
        Ok(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send {\"method\": \"GET\", \"url\": \"/v2/...\", \"headers\": {...}}",
            )
        }
        Err(resp) => return resp,
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    match body.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("`headers.{k}` must be a JSON string (the header's value)"),
                    );
                };
                headers.push((k.clone(), v.to_string()));
            }
        }
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`headers` must be a JSON object of header names to string values",
            )
        }
    }
    match crate::proxy::explain::request(method, url, &headers) {
        Ok(r) => {
            reply(StatusCode::OK, serde_json::to_value(crate::proxy::explain::explain(&routes, r)).unwrap_or_default())
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    }
}
