//! Step 2: client authentication with gateway client keys.
//!
//! Reads `Authorization`. A `Bearer <key>` whose SHA-256 matches a configured
//! client is accepted: the header is removed (a gateway key never goes to
//! Pleo) and the client's identity is put in the request's extensions. Any
//! other Authorization (legacy openapi tokens, Pleo keys, typos) is refused
//! with 401 `legacy_token_refused` and never forwarded. No Authorization is
//! fine unless clients are configured; then a client certificate verified
//! against `client_ca` may name the client instead (its DNS name is the
//! client's `name`), and without one the answer is 401
//! `client_unauthenticated`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::{header, HeaderValue, Request};
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::filter::Predicate;

use crate::access_log::AccessSlot;
use crate::config::{ClientConfig, LegacyToken};
use crate::error::{ErrorCode, GatewayError};
use crate::metrics::Metrics;
use crate::routes::snapshot;
use crate::tls::ClientCertNames;
use crate::BoxError;

/// A client the request was authenticated as.
#[derive(Debug)]
pub struct Client {
    pub name: Box<str>,
    pub tenants: HashSet<Box<str>>,
    /// The tenant `tenant_from: client_key` picks: set when the client lists exactly one.
    pub bound_tenant: Option<Box<str>>,
    /// Requests in flight for this client, against `max_in_flight_per_client`.
    pub in_flight: crate::share::Share,
}

/// Put in the request's extensions once the caller is authenticated.
#[derive(Clone, Debug)]
pub struct ClientIdentity(pub Arc<Client>);

/// Named legacy tokens (`legacy_tokens`), by SHA-256, with their counters.
#[derive(Debug)]
pub struct LegacyTokens {
    by_digest: HashMap<[u8; 32], IntCounter>,
    unnamed: IntCounter,
}

impl LegacyTokens {
    pub fn new(tokens: &[LegacyToken], metrics: &Metrics) -> Self {
        LegacyTokens {
            by_digest: tokens.iter().map(|t| (t.sha256, metrics.legacy_token(&t.name))).collect(),
            unnamed: metrics.legacy_token("unnamed"),
        }
    }

    /// Counts a refused credential under its app's name. Only on the refusal
    /// path, so the hash costs nothing on accepted requests.
    fn count(&self, value: Option<&HeaderValue>) {
        self.count_token(value.map(|v| credential_part(v.as_bytes())));
    }

    fn count_token(&self, token: Option<&[u8]>) {
        let digest: Option<[u8; 32]> = token.map(|t| Sha256::digest(t).into());
        match digest.and_then(|d| self.by_digest.get(&d)) {
            Some(counter) => counter.inc(),
            None => self.unnamed.inc(),
        }
    }
}

/// Query parameters that carry a legacy token (old openapi apps and API
/// clients put them there). Such a request is refused like a foreign
/// `Authorization`: forwarding it would send the token to Pleo.
const QUERY_CREDENTIALS: [&str; 4] = ["access_token", "api_key", "apikey", "api-key"];

/// The value of the first credential-bearing query parameter, if any.
fn query_credential(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| QUERY_CREDENTIALS.iter().any(|c| k.eq_ignore_ascii_case(c)))
        .map(|(_, v)| v.into_owned())
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
                    [only] => Some(only.as_str().into()),
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
    fn by_certificate(&self, names: &ClientCertNames) -> Option<&Arc<Client>> {
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

#[derive(Clone, Copy, Debug, Default)]
pub struct AuthenticateClient;

impl<B> Predicate<Request<B>> for AuthenticateClient {
    type Request = Request<B>;

    fn check(&mut self, mut req: Request<B>) -> Result<Request<B>, BoxError> {
        let routes = snapshot(&req)?;
        if let Some(token) = req.uri().query().and_then(query_credential) {
            routes.legacy_tokens.count_token(Some(token.as_bytes()));
            return Err(GatewayError::new(ErrorCode::LegacyTokenRefused)
                .with_detail("The query string carries a credential (access_token or api_key).")
                .into());
        }
        let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
        let (first, second) = (values.next(), values.next());
        let cert = req.extensions().get::<ClientCertNames>();
        let found = match first {
            None if routes.clients.is_empty() => return Ok(req),
            // No key, but maybe a certificate the handshake verified against client_ca.
            None => cert.and_then(|names| routes.clients.by_certificate(names)).ok_or(ErrorCode::ClientUnauthenticated),
            // Two Authorization headers: never guess which one was meant.
            Some(v) => {
                second.is_none().then(|| routes.clients.identify(v)).flatten().ok_or(ErrorCode::LegacyTokenRefused)
            }
        };
        let client = match found {
            Ok(client) => client.clone(),
            Err(code) => {
                if code == ErrorCode::LegacyTokenRefused {
                    routes.legacy_tokens.count(first);
                }
                return Err(GatewayError::new(code).into());
            }
        };
        req.headers_mut().remove(header::AUTHORIZATION);
        if let Some(slot) = req.extensions().get::<Arc<AccessSlot>>() {
            let _ = slot.client.set(client.clone());
        }
        req.extensions_mut().insert(ClientIdentity(client));
        Ok(req)
    }
}

/// A new gateway client key: 32 random bytes, URL-safe base64, with a
/// `pgw_` prefix so a leaked one is recognisable in a secret scanner.
pub fn generate_key() -> crate::secret::Secret {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the OS random source works");
    crate::secret::Secret::new(format!("pgw_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// The hex SHA-256 that `clients[].key_sha256` and `legacy_tokens[].sha256` hold.
pub fn key_sha256(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}
