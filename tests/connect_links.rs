//! Customers connect themselves (docs/connect.md): connect links made
//! through the management API, the API-key page ("Save and test
//! connection"), the OAuth consent on the public callback, and what must
//! never happen: a link used twice, a form from another link, a key
//! stored before Pleo took it, a secret in a page, a URL, a file or a log.
//! Real sockets throughout; the browser itself is in tests/browser.rs.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use pleo_gateway::sandbox::OAuthClient;
use pleo_gateway::secret::Secret;
use support::*;

const HOOLI_KEY: &str = "ik_hooli_staging_first_7a8b9c0d";
const HOOLI_KEY_2: &str = "ik_hooli_staging_second_1f2e3d4c";
const WRONG_KEY: &str = "ik_hooli_not_a_real_key_000000";
const UMBRELLA_SECRET: &str = "umbrella-client-secret-value-42";
const ADMIN_TOKEN: &str = "admin-token-for-the-connect-tests-0001";
const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SECRETS: [&str; 4] = [HOOLI_KEY, HOOLI_KEY_2, WRONG_KEY, UMBRELLA_SECRET];

/// One test's log, captured on the test's (current-thread) runtime.
#[derive(Clone)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        let logs = Logs(Arc::new(Mutex::new(Vec::new())));
        let writer = logs.clone();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_env_filter("trace")
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        );
        std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The standard tenants plus `hooli` (key from a connection) and
/// `umbrella` (OAuth, consent on a link), a connect listener and an admin token.
fn extra(port: u16, store_key: &str) -> String {
    format!(
        "  hooli:
    environment: staging
    auth: {{ model: integrated_api_key, source: connection }}
  umbrella:
    environment: production
    auth: {{ model: oauth2, source: connection, client_id: umbrella-client, client_secret: {UMBRELLA_SECRET} }}
store:
  kind: file
  dir: state
  encryption_key: {store_key}
admin:
  tokens:
    - {{ name: oncall, sha256: \"{}\" }}
connect:
  listen: 127.0.0.1:{port}
  public_url: http://127.0.0.1:{port}
  integration_name: Test integration
",
        sha256_hex(ADMIN_TOKEN)
    )
}

struct Setup {
    kit: Kit,
    connect: SocketAddr,
}

async fn setup() -> Setup {
    let port = free_port();
    let staging = staging_spec().api_key(HOOLI_KEY, "company-hooli").api_key(HOOLI_KEY_2, "company-hooli");
    let production = production_spec().oauth_client(OAuthClient {
        client_id: "umbrella-client".into(),
        client_secret: Secret::new(UMBRELLA_SECRET),
        company_id: "company-umbrella".into(),
        refresh_tokens: vec![],
    });
    let kit = Kit::start_with(staging, production, &extra(port, STORE_KEY)).await;
    let connect = kit.gw.connect_addr.expect("the connect listener is up");
    Setup { kit, connect }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http_client().request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
    Answer { status: parts.status, headers: parts.headers, body }
}

impl Setup {
    async fn api(&self, method: Method, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let a =
            send(method, &format!("http://{}{path}", self.kit.gw.admin_addr), &[("authorization", &auth)], body).await;
        (a.status, serde_json::from_str(&a.body).unwrap_or_default())
    }

    async fn new_link(&self, tenant: &str) -> String {
        let (status, j) = self.api(Method::POST, &format!("/api/tenants/{tenant}/connect-links"), "").await;
        assert_eq!(status, 201, "{j}");
        j["url"].as_str().unwrap().to_string()
    }

    async fn tenant_status(&self, tenant: &str) -> u16 {
        self.kit.get("/v1/expenses", &[("x-pleo-tenant", tenant)]).await.status.as_u16()
    }

    fn store_file(&self) -> String {
        std::fs::read_to_string(self.kit.dir.path().join("state/connect.json")).unwrap_or_default()
    }

    /// The tenants with a stored connection.
    fn stored_connections(&self) -> Vec<String> {
        let text = self.store_file();
        if text.is_empty() {
            return Vec::new();
        }
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        j["connections"].as_array().unwrap().iter().map(|c| c["tenant"].as_str().unwrap().to_string()).collect()
    }
}

async fn page(url: &str) -> Answer {
    send(Method::GET, url, &[], "").await
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

async fn post_form(url: &str, fields: &[(&str, &str)], extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra);
    send(Method::POST, url, &headers, &form(fields)).await
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "a secret in {what}");
    }
}

fn assert_page_headers(a: &Answer) {
    let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("http") || csp.contains("form-action 'self' http://127.0.0.1"),
        "no third-party origin: {csp}"
    );
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(a.headers[header::REFERRER_POLICY], "no-referrer");
    assert!(!a.body.contains("<script"), "no JavaScript");
}

#[tokio::test]
async fn a_customer_connects_an_api_key_on_a_link_and_it_rotates_without_a_failed_request() {
    let logs = Logs::capture();
    let s = setup().await;

    // The management API needs an admin token.
    let url = format!("http://{}/api/tenants/hooli/connect-links", s.kit.gw.admin_addr);
    let refused = send(Method::POST, &url, &[], "").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["x-pleo-gateway-error"], "admin_unauthenticated");
    let refused = send(Method::POST, &url, &[("authorization", "Bearer not-the-token")], "").await;
    assert_eq!(refused.status, 401);

    // Before the customer connects: 503 saying what to do.
    let r = s.kit.get("/v1/expenses", &[("x-pleo-tenant", "hooli")]).await;
    let j = r.assert_refused(503, "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("not connected yet: send a connect link"), "{j}");

    let link = s.new_link("hooli").await;
    assert!(link.starts_with(&format!("http://127.0.0.1:{}/c/", s.connect.port())), "{link}");
    let token = link.rsplit('/').next().unwrap();
    assert!(token.len() >= 22, "at least 128 bits");
    assert!(!s.store_file().contains(token), "only the token's hash is stored");

    let p = page(&link).await;
    assert_eq!(p.status, 200);
    assert_page_headers(&p);
    assert!(p.body.contains("type=\"password\"") && p.body.contains("Save and test connection"), "{}", p.body);
    assert!(p.body.contains("<label for=\"key\">"), "the input is labelled");
    let csrf = csrf_of(&p.body);

    // A wrong key: the cause in words, nothing stored, the link still usable.
    let wrong = post_form(&format!("{link}/key"), &[("csrf", &csrf), ("key", WRONG_KEY)], &[]).await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.body.contains("did not accept this key") && wrong.body.contains("staging"), "{}", wrong.body);
    assert_no_secret("the error page", &wrong.body);
    assert_eq!(s.tenant_status("hooli").await, 503);
    assert!(s.stored_connections().is_empty(), "nothing stored");

    // The right key: connected, company id and the last 4 only.
    let ok = post_form(&format!("{link}/key"), &[("csrf", &csrf), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_page_headers(&ok);
    assert!(ok.body.contains("Connected") && ok.body.contains("company-hooli"), "{}", ok.body);
    assert!(ok.body.contains(&HOOLI_KEY[HOOLI_KEY.len() - 4..]), "the masked key");
    assert_no_secret("the connected page", &ok.body);
    assert_eq!(s.tenant_status("hooli").await, 200);
    let sent = s.kit.staging.requests().last().unwrap().headers[header::AUTHORIZATION].clone();
    assert_eq!(sent, basic(HOOLI_KEY));
    let stored = s.store_file();
    assert!(stored.contains("\"sealed_key\": \"v1:"), "sealed at rest");
    assert_no_secret("connect.json", &stored);

    // The same link again: used.
    let again = page(&link).await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("already been used"));

    // /tenants: where the credential came from, never the key.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let tenants =
        send(Method::GET, &format!("http://{}/tenants", s.kit.gw.admin_addr), &[("authorization", &auth)], "")
            .await
            .body;
    assert_no_secret("/tenants", &tenants);
    let all: serde_json::Value = serde_json::from_str(&tenants).unwrap();
    let hooli = all["tenants"].as_array().unwrap().iter().find(|t| t["name"] == "hooli").unwrap();
    assert_eq!((hooli["source"].as_str(), hooli["state"].as_str()), (Some("connection"), Some("connected")), "{hooli}");
    assert!(hooli["connect_link"].as_str().is_some_and(|l| !l.is_empty()), "{hooli}");

    // Rotation through the API while requests flow: none fails.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, addr) = (stop.clone(), s.kit.gw.addr);
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r =
                    send(Method::GET, &format!("http://{addr}/v1/expenses"), &[("x-pleo-tenant", "hooli")], "").await;
                statuses.push(r.status.as_u16());
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, j) = s.api(Method::PUT, "/api/tenants/hooli/key", &format!("{{\"key\": \"{WRONG_KEY}\"}}")).await;
    assert_eq!(status, 422, "a rejected rotation changes nothing: {j}");
    let (status, j) = s.api(Method::PUT, "/api/tenants/hooli/key", &format!("{{\"key\": \"{HOOLI_KEY_2}\"}}")).await;
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["rotated"], true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for h in load {
        let statuses = h.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "every request through the switch: {statuses:?}");
    }
    assert!(total > 20, "the load ran ({total} requests)");
    let sent = s.kit.staging.requests().last().unwrap().headers[header::AUTHORIZATION].clone();
    assert_eq!(sent, basic(HOOLI_KEY_2), "the new key is in service");

    let m = s.kit.metrics().await;
    let count =
        |result| sample(&m, "pleo_gateway_connections_total", &[("model", "integrated_api_key"), ("result", result)]);
    assert_eq!((count("connected"), count("rotated"), count("rejected")), (1.0, 1.0, 2.0));

    // Disconnect: the key leaves service and the store.
    let (status, j) = s.api(Method::DELETE, "/api/tenants/hooli/connection", "").await;
    assert_eq!((status, &j["disconnected"]), (StatusCode::OK, &serde_json::json!(true)));
    assert_eq!(s.tenant_status("hooli").await, 503);
    assert!(s.stored_connections().is_empty(), "gone from the store");

    let log = logs.text();
    assert!(log.contains("action=\"connect_key\"") && log.contains("action=\"disconnect\""), "audit lines");
    assert!(log.contains("by=api:oncall") && log.contains("by=link:"), "who did it: {log}");
    assert_no_secret("the log", &log);
    assert!(!log.contains(token), "the link's token is not logged");
    s.kit.stop().await;
}

#[tokio::test]
async fn links_are_single_use_expire_can_be_revoked_and_forms_need_their_own_token() {
    let _logs = Logs::capture();
    let s = setup().await;
    let a = s.new_link("hooli").await;
    let b = s.new_link("hooli").await;
    let csrf_a = csrf_of(&page(&a).await.body);
    let csrf_b = csrf_of(&page(&b).await.body);
    assert_ne!(csrf_a, csrf_b, "bound to the link");

    // CSRF: no token, another link's token, a cross-site POST.
    let none = post_form(&format!("{a}/key"), &[("key", HOOLI_KEY)], &[]).await;
    assert_eq!(none.status, 403, "{}", none.body);
    let other = post_form(&format!("{a}/key"), &[("csrf", &csrf_b), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(other.status, 403);
    let cross = post_form(
        &format!("{a}/key"),
        &[("csrf", &csrf_a), ("key", HOOLI_KEY)],
        &[("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(cross.status, 403);
    assert_eq!(s.tenant_status("hooli").await, 503, "none of them connected anything");

    // Revoked: listed as such, and refused.
    let (status, list) = s.api(Method::GET, "/api/connect-links?tenant=hooli", "").await;
    assert_eq!(status, 200);
    let links = list["links"].as_array().unwrap();
    assert_eq!(links.len(), 2, "{list}");
    assert_no_secret("the link list", &list.to_string());
    let b_token = b.rsplit('/').next().unwrap();
    assert!(!list.to_string().contains(b_token), "no token in the list");
    let b_id = &pleo_gateway::connections::token_hash(b_token)[..16];
    assert!(links.iter().any(|l| l["id"] == b_id && l["state"] == "usable"), "{list}");
    let (status, j) = s.api(Method::DELETE, &format!("/api/connect-links/{b_id}"), "").await;
    assert_eq!((status, j["link"]["state"].as_str()), (StatusCode::OK, Some("revoked")), "{j}");
    let revoked = page(&b).await;
    assert_eq!(revoked.status, 410);
    assert!(revoked.body.contains("withdrawn"), "{}", revoked.body);
    let (status, _) = s.api(Method::DELETE, "/api/connect-links/0000000000000000", "").await;
    assert_eq!(status, 404);

    // Expired: a link whose time is up, straight in the store.
    let store = pleo_gateway::connections::store::FileConnectStore::new(s.kit.dir.path().join("state"));
    let token = "x".repeat(43);
    use pleo_gateway::connections::store::{ConnectStore, LinkRecord};
    let now = pleo_gateway::credential::store::unix_now_ms();
    let hash = pleo_gateway::connections::token_hash(&token);
    store
        .put_link(&LinkRecord {
            id: hash[..16].to_string(),
            token_sha256: hash,
            tenant: "hooli".into(),
            created_by: "test".into(),
            created_at_ms: now - 10_000,
            expires_at_ms: now - 1,
            used_at_ms: None,
            revoked_at_ms: None,
            attempts: 0,
        })
        .await
        .unwrap();
    let expired = page(&format!("http://{}/c/{token}", s.connect)).await;
    assert_eq!(expired.status, 410);
    assert!(expired.body.contains("expired"));
    let bogus = page(&format!("http://{}/c/{}", s.connect, "y".repeat(43))).await;
    assert_eq!(bogus.status, 404);

    // Attempts are bounded: wrong keys lock the link.
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        last = post_form(&format!("{a}/key"), &[("csrf", &csrf_a), ("key", WRONG_KEY)], &[]).await.status;
    }
    assert_eq!(last, 429, "locked after too many attempts");
    let locked = post_form(&format!("{a}/key"), &[("csrf", &csrf_a), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(locked.status, 429, "even the right key, once locked");
    assert_eq!(s.tenant_status("hooli").await, 503);
    s.kit.stop().await;
}

/// Follows the OAuth flow as a browser without pages would: the link's
/// button, Pleo's authorize (the sandbox consents at once unless asked for
/// its page), the callback with the consent cookie.
async fn consent(s: &Setup, link: &str, deny: bool) -> Answer {
    let p = page(link).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Connect to Pleo") && p.body.contains("production"), "{}", p.body);
    let start = post_form(&format!("{link}/oauth"), &[("csrf", &csrf_of(&p.body))], &[]).await;
    assert_eq!(start.status, 303, "{}", start.body);
    let location = start.headers[header::LOCATION].to_str().unwrap().to_string();
    assert!(location.contains("code_challenge_method=S256"), "{location}");
    let redirect = format!("redirect_uri=http%3A%2F%2F127.0.0.1%3A{}%2Foauth%2Fcallback", s.connect.port());
    assert!(location.contains(&redirect), "{location}");
    let cookie = start.headers[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    let authorize = if deny {
        // The sandbox's consent page, and its Deny button.
        let html = send(Method::GET, &location, &[("accept", "text/html")], "").await;
        assert!(html.body.contains("Deny"));
        location.replace("/oauth/authorize?", "/oauth/consent?decision=deny&")
    } else {
        location
    };
    let back = send(Method::GET, &authorize, &[], "").await;
    assert!(back.status.is_redirection(), "{}", back.body);
    let callback = back.headers[header::LOCATION].to_str().unwrap().to_string();
    assert_no_secret("the callback URL", &callback);
    // Without the cookie (another browser): refused, nothing stored.
    let foreign = send(Method::GET, &callback, &[], "").await;
    assert_eq!(foreign.status, 400, "{}", foreign.body);
    send(Method::GET, &callback, &[("cookie", &cookie)], "").await
}

#[tokio::test]
async fn an_oauth_consent_on_a_link_connects_the_tenant_and_a_denial_stores_nothing() {
    let logs = Logs::capture();
    let s = setup().await;
    assert_eq!(s.tenant_status("umbrella").await, 503);
    let link = s.new_link("umbrella").await;

    let denied = consent(&s, &link, true).await;
    assert!(denied.body.contains("chose not to give access"), "{}", denied.body);
    assert_eq!(s.tenant_status("umbrella").await, 503, "nothing stored");
    assert!(!s.kit.dir.path().join("state/umbrella.json").exists());

    // The link stays usable after a denial; now allow.
    let connected = consent(&s, &link, false).await;
    assert_eq!(connected.status, 200, "{}", connected.body);
    assert!(connected.body.contains("Connected"), "{}", connected.body);
    assert_eq!(s.tenant_status("umbrella").await, 200);
    let sent = s.kit.production.requests().into_iter().rfind(|r| r.target == "/v1/expenses").unwrap().headers
        [header::AUTHORIZATION]
        .clone();
    assert!(sent.to_str().unwrap().starts_with("Bearer sbx_at_"), "the new consent's token: {sent:?}");
    assert!(s.kit.dir.path().join("state/umbrella.json").exists(), "saved like a refresh's tokens");
    assert_eq!(page(&link).await.status, 410, "used");

    let m = s.kit.metrics().await;
    let count = |result| sample(&m, "pleo_gateway_connections_total", &[("model", "oauth2"), ("result", result)]);
    assert_eq!((count("connected"), count("denied")), (1.0, 1.0));
    let log = logs.text();
    assert_no_secret("the log", &log);
    assert!(!log.contains("sbx_"), "no token or code logged");
    s.kit.stop().await;
}

#[tokio::test]
async fn a_connected_key_survives_a_restart_and_opens_only_with_its_encryption_key() {
    let _logs = Logs::capture();
    let s = setup().await;
    let link = s.new_link("hooli").await;
    let csrf = csrf_of(&page(&link).await.body);
    assert_eq!(post_form(&format!("{link}/key"), &[("csrf", &csrf), ("key", HOOLI_KEY)], &[]).await.status, 200);
    let port = s.connect.port();
    let Kit { gw, staging, production, dir: tmp, yaml, .. } = s.kit;
    let dir = tmp.path().to_path_buf();
    gw.shutdown().await;

    // The same store and key: connected at start.
    let again = start_gateway(&yaml.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0"), &dir).await;
    let r = send(Method::GET, &format!("http://{}/v1/x", again.addr), &[("x-pleo-tenant", "hooli")], "").await;
    assert_eq!(r.status, 200);
    again.shutdown().await;

    // Another encryption key: the stored key does not open; nothing is served with it.
    let other_key = "6162636465666768696a6b6c6d6e6f707172737475767778797a303132333435";
    let yaml = yaml.replace(STORE_KEY, other_key).replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    let third = start_gateway(&yaml, &dir).await;
    let r = send(Method::GET, &format!("http://{}/v1/x", third.addr), &[("x-pleo-tenant", "hooli")], "").await;
    assert_eq!(r.status, 503);
    // Rotation: the new key first, the old one as previous: it opens and is sealed again.
    let rotated = yaml.replace(
        &format!("encryption_key: {other_key}"),
        &format!("encryption_key: {other_key}\n  previous_encryption_keys: [{STORE_KEY}]"),
    );
    third.shutdown().await;
    let fourth = start_gateway(&rotated, &dir).await;
    let r = send(Method::GET, &format!("http://{}/v1/x", fourth.addr), &[("x-pleo-tenant", "hooli")], "").await;
    assert_eq!(r.status, 200);
    let stored = std::fs::read_to_string(dir.join("state/connect.json")).unwrap();
    let sealer = pleo_gateway::connections::seal::Sealer::new(&[Secret::new(other_key)]).unwrap();
    assert!(stored.contains(&format!("v1:{}:", sealer.current_id())), "sealed again with the current key");
    fourth.shutdown().await;
    staging.shutdown().await;
    production.shutdown().await;
}
