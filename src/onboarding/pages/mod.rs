//! The customer-facing connect pages, on their own listener (`connect.listen`,
//! reached as `connect.public_url`): a connect link's page, the API-key form
//! ("Save and test connection"), the OAuth start ("Connect to Pleo") and its
//! callback. No JavaScript; every form carries a CSRF token bound to its
//! link, and POSTs a browser marks cross-site are refused as well.
//!
//! Paths: `GET /c/{token}`, `POST /c/{token}/key`, `POST /c/{token}/oauth`,
//! `GET /oauth/callback`, `GET /assets/connect.css`.

mod install;
mod oauth;
pub mod views;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::AuthModel;
use crate::credential::Sessions;
use crate::onboarding::{Actor, Onboarding};
use crate::proxy::routes::{SharedRoutes, Tenant};
use crate::secret::Secret;
use crate::state::{LinkRecord, LinkState};
use views::{page, problem, ConnectedPage, LinkPage};

/// The largest form accepted (a key is far smaller).
const MAX_FORM: usize = 8 * 1024;
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Portal {
    pub routes: SharedRoutes,
    pub connections: Arc<Onboarding>,
    pub sessions: Arc<Sessions>,
    pub installs: Arc<crate::onboarding::installs::Installs>,
    pub integration: String,
    /// `connect.public_url`: its origin is the only one a form may come from.
    pub public_url: String,
    /// The pages are served over TLS (`connect.tls`): `Strict-Transport-Security` on every answer.
    pub hsts: bool,
}

pub(super) type Page = Response<Full<Bytes>>;

/// The connect pages' service, ready for `listener::serve`.
pub fn service(
    portal: Arc<Portal>,
) -> impl tower::Service<Request<Incoming>, Response = Page, Error = Infallible, Future: Send> + Clone + Send {
    tower::service_fn(move |req: Request<Incoming>| {
        let portal = portal.clone();
        async move {
            let mut resp = portal.handle(req).await;
            if portal.hsts {
                // Served over TLS (`connect.tls`): browsers keep to https from now on.
                resp.headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
            }
            Ok::<_, Infallible>(resp)
        }
    })
}

impl Portal {
    async fn handle(&self, req: Request<Incoming>) -> Page {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method().clone(), segments.as_slice()) {
            (Method::GET | Method::HEAD, ["assets", "connect.css"]) => {
                let mut resp = Response::new(Full::new(Bytes::from_static(views::STYLE.as_bytes())));
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css"));
                views::secure(&mut resp, None);
                resp
            }
            (Method::GET | Method::HEAD, ["c", token]) => self.link_page(token).await,
            (Method::POST, ["c", token, "key"]) => self.key_form(token, req).await,
            (Method::POST, ["c", token, "oauth"]) => self.oauth_start(token, req).await,
            (Method::GET, ["oauth", "callback"]) => self.oauth_callback(req).await,
            (Method::GET | Method::HEAD, ["install", app]) => self.install_page(app, req).await,
            (Method::POST, ["install", app, "key"]) => self.install_key(app, req).await,
            (Method::GET | Method::HEAD, ["install", app, "done"]) => self.install_done(app, req).await,
            (Method::GET | Method::HEAD, ["settings", app]) => self.settings_page(app, req).await,
            (Method::POST, ["settings", app, "disconnect"]) => self.settings_disconnect(app, req).await,
            (Method::POST, ["settings", app, "reconnect"]) => self.settings_reconnect(app, req).await,
            _ => self.problem(
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is no page here. Open the connect link you were sent.",
            ),
        }
    }

    pub(super) fn problem(&self, status: StatusCode, title: &str, message: &str) -> Page {
        problem(&self.integration, status, title, message)
    }

    /// The link and its tenant, or the page that says why not.
    async fn usable_link(&self, token: &str) -> Result<(LinkRecord, Arc<Tenant>), Page> {
        let found = match self.connections.open_link(token).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read connect links");
                return Err(self.problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again in a moment",
                    "The gateway cannot read its store just now. Nothing was changed.",
                ));
            }
        };
        let Some((link, state)) = found else {
            return Err(self.problem(
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "Check that you opened the whole link. Ask whoever sent it for a new one.",
            ));
        };
        if let Some(refusal) = self.refusal(state) {
            return Err(refusal);
        }
        match self.routes.load().tenants.get(link.tenant.as_str()) {
            Some(t) => Ok((link, t.clone())),
            None => Err(self.problem(
                StatusCode::GONE,
                "This link can no longer be used",
                "The account it was made for is no longer set up in the gateway. Ask whoever sent it for a new one.",
            )),
        }
    }

    fn refusal(&self, state: LinkState) -> Option<Page> {
        let (status, title, message) = match state {
            LinkState::Usable => return None,
            LinkState::Used => (
                StatusCode::GONE,
                "This link has already been used",
                "A connect link works once, and this one was used. If you need to connect again, ask for a new link.",
            ),
            LinkState::Expired => {
                (StatusCode::GONE, "This link has expired", "Ask whoever sent it for a new connect link.")
            }
            LinkState::Revoked => {
                (StatusCode::GONE, "This link was withdrawn", "Ask whoever sent it for a new connect link.")
            }
            LinkState::Locked => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "This link was tried too many times and is now locked. Ask whoever sent it for a new one.",
            ),
        };
        Some(self.problem(status, title, message))
    }

    fn csrf(&self, link: &LinkRecord) -> String {
        self.connections.sealer().map(|s| s.sign("csrf", &[&link.token_sha256])).unwrap_or_default()
    }

    fn link_form(
        &self,
        token: &str,
        link: &LinkRecord,
        tenant: &Tenant,
        error: Option<String>,
    ) -> Result<String, askama::Error> {
        let oauth = tenant.model == AuthModel::OAuth2;
        let expires =
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(link.expires_at_ms))
                .to_string();
        LinkPage {
            integration: &self.integration,
            tenant: &tenant.id,
            environment: tenant.environment.as_str(),
            oauth,
            action: format!("/c/{token}/{}", if oauth { "oauth" } else { "key" }),
            csrf: self.csrf(link),
            error,
            expires: Some(expires.replace('T', " ").replace('Z', " UTC")),
        }
        .render()
    }

    fn form_origin(&self, tenant: &Tenant) -> Option<String> {
        let consent = tenant.consent.as_ref()?;
        let u = &consent.authorize_url;
        Some(format!("{}://{}", u.scheme_str()?, u.authority()?))
    }

    async fn link_page(&self, token: &str) -> Page {
        let (link, tenant) = match self.usable_link(token).await {
            Ok(x) => x,
            Err(page) => return page,
        };
        if !tenant.from_connection && tenant.model != AuthModel::OAuth2 {
            return self.problem(
                StatusCode::CONFLICT,
                "This account is set up by the operator",
                "Its key is configured in the gateway itself, so there is nothing to connect here.",
            );
        }
        let form_to = self.form_origin(&tenant);
        page(StatusCode::OK, self.link_form(token, &link, &tenant, None), form_to.as_deref())
    }

    /// The check every form POST passes before it is read: a browser that
    /// marks the request cross-site (`Sec-Fetch-Site`), or names another
    /// origin, is refused. Our pages say `Referrer-Policy: same-origin`, so
    /// a browser's same-origin form post carries our real origin: `Origin:
    /// null` (a sandboxed frame, a data: page, a privacy redirect) is refused
    /// like any other origin, also from browsers without Fetch Metadata. No
    /// `Origin` at all is not a browser's form post; the form's CSRF token
    /// is checked either way.
    pub(crate) fn same_origin(&self, headers: &HeaderMap) -> bool {
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s != "same-origin" && s != "none") {
            return false;
        }
        match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(origin) => {
                self.public_url.strip_prefix(origin).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }

    /// A form's fields, after the origin and CSRF checks for `link`.
    async fn form(&self, req: Request<Incoming>, link: &LinkRecord) -> Result<Vec<(String, String)>, Page> {
        let forbidden = |msg: &str| self.problem(StatusCode::FORBIDDEN, "This form cannot be used", msg);
        if !self.same_origin(req.headers()) {
            return Err(forbidden(
                "The form was sent from another site. Open the connect link again and use the form there.",
            ));
        }
        let fields = self.read_form(req).await?;
        let csrf = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
        let valid = self.connections.sealer().is_some_and(|s| s.verify("csrf", &[&link.token_sha256], csrf));
        if !valid {
            return Err(forbidden(
                "The form does not belong to this link (its security token is missing or wrong). Open the connect link again.",
            ));
        }
        Ok(fields)
    }

    /// A urlencoded form body: bounded in size and time.
    pub(super) async fn read_form(&self, req: Request<Incoming>) -> Result<Vec<(String, String)>, Page> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(self.problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "This form cannot be used",
                "Send the form from the page it is on.",
            ));
        }
        let body = match tokio::time::timeout(FORM_TIMEOUT, Limited::new(req.into_body(), MAX_FORM).collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => {
                return Err(self.problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "This form cannot be used",
                    "The form was too large or too slow.",
                ))
            }
        };
        Ok(form_urlencoded::parse(&body).into_owned().collect())
    }

    /// Counts an attempt; `Err` with the page when the link is now spent.
    async fn attempt(&self, link: &LinkRecord) -> Result<(), Page> {
        match self.connections.store.attempt(&link.token_sha256, crate::state::unix_now_ms()).await {
            Ok(Some(after)) => match self.refusal(after.state(crate::state::unix_now_ms())) {
                None => Ok(()),
                Some(page) => Err(page),
            },
            Ok(None) => {
                Err(self.problem(StatusCode::NOT_FOUND, "This link is not valid", "Ask for a new connect link."))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot count a connect link attempt");
                Err(self.problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again in a moment",
                    "The gateway cannot reach its store just now. Nothing was changed.",
                ))
            }
        }
    }

    async fn key_form(&self, token: &str, req: Request<Incoming>) -> Page {
        let (link, tenant) = match self.usable_link(token).await {
            Ok(x) => x,
            Err(page) => return page,
        };
        if tenant.model == AuthModel::OAuth2 || !tenant.from_connection {
            return self.problem(
                StatusCode::CONFLICT,
                "This form cannot be used",
                "This account does not take an API key here.",
            );
        }
        let fields = match self.form(req, &link).await {
            Ok(f) => f,
            Err(page) => return page,
        };
        if let Err(page) = self.attempt(&link).await {
            return page;
        }
        let key = Secret::new(fields.into_iter().find(|(k, _)| k == "key").map(|(_, v)| v).unwrap_or_default());
        let again = |status: StatusCode, message: String| {
            page(status, self.link_form(token, &link, &tenant, Some(message)), None)
        };
        let now = crate::state::unix_now_ms();
        match self.connections.store.claim(&link.token_sha256, now).await {
            Ok(true) => {}
            Ok(false) => return self.refusal(LinkState::Used).expect("a refusal"),
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a connect link");
                return again(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The gateway cannot reach its store just now. Nothing was saved; try again.".into(),
                );
            }
        }
        let by = Actor::Link(link.id.clone());
        match self.connections.connect_key(&tenant, &key, &by, Some(&link.id)).await {
            Ok(done) => page(
                StatusCode::OK,
                ConnectedPage {
                    integration: &self.integration,
                    tenant: &tenant.id,
                    environment: tenant.environment.as_str(),
                    company_id: done.company_id,
                    organisation: done.resource == Some(crate::pleo::installation::Resource::Organisation),
                    masked: Some(done.masked),
                }
                .render(),
                None,
            ),
            Err(refused) => {
                // Nothing was stored: the link stays usable for another try.
                if let Err(e) = self.connections.store.unclaim(&link.token_sha256, now).await {
                    tracing::error!(error = %e, "cannot give a connect link back after a failed attempt");
                }
                let status = match refused.result {
                    "unreachable" => StatusCode::BAD_GATEWAY,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                again(status, refused.message)
            }
        }
    }

    async fn oauth_start(&self, token: &str, req: Request<Incoming>) -> Page {
        let (link, tenant) = match self.usable_link(token).await {
            Ok(x) => x,
            Err(page) => return page,
        };
        let Some(consent) = tenant.consent.clone() else {
            return self.problem(
                StatusCode::CONFLICT,
                "This form cannot be used",
                "This account does not connect with OAuth.",
            );
        };
        if let Err(page) = self.form(req, &link).await {
            return page;
        }
        if let Err(page) = self.attempt(&link).await {
            return page;
        }
        let Some(sealer) = self.connections.sealer() else {
            return self.problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not available",
                "The gateway has no encryption key configured.",
            );
        };
        let started = oauth::start(sealer, &link.token_sha256, &consent, &self.public_url);
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&started.location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&oauth::cookie(&started.nonce, &self.public_url)) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        views::secure(&mut resp, self.form_origin(&tenant).as_deref());
        resp
    }

    async fn oauth_callback(&self, req: Request<Incoming>) -> Page {
        let Some(sealer) = self.connections.sealer() else {
            return self.problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not available",
                "The gateway has no encryption key configured.",
            );
        };
        let back = match oauth::callback(sealer, req.uri(), req.headers()) {
            Ok(b) => b,
            Err(why) => return self.problem(StatusCode::BAD_REQUEST, "This answer cannot be used", &why),
        };
        if let Some(app) = back.link_hash.strip_prefix(install::STATE_PREFIX) {
            let app = app.to_string();
            let mut resp = self.install_callback(&app, back, req.headers()).await;
            clear_cookie(&mut resp, &self.public_url);
            return resp;
        }
        let found = self.connections.store.link(&back.link_hash).await;
        let link = match found {
            Ok(Some(l)) => l,
            Ok(None) => {
                return self.problem(StatusCode::NOT_FOUND, "This link is not valid", "Ask for a new connect link.")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read connect links");
                return self.problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again in a moment",
                    "The gateway cannot reach its store just now. Nothing was stored.",
                );
            }
        };
        if let Some(page) = self.refusal(link.state(crate::state::unix_now_ms())) {
            return page;
        }
        let Some(tenant) = self.routes.load().tenants.get(link.tenant.as_str()).cloned() else {
            return self.problem(
                StatusCode::GONE,
                "This link can no longer be used",
                "The account is no longer set up in the gateway.",
            );
        };
        let by = Actor::Link(link.id.clone());
        let code = match back.outcome {
            Ok(code) => code,
            Err(error) => {
                self.connections.count(AuthModel::OAuth2, "denied");
                crate::onboarding::audit("connect_oauth", &tenant.id, &by, "denied");
                let message = if error == "access_denied" {
                    "You chose not to give access. Nothing was stored. To connect after all, open the link again."
                        .to_string()
                } else {
                    format!("Pleo did not complete the consent ({error}). Nothing was stored. Open the link again to retry.")
                };
                let mut resp = self.problem(StatusCode::OK, "Not connected", &message);
                clear_cookie(&mut resp, &self.public_url);
                return resp;
            }
        };
        let mut resp = self.finish_oauth(&link, &tenant, &code, &back.verifier, &by).await;
        clear_cookie(&mut resp, &self.public_url);
        resp
    }

    async fn finish_oauth(
        &self,
        link: &LinkRecord,
        tenant: &Arc<Tenant>,
        code: &str,
        verifier: &str,
        by: &Actor,
    ) -> Page {
        let failed = |this: &Self, result: &str, message: &str| {
            this.connections.count(AuthModel::OAuth2, if result == "store" { "error" } else { result });
            crate::onboarding::audit("connect_oauth", &tenant.id, by, result);
            this.problem(StatusCode::BAD_GATEWAY, "Not connected", message)
        };
        let (Some(consent), Some(session)) = (tenant.consent.clone(), self.sessions.session(&tenant.id)) else {
            return self.problem(
                StatusCode::CONFLICT,
                "This link can no longer be used",
                "The account no longer connects with OAuth.",
            );
        };
        let now = crate::state::unix_now_ms();
        match self.connections.store.claim(&link.token_sha256, now).await {
            Ok(true) => {}
            Ok(false) => return self.refusal(LinkState::Used).expect("a refusal"),
            Err(_) => {
                return failed(
                    self,
                    "store",
                    "The gateway cannot reach its store just now. Nothing was stored; open the link again.",
                )
            }
        }
        let stored = consent
            .exchange(code, verifier, &format!("{}/oauth/callback", self.public_url), session.initial_fingerprint())
            .await;
        let stored = match stored {
            Ok(s) => s,
            Err(why) => {
                let _ = self.connections.store.unclaim(&link.token_sha256, now).await;
                tracing::warn!(tenant = %tenant.id, error = %why, "connect link: the code exchange failed");
                return failed(
                    self,
                    "error",
                    &format!("Pleo did not complete the connection ({why}). Nothing was stored; open the link again."),
                );
            }
        };
        // What the gateway can say about the company: Pleo's installation
        // document, asked with the new token (best effort: not every API answers it).
        let bearer = stored
            .access_token
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {}", t.expose_secret())).ok());
        if let Err(e) = session.new_consent(stored).await {
            let _ = self.connections.store.unclaim(&link.token_sha256, now).await;
            tracing::error!(tenant = %tenant.id, error = %e, "connect link: cannot store the new consent");
            return failed(self, "store", "The gateway could not store the connection. Open the link again to retry.");
        }
        if let Err(e) = self.connections.record_oauth(&tenant.id, by, Some(&link.id)).await {
            tracing::warn!(tenant = %tenant.id, error = %e, "connect link: connected, but the connection record was not stored");
        }
        self.connections.count(AuthModel::OAuth2, "connected");
        crate::onboarding::audit("connect_oauth", &tenant.id, by, "connected");
        let (company_id, resource) = match bearer {
            Some(b) => {
                let d = crate::credential::check::check_key(&b, &tenant.upstream).await.1;
                (d.company_id, d.resource)
            }
            None => (None, None),
        };
        page(
            StatusCode::OK,
            ConnectedPage {
                integration: &self.integration,
                tenant: &tenant.id,
                environment: tenant.environment.as_str(),
                company_id,
                organisation: resource == Some(crate::pleo::installation::Resource::Organisation),
                masked: None,
            }
            .render(),
            None,
        )
    }
}

/// The values of the cookies named `name` a request carries, in order.
pub(super) fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl DoubleEndedIterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| c.trim().strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

fn clear_cookie(resp: &mut Page, public_url: &str) {
    if let Ok(v) = HeaderValue::from_str(&oauth::clear_cookie(public_url)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}
