//! A connect link's OAuth consent: authorization code with PKCE (S256).
//! Nothing is kept between the start and the callback: `state` carries the
//! link's hash, a nonce and the time, signed with the store's key, and the
//! PKCE verifier is derived from `state` with that key too, so whichever
//! replica gets the callback can finish it. The nonce is also set as a
//! cookie on the callback path: an answer that arrives in another browser
//! (a forged or replayed callback) does not match and is refused.

use std::time::Duration;

use http::{HeaderMap, Uri};

use crate::onboarding::seal::Sealer;
use crate::pleo::authorize::ConsentClient;
use crate::secret::random_token;
use crate::state::unix_now_ms;

/// A consent must come back within this.
const CONSENT_TTL: Duration = Duration::from_secs(15 * 60);
const COOKIE: &str = "pleo_gateway_consent";

#[derive(Debug)]
pub struct Started {
    pub location: String,
    pub nonce: String,
}

fn verifier(sealer: &Sealer, signed_state: &str) -> String {
    // 32 bytes of HMAC: 43 base64url characters, a valid PKCE verifier.
    sealer.sign("pkce", &[signed_state])
}

/// Starts a consent for `subject`: a connect link's hash, or
/// `install-<app>` for an install from Pleo (what the callback finishes).
pub fn start(sealer: &Sealer, subject: &str, consent: &ConsentClient, public_url: &str) -> Started {
    let nonce = random_token(16);
    let issued = unix_now_ms().to_string();
    let mac = sealer.sign("state", &[subject, &nonce, &issued]);
    let state = format!("{subject}.{nonce}.{issued}.{mac}");
    let location = consent.url(&format!("{public_url}/oauth/callback"), &state, &verifier(sealer, &state), None);
    Started { location, nonce }
}

fn secure_attr(public_url: &str) -> &'static str {
    if public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

pub fn cookie(nonce: &str, public_url: &str) -> String {
    format!(
        "{COOKIE}={nonce}; Path=/oauth/callback; Max-Age={}; HttpOnly; SameSite=Lax{}",
        CONSENT_TTL.as_secs(),
        secure_attr(public_url)
    )
}

pub fn clear_cookie(public_url: &str) -> String {
    format!("{COOKIE}=; Path=/oauth/callback; Max-Age=0; HttpOnly; SameSite=Lax{}", secure_attr(public_url))
}

/// What a callback brought, once `state` and the cookie check out.
#[derive(Debug)]
pub struct Back {
    pub link_hash: String,
    pub verifier: String,
    /// The code, or the error Pleo gave (`access_denied`).
    pub outcome: Result<String, String>,
}

pub fn callback(sealer: &Sealer, uri: &Uri, headers: &HeaderMap) -> Result<Back, String> {
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let state = q.get("state").cloned().unwrap_or_default();
    let parts: Vec<&str> = state.split('.').collect();
    let [hash, nonce, issued, mac] = parts.as_slice() else {
        return Err("The answer from Pleo is incomplete. Open the connect link again.".into());
    };
    if !sealer.verify("state", &[hash, nonce, issued], mac) {
        return Err(
            "The answer from Pleo does not belong to a consent this gateway started. Open the connect link again."
                .into(),
        );
    }
    let issued: u64 = issued.parse().unwrap_or(0);
    if unix_now_ms().saturating_sub(issued) > CONSENT_TTL.as_millis() as u64 {
        return Err("The consent took too long. Open the connect link again.".into());
    }
    let cookie_nonce = super::cookies(headers, COOKIE).any(|v| v == *nonce);
    if !cookie_nonce {
        return Err(
            "This answer from Pleo arrived in a different browser from the one that started the consent. Open the \
             connect link again in this browser."
                .into(),
        );
    }
    let outcome = match (q.get("code"), q.get("error")) {
        (_, Some(e)) => Err(e.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect()),
        (Some(code), None) if !code.is_empty() => Ok(code.clone()),
        _ => Err("no_code".to_string()),
    };
    Ok(Back { link_hash: hash.to_string(), verifier: verifier(sealer, &state), outcome })
}
