//! OAuth 2.0 authorization code with PKCE (RFC 7636, S256) against Pleo:
//! the authorize URL a browser is sent to, and the code exchanged for a
//! token chain. Used by `pleo-gateway connect` (a loopback redirect) and by
//! connect links (`onboarding::pages::oauth`, a public callback).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::Uri;
use sha2::{Digest, Sha256};

use super::token_endpoint::{Grant, TokenEndpoint, TokenError};
use crate::config::{AuthConfig, Config, TenantConfig};
use crate::state::{unix_now_ms, StoredToken};
use crate::upstream::HttpClient;

/// A managed OAuth tenant's client, for the authorization-code flow.
#[derive(Debug)]
pub struct ConsentClient {
    pub client_id: String,
    pub authorize_url: Uri,
    pub endpoint: Arc<TokenEndpoint>,
}

impl ConsentClient {
    /// The client of a managed OAuth tenant (`None` for any other), talking
    /// to its environment's endpoints through `http`.
    pub fn for_tenant(config: &Config, tenant: &TenantConfig, http: HttpClient) -> Option<ConsentClient> {
        let AuthConfig::OAuth2Managed { client_id, client_secret, .. } = &tenant.auth else { return None };
        Some(ConsentClient::new(config, tenant.environment, client_id, client_secret, http))
    }

    /// The client `client_id` in `environment` (an installable app's).
    pub fn new(
        config: &Config,
        environment: crate::config::Environment,
        client_id: &str,
        client_secret: &crate::secret::Secret,
        http: HttpClient,
    ) -> ConsentClient {
        let env = &config.environments[&environment];
        let endpoint =
            TokenEndpoint::new(env.token_url.clone(), client_id, client_secret, http, config.limits.token_timeout);
        ConsentClient {
            client_id: client_id.to_string(),
            authorize_url: env.authorize_url.clone(),
            endpoint: Arc::new(endpoint),
        }
    }

    /// Where the browser goes to consent: `state` comes back on the
    /// redirect as it was sent; `verifier` stays here (its S256 challenge goes).
    pub fn url(&self, redirect_uri: &str, state: &str, verifier: &str, scope: Option<&str>) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", state);
        if let Some(scope) = scope {
            query.append_pair("scope", scope);
        }
        format!("{}?{}", self.authorize_url, query.finish())
    }

    /// The code for a new chain. `imported_from` marks a refresh token still
    /// in the config as older than this consent, so it is never imported
    /// over the new chain.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        imported_from: Option<String>,
    ) -> Result<StoredToken, ExchangeError> {
        let issued = unix_now_ms();
        let tokens = self.endpoint.exchange(Grant::AuthorizationCode { code, redirect_uri, verifier }).await?;
        let refresh = tokens.refresh_token.ok_or(ExchangeError::NoRefreshToken)?;
        Ok(StoredToken {
            refresh_token: refresh,
            access_token: Some(tokens.access_token),
            access_issued_at_ms: Some(issued),
            access_expires_at_ms: Some(issued + tokens.expires_in.as_millis() as u64),
            imported_from,
            reauthorization_required: false,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("Pleo issued no refresh token, so the gateway could not keep this tenant connected")]
    NoRefreshToken,
}
