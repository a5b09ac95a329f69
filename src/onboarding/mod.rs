//! Customers connect themselves: connect links, and the credentials they
//! make. Shared by the connect pages (`pages`), the management API
//! (`admin::api`) and `pleo-gateway link`.
//!
//! - A link is a 256-bit random token in a URL; the store keeps its
//!   SHA-256, the tenant, the expiry and who made it. It is used once: the
//!   use is claimed in one atomic store step before anything is asked of
//!   Pleo, and given back if that fails (a wrong key, a denied consent), so
//!   the link stays usable until it expires or its attempts run out.
//! - An API key is validated with `GET /v1/installations/me` in the
//!   tenant's environment before it is stored (sealed), and replaces the
//!   previous key only then: requests in flight finish on the old one.
//! - Every connect, rotation, disconnect and link is one audit log line
//!   (target `audit`): who, tenant, result; never a secret.

pub mod installs;
pub mod pages;
pub mod seal;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{AuthModel, Config};
use crate::credential::check::{check_key_interlocked, CheckState, Detail};
use crate::credential::key_slot::ConnectionMeta;
use crate::credential::Sessions;
use crate::proxy::routes::{Routes, Tenant};
use crate::secret::random_token;
use crate::secret::Secret;
use crate::state::{unix_now_ms, StoreError};
use crate::state::{LinkRecord, LinkState, OnboardedKey, OnboardingStore, Store};
use seal::Sealer;

/// The longest a link may be made to live.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Debug)]
pub struct Onboarding {
    pub store: Arc<dyn Store>,
    sealer: Option<Sealer>,
    sessions: Arc<Sessions>,
    counter: prometheus::IntCounterVec,
    /// `connect.public_url`, without a trailing slash.
    public_url: Option<String>,
    pub link_ttl: Duration,
}

/// Who did something, for the audit line and the record.
#[derive(Clone, Debug)]
pub enum Actor {
    /// The customer, on the link with this id.
    Link(String),
    /// A management API call with this admin token's name.
    Admin(String),
    /// `pleo-gateway link` on a host, by the OS user.
    Cli(String),
    /// A customer installing from Pleo (the handover's user, or `unknown`).
    Install(String),
    /// A customer on an app's Settings page (the handover's user).
    Settings(String),
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::Link(id) => format!("link:{id}"),
            Actor::Admin(name) => format!("api:{name}"),
            Actor::Cli(user) => format!("cli:{user}"),
            Actor::Install(user) => format!("install:{user}"),
            Actor::Settings(user) => format!("settings:{user}"),
        }
    }
}

/// One audit line. Fields only: no secret is ever passed here.
pub fn audit(action: &str, tenant: &str, by: &Actor, result: &str) {
    tracing::info!(target: "audit", action, tenant, by = %by.label(), result, "audit");
}

/// Why a key was not stored, in words for the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefusal {
    /// `rejected`, `unreachable`, `inactive`, `error`: the metric's result.
    pub result: &'static str,
    pub message: String,
}

/// What a connected key looks like afterwards (no secret).
#[derive(Debug, Clone)]
pub struct KeyConnected {
    pub masked: String,
    pub company_id: Option<String>,
    /// Whether `company_id` is a company's or an organisation's.
    pub resource: Option<crate::pleo::installation::Resource>,
    pub rotated: bool,
}

/// A link as the API lists it: the record (its token's hash, never the
/// token) and its state now.
#[derive(Debug, serde::Serialize)]
pub struct LinkView<'a> {
    #[serde(flatten)]
    pub link: &'a LinkRecord,
    pub state: &'static str,
}

impl LinkView<'_> {
    pub fn of(link: &LinkRecord, now: u64) -> LinkView<'_> {
        LinkView { link, state: link.state(now).as_str() }
    }
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Onboarding {
    /// `postgres`: the shared store the token chains are in, when that is
    /// the configured kind (links and connections then live beside them).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        sessions: Arc<Sessions>,
        counter: prometheus::IntCounterVec,
    ) -> Onboarding {
        Onboarding {
            store,
            sealer: Sealer::new(&config.encryption_keys),
            sessions,
            counter,
            public_url: config.connect.as_ref().map(|c| c.public_url.clone()),
            link_ttl: config.connect.as_ref().map_or(Duration::from_secs(7 * 24 * 3600), |c| c.link_ttl),
        }
    }

    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    pub fn count(&self, model: AuthModel, result: &str) {
        self.counter.with_label_values(&[model.as_str(), result]).inc();
    }

    /// Puts every stored connection's key in its tenant's slot (at start,
    /// and every poll interval with a shared store, so a key connected on
    /// another replica serves here too). Keys sealed with a previous key
    /// are sealed again with the current one.
    pub async fn load(&self) -> Result<usize, StoreError> {
        let records = self.store.onboarded().await?;
        let mut loaded = 0;
        for r in &records {
            let Some(sealed) = &r.sealed_key else { continue };
            let Some(sealer) = &self.sealer else {
                tracing::error!(tenant = %r.tenant, "a connected key is stored but store.encryption_key is not set");
                continue;
            };
            let slot = self.sessions.key_slot(&r.tenant);
            let meta = meta_of(r);
            if slot.get().is_some_and(|k| k.meta == meta) {
                loaded += 1;
                continue;
            }
            match sealer.open(&r.tenant, sealed) {
                Ok((key, reseal)) => {
                    slot.set(&key, meta);
                    loaded += 1;
                    if reseal {
                        let again = OnboardedKey { sealed_key: Some(sealer.seal(&r.tenant, &key)), ..r.clone() };
                        match self.store.put_onboarded(&again).await {
                            Ok(()) => {
                                tracing::info!(tenant = %r.tenant, key_id = sealer.current_id(), "connected key sealed again with the current encryption key")
                            }
                            Err(e) => {
                                tracing::warn!(tenant = %r.tenant, error = %e, "cannot seal a connected key again")
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(tenant = %r.tenant, error = %e, "cannot open the connected key"),
            }
        }
        // Disconnected elsewhere: the slot empties here too.
        let names: std::collections::HashSet<&str> = records.iter().map(|r| r.tenant.as_str()).collect();
        self.sessions.clear_key_slots_except(|t| names.contains(t));
        Ok(loaded)
    }

    /// With a shared store: takes up other replicas' connections every `interval`.
    pub fn spawn_follow(self: &Arc<Self>, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = this.load().await {
                    tracing::warn!(error = %e, "cannot read connections from the store");
                }
            }
        });
    }

    /// A new link for `tenant`: the record (stored) and the URL with its token.
    pub async fn create_link(
        &self,
        tenant: &str,
        ttl: Duration,
        by: &Actor,
    ) -> Result<(LinkRecord, Option<String>), StoreError> {
        create_link(&*self.store, self.public_url.as_deref(), tenant, ttl, by).await
    }

    pub async fn revoke_link(&self, id: &str, by: &Actor) -> Result<Option<LinkRecord>, StoreError> {
        let now = unix_now_ms();
        let out = self.store.revoke(id, now).await?;
        if let Some(l) = &out {
            audit("link_revoked", &l.tenant, by, l.state(now).as_str());
        }
        Ok(out)
    }

    /// Checks `key` with Pleo in `tenant`'s environment and, if Pleo takes
    /// it, stores it sealed and puts it in service. Nothing changes otherwise.
    pub async fn connect_key(
        &self,
        tenant: &Tenant,
        key: &Secret,
        by: &Actor,
        link_id: Option<&str>,
    ) -> Result<KeyConnected, KeyRefusal> {
        let refuse = |result: &'static str, message: String| {
            self.count(tenant.model, result);
            audit("connect_key", &tenant.id, by, result);
            Err(KeyRefusal { result, message })
        };
        if !tenant.from_connection || tenant.model == AuthModel::OAuth2 {
            return refuse("error", format!("tenant `{}` does not take a key from a connection", tenant.id));
        }
        let Some(sealer) = &self.sealer else {
            return refuse("error", "store.encryption_key is not configured; nothing was saved".into());
        };
        let key_text = key.expose_secret().trim();
        if !crate::secret::is_header_safe(key_text) || key_text.len() > 4096 {
            return refuse(
                "rejected",
                "That is not an API key: paste the whole key, without spaces or line breaks. Nothing was saved.".into(),
            );
        }
        let key = Secret::new(key_text);
        let authorization = crate::credential::basic_value(&key);
        let Ok(header) = http::HeaderValue::from_str(authorization.expose_secret()) else {
            return refuse("rejected", "That is not an API key. Nothing was saved.".into());
        };
        let interlock = &tenant.interlock;
        let (state, detail) =
            check_key_interlocked(&header, &tenant.upstream, tenant.environment, interlock, interlock.environment)
                .await;
        let env = tenant.environment.as_str();
        match state {
            CheckState::Connected => {}
            CheckState::Rejected if detail.wrong_environment.is_some() => {
                return refuse(
                    "rejected",
                    format!(
                        "This is a {} key, but this account is set up for Pleo's {env} environment. Use a key from \
                         {env}. Nothing was saved.",
                        interlock.environment.as_str()
                    ),
                )
            }
            CheckState::Rejected => {
                return refuse(
                    "rejected",
                    format!(
                        "Pleo did not accept this key ({}). Check that it is the whole key and that it was made \
                         in Pleo's {env} environment. Nothing was saved.",
                        detail.status.unwrap_or_default()
                    ),
                )
            }
            CheckState::Degraded => {
                return refuse(
                    "inactive",
                    format!(
                        "Pleo accepted the key, but reports its installation as not active ({}). Nothing was \
                         saved; activate the installation in Pleo and try again.",
                        crate::credential::check::describe(state, &detail)
                    ),
                )
            }
            CheckState::Unverified if detail.status.is_none() => {
                return refuse(
                    "unreachable",
                    "Pleo could not be reached just now, so the key could not be tested. Nothing was saved; try \
                     again in a minute."
                        .into(),
                )
            }
            CheckState::Unverified | CheckState::Pending => {
                return refuse(
                    "error",
                    format!(
                        "Pleo answered the test with an error ({}). Nothing was saved; try again later.",
                        detail.status.map_or_else(|| "no status".to_string(), |s| s.to_string())
                    ),
                )
            }
        }
        let slot = self.sessions.key_slot(&tenant.id);
        let rotated = slot.get().is_some();
        let record = OnboardedKey {
            tenant: tenant.id.to_string(),
            model: tenant.model.as_str().to_string(),
            sealed_key: Some(sealer.seal(&tenant.id, &key)),
            masked: format!("key {}", key.masked()),
            company_id: detail.company_id.clone(),
            connected_at_ms: unix_now_ms(),
            link_id: link_id.map(str::to_string),
            by: by.label(),
        };
        if let Err(e) = self.store.put_onboarded(&record).await {
            tracing::error!(tenant = %tenant.id, error = %e, "cannot store the connected key");
            return refuse(
                "error",
                "The key works, but the gateway could not store it. Nothing changed; try again.".into(),
            );
        }
        // Stored first, then in service: a crash in between loses nothing.
        slot.set(&key, meta_of(&record));
        tenant.check.set(CheckState::Connected, detail.clone());
        let result = if rotated { "rotated" } else { "connected" };
        self.count(tenant.model, result);
        audit("connect_key", &tenant.id, by, result);
        Ok(KeyConnected { masked: record.masked, company_id: detail.company_id, resource: detail.resource, rotated })
    }

    /// Removes `tenant`'s connection: its key leaves service and the store
    /// (OAuth tenants: the stored chain is marked as needing a new consent).
    pub async fn disconnect(&self, routes: &Routes, tenant: &str, by: &Actor) -> Result<bool, StoreError> {
        if let Some(session) = routes.tenants.get(tenant).and_then(|t| t.credential.session()) {
            session.disconnect().await?;
        }
        let existed = self.store.delete_onboarded(tenant).await?;
        let slot = self.sessions.key_slot(tenant);
        let had_key = slot.get().is_some();
        slot.clear();
        if let Some(t) = routes.tenants.get(tenant) {
            if t.credential.session().is_none() {
                t.check.set(CheckState::Pending, Detail { reason: Some("disconnected".into()), ..Detail::default() });
            }
            self.count(t.model, "disconnected");
        }
        let done = existed || had_key;
        audit("disconnect", tenant, by, if done { "ok" } else { "not_connected" });
        Ok(done)
    }

    /// Records an OAuth connection (the tokens are in the token store).
    pub async fn record_oauth(&self, tenant: &str, by: &Actor, link_id: Option<&str>) -> Result<(), StoreError> {
        let record = OnboardedKey {
            tenant: tenant.to_string(),
            model: AuthModel::OAuth2.as_str().to_string(),
            sealed_key: None,
            masked: "oauth2 consent".to_string(),
            company_id: None,
            connected_at_ms: unix_now_ms(),
            link_id: link_id.map(str::to_string),
            by: by.label(),
        };
        self.store.put_onboarded(&record).await
    }

    /// The link behind a token from a URL, and whether it can be used now.
    pub async fn open_link(&self, token: &str) -> Result<Option<(LinkRecord, LinkState)>, StoreError> {
        if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Ok(None);
        }
        let now = unix_now_ms();
        Ok(self.store.link(&token_hash(token)).await?.map(|l| {
            let state = l.state(now);
            (l, state)
        }))
    }
}

/// Makes and stores a link (the gateway, its API and `pleo-gateway link`).
pub async fn create_link(
    store: &dyn OnboardingStore,
    public_url: Option<&str>,
    tenant: &str,
    ttl: Duration,
    by: &Actor,
) -> Result<(LinkRecord, Option<String>), StoreError> {
    // 32 bytes: 256 bits from the OS, far past guessing.
    let token = random_token(32);
    let hash = token_hash(&token);
    let now = unix_now_ms();
    let record = LinkRecord {
        id: hash[..16].to_string(),
        token_sha256: hash,
        tenant: tenant.to_string(),
        created_by: by.label(),
        created_at_ms: now,
        expires_at_ms: now + ttl.min(MAX_LINK_TTL).as_millis() as u64,
        used_at_ms: None,
        revoked_at_ms: None,
        attempts: 0,
    };
    store.put_link(&record).await?;
    audit("link_created", tenant, by, "ok");
    let url = public_url.map(|base| format!("{base}/c/{token}"));
    Ok((record, url))
}

pub(crate) fn meta_of(r: &OnboardedKey) -> ConnectionMeta {
    ConnectionMeta {
        connected_at_ms: r.connected_at_ms,
        link_id: r.link_id.clone(),
        by: r.by.clone(),
        company_id: r.company_id.clone(),
    }
}
