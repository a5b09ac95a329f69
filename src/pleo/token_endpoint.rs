//! One call to an OAuth 2.0 token endpoint (RFC 6749 section 6 refresh, and
//! section 4.1.3 authorization code with PKCE for `connect`), with the
//! answer sorted into what the session must do next. Tokens are opaque.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::body::RequestBody;
use crate::secret::{is_header_safe, Secret};
use crate::state::StoredToken;
use crate::upstream::HttpClient;

/// What Pleo's token endpoint is asked for.
#[derive(Debug)]
pub enum Grant<'a> {
    Refresh(&'a Secret),
    AuthorizationCode { code: &'a str, redirect_uri: &'a str, verifier: &'a str },
}

/// A successful answer.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: Secret,
    /// Absent if the server kept the old refresh token (RFC 6749 6); Pleo
    /// always rotates.
    pub refresh_token: Option<Secret>,
    pub expires_in: Duration,
}

impl Tokens {
    /// `chain` after a refresh answered with these tokens (asked at
    /// `issued_ms`); Pleo always rotates, but a server that kept the
    /// refresh token (RFC 6749 6) keeps the old one.
    pub fn rotate(self, chain: StoredToken, issued_ms: u64) -> StoredToken {
        StoredToken {
            refresh_token: self.refresh_token.unwrap_or(chain.refresh_token),
            access_token: Some(self.access_token),
            access_issued_at_ms: Some(issued_ms),
            access_expires_at_ms: Some(issued_ms + self.expires_in.as_millis() as u64),
            imported_from: chain.imported_from,
            reauthorization_required: false,
        }
    }
}

/// Why a call failed, sorted by what to do about it. Messages hold status
/// codes and OAuth error codes only, never a token or a response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The refresh token (or code) is expired, revoked or was replayed:
    /// only a new consent helps.
    #[error("the token endpoint answered invalid_grant: the authorisation is expired or revoked")]
    InvalidGrant,
    /// The client id or secret is wrong (`invalid_client`, `unauthorized_client`).
    #[error("the token endpoint rejected the client credentials ({0})")]
    ClientRejected(String),
    /// 5xx, 429, timeouts, connection errors, unreadable answers: try again later.
    #[error("{0}")]
    Transient(String),
}

/// What the refresh state machine needs of a token endpoint. The HTTP one
/// is [`TokenEndpoint`]; unit tests of `refresh` script their own.
pub trait Exchange: Send + Sync + std::fmt::Debug + 'static {
    fn exchange<'a>(
        &'a self,
        grant: Grant<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Tokens, TokenError>> + Send + 'a>>;

    /// Equal for the same endpoint and client credentials (a digest, never
    /// the credentials): a reload that changes them is a reason to retry.
    fn client_identity(&self) -> String;
}

impl Exchange for TokenEndpoint {
    fn exchange<'a>(
        &'a self,
        grant: Grant<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Tokens, TokenError>> + Send + 'a>> {
        Box::pin(TokenEndpoint::exchange(self, grant))
    }

    fn client_identity(&self) -> String {
        use sha2::{Digest, Sha256};
        format!("{} {}", self.url, hex::encode(Sha256::digest(self.client_auth.as_bytes())))
    }
}

/// Where and as whom to ask for tokens.
#[derive(Clone)]
pub struct TokenEndpoint {
    pub url: Uri,
    client_auth: HeaderValue,
    http: HttpClient,
    timeout: Duration,
}

// The client authentication header is a secret.
impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint").field("url", &self.url).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Success {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<f64>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct Failure {
    error: String,
}

/// Pleo documents about 15 minutes; used if an answer has no `expires_in`.
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(900);

impl TokenEndpoint {
    pub fn new(url: Uri, client_id: &str, client_secret: &Secret, http: HttpClient, timeout: Duration) -> Self {
        let raw = format!("{client_id}:{}", client_secret.expose_secret());
        let mut client_auth = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(raw)))
            .expect("base64 output is a valid header value");
        client_auth.set_sensitive(true);
        TokenEndpoint { url, client_auth, http, timeout }
    }

    pub async fn exchange(&self, grant: Grant<'_>) -> Result<Tokens, TokenError> {
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            match grant {
                Grant::Refresh(rt) => {
                    form.append_pair("grant_type", "refresh_token").append_pair("refresh_token", rt.expose_secret());
                }
                Grant::AuthorizationCode { code, redirect_uri, verifier } => {
                    form.append_pair("grant_type", "authorization_code")
                        .append_pair("code", code)
                        .append_pair("redirect_uri", redirect_uri)
                        .append_pair("code_verifier", verifier);
                }
            }
            form.finish()
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::HOST, self.url.authority().map(|a| a.as_str()).unwrap_or_default())
            .header(header::AUTHORIZATION, self.client_auth.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(RequestBody::kept(Bytes::from(form)))
            .map_err(|e| TokenError::Transient(format!("cannot build the token request: {e}")))?;

        let call = async {
            let resp = self.http.request(req).await.map_err(|e| TokenError::Transient(connect_error(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|_| TokenError::Transient(format!("token endpoint answer ({status}) could not be read")))?
                .to_bytes();
            Ok::<_, TokenError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| TokenError::Transient(format!("token endpoint did not answer within {:?}", self.timeout)))??;
        classify(status, &body)
    }
}

fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut text = format!("cannot reach the token endpoint: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn classify(status: StatusCode, body: &[u8]) -> Result<Tokens, TokenError> {
    if status.is_success() {
        let ok: Success = serde_json::from_slice(body)
            .map_err(|_| TokenError::Transient(format!("token endpoint answered {status} without a token")))?;
        if let Some(t) = &ok.token_type {
            if !t.eq_ignore_ascii_case("bearer") {
                return Err(TokenError::Transient(format!("token endpoint issued a `{}` token, not Bearer", code(t))));
            }
        }
        if !is_header_safe(&ok.access_token) || ok.refresh_token.as_deref().is_some_and(|t| !is_header_safe(t)) {
            return Err(TokenError::Transient("token endpoint issued a token that is not visible ASCII".into()));
        }
        let expires_in = match ok.expires_in {
            Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s.min(366.0 * 86400.0)),
            _ => DEFAULT_EXPIRES_IN,
        };
        return Ok(Tokens {
            access_token: Secret::new(ok.access_token),
            refresh_token: ok.refresh_token.map(Secret::new),
            expires_in,
        });
    }
    let error = serde_json::from_slice::<Failure>(body).map(|f| f.error).unwrap_or_default();
    match (status, error.as_str()) {
        (StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED, "invalid_grant") => Err(TokenError::InvalidGrant),
        (StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED, "invalid_client" | "unauthorized_client") => {
            Err(TokenError::ClientRejected(format!("{status}, {error}")))
        }
        _ if error.is_empty() => Err(TokenError::Transient(format!("token endpoint answered {status}"))),
        _ => Err(TokenError::Transient(format!("token endpoint answered {status}, {}", code(&error)))),
    }
}

/// An OAuth error code or token type as we repeat it: only the ones RFC 6749
/// (and 6750/7519) define, so an endpoint that echoes something sensitive in
/// that field can't put it in our logs.
fn code(text: &str) -> &'static str {
    const KNOWN: [&str; 11] = [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "access_denied",
        "mac",
        "dpop",
    ];
    KNOWN.into_iter().find(|k| k.eq_ignore_ascii_case(text)).unwrap_or("unrecognised")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_by_what_to_do() {
        let ok = br#"{"access_token":"a1","refresh_token":"r2","expires_in":3,"token_type":"Bearer"}"#;
        let t = classify(StatusCode::OK, ok).unwrap();
        assert_eq!((t.access_token.expose_secret(), t.expires_in), ("a1", Duration::from_secs(3)));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant"}"#),
            Err(TokenError::InvalidGrant)
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, br#"{"error":"invalid_client"}"#),
            Err(TokenError::ClientRejected(_))
        ));
        assert!(matches!(classify(StatusCode::SERVICE_UNAVAILABLE, b"oops"), Err(TokenError::Transient(_))));
        assert!(matches!(classify(StatusCode::OK, b"{}"), Err(TokenError::Transient(_))));
        let mac = br#"{"access_token":"a1","token_type":"mac"}"#;
        assert!(matches!(classify(StatusCode::OK, mac), Err(TokenError::Transient(_))));
    }

    #[test]
    fn failure_text_never_repeats_the_body() {
        let e = classify(StatusCode::BAD_GATEWAY, br#"{"error":"secret_rt_value"}"#).unwrap_err().to_string();
        assert_eq!(e, "token endpoint answered 502 Bad Gateway, unrecognised");
        let e = classify(StatusCode::SERVICE_UNAVAILABLE, br#"{"error":"temporarily_unavailable"}"#).unwrap_err();
        assert_eq!(e.to_string(), "token endpoint answered 503 Service Unavailable, temporarily_unavailable");
    }
}
