//! gateway.yaml -> validated [`Config`]. Two layers: `raw` mirrors the file
//! (unknown keys rejected by serde), `validate` turns it into typed values and
//! checks what serde cannot (secrets readable, URLs allowed, names known).
//! Every error names the file, the line, the key and what is expected.

mod locate;
pub mod model;
mod raw;
pub mod rewrite;
mod slices;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Uri};

pub use locate::Seg;
pub use model::{AuthModel, Environment};

use crate::secret::Secret;

/// The validated configuration. The rest of the gateway sees only this.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: PathBuf,
    pub listen: SocketAddr,
    /// TLS on `listen` (and client certificates with `client_ca`).
    pub tls: Option<crate::tls::TlsFiles>,
    pub admin_listen: SocketAddr,
    pub workers: Option<usize>,
    pub environments: BTreeMap<Environment, EnvironmentConfig>,
    pub tenant_from: Vec<Selector>,
    pub default_tenant: Option<String>,
    /// The file store's directory (`store.dir`, or `state_dir`); also where
    /// `pleo-gateway store import` reads from.
    pub state_dir: PathBuf,
    /// Where OAuth token state lives.
    pub store: StoreConfig,
    pub tenants: BTreeMap<String, TenantConfig>,
    pub clients: Vec<ClientConfig>,
    pub allow_unauthenticated_clients: bool,
    /// Legacy openapi tokens still in use, by app name and SHA-256.
    pub legacy_tokens: Vec<LegacyToken>,
    pub limits: Limits,
    pub access_log: model::AccessLogConfig,
    pub telemetry: model::TelemetryConfig,
    pub per_tenant_metrics: bool,
    pub sandbox: BTreeMap<Environment, SocketAddr>,
    /// `sandbox.access_token_ttl`: short tokens make refreshes frequent (benchmarks, demos).
    pub sandbox_token_ttl: Option<Duration>,
    /// The files this config was read from (itself, secret and CA files):
    /// the reload watcher looks for changes in these.
    pub watched_files: Vec<PathBuf>,
    /// Things that are allowed but worth saying at start (inline secrets).
    pub warnings: Vec<String>,
    /// Which `Host` values and browser origins the listeners serve.
    pub browsers: BrowserPolicy,
    pub trust_forwarded_headers: bool,
    pub admin: AdminConfig,
    /// AES-256-GCM keys for runtime credentials, the current one first
    /// (`store.encryption_key`, then `store.previous_encryption_keys`).
    pub encryption_keys: Vec<Secret>,
    /// The connect pages' listener, when configured.
    pub connect: Option<ConnectConfig>,
    /// `policy: partner`: the Early Access Programme's rules are errors.
    pub partner_policy: bool,
    /// Top-level `rewrites` (each tenant's own come first).
    pub rewrites: Vec<rewrite::RewriteRule>,
    /// `migration.max_templates`: distinct 404/405 templates tracked (then `other`).
    pub max_not_found_templates: usize,
    /// Integrations customers install from Pleo, by name (docs/installs.md).
    pub apps: BTreeMap<String, AppConfig>,
}

/// `apps.<name>`: an integration customers install from Pleo's marketplace.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub environment: Environment,
    pub auth: AppAuth,
    /// Call `POST /v1/installations/me:activate` once the install is stored.
    pub activate_on_connect: bool,
    /// The tenant an install creates: `prefix{company_id}suffix`.
    pub tenant_name: TenantTemplate,
    pub handover: HandoverConfig,
}

impl AppConfig {
    pub fn model(&self) -> AuthModel {
        match self.auth {
            AppAuth::OAuth2 { .. } => AuthModel::OAuth2,
            AppAuth::IntegratedApiKey { .. } => AuthModel::IntegratedApiKey,
        }
    }

    /// The app's client id at Pleo: what the handover token's `aud` must name.
    pub fn client_id(&self) -> &str {
        match &self.auth {
            AppAuth::OAuth2 { client_id, .. } | AppAuth::IntegratedApiKey { client_id } => client_id,
        }
    }
}

#[derive(Debug, Clone)]
pub enum AppAuth {
    OAuth2 {
        client_id: String,
        client_secret: Secret,
    },
    /// The key is pasted by the customer; `client_id` is the app's id at
    /// Pleo, used only as the handover token's audience.
    IntegratedApiKey {
        client_id: String,
    },
}

/// `tenant_name`, split around its one `{company_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTemplate {
    pub prefix: String,
    pub suffix: String,
}

impl TenantTemplate {
    pub fn render(&self, company_id: &str) -> String {
        format!("{}{company_id}{}", self.prefix, self.suffix)
    }
}

impl fmt::Display for TenantTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{company_id}}{}", self.prefix, self.suffix)
    }
}

/// `apps.<name>.handover`.
#[derive(Debug, Clone)]
pub struct HandoverConfig {
    pub jwks_url: Uri,
    pub issuer: String,
    pub company_claim: String,
}

/// `connect`: the customer-facing connect pages.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
    pub tls: Option<crate::tls::TlsFiles>,
    pub integration_name: String,
    pub link_ttl: Duration,
}

/// Where OAuth token state lives (docs/config.md, "store").
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One JSON file per tenant in `state_dir`; one process per directory.
    File,
    /// A PostgreSQL database shared by every replica.
    Postgres(PostgresConfig),
}

impl StoreConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::File => "file",
            StoreConfig::Postgres(_) => "postgres",
        }
    }
}

/// `store: { kind: postgres, ... }`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db?sslmode=...`: a secret.
    pub url: Secret,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// A CA to verify the server's certificate with, besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// How often a replica re-reads what changed, should a notification be missed.
    pub poll_interval: Duration,
}

/// What a browser may reach (`guard` step): host names beyond loopback
/// names and IP literals, and origins allowed to make requests.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Exact names (lowercase, no port) and `.suffix` patterns (from `*.suffix`).
    pub hosts: Vec<String>,
    pub origins: Vec<String>,
    /// Host names the admin listener serves besides loopback and IP literals.
    pub admin_hosts: Vec<String>,
}

/// The admin listener: tokens for `/tenants` (SHA-256 of each).
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    pub tokens: Vec<NamedDigest>,
    pub allow_unauthenticated: bool,
}

/// Where one Pleo environment lives.
#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    pub base_url: BaseUrl,
    pub token_url: Uri,
    /// Where `connect` sends the operator to consent (authorization-code flow).
    pub authorize_url: Uri,
    pub ca_file: Option<PathBuf>,
}

/// A validated upstream base URL: https, or http on a loopback host only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix without trailing slash ("" for none); endpoint paths are appended.
    pub path: String,
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)
    }
}

/// One `tenant_from` rule; tried in order, first match wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Header(HeaderName),
    PathPrefix(String),
    HostSuffix(String),
    ClientKey,
}

#[derive(Clone, Debug)]
pub struct TenantConfig {
    pub environment: Environment,
    pub auth: AuthConfig,
    /// Opt-in: where to add the company id to each request (API-key tenants).
    pub company_id_header: Option<HeaderName>,
    pub company_id_query: Option<String>,
    /// This tenant's `rewrites`, tried before the top-level ones.
    pub rewrites: Vec<rewrite::RewriteRule>,
}

/// A tenant's credential, by auth model. Secrets are already resolved.
#[derive(Clone, Debug)]
pub enum AuthConfig {
    /// OAuth 2.0 with an unmanaged access token: sent as is, never refreshed.
    OAuth2 {
        access_token: Secret,
    },
    /// OAuth 2.0 with managed refresh: the gateway gets access tokens from
    /// the environment's token endpoint and keeps the rotating refresh token
    /// in `state_dir`. `refresh_token` is the initial one from the config
    /// (a consent given elsewhere); without it the tenant waits for
    /// `pleo-gateway connect`.
    OAuth2Managed {
        client_id: String,
        client_secret: Secret,
        refresh_token: Option<Secret>,
    },
    IntegratedApiKey {
        key: Secret,
    },
    StandaloneApiKey {
        key: Secret,
    },
    /// An API key the customer enters on a connect link (`source:
    /// connection`); kept encrypted in the store, none until then.
    ApiKeyConnection {
        model: AuthModel,
    },
}

impl AuthConfig {
    /// Whether the credential is made on a connect link rather than written here.
    pub fn from_connection(&self) -> bool {
        matches!(self, AuthConfig::ApiKeyConnection { .. } | AuthConfig::OAuth2Managed { refresh_token: None, .. })
    }

    /// For humans (`check`, `/tenants`): the kind and the last characters at most.
    pub fn masked(&self) -> String {
        match self {
            AuthConfig::OAuth2 { access_token } => format!("bearer {}", access_token.masked()),
            AuthConfig::OAuth2Managed { client_id, refresh_token: Some(rt), .. } => {
                format!("oauth2 client {client_id}, refresh {}", rt.masked())
            }
            AuthConfig::OAuth2Managed { client_id, refresh_token: None, .. } => {
                format!("oauth2 client {client_id}, tokens from state_dir")
            }
            AuthConfig::IntegratedApiKey { key } | AuthConfig::StandaloneApiKey { key } => {
                format!("key {}", key.masked())
            }
            AuthConfig::ApiKeyConnection { .. } => "key from a connection".to_string(),
        }
    }

    pub fn model(&self) -> AuthModel {
        match self {
            AuthConfig::OAuth2 { .. } | AuthConfig::OAuth2Managed { .. } => AuthModel::OAuth2,
            AuthConfig::IntegratedApiKey { .. } => AuthModel::IntegratedApiKey,
            AuthConfig::StandaloneApiKey { .. } => AuthModel::StandaloneApiKey,
            AuthConfig::ApiKeyConnection { model } => *model,
        }
    }
}

/// A gateway client: an app holding a gateway key (stored as its SHA-256).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    /// None for a client known only by its certificate (`client_ca`).
    pub key_sha256: Option<[u8; 32]>,
    pub tenants: Vec<String>,
}

/// A name with the SHA-256 of a token: a legacy openapi token (its
/// refusals are counted under `name`) or an admin token.
pub type LegacyToken = NamedDigest;

#[derive(Debug, Clone)]
pub struct NamedDigest {
    pub name: String,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// A client connection with no open request for this long is closed.
    pub idle_timeout: Duration,
    /// Larger request bodies are refused with 413, before or while they stream.
    pub max_request_body_bytes: u64,
    /// Requests handled at once; more are shed with 503 `overloaded`.
    pub max_in_flight: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    /// A kept-alive upstream connection unused this long is closed.
    pub upstream_idle_timeout: Duration,
    pub drain_timeout: Duration,
    /// Largest request head (request line + headers); larger gets 431.
    pub max_header_bytes: usize,
    /// How long one call to an OAuth token endpoint may take.
    pub token_timeout: Duration,
    /// OAuth tenants: request bodies up to this size are kept so the request
    /// can be retried once after Pleo answers 401 and the token is refreshed.
    pub retry_body_bytes: usize,
    /// Longest pause between two parts of a request body (slow uploads).
    pub body_read_timeout: Duration,
    /// Longest a response write may wait on a client that stopped reading.
    pub response_write_timeout: Duration,
    /// Client connections open at once per listener; more are closed at accept.
    pub max_connections: usize,
    /// One tenant's / one client's share of `max_in_flight`.
    pub max_in_flight_per_tenant: usize,
    pub max_in_flight_per_client: usize,
    /// A 401 from Pleo forces at most one OAuth refresh per tenant this often.
    pub forced_refresh_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_request_body_bytes: 10 * 1024 * 1024,
            max_in_flight: 10_000,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 65536,
            token_timeout: Duration::from_secs(10),
            retry_body_bytes: 64 * 1024,
            body_read_timeout: Duration::from_secs(30),
            response_write_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_in_flight_per_tenant: 5_000,
            max_in_flight_per_client: 5_000,
            forced_refresh_interval: Duration::from_secs(10),
        }
    }
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: String,
    pub message: String,
}

/// Why a config file was refused. Never contains a secret value: messages are
/// written by us or by serde (which quotes keys and variant names, not values
/// of string fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.file)?;
            if let Some(line) = issue.line {
                write!(f, ":{line}")?;
                if let Some(col) = issue.column {
                    write!(f, ":{col}")?;
                }
            }
            if issue.key.is_empty() {
                write!(f, ": {}", issue.message)?;
            } else {
                write!(f, ": {}: {}", issue.key, issue.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A problem with the file as a whole (unreadable), not with a key.
    pub fn io(path: &Path, message: &str) -> ConfigError {
        ConfigError {
            file: path.display().to_string(),
            issues: vec![ConfigIssue { line: None, column: None, key: String::new(), message: message.into() }],
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(path, &format!("cannot read the config file: {e}")))?;
        Config::from_yaml(&text, path)
    }

    /// Validates config text; `path` names the file in errors and anchors
    /// relative paths (secret files, state_dir, ca_file).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        // A large tenant table is read a slice at a time (slices.rs); the
        // rest, and anything slicing declines, is one yaml_serde parse.
        let raw: raw::RawConfig = match slices::parse(text, slices::SLICE) {
            Some(raw) => raw,
            None => yaml_serde::from_str(text)
                .map_err(|e| ConfigError { file: file.clone(), issues: vec![serde_issue(&e)] })?,
        };
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        validate::validate(raw, path, &base_dir).map_err(|found| ConfigError {
            file,
            issues: found
                .into_iter()
                .map(|(key, message)| {
                    let at = locate::locate(text, key.segs());
                    ConfigIssue {
                        line: at.map(|a| a.0),
                        column: at.map(|a| a.1),
                        key: locate::render(key.segs()),
                        message,
                    }
                })
                .collect(),
        })
    }
}

/// yaml_serde's message is "<path>: <what> at line L column C"; split it so
/// the output has the same shape as our own issues.
fn serde_issue(e: &yaml_serde::Error) -> ConfigIssue {
    let mut text = e.to_string();
    if let Some(cut) = text.rfind(" at line ") {
        text.truncate(cut);
    }
    let (key, message) = match text.split_once(": ") {
        Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
        _ => (String::new(), text),
    };
    // serde quotes what the file says (an unknown key may span lines): keep
    // one issue on one line, as log shippers and `check` readers expect.
    let one_line = |s: String| {
        s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
    };
    // An error about the file as a whole (several documents, say) is put
    // at its start, so that every issue has a line.
    ConfigIssue {
        line: Some(e.location().map_or(1, |l| l.line())),
        column: e.location().map(|l| l.column()),
        key: one_line(key),
        message: one_line(message),
    }
}

#[cfg(test)]
mod tests;

/// What `pleo-gateway check` prints for a valid config: one line per tenant,
/// credentials masked.
pub fn check_report(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid ({} tenants)", config.source.display(), config.tenants.len());
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let mut rows =
        vec![["TENANT".to_string(), "ENVIRONMENT".into(), "AUTH MODEL".into(), "CREDENTIAL".into(), "BASE URL".into()]];
    for (name, t) in &config.tenants {
        let cred = t.auth.masked();
        let base = config.environments.get(&t.environment).map(|e| e.base_url.to_string()).unwrap_or_default();
        rows.push([name.clone(), t.environment.as_str().into(), t.auth.model().as_str().into(), cred, base]);
    }
    out.push_str(&table(&rows));
    out
}

/// Rows as aligned columns, one line each (for `check` and `check --online`).
/// Padded by characters, not bytes: masked credentials contain multi-byte dots.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    use std::fmt::Write;
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count() + 2));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
