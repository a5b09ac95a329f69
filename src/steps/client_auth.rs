//! Step 6 of 12: who is calling. Gateway client keys and client certificates.
//!
//! Reads `Authorization`. A `Bearer <key>` whose SHA-256 matches a configured
//! client is accepted: the header is removed (a gateway key never goes to
//! Pleo) and the client's identity is put in the request's extensions. Any
//! other Authorization (legacy openapi tokens, Pleo keys, typos), or a
//! credential in the query string, is refused with 401
//! `legacy_token_refused` and never forwarded. No Authorization is fine
//! unless clients are configured; then a client certificate verified
//! against `client_ca` may name the client instead (its DNS name is the
//! client's `name`), and without one the answer is 401
//! `client_unauthenticated`.

use std::sync::Arc;

use http::{header, Request};
use tower::filter::Predicate;

use crate::access_log::AccessSlot;
use crate::clients::ClientIdentity;
use crate::error::{ErrorCode, GatewayError};
use crate::routes::snapshot;
use crate::tls::ClientCertNames;
use crate::BoxError;

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
            let _ = slot.client.set(client.name.clone());
        }
        req.extensions_mut().insert(ClientIdentity(client));
        Ok(req)
    }
}
