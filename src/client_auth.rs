//! Step 2: client authentication with gateway client keys.
//!
//! Reads `Authorization`. A `Bearer <key>` whose SHA-256 matches a configured
//! client is accepted: the header is removed (a gateway key never goes to
//! Pleo) and the client's identity is put in the request's extensions. Any
//! other Authorization (legacy openapi tokens, Pleo keys, typos) is refused
//! with 401 `legacy_token_refused` and never forwarded. No Authorization is
//! fine unless clients are configured (401 `client_unauthenticated`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::{header, HeaderValue, Request};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::filter::Predicate;

use crate::config::ClientConfig;
use crate::error::{ErrorCode, GatewayError};
use crate::routes::snapshot;
use crate::BoxError;

/// A client the request was authenticated as.
#[derive(Debug)]
pub struct Client {
    pub name: Box<str>,
    pub tenants: HashSet<Box<str>>,
    /// The tenant `tenant_from: client_key` picks: set when the client lists exactly one.
    pub bound_tenant: Option<Box<str>>,
}

/// Put in the request's extensions once the caller is authenticated.
#[derive(Clone, Debug)]
pub struct ClientIdentity(pub Arc<Client>);

/// The configured client keys, by SHA-256 of the key.
#[derive(Debug, Default)]
pub struct ClientKeys {
    by_digest: HashMap<[u8; 32], Arc<Client>>,
}

impl ClientKeys {
    pub fn new(clients: &[ClientConfig]) -> Self {
        let by_digest = clients
            .iter()
            .map(|c| {
                let client = Client {
                    name: c.name.as_str().into(),
                    tenants: c.tenants.iter().map(|t| t.as_str().into()).collect(),
                    bound_tenant: match c.tenants.as_slice() {
                        [only] => Some(only.as_str().into()),
                        _ => None,
                    },
                };
                (c.key_sha256, Arc::new(client))
            })
            .collect();
        ClientKeys { by_digest }
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The client whose key this Authorization value carries. The lookup is by
    /// SHA-256 of the presented key, so timing can only reveal facts about a
    /// digest, not about the key; the final comparison is constant-time anyway.
    pub fn identify(&self, value: &HeaderValue) -> Option<&Arc<Client>> {
        let bytes = value.as_bytes();
        let key = bytes.get(..7).filter(|p| p.eq_ignore_ascii_case(b"bearer ")).map(|_| bytes[7..].trim_ascii())?;
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
        let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
        let (first, second) = (values.next(), values.next());
        let client = match (first, second) {
            (None, _) if routes.clients.is_empty() => return Ok(req),
            (None, _) => return Err(GatewayError::new(ErrorCode::ClientUnauthenticated).into()),
            (Some(v), None) => routes.clients.identify(v).cloned(),
            // Two Authorization headers: never guess which one was meant.
            (Some(_), Some(_)) => None,
        };
        let Some(client) = client else {
            return Err(GatewayError::new(ErrorCode::LegacyTokenRefused).into());
        };
        req.headers_mut().remove(header::AUTHORIZATION);
        req.extensions_mut().insert(ClientIdentity(client));
        Ok(req)
    }
}
