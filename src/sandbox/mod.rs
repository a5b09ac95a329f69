//! The sandbox: an offline stand-in for one Pleo environment (External API and
//! `/oauth/token`), strict the way Pleo is. It accepts only the credentials it
//! was given, rejects legacy tokens with Pleo-like errors, serves the
//! installation resource (`/v1/installations/me`, as Pleo documents it), and echoes any
//! other request (method, path, query, headers, body size and hash) as JSON,
//! with `Authorization` masked. It records what it received so tests can see
//! exactly what left the gateway; the gateway's own credential checks
//! (recognised by their user agent) are only counted.
//!
//! Test helpers live under `/sandbox/` (behind the same authentication):
//! `/sandbox/bytes/N` streams N bytes, `/sandbox/status/N` answers N,
//! `/sandbox/delay/MS` waits before echoing, `/sandbox/hop` answers with
//! hop-by-hop headers, `/sandbox/reset` drops the connection 16 KiB into a
//! 1 MiB answer.

mod api;
mod installation;
mod marketplace;
mod oauth;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{AuthConfig, Config, Environment};
use crate::credential::static_authorization;
use crate::secret::Secret;
use crate::state::FileStore;

pub use marketplace::{MarketApp, Signer, HANDOVER_TTL};
pub use oauth::{OAuthClient, Retained, TokenStats, KEEP_ISSUED, KEEP_RETIRED};

/// A failure the sandbox's token endpoint serves instead of its next answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFault {
    /// Answer this status (5xx, 429) without touching any token.
    Status(u16),
    /// Wait this long, then answer 503 without touching any token: to the
    /// gateway, a token endpoint that does not answer in time.
    Stall(Duration),
    /// Wait this long, then answer normally: a slow but working endpoint.
    Slow(Duration),
    /// Rotate the tokens at once (as Pleo commits a refresh), then wait this
    /// long before answering: a client that stops waiting has lost them.
    CommitThenHold(Duration),
}

/// A credential the sandbox accepts: the exact `Authorization` value and the
/// company it belongs to.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub authorization: Secret,
    pub company_id: String,
}

/// What one sandbox environment accepts.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    pub environment: Environment,
    pub accepted: Vec<Accepted>,
    /// Legacy openapi.pleo.io tokens: refused with a message saying so.
    pub legacy_tokens: Vec<Secret>,
    pub oauth_clients: Vec<OAuthClient>,
    pub access_token_ttl: Duration,
    /// How many received requests to keep for `requests()`.
    pub record_limit: usize,
    /// The marketplace's apps (`/marketplace`).
    pub apps: Vec<MarketApp>,
}

impl SandboxSpec {
    pub fn new(environment: Environment) -> Self {
        SandboxSpec {
            environment,
            accepted: Vec::new(),
            legacy_tokens: Vec::new(),
            oauth_clients: Vec::new(),
            access_token_ttl: Duration::from_secs(900),
            record_limit: 10_000,
            apps: Vec::new(),
        }
    }

    /// Accepts an API key (integrated or standalone) as Basic key + ":".
    pub fn api_key(mut self, key: &str, company_id: &str) -> Self {
        let value = crate::credential::basic_value(&Secret::new(key));
        self.accepted.push(Accepted { authorization: value, company_id: company_id.into() });
        self
    }

    /// Accepts an OAuth access token as Bearer.
    pub fn access_token(mut self, token: &str, company_id: &str) -> Self {
        self.accepted
            .push(Accepted { authorization: Secret::new(format!("Bearer {token}")), company_id: company_id.into() });
        self
    }

    pub fn legacy_token(mut self, token: &str) -> Self {
        self.legacy_tokens.push(Secret::new(token));
        self
    }

    pub fn oauth_client(mut self, client: OAuthClient) -> Self {
        self.oauth_clients.push(client);
        self
    }

    /// Lists an app in the marketplace; an OAuth app's client is registered
    /// too (its consents are for the company the marketplace names).
    pub fn app(mut self, app: MarketApp, client_secret: Option<Secret>) -> Self {
        if let Some(client_secret) = client_secret {
            self.oauth_clients.push(OAuthClient {
                client_id: app.client_id.clone(),
                client_secret,
                company_id: String::new(),
                refresh_tokens: Vec::new(),
            });
        }
        self.apps.push(app);
        self
    }

    /// The demo setup: accept exactly the credentials the gateway's tenants in
    /// `env` are configured with (so a tenant pointed at the wrong environment
    /// is still refused, as Pleo would).
    pub fn for_gateway(config: &Config, env: Environment) -> Self {
        let mut spec = SandboxSpec::new(env);
        spec.record_limit = 256;
        if let Some(ttl) = config.sandbox_token_ttl {
            spec.access_token_ttl = ttl;
        }
        let store = FileStore::new(&config.state_dir);
        for (name, t) in config.tenants.iter().filter(|(_, t)| t.environment == env) {
            let company_id = format!("company-{name}");
            if let Some(value) = static_authorization(&t.auth) {
                let value = value.to_str().expect("credential headers are visible ASCII").to_string();
                spec.accepted.push(Accepted { authorization: Secret::new(value), company_id });
            } else if let AuthConfig::ApiKeyConnection { .. } = &t.auth {
                // The demo's keys for a tenant connected on a link (docs/connect.md).
                for n in 1..=2 {
                    let key = Secret::new(format!("sandbox-{name}-key-000{n}"));
                    spec.accepted.push(Accepted {
                        authorization: crate::credential::basic_value(&key),
                        company_id: company_id.clone(),
                    });
                }
            } else if let AuthConfig::OAuth2Managed { client_id, client_secret, refresh_token } = &t.auth {
                // A stand-in that restarts with the gateway must still know the
                // tokens the gateway kept from its last run.
                let mut refresh_tokens: Vec<Secret> = refresh_token.iter().cloned().collect();
                if let Ok(Some(stored)) = store.load_blocking(name) {
                    refresh_tokens.push(stored.refresh_token);
                    if let Some(at) = stored.access_token {
                        spec = spec.access_token(at.expose_secret(), &company_id);
                    }
                }
                spec.oauth_clients.push(OAuthClient {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    company_id,
                    refresh_tokens,
                });
            }
        }
        if let Some(connect) = &config.connect {
            for (name, app) in config.apps.iter().filter(|(_, a)| a.environment == env) {
                let market = MarketApp {
                    name: name.clone(),
                    client_id: app.client_id().to_string(),
                    model: app.model(),
                    install_url: format!("{}/install/{name}", connect.public_url),
                    settings_url: format!("{}/settings/{name}", connect.public_url),
                };
                let secret = match &app.auth {
                    crate::config::AppAuth::OAuth2 { client_secret, .. } => Some(client_secret.clone()),
                    crate::config::AppAuth::IntegratedApiKey { .. } => None,
                };
                spec = spec.app(market, secret);
            }
        }
        spec
    }
}

/// A request as the sandbox received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query exactly as received.
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body_sha256: String,
}

#[derive(Debug)]
struct Shared {
    spec: SandboxSpec,
    recorded: Mutex<VecDeque<Recorded>>,
    tokens: Mutex<oauth::TokenState>,
    faults: Mutex<VecDeque<TokenFault>>,
    /// Refresh tokens presented to `/oauth/token`, oldest first (the newest
    /// `KEEP_ISSUED`).
    presented: Mutex<VecDeque<Secret>>,
    /// Connection tasks alive now (finished ones are reaped as they end).
    connections: std::sync::atomic::AtomicUsize,
    /// `GET /v1/installations/me` calls from the gateway's credential check
    /// (not in `recorded`, which is the traffic the gateway proxied).
    credential_checks: std::sync::atomic::AtomicUsize,
    /// Bytes `/sandbox/bytes/N` bodies have handed to the server so far: the
    /// server stops asking once flow control (or a full socket) stops it.
    bytes_streamed: Arc<std::sync::atomic::AtomicU64>,
    /// Installations by company (`/v1/installations/me`).
    installations: Mutex<std::collections::HashMap<String, installation::Installation>>,
    /// `http://<addr>`: the `iss` of the handover tokens it signs.
    issuer: String,
    signer: std::sync::OnceLock<Signer>,
    /// Integrated keys the marketplace showed, by `Authorization` value, with their company.
    issued_keys: Mutex<std::collections::HashMap<String, String>>,
    jwks_fetches: std::sync::atomic::AtomicUsize,
    /// `/oauth/token` calls being answered now, and the most there ever were at once.
    token_calls: std::sync::atomic::AtomicUsize,
    token_calls_max: std::sync::atomic::AtomicUsize,
    /// Companies whose installation was deleted (`DELETE /v1/installations/me`), in order.
    uninstalls: Mutex<Vec<String>>,
}

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Sandbox {
    /// Serves `spec` on `listener`; with `tls`, as HTTPS.
    pub fn spawn(listener: TcpListener, spec: SandboxSpec, tls: Option<Arc<rustls::ServerConfig>>) -> Sandbox {
        let addr = listener.local_addr().expect("bound listener has an address");
        let tokens = oauth::TokenState::new(&spec.oauth_clients);
        let shared = Arc::new(Shared {
            spec,
            recorded: Mutex::new(VecDeque::new()),
            tokens: Mutex::new(tokens),
            faults: Mutex::new(VecDeque::new()),
            presented: Mutex::new(VecDeque::new()),
            connections: Default::default(),
            credential_checks: Default::default(),
            bytes_streamed: Default::default(),
            installations: Default::default(),
            issuer: format!("http://{addr}"),
            signer: Default::default(),
            issued_keys: Default::default(),
            jwks_fetches: Default::default(),
            token_calls: Default::default(),
            token_calls_max: Default::default(),
            uninstalls: Default::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), tls, stopped));
        Sandbox { addr, shared, stop, task }
    }

    /// How many credential checks the gateway made here.
    pub fn credential_checks(&self) -> usize {
        self.shared.credential_checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests received so far, oldest first (credential checks excepted).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().expect("sandbox lock").iter().cloned().collect()
    }

    /// Bytes of `/sandbox/bytes/N` answers produced so far, all requests
    /// together. It stops growing when every such stream is blocked.
    pub fn bytes_streamed(&self) -> u64 {
        self.shared.bytes_streamed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// OAuth bookkeeping: how many refreshes, and how many replays of a rotated token.
    pub fn token_stats(&self) -> oauth::TokenStats {
        self.shared.tokens.lock().expect("sandbox lock").stats()
    }

    /// The most `/oauth/token` calls that were being answered at once.
    pub fn token_calls_max(&self) -> usize {
        self.shared.token_calls_max.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The token endpoint serves these, one per request, before answering normally again.
    pub fn inject_token_faults(&self, faults: impl IntoIterator<Item = TokenFault>) {
        self.shared.faults.lock().expect("sandbox lock").extend(faults);
    }

    /// Revokes every OAuth authorisation: refreshes then get `invalid_grant`.
    pub fn revoke_authorisations(&self) {
        self.shared.tokens.lock().expect("sandbox lock").revoke_all();
    }

    /// The customer consents again (after a revocation): `refresh_token` is
    /// valid as the start of a new authorisation of `client_id`.
    pub fn consent_again(&self, client_id: &str, refresh_token: &str) {
        self.shared.tokens.lock().expect("sandbox lock").consent_again(client_id, refresh_token);
    }

    /// Forgets every OAuth access token (refresh tokens stay valid), as if
    /// Pleo revoked them early: the next API call with one gets 401.
    pub fn expire_access_tokens(&self) {
        self.shared.tokens.lock().expect("sandbox lock").expire_access_tokens();
    }

    /// Every access and refresh token the sandbox has issued, so tests can
    /// search logs and outputs for them.
    pub fn issued_tokens(&self) -> Vec<Secret> {
        self.shared.tokens.lock().expect("sandbox lock").issued()
    }

    /// The refresh tokens presented to the token endpoint, oldest first.
    pub fn presented_refresh_tokens(&self) -> Vec<Secret> {
        self.shared.presented.lock().expect("sandbox lock").iter().cloned().collect()
    }

    /// Sets a company's installation status and error code (test hook: as
    /// Pleo would after the customer's entitlement changed).
    pub fn set_installation(&self, company_id: &str, status: &str, error_code: Option<&str>) {
        let mut all = self.shared.installations.lock().expect("sandbox lock");
        let env = self.shared.spec.environment.as_str();
        let inst =
            all.entry(company_id.to_string()).or_insert_with(|| installation::Installation::new(company_id, env));
        inst.status = status.to_string();
        inst.error_code = error_code.map(str::to_string);
    }

    /// Replaces a company's installation `resource` (test hook: a malformed one).
    pub fn set_installation_resource(&self, company_id: &str, resource: &str) {
        let mut all = self.shared.installations.lock().expect("sandbox lock");
        let env = self.shared.spec.environment.as_str();
        let inst =
            all.entry(company_id.to_string()).or_insert_with(|| installation::Installation::new(company_id, env));
        inst.resource = resource.to_string();
    }

    /// A company's installation document, as GET would answer it.
    pub fn installation(&self, company_id: &str) -> Option<serde_json::Value> {
        self.shared.installations.lock().expect("sandbox lock").get(company_id).map(|i| i.to_json())
    }

    /// How much OAuth state the sandbox holds, and how many connection tasks.
    pub fn retained(&self) -> (Retained, usize) {
        let tokens = self.shared.tokens.lock().expect("sandbox lock").retained();
        (tokens, self.shared.connections.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether `token` is a refresh token the sandbox would still accept.
    pub fn is_live_refresh_token(&self, token: &str) -> bool {
        self.shared.tokens.lock().expect("sandbox lock").is_live_refresh_token(token)
    }

    /// The `iss` of the handover tokens this sandbox signs.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Its JWKS URL (`handover.jwks_url`).
    pub fn jwks_url(&self) -> String {
        format!("http://{}/oauth/jwks", self.addr)
    }

    /// A handover token for `client_id`'s user at `company`, as Pleo signs one.
    pub fn handover_token(&self, client_id: &str, company: &str, user: &str, ttl: Duration) -> String {
        self.shared.signer().handover(&self.shared.issuer, client_id, company, user, ttl)
    }

    /// `claims` signed with the sandbox's handover key.
    pub fn sign_handover(&self, claims: &serde_json::Value) -> String {
        self.shared.signer().sign(claims)
    }

    /// The signing key's id (its JWK's `kid`).
    pub fn signing_kid(&self) -> String {
        self.shared.signer().kid.clone()
    }

    /// How many times `/oauth/jwks` was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next OAuth consent of `client_id` is for `company` (what the
    /// marketplace's Connect does before it sends the browser on).
    pub fn consent_for(&self, client_id: &str, company: &str) {
        self.shared.tokens.lock().expect("sandbox lock").consent_for(client_id, company);
        self.set_installation(company, "AUTHORIZED", None);
    }

    /// An integrated API key for `company`, as Pleo's install modal shows it.
    pub fn issue_key(&self, company: &str) -> String {
        self.set_installation(company, "AUTHORIZED", None);
        self.shared.issue_key(company)
    }

    /// Companies whose installation was deleted, in order.
    pub fn uninstalls(&self) -> Vec<String> {
        self.shared.uninstalls.lock().expect("sandbox lock").clone()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stopped: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => { tokio::time::sleep(Duration::from_millis(20)).await; continue }
            },
            // Reap finished connections: the demo's sandbox runs for weeks.
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                shared.connections.store(conns.len(), std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            _ = stopped.changed() => break,
        };
        shared.connections.store(conns.len() + 1, std::sync::atomic::Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| api::handle(shared.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(a) => {
                    if let Ok(tls) = a.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
    conns.abort_all();
}
