//! The sandbox plays Pleo's App Marketplace: a page listing the gateway's
//! apps, where Connect sends the browser to the app's Initiation URI with a
//! session handover token (`pleo_id_token`) and Settings to its Settings
//! URI; for an integrated-key app Connect first shows the key, as Pleo's
//! install modal does. The tokens are RS256 JWTs signed with a key the
//! sandbox makes when it first needs one; its JWKS is `/oauth/jwks`.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};

use super::Shared;
use crate::config::AuthModel;

/// An app as the marketplace lists it.
#[derive(Clone, Debug)]
pub struct MarketApp {
    pub name: String,
    pub client_id: String,
    pub model: AuthModel,
    /// The app's Initiation URI (`/install/<app>` on the connect pages).
    pub install_url: String,
    /// Its Settings URI.
    pub settings_url: String,
}

/// How long a handover token the sandbox signs is valid.
pub const HANDOVER_TTL: Duration = Duration::from_secs(300);

/// The sandbox's signing key and its public half as a JWK.
pub struct Signer {
    pub kid: String,
    key: EncodingKey,
    jwk: serde_json::Value,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh 2048-bit RSA key (made once per sandbox, on first use).
    pub fn generate() -> Signer {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key generation works");
        let der = private.to_pkcs1_der().expect("an RSA key encodes");
        let n = URL_SAFE_NO_PAD.encode(private.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(private.e().to_bytes_be());
        let kid = format!("sandbox-{}", &crate::secret::random_token(6));
        let jwk = serde_json::json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e });
        Signer { kid, key: EncodingKey::from_rsa_der(der.as_bytes()), jwk }
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// A handover token as Pleo signs one.
    pub fn handover(&self, issuer: &str, client_id: &str, company: &str, user: &str, ttl: Duration) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        self.sign(&serde_json::json!({
            "iss": issuer, "sub": user, "aud": client_id, "iat": now, "exp": now + ttl.as_secs(),
            "company_id": company, "locale": "en",
        }))
    }

    /// Any claims, signed with this key as a handover token (tests: a wrong
    /// issuer, an expiry in the past).
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = Some(crate::pleo::handover::TYP.to_string());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("RS256 signing works")
    }
}

impl Shared {
    pub(super) fn signer(&self) -> &Signer {
        self.signer.get_or_init(Signer::generate)
    }

    pub(super) fn jwks(&self) -> serde_json::Value {
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        self.signer().jwks()
    }

    pub(super) fn app(&self, name: &str) -> Option<&MarketApp> {
        self.spec.apps.iter().find(|a| a.name == name)
    }

    /// A handover for `app`'s user at `company`, signed now.
    pub(super) fn handover_for(&self, app: &MarketApp, company: &str) -> String {
        let user = format!("sandbox-user@{company}");
        self.signer().handover(&self.issuer, &app.client_id, company, &user, HANDOVER_TTL)
    }

    /// An integrated API key for `company`, accepted from now on.
    pub(super) fn issue_key(&self, company: &str) -> String {
        let key = format!("ik_sandbox_{}", crate::secret::random_token(24));
        let value = crate::credential::basic_value(&crate::secret::Secret::new(key.as_str()));
        self.issued_keys.lock().expect("sandbox lock").insert(value.expose_secret().to_string(), company.to_string());
        key
    }
}

/// The marketplace page.
#[derive(askama::Template)]
#[template(path = "sandbox_marketplace.html")]
pub struct MarketplacePage<'a> {
    pub apps: &'a [MarketApp],
    pub environment: &'a str,
}

/// Pleo's install modal for an integrated-key app: the key, and the way on.
#[derive(askama::Template)]
#[template(path = "sandbox_key.html")]
pub struct KeyPage<'a> {
    pub app: &'a str,
    pub key: &'a str,
    pub next: &'a str,
}

/// `?pleo_id_token=` appended to `url`.
pub fn with_token(url: &str, token: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}pleo_id_token={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_handover_verifies_with_the_published_key() {
        let signer = Signer::generate();
        let token = signer.handover("http://iss", "client-1", "c-1", "user-1", HANDOVER_TTL);
        let jwk = &signer.jwks()["keys"][0];
        let key =
            jsonwebtoken::DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
                .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&["client-1"]);
        v.set_issuer(&["http://iss"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap();
        assert_eq!(data.claims["company_id"], "c-1");
        assert_eq!(data.header.typ.as_deref(), Some("pleo_id+jwt"));
        assert_eq!(data.header.kid.as_deref(), Some(signer.kid.as_str()));
    }
}
