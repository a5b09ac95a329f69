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

use crate::clients::Client;
use crate::error::{ErrorCode, GatewayError};
use crate::proxy::routes::Routes;
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

/// Step 6: the client a request is from (`None` when no clients are
/// configured); its gateway key is removed from the request.
pub fn authenticate<B>(req: &mut Request<B>, routes: &Routes) -> Result<Option<Arc<Client>>, BoxError> {
    if let Some(token) = req.uri().query().and_then(query_credential) {
        let seen = routes.legacy_tokens.seen_token(Some(token.as_bytes()));
        return Err(GatewayError::new(ErrorCode::LegacyTokenRefused)
            .with_detail("The query string carries a credential (access_token or api_key).")
            .with_source(seen)
            .into());
    }
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (first, second) = (values.next(), values.next());
    let cert = req.extensions().get::<ClientCertNames>();
    let found = match first {
        None if routes.clients.is_empty() => return Ok(None),
        // No key, but maybe a certificate the handshake verified against client_ca.
        None => cert.and_then(|names| routes.clients.by_certificate(names)).ok_or(ErrorCode::ClientUnauthenticated),
        // Two Authorization headers: never guess which one was meant.
        Some(v) => second.is_none().then(|| routes.clients.identify(v)).flatten().ok_or(ErrorCode::LegacyTokenRefused),
    };
    let client = match found {
        Ok(client) => client.clone(),
        Err(ErrorCode::LegacyTokenRefused) => {
            let seen = routes.legacy_tokens.seen(first);
            return Err(GatewayError::new(ErrorCode::LegacyTokenRefused).with_source(seen).into());
        }
        Err(code) => return Err(GatewayError::new(code).into()),
    };
    req.headers_mut().remove(header::AUTHORIZATION);
    Ok(Some(client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code_of;
    use crate::proxy::routes::{counter, for_tests};

    const KEY: &str = "gw_unit_client_key_0123456789";
    const TENANT: &str = "tenants:\n  t1:\n    environment: staging\n    auth: { model: integrated_api_key, key: ik_unit_0123456789abcdef }\n";

    fn with_clients() -> (Arc<Routes>, prometheus::Registry) {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(KEY));
        for_tests(&format!("clients:\n  - name: erp\n    key_sha256: \"{digest}\"\n    tenants: [t1]\n{TENANT}"))
    }

    fn request(uri: &str, authorization: &[&str]) -> Request<()> {
        let mut b = Request::get(uri);
        for a in authorization {
            b = b.header(header::AUTHORIZATION, *a);
        }
        b.body(()).unwrap()
    }

    fn check(routes: &Routes, mut req: Request<()>) -> Result<(Request<()>, Option<Arc<Client>>), BoxError> {
        let client = authenticate(&mut req, routes)?;
        Ok((req, client))
    }

    /// The refusal's code; a legacy refusal is recorded, as `rescue` would.
    fn refused(result: Result<(Request<()>, Option<Arc<Client>>), BoxError>) -> ErrorCode {
        let err = result.expect_err("refused");
        if let Some(seen) = crate::error::find::<crate::clients::LegacyTokenSeen>(&*err) {
            seen.record();
        }
        code_of(&err)
    }

    #[test]
    fn a_gateway_key_names_the_client_and_never_goes_further() {
        let (routes, _) = with_clients();
        let (req, client) = check(&routes, request("/v2/x", &[&format!("Bearer {KEY}")])).unwrap();
        assert!(req.headers().get(header::AUTHORIZATION).is_none(), "the gateway key is removed");
        assert_eq!(&*client.unwrap().name, "erp");
    }

    #[test]
    fn with_clients_configured_a_request_must_name_one() {
        let (routes, registry) = with_clients();
        assert_eq!(refused(check(&routes, request("/v2/x", &[]))), ErrorCode::ClientUnauthenticated);
        // A key that is not a client's: refused, counted as a legacy token, never forwarded.
        let wrong = check(&routes, request("/v2/x", &["Bearer not-a-client-key"]));
        assert_eq!(refused(wrong), ErrorCode::LegacyTokenRefused);
        let unnamed = [("app", "unnamed")];
        assert_eq!(counter(&registry, "pleo_gateway_legacy_token_refused_total", &unnamed), 1.0);
        // Two Authorization headers, even when one is right: never guess.
        let two = check(&routes, request("/v2/x", &[&format!("Bearer {KEY}"), "Bearer other"]));
        assert_eq!(refused(two), ErrorCode::LegacyTokenRefused);
    }

    #[test]
    fn a_client_certificate_names_the_client_when_there_is_no_key() {
        let (routes, _) = with_clients();
        let mut req = request("/v2/x", &[]);
        req.extensions_mut().insert(ClientCertNames(Arc::from(vec![Box::<str>::from("erp")])));
        let (_, client) = check(&routes, req).unwrap();
        assert_eq!(&*client.unwrap().name, "erp");
        let mut stranger = request("/v2/x", &[]);
        stranger.extensions_mut().insert(ClientCertNames(Arc::from(vec![Box::<str>::from("crm")])));
        assert_eq!(refused(check(&routes, stranger)), ErrorCode::ClientUnauthenticated);
    }

    #[test]
    fn without_clients_no_authorization_passes_and_any_authorization_is_refused() {
        let (routes, registry) = for_tests(TENANT);
        let (_, client) = check(&routes, request("/v2/x", &[])).unwrap();
        assert!(client.is_none());
        let legacy = check(&routes, request("/v2/x", &["Bearer legacy-openapi-token"]));
        assert_eq!(refused(legacy), ErrorCode::LegacyTokenRefused);
        assert_eq!(counter(&registry, "pleo_gateway_legacy_token_refused_total", &[("app", "unnamed")]), 1.0);
    }

    #[test]
    fn a_credential_in_the_query_is_refused_whatever_its_spelling() {
        let (routes, _) = for_tests(TENANT);
        for uri in ["/v2/x?access_token=t", "/v2/x?page=2&API_KEY=t", "/v2/x?apikey=t", "/v2/x?api-key=t"] {
            assert_eq!(refused(check(&routes, request(uri, &[]))), ErrorCode::LegacyTokenRefused, "{uri}");
        }
        assert!(check(&routes, request("/v2/x?token_type=bearer", &[])).is_ok());
        // Deciding counts nothing: only the recorded refusal did.
        let (routes, registry) = for_tests(TENANT);
        assert!(check(&routes, request("/v2/x", &["Bearer legacy"])).is_err());
        assert_eq!(counter(&registry, "pleo_gateway_legacy_token_refused_total", &[("app", "unnamed")]), 0.0);
    }
}
