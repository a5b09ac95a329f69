//! Closed enums shared by config, routing and metrics labels.

use serde::Deserialize;

/// The Pleo environment a tenant's credential was issued in. A key or token
/// only works in the environment that issued it, so each tenant has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
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
}

/// How the gateway authenticates a tenant to Pleo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
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
