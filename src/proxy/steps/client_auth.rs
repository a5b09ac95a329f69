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
use crate::proxy::routes::snapshot;
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
            if req.extensions().get::<crate::proxy::routes::DryRun>().is_none() {
                routes.legacy_tokens.count_token(Some(token.as_bytes()));
            }
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
                if code == ErrorCode::LegacyTokenRefused
                    && req.extensions().get::<crate::proxy::routes::DryRun>().is_none()
                {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code_of;
    use crate::proxy::routes::{counter, for_tests, Routes, Snapshot};

    const KEY: &str = "gw_unit_client_key_0123456789";
    const TENANT: &str = "tenants:\n  t1:\n    environment: staging\n    auth: { model: integrated_api_key, key: ik_unit_0123456789abcdef }\n";

    fn with_clients() -> (Arc<Routes>, prometheus::Registry) {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(KEY));
        for_tests(&format!("clients:\n  - name: erp\n    key_sha256: \"{digest}\"\n    tenants: [t1]\n{TENANT}"))
    }

    fn request(routes: &Arc<Routes>, uri: &str, authorization: &[&str]) -> Request<()> {
        let mut b = Request::get(uri).extension(Snapshot(routes.clone())).extension(Arc::new(AccessSlot::default()));
        for a in authorization {
            b = b.header(header::AUTHORIZATION, *a);
        }
        b.body(()).unwrap()
    }

    fn refused(result: Result<Request<()>, BoxError>) -> ErrorCode {
        code_of(&result.expect_err("refused"))
    }

    #[test]
    fn a_gateway_key_names_the_client_and_never_goes_further() {
        let (routes, _) = with_clients();
        let req = AuthenticateClient.check(request(&routes, "/v2/x", &[&format!("Bearer {KEY}")])).unwrap();
        assert!(req.headers().get(header::AUTHORIZATION).is_none(), "the gateway key is removed");
        assert_eq!(&*req.extensions().get::<ClientIdentity>().unwrap().0.name, "erp");
        assert_eq!(req.extensions().get::<Arc<AccessSlot>>().unwrap().client.get().map(|c| &**c), Some("erp"));
    }

    #[test]
    fn with_clients_configured_a_request_must_name_one() {
        let (routes, registry) = with_clients();
        assert_eq!(refused(AuthenticateClient.check(request(&routes, "/v2/x", &[]))), ErrorCode::ClientUnauthenticated);
        // A key that is not a client's: refused, counted as a legacy token, never forwarded.
        let wrong = AuthenticateClient.check(request(&routes, "/v2/x", &["Bearer not-a-client-key"]));
        assert_eq!(refused(wrong), ErrorCode::LegacyTokenRefused);
        let unnamed = [("app", "unnamed")];
        assert_eq!(counter(&registry, "pleo_gateway_legacy_token_refused_total", &unnamed), 1.0);
        // Two Authorization headers, even when one is right: never guess.
        let two = AuthenticateClient.check(request(&routes, "/v2/x", &[&format!("Bearer {KEY}"), "Bearer other"]));
        assert_eq!(refused(two), ErrorCode::LegacyTokenRefused);
    }

    #[test]
    fn a_client_certificate_names_the_client_when_there_is_no_key() {
        let (routes, _) = with_clients();
        let mut req = request(&routes, "/v2/x", &[]);
        req.extensions_mut().insert(ClientCertNames(Arc::from(vec![Box::<str>::from("erp")])));
        let req = AuthenticateClient.check(req).unwrap();
        assert_eq!(&*req.extensions().get::<ClientIdentity>().unwrap().0.name, "erp");
        let mut stranger = request(&routes, "/v2/x", &[]);
        stranger.extensions_mut().insert(ClientCertNames(Arc::from(vec![Box::<str>::from("crm")])));
        assert_eq!(refused(AuthenticateClient.check(stranger)), ErrorCode::ClientUnauthenticated);
    }

    #[test]
    fn without_clients_no_authorization_passes_and_any_authorization_is_refused() {
        let (routes, registry) = for_tests(TENANT);
        let req = AuthenticateClient.check(request(&routes, "/v2/x", &[])).unwrap();
        assert!(req.extensions().get::<ClientIdentity>().is_none());
        let legacy = AuthenticateClient.check(request(&routes, "/v2/x", &["Bearer legacy-openapi-token"]));
        assert_eq!(refused(legacy), ErrorCode::LegacyTokenRefused);
        assert_eq!(counter(&registry, "pleo_gateway_legacy_token_refused_total", &[("app", "unnamed")]), 1.0);
    }

    #[test]
    fn a_credential_in_the_query_is_refused_whatever_its_spelling() {
        let (routes, _) = for_tests(TENANT);
        for uri in ["/v2/x?access_token=t", "/v2/x?page=2&API_KEY=t", "/v2/x?apikey=t", "/v2/x?api-key=t"] {
            assert_eq!(
                refused(AuthenticateClient.check(request(&routes, uri, &[]))),
                ErrorCode::LegacyTokenRefused,
                "{uri}"
            );
        }
        assert!(AuthenticateClient.check(request(&routes, "/v2/x?token_type=bearer", &[])).is_ok());
    }
}
