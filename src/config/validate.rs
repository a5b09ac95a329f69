//! Raw -> validated. Collects every problem (not just the first) with the key
//! path it belongs to; `Config::from_yaml` turns paths into lines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderName, Uri};

use super::locate::Seg;
use super::raw::{RawAuth, RawConfig, RawEnvironment, RawSelector};
use super::*;
use crate::secret::{Secret, SecretSource};

mod apps;
mod telemetry;

type Found = Vec<(KeyPath, String)>;

/// A key path being built, for the problem list: `path("limits").key("token_timeout")`.
#[derive(Clone, Debug)]
pub(crate) struct KeyPath(Vec<Seg>);

fn path(first: &str) -> KeyPath {
    KeyPath(vec![Seg::Key(first.to_string())])
}

impl KeyPath {
    fn key(&self, name: &str) -> KeyPath {
        self.with(Seg::Key(name.to_string()))
    }

    fn index(&self, i: usize) -> KeyPath {
        self.with(Seg::Index(i))
    }

    fn with(&self, seg: Seg) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(seg);
        KeyPath(segs)
    }

    pub(crate) fn segs(&self) -> &[Seg] {
        &self.0
    }
}

/// The smallest duration a `limits` entry takes.
const NONZERO: Duration = Duration::from_nanos(1);

/// A duration such as `500ms`, `10s` or `15m`, at least `min`.
fn duration(text: &str, min: Duration, at: KeyPath, found: &mut Found) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= min => Some(d),
        _ if min > NONZERO => {
            let min = humantime::format_duration(min);
            found.push((at, format!("`{text}` is not a duration of at least {min} (such as 3s or 15m)")));
            None
        }
        _ => {
            found.push((at, format!("`{text}` is not a duration (expected e.g. 500ms, 10s, 1m)")));
            None
        }
    }
}

/// Pleo's own endpoints, used when `environments` does not override them.
const STAGING_BASE_URL: &str = "https://external.staging.pleo.io";
const STAGING_TOKEN_URL: &str = "https://auth.staging.pleo.io/oauth/token";
const PRODUCTION_BASE_URL: &str = "https://external.pleo.io";
const PRODUCTION_TOKEN_URL: &str = "https://auth.pleo.io/oauth/token";

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN: &str = "127.0.0.1:9464";

pub fn validate(raw: RawConfig, source: &Path, base_dir: &Path) -> Result<Config, Found> {
    let mut found = Found::new();
    let mut warnings = Vec::new();

    let listen = addr(raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN), path("listen"), &mut found);
    let admin_listen = addr(raw.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN), path("admin_listen"), &mut found);
    if let Some(0) | Some(1025..) = raw.workers {
        found.push((path("workers"), "expected a number of worker threads from 1 to 1024".into()));
    }

    let environments = environments(&raw, base_dir, &mut found);
    let tenants = tenants(&raw, base_dir, &mut found, &mut warnings);
    let apps = apps::apps(&raw, base_dir, &mut found, &mut warnings);
    let clients = clients(&raw, &tenants, &mut found);
    let tenant_from = selectors(&raw, &mut found);

    if let Some(name) = &raw.default_tenant {
        if !tenants.contains_key(name) {
            found.push((path("default_tenant"), format!("names no tenant (expected one of: {})", names(&tenants))));
        }
    }
    if let Some(listen) = listen {
        if !listen.ip().is_loopback() && clients.is_empty() && !raw.allow_unauthenticated_clients {
            found.push((
                path("listen"),
                format!(
                    "{listen} is not a loopback address and no `clients` are configured: anyone who can reach it \
                     could use every tenant's Pleo credential (an open relay). Configure `clients` with gateway \
                     keys, or set `allow_unauthenticated_clients: true` if a network boundary already restricts callers"
                ),
            ));
        }
    }

    let watched_files = watched_files(&raw, source, base_dir);
    let limits = limits(&raw, &mut found);
    let legacy_tokens = named_digests(&raw.legacy_tokens, path("legacy_tokens"), &mut found);
    let admin = AdminConfig {
        tokens: named_digests(&raw.admin.tokens, path("admin").key("tokens"), &mut found),
        allow_unauthenticated: raw.admin.allow_unauthenticated,
    };
    if let Some(a) = admin_listen {
        if !a.ip().is_loopback() && admin.tokens.is_empty() && !admin.allow_unauthenticated {
            found.push((
                path("admin_listen"),
                format!(
                    "{a} is not a loopback address and no `admin.tokens` are configured: anyone who can reach it \
                     could read /tenants (company ids, client ids, key suffixes). Add an admin token (`pleo-gateway \
                     hash-key --admin`), or set `admin.allow_unauthenticated: true` if a network boundary already \
                     restricts who reaches the admin port. /metrics, /healthz and /readyz stay open either way"
                ),
            ));
        }
    }
    let browsers = BrowserPolicy {
        hosts: host_patterns(&raw.allowed_hosts, path("allowed_hosts"), &mut found),
        origins: origins(&raw.allowed_origins, &mut found),
        admin_hosts: host_patterns(&raw.admin.allowed_hosts, path("admin").key("allowed_hosts"), &mut found),
    };
    let access_log = access_log(&raw, &mut found);
    let telemetry = telemetry::telemetry(&raw, &mut found);
    let tls = tls(&raw, base_dir, &mut found);
    let sandbox = sandbox(&raw, &mut found);
    let sandbox_token_ttl =
        raw.sandbox.as_ref().and_then(|s| s.access_token_ttl.as_deref()).and_then(|text| {
            duration(text, Duration::from_secs(1), path("sandbox").key("access_token_ttl"), &mut found)
        });

    let (state_dir, store) = store(&raw, base_dir, &mut found);
    let encryption_keys = encryption_keys(&raw, base_dir, &mut found, &mut warnings);
    let connect = connect(&raw, base_dir, &mut found);
    if let Some(c) = &connect {
        for (other, name) in [(listen, "listen"), (admin_listen, "admin_listen")] {
            if other.is_some_and(|o| o.port() != 0 && o == c.listen) {
                found.push((
                    path("connect").key("listen"),
                    format!("is the same address as `{name}` (the connect pages get their own listener)"),
                ));
            }
        }
    }
    let partner_policy = match raw.policy.as_deref() {
        None => false,
        Some("partner") => true,
        Some(other) => {
            found.push((path("policy"), format!("`{other}` is not a policy (expected partner)")));
            false
        }
    };
    early_access(&raw, &tenants, partner_policy, &mut found, &mut warnings);
    let top_rewrites = rewrites(&raw.rewrites, path("rewrites"), &mut found);
    let max_not_found_templates = match raw.migration.as_ref().and_then(|m| m.max_templates) {
        None => 100,
        Some(n @ 1..=10_000) => n,
        Some(n) => {
            found.push((path("migration").key("max_templates"), format!("{n} is out of range (expected 1 to 10000)")));
            100
        }
    };
    let needs_key = connect.is_some()
        || !apps.is_empty()
        || tenants.values().any(|t| matches!(t.auth, AuthConfig::ApiKeyConnection { .. }));
    if needs_key && encryption_keys.is_empty() {
        found.push((
            path("store"),
            "missing `encryption_key`: keys customers enter on connect links are stored encrypted (AES-256-GCM); \
             give 32 random bytes, base64 or hex, e.g. `openssl rand -base64 32` in an env var or file"
                .into(),
        ));
    }

    if !found.is_empty() {
        return Err(found);
    }
    Ok(Config {
        source: source.to_path_buf(),
        listen: listen.expect("checked above"),
        tls,
        admin_listen: admin_listen.expect("checked above"),
        workers: raw.workers,
        environments,
        tenant_from,
        default_tenant: raw.default_tenant,
        state_dir,
        store,
        tenants,
        clients,
        allow_unauthenticated_clients: raw.allow_unauthenticated_clients,
        legacy_tokens,
        limits,
        access_log,
        telemetry,
        watched_files,
        per_tenant_metrics: raw.metrics.per_tenant,
        sandbox,
        sandbox_token_ttl,
        warnings,
        browsers,
        trust_forwarded_headers: raw.trust_forwarded_headers,
        admin,
        encryption_keys,
        connect,
        partner_policy,
        rewrites: top_rewrites,
        max_not_found_templates,
        apps,
    })
}

/// Pleo's Early Access Programme does not allow standalone API keys for
/// partner integrations: with `policy: partner` a production standalone
/// tenant is an error, otherwise a warning.
fn early_access(
    raw: &RawConfig,
    tenants: &BTreeMap<String, TenantConfig>,
    partner: bool,
    found: &mut Found,
    warnings: &mut Vec<String>,
) {
    for (name, t) in tenants {
        if t.environment != Environment::Production || t.auth.model() != AuthModel::StandaloneApiKey {
            continue;
        }
        let rule = "Pleo's Early Access Programme does not allow standalone API keys for partner integrations \
                    (\"Standalone API keys are not available for partner integrations\"); use an integrated API key \
                    or OAuth 2.0";
        if partner {
            found.push((path("tenants").key(name).key("auth").key("model"), format!("{rule} (policy: partner)")));
        } else if raw.tenants.contains_key(name) {
            warnings.push(format!(
                "tenants.{name}.auth.model: standalone_api_key in production: {rule}; set `policy: partner` to make this an error"
            ));
        }
    }
}

/// A `rewrites` list: each template valid, `to` naming only `from`'s
/// captures, no two rules that one request could match.
fn rewrites(raw: &[super::raw::RawRewrite], at: KeyPath, found: &mut Found) -> Vec<super::rewrite::RewriteRule> {
    use super::rewrite::{PathTemplate, RewriteRule};
    let mut out: Vec<(usize, RewriteRule)> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let here = at.index(i);
        let method = match r.method.as_deref() {
            None => None,
            Some(m) if matches!(m, "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => {
                Some(m.parse().expect("a standard method"))
            }
            Some(m) => {
                found.push((
                    here.key("method"),
                    format!("`{m}` is not a method (expected GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS)"),
                ));
                continue;
            }
        };
        let (from, to) = match (PathTemplate::parse(&r.from), PathTemplate::parse(&r.to)) {
            (Ok(f), Ok(t)) => (f, t),
            (f, t) => {
                if let Err(e) = f {
                    found.push((here.key("from"), e));
                }
                if let Err(e) = t {
                    found.push((here.key("to"), e));
                }
                continue;
            }
        };
        let mut seen = BTreeSet::new();
        if let Some(dup) = from.captures().find(|c| !seen.insert(*c)) {
            found.push((here.key("from"), format!("captures `{{{dup}}}` twice")));
            continue;
        }
        if let Some(unknown) = to.captures().find(|c| !seen.contains(c)) {
            found.push((
                here.key("to"),
                format!(
                    "unknown capture `{{{unknown}}}` (`from` captures: {})",
                    seen.iter().map(|c| format!("{{{c}}}")).collect::<Vec<_>>().join(", ")
                ),
            ));
            continue;
        }
        let rule = RewriteRule::new(method, from, to);
        if let Some((j, other)) = out.iter().find(|(_, o)| o.overlaps(&rule)) {
            found.push((
                here.key("from"),
                format!("overlaps rewrites[{j}] (`{}`): one request could match both; make them distinct", other.label),
            ));
            continue;
        }
        out.push((i, rule));
    }
    out.into_iter().map(|(_, r)| r).collect()
}

/// `store.encryption_key` and `store.previous_encryption_keys`: 32 bytes
/// each, base64 or hex. The value is never quoted in an error.
fn encryption_keys(raw: &RawConfig, base_dir: &Path, found: &mut Found, warnings: &mut Vec<String>) -> Vec<Secret> {
    let Some(s) = &raw.store else { return Vec::new() };
    let at = path("store");
    let mut out = Vec::new();
    let given = s.encryption_key.iter().map(|k| (at.key("encryption_key"), k));
    let previous =
        s.previous_encryption_keys.iter().enumerate().map(|(i, k)| (at.key("previous_encryption_keys").index(i), k));
    if s.encryption_key.is_none() && !s.previous_encryption_keys.is_empty() {
        found.push((
            at.key("previous_encryption_keys"),
            "needs `encryption_key` (the key new credentials are written with)".into(),
        ));
    }
    for (key_at, src) in given.chain(previous) {
        if src.is_inline() {
            warnings.push(format!(
                "{}: the secret is written inline in the config; prefer {{ env: NAME }} or {{ file: PATH }}",
                super::locate::render(key_at.segs())
            ));
        }
        match src.resolve(base_dir) {
            Err(e) => found.push((key_at, e.to_string())),
            Ok(key) if crate::secret::decode_key(key.expose_secret()).is_none() => found.push((
                key_at,
                "is not a 256-bit key (expected 32 random bytes as base64 or 64 hex digits, e.g. `openssl rand -base64 32`)".into(),
            )),
            Ok(key) => out.push(key),
        }
    }
    out
}

/// `connect`: the connect pages' listener and the URL customers reach.
fn connect(raw: &RawConfig, base_dir: &Path, found: &mut Found) -> Option<ConnectConfig> {
    let c = raw.connect.as_ref()?;
    let at = path("connect");
    let listen = addr(&c.listen, at.key("listen"), found);
    let public_url = match c.public_url.parse::<Uri>() {
        Ok(u)
            if u.authority().is_some()
                && u.query().is_none()
                && matches!(u.path(), "" | "/")
                && (u.scheme_str() == Some("https")
                    || (u.scheme_str() == Some("http") && is_loopback_host(u.host().unwrap_or_default()))) =>
        {
            Some(c.public_url.trim_end_matches('/').to_string())
        }
        _ => {
            found.push((
                at.key("public_url"),
                format!(
                    "`{}` is not usable (expected the https URL customers open, such as https://connect.example.com, \
                     with no path; http only on a loopback host, for trying it out)",
                    c.public_url
                ),
            ));
            None
        }
    };
    let tls = c.tls.as_ref().and_then(|t| {
        let files = crate::tls::TlsFiles { cert: base_dir.join(&t.cert), key: base_dir.join(&t.key), client_ca: None };
        match crate::tls::server_config(&files) {
            Ok(_) => Some(files),
            Err(e) => {
                found.push((at.key("tls"), e.to_string()));
                None
            }
        }
    });
    let integration_name = c.integration_name.clone().unwrap_or_else(|| "pleo-gateway".to_string());
    if integration_name.is_empty() || integration_name.len() > 80 || integration_name.chars().any(char::is_control) {
        found.push((at.key("integration_name"), "expected a name of 1 to 80 characters".into()));
    }
    let link_ttl = c
        .link_ttl
        .as_deref()
        .and_then(|t| duration(t, Duration::from_secs(60), at.key("link_ttl"), found))
        .unwrap_or(Duration::from_secs(7 * 24 * 3600));
    Some(ConnectConfig { listen: listen?, public_url: public_url?, tls, integration_name, link_ttl })
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `allowed_hosts`: `name` or `*.suffix`, stored lowercase (`.suffix` for a pattern).
fn host_patterns(list: &[String], at: KeyPath, found: &mut Found) -> Vec<String> {
    let mut out = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let (wild, name) = match h.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, h.as_str()),
        };
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !ok {
            found.push((
                at.index(i),
                format!("`{h}` is not a host name (expected a DNS name such as gateway.internal, or *.gw.internal; no port, no scheme)"),
            ));
            continue;
        }
        let name = name.to_ascii_lowercase();
        out.push(if wild { format!(".{name}") } else { name });
    }
    out
}

/// `allowed_origins`: `scheme://host[:port]` exactly as browsers send `Origin`.
fn origins(list: &[String], found: &mut Found) -> Vec<String> {
    let mut out = Vec::new();
    for (i, o) in list.iter().enumerate() {
        let ok = o
            .parse::<Uri>()
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some()
                    && u.path_and_query().is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/")
            })
            .is_some();
        if ok {
            out.push(o.trim_end_matches('/').to_ascii_lowercase());
        } else {
            found.push((
                path("allowed_origins").index(i),
                format!("`{o}` is not an origin (expected scheme://host[:port], such as https://app.example.com)"),
            ));
        }
    }
    out
}

/// Every file the config is made of: itself, secret files, CA files. A
/// change to any of them is a reason to reload (a rotated key in a mounted
/// Secret changes a file, not the config).
fn watched_files(raw: &RawConfig, source: &Path, base_dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![source.to_path_buf()];
    for t in raw.tenants.values() {
        let a = &t.auth;
        for src in [&a.client_secret, &a.refresh_token, &a.access_token, &a.key].into_iter().flatten() {
            if let SecretSource::File { file } = src {
                files.push(base_dir.join(file));
            }
        }
    }
    for env in [&raw.environments.staging, &raw.environments.production].into_iter().flatten() {
        files.extend(env.ca_file.as_ref().map(|f| base_dir.join(f)));
    }
    if let Some(t) = &raw.tls {
        files.extend([base_dir.join(&t.cert), base_dir.join(&t.key)]);
    }
    files.extend(raw.client_ca.as_ref().map(|f| base_dir.join(f)));
    if let Some(t) = raw.connect.as_ref().and_then(|c| c.tls.as_ref()) {
        files.extend([base_dir.join(&t.cert), base_dir.join(&t.key)]);
    }
    for k in raw.store.iter().flat_map(|s| s.encryption_key.iter().chain(&s.previous_encryption_keys)) {
        if let SecretSource::File { file } = k {
            files.push(base_dir.join(file));
        }
    }
    files
}

fn addr(text: &str, at: KeyPath, found: &mut Found) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            found.push((at, format!("`{text}` is not an address (expected IP:PORT, such as 127.0.0.1:8080)")));
            None
        }
    }
}

fn names<V>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return "no tenants are configured".into();
    }
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

// === store ===

const DEFAULT_POOL_SIZE: usize = 4;
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// `store` (or its synonym `state_dir`, which is the file store's directory).
fn store(raw: &RawConfig, base_dir: &Path, found: &mut Found) -> (PathBuf, StoreConfig) {
    let default_dir = || base_dir.join(raw.state_dir.clone().unwrap_or_else(|| PathBuf::from("./state")));
    let Some(s) = &raw.store else {
        return (default_dir(), StoreConfig::File);
    };
    let at = path("store");
    if raw.state_dir.is_some() {
        found.push((path("state_dir"), "and `store` both say where the state lives: keep only `store`".into()));
    }
    let not_for = |name: &str, present: bool, kind: &str, found: &mut Found| {
        if present {
            found.push((at.key(name), format!("is not used by store kind {kind}")));
        }
    };
    match s.kind.as_str() {
        "file" => {
            for (name, present) in [
                ("url", s.url.is_some()),
                ("pool_size", s.pool_size.is_some()),
                ("connect_timeout", s.connect_timeout.is_some()),
                ("statement_timeout", s.statement_timeout.is_some()),
                ("ca_file", s.ca_file.is_some()),
                ("poll_interval", s.poll_interval.is_some()),
            ] {
                not_for(name, present, "file", found);
            }
            let dir = base_dir.join(s.dir.clone().unwrap_or_else(|| PathBuf::from("./state")));
            (dir, StoreConfig::File)
        }
        "postgres" => {
            not_for("dir", s.dir.is_some(), "postgres", found);
            let url = match &s.url {
                None => {
                    found.push((at.clone(), "missing `url` (required by store kind postgres)".into()));
                    None
                }
                Some(src) => match src.resolve(base_dir) {
                    Err(e) => {
                        found.push((at.key("url"), e.to_string()));
                        None
                    }
                    // The parser's message could quote the URL, password and all: never shown.
                    Ok(url) if url.expose_secret().parse::<tokio_postgres::Config>().is_err() => {
                        found.push((
                            at.key("url"),
                            "is not a PostgreSQL connection URL (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
                                .into(),
                        ));
                        None
                    }
                    Ok(url) => Some(url),
                },
            };
            let pool_size = match s.pool_size {
                Some(n @ 1..=64) => n,
                None => DEFAULT_POOL_SIZE,
                Some(n) => {
                    found.push((at.key("pool_size"), format!("{n} is out of range (expected 1 to 64)")));
                    DEFAULT_POOL_SIZE
                }
            };
            let time = |name: &str, given: &Option<String>, default: Duration, found: &mut Found| {
                given.as_deref().and_then(|t| duration(t, NONZERO, at.key(name), found)).unwrap_or(default)
            };
            let connect_timeout = time("connect_timeout", &s.connect_timeout, DEFAULT_STORE_TIMEOUT, found);
            let statement_timeout = time("statement_timeout", &s.statement_timeout, DEFAULT_STORE_TIMEOUT, found);
            let poll_interval = time("poll_interval", &s.poll_interval, DEFAULT_POLL_INTERVAL, found);
            let ca_file = s.ca_file.as_ref().map(|f| base_dir.join(f));
            if let Some(f) = &ca_file {
                if !f.is_file() {
                    found.push((at.key("ca_file"), format!("{} is not a readable PEM file", f.display())));
                }
            }
            let store = url.map_or(StoreConfig::File, |url| {
                StoreConfig::Postgres(PostgresConfig {
                    url,
                    pool_size,
                    connect_timeout,
                    statement_timeout,
                    ca_file,
                    poll_interval,
                })
            });
            (default_dir(), store)
        }
        other => {
            found.push((at.key("kind"), format!("`{other}` is not a store kind (expected file or postgres)")));
            (default_dir(), StoreConfig::File)
        }
    }
}

// === environments ===

fn environments(raw: &RawConfig, base_dir: &Path, found: &mut Found) -> BTreeMap<Environment, EnvironmentConfig> {
    let mut out = BTreeMap::new();
    for env in Environment::ALL {
        let (given, base, token) = match env {
            Environment::Staging => (&raw.environments.staging, STAGING_BASE_URL, STAGING_TOKEN_URL),
            Environment::Production => (&raw.environments.production, PRODUCTION_BASE_URL, PRODUCTION_TOKEN_URL),
        };
        let default = RawEnvironment::default();
        let given = given.as_ref().unwrap_or(&default);
        let at = path("environments").key(env.as_str());
        let base_url = url(given.base_url.as_deref().unwrap_or(base), at.key("base_url"), found);
        let token_url = url(given.token_url.as_deref().unwrap_or(token), at.key("token_url"), found);
        let authorize_url = match &given.authorize_url {
            Some(text) => url(text, at.key("authorize_url"), found),
            // Pleo serves both on the auth host: /oauth/token and /oauth/authorize.
            None => token_url.as_ref().map(|t| BaseUrl {
                path: match t.path.strip_suffix("/token") {
                    Some(dir) => format!("{dir}/authorize"),
                    None => "/oauth/authorize".into(),
                },
                ..t.clone()
            }),
        };
        let ca_file = given.ca_file.as_ref().map(|f| base_dir.join(f));
        if let Some(f) = &ca_file {
            if !f.is_file() {
                found.push((
                    at.key("ca_file"),
                    format!("{} is not a readable file (expected a PEM file of CA certificates)", f.display()),
                ));
            }
        }
        if let (Some(base_url), Some(token_url), Some(authorize_url)) = (base_url, token_url, authorize_url) {
            let (token_url, authorize_url) = (endpoint(token_url), endpoint(authorize_url));
            out.insert(env, EnvironmentConfig { base_url, token_url, authorize_url, ca_file });
        }
    }
    out
}

/// A full endpoint URI from a validated URL.
fn endpoint(u: BaseUrl) -> Uri {
    Uri::builder()
        .scheme(u.scheme)
        .authority(u.authority)
        .path_and_query(if u.path.is_empty() { "/".to_string() } else { u.path })
        .build()
        .expect("parts came from a valid URI")
}

/// Parses an upstream URL: https anywhere, plain http only on loopback (the
/// sandbox, tests), never the legacy API host, no query or credentials in it.
pub(crate) fn url(text: &str, at: KeyPath, found: &mut Found) -> Option<BaseUrl> {
    let bad = |why: &str| (at.clone(), format!("`{text}` {why}"));
    let uri: Uri = match text.parse() {
        Ok(u) => u,
        Err(_) => {
            found.push(bad("is not a URL (expected https://host[:port][/path])"));
            return None;
        }
    };
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        found.push(bad("is not an absolute URL (expected https://host[:port][/path])"));
        return None;
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if authority.as_str().contains('@') || uri.query().is_some() {
        found.push(bad("must not carry credentials or a query string"));
        return None;
    }
    if super::model::is_legacy_host(&host) {
        found.push(bad("is the legacy API, which is deprecated and does not accept External API credentials \
             (expected https://external.pleo.io or https://external.staging.pleo.io)"));
        return None;
    }
    let loopback = host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false);
    if scheme == Scheme::HTTP && !loopback {
        found.push(bad("uses plain http to a non-loopback host (expected https; http is allowed only for 127.0.0.1, ::1 or localhost)"));
        return None;
    }
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        found.push(bad("has an unsupported scheme (expected https)"));
        return None;
    }
    let path = uri.path().trim_end_matches('/').to_string();
    Some(BaseUrl { scheme, authority, path })
}

// === tenants ===

/// `company_id_header` / `company_id_query`: API-key tenants only (the
/// company id comes from their key check), a name that cannot carry or
/// replace anything else.
fn company_id_to(t: &super::raw::RawTenant, at: &KeyPath, found: &mut Found) -> (Option<HeaderName>, Option<String>) {
    let field = |k: &str| at.key(k);
    let api_key = matches!(t.auth.model, AuthModel::IntegratedApiKey | AuthModel::StandaloneApiKey);
    let header = t.company_id_header.as_deref().and_then(|h| {
        let reserved = ["authorization", "proxy-authorization", "host", "cookie", "connection", "x-request-id"];
        match HeaderName::try_from(h) {
            Ok(name) if !reserved.contains(&name.as_str()) => Some(name),
            _ => {
                found.push((field("company_id_header"), format!("`{h}` cannot be used (expected a header name such as X-Pleo-Company-Id, not a credential or hop-by-hop header)")));
                None
            }
        }
    });
    let query = t.company_id_query.as_deref().and_then(|q| {
        if !q.is_empty() && q.len() <= 64 && q.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            Some(q.to_string())
        } else {
            found.push((field("company_id_query"), format!("`{q}` is not a query parameter name (expected letters, digits, '-', '_' or '.', such as companyId)")));
            None
        }
    });
    if (header.is_some() || query.is_some()) && !api_key {
        let k = if header.is_some() { "company_id_header" } else { "company_id_query" };
        found.push((field(k), "only API-key tenants can add the company id (the gateway learns it from their key check, GET /v1/installations/me)".into()));
    }
    (header, query)
}

fn tenant_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn tenants(
    raw: &RawConfig,
    base_dir: &Path,
    found: &mut Found,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, TenantConfig> {
    let mut out = BTreeMap::new();
    for (name, t) in &raw.tenants {
        let at = path("tenants").key(name);
        if !tenant_name_ok(name) {
            found.push((
                at.clone(),
                "is not a valid tenant name (expected 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit)".into(),
            ));
            continue;
        }
        let (company_id_header, company_id_query) = company_id_to(t, &at, found);
        if let Some(auth) = auth(&t.auth, at.key("auth"), base_dir, found, warnings) {
            out.insert(
                name.clone(),
                TenantConfig {
                    environment: t.environment,
                    auth,
                    company_id_header,
                    company_id_query,
                    rewrites: rewrites(&t.rewrites, at.key("rewrites"), found),
                },
            );
        }
    }
    out
}

fn auth(
    raw: &RawAuth,
    at: KeyPath,
    base_dir: &Path,
    found: &mut Found,
    warnings: &mut Vec<String>,
) -> Option<AuthConfig> {
    let field = |name: &str| at.key(name);
    let model = raw.model.as_str();
    let mut secret = |src: &Option<SecretSource>, name: &str, found: &mut Found| -> Option<Secret> {
        let Some(src) = src else {
            found.push((at.clone(), format!("missing `{name}` (required by model {model})")));
            return None;
        };
        if src.is_inline() {
            warnings.push(format!(
                "{}: the secret is written inline in the config; prefer {{ env: NAME }} or {{ file: PATH }}",
                super::locate::render(field(name).segs())
            ));
        }
        src.resolve(base_dir).map_err(|e| found.push((field(name), e.to_string()))).ok()
    };
    let not_used = |name: &str, present: bool, found: &mut Found| {
        if present {
            found.push((field(name), format!("is not used by model {model}")));
        }
    };
    match raw.source.as_deref() {
        None | Some("config" | "connection") => {}
        Some(other) => found
            .push((field("source"), format!("`{other}` is not a credential source (expected config or connection)"))),
    }
    let connection = raw.source.as_deref() == Some("connection");
    match raw.model {
        AuthModel::OAuth2 => {
            not_used("key", raw.key.is_some(), found);
            if connection {
                // The consent is given on a connect link: tokens come from there.
                for (name, present) in
                    [("refresh_token", raw.refresh_token.is_some()), ("access_token", raw.access_token.is_some())]
                {
                    if present {
                        found.push((
                            field(name),
                            "cannot be combined with `source: connection` (the connect link gives the tokens)".into(),
                        ));
                    }
                }
            }
            if raw.access_token.is_some() {
                // Unmanaged: the token is sent as is. Refresh settings beside it
                // would suggest a refresh that never happens.
                if raw.refresh_token.is_some() {
                    found.push((
                        field("refresh_token"),
                        "cannot be combined with access_token (expected one: access_token for a token you \
                         refresh yourself, or client_id + client_secret [+ refresh_token] for managed refresh)"
                            .into(),
                    ));
                }
                let access_token = secret(&raw.access_token, "access_token", found)?;
                return Some(AuthConfig::OAuth2 { access_token });
            }
            // Managed refresh. Secrets are read now: a typo'd variable is an
            // error at start, not a surprise at the first refresh.
            let client_id = match raw.client_id.as_deref() {
                Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()) => Some(id.to_string()),
                Some(_) => {
                    found.push((field("client_id"), "expected a non-empty client id without spaces".into()));
                    None
                }
                None => {
                    found.push((
                        at.clone(),
                        "missing `client_id` (model oauth2 needs client_id + client_secret for managed refresh, \
                         or access_token)"
                            .into(),
                    ));
                    None
                }
            };
            let client_secret = secret(&raw.client_secret, "client_secret", found);
            let refresh_token = match &raw.refresh_token {
                Some(_) => Some(secret(&raw.refresh_token, "refresh_token", found)?),
                None => None,
            };
            Some(AuthConfig::OAuth2Managed { client_id: client_id?, client_secret: client_secret?, refresh_token })
        }
        AuthModel::IntegratedApiKey | AuthModel::StandaloneApiKey => {
            for (name, present) in [
                ("client_id", raw.client_id.is_some()),
                ("client_secret", raw.client_secret.is_some()),
                ("refresh_token", raw.refresh_token.is_some()),
                ("access_token", raw.access_token.is_some()),
            ] {
                not_used(name, present, found);
            }
            if raw.source.as_deref() == Some("connection") {
                if raw.key.is_some() {
                    found.push((
                        field("key"),
                        "cannot be combined with `source: connection` (the connect link gives the key)".into(),
                    ));
                }
                return Some(AuthConfig::ApiKeyConnection { model: raw.model });
            }
            let key = secret(&raw.key, "key", found)?;
            Some(if raw.model == AuthModel::IntegratedApiKey {
                AuthConfig::IntegratedApiKey { key }
            } else {
                AuthConfig::StandaloneApiKey { key }
            })
        }
    }
}

// === clients and tenant selection ===

fn clients(raw: &RawConfig, tenants: &BTreeMap<String, TenantConfig>, found: &mut Found) -> Vec<ClientConfig> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, c) in raw.clients.iter().enumerate() {
        let at = path("clients").index(i);
        let field = |name: &str| at.key(name);
        if c.name.is_empty() || !seen.insert(c.name.clone()) {
            found.push((field("name"), "expected a unique, non-empty client name".into()));
        }
        let key_sha256 = match &c.key_sha256 {
            Some(hex) => {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(hex.trim(), &mut digest).is_err() {
                    found.push((
                        field("key_sha256"),
                        "expected 64 hex characters: the SHA-256 of the client's key".into(),
                    ));
                }
                Some(digest)
            }
            None if raw.client_ca.is_some() => None,
            None => {
                found.push((
                    at.clone(),
                    "missing `key_sha256` (expected the SHA-256 of the client's key, from `pleo-gateway \
                     hash-key`; only with client_ca can a client be known by its certificate alone)"
                        .into(),
                ));
                None
            }
        };
        if c.tenants.is_empty() {
            found.push((field("tenants"), "expected at least one tenant this client may use".into()));
        }
        for (j, t) in c.tenants.iter().enumerate() {
            // `app:<name>`: every tenant installed through that app.
            if let Some(app) = t.strip_prefix("app:") {
                if !raw.apps.contains_key(app) {
                    found.push((field("tenants").index(j), format!("`{t}` names no app under `apps`")));
                }
                continue;
            }
            if !tenants.contains_key(t) && !raw.tenants.contains_key(t) {
                found.push((
                    field("tenants").index(j),
                    format!("`{t}` names no tenant (expected one of: {})", names(tenants)),
                ));
            }
        }
        out.push(ClientConfig { name: c.name.clone(), key_sha256, tenants: c.tenants.clone() });
    }
    out
}

fn selectors(raw: &RawConfig, found: &mut Found) -> Vec<Selector> {
    let Some(list) = &raw.tenant_from else {
        return vec![
            Selector::Header(HeaderName::from_static("x-pleo-tenant")),
            Selector::PathPrefix("/tenants/".into()),
        ];
    };
    let mut out = Vec::new();
    for (i, form) in list.iter().enumerate() {
        let at = path("tenant_from").index(i);
        let s = match RawSelector::try_from(form.clone()) {
            Ok(s) => s,
            Err(e) => {
                found.push((at, e));
                continue;
            }
        };
        match &s {
            RawSelector::Header(h) => match HeaderName::try_from(h.as_str()) {
                Ok(name) if name != http::header::AUTHORIZATION && name != http::header::HOST => {
                    out.push(Selector::Header(name))
                }
                _ => found.push((
                    at,
                    format!("`{h}` cannot carry the tenant (expected a header name such as X-Pleo-Tenant)"),
                )),
            },
            RawSelector::PathPrefix(p) if p.len() > 2 && p.starts_with('/') && p.ends_with('/') => {
                out.push(Selector::PathPrefix(p.clone()))
            }
            RawSelector::PathPrefix(p) => found
                .push((at, format!("`{p}` is not a path prefix (expected /segment/ with leading and trailing slash)"))),
            RawSelector::HostSuffix(s) if s.len() > 1 && s.starts_with('.') => {
                out.push(Selector::HostSuffix(s.to_ascii_lowercase()))
            }
            RawSelector::HostSuffix(s) => {
                found.push((at, format!("`{s}` is not a host suffix (expected a leading dot, such as .gw.internal)")))
            }
            RawSelector::ClientKey if raw.clients.is_empty() => {
                found.push((at, "client_key needs `clients` with gateway keys (none are configured)".into()))
            }
            RawSelector::ClientKey => out.push(Selector::ClientKey),
        }
    }
    if list.is_empty() && raw.default_tenant.is_none() {
        found
            .push((path("tenant_from"), "is empty and there is no default_tenant (expected at least one rule)".into()));
    }
    out
}

/// Names for the legacy tokens still in use. "unnamed" is where refusals of
/// any other credential are counted, so no app may take it.
fn named_digests(list: &[super::raw::RawLegacyToken], list_at: KeyPath, found: &mut Found) -> Vec<NamedDigest> {
    let mut out: Vec<NamedDigest> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = list_at.index(i);
        let mut sha256 = [0u8; 32];
        let name_ok = !t.name.is_empty()
            && t.name != "unnamed"
            && t.name.len() <= 64
            && t.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok || hex::decode_to_slice(t.sha256.trim(), &mut sha256).is_err() {
            found.push((
                at,
                "expected { name: APP, sha256: <64 hex characters> } (APP: letters, digits, '-', '_' or '.', \
                 not `unnamed`; the digest from `pleo-gateway hash-key --stdin`)"
                    .into(),
            ));
        } else if out.iter().any(|o| o.sha256 == sha256) {
            found.push((at, "lists the same token as an earlier entry (expected each token once)".into()));
        } else {
            out.push(NamedDigest { name: t.name.clone(), sha256 });
        }
    }
    out
}

fn access_log(raw: &RawConfig, found: &mut Found) -> super::model::AccessLogConfig {
    use super::model::{AccessLogConfig, Format};
    let mut out = AccessLogConfig::default();
    let Some(a) = &raw.access_log else { return out };
    match a.format.as_deref() {
        None | Some("json") => out.format = Format::Json,
        Some("text") => out.format = Format::Text,
        Some("off") => out.format = Format::Off,
        Some(other) => found.push((
            path("access_log").key("format"),
            format!("`{other}` is not a format (expected json, text or off)"),
        )),
    }
    out.include_query = a.include_query.unwrap_or(false);
    out
}

// === limits and sandbox ===

fn limits(raw: &RawConfig, found: &mut Found) -> Limits {
    let mut limits = Limits::default();
    let l = &raw.limits;
    if let Some(n) = l.max_header_bytes {
        // hyper cannot read a request head with less buffer than this.
        if (8192..=1 << 20).contains(&n) {
            limits.max_header_bytes = n;
        } else {
            found.push((
                path("limits").key("max_header_bytes"),
                format!("{n} is out of range (expected 8192 to 1048576)"),
            ));
        }
    }
    for (name, given, slot) in [
        ("header_read_timeout", &l.header_read_timeout, &mut limits.header_read_timeout),
        ("idle_timeout", &l.idle_timeout, &mut limits.idle_timeout),
        ("upstream_connect_timeout", &l.upstream_connect_timeout, &mut limits.upstream_connect_timeout),
        ("upstream_timeout", &l.upstream_timeout, &mut limits.upstream_timeout),
        ("upstream_idle_timeout", &l.upstream_idle_timeout, &mut limits.upstream_idle_timeout),
        ("drain_timeout", &l.drain_timeout, &mut limits.drain_timeout),
        ("body_read_timeout", &l.body_read_timeout, &mut limits.body_read_timeout),
        ("response_write_timeout", &l.response_write_timeout, &mut limits.response_write_timeout),
        ("forced_refresh_interval", &l.forced_refresh_interval, &mut limits.forced_refresh_interval),
    ] {
        if let Some(d) = given.as_deref().and_then(|text| duration(text, NONZERO, path("limits").key(name), found)) {
            *slot = d;
        }
    }
    if let Some(d) =
        l.token_timeout.as_deref().and_then(|t| duration(t, NONZERO, path("limits").key("token_timeout"), found))
    {
        limits.token_timeout = d;
    }
    if let Some(n) = l.max_request_body_bytes {
        limits.max_request_body_bytes = n;
    }
    match l.max_in_flight {
        Some(0) => found.push((path("limits").key("max_in_flight"), "expected at least 1".into())),
        Some(n) => limits.max_in_flight = n,
        None => {}
    }
    // Shares default to half of the whole, so one client or tenant can never
    // take every slot from the others.
    let half = limits.max_in_flight.div_ceil(2);
    limits.max_in_flight_per_tenant = half;
    limits.max_in_flight_per_client = half;
    for (name, given, slot) in [
        ("max_in_flight_per_tenant", l.max_in_flight_per_tenant, &mut limits.max_in_flight_per_tenant),
        ("max_in_flight_per_client", l.max_in_flight_per_client, &mut limits.max_in_flight_per_client),
        ("max_connections", l.max_connections, &mut limits.max_connections),
    ] {
        match given {
            Some(0) => found.push((path("limits").key(name), "expected at least 1".into())),
            Some(n) => *slot = n,
            None => {}
        }
    }
    if let Some(n) = l.retry_body_bytes {
        // Kept bodies live in memory while the request is in flight.
        if n <= 16 << 20 {
            limits.retry_body_bytes = n;
        } else {
            found.push((
                path("limits").key("retry_body_bytes"),
                format!("{n} is out of range (expected 0 to 16777216)"),
            ));
        }
    }
    limits
}

/// `tls` and `client_ca`: the files are read now (so `check` catches a
/// wrong path or a key that does not match), and again at start and reload.
fn tls(raw: &RawConfig, base_dir: &Path, found: &mut Found) -> Option<crate::tls::TlsFiles> {
    let client_ca = raw.client_ca.as_ref().map(|p| base_dir.join(p));
    let Some(t) = &raw.tls else {
        if client_ca.is_some() {
            found.push((path("client_ca"), "needs `tls` (client certificates are part of the TLS handshake)".into()));
        }
        return None;
    };
    let files = crate::tls::TlsFiles { cert: base_dir.join(&t.cert), key: base_dir.join(&t.key), client_ca };
    match crate::tls::server_config(&files) {
        Ok(_) => Some(files),
        Err(e) => {
            let at = match e {
                crate::tls::TlsError::ClientCa { .. } => path("client_ca"),
                _ => path("tls"),
            };
            found.push((at, e.to_string()));
            None
        }
    }
}

fn sandbox(raw: &RawConfig, found: &mut Found) -> BTreeMap<Environment, SocketAddr> {
    let mut out = BTreeMap::new();
    let Some(s) = &raw.sandbox else { return out };
    for (env, given) in [(Environment::Staging, &s.staging), (Environment::Production, &s.production)] {
        let Some(text) = given else { continue };
        let at = path("sandbox").key(env.as_str());
        match addr(text, at.clone(), found) {
            Some(a) if a.ip().is_loopback() => {
                out.insert(env, a);
            }
            Some(_) => found.push((at, "the sandbox listens on loopback only (expected 127.0.0.1:PORT)".into())),
            None => {}
        }
    }
    out
}
