//! A tenant an install from Pleo created: which app, which company or
//! organisation, who installed it and where the installation stands. The
//! credential itself is elsewhere: an OAuth chain in the token store, a
//! key sealed in the onboarded keys, both under the tenant's name.

use serde::{Deserialize, Serialize};

/// One install, as stored (the file store's `connect.json`, PostgreSQL's
/// `pleo_gateway_installs`). Nothing in it is a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    /// The tenant's name (the app's `tenant_name` over the company id).
    pub tenant: String,
    pub app: String,
    /// `staging` or `production`: the app's, when it was installed.
    pub environment: String,
    /// `oauth2` or `integrated_api_key`.
    pub model: String,
    /// Pleo's `resource`: `urn:pleo:company:<id>` or `urn:pleo:organization:<id>`.
    pub resource: String,
    /// Pleo's installation status when last seen (`ACTIVATED`, ...).
    pub status: String,
    pub error_code: Option<String>,
    /// The handover token's `sub` (the Pleo user), when the install came with one.
    pub installed_by: Option<String>,
    pub installed_at_ms: u64,
    pub updated_at_ms: u64,
    /// Set when the install was removed (Settings, the API, or Pleo's side).
    pub uninstalled_at_ms: Option<u64>,
    /// Who uninstalled it: `settings:<user>`, `api:<token name>`, `pleo` (seen as a revoked grant).
    pub uninstalled_by: Option<String>,
    /// The last thing that went wrong with it, in words (no secret).
    pub last_error: Option<String>,
}

impl InstallRecord {
    pub fn is_installed(&self) -> bool {
        self.uninstalled_at_ms.is_none()
    }
}
