//! Operator commands that talk to Pleo with a tenant's credential:
//! `check --online` (every API-key tenant's key and installation, as the
//! running gateway would see them) and `installation TENANT show|activate`.
//! They use the tenant's static credential (API key, or an unmanaged
//! `access_token`); a managed OAuth tenant's tokens belong to the running
//! gateway, which must stay their only user (every refresh rotates them).

use std::io::Write;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::BodyExt;

use crate::body::RequestBody;
use crate::config::{AuthModel, Config, StoreConfig};
use crate::credential::check::{describe, CheckState};
use crate::credential::static_authorization;
use crate::upstream::{Upstream, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The command cannot be done as asked (exit 64).
    #[error("{0}")]
    Usage(String),
    /// Pleo could not be asked, or said no (exit 69).
    #[error("{0}")]
    Failed(String),
}

/// `check --online`: one line per API-key tenant. `Ok(true)` when every one
/// is connected.
pub async fn check_online(config: &Config, out: &mut impl Write) -> Result<bool, ManageError> {
    let upstreams = Upstreams::build(config).map_err(|e| ManageError::Failed(e.to_string()))?;
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
) -> Result<(), ManageError> {
    let t = config.tenants.get(tenant).ok_or_else(|| {
        ManageError::Usage(format!(
            "no tenant `{tenant}` in {} (expected one of: {})",
            config.source.display(),
            config.tenants.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let authorization = static_authorization(&t.auth).ok_or_else(|| {
        ManageError::Usage(format!(
            "tenant `{tenant}` is a managed OAuth tenant: its tokens belong to the running gateway (every refresh \
             rotates them), so this command does not use them. Use an API-key tenant, or call the API through the gateway"
        ))
    })?;
    let upstreams = Upstreams::build(config).map_err(|e| ManageError::Failed(e.to_string()))?;
    let up = upstreams.get(t.environment);
    let (method, path) = match action {
        InstallationAction::Show => (Method::GET, "/v1/installations/me"),
        InstallationAction::Activate => (Method::POST, "/v1/installations/me:activate"),
    };
    let (status, body) = call(&up, method, path, &authorization).await?;
    if !status.is_success() {
        return Err(ManageError::Failed(format!(
            "Pleo answered {status} to {path} for tenant `{tenant}`: {}",
            error_text(&body)
        )));
    }
    let mut doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| ManageError::Failed(format!("Pleo's answer to {path} is not JSON")))?;
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

async fn call(
    up: &Upstream,
    method: Method,
    path: &str,
    authorization: &HeaderValue,
) -> Result<(http::StatusCode, Bytes), ManageError> {
    let uri = format!("{}{path}", up.base).parse().map_err(|_| ManageError::Failed("bad base URL".into()))?;
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    req.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
    req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if req.method() == Method::POST {
        req.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    let failed = |what: &str| ManageError::Failed(format!("{what} (is Pleo reachable at {}?)", up.base));
    let resp = tokio::time::timeout(std::time::Duration::from_secs(15), up.client().request(req))
        .await
        .map_err(|_| failed("Pleo did not answer in time"))?
        .map_err(|_| failed("the request to Pleo failed"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|_| failed("Pleo's answer could not be read"))?.to_bytes();
    Ok((status, body))
}

/// Pleo's error in a line (its own words, bounded; never a credential of ours).
fn error_text(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = v.get("message").or_else(|| v.get("error")).and_then(|m| m.as_str()).unwrap_or("no details");
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// `check`'s store line: the file store's directory, or whether the shared
/// store answers and is at this build's schema (migrating an older one, as
/// the gateway would at start). `Ok(false)` when it cannot be used.
pub async fn check_store(config: &Config, out: &mut impl Write) -> Result<bool, ManageError> {
    use crate::credential::postgres::{PostgresStore, SCHEMA_VERSION};
    let StoreConfig::Postgres(pg) = &config.store else {
        let _ = writeln!(out, "store: file, {}", config.state_dir.display());
        connections(config, out).await;
        return Ok(true);
    };
    let store = PostgresStore::for_command(pg).map_err(ManageError::Failed)?;
    match store.schema_version().await {
        Ok(v) => {
            let _ = writeln!(out, "store: postgres, reachable, schema version {v} (this build: {SCHEMA_VERSION})");
            connections(config, out).await;
            Ok(v == SCHEMA_VERSION)
        }
        Err(e) => {
            let _ = writeln!(out, "store: postgres, NOT usable: {e}");
            Ok(false)
        }
    }
}

/// `check`'s connections: each tenant whose credential comes from a connect
/// link, with when and by which link it was connected (never the key).
async fn connections(config: &Config, out: &mut impl Write) {
    let tenants: Vec<&String> =
        config.tenants.iter().filter(|(_, t)| t.auth.from_connection()).map(|(n, _)| n).collect();
    if tenants.is_empty() {
        return;
    }
    let Ok(store) = crate::connections::store_for_command(config) else { return };
    let records = match store.connections().await {
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

/// `store import`: copies every tenant's chain from `state_dir` into the
/// shared store, once. A tenant the database already has a chain for is
/// skipped (it may be newer: replicas may be running on it), and nothing
/// is sent to Pleo, so no token is spent or replayed.
pub async fn store_import(config: &Config, out: &mut impl Write) -> Result<(), ManageError> {
    use crate::credential::postgres::PostgresStore;
    use crate::credential::store::FileStore;
    let StoreConfig::Postgres(pg) = &config.store else {
        return Err(ManageError::Usage(
            "store import copies state_dir into a PostgreSQL store: set store.kind: postgres first".into(),
        ));
    };
    let files = FileStore::new(&config.state_dir);
    let dir = std::fs::read_dir(&config.state_dir)
        .map_err(|e| ManageError::Failed(format!("cannot read {}: {e}", config.state_dir.display())))?;
    let mut tenants: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    tenants.sort();
    let store = PostgresStore::for_command(pg).map_err(ManageError::Failed)?;
    let (mut imported, mut skipped) = (0, 0);
    for tenant in tenants {
        let Some(chain) = files.load_blocking(&tenant).map_err(|e| ManageError::Failed(e.to_string()))? else {
            continue;
        };
        if store.import(&tenant, &chain).await.map_err(|e| ManageError::Failed(e.to_string()))? {
            imported += 1;
            let _ = writeln!(out, "imported {tenant}");
        } else {
            skipped += 1;
            let _ = writeln!(out, "skipped {tenant}: the database already has a chain for it (left as it is)");
        }
    }
    let _ = writeln!(out, "{imported} imported, {skipped} skipped, from {}", config.state_dir.display());
    Ok(())
}

/// What `pleo-gateway link` does.
#[derive(Debug)]
pub enum LinkAction {
    Create { tenant: String, expires: Option<std::time::Duration> },
    List { tenant: Option<String> },
    Revoke { id: String },
}

/// `pleo-gateway link`: makes, lists or revokes connect links in the
/// configured store (a running gateway sees them at once).
pub async fn link(config: &Config, action: LinkAction, out: &mut impl Write) -> Result<(), ManageError> {
    use crate::connections::{self, Actor};
    let store = connections::store_for_command(config).map_err(ManageError::Failed)?;
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| format!("uid{uid}"), |u| u.name);
    let by = Actor::Cli(format!(
        "{user}@{}",
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let failed = |e: crate::credential::store::StoreError| ManageError::Failed(e.to_string());
    match action {
        LinkAction::Create { tenant, expires } => {
            if !config.tenants.contains_key(&tenant) {
                return Err(ManageError::Usage(format!("no tenant `{tenant}` in {}", config.source.display())));
            }
            let Some(connect) = &config.connect else {
                return Err(ManageError::Usage(
                    "no `connect` in the config: configure connect.listen and connect.public_url first".into(),
                ));
            };
            let ttl = expires.unwrap_or(connect.link_ttl);
            if ttl < std::time::Duration::from_secs(60) || ttl > connections::MAX_LINK_TTL {
                return Err(ManageError::Usage("--expires must be from 1m to 90d".into()));
            }
            let (link, url) = connections::create_link(&*store, Some(&connect.public_url), &tenant, ttl, &by)
                .await
                .map_err(failed)?;
            let expires = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(link.expires_at_ms),
            );
            let _ = writeln!(
                out,
                "Connect link for tenant `{tenant}` (id {}, expires {expires}, works once):\n\n  {}\n\n\
                 Send it to the customer's Pleo admin. It is shown only now: the gateway keeps only its hash.",
                link.id,
                url.unwrap_or_default()
            );
        }
        LinkAction::List { tenant } => {
            let now = crate::credential::store::unix_now_ms();
            let mut rows =
                vec![["ID".to_string(), "TENANT".into(), "STATE".into(), "EXPIRES".into(), "CREATED BY".into()]];
            for l in store.links().await.map_err(failed)? {
                if tenant.as_ref().is_some_and(|t| *t != l.tenant) {
                    continue;
                }
                let state = l.state(now).as_str().to_string();
                let expires = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(l.expires_at_ms),
                );
                rows.push([l.id, l.tenant, state, expires.to_string(), l.created_by]);
            }
            let _ = write!(out, "{}", crate::config::table(&rows));
        }
        LinkAction::Revoke { id } => {
            match store.revoke(&id, crate::credential::store::unix_now_ms()).await.map_err(failed)? {
                Some(l) => {
                    connections::audit("link_revoked", &l.tenant, &by, "ok");
                    let now = crate::credential::store::unix_now_ms();
                    let _ = writeln!(out, "link {id} for tenant `{}` is {}", l.tenant, l.state(now).as_str());
                }
                None => return Err(ManageError::Usage(format!("no connect link `{id}`"))),
            }
        }
    }
    Ok(())
}

/// `pleo-gateway migration-report`: the running gateway's `GET /migration`
/// (on `admin`, with the token from PLEO_GATEWAY_ADMIN_TOKEN), as a table.
pub async fn migration_report(admin: &str, out: &mut impl Write) -> Result<(), ManageError> {
    use http_body_util::BodyExt;
    let failed = |m: String| ManageError::Failed(m);
    let uri: http::Uri = format!("http://{admin}/migration")
        .parse()
        .map_err(|_| ManageError::Usage(format!("`{admin}` is not an address")))?;
    let mut req =
        http::Request::get(uri).body(http_body_util::Full::new(bytes::Bytes::new())).expect("a valid request");
    if let Ok(token) = std::env::var("PLEO_GATEWAY_ADMIN_TOKEN") {
        let value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| ManageError::Usage("PLEO_GATEWAY_ADMIN_TOKEN is not a valid token".into()))?;
        req.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let resp =
        client.request(req).await.map_err(|e| failed(format!("cannot reach the admin listener {admin}: {e}")))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| failed(e.to_string()))?.to_bytes();
    if status == http::StatusCode::UNAUTHORIZED {
        return Err(ManageError::Usage("the admin listener wants an admin token: set PLEO_GATEWAY_ADMIN_TOKEN".into()));
    }
    if !status.is_success() {
        return Err(failed(format!("GET /migration answered {status}")));
    }
    let report: serde_json::Value = serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
    let ms = |v: &serde_json::Value| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.as_u64().unwrap_or(0));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    let mut rows = vec![[
        "CLIENT".to_string(),
        "WHAT".into(),
        "TEMPLATE / APP".into(),
        "COUNT".into(),
        "TENANTS".into(),
        "FIRST SEEN".into(),
        "LAST SEEN".into(),
    ]];
    let empty = serde_json::Map::new();
    for (client, c) in report["clients"].as_object().unwrap_or(&empty) {
        for f in c["not_found"].as_array().into_iter().flatten() {
            let tenants: Vec<&str> = f["tenants"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
            rows.push([
                client.clone(),
                format!("Pleo {}", f["status"]),
                f["template"].as_str().unwrap_or_default().to_string(),
                f["count"].to_string(),
                tenants.join(","),
                ms(&f["first_seen_ms"]),
                ms(&f["last_seen_ms"]),
            ]);
        }
        for (app, seen) in c["legacy_tokens"].as_object().unwrap_or(&empty) {
            rows.push([
                client.clone(),
                "legacy token".into(),
                app.clone(),
                seen["count"].to_string(),
                "-".into(),
                ms(&seen["first_seen_ms"]),
                ms(&seen["last_seen_ms"]),
            ]);
        }
    }
    if rows.len() == 1 {
        let _ = writeln!(
            out,
            "Nothing to report: Pleo has answered no request with 404 or 405, and no legacy token was refused."
        );
        return Ok(());
    }
    let _ = write!(out, "{}", crate::config::table(&rows));
    Ok(())
}
