//! Closed enums and small facts shared by config, routing, the steps and
//! metrics labels: the bottom layer, importing nothing of the crate.

use serde::{Deserialize, Serialize};

/// The Pleo environment a tenant's credential was issued in. A key or token
/// only works in the environment that issued it, so each tenant has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Staging,
    Production,
}

impl Environment {
    pub const ALL: [Environment; 2] = [Environment::Staging, Environment::Production];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }

    /// The other one (the key check's environment interlock).
    pub fn other(self) -> Environment {
        match self {
            Environment::Staging => Environment::Production,
            Environment::Production => Environment::Staging,
        }
    }
}

/// How the gateway authenticates a tenant to Pleo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthModel {
    #[serde(rename = "oauth2")]
    OAuth2,
    IntegratedApiKey,
    StandaloneApiKey,
}

impl AuthModel {
    pub const ALL: [AuthModel; 3] = [AuthModel::OAuth2, AuthModel::IntegratedApiKey, AuthModel::StandaloneApiKey];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthModel::OAuth2 => "oauth2",
            AuthModel::IntegratedApiKey => "integrated_api_key",
            AuthModel::StandaloneApiKey => "standalone_api_key",
        }
    }
}

/// `telemetry` from the config (docs/telemetry.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Where spans go (OTLP/HTTP, `/v1/traces` added); `None`: no export.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Whether `traceparent`/`tracestate` reach Pleo (continued from the
    /// gateway's span when exporting, else as the client sent them).
    pub propagate_upstream: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { otlp_endpoint: None, service_name: "pleo-gateway".into(), propagate_upstream: false }
    }
}

/// `access_log` from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
    Off,
}

#[derive(Clone, Copy, Debug)]
pub struct AccessLogConfig {
    pub format: Format,
    pub include_query: bool,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig { format: Format::Json, include_query: false }
    }
}

/// The deprecated legacy API's hosts: refused as a request's host and as a base URL.
const LEGACY_HOSTS: [&str; 2] = ["openapi.pleo.io", "openapi.staging.pleo.io"];

/// `openapi.pleo.io`, any case, with or without a port or trailing dot.
pub fn is_legacy_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_end_matches('.');
    LEGACY_HOSTS.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// The status of a Pleo installation (`GET /v1/installations/me`), and
/// `Unknown` for anything else; also the `pleo_gateway_installations` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallationStatus {
    Activated,
    Inactive,
    Authorized,
    PendingIntegration,
    Error,
    Unknown,
}

impl InstallationStatus {
    pub const ALL: [InstallationStatus; 6] = [
        InstallationStatus::Activated,
        InstallationStatus::Inactive,
        InstallationStatus::Authorized,
        InstallationStatus::PendingIntegration,
        InstallationStatus::Error,
        InstallationStatus::Unknown,
    ];

    pub fn parse(s: &str) -> InstallationStatus {
        match s {
            "ACTIVATED" => InstallationStatus::Activated,
            "INACTIVE" => InstallationStatus::Inactive,
            "AUTHORIZED" => InstallationStatus::Authorized,
            "PENDING_INTEGRATION" => InstallationStatus::PendingIntegration,
            "ERROR" => InstallationStatus::Error,
            _ => InstallationStatus::Unknown,
        }
    }

    /// As Pleo spells it (and `/tenants` shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            InstallationStatus::Activated => "ACTIVATED",
            InstallationStatus::Inactive => "INACTIVE",
            InstallationStatus::Authorized => "AUTHORIZED",
            InstallationStatus::PendingIntegration => "PENDING_INTEGRATION",
            InstallationStatus::Error => "ERROR",
            InstallationStatus::Unknown => "unknown",
        }
    }

    /// The `pleo_gateway_installations{status}` label.
    pub fn label(self) -> &'static str {
        match self {
            InstallationStatus::Activated => "activated",
            InstallationStatus::Inactive => "inactive",
            InstallationStatus::Authorized => "authorized",
            InstallationStatus::PendingIntegration => "pending_integration",
            InstallationStatus::Error => "error",
            InstallationStatus::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_host_forms() {
        assert!(is_legacy_host("openapi.pleo.io"));
        assert!(is_legacy_host("OpenAPI.Pleo.IO:443"));
        assert!(is_legacy_host("openapi.pleo.io."));
        assert!(is_legacy_host("openapi.staging.pleo.io"));
        assert!(!is_legacy_host("external.pleo.io"));
        assert!(!is_legacy_host("127.0.0.1:8080"));
        assert!(!is_legacy_host("notopenapi.pleo.io"));
    }
}
