//! An app's Initiation URI (`GET /install/<app>`) and Settings URI
//! (`GET /settings/<app>`), as Pleo's marketplace links to them.
//!
//! - A session handover token (`pleo_id_token`, or `pleo_id`) is verified
//!   and then dropped from the URL at once (a 303 to the same path), so it
//!   never sits in history, a Referer or a log. What it proved (app,
//!   company, user) rides in a signed, HttpOnly cookie for 30 minutes.
//! - OAuth apps go straight on to Pleo's consent (PKCE S256, the state
//!   bound to a cookie, as connect links do); integrated-key apps get the
//!   key form. Without a handover the install still works (the company is
//!   Pleo's answer either way); Settings needs one.
//! - Every form carries a CSRF token bound to the visit cookie, and the
//!   origin checks of connect links apply.

// The error of these helpers is the page that says why: made once per
// refused form, never on the proxy's path, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::oauth;
use super::views::{page, when, InstallKeyPage, InstallView, InstalledPage, SettingsPage};
use super::{Page, Portal};
use crate::config::AuthModel;
use crate::onboarding::installs::{state_of, App, Failed, Installed, Visitor};
use crate::onboarding::seal::Sealer;
use crate::onboarding::Actor;
use crate::pleo::handover::Refusal;
use crate::secret::{random_token, Secret};
use crate::state::unix_now_ms;

/// `state`'s subject for an install's consent: `install-<app>`.
pub const STATE_PREFIX: &str = "install-";
const VISIT: &str = "pleo_gateway_visit";
const VISIT_TTL: Duration = Duration::from_secs(30 * 60);

/// The visit cookie's content. `company_id` is empty for a visitor who came
/// without a (verified) handover.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Visit {
    app: String,
    company_id: String,
    user: String,
    expires_at: u64,
    nonce: String,
}

impl Visit {
    fn anonymous(app: &str) -> Visit {
        Visit {
            app: app.to_string(),
            company_id: String::new(),
            user: String::new(),
            expires_at: unix_now_ms() / 1000 + VISIT_TTL.as_secs(),
            nonce: random_token(16),
        }
    }

    /// What the verified handover said, if the visit came with one.
    fn visitor(&self) -> Option<Visitor> {
        (!self.company_id.is_empty()).then(|| Visitor {
            app: self.app.clone(),
            company_id: self.company_id.clone(),
            user: self.user.clone(),
            expires_at: self.expires_at,
        })
    }

    fn cookie(&self, sealer: &Sealer, public_url: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("strings serialize"));
        let mac = sealer.sign("visit", &[&payload]);
        let secure = if public_url.starts_with("https://") { "; Secure" } else { "" };
        format!("{VISIT}={payload}.{mac}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}", VISIT_TTL.as_secs())
    }

    fn read(sealer: &Sealer, headers: &HeaderMap, app: &str) -> Option<Visit> {
        let value = super::cookies(headers, VISIT).next_back()?;
        let (payload, mac) = value.rsplit_once('.')?;
        if payload.len() > 4096 || !sealer.verify("visit", &[payload], mac) {
            return None;
        }
        let visit: Visit = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (visit.app == app && visit.expires_at > unix_now_ms() / 1000).then_some(visit)
    }

    fn csrf(&self, sealer: &Sealer) -> String {
        sealer.sign("install-csrf", &[&self.nonce, &self.app])
    }
}

const DONE: &str = "pleo_gateway_installed";

/// The cookie that carries an install's result to `/install/<app>/done`:
/// the tenant and an expiry, signed; nothing secret.
fn done_cookie(sealer: &Sealer, app: &str, tenant: &str, public_url: &str) -> String {
    let until = (unix_now_ms() / 1000 + 300).to_string();
    let mac = sealer.sign("installed", &[app, tenant, &until]);
    let secure = if public_url.starts_with("https://") { "; Secure" } else { "" };
    format!("{DONE}={tenant}.{until}.{mac}; Path=/install/{app}/done; Max-Age=300; HttpOnly; SameSite=Lax{secure}")
}

fn read_done(sealer: &Sealer, headers: &HeaderMap, app: &str) -> Option<String> {
    let value = super::cookies(headers, DONE).next_back()?;
    let mut parts = value.rsplitn(3, '.');
    let (mac, until, tenant) = (parts.next()?, parts.next()?, parts.next()?);
    let fresh = until.parse::<u64>().ok()? > unix_now_ms() / 1000;
    (fresh && sealer.verify("installed", &[app, tenant, until], mac)).then(|| tenant.to_string())
}

/// The handover token in a URL's query, if any.
fn handover_token(req: &Request<Incoming>) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "pleo_id_token" || k == "pleo_id")
        .map(|(_, v)| v.into_owned())
}

fn refusal_words(why: Refusal) -> &'static str {
    match why {
        Refusal::Expired => "The link from Pleo has expired. Go back to Pleo and open the app again.",
        Refusal::KeysUnavailable => {
            "The gateway could not fetch Pleo's signing keys to check the link, so it was not used. Try again in a minute."
        }
        _ => "The link from Pleo could not be verified, so it was not used. Go back to Pleo and open the app from there.",
    }
}

fn redirect(location: &str) -> Page {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    super::views::secure(&mut resp, None);
    resp
}

fn set_cookie(resp: &mut Page, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

impl Portal {
    fn sealer_or_page(&self) -> Result<&Sealer, Page> {
        self.connections.sealer().ok_or_else(|| {
            self.problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not available",
                "The gateway has no encryption key configured.",
            )
        })
    }

    fn app_or_page(&self, name: &str) -> Result<Arc<App>, Page> {
        self.installs.app(name).ok_or_else(|| {
            self.problem(
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is no app of that name here. Open it from Pleo.",
            )
        })
    }

    /// Verifies the handover and sends the browser on to `path`, without it.
    async fn take_handover(&self, sealer: &Sealer, app: &App, token: &str, path: &str) -> Page {
        match self.installs.verify(app, token).await {
            Ok(h) => {
                let visit = Visit {
                    app: app.name.clone(),
                    company_id: h.company_id,
                    user: h.user,
                    expires_at: unix_now_ms() / 1000 + VISIT_TTL.as_secs(),
                    nonce: random_token(16),
                };
                let mut resp = redirect(path);
                set_cookie(&mut resp, &visit.cookie(sealer, &self.public_url));
                resp
            }
            Err(why) => {
                self.problem(StatusCode::UNAUTHORIZED, "This link from Pleo cannot be used", refusal_words(why))
            }
        }
    }

    /// The visit this browser is on, or a new anonymous one (with its cookie).
    fn visit(&self, sealer: &Sealer, headers: &HeaderMap, app: &str) -> (Visit, Option<String>) {
        match Visit::read(sealer, headers, app) {
            Some(v) => (v, None),
            None => {
                let v = Visit::anonymous(app);
                let cookie = v.cookie(sealer, &self.public_url);
                (v, Some(cookie))
            }
        }
    }

    /// Sends the browser to Pleo's consent for `app`.
    fn start_consent(&self, sealer: &Sealer, app: &App) -> Page {
        let Some(consent) = &app.consent else {
            return self.problem(StatusCode::CONFLICT, "Not available", "This app does not connect with OAuth.");
        };
        let started = oauth::start(sealer, &format!("{STATE_PREFIX}{}", app.name), consent, &self.public_url);
        let mut resp = redirect(&started.location);
        set_cookie(&mut resp, &oauth::cookie(&started.nonce, &self.public_url));
        resp
    }

    fn key_page(&self, app: &App, visit: &Visit, sealer: &Sealer, status: StatusCode, error: Option<String>) -> Page {
        let company_id = (!visit.company_id.is_empty()).then(|| visit.company_id.clone());
        page(
            status,
            InstallKeyPage {
                integration: &self.integration,
                app: &app.name,
                environment: app.config.environment.as_str(),
                company_id,
                action: format!("/install/{}/key", app.name),
                csrf: visit.csrf(sealer),
                error,
            }
            .render(),
            None,
        )
    }

    fn installed_page(&self, app: &App, done: &Installed) -> Page {
        page(
            StatusCode::OK,
            InstalledPage {
                integration: &self.integration,
                app: &app.name,
                environment: done.environment,
                resource: done.resource.as_str(),
                company_id: &done.company_id,
                status: &done.status,
                masked: done.masked.clone(),
            }
            .render(),
            None,
        )
    }

    fn failed_page(&self, f: &Failed) -> Page {
        let status = match f.result {
            "mismatch" => StatusCode::CONFLICT,
            "rejected" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_GATEWAY,
        };
        self.problem(status, "Not connected", &f.message)
    }

    pub(super) async fn install_page(&self, name: &str, req: Request<Incoming>) -> Page {
        let (sealer, app) = match (self.sealer_or_page(), self.app_or_page(name)) {
            (Ok(s), Ok(a)) => (s, a),
            (Err(p), _) | (_, Err(p)) => return p,
        };
        if let Some(token) = handover_token(&req) {
            return self.take_handover(sealer, &app, &token, &format!("/install/{name}")).await;
        }
        let (visit, new_cookie) = self.visit(sealer, req.headers(), name);
        let mut resp = match app.config.model() {
            AuthModel::OAuth2 => self.start_consent(sealer, &app),
            _ => self.key_page(&app, &visit, sealer, StatusCode::OK, None),
        };
        if let Some(c) = new_cookie {
            set_cookie(&mut resp, &c);
        }
        resp
    }

    /// A form post's fields, after the origin, visit and CSRF checks.
    async fn install_form(
        &self,
        sealer: &Sealer,
        app: &str,
        req: Request<Incoming>,
    ) -> Result<(Visit, Vec<(String, String)>), Page> {
        let forbidden = |msg: &str| self.problem(StatusCode::FORBIDDEN, "This form cannot be used", msg);
        if !self.same_origin(req.headers()) {
            return Err(forbidden(
                "The form was sent from another site. Open the app from Pleo again and use the form there.",
            ));
        }
        let Some(visit) = Visit::read(sealer, req.headers(), app) else {
            return Err(forbidden("This page has expired. Open the app from Pleo again."));
        };
        let fields = self.read_form(req).await?;
        let csrf = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
        if !sealer.verify("install-csrf", &[&visit.nonce, &visit.app], csrf) {
            return Err(forbidden("The form's security token is missing or wrong. Open the app from Pleo again."));
        }
        Ok((visit, fields))
    }

    pub(super) async fn install_key(&self, name: &str, req: Request<Incoming>) -> Page {
        let (sealer, app) = match (self.sealer_or_page(), self.app_or_page(name)) {
            (Ok(s), Ok(a)) => (s, a),
            (Err(p), _) | (_, Err(p)) => return p,
        };
        if app.config.model() != AuthModel::IntegratedApiKey {
            return self.problem(
                StatusCode::CONFLICT,
                "This form cannot be used",
                "This app does not take an API key.",
            );
        }
        let (visit, fields) = match self.install_form(sealer, name, req).await {
            Ok(x) => x,
            Err(p) => return p,
        };
        let key = Secret::new(fields.into_iter().find(|(k, _)| k == "key").map(|(_, v)| v).unwrap_or_default());
        match self.installs.complete_key(&app, &key, visit.visitor().as_ref()).await {
            Ok(done) => self.installed_page(&app, &done),
            Err(f) if f.result == "mismatch" => self.failed_page(&f),
            Err(f) => {
                let status =
                    if f.result == "rejected" { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_GATEWAY };
                self.key_page(&app, &visit, sealer, status, Some(f.message))
            }
        }
    }

    pub(super) async fn install_callback(&self, name: &str, back: oauth::Back, headers: &HeaderMap) -> Page {
        let app = match self.app_or_page(name) {
            Ok(a) => a,
            Err(p) => return p,
        };
        let visitor = self.connections.sealer().and_then(|s| Visit::read(s, headers, name)).and_then(|v| v.visitor());
        let code = match back.outcome {
            Ok(code) => code,
            Err(error) => {
                self.installs.count(&app.name, "denied");
                let message = if error == "access_denied" {
                    "You chose not to give access, so nothing was stored. To install after all, open the app from Pleo again.".to_string()
                } else {
                    format!("Pleo did not complete the consent ({error}). Nothing was stored.")
                };
                return self.problem(StatusCode::OK, "Not installed", &message);
            }
        };
        let redirect_uri = format!("{}/oauth/callback", self.public_url);
        match self.installs.complete_oauth(&app, &code, &back.verifier, &redirect_uri, visitor.as_ref()).await {
            // Post/redirect/get: the result is shown at a clean URL, so the
            // (spent) code does not stay in the address bar or history.
            Ok(done) => match self.connections.sealer() {
                Some(sealer) => {
                    let mut resp = redirect(&format!("/install/{}/done", app.name));
                    set_cookie(&mut resp, &done_cookie(sealer, &app.name, &done.tenant, &self.public_url));
                    resp
                }
                None => self.installed_page(&app, &done),
            },
            Err(f) => self.failed_page(&f),
        }
    }

    /// `GET /install/<app>/done`: the result of the install this browser just made.
    pub(super) async fn install_done(&self, name: &str, req: Request<Incoming>) -> Page {
        let (sealer, app) = match (self.sealer_or_page(), self.app_or_page(name)) {
            (Ok(s), Ok(a)) => (s, a),
            (Err(p), _) | (_, Err(p)) => return p,
        };
        let record = read_done(sealer, req.headers(), name).and_then(|tenant| self.installs.find(&tenant));
        let Some(r) = record.filter(|r| *r.app == *app.name && r.is_installed()) else {
            return self.problem(
                StatusCode::NOT_FOUND,
                "Nothing to show here",
                "This page shows an install made in this browser a moment ago. Open the app from Pleo to install it.",
            );
        };
        let (resource, company_id) = crate::pleo::installation::parse_resource(&r.resource)
            .map_or(("company", String::new()), |(k, id)| (k.as_str(), id.to_string()));
        page(
            StatusCode::OK,
            InstalledPage {
                integration: &self.integration,
                app: &app.name,
                environment: app.config.environment.as_str(),
                resource,
                company_id: &company_id,
                status: &r.status,
                masked: None,
            }
            .render(),
            None,
        )
    }

    /// The Settings page's view of `app`'s install for the visitor's company.
    fn settings_view(&self, sealer: &Sealer, app: &App, visit: &Visit, notice: Option<String>) -> Page {
        let record = self.installs.of_company(app, &visit.company_id);
        let routes = self.routes.load();
        let install = record.map(|r| {
            let tenant = routes.tenants.get(&*r.tenant);
            let resource =
                crate::pleo::installation::parse_resource(&r.resource).map_or("company", |(k, _)| k.as_str());
            InstallView {
                company_id: visit.company_id.clone(),
                resource,
                environment: r.environment.as_str().to_string(),
                state: state_of(&r, tenant.map(|t| &**t)).to_string(),
                installation: r.status.to_string(),
                error_meaning: r
                    .error_code
                    .as_deref()
                    .map(|c| crate::pleo::installation::explain_error_code(c).to_string()),
                since: when(r.installed_at_ms),
                last_check: tenant.and_then(|t| last_check_ms(t)).or(Some(r.updated_at_ms)).map(when),
                last_error: r.last_error.as_deref().map(str::to_string),
                installed: r.is_installed(),
            }
        });
        page(
            StatusCode::OK,
            SettingsPage {
                integration: &self.integration,
                app: &app.name,
                install,
                notice,
                reconnect: format!("/settings/{}/reconnect", app.name),
                disconnect: format!("/settings/{}/disconnect", app.name),
                csrf: visit.csrf(sealer),
            }
            .render(),
            app.consent.as_ref().and_then(|c| origin_of(&c.authorize_url)).as_deref(),
        )
    }

    fn needs_handover(&self) -> Page {
        self.problem(
            StatusCode::UNAUTHORIZED,
            "Open this page from Pleo",
            "The settings of an app are opened from Pleo (Settings, then the app's Configure), so the gateway knows which company you manage.",
        )
    }

    pub(super) async fn settings_page(&self, name: &str, req: Request<Incoming>) -> Page {
        let (sealer, app) = match (self.sealer_or_page(), self.app_or_page(name)) {
            (Ok(s), Ok(a)) => (s, a),
            (Err(p), _) | (_, Err(p)) => return p,
        };
        if let Some(token) = handover_token(&req) {
            return self.take_handover(sealer, &app, &token, &format!("/settings/{name}")).await;
        }
        match Visit::read(sealer, req.headers(), name).filter(|v| !v.company_id.is_empty()) {
            Some(visit) => self.settings_view(sealer, &app, &visit, None),
            None => self.needs_handover(),
        }
    }

    /// A Settings form: the app, and the verified visit it was posted in.
    async fn settings_form(&self, name: &str, req: Request<Incoming>) -> Result<(&Sealer, Arc<App>, Visit), Page> {
        let sealer = self.sealer_or_page()?;
        let app = self.app_or_page(name)?;
        match self.install_form(sealer, name, req).await? {
            (v, _) if !v.company_id.is_empty() => Ok((sealer, app, v)),
            _ => Err(self.needs_handover()),
        }
    }

    pub(super) async fn settings_disconnect(&self, name: &str, req: Request<Incoming>) -> Page {
        let (sealer, app, visit) = match self.settings_form(name, req).await {
            Ok(x) => x,
            Err(p) => return p,
        };
        let Some(record) = self.installs.of_company(&app, &visit.company_id) else {
            return self.settings_view(
                sealer,
                &app,
                &visit,
                Some("Nothing to disconnect: the app is not installed.".into()),
            );
        };
        let notice = match self.installs.uninstall(&record.tenant, &Actor::Settings(visit.user.clone())).await {
            Ok(_) => {
                format!("{} is disconnected: Pleo revoked its access and the gateway forgot its credentials.", app.name)
            }
            Err(f) => f.message,
        };
        self.settings_view(sealer, &app, &visit, Some(notice))
    }

    pub(super) async fn settings_reconnect(&self, name: &str, req: Request<Incoming>) -> Page {
        let (sealer, app, visit) = match self.settings_form(name, req).await {
            Ok(x) => x,
            Err(p) => return p,
        };
        match app.config.model() {
            AuthModel::OAuth2 => self.start_consent(sealer, &app),
            _ => self.key_page(&app, &visit, sealer, StatusCode::OK, None),
        }
    }
}

/// The tenant's last OAuth refresh (or consent), or its key's last check with Pleo.
fn last_check_ms(t: &crate::proxy::routes::Tenant) -> Option<u64> {
    if let Some(session) = t.credential.session() {
        return session.obtained_at_ms();
    }
    let ago = std::time::Instant::now().saturating_duration_since(t.check.checked_at()?);
    Some(unix_now_ms().saturating_sub(ago.as_millis() as u64))
}

fn origin_of(u: &http::Uri) -> Option<String> {
    Some(format!("{}://{}", u.scheme_str()?, u.authority()?))
}
