//! The connect pages' templates (askama: compiled in, HTML-escaped) and the
//! headers every page goes out with.

use askama::Template;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

#[derive(Debug, Template)]
#[template(path = "link.html")]
pub struct LinkPage<'a> {
    pub integration: &'a str,
    pub tenant: &'a str,
    pub environment: &'a str,
    pub oauth: bool,
    pub action: String,
    pub csrf: String,
    pub error: Option<String>,
    pub expires: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "connected.html")]
pub struct ConnectedPage<'a> {
    pub integration: &'a str,
    pub tenant: &'a str,
    pub environment: &'a str,
    pub company_id: Option<String>,
    /// `company_id` names an organisation (a multi-entity customer).
    pub organisation: bool,
    pub masked: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "problem.html")]
pub struct ProblemPage<'a> {
    pub integration: &'a str,
    pub title: &'a str,
    pub message: &'a str,
}

pub const STYLE: &str = include_str!("../../../assets/connect.css");

/// A rendered page with the headers every connect page has: no caching
/// (a page may name a tenant and a masked key), a referrer only to our own
/// origin (the URL may hold a link's token; same-origin form posts then
/// carry a real `Origin`, so `Origin: null` can be refused), no framing, and a CSP with no origin but our own,
/// except that a form may lead to Pleo's consent screen (`form_to`).
pub fn page(status: StatusCode, body: Result<String, askama::Error>, form_to: Option<&str>) -> Response<Full<Bytes>> {
    let (status, body) = match body {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a connect page");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be shown.".to_string())
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure(&mut resp, form_to);
    resp
}

pub fn secure<B>(resp: &mut Response<B>, form_to: Option<&str>) {
    let form_action = match form_to {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; \
         base-uri 'none'"
    );
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

pub fn problem(integration: &str, status: StatusCode, title: &str, message: &str) -> Response<Full<Bytes>> {
    page(status, ProblemPage { integration, title, message }.render(), None)
}

#[derive(Debug, Template)]
#[template(path = "install_key.html")]
pub struct InstallKeyPage<'a> {
    pub integration: &'a str,
    pub app: &'a str,
    pub environment: &'a str,
    pub company_id: Option<String>,
    pub action: String,
    pub csrf: String,
    pub error: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "installed.html")]
pub struct InstalledPage<'a> {
    pub integration: &'a str,
    pub app: &'a str,
    pub environment: &'a str,
    pub resource: &'a str,
    pub company_id: &'a str,
    pub status: &'a str,
    pub masked: Option<String>,
}

/// What the Settings page shows of an install (never a credential).
#[derive(Debug)]
pub struct InstallView {
    pub company_id: String,
    pub resource: &'static str,
    pub environment: String,
    pub state: String,
    pub installation: String,
    pub error_meaning: Option<String>,
    pub since: String,
    pub last_check: Option<String>,
    pub last_error: Option<String>,
    pub installed: bool,
}

#[derive(Debug, Template)]
#[template(path = "settings.html")]
pub struct SettingsPage<'a> {
    pub integration: &'a str,
    pub app: &'a str,
    pub install: Option<InstallView>,
    pub notice: Option<String>,
    pub reconnect: String,
    pub disconnect: String,
    pub csrf: String,
}

/// A time for a page: `2026-12-02 10:00:00 UTC`.
pub fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}
