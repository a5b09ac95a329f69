//! `pleo-gateway installation TENANT show|activate`: the tenant's Pleo
//! installation, with its static credential (API key, or an unmanaged
//! `access_token`; never a managed OAuth tenant's rotating tokens).

use std::io::Write;

use super::CommandError;
use crate::config::Config;
use crate::credential::static_authorization;
use crate::pleo::installation::{self, Call};
use crate::upstream::Upstreams;

const USER_AGENT: &str = concat!("pleo-gateway-installation/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InstallationAction {
    /// Print the installation document (metadata values that look secret masked).
    Show,
    /// `POST /v1/installations/me:activate`.
    Activate,
}

/// `installation TENANT show|activate`.
pub async fn installation(
    config: &Config,
    tenant: &str,
    action: InstallationAction,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let t = config.tenants.get(tenant).ok_or_else(|| {
        CommandError::Usage(format!(
            "no tenant `{tenant}` in {} (expected one of: {})",
            config.source.display(),
            config.tenants.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let authorization = static_authorization(&t.auth).ok_or_else(|| {
        CommandError::Usage(format!(
            "tenant `{tenant}` is a managed OAuth tenant: its tokens belong to the running gateway (every refresh \
             rotates them), so this command does not use them. Use an API-key tenant, or call the API through the gateway"
        ))
    })?;
    let upstreams = Upstreams::build(config).map_err(|e| CommandError::Unavailable(e.to_string()))?;
    let up = upstreams.get(t.environment);
    let call = match action {
        InstallationAction::Show => Call::Show,
        InstallationAction::Activate => Call::Activate,
    };
    let path = call.path();
    let (status, body) = installation::call(&up, call, &authorization, USER_AGENT)
        .await
        .map_err(|e| CommandError::Unavailable(format!("{e} (is Pleo reachable at {}?)", up.base)))?;
    if !status.is_success() {
        return Err(CommandError::Unavailable(format!(
            "Pleo answered {status} to {path} for tenant `{tenant}`: {}",
            error_text(&body)
        )));
    }
    let mut doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| CommandError::Unavailable(format!("Pleo's answer to {path} is not JSON")))?;
    if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for (k, v) in meta.iter_mut() {
            let k = k.to_ascii_lowercase();
            if ["secret", "token", "key", "password"].iter().any(|s| k.contains(s)) {
                *v = "••••".into();
            }
        }
    }
    if action == InstallationAction::Activate {
        let _ = writeln!(out, "Tenant `{tenant}`: installation is now {}", doc["status"].as_str().unwrap_or("?"));
    }
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    Ok(())
}

/// Pleo's error in a line (its own words, bounded; never a credential of ours).
fn error_text(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = v.get("message").or_else(|| v.get("error")).and_then(|m| m.as_str()).unwrap_or("no details");
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}
