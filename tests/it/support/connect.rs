//! The connect pages' test kit: a gateway with a connect listener, an
//! admin token, `hooli` (an API key from a connection) and `umbrella`
//! (OAuth, consent on a link), sandboxes that know their credentials, and
//! small helpers for the API, pages and forms. Shared by
//! tests/it/connect_links.rs and tests/it/browser.rs.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use pleo_gateway::sandbox::OAuthClient;
use pleo_gateway::secret::Secret;

use super::*;

pub const HOOLI_KEY: &str = "ik_hooli_staging_first_7a8b9c0d";
pub const HOOLI_KEY_2: &str = "ik_hooli_staging_second_1f2e3d4c";
pub const WRONG_KEY: &str = "ik_hooli_not_a_real_key_000000";
pub const UMBRELLA_SECRET: &str = "umbrella-client-secret-value-42";
pub const ADMIN_TOKEN: &str = "admin-token-for-the-connect-tests-0001";
pub const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const SECRETS: [&str; 6] = [HOOLI_KEY, HOOLI_KEY_2, WRONG_KEY, UMBRELLA_SECRET, ADMIN_TOKEN, STORE_KEY];

pub use super::free_port;

pub fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The standard tenants plus `hooli` (key from a connection) and
/// `umbrella` (OAuth, consent on a link), a connect listener and an admin token.
pub fn extra(port: u16, store_key: &str) -> String {
    extra_with_store(port, &format!("store:\n  kind: file\n  dir: state\n  encryption_key: {store_key}\n"))
}

/// The same with another `store` block.
pub fn extra_with_store(port: u16, store: &str) -> String {
    format!(
        "  hooli:
    environment: staging
    auth: {{ model: integrated_api_key, source: connection }}
  umbrella:
    environment: production
    auth: {{ model: oauth2, source: connection, client_id: umbrella-client, client_secret: {UMBRELLA_SECRET} }}
{store}admin:
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

pub struct Setup {
    pub kit: Kit,
    pub connect: SocketAddr,
}

pub async fn setup() -> Setup {
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

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
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
    pub async fn api(&self, method: Method, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let a =
            send(method, &format!("http://{}{path}", self.kit.gw.admin_addr), &[("authorization", &auth)], body).await;
        (a.status, serde_json::from_str(&a.body).unwrap_or_default())
    }

    pub async fn new_link(&self, tenant: &str) -> String {
        let (status, j) = self.api(Method::POST, &format!("/api/tenants/{tenant}/connect-links"), "").await;
        assert_eq!(status, 201, "{j}");
        j["url"].as_str().unwrap().to_string()
    }

    pub async fn tenant_status(&self, tenant: &str) -> u16 {
        self.kit.get("/v1/expenses", &[("x-pleo-tenant", tenant)]).await.status.as_u16()
    }

    pub fn store_file(&self) -> String {
        std::fs::read_to_string(self.kit.dir.path().join("state/connect.json")).unwrap_or_default()
    }

    /// The tenants with a stored connection.
    pub fn stored_connections(&self) -> Vec<String> {
        let text = self.store_file();
        if text.is_empty() {
            return Vec::new();
        }
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        j["connections"].as_array().unwrap().iter().map(|c| c["tenant"].as_str().unwrap().to_string()).collect()
    }
}

pub async fn page(url: &str) -> Answer {
    send(Method::GET, url, &[], "").await
}

pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

pub fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

pub async fn post_form(url: &str, fields: &[(&str, &str)], extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra);
    send(Method::POST, url, &headers, &form(fields)).await
}

pub fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "a secret in {what}");
    }
}

pub fn assert_page_headers(a: &Answer) {
    let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("http") || csp.contains("form-action 'self' http://127.0.0.1"),
        "no third-party origin: {csp}"
    );
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(a.headers[header::REFERRER_POLICY], "same-origin");
    assert!(!a.body.contains("<script"), "no JavaScript");
}
