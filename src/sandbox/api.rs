//! The sandbox's request handling: authentication like Pleo's, then the
//! External API stand-in endpoints.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::{installation, marketplace, oauth, Recorded, Shared, TokenFault};
use crate::secret::Secret;

pub type SandboxBody = Either<Full<Bytes>, Zeros>;

/// How the gateway's credential check introduces itself (`credential::check`).
const CHECK_AGENT: &[u8] = b"pleo-gateway-credential-check";

#[derive(askama::Template)]
#[template(path = "sandbox_consent.html")]
struct ConsentPage {
    client_id: String,
    fields: Vec<(String, String)>,
}

fn consent_page(query: &str) -> Response<SandboxBody> {
    use askama::Template;
    let fields: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let client_id = fields.iter().find(|(k, _)| k == "client_id").map(|(_, v)| v.clone()).unwrap_or_default();
    let html = ConsentPage { client_id, fields }.render().unwrap_or_else(|e| e.to_string());
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(html))));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The sandbox's answer to a path the External API does not have, if it is one:
/// - `/v1/expenses/{id}` (moved to `/v2/expenses/{id}`), `/v1/users/{id}` and
///   `/v1/export-jobs[/...]`: 404;
/// - `/v2/expenses/{id}` with a method other than GET: 405.
fn legacy_shape(method: &http::Method, path: &str) -> Option<StatusCode> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["v1", "expenses", id] | ["v1", "users", id] if !id.is_empty() => Some(StatusCode::NOT_FOUND),
        ["v1", "export-jobs", ..] => Some(StatusCode::NOT_FOUND),
        ["v2", "expenses", id] if !id.is_empty() && method != http::Method::GET => Some(StatusCode::METHOD_NOT_ALLOWED),
        _ => None,
    }
}

/// The end of a consent: the browser sent back to the client's redirect
/// URI (with a code, or `error=access_denied`), or why the request was bad.
fn back_to_client(status: StatusCode, location: Result<String, String>, consented: bool) -> Response<SandboxBody> {
    match location {
        Ok(location) => {
            let mut resp = json(status, serde_json::json!({ "consented": consented }));
            resp.headers_mut().insert(header::LOCATION, HeaderValue::try_from(location).expect("URL from a URL"));
            resp
        }
        Err(why) => json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": "invalid_request", "message": why })),
    }
}

/// Where a denied consent goes: the redirect URI with `error=access_denied`.
fn denied(query: &str) -> Result<String, String> {
    let q: std::collections::HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let redirect = q.get("redirect_uri").ok_or("missing `redirect_uri`")?;
    let state = q.get("state").ok_or("missing `state`")?;
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let back = form_urlencoded::Serializer::new(String::new())
        .append_pair("error", "access_denied")
        .append_pair("state", state)
        .finish();
    Ok(format!("{redirect}{sep}{back}"))
}

fn html(status: StatusCode, page: Result<String, askama::Error>) -> Response<SandboxBody> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(page.unwrap_or_else(|e| e.to_string())))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn see_other(location: &str) -> Response<SandboxBody> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::new())));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The marketplace: its page, Connect and Settings (see `marketplace`).
fn marketplace(shared: &Shared, parts: &Parts) -> Option<Response<SandboxBody>> {
    use askama::Template;
    let path = parts.uri.path();
    if !path.starts_with("/marketplace") {
        return None;
    }
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let bad = |why: &str| json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": "bad_request", "message": why }));
    let env = shared.spec.environment.as_str();
    if path == "/marketplace" {
        return Some(html(
            StatusCode::OK,
            marketplace::MarketplacePage { apps: &shared.spec.apps, environment: env }.render(),
        ));
    }
    let Some(app) = q.get("app").and_then(|a| shared.app(a)) else { return Some(bad("unknown app")) };
    let company = q.get("company").map(|c| c.trim().to_string()).unwrap_or_default();
    if !crate::pleo::handover::is_company_id(&company) {
        return Some(bad("the company id must be letters, digits and '-'"));
    }
    let token = shared.handover_for(app, &company);
    match path {
        "/marketplace/settings" => Some(see_other(&marketplace::with_token(&app.settings_url, &token))),
        "/marketplace/connect" => {
            {
                let mut all = shared.installations.lock().expect("sandbox lock");
                let inst = all.entry(company.clone()).or_insert_with(|| installation::Installation::new(&company, env));
                inst.status = "AUTHORIZED".into();
                inst.error_code = None;
                if q.get("organisation").is_some_and(|v| v == "1") {
                    inst.resource = format!("urn:pleo:organization:{company}");
                }
            }
            let next = marketplace::with_token(&app.install_url, &token);
            if app.model == crate::config::AuthModel::OAuth2 {
                shared.tokens.lock().expect("sandbox lock").consent_for(&app.client_id, &company);
                Some(see_other(&next))
            } else {
                let key = shared.issue_key(&company);
                Some(html(StatusCode::OK, marketplace::KeyPage { app: &app.name, key: &key, next: &next }.render()))
            }
        }
        _ => Some(bad("no such marketplace page")),
    }
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<SandboxBody>, Infallible> {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/oauth/jwks" {
        return Ok(json(StatusCode::OK, shared.jwks()));
    }
    if let Some(resp) = marketplace(&shared, &parts) {
        return Ok(resp);
    }
    let wants_page =
        parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if parts.uri.path() == "/oauth/authorize" && wants_page {
        // A browser: Pleo's consent screen, in miniature (allow or deny).
        record(&shared, &parts, 0, String::new());
        return Ok(consent_page(parts.uri.query().unwrap_or("")));
    }
    if parts.uri.path() == "/oauth/consent" {
        record(&shared, &parts, 0, String::new());
        let query = parts.uri.query().unwrap_or("");
        let allow = form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "decision" && v == "allow");
        let rest: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != "decision"))
            .finish();
        let location = if allow { shared.tokens.lock().expect("sandbox lock").authorize(&rest) } else { denied(&rest) };
        return Ok(back_to_client(StatusCode::SEE_OTHER, location, allow));
    }
    if parts.uri.path() == "/oauth/authorize" {
        record(&shared, &parts, 0, String::new());
        let result = shared.tokens.lock().expect("sandbox lock").authorize(parts.uri.query().unwrap_or(""));
        return Ok(back_to_client(StatusCode::FOUND, result, true));
    }
    if parts.uri.path() == "/oauth/token" {
        let form = match Limited::new(body, 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Ok(json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "invalid_request"}))),
        };
        record(&shared, &parts, form.len() as u64, hex::encode(Sha256::digest(&form)));
        let _answering = TokenCall::start(&shared);
        let fault = shared.faults.lock().expect("sandbox lock").pop_front();
        match fault {
            Some(TokenFault::Status(code)) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return Ok(json(status, serde_json::json!({ "error": "temporarily_unavailable" })));
            }
            Some(TokenFault::Stall(d)) => {
                tokio::time::sleep(d).await;
                let body = serde_json::json!({ "error": "temporarily_unavailable" });
                return Ok(json(StatusCode::SERVICE_UNAVAILABLE, body));
            }
            Some(TokenFault::Slow(d)) => tokio::time::sleep(d).await,
            Some(TokenFault::CommitThenHold(_)) | None => {}
        }
        // Kept for tests: the form's refresh token, to check which one the gateway sent.
        if let Some(rt) = form_urlencoded::parse(&form).find(|(k, _)| k == "refresh_token").map(|(_, v)| v.into_owned())
        {
            let mut presented = shared.presented.lock().expect("sandbox lock");
            presented.push_back(Secret::new(rt));
            if presented.len() > super::KEEP_ISSUED {
                presented.pop_front();
            }
        }
        let (status, body) = oauth::token(&shared.tokens, &parts.headers, &form, shared.spec.access_token_ttl);
        if let Some(TokenFault::CommitThenHold(d)) = fault {
            tokio::time::sleep(d).await;
        }
        return Ok(json(status, body));
    }

    // The installation resource reads its (small JSON) body; everything
    // else is read as a stream (never buffered), so the echo can say how
    // many bytes arrived and what they hash to.
    let installation_call = parts.uri.path().starts_with("/v1/installations/me");
    let (len, sha, kept) = if installation_call {
        match Limited::new(body, 64 * 1024).collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                (b.len() as u64, hex::encode(Sha256::digest(&b)), b)
            }
            Err(_) => return Ok(json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "body_read_failed"}))),
        }
    } else {
        match drain(body).await {
            Ok((len, sha)) => (len, sha, Bytes::new()),
            Err(_) => return Ok(json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "body_read_failed"}))),
        }
    };
    // The gateway's own credential checks are counted apart from the
    // traffic it proxies, so tests can see each kind exactly.
    let is_check = parts.headers.get(header::USER_AGENT).is_some_and(|v| v.as_bytes().starts_with(CHECK_AGENT));
    if is_check {
        shared.credential_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        record(&shared, &parts, len, sha.clone());
    }

    let company = match authenticate(&shared, &parts) {
        Ok(c) => c,
        Err(resp) => return Ok(*resp),
    };
    let path = parts.uri.path();
    let env = shared.spec.environment.as_str();
    if installation_call && parts.method == http::Method::DELETE && path == "/v1/installations/me" {
        // Uninstall: the installation goes, and every token and key of it stops working.
        shared.installations.lock().expect("sandbox lock").remove(&company);
        shared.tokens.lock().expect("sandbox lock").revoke_company(&company);
        shared.issued_keys.lock().expect("sandbox lock").retain(|_, c| *c != company);
        shared.uninstalls.lock().expect("sandbox lock").push(company);
        let mut resp = Response::new(Either::Left(Full::new(Bytes::new())));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return Ok(resp);
    }
    if installation_call {
        let mut all = shared.installations.lock().expect("sandbox lock");
        let (status, doc) = installation::handle(&mut all, env, &company, &parts.method, path, &kept);
        return Ok(json(status, doc));
    }
    if path == "/sandbox/reset" {
        // Pleo (or a balancer) dropping the connection halfway through an answer.
        let mut resp =
            Response::new(Either::Right(Zeros { remaining: 1 << 20, cut_at: Some((1 << 20) - 16384), counted: None }));
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("1048576"));
        return Ok(resp);
    }
    if let Some(n) = path.strip_prefix("/sandbox/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        let mut resp = Response::new(Either::Right(Zeros {
            remaining: n,
            cut_at: None,
            counted: Some(shared.bytes_streamed.clone()),
        }));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        return Ok(resp);
    }
    if let Some(code) = path.strip_prefix("/sandbox/status/").and_then(|n| n.parse::<u16>().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = json(status, serde_json::json!({ "status": code }));
        if code == 429 {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        }
        return Ok(resp);
    }
    // Legacy-shaped paths, as the External API treats them (docs/migration.md):
    // some have no twin (404), one moved to /v2, which takes GET only (405).
    if let Some(status) = legacy_shape(&parts.method, path) {
        let body = serde_json::json!({ "error": "not_found", "message": "No such endpoint in the External API." });
        return Ok(json(status, body));
    }
    if let Some(ms) = path.strip_prefix("/sandbox/delay/").and_then(|n| n.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = json(StatusCode::OK, echo(&parts, env, &company, len, &sha));
    if path == "/sandbox/hop" {
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-sandbox-hop"));
        h.insert("x-sandbox-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-sandbox-kept", HeaderValue::from_static("1"));
    }
    Ok(resp)
}

/// Pleo's rule: exactly one credential, issued in this environment.
fn authenticate(shared: &Shared, parts: &Parts) -> Result<String, Box<Response<SandboxBody>>> {
    let unauthorized = |error: &str, message: &str| {
        Box::new(json(StatusCode::UNAUTHORIZED, serde_json::json!({ "error": error, "message": message })))
    };
    let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized("unauthorized", "Missing credentials: send an OAuth bearer token or an API key."));
    };
    let spec = &shared.spec;
    if let Some(token) = value.strip_prefix("Bearer ") {
        if spec.legacy_tokens.iter().any(|t| t.expose_secret() == token) {
            return Err(unauthorized(
                "legacy_token",
                "Legacy API tokens do not work on the External API. Use an OAuth 2.0 access token or an API key.",
            ));
        }
        if let Some(company) = shared.tokens.lock().expect("sandbox lock").access_company(token) {
            return Ok(company);
        }
    }
    if let Some(company) = shared.issued_keys.lock().expect("sandbox lock").get(value) {
        return Ok(company.clone());
    }
    match spec.accepted.iter().find(|a| a.authorization.expose_secret() == value) {
        Some(a) => Ok(a.company_id.clone()),
        None => Err(unauthorized("invalid_credentials", "The credential is not valid in this environment.")),
    }
}

fn record(shared: &Shared, parts: &Parts, body_len: u64, body_sha256: String) {
    let mut recorded = shared.recorded.lock().expect("sandbox lock");
    if recorded.len() >= shared.spec.record_limit {
        recorded.pop_front();
    }
    recorded.push_back(Recorded {
        method: parts.method.clone(),
        target: parts.uri.path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_default(),
        version: parts.version,
        headers: parts.headers.clone(),
        body_len,
        body_sha256,
    });
}

async fn drain(mut body: Incoming) -> Result<(u64, String), hyper::Error> {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
            hasher.update(&data);
        }
    }
    Ok((len, hex::encode(hasher.finalize())))
}

fn echo(parts: &Parts, env: &str, company: &str, len: u64, sha: &str) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let value = if name == header::AUTHORIZATION {
            "<redacted>".to_string()
        } else {
            parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        headers.insert(name.as_str().to_string(), value.into());
    }
    serde_json::json!({
        "environment": env,
        "companyId": company,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": { "bytes": len, "sha256": sha },
    })
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<SandboxBody> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

static ZERO_CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];

/// A body of `remaining` zero bytes, produced 64 KiB at a time.
#[derive(Debug)]
pub struct Zeros {
    remaining: u64,
    /// `/sandbox/reset`: fail (hyper then resets the connection) once this
    /// few bytes are left.
    cut_at: Option<u64>,
    /// Where the bytes produced are added up (`Sandbox::bytes_streamed`).
    counted: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.cut_at.is_some_and(|at| self.remaining <= at) {
            return Poll::Ready(Some(Err(std::io::Error::other("sandbox: connection reset on purpose"))));
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(ZERO_CHUNK.len() as u64) as usize;
        self.remaining -= n as u64;
        if let Some(c) = &self.counted {
            c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZERO_CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// One `/oauth/token` call being answered, for `Sandbox::token_calls_max`.
struct TokenCall<'a>(&'a Shared);

impl<'a> TokenCall<'a> {
    fn start(shared: &'a Shared) -> TokenCall<'a> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = shared.token_calls.fetch_add(1, Relaxed) + 1;
        shared.token_calls_max.fetch_max(now, Relaxed);
        TokenCall(shared)
    }
}

impl Drop for TokenCall<'_> {
    fn drop(&mut self) {
        self.0.token_calls.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
