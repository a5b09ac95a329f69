//! A tenant's Pleo credential at run time, as the attach step puts it on a
//! request: `Basic base64(key + ":")` for both API-key models and
//! `Bearer <token>` for oauth2. Static values are built once when the
//! config loads, marked sensitive, and only cloned. Managed OAuth tenants
//! get theirs from their session (`refresh`, kept in `sessions`), which
//! keeps a fresh token on hand; onboarded keys sit in a `key_slot`; an
//! API key's standing with Pleo is its `check`.

mod api_key;
pub mod check;
pub mod key_slot;
mod oauth2;
pub mod refresh;
mod schedule;
mod sessions;
mod token_state;

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

pub use sessions::Sessions;

use crate::config::AuthConfig;
use crate::secret::Secret;
use refresh::OAuthSession;

/// A tenant's credential, ready to put on the wire.
pub enum Credential {
    /// API keys and unmanaged OAuth access tokens.
    Static { authorization: HeaderValue, masked: Arc<str> },
    /// Managed OAuth: the session holds the current access token.
    OAuth { session: Arc<OAuthSession>, masked: Arc<str> },
    /// An API key from a connection (`source: connection`), none until made.
    Connected { slot: Arc<key_slot::KeySlot> },
}

// Never print the header value, even though it is marked sensitive.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Static { masked, .. } => f.debug_struct("Static").field("masked", masked).finish(),
            Credential::OAuth { session, masked } => {
                f.debug_struct("OAuth").field("session", session).field("masked", masked).finish()
            }
            Credential::Connected { slot } => f.debug_struct("Connected").field("slot", slot).finish(),
        }
    }
}

impl Credential {
    /// The tenant's credential state as `/tenants` shows it.
    pub fn state(&self) -> &'static str {
        match self {
            Credential::Static { .. } => "configured",
            Credential::OAuth { session, .. } => session.state(),
            Credential::Connected { slot } if slot.get().is_none() => "not_connected",
            Credential::Connected { .. } => "configured",
        }
    }

    /// For humans (`check`, `/tenants`): the kind and the last characters at most.
    pub fn masked(&self) -> String {
        match self {
            Credential::Static { masked, .. } | Credential::OAuth { masked, .. } => masked.to_string(),
            Credential::Connected { slot } => match slot.get() {
                Some(k) => k.masked.clone(),
                None => "not connected yet".to_string(),
            },
        }
    }

    /// The `Authorization` value a key check sends: the configured key, or
    /// the connected one (`None` while not connected, and for managed OAuth).
    pub fn key_authorization(&self) -> Option<HeaderValue> {
        match self {
            Credential::Static { authorization, .. } => Some(authorization.clone()),
            Credential::Connected { slot } => slot.get().map(|k| k.authorization.clone()),
            Credential::OAuth { .. } => None,
        }
    }

    pub fn session(&self) -> Option<&Arc<OAuthSession>> {
        match self {
            Credential::OAuth { session, .. } => Some(session),
            Credential::Static { .. } | Credential::Connected { .. } => None,
        }
    }
}

/// The fixed `Authorization` value of a credential that has one (API keys,
/// unmanaged OAuth tokens); `None` for managed OAuth.
pub fn static_authorization(auth: &AuthConfig) -> Option<HeaderValue> {
    match auth {
        AuthConfig::OAuth2 { access_token } => Some(oauth2::bearer(access_token)),
        AuthConfig::IntegratedApiKey { key } | AuthConfig::StandaloneApiKey { key } => Some(api_key::basic(key)),
        AuthConfig::OAuth2Managed { .. } | AuthConfig::ApiKeyConnection { .. } => None,
    }
}

/// `Basic base64(key + ":")` as a secret string: what Pleo expects for an API
/// key. Shared with the sandbox so both sides agree on the encoding.
pub fn basic_value(key: &Secret) -> Secret {
    let v = api_key::basic(key);
    Secret::new(v.to_str().expect("base64 is visible ASCII"))
}
