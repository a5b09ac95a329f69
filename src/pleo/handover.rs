//! Pleo's session handover: when a user clicks Connect, Enable or Configure
//! in Pleo, Pleo sends the browser to the app with `pleo_id_token` (older
//! docs: `pleo_id`), a JWT that proves the user may manage the integration
//! for one company. It is not an access token and is never sent anywhere.
//!
//! Nothing in it is believed before all of this holds: `alg` is RS256 (and
//! nothing else: no `none`, no HMAC keyed with the public key), `typ` is
//! `pleo_id+jwt`, `kid` names a key from the app's JWKS, the signature
//! verifies, `iss` and `aud` are the configured ones and `exp` has not
//! passed (60 s of clock skew allowed). The JWKS is cached and fetched again
//! for an unknown `kid` at most once a minute, so forged `kid`s cannot make
//! the gateway hammer Pleo.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::upstream::HttpClient;

/// The clock skew allowed on `exp` (and `nbf`).
pub const LEEWAY: Duration = Duration::from_secs(60);
/// The JWKS is fetched again for an unknown `kid` at most this often.
pub const REFETCH: Duration = Duration::from_secs(60);
/// A handover token longer than this is not read at all.
const MAX_TOKEN: usize = 8 * 1024;
const MAX_JWKS: usize = 256 * 1024;
pub const TYP: &str = "pleo_id+jwt";

/// What a verified handover says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    /// The company (or organisation) id from the configured claim.
    pub company_id: String,
    /// `sub`: the Pleo user.
    pub user: String,
    pub locale: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Why a handover token was refused; `reason()` is the metric's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token is not signed with RS256")]
    Algorithm,
    #[error("the token is not a Pleo session handover token (typ)")]
    Type,
    #[error("the token is signed with a key Pleo does not publish")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token is meant for another app (aud)")]
    Audience,
    #[error("the token was not issued by Pleo (iss)")]
    Issuer,
    #[error("the token has expired")]
    Expired,
    #[error("the token names no company")]
    NoCompany,
    #[error("Pleo's signing keys could not be fetched")]
    KeysUnavailable,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::Malformed,
        Refusal::Algorithm,
        Refusal::Type,
        Refusal::UnknownKey,
        Refusal::Signature,
        Refusal::Audience,
        Refusal::Issuer,
        Refusal::Expired,
        Refusal::NoCompany,
        Refusal::KeysUnavailable,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Type => "type",
            Refusal::UnknownKey => "unknown_kid",
            Refusal::Signature => "signature",
            Refusal::Audience => "audience",
            Refusal::Issuer => "issuer",
            Refusal::Expired => "expired",
            Refusal::NoCompany => "company_claim",
            Refusal::KeysUnavailable => "jwks_unavailable",
        }
    }
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// One app's handover verifier, with its cached keys.
pub struct Verifier {
    jwks_url: Uri,
    issuer: String,
    audience: String,
    company_claim: String,
    http: HttpClient,
    /// Held across a fetch: concurrent verifications wait for one fetch.
    cache: tokio::sync::Mutex<KeyCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("jwks_url", &self.jwks_url).field("issuer", &self.issuer).finish()
    }
}

/// A company id as Pleo writes them (UUIDs): letters, digits and '-'.
pub fn is_company_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Verifier {
    pub fn new(jwks_url: Uri, issuer: &str, audience: &str, company_claim: &str, http: HttpClient) -> Verifier {
        Verifier {
            jwks_url,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            company_claim: company_claim.to_string(),
            http,
            cache: Default::default(),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Handover, Refusal> {
        if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
            return Err(Refusal::Malformed);
        }
        // The header is read by hand first: a token with `alg: none` or an
        // algorithm the library does not know is refused as such, before
        // any key is looked up.
        let head = token.split('.').next().unwrap_or_default();
        let head: serde_json::Value = URL_SAFE_NO_PAD
            .decode(head)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Refusal::Malformed)?;
        if head.get("alg").and_then(|a| a.as_str()) != Some("RS256") {
            return Err(Refusal::Algorithm);
        }
        if !head.get("typ").and_then(|t| t.as_str()).is_some_and(|t| t.eq_ignore_ascii_case(TYP)) {
            return Err(Refusal::Type);
        }
        let kid = head.get("kid").and_then(|k| k.as_str()).ok_or(Refusal::UnknownKey)?;
        let key = self.key(kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY.as_secs();
        v.validate_nbf = true;
        v.set_audience(&[&self.audience]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => Refusal::Signature,
                    K::ExpiredSignature | K::ImmatureSignature => Refusal::Expired,
                    K::InvalidAudience => Refusal::Audience,
                    K::InvalidIssuer => Refusal::Issuer,
                    K::InvalidAlgorithm => Refusal::Algorithm,
                    _ => Refusal::Malformed,
                }
            })?;
        let claims = data.claims;
        let company_id = claims
            .get(&self.company_claim)
            .and_then(|c| c.as_str())
            .filter(|c| is_company_id(c))
            .ok_or(Refusal::NoCompany)?
            .to_string();
        let user = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default();
        let user: String = user.chars().filter(|c| !c.is_control()).take(120).collect();
        let locale = claims
            .get("locale")
            .and_then(|l| l.as_str())
            .filter(|l| l.len() <= 16 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .map(str::to_string);
        let expires_at = claims.get("exp").and_then(|e| e.as_u64()).unwrap_or(0);
        Ok(Handover { company_id, user, locale, expires_at })
    }

    /// The key `kid` names: from the cache, or from a fetch if the last one
    /// is more than [`REFETCH`] ago.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Refusal> {
        let mut cache = self.cache.lock().await;
        if let Some(k) = cache.keys.get(kid) {
            return Ok(k.clone());
        }
        if cache.fetched.is_some_and(|at| at.elapsed() < REFETCH) {
            return Err(Refusal::UnknownKey);
        }
        // A failed fetch counts as a fetch too: a flood of forged kids
        // cannot turn into a flood of requests to Pleo.
        cache.fetched = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(jwks = %self.jwks_url, keys = keys.len(), "handover signing keys fetched");
                cache.keys = keys;
            }
            Err(why) => {
                tracing::warn!(jwks = %self.jwks_url, error = %why, "cannot fetch the handover signing keys");
                return Err(if cache.keys.is_empty() { Refusal::KeysUnavailable } else { Refusal::UnknownKey });
            }
        }
        cache.keys.get(kid).cloned().ok_or(Refusal::UnknownKey)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = self.jwks_url.clone();
        req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("pleo-gateway-handover"));
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| format!("request failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("answered {}", resp.status()));
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS)
                .collect()
                .await
                .map_err(|_| "the answer could not be read (or is too large)".to_string())?
                .to_bytes();
            Ok(body)
        };
        let body =
            tokio::time::timeout(super::TIMEOUT, exchange).await.map_err(|_| "no answer in time".to_string())??;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa)) = (&jwk.common.key_id, &jwk.algorithm)
            else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_rsa_components(&rsa.n, &rsa.e) {
                keys.insert(kid.clone(), key);
            }
        }
        Ok(keys)
    }
}
