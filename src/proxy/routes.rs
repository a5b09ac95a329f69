//! The routing table: everything a request needs, prepared when the config
//! loads (tenant lookup, credential header values, upstream handles, metric
//! handles) so the hot path parses nothing and takes no lock. Requests read a
//! snapshot through `ArcSwap`; `observe` loads it once per request and every
//! later step reads that same snapshot, so a reload never splits a request.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderName;

use crate::access_log::AccessLogConfig;
use crate::clients::{ClientKeys, LegacyTokens};
use crate::config::{AppAuth, AuthConfig, TenantConfig};
use crate::config::{AuthModel, BrowserPolicy, Config, Environment, Selector};
use crate::credential::check::KeyCheck;
use crate::credential::refresh::SessionConfig;
use crate::credential::{static_authorization, Credential, Sessions};
use crate::metrics::{Metrics, TenantMetrics};
use crate::pleo::authorize::ConsentClient;
use crate::state::InstallRecord;
use crate::upstream::Upstream;
use crate::upstream::Upstreams;

/// One tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    /// One allocation for the name: the table's key and the access log's
    /// label are this same `Arc` (at 100,000 tenants, three copies were
    /// ~10 MB).
    pub id: Arc<str>,
    pub environment: Environment,
    pub model: AuthModel,
    pub credential: Credential,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<TenantMetrics>,
    /// API-key tenants: what `GET /v1/installations/me` said about the key.
    /// Carried over a reload when the tenant's key and environment did not
    /// change, so a reload asks Pleo only about new and changed keys.
    pub check: Arc<KeyCheck>,
    /// Opt-in: the company id goes on each request (boxed: rare, and ~50
    /// bytes inline in each of 100,000 tenants).
    pub company_id: Option<Box<CompanyIdTo>>,
    /// Requests in flight for this tenant, against `max_in_flight_per_tenant`.
    pub in_flight: crate::share::Share,
    /// Managed OAuth tenants: what a connect link's consent needs.
    pub consent: Option<Arc<ConsentClient>>,
    /// The credential is made on a connect link (`source: connection`, or
    /// managed OAuth without a refresh_token in the config).
    pub from_connection: bool,
    /// Tenants an install from Pleo made: the install, and why it is idle.
    pub install: Option<TenantInstall>,
    /// The tenant's own `rewrites`, each with its counter (tried before `Routes::rewrites`).
    pub rewrites: Box<[Rewrite]>,
    /// The other environment, for the key check's interlock only
    /// (`check_key_interlocked`); requests never go there.
    pub interlock: Arc<Upstream>,
    /// Where Pleo's 404/405 answers are counted (`GET /migration`).
    pub migration: Arc<crate::migration::MigrationLog>,
}

impl Tenant {
    /// How the access log names it.
    pub fn labels(&self) -> crate::access_log::TenantLabels {
        crate::access_log::TenantLabels { name: self.id.clone(), model: self.model, environment: self.environment }
    }
}

/// Where a tenant's requests carry the company id (`company_id_header`,
/// `company_id_query`).
#[derive(Debug)]
pub struct CompanyIdTo {
    pub header: Option<HeaderName>,
    pub query: Option<Box<str>>,
}

/// What a tenant an install made carries beside its credential.
#[derive(Debug)]
pub struct TenantInstall {
    /// The same record `Installs` lists (shared, not copied).
    pub record: Arc<InstallRecord>,
    /// `app:<name>`: what a client's `tenants` names to reach every install
    /// of the app (one per app, shared by its installs).
    pub grant: Arc<str>,
    /// Why it serves nothing, if it does not.
    pub idle: Option<Idle>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Uninstalled (Settings, the API, or Pleo's side).
    Uninstalled,
    /// Its app is no longer in the config, or no longer in the install's
    /// environment or auth model.
    AppRemoved,
}

impl Idle {
    pub fn as_str(self) -> &'static str {
        match self {
            Idle::Uninstalled => "uninstalled",
            Idle::AppRemoved => "app_removed",
        }
    }
}

/// The tenant config an install stands for: its app's credential settings,
/// or (idle) a slot nothing fills, so nothing is ever sent for it.
fn installed(config: &Config, r: &Arc<InstallRecord>, grant: Arc<str>) -> (TenantConfig, TenantInstall) {
    let app = config.apps.get(&*r.app).filter(|a| a.environment == r.environment && a.model() == r.model);
    let idle = if !r.is_installed() {
        Some(Idle::Uninstalled)
    } else if app.is_none() {
        Some(Idle::AppRemoved)
    } else {
        None
    };
    let environment = r.environment;
    let auth = match (app, idle) {
        (Some(app), None) => match &app.auth {
            AppAuth::OAuth2 { client_id, client_secret } => AuthConfig::OAuth2Managed {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                refresh_token: None,
            },
            AppAuth::IntegratedApiKey { .. } => AuthConfig::ApiKeyConnection { model: AuthModel::IntegratedApiKey },
        },
        _ => AuthConfig::ApiKeyConnection { model: r.model },
    };
    let t = TenantConfig { environment, auth, company_id_header: None, company_id_query: None, rewrites: Vec::new() };
    let install = TenantInstall { record: r.clone(), grant, idle };
    (t, install)
}

/// An installed key was checked with Pleo when it was installed: a new
/// routing table (a start, a replica taking up an install) takes that
/// answer from the record instead of asking Pleo again for every install at
/// once; the checks' schedule asks again in its own time, spread out.
fn trust_install_check(tenant: &Tenant) {
    let Some(install) = &tenant.install else { return };
    let r = &install.record;
    let connected = matches!(&tenant.credential, Credential::Connected { slot } if slot.get().is_some());
    if install.idle.is_some() || !connected || tenant.check.checked_at().is_some() {
        return;
    }
    use crate::config::model::InstallationStatus as S;
    use crate::credential::check::CheckState;
    let status = S::parse(&r.status);
    // As `check_key` reads a status: not active yet is still usable; inactive is not.
    let state = match status {
        S::Activated | S::Authorized | S::PendingIntegration => CheckState::Connected,
        S::Inactive | S::Error => CheckState::Degraded,
        S::Unknown => return,
    };
    let Some((resource, id)) = crate::pleo::installation::parse_resource(&r.resource) else { return };
    let detail = crate::credential::check::Detail {
        company_id: Some(id.to_string()),
        resource: Some(resource),
        installation: Some(status),
        error_code: r.error_code.as_deref().map(str::to_string),
        // No note: a note is for an operator (`check`, the start's log
        // lists each), and 50,000 installs' "checked when installed" was
        // 50,000 log lines and ~4 MB held in the start's summary.
        ..Default::default()
    };
    tenant.check.set(state, detail);
}

/// A rewrite rule ready to apply.
#[derive(Debug)]
pub struct Rewrite {
    pub rule: crate::config::rewrite::RewriteRule,
    pub label: Arc<str>,
    pub counter: prometheus::IntCounter,
}

#[derive(Debug)]
pub struct Routes {
    pub tenants: HashMap<Arc<str>, Arc<Tenant>>,
    pub selectors: Vec<Selector>,
    pub default_tenant: Option<Arc<Tenant>>,
    pub clients: ClientKeys,
    pub legacy_tokens: LegacyTokens,
    /// Headers that carry a tenant tag; removed before anything goes upstream.
    pub tenant_headers: Vec<HeaderName>,
    pub max_in_flight: usize,
    pub max_request_body_bytes: u64,
    pub body_read_timeout: std::time::Duration,
    pub access_log: AccessLogConfig,
    /// Hosts and origins browsers may use (`guard`); `host_suffix` tenant
    /// names are among the hosts.
    pub browsers: BrowserPolicy,
    pub trust_forwarded_headers: bool,
    /// SHA-256 of each admin token, with its name.
    pub admin_tokens: HashMap<[u8; 32], Box<str>>,
    pub admin_open: bool,
    /// The top-level `rewrites`, for every tenant (once, not per tenant).
    pub rewrites: Box<[Rewrite]>,
}

pub type SharedRoutes = Arc<ArcSwap<Routes>>;

/// The routes a request is served with, put in its extensions by `observe`.
#[derive(Clone, Debug)]
pub struct Snapshot(pub Arc<Routes>);

impl Routes {
    /// Must run inside a tokio runtime when the config has managed OAuth
    /// tenants (their sessions start background refresh tasks).
    pub fn build(config: &Config, upstreams: &Upstreams, metrics: &Metrics, sessions: &Sessions) -> Routes {
        Routes::build_after(config, upstreams, metrics, sessions, None)
    }

    /// After a reload: tenants whose key, model and environment are those of
    /// `previous` keep its key check (and are not asked about again).
    pub fn build_after(
        config: &Config,
        upstreams: &Upstreams,
        metrics: &Metrics,
        sessions: &Sessions,
        previous: Option<&Routes>,
    ) -> Routes {
        Routes::build_with(config, upstreams, metrics, sessions, previous, &[], false)
    }

    /// The config's tenants and the tenants installs from Pleo made
    /// (`installs`; a name the config also has stays the config's).
    ///
    /// `same_config`: `previous` was built from this very config and these
    /// upstreams (an install or uninstall, not a reload). Then an install
    /// tenant whose record did not change is taken over as it is: an
    /// install at 100,000 tenants built every tenant again and for a moment
    /// held two tables (~1 KB a tenant each, the process' high-water mark).
    pub fn build_with(
        config: &Config,
        upstreams: &Upstreams,
        metrics: &Metrics,
        sessions: &Sessions,
        previous: Option<&Routes>,
        installs: &[Arc<InstallRecord>],
        same_config: bool,
    ) -> Routes {
        // Tenants of one OAuth client (every install of one app) share its
        // consent client: one each was 31 MB at 50,000 OAuth installs.
        let mut consents: HashMap<(Environment, String), (crate::secret::Secret, Arc<ConsentClient>)> = HashMap::new();
        let mut masks = std::collections::HashSet::new();
        // `id`: an install's tenant is named by its record's `Arc` (one
        // allocation for the record, the table and the access log).
        let mut build = |id: Arc<str>, t: &TenantConfig, install: Option<TenantInstall>| {
            let model = t.auth.model();
            let upstream = upstreams.get(t.environment);
            let consent = match &t.auth {
                AuthConfig::OAuth2Managed { client_id, client_secret, .. } => {
                    let key = (t.environment, client_id.clone());
                    match consents.get(&key) {
                        Some((secret, shared)) if secret == client_secret => Some(shared.clone()),
                        _ => {
                            let made = ConsentClient::for_tenant(config, t, upstream.client().clone()).map(Arc::new);
                            if let Some(made) = &made {
                                consents.insert(key, (client_secret.clone(), made.clone()));
                            }
                            made
                        }
                    }
                }
                _ => None,
            };
            let credential = credential(config, &id, t, consent.as_ref(), sessions, &mut masks);
            let check = previous
                .and_then(|p| p.tenants.get(&*id))
                .filter(|p| same_key(p, t.environment, &upstream, &credential))
                .map_or_else(Arc::default, |p| p.check.clone());
            let tenant = Tenant {
                id: id.clone(),
                environment: t.environment,
                model,
                credential,
                upstream,
                metrics: metrics.for_tenant(model, t.environment, &id),
                check,
                company_id: (t.company_id_header.is_some() || t.company_id_query.is_some()).then(|| {
                    Box::new(CompanyIdTo {
                        header: t.company_id_header.clone(),
                        query: t.company_id_query.as_deref().map(Into::into),
                    })
                }),
                in_flight: crate::share::Share::new(config.limits.max_in_flight_per_tenant),
                consent,
                from_connection: t.auth.from_connection(),
                rewrites: rewrites(&t.rewrites, metrics),
                migration: metrics.migration.clone(),
                interlock: upstreams.get(t.environment.other()),
                install,
            };
            (id, Arc::new(tenant))
        };
        let mut tenants: HashMap<Arc<str>, Arc<Tenant>> =
            config.tenants.iter().map(|(id, t)| build(id.as_str().into(), t, None)).collect();
        let mut grants: HashMap<&str, Arc<str>> = HashMap::new();
        for record in installs {
            if config.tenants.contains_key(&*record.tenant) {
                tracing::warn!(tenant = %record.tenant, app = %record.app, "an install has the name of a configured tenant; the configured one serves");
                continue;
            }
            let unchanged = previous
                .filter(|_| same_config)
                .and_then(|p| p.tenants.get_key_value(&*record.tenant))
                .filter(|(_, t)| t.install.as_ref().is_some_and(|i| i.record == *record));
            if let Some((id, tenant)) = unchanged {
                tenants.insert(id.clone(), tenant.clone());
                continue;
            }
            let grant = grants.entry(&*record.app).or_insert_with(|| format!("app:{}", record.app).into());
            let (t, install) = installed(config, record, grant.clone());
            let (id, tenant) = build(record.tenant.clone(), &t, Some(install));
            trust_install_check(&tenant);
            tenants.insert(id, tenant);
        }
        metrics.migration.set_max_templates(config.max_not_found_templates);
        metrics.set_tenants(|m, e| tenants.values().filter(|t| t.model == m && t.environment == e).count() as i64);
        let default_tenant = config.default_tenant.as_deref().and_then(|d| tenants.get(d).cloned());
        let tenant_headers = config
            .tenant_from
            .iter()
            .filter_map(|s| match s {
                Selector::Header(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        Routes {
            tenants,
            selectors: config.tenant_from.clone(),
            default_tenant,
            clients: ClientKeys::new(&config.clients, config.limits.max_in_flight_per_client),
            legacy_tokens: LegacyTokens::new(&config.legacy_tokens, metrics),
            tenant_headers,
            max_in_flight: config.limits.max_in_flight,
            max_request_body_bytes: config.limits.max_request_body_bytes,
            body_read_timeout: config.limits.body_read_timeout,
            access_log: config.access_log,
            browsers: browser_policy(config),
            trust_forwarded_headers: config.trust_forwarded_headers,
            admin_tokens: config.admin.tokens.iter().map(|t| (t.sha256, t.name.as_str().into())).collect(),
            admin_open: config.admin.tokens.is_empty(),
            rewrites: rewrites(&config.rewrites, metrics),
        }
    }
}

/// `allowed_hosts`, plus every name a `host_suffix` rule routes by.
fn browser_policy(config: &Config) -> BrowserPolicy {
    let mut policy = config.browsers.clone();
    for s in &config.tenant_from {
        if let Selector::HostSuffix(suffix) = s {
            policy.hosts.push(suffix.clone());
        }
    }
    policy
}

/// Whether a tenant's key check still holds for its new config: the same
/// environment and base URL, and the same key (a connection's slot is the
/// same slot: its key is checked when it is connected).
fn same_key(previous: &Tenant, env: Environment, upstream: &Upstream, credential: &Credential) -> bool {
    let same_key = match (&previous.credential, credential) {
        (Credential::Static { authorization: a, .. }, Credential::Static { authorization: b, .. }) => a == b,
        (Credential::Connected { slot: a }, Credential::Connected { slot: b }) => Arc::ptr_eq(a, b),
        _ => false,
    };
    same_key && previous.environment == env && previous.upstream.base == upstream.base
}

fn rewrites(rules: &[crate::config::rewrite::RewriteRule], metrics: &Metrics) -> Box<[Rewrite]> {
    rules
        .iter()
        .map(|r| Rewrite { rule: r.clone(), label: r.label.as_str().into(), counter: metrics.rewrite(&r.label) })
        .collect()
}

fn credential(
    config: &Config,
    id: &Arc<str>,
    t: &TenantConfig,
    consent: Option<&Arc<ConsentClient>>,
    sessions: &Sessions,
    masks: &mut std::collections::HashSet<Arc<str>>,
) -> Credential {
    if let Some(authorization) = static_authorization(&t.auth) {
        return Credential::Static { authorization, masked: t.auth.masked().into() };
    }
    let (AuthConfig::OAuth2Managed { refresh_token, .. }, Some(consent)) = (&t.auth, consent) else {
        // `source: connection`: the key a connect link made, when there is one.
        return Credential::Connected { slot: sessions.key_slot(id) };
    };
    // Every install of one app reads the same ("oauth2 client <id>, tokens
    // from state_dir"): one copy for all of them.
    let masked = t.auth.masked();
    let masked = match masks.get(masked.as_str()) {
        Some(shared) => shared.clone(),
        None => {
            let made: Arc<str> = masked.into();
            masks.insert(made.clone());
            made
        }
    };
    let session = sessions.get_or_start(session_config(&config.limits, id.clone(), consent, refresh_token.clone()));
    Credential::OAuth { session, masked }
}

/// A managed OAuth tenant's session settings (the routing table's, and an
/// install's before its tenant is routed: the same session either way).
pub fn session_config(
    limits: &crate::config::Limits,
    id: Arc<str>,
    consent: &ConsentClient,
    initial_refresh_token: Option<crate::secret::Secret>,
) -> SessionConfig {
    SessionConfig {
        tenant: id,
        endpoint: consent.endpoint.clone(),
        initial_refresh_token,
        retry_body_bytes: limits.retry_body_bytes,
        forced_refresh_interval: limits.forced_refresh_interval,
        // A request waits at most for one token call plus saving the result.
        wait: limits.token_timeout + std::time::Duration::from_secs(2),
    }
}

/// Routes built from a YAML config, for the steps' unit tests, with the
/// registry their counters live in. API-key tenants only: no session starts.
#[cfg(test)]
pub(crate) fn for_tests(yaml: &str) -> (Arc<Routes>, prometheus::Registry) {
    let config = Config::from_yaml(yaml, std::path::Path::new("/tmp/unit.yaml")).expect("a valid test config");
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::register(&registry, true).unwrap());
    let upstreams = Upstreams::build(&config).unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let store = Arc::new(crate::state::FileStore::new("/nonexistent/unit"));
    let sessions = Sessions::new(store, metrics.clone(), stopped);
    (Arc::new(Routes::build(&config, &upstreams, &metrics, &sessions)), registry)
}

/// A counter's value in `registry`, for the steps' unit tests.
#[cfg(test)]
pub(crate) fn counter(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .find(|m| labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v)))
        .map_or(0.0, |m| m.get_counter().get_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tenants_of_one_oauth_client_share_its_consent_client_unless_the_secret_differs() {
        let tenant = |name: &str, secret: &str| {
            format!("  {name}:\n    environment: staging\n    auth: {{ model: oauth2, client_id: erp, client_secret: {secret} }}\n")
        };
        let yaml = format!(
            "environments:\n  staging: {{ base_url: \"http://127.0.0.1:9\" }}\ntenants:\n{}{}{}",
            tenant("a", "same-secret-0123456789"),
            tenant("b", "same-secret-0123456789"),
            tenant("c", "other-secret-0123456789")
        );
        let (routes, _) = for_tests(&yaml);
        let consent = |t: &str| routes.tenants[t].consent.clone().expect("a managed OAuth tenant");
        assert!(Arc::ptr_eq(&consent("a"), &consent("b")), "one client, one secret: shared");
        assert!(!Arc::ptr_eq(&consent("a"), &consent("c")), "another secret is another client");
    }

    /// An install or uninstall rebuilds the table from the same config:
    /// install tenants whose record is unchanged are taken over (their
    /// in-flight share and key check with them), the changed one is built
    /// again; a reload (`same_config: false`) builds every tenant.
    #[tokio::test]
    async fn a_rebuild_for_an_install_takes_over_the_unchanged_install_tenants() {
        let yaml = "environments:\n  staging: { base_url: \"http://127.0.0.1:9\" }\n\
                    connect: { listen: \"127.0.0.1:0\", public_url: \"http://127.0.0.1:9\" }\n\
                    store: { kind: file, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }\n\
                    apps:\n  ledger:\n    environment: staging\n    \
                    auth: { model: integrated_api_key, client_id: ledger-app }\n    \
                    tenant_name: \"ledger-{company_id}\"\n    \
                    handover: { jwks_url: \"http://127.0.0.1:9/jwks\", issuer: \"http://127.0.0.1:9\" }\n";
        let config = Config::from_yaml(yaml, std::path::Path::new("/tmp/unit.yaml")).expect("a valid test config");
        let metrics = Arc::new(Metrics::register(&prometheus::Registry::new(), false).unwrap());
        let upstreams = Upstreams::build(&config).unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let store = Arc::new(crate::state::FileStore::new("/nonexistent/unit"));
        let sessions = Sessions::new(store, metrics.clone(), stopped);
        let record = |company: &str| crate::state::installs::ledger_install(company, "ACTIVATED");
        let first = vec![Arc::new(record("c1")), Arc::new(record("c2"))];
        let before = Routes::build_with(&config, &upstreams, &metrics, &sessions, None, &first, false);
        let mut changed = record("c2");
        changed.uninstalled_at_ms = Some(2);
        let second = vec![Arc::new(record("c1")), Arc::new(changed), Arc::new(record("c3"))];
        let after = Routes::build_with(&config, &upstreams, &metrics, &sessions, Some(&before), &second, true);
        let same = |a: &Routes, b: &Routes, t: &str| Arc::ptr_eq(&a.tenants[t], &b.tenants[t]);
        assert!(same(&before, &after, "ledger-c1"), "unchanged: taken over");
        assert!(!same(&before, &after, "ledger-c2"), "uninstalled: built again");
        assert_eq!(after.tenants["ledger-c2"].install.as_ref().unwrap().idle, Some(Idle::Uninstalled));
        assert!(after.tenants.contains_key("ledger-c3"), "a new install is routed");
        let reloaded = Routes::build_with(&config, &upstreams, &metrics, &sessions, Some(&after), &second, false);
        assert!(!same(&after, &reloaded, "ledger-c1"), "a reload builds every tenant");
    }
}
