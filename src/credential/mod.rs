//! Step 4: attach the tenant's Pleo credential.
//!
//! Reads the `Arc<Tenant>` that `tenant` resolved and sets `Authorization` to
//! the tenant's credential: `Bearer <token>` for oauth2, `Basic
//! base64(key + ":")` for both API-key models. Header values are built once
//! when the config loads (`from_config`), marked sensitive, and only cloned
//! here. A credential that cannot be had answers 503 `credential_unavailable`.

mod api_key;
mod oauth2;

use std::fmt;
use std::sync::Arc;

use http::{header, HeaderValue, Request};
use tower::filter::Predicate;

use crate::config::AuthConfig;
use crate::error::{ErrorCode, GatewayError};
use crate::routes::Tenant;
use crate::BoxError;

/// A tenant's credential, ready to put on the wire.
///
/// Static today for all three models. Managed OAuth refresh adds a variant
/// that holds the token session; the step that asks for `authorization()`
/// stays where it is.
pub enum Credential {
    Static {
        authorization: HeaderValue,
        masked: String,
    },
    /// No credential can be had; requests get 503 with `reason`.
    Unavailable {
        reason: &'static str,
        masked: String,
    },
}

// Never print the header value, even though it is marked sensitive.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Static { masked, .. } => f.debug_struct("Static").field("masked", masked).finish(),
            Credential::Unavailable { reason, .. } => f.debug_struct("Unavailable").field("reason", reason).finish(),
        }
    }
}

impl Credential {
    pub fn from_config(auth: &AuthConfig) -> Credential {
        match auth {
            AuthConfig::OAuth2 { access_token } => Credential::Static {
                authorization: oauth2::bearer(access_token),
                masked: format!("bearer {}", access_token.masked()),
            },
            AuthConfig::OAuth2Managed => Credential::Unavailable {
                reason: "This tenant is configured for managed OAuth refresh, which this gateway version does not \
                         do yet; configure an access_token for it.",
                masked: "unavailable (managed refresh)".into(),
            },
            AuthConfig::IntegratedApiKey { key } | AuthConfig::StandaloneApiKey { key } => {
                Credential::Static { authorization: api_key::basic(key), masked: format!("key {}", key.masked()) }
            }
        }
    }

    /// The `Authorization` value to send to Pleo now.
    pub fn authorization(&self) -> Result<HeaderValue, GatewayError> {
        match self {
            Credential::Static { authorization, .. } => Ok(authorization.clone()),
            Credential::Unavailable { reason, .. } => {
                Err(GatewayError::new(ErrorCode::CredentialUnavailable).with_detail(*reason))
            }
        }
    }

    /// The tenant's credential state as `/tenants` shows it.
    pub fn state(&self) -> &'static str {
        match self {
            Credential::Static { .. } => "configured",
            Credential::Unavailable { .. } => "credential_unavailable",
        }
    }

    /// For humans (`check`, `/tenants`): the kind and the last characters at most.
    pub fn masked(&self) -> &str {
        match self {
            Credential::Static { masked, .. } | Credential::Unavailable { masked, .. } => masked,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct AttachCredential;

impl<B> Predicate<Request<B>> for AttachCredential {
    type Request = Request<B>;

    fn check(&mut self, mut req: Request<B>) -> Result<Request<B>, BoxError> {
        let tenant = req
            .extensions()
            .get::<Arc<Tenant>>()
            .ok_or_else(|| GatewayError::new(ErrorCode::CredentialUnavailable).with_source("no tenant resolved"))?;
        let value = tenant.credential.authorization()?;
        req.headers_mut().insert(header::AUTHORIZATION, value);
        Ok(req)
    }
}

/// `Basic base64(key + ":")` as a secret string: what Pleo expects for an API
/// key. Shared with the sandbox so both sides agree on the encoding.
pub fn basic_value(key: &crate::secret::Secret) -> crate::secret::Secret {
    let v = api_key::basic(key);
    crate::secret::Secret::new(v.to_str().expect("base64 is visible ASCII"))
}
