//! Installs from Pleo's marketplace (docs/installs.md): a customer arrives
//! at an app's Initiation URI, consents (OAuth) or pastes the key Pleo
//! showed them (integrated keys), and a tenant exists, keyed by the company
//! Pleo reports. No operator step, no YAML.
//!
//! The rules every install follows:
//! - The company is the one Pleo reports after the consent or key check
//!   (the installation's `resource`), never one the browser sent. If a
//!   verified handover token named another company, nothing is stored.
//! - Written in one order: the credential (chain or sealed key) first, then
//!   the install record that makes it a tenant; if the record cannot be
//!   written, the credential is taken back. A tenant without a credential
//!   never exists; a credential without a record is never routed.
//! - One install of a tenant at a time on this replica (a lock per tenant);
//!   across replicas the token store's save replaces the chain whole, so
//!   two installs of one company end in one chain, never a mix.
//! - The routing table is rebuilt before the page says Connected, and other
//!   replicas hear of it by the store's notification.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use http::HeaderValue;

use crate::config::{AppAuth, AppConfig, AuthModel, Config, Limits};
use crate::credential::check::{check_key, CheckState, Detail};
use crate::credential::Sessions;
use crate::onboarding::{audit, meta_of, Actor, Onboarding};
use crate::pleo::authorize::ConsentClient;
use crate::pleo::handover::{Handover, Refusal, Verifier};
use crate::pleo::installation::{self, Call, Resource};
use crate::proxy::routes::{session_config, SharedRoutes};
use crate::secret::Secret;
use crate::state::{unix_now_ms, InstallRecord, OnboardedKey, StoreError};
use crate::upstream::{Upstream, Upstreams};

/// How installs ask for the routing table to be built again (the reloader
/// does it: it holds the config and the upstreams).
pub type Rebuild = Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// One configured app, ready to install.
#[derive(Debug)]
pub struct App {
    pub name: String,
    pub config: AppConfig,
    pub verifier: Arc<Verifier>,
    pub upstream: Arc<Upstream>,
    pub consent: Option<Arc<ConsentClient>>,
}

/// Where an install or uninstall ended, in words for the customer; the
/// result is the metric's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub result: &'static str,
    pub message: String,
}

fn failed(result: &'static str, message: impl Into<String>) -> Failed {
    Failed { result, message: message.into() }
}

/// A finished install, for the Connected page.
#[derive(Debug, Clone)]
pub struct Installed {
    pub tenant: String,
    pub company_id: String,
    pub resource: Resource,
    pub environment: &'static str,
    pub status: String,
    pub masked: Option<String>,
    pub reinstalled: bool,
}

/// Who the verified handover said the user is, carried from the first
/// redirect to the end of the install (a signed cookie, `pages::install`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Visitor {
    pub app: String,
    pub company_id: String,
    pub user: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// Where an install stands, in one word (`/tenants`, Settings, the
/// `pleo_gateway_installed_tenants` gauge): `uninstalled`, `app_removed`,
/// `uninstalled_or_revoked` (Pleo answered `invalid_grant`: the customer
/// removed the app on Pleo's side), or the credential's own state.
pub fn state_of(record: &InstallRecord, tenant: Option<&crate::proxy::routes::Tenant>) -> &'static str {
    if !record.is_installed() {
        return "uninstalled";
    }
    let Some(tenant) = tenant else { return "not_routed" };
    if tenant.install.as_ref().and_then(|i| i.idle) == Some(crate::proxy::routes::Idle::AppRemoved) {
        return "app_removed";
    }
    match &tenant.credential {
        // An installed key: what Pleo said about it last (connected, rejected, ...).
        crate::credential::Credential::Connected { slot } if slot.get().is_some() => tenant.check.state().as_str(),
        c => match c.state() {
            "reauthorization_required" => "uninstalled_or_revoked",
            other => other,
        },
    }
}

#[derive(Debug)]
pub struct Installs {
    pub onboarding: Arc<Onboarding>,
    sessions: Arc<Sessions>,
    routes: SharedRoutes,
    apps: ArcSwap<HashMap<String, Arc<App>>>,
    limits: ArcSwap<Limits>,
    /// Shared with the routing table's install tenants (one copy of each record).
    records: ArcSwap<Vec<Arc<InstallRecord>>>,
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    rebuild: OnceLock<RebuildHook>,
    installs_total: prometheus::IntCounterVec,
    handover_refused: prometheus::IntCounterVec,
    installed_tenants: prometheus::IntGaugeVec,
}

struct RebuildHook(Rebuild);

impl std::fmt::Debug for RebuildHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RebuildHook")
    }
}

impl Installs {
    pub fn new(
        onboarding: Arc<Onboarding>,
        sessions: Arc<Sessions>,
        routes: SharedRoutes,
        metrics: &crate::metrics::Metrics,
    ) -> Installs {
        Installs {
            onboarding,
            sessions,
            routes,
            apps: Default::default(),
            limits: Default::default(),
            records: Default::default(),
            locks: DashMap::new(),
            rebuild: OnceLock::new(),
            installs_total: metrics.installs_total.clone(),
            handover_refused: metrics.handover_refused_total.clone(),
            installed_tenants: metrics.installed_tenants.clone(),
        }
    }

    /// The apps of `config` (at start and on each reload). An app whose
    /// handover settings did not change keeps its verifier and its cached keys.
    pub fn configure(&self, config: &Config, upstreams: &Upstreams) {
        let old = self.apps.load();
        let mut apps = HashMap::new();
        for (name, a) in &config.apps {
            let upstream = upstreams.get(a.environment);
            let same = old.get(name).filter(|o| {
                o.config.handover.jwks_url == a.handover.jwks_url
                    && o.config.handover.issuer == a.handover.issuer
                    && o.config.handover.company_claim == a.handover.company_claim
                    && o.config.client_id() == a.client_id()
                    && o.config.environment == a.environment
            });
            let verifier = match same {
                Some(o) => o.verifier.clone(),
                None => Arc::new(Verifier::new(
                    a.handover.jwks_url.clone(),
                    &a.handover.issuer,
                    a.client_id(),
                    &a.handover.company_claim,
                    upstream.client().clone(),
                )),
            };
            let consent = match &a.auth {
                AppAuth::OAuth2 { client_id, client_secret } => Some(Arc::new(ConsentClient::new(
                    config,
                    a.environment,
                    client_id,
                    client_secret,
                    upstream.client().clone(),
                ))),
                AppAuth::IntegratedApiKey { .. } => None,
            };
            for r in ["installed", "reinstalled", "uninstalled", "denied", "mismatch", "rejected", "error"] {
                self.installs_total.with_label_values(&[name, r]);
            }
            apps.insert(
                name.clone(),
                Arc::new(App { name: name.clone(), config: a.clone(), verifier, upstream, consent }),
            );
        }
        self.apps.store(Arc::new(apps));
        self.limits.store(Arc::new(config.limits.clone()));
    }

    pub fn set_rebuild(&self, rebuild: Rebuild) {
        let _ = self.rebuild.set(RebuildHook(rebuild));
    }

    pub fn app(&self, name: &str) -> Option<Arc<App>> {
        self.apps.load().get(name).cloned()
    }

    /// The installs the routing table is built with.
    pub fn records(&self) -> Arc<Vec<Arc<InstallRecord>>> {
        self.records.load_full()
    }

    /// The installs read at start (the first routing table was built with them).
    pub fn set_records(&self, records: Vec<Arc<InstallRecord>>) {
        self.records.store(Arc::new(records));
    }

    /// Reads every install from the store (when another
    /// replica announces one), takes up connected keys, rebuilds routes.
    pub async fn load(&self) -> Result<usize, StoreError> {
        // The unchanged records stay the very ones the routing table holds:
        // nothing is copied, and their tenants are taken over as they are.
        let held = self.records.load_full();
        let records = self.onboarding.store.installs(&held).await?;
        drop(held);
        let n = records.len();
        self.records.store(Arc::new(records));
        if let Err(e) = self.onboarding.load().await {
            tracing::warn!(error = %e, "cannot read connected keys for installs");
        }
        self.rebuild_routes().await;
        Ok(n)
    }

    /// With a shared store: follows other replicas' installs as announced.
    pub fn spawn_follow(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(mut changes) = self.onboarding.store.install_changes() else { return };
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    c = changes.recv() => if let Err(tokio::sync::broadcast::error::RecvError::Closed) = c { return },
                    _ = stop.changed() => return,
                }
                // Several at once are read once.
                while changes.try_recv().is_ok() {}
                if let Err(e) = this.load().await {
                    tracing::warn!(error = %e, "cannot read installs from the store");
                }
            }
        });
    }

    async fn rebuild_routes(&self) {
        if let Some(hook) = self.rebuild.get() {
            (hook.0)().await;
        }
    }

    fn lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.entry(tenant.to_string()).or_default().clone()
    }

    /// Verifies a handover token for `app`, counting a refusal.
    pub async fn verify(&self, app: &App, token: &str) -> Result<Handover, Refusal> {
        let out = app.verifier.verify(token).await;
        if let Err(why) = &out {
            self.handover_refused.with_label_values(&[&app.name, why.reason()]).inc();
            tracing::warn!(app = %app.name, reason = why.reason(), "session handover token refused");
        }
        out
    }

    pub fn count(&self, app: &str, result: &str) {
        self.installs_total.with_label_values(&[app, result]).inc();
    }

    /// The tenant name `app` gives `company_id`, if it is one the gateway may create.
    fn tenant_for(&self, app: &App, company_id: &str) -> Result<String, Failed> {
        let tenant = app.config.tenant_name.render(&company_id.to_ascii_lowercase());
        let routes = self.routes.load();
        let taken = routes
            .tenants
            .get(tenant.as_str())
            .is_some_and(|t| t.install.as_ref().is_none_or(|i| *i.record.app != *app.name));
        if taken {
            return Err(failed(
                "error",
                "This company is already set up in the gateway in another way, so it cannot be installed here. \
                 Nothing was stored; ask the gateway's operator.",
            ));
        }
        Ok(tenant)
    }

    /// What Pleo says the credential is installed for: company (or
    /// organisation), resource kind and status; checked against `visitor`.
    fn company_check(
        &self,
        app: &App,
        detail: &Detail,
        visitor: Option<&Visitor>,
    ) -> Result<(String, Resource, String), Failed> {
        let (Some(company), Some(resource)) = (detail.company_id.clone(), detail.resource) else {
            return Err(failed(
                "error",
                "Pleo did not say which company this installation is for, so nothing was stored. Try again.",
            ));
        };
        if let Some(v) = visitor {
            if !v.company_id.eq_ignore_ascii_case(&company) {
                tracing::warn!(app = %app.name, "install refused: Pleo reports another company than the handover named");
                return Err(failed(
                    "mismatch",
                    "Pleo reports this installation for a different company from the one you came from. Nothing \
                     was stored. Start again from Pleo, signed in to the company you want to connect.",
                ));
            }
        }
        let status = detail.installation.map_or("unknown", |s| s.as_str()).to_string();
        Ok((company, resource, status))
    }

    /// An OAuth install: the code Pleo sent back, exchanged and stored.
    /// Every failure is counted under its result.
    pub async fn complete_oauth(
        &self,
        app: &App,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        visitor: Option<&Visitor>,
    ) -> Result<Installed, Failed> {
        let out = self.oauth_install(app, code, verifier, redirect_uri, visitor).await;
        self.count_failure(app, &out);
        out
    }

    /// An integrated-key install: the key the customer pasted, checked with
    /// Pleo, sealed and stored. Every failure is counted under its result.
    pub async fn complete_key(&self, app: &App, key: &Secret, visitor: Option<&Visitor>) -> Result<Installed, Failed> {
        let out = self.key_install(app, key, visitor).await;
        self.count_failure(app, &out);
        out
    }

    fn count_failure(&self, app: &App, out: &Result<Installed, Failed>) {
        if let Err(f) = out {
            self.count(&app.name, f.result);
        }
    }

    async fn oauth_install(
        &self,
        app: &App,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        visitor: Option<&Visitor>,
    ) -> Result<Installed, Failed> {
        let Some(consent) = &app.consent else { return Err(failed("error", "This app does not use OAuth.")) };
        let stored = consent.exchange(code, verifier, redirect_uri, None).await.map_err(|why| {
            tracing::warn!(app = %app.name, error = %why, "install: the code exchange failed");
            failed(
                "error",
                format!("Pleo did not complete the connection ({why}). Nothing was stored; start again from Pleo."),
            )
        })?;
        let bearer = stored
            .access_token
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {}", t.expose_secret())).ok())
            .ok_or_else(|| failed("error", "Pleo's answer had no access token. Nothing was stored."))?;
        let (_, detail) = check_key(&bearer, &app.upstream).await;
        let (company, resource, status) = self.company_check(app, &detail, visitor)?;
        let tenant = self.tenant_for(app, &company)?;
        let lock = self.lock(&tenant);
        let _held = lock.lock().await;
        let limits = self.limits.load();
        let session = self.sessions.get_or_start(session_config(&limits, tenant.as_str().into(), consent, None));
        // The chain first: a tenant never exists without its credential.
        if let Err(e) = session.new_consent(stored).await {
            tracing::error!(tenant = %tenant, error = %e, "install: cannot store the new consent");
            return Err(failed(
                "error",
                "The gateway cannot reach its store just now. Nothing was stored; start again from Pleo.",
            ));
        }
        let status = self.activate(app, &bearer, status).await;
        let record = self.record(app, &tenant, resource.urn(&company), status, visitor);
        if let Err(e) = self.put(&record).await {
            tracing::error!(tenant = %tenant, error = %e, "install: cannot store the install; taking the consent back");
            if let Err(e) = session.disconnect().await {
                tracing::error!(tenant = %tenant, error = %e, "install: cannot take the consent back either");
            }
            return Err(failed(
                "error",
                "The gateway cannot reach its store just now. Nothing was stored; start again from Pleo.",
            ));
        }
        Ok(self.finish(app, record, company, resource, None).await)
    }

    async fn key_install(&self, app: &App, key: &Secret, visitor: Option<&Visitor>) -> Result<Installed, Failed> {
        let Some(sealer) = self.onboarding.sealer() else {
            return Err(failed("error", "store.encryption_key is not configured; nothing was saved."));
        };
        let key_text = key.expose_secret().trim();
        if !crate::secret::is_header_safe(key_text) || key_text.is_empty() || key_text.len() > 4096 {
            return Err(failed(
                "rejected",
                "That is not an API key: paste the whole key, without spaces or line breaks. Nothing was saved.",
            ));
        }
        let key = Secret::new(key_text);
        let authorization = crate::credential::basic_value(&key);
        let header = HeaderValue::from_str(authorization.expose_secret())
            .map_err(|_| failed("rejected", "That is not an API key. Nothing was saved."))?;
        let env = app.config.environment.as_str();
        let (state, detail) = check_key(&header, &app.upstream).await;
        let refused = |result: &'static str, message: String| Err(failed(result, message));
        match state {
            CheckState::Connected => {}
            CheckState::Rejected => {
                return refused(
                    "rejected",
                    format!(
                        "Pleo did not accept this key ({}). Check that it is the whole key Pleo showed you, for Pleo's \
                         {env} environment. Nothing was saved.",
                        detail.status.unwrap_or_default()
                    ),
                )
            }
            CheckState::Degraded => {
                return refused(
                    "rejected",
                    format!(
                        "Pleo accepted the key, but reports its installation as not active ({}). Nothing was saved.",
                        crate::credential::check::describe(state, &detail)
                    ),
                )
            }
            CheckState::Unverified | CheckState::Pending => {
                return refused(
                    "error",
                    "Pleo could not be asked about the key just now. Nothing was saved; try again in a minute.".into(),
                )
            }
        }
        let (company, resource, status) = self.company_check(app, &detail, visitor)?;
        let tenant = self.tenant_for(app, &company)?;
        let lock = self.lock(&tenant);
        let _held = lock.lock().await;
        let onboarded = OnboardedKey {
            tenant: tenant.clone(),
            model: AuthModel::IntegratedApiKey.as_str().to_string(),
            sealed_key: Some(sealer.seal(&tenant, &key)),
            masked: format!("key {}", key.masked()),
            company_id: Some(company.clone()),
            connected_at_ms: unix_now_ms(),
            link_id: None,
            by: format!("install:{}", app.name),
        };
        if let Err(e) = self.onboarding.store.put_onboarded(&onboarded).await {
            tracing::error!(tenant = %tenant, error = %e, "install: cannot store the key");
            return Err(failed(
                "error",
                "The key works, but the gateway cannot reach its store just now. Nothing was saved; try again.",
            ));
        }
        let status = self.activate(app, &header, status).await;
        let record = self.record(app, &tenant, resource.urn(&company), status, visitor);
        if let Err(e) = self.put(&record).await {
            tracing::error!(tenant = %tenant, error = %e, "install: cannot store the install; taking the key back");
            let _ = self.onboarding.store.delete_onboarded(&tenant).await;
            return Err(failed("error", "The gateway cannot reach its store just now. Nothing was saved; try again."));
        }
        self.sessions.key_slot(&tenant).set(&key, meta_of(&onboarded));
        Ok(self.finish(app, record, company, resource, Some(onboarded.masked)).await)
    }

    /// `activate: on_connect`: Pleo's status after activation (or the one
    /// before, if the call did not go through: the page says so).
    async fn activate(&self, app: &App, authorization: &HeaderValue, status: String) -> String {
        if !app.config.activate_on_connect || status == "ACTIVATED" {
            return status;
        }
        match installation::call(&app.upstream, Call::Activate, authorization, "pleo-gateway-install").await {
            Ok((s, body)) if s.is_success() => installation::parse(&body).status.as_str().to_string(),
            Ok((s, _)) => {
                tracing::warn!(app = %app.name, status = %s, "install: Pleo refused the activation");
                status
            }
            Err(e) => {
                tracing::warn!(app = %app.name, error = %e, "install: the activation did not go through");
                status
            }
        }
    }

    fn record(
        &self,
        app: &App,
        tenant: &str,
        resource: String,
        status: String,
        visitor: Option<&Visitor>,
    ) -> InstallRecord {
        let now = unix_now_ms();
        let before = self.find(tenant);
        let installed_at_ms = before.as_ref().filter(|b| b.is_installed()).map_or(now, |b| b.installed_at_ms);
        InstallRecord {
            tenant: tenant.into(),
            app: app.name.as_str().into(),
            environment: app.config.environment,
            model: app.config.model(),
            resource: resource.into(),
            status: status.into(),
            error_code: None,
            installed_by: visitor.map(|v| v.user.as_str().into()).or_else(|| before.and_then(|b| b.installed_by)),
            installed_at_ms,
            updated_at_ms: now,
            uninstalled_at_ms: None,
            uninstalled_by: None,
            last_error: None,
        }
    }

    /// Stores `record` and takes it up here (the routing table follows).
    async fn put(&self, record: &InstallRecord) -> Result<(), StoreError> {
        self.onboarding.store.put_install(record).await?;
        // Arcs: an install copies pointers, not every record.
        let mut all: Vec<Arc<InstallRecord>> =
            self.records.load().iter().filter(|r| r.tenant != record.tenant).cloned().collect();
        all.push(Arc::new(record.clone()));
        self.records.store(Arc::new(all));
        Ok(())
    }

    async fn finish(
        &self,
        app: &App,
        record: InstallRecord,
        company_id: String,
        resource: Resource,
        masked: Option<String>,
    ) -> Installed {
        let reinstalled = self.routes.load().tenants.get(&*record.tenant).is_some_and(|t| t.install.is_some());
        self.rebuild_routes().await;
        let result = if reinstalled { "reinstalled" } else { "installed" };
        self.count(&app.name, result);
        let by = Actor::Install(record.installed_by.as_deref().unwrap_or("unknown").to_string());
        audit("install", &record.tenant, &by, result);
        Installed {
            tenant: record.tenant.to_string(),
            company_id,
            resource,
            environment: app.config.environment.as_str(),
            status: record.status.to_string(),
            masked,
            reinstalled,
        }
    }

    /// Sets `pleo_gateway_installed_tenants` from the routing table (at scrape time).
    pub fn update_gauges(&self) {
        let gauge = &self.installed_tenants;
        gauge.reset();
        let routes = self.routes.load();
        for t in routes.tenants.values() {
            let Some(i) = &t.install else { continue };
            let resource =
                crate::pleo::installation::parse_resource(&i.record.resource).map_or("company", |(k, _)| k.as_str());
            let status = match state_of(&i.record, Some(t)) {
                s @ ("uninstalled" | "app_removed" | "uninstalled_or_revoked") => s.to_string(),
                _ => i.record.status.to_ascii_lowercase(),
            };
            gauge.with_label_values(&[&i.record.app, resource, &status]).inc();
        }
    }

    /// The install of `tenant`, if any.
    pub fn find(&self, tenant: &str) -> Option<InstallRecord> {
        self.records.load().iter().find(|r| *r.tenant == *tenant).map(|r| InstallRecord::clone(r))
    }

    /// The installed tenant of `app` for `company_id`, if any.
    pub fn of_company(&self, app: &App, company_id: &str) -> Option<InstallRecord> {
        self.find(&app.config.tenant_name.render(&company_id.to_ascii_lowercase())).filter(|r| *r.app == *app.name)
    }

    /// Uninstalls `tenant`: Pleo's `DELETE /v1/installations/me` with its
    /// credential, then the credential is forgotten and the tenant marked
    /// uninstalled. If Pleo cannot be reached, nothing changes.
    pub async fn uninstall(&self, tenant: &str, by: &Actor) -> Result<InstallRecord, Failed> {
        let Some(mut record) = self.find(tenant) else {
            return Err(failed("error", format!("`{tenant}` is not a tenant an install made.")));
        };
        if !record.is_installed() {
            return Ok(record);
        }
        let lock = self.lock(tenant);
        let _held = lock.lock().await;
        let routes = self.routes.load_full();
        let routed = routes.tenants.get(tenant).cloned();
        let authorization = match routed.as_ref().map(|t| &t.credential) {
            Some(crate::credential::Credential::OAuth { session, .. }) => session.authorization().await.ok(),
            Some(c) => c.key_authorization(),
            None => None,
        };
        if let Some(authorization) = &authorization {
            let up = routed.as_ref().map(|t| t.upstream.clone()).expect("routed when it has a credential");
            match installation::call(&up, Call::Uninstall, authorization, "pleo-gateway-install").await {
                // Gone already (or the credential was revoked with it): uninstalled either way.
                Ok((s, _)) if s.is_success() || s.as_u16() == 401 || s.as_u16() == 403 || s.as_u16() == 404 => {}
                Ok((s, _)) => {
                    self.count(&record.app, "error");
                    return Err(failed(
                        "error",
                        format!("Pleo answered the uninstall with {s}. Nothing changed; try again later."),
                    ));
                }
                Err(e) => {
                    self.count(&record.app, "error");
                    return Err(failed(
                        "error",
                        format!("Pleo could not be reached ({e}). Nothing changed; try again."),
                    ));
                }
            }
        }
        if let Some(session) = self.sessions.session(tenant) {
            if let Err(e) = session.disconnect().await {
                tracing::error!(tenant, error = %e, "uninstall: cannot mark the chain as needing a new consent");
            }
        }
        let _ = self.onboarding.store.delete_onboarded(tenant).await;
        self.sessions.key_slot(tenant).clear();
        let now = unix_now_ms();
        record.uninstalled_at_ms = Some(now);
        record.updated_at_ms = now;
        record.uninstalled_by = Some(by.label().into());
        record.status = "UNINSTALLED".into();
        if let Err(e) = self.put(&record).await {
            tracing::error!(tenant, error = %e, "uninstall: Pleo uninstalled, but the record could not be stored");
            return Err(failed(
                "error",
                "Pleo removed the installation, but the gateway could not record it. Try again.",
            ));
        }
        self.rebuild_routes().await;
        self.count(&record.app, "uninstalled");
        audit("uninstall", tenant, by, "ok");
        Ok(record)
    }
}
