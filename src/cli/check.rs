//! `pleo-gateway check [--online]`: the config as the gateway reads it, the
//! store, and with `--online` every API-key tenant's key and installation
//! as Pleo answers for it. A managed OAuth tenant's tokens belong to the
//! running gateway, which must stay their only user (every refresh rotates
//! them), so no command here uses them.

use std::io::Write;

use super::CommandError;
use crate::config::{AuthModel, Config, StoreConfig};
use crate::credential::check::{describe, CheckState};
use crate::credential::static_authorization;
use crate::upstream::Upstreams;

/// `check`: the tenants, the store, and with `online` the key checks.
/// `Ok(false)` when the store or a key is not usable (exit 69).
pub async fn check(config: &Config, online: bool, out: &mut impl Write) -> Result<bool, CommandError> {
    let _ = write!(out, "{}", crate::config::check_report(config));
    if !check_store(config, out).await? {
        return Ok(false);
    }
    if !online {
        return Ok(true);
    }
    let _ = writeln!(out);
    check_online(config, out).await
}

/// `check --online`: one line per API-key tenant. `Ok(true)` when every one
/// is connected.
async fn check_online(config: &Config, out: &mut impl Write) -> Result<bool, CommandError> {
    let upstreams = Upstreams::build(config).map_err(|e| CommandError::Unavailable(e.to_string()))?;
    let mut all_connected = true;
    let mut rows =
        vec![["TENANT".to_string(), "KEY CHECK".into(), "COMPANY".into(), "INSTALLATION".into(), "NOTE".into()]];
    for (name, t) in &config.tenants {
        if !matches!(t.auth.model(), AuthModel::IntegratedApiKey | AuthModel::StandaloneApiKey) {
            continue;
        }
        let Some(authorization) = static_authorization(&t.auth) else { continue };
        let other = t.environment.other();
        let (state, d) = crate::credential::check::check_key_interlocked(
            &authorization,
            &upstreams.get(t.environment),
            t.environment,
            &upstreams.get(other),
            other,
        )
        .await;
        all_connected &= state == CheckState::Connected;
        let note = match state {
            CheckState::Connected => d.note.clone().unwrap_or_default(),
            _ => describe(state, &d),
        };
        rows.push([
            name.clone(),
            state.as_str().into(),
            d.company_id.clone().unwrap_or_else(|| "-".into()),
            d.installation.map_or("-", |s| s.as_str()).into(),
            note,
        ]);
    }
    let _ = write!(out, "{}", crate::config::table(&rows));
    Ok(all_connected)
}

/// `check`'s store line: the file store's directory, or whether the shared
/// store answers and is at this build's schema (migrating an older one, as
/// the gateway would at start). `Ok(false)` when it cannot be used.
async fn check_store(config: &Config, out: &mut impl Write) -> Result<bool, CommandError> {
    use crate::state::postgres::{PostgresStore, SCHEMA_VERSION};
    let StoreConfig::Postgres(pg) = &config.store else {
        let _ = writeln!(out, "store: file, {}", config.state_dir.display());
        onboarded(config, out).await;
        installs(config, out).await;
        return Ok(true);
    };
    let store = PostgresStore::for_command(pg).map_err(CommandError::Unavailable)?;
    match store.schema_version().await {
        Ok(v) => {
            let _ = writeln!(out, "store: postgres, reachable, schema version {v} (this build: {SCHEMA_VERSION})");
            onboarded(config, out).await;
            installs(config, out).await;
            Ok(v == SCHEMA_VERSION)
        }
        Err(e) => {
            let _ = writeln!(out, "store: postgres, NOT usable: {e}");
            Ok(false)
        }
    }
}

/// `check`'s onboarded tenants: each tenant whose credential comes from a connect
/// link, with when and by which link it was connected (never the key).
async fn onboarded(config: &Config, out: &mut impl Write) {
    let tenants: Vec<&String> =
        config.tenants.iter().filter(|(_, t)| t.auth.from_connection()).map(|(n, _)| n).collect();
    if tenants.is_empty() {
        return;
    }
    let Ok(store) = crate::state::open_for_command(config) else { return };
    let records = match store.onboarded().await {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "connections: cannot read them: {e}");
            return;
        }
    };
    let mut rows = vec![["TENANT".to_string(), "SOURCE".into(), "CREDENTIAL".into(), "CONNECTED".into(), "BY".into()]];
    for name in tenants {
        let row = match records.iter().find(|r| &r.tenant == name) {
            Some(r) => {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.connected_at_ms);
                [
                    name.clone(),
                    "connection".into(),
                    r.masked.clone(),
                    humantime::format_rfc3339_seconds(at).to_string(),
                    r.by.clone(),
                ]
            }
            None => [
                name.clone(),
                "connection".into(),
                "not connected yet: send a connect link".into(),
                "-".into(),
                "-".into(),
            ],
        };
        rows.push(row);
    }
    let _ = write!(out, "\n{}", crate::config::table(&rows));
}

/// `check`'s apps and the tenants their installs made (`source: install`):
/// app, company or organisation, Pleo's status, who installed it. Never a credential.
async fn installs(config: &Config, out: &mut impl Write) {
    if config.apps.is_empty() {
        return;
    }
    let mut rows = vec![[
        "APP".to_string(),
        "ENVIRONMENT".into(),
        "AUTH MODEL".into(),
        "TENANT NAME".into(),
        "INITIATION URI".into(),
    ]];
    for (name, a) in &config.apps {
        let uri = config.connect.as_ref().map_or("-".to_string(), |c| format!("{}/install/{name}", c.public_url));
        rows.push([
            name.clone(),
            a.environment.as_str().into(),
            a.model().as_str().into(),
            a.tenant_name.to_string(),
            uri,
        ]);
    }
    let _ = write!(out, "\n{}", crate::config::table(&rows));
    let Ok(store) = crate::state::open_for_command(config) else { return };
    let records = match store.installs(&[]).await {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "installs: cannot read them: {e}");
            return;
        }
    };
    if records.is_empty() {
        let _ = writeln!(out, "\nno installs yet");
        return;
    }
    let mut rows = vec![[
        "TENANT".to_string(),
        "SOURCE".into(),
        "APP".into(),
        "RESOURCE".into(),
        "INSTALLATION".into(),
        "STATE".into(),
        "INSTALLED BY".into(),
    ]];
    let mut records = records;
    records.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    for r in records {
        let resource = crate::pleo::installation::parse_resource(&r.resource)
            .map_or_else(|| r.resource.to_string(), |(k, id)| format!("{} {id}", k.as_str()));
        let state = if !r.is_installed() {
            "uninstalled"
        } else if !config.apps.contains_key(&*r.app) {
            "app_removed"
        } else {
            "installed"
        };
        rows.push([
            r.tenant.to_string(),
            "install".into(),
            r.app.to_string(),
            resource,
            r.status.to_string(),
            state.into(),
            r.installed_by.as_deref().unwrap_or("-").to_string(),
        ]);
    }
    let _ = write!(out, "\n{}", crate::config::table(&rows));
}
