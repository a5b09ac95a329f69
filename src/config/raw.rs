//! The raw layer: structs that mirror gateway.yaml exactly. Unknown keys are
//! errors (`deny_unknown_fields`), because a typo'd key silently ignored is a
//! gateway running with a config its operator did not write.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::model::{AuthModel, Environment};
use crate::secret::SecretSource;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub workers: Option<usize>,
    #[serde(default)]
    pub environments: RawEnvironments,
    pub tenant_from: Option<Vec<SelectorForm>>,
    pub default_tenant: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub store: Option<RawStore>,
    #[serde(default)]
    pub tenants: BTreeMap<String, RawTenant>,
    #[serde(default)]
    pub clients: Vec<RawClient>,
    #[serde(default)]
    pub allow_unauthenticated_clients: bool,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub metrics: RawMetrics,
    pub sandbox: Option<RawSandbox>,
    pub tls: Option<RawTls>,
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub legacy_tokens: Vec<RawLegacyToken>,
    pub access_log: Option<RawAccessLog>,
    /// OpenTelemetry traces (opt-in).
    pub telemetry: Option<RawTelemetry>,
    /// Host names the app listener serves besides loopback names and IP
    /// literals (`name` or `*.suffix`); DNS rebinding protection.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the gateway (`https://app.example`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Forward the client's X-Forwarded-For, Forwarded, X-Real-IP and
    /// X-Forwarded-Host/Proto to Pleo (only behind a balancer that sets them).
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    #[serde(default)]
    pub admin: RawAdmin,
    /// Customer-facing connect pages (connect links), on their own listener.
    pub connect: Option<RawConnect>,
    /// `partner`: Pleo's Early Access Programme rules are enforced, not warned about.
    pub policy: Option<String>,
    /// Path rewrites for endpoints that moved, for every tenant.
    #[serde(default)]
    pub rewrites: Vec<RawRewrite>,
    pub migration: Option<RawMigration>,
    /// Integrations customers install from Pleo (`/install/<app>`).
    #[serde(default)]
    pub apps: BTreeMap<String, RawApp>,
}

/// One `apps` entry: an integration customers install from Pleo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub environment: Environment,
    pub auth: RawAppAuth,
    /// `on_connect` (default) or `manual`.
    pub activate: Option<String>,
    /// The tenant an install creates, over `{company_id}`.
    pub tenant_name: Option<String>,
    pub handover: RawHandover,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppAuth {
    pub model: AuthModel,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
}

/// Pleo's session handover token (`pleo_id_token`): where its keys are and what it must say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHandover {
    pub jwks_url: String,
    pub issuer: String,
    pub company_claim: Option<String>,
}

/// One `rewrites` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub method: Option<String>,
    pub from: String,
    pub to: String,
}

/// `migration`: the 404/405 report's bounds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigration {
    pub max_templates: Option<usize>,
}

/// `connect`: where customers open connect links.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnect {
    pub listen: String,
    /// The URL customers reach (the OAuth redirect URI is this + /oauth/callback).
    pub public_url: String,
    pub tls: Option<RawTls>,
    /// What the pages call the integration ("Connect <name> to Pleo").
    pub integration_name: Option<String>,
    /// How long a new link stays usable unless its maker says otherwise.
    pub link_ttl: Option<String>,
}

/// `store`: where OAuth token state lives (`kind: file` or `kind: postgres`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: String,
    pub dir: Option<PathBuf>,
    pub url: Option<SecretSource>,
    pub pool_size: Option<usize>,
    pub connect_timeout: Option<String>,
    pub statement_timeout: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub poll_interval: Option<String>,
    /// AES-256-GCM key for credentials entered at runtime (connect pages, the API).
    pub encryption_key: Option<SecretSource>,
    /// Keys rotated out: still read, never written.
    #[serde(default)]
    pub previous_encryption_keys: Vec<SecretSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default)]
    pub tokens: Vec<RawLegacyToken>,
    /// Serve `/tenants` without a token on a non-loopback `admin_listen`.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Host names the admin listener serves besides loopback names and IP literals.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLegacyToken {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub propagate_upstream: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: Option<String>,
    pub include_query: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironments {
    pub staging: Option<RawEnvironment>,
    pub production: Option<RawEnvironment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    pub base_url: Option<String>,
    pub token_url: Option<String>,
    pub authorize_url: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// One `tenant_from` entry: `- header: X`, `- path_prefix: /p/`,
/// `- host_suffix: .s`, or the bare word `- client_key`.
#[derive(Debug)]
pub enum RawSelector {
    Header(String),
    PathPrefix(String),
    HostSuffix(String),
    ClientKey,
}

/// yaml_serde (like serde_yaml 0.9 before it) reads externally tagged enums as YAML tags (`!header X`);
/// the contract's form is a one-key map or a bare word, read here.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SelectorForm {
    Word(String),
    Map(BTreeMap<String, String>),
}

const SELECTOR_FORMS: &str =
    "expected one of `header: NAME`, `path_prefix: /prefix/`, `host_suffix: .suffix`, `client_key`";

impl TryFrom<SelectorForm> for RawSelector {
    type Error = String;

    fn try_from(form: SelectorForm) -> Result<Self, String> {
        match form {
            SelectorForm::Word(w) if w == "client_key" => Ok(RawSelector::ClientKey),
            SelectorForm::Map(m) if m.len() == 1 => {
                let (k, v) = m.into_iter().next().expect("one entry");
                match k.as_str() {
                    "header" => Ok(RawSelector::Header(v)),
                    "path_prefix" => Ok(RawSelector::PathPrefix(v)),
                    "host_suffix" => Ok(RawSelector::HostSuffix(v)),
                    other => Err(format!("unknown tenant rule `{other}`, {SELECTOR_FORMS}")),
                }
            }
            _ => Err(format!("not a tenant rule, {SELECTOR_FORMS}")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub environment: Environment,
    pub auth: RawAuth,
    /// Add the company id (from the installation) to each request as this header.
    pub company_id_header: Option<String>,
    /// ... or as this query parameter.
    pub company_id_query: Option<String>,
    /// Path rewrites for this tenant, tried before the top-level ones.
    #[serde(default)]
    pub rewrites: Vec<RawRewrite>,
}

/// Flat on purpose: which fields a model allows is checked in `validate`, so
/// the error can name the exact key ("tenants.x.auth.key: not used by oauth2").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub model: AuthModel,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    pub refresh_token: Option<SecretSource>,
    pub access_token: Option<SecretSource>,
    pub key: Option<SecretSource>,
    /// `config` (default) or `connection`: the credential is made on a connect link.
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub name: String,
    pub key_sha256: Option<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub header_read_timeout: Option<String>,
    pub upstream_connect_timeout: Option<String>,
    pub upstream_timeout: Option<String>,
    pub upstream_idle_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub idle_timeout: Option<String>,
    pub max_request_body_bytes: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub token_timeout: Option<String>,
    pub retry_body_bytes: Option<usize>,
    pub body_read_timeout: Option<String>,
    pub response_write_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_in_flight_per_tenant: Option<usize>,
    pub max_in_flight_per_client: Option<usize>,
    pub forced_refresh_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default)]
    pub per_tenant: bool,
}

/// Addresses of the built-in Pleo stand-in, one per environment (offline demo).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    pub staging: Option<String>,
    pub production: Option<String>,
    /// Lifetime of the OAuth access tokens the sandbox issues (default 15 min).
    pub access_token_ttl: Option<String>,
}
