//! Gateway clients: the configured client keys (SHA-256, compared in
//! constant time) and client certificate names, the named legacy tokens
//! with their refusal counters, and making new keys. The
//! `steps::client_auth` step authenticates requests with them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::HeaderValue;
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ClientConfig, LegacyToken};
use crate::metrics::Metrics;
use crate::tls::ClientCertNames;

/// A client the request was authenticated as.
#[derive(Debug)]
pub struct Client {
    pub name: std::sync::Arc<str>,
    pub tenants: HashSet<Box<str>>,
    /// The tenant `tenant_from: client_key` picks: set when the client lists exactly one.
    pub bound_tenant: Option<Box<str>>,
    /// Requests in flight for this client, against `max_in_flight_per_client`.
    pub in_flight: crate::share::Share,
}

/// Named legacy tokens (`legacy_tokens`), by SHA-256, with their counters.
#[derive(Debug)]
pub struct LegacyTokens {
    by_digest: HashMap<[u8; 32], (IntCounter, Box<str>)>,
    unnamed: IntCounter,
    /// Which legacy tokens each client still sends (`GET /migration`).
    migration: std::sync::Arc<crate::migration::MigrationLog>,
}

impl LegacyTokens {
    pub fn new(tokens: &[LegacyToken], metrics: &Metrics) -> Self {
        LegacyTokens {
            by_digest: tokens
                .iter()
                .map(|t| (t.sha256, (metrics.legacy_token(&t.name), t.name.as_str().into())))
                .collect(),
            unnamed: metrics.legacy_token("unnamed"),
            migration: metrics.migration.clone(),
        }
    }

    /// The app a refused credential belongs to (`unnamed` if none). Only
    /// on the refusal path, so the hash costs nothing on accepted requests.
    pub fn seen(&self, value: Option<&HeaderValue>) -> LegacyTokenSeen {
        self.seen_token(value.map(|v| credential_part(v.as_bytes())))
    }

    pub fn seen_token(&self, token: Option<&[u8]>) -> LegacyTokenSeen {
        let digest: Option<[u8; 32]> = token.map(|t| Sha256::digest(t).into());
        let (counter, app) = match digest.and_then(|d| self.by_digest.get(&d)) {
            Some((counter, name)) => (counter.clone(), name.clone()),
            None => (self.unnamed.clone(), "unnamed".into()),
        };
        LegacyTokenSeen { counter, app, migration: self.migration.clone() }
    }
}

/// A refused legacy credential, by app. It travels as the refusal's source
/// and is counted where the refusal is recorded (`rescue`), so a dry run
/// (`explain`), which runs the same steps, counts nothing.
#[derive(Debug, thiserror::Error)]
#[error("a legacy credential (app `{app}`)")]
pub struct LegacyTokenSeen {
    counter: IntCounter,
    app: Box<str>,
    migration: std::sync::Arc<crate::migration::MigrationLog>,
}

impl LegacyTokenSeen {
    /// `pleo_gateway_legacy_token_refused_total{app}` and `GET /migration`.
    pub fn record(&self) {
        self.counter.inc();
        self.migration.legacy(None, &self.app);
    }
}

/// The credential in an Authorization value: what follows the scheme word
/// (`Bearer abc` -> `abc`), or the whole value when there is no scheme.
fn credential_part(value: &[u8]) -> &[u8] {
    let value = value.trim_ascii();
    match value.iter().position(|b| *b == b' ') {
        Some(i) => value[i + 1..].trim_ascii(),
        None => value,
    }
}

/// The configured clients: by SHA-256 of their key, and by name (what a
/// client certificate names).
#[derive(Debug, Default)]
pub struct ClientKeys {
    by_digest: HashMap<[u8; 32], Arc<Client>>,
    by_name: HashMap<Box<str>, Arc<Client>>,
}

impl ClientKeys {
    pub fn new(clients: &[ClientConfig], max_in_flight_per_client: usize) -> Self {
        let mut keys = ClientKeys::default();
        for c in clients {
            let client = Arc::new(Client {
                name: c.name.as_str().into(),
                tenants: c.tenants.iter().map(|t| t.as_str().into()).collect(),
                bound_tenant: match c.tenants.as_slice() {
                    // `app:<name>` is many tenants, not one to bind to.
                    [only] if !only.starts_with("app:") => Some(only.as_str().into()),
                    _ => None,
                },
                in_flight: crate::share::Share::new(max_in_flight_per_client),
            });
            if let Some(digest) = c.key_sha256 {
                keys.by_digest.insert(digest, client.clone());
            }
            keys.by_name.insert(c.name.as_str().into(), client);
        }
        keys
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The client a verified certificate names (first matching DNS name).
    pub fn by_certificate(&self, names: &ClientCertNames) -> Option<&Arc<Client>> {
        names.0.iter().find_map(|n| self.by_name.get(n))
    }

    /// The client whose key this Authorization value carries. The lookup is by
    /// SHA-256 of the presented key, so timing can only reveal facts about a
    /// digest, not about the key; the final comparison is constant-time anyway.
    pub fn identify(&self, value: &HeaderValue) -> Option<&Arc<Client>> {
        let bytes = value.as_bytes();
        let key = bytes.get(..7).filter(|p| p.eq_ignore_ascii_case(b"bearer ")).map(|_| credential_part(bytes))?;
        let digest: [u8; 32] = Sha256::digest(key).into();
        let (stored, client) = self.by_digest.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(client)
    }
}

/// A new gateway client key: 32 random bytes, URL-safe base64, with a
/// `pgw_` prefix so a leaked one is recognisable in a secret scanner.
pub fn generate_key() -> crate::secret::Secret {
    crate::secret::Secret::new(format!("pgw_{}", crate::secret::random_token(32)))
}

/// The hex SHA-256 that `clients[].key_sha256` and `legacy_tokens[].sha256` hold.
pub fn key_sha256(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}
