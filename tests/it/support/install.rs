//! The installs' test kit: a gateway with two apps, `erp` (OAuth, in
//! production) and `ledger` (integrated keys, in staging), sandboxes that
//! play Pleo's marketplace for them, and a tiny cookie-keeping client that
//! walks redirects one hop at a time, so tests see every URL.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::{header, Method};
use pleo_gateway::config::AuthModel;
use pleo_gateway::sandbox::{MarketApp, SandboxSpec};
use pleo_gateway::secret::Secret;

use super::connect::{free_port, send, sha256_hex, Answer, ADMIN_TOKEN, STORE_KEY};
use super::*;

pub const ERP_SECRET: &str = "erp-client-secret-value-0042";
pub const ERP_CLIENT: &str = "erp-client";
pub const LEDGER_CLIENT: &str = "ledger-app";

pub struct Installs {
    pub kit: Kit,
    pub connect: SocketAddr,
    pub public_url: String,
}

fn market(name: &str, client_id: &str, model: AuthModel, public_url: &str) -> MarketApp {
    MarketApp {
        name: name.into(),
        client_id: client_id.into(),
        model,
        install_url: format!("{public_url}/install/{name}"),
        settings_url: format!("{public_url}/settings/{name}"),
    }
}

/// The `apps` block for sandboxes at `staging` / `production`.
pub fn apps_yaml(staging: &Sandbox, production: &Sandbox) -> String {
    format!(
        "apps:
  erp:
    environment: production
    auth: {{ model: oauth2, client_id: {ERP_CLIENT}, client_secret: {ERP_SECRET} }}
    tenant_name: \"erp-{{company_id}}\"
    handover: {{ jwks_url: \"{}\", issuer: \"{}\" }}
  ledger:
    environment: staging
    auth: {{ model: integrated_api_key, client_id: {LEDGER_CLIENT} }}
    activate: manual
    tenant_name: \"ledger-{{company_id}}\"
    handover: {{ jwks_url: \"{}\", issuer: \"{}\", company_claim: company_id }}
",
        production.jwks_url(),
        production.issuer(),
        staging.jwks_url(),
        staging.issuer()
    )
}

/// The connect, store and admin blocks (`store` given whole).
pub fn connect_yaml(port: u16, store: &str) -> String {
    format!(
        "{store}admin:
  tokens:
    - {{ name: oncall, sha256: \"{}\" }}
connect:
  listen: 127.0.0.1:{port}
  public_url: http://127.0.0.1:{port}
  integration_name: Test installs
",
        sha256_hex(ADMIN_TOKEN)
    )
}

pub fn file_store() -> String {
    format!("store:\n  kind: file\n  dir: state\n  encryption_key: {STORE_KEY}\n")
}

/// Sandboxes that list the two apps for a connect listener on `port`.
pub async fn sandboxes(port: u16, token_ttl: std::time::Duration) -> (Sandbox, Sandbox) {
    let public_url = format!("http://127.0.0.1:{port}");
    let staging: SandboxSpec =
        staging_spec().app(market("ledger", LEDGER_CLIENT, AuthModel::IntegratedApiKey, &public_url), None);
    let mut production: SandboxSpec =
        production_spec().app(market("erp", ERP_CLIENT, AuthModel::OAuth2, &public_url), Some(Secret::new(ERP_SECRET)));
    production.access_token_ttl = token_ttl;
    (sandbox(staging).await, sandbox(production).await)
}

impl Installs {
    pub async fn start() -> Installs {
        Installs::start_with("", &file_store()).await
    }

    /// `extra` goes after the tenants (more tenants, `clients`), `store` as the store block.
    pub async fn start_with(extra: &str, store: &str) -> Installs {
        Installs::start_full(extra, store, std::time::Duration::from_secs(900)).await
    }

    /// ... with the production sandbox's access tokens living `token_ttl`.
    pub async fn start_full(extra: &str, store: &str, token_ttl: std::time::Duration) -> Installs {
        let port = free_port();
        let (staging, production) = sandboxes(port, token_ttl).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = standard_yaml(
            dir.path(),
            &base_url(&staging),
            &base_url(&production),
            &format!("{extra}{}{}", apps_yaml(&staging, &production), connect_yaml(port, store)),
        );
        let gw = start_gateway(&yaml, dir.path()).await;
        let kit = Kit { gw, staging, production, client: http_client(), dir, yaml };
        let connect = kit.gw.connect_addr.expect("the connect listener is up");
        Installs { kit, connect, public_url: format!("http://127.0.0.1:{port}") }
    }

    pub async fn api(&self, method: Method, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let a =
            send(method, &format!("http://{}{path}", self.kit.gw.admin_addr), &[("authorization", &auth)], body).await;
        (a.status, serde_json::from_str(&a.body).unwrap_or_default())
    }

    pub async fn tenant_status(&self, tenant: &str) -> (u16, serde_json::Value) {
        let r = self.kit.get("/v1/expenses", &[("x-pleo-tenant", tenant)]).await;
        (r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or_default())
    }

    /// An OAuth install of `company` from the marketplace, by `b`; the last answer.
    pub async fn install_erp(&self, b: &mut Browser, company: &str) -> Answer {
        let start = format!("http://{}/marketplace/connect?app=erp&company={company}", self.kit.production.addr);
        b.follow(&start).await
    }
}

/// A client that keeps cookies (per name, any path: loopback tests only)
/// and remembers every URL it was sent to.
#[derive(Default)]
pub struct Browser {
    pub cookies: BTreeMap<String, String>,
    pub visited: Vec<String>,
    pub pages: Vec<String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, a: &Answer) {
        for v in a.headers.get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if v.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        self.pages.push(a.body.clone());
    }

    pub async fn request(&mut self, method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.visited.push(url.to_string());
        let cookie = self.cookie_header();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !cookie.is_empty() {
            all.push(("cookie", &cookie));
        }
        let a = send(method, url, &all, body).await;
        self.keep(&a);
        a
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        self.request(Method::GET, url, &[], "").await
    }

    /// GETs `url` and follows redirects (at most 10).
    pub async fn follow(&mut self, url: &str) -> Answer {
        let mut url = url.to_string();
        for _ in 0..10 {
            let a = self.get(&url).await;
            match a.headers.get(header::LOCATION) {
                Some(l) if a.status.is_redirection() => url = absolute(&url, l.to_str().unwrap()),
                _ => return a,
            }
        }
        panic!("too many redirects from {url}");
    }

    /// Posts a form to `url` as a page of `origin` would, then follows redirects.
    pub async fn post(&mut self, url: &str, origin: &str, fields: &[(&str, &str)]) -> Answer {
        let body = super::connect::form(fields);
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", origin),
            ("sec-fetch-site", "same-origin"),
        ];
        let a = self.request(Method::POST, url, &headers, &body).await;
        match a.headers.get(header::LOCATION) {
            Some(l) if a.status.is_redirection() => self.follow(&absolute(url, l.to_str().unwrap())).await,
            _ => a,
        }
    }
}

/// `location` against `base` (absolute URLs and absolute paths only).
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").unwrap() + 3;
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    format!("{}{location}", &base[..host_end])
}

/// The text of the element with `id` in a page (`<x id="id">text</x>`).
pub fn element(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(rest[start..end].trim().to_string())
}

/// An `href` of the element with `id`.
pub fn href(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..at + html[at..].find('>')?];
    let h = tag.find("href=\"")? + 6;
    Some(tag[h..].split('"').next()?.replace("&amp;", "&"))
}
