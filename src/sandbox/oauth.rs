//! The sandbox's `/oauth/token`, with Pleo's rotation rules: every refresh
//! returns a new refresh token and retires the old one; presenting a retired
//! refresh token revokes the whole authorisation (every token descended from
//! the same consent). That is what makes a gateway that replays a token fail
//! its tests loudly.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap, StatusCode};

use crate::secret::Secret;

/// An OAuth client registered with the sandbox, with the refresh tokens of
/// its existing consents.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: Secret,
    pub company_id: String,
    pub refresh_tokens: Vec<Secret>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// Successful refreshes.
    pub refreshes: u64,
    /// Retired refresh tokens presented again (each revoked an authorisation).
    pub reuse_detected: u64,
    /// Refreshes refused with invalid_grant, for any reason.
    pub invalid_grant: u64,
}

#[derive(Debug)]
struct Refresh {
    family: u64,
    client_id: String,
    company: String,
    retired: bool,
}

#[derive(Debug)]
struct Access {
    family: u64,
    company: String,
    expires: Instant,
}

#[derive(Debug)]
pub struct TokenState {
    clients: Vec<OAuthClient>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, Access>,
    revoked: HashSet<u64>,
    salt: u64,
    counter: u64,
    stats: TokenStats,
}

impl TokenState {
    pub fn new(clients: &[OAuthClient]) -> Self {
        let mut refresh = HashMap::new();
        for (family, c) in clients.iter().enumerate() {
            for t in &c.refresh_tokens {
                refresh.insert(
                    t.expose_secret().to_string(),
                    Refresh {
                        family: family as u64,
                        client_id: c.client_id.clone(),
                        company: c.company_id.clone(),
                        retired: false,
                    },
                );
            }
        }
        let salt = RandomState::new().build_hasher().finish();
        TokenState {
            clients: clients.to_vec(),
            refresh,
            access: HashMap::new(),
            revoked: HashSet::new(),
            salt,
            counter: 0,
            stats: TokenStats::default(),
        }
    }

    pub fn stats(&self) -> TokenStats {
        self.stats
    }

    /// The company of a live access token.
    pub fn access_company(&self, token: &str) -> Option<String> {
        let a = self.access.get(token)?;
        (a.expires > Instant::now() && !self.revoked.contains(&a.family)).then(|| a.company.clone())
    }

    fn mint(&mut self, kind: &str) -> String {
        self.counter += 1;
        let mut h = RandomState::new().build_hasher();
        h.write_u64(self.salt ^ self.counter);
        format!("sbx_{kind}_{:016x}{:08x}", h.finish(), self.counter)
    }

    fn client(&self, headers: &HeaderMap) -> Option<&OAuthClient> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
        let decoded = String::from_utf8(STANDARD.decode(value).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        self.clients.iter().find(|c| c.client_id == id && c.client_secret.expose_secret() == secret)
    }
}

/// Handles one token request; answers (status, JSON body).
pub fn token(
    state: &Mutex<TokenState>,
    headers: &HeaderMap,
    form: &[u8],
    ttl: Duration,
) -> (StatusCode, serde_json::Value) {
    let mut st = state.lock().expect("sandbox lock");
    let err = |status, code: &str, description: &str| {
        (status, serde_json::json!({ "error": code, "error_description": description }))
    };
    let Some(client_id) = st.client(headers).map(|c| c.client_id.clone()) else {
        return err(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    };
    let fields: HashMap<String, String> = form_urlencoded::parse(form).into_owned().collect();
    if fields.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return err(StatusCode::BAD_REQUEST, "unsupported_grant_type", "expected grant_type=refresh_token");
    }
    let presented = fields.get("refresh_token").cloned().unwrap_or_default();
    let (family, company) = match st.refresh.get_mut(&presented) {
        Some(r) if r.client_id != client_id => {
            st.stats.invalid_grant += 1;
            return err(StatusCode::BAD_REQUEST, "invalid_grant", "refresh token was issued to another client");
        }
        Some(r) if r.retired => {
            // Replay of a rotated token: revoke the whole authorisation, as Pleo does.
            let family = r.family;
            st.revoked.insert(family);
            st.stats.reuse_detected += 1;
            st.stats.invalid_grant += 1;
            return err(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token reuse detected; authorisation revoked",
            );
        }
        Some(r) => {
            r.retired = true;
            (r.family, r.company.clone())
        }
        None => {
            st.stats.invalid_grant += 1;
            return err(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
        }
    };
    if st.revoked.contains(&family) {
        st.stats.invalid_grant += 1;
        return err(StatusCode::BAD_REQUEST, "invalid_grant", "authorisation revoked");
    }
    let access = st.mint("at");
    let refresh = st.mint("rt");
    st.access.insert(access.clone(), Access { family, company: company.clone(), expires: Instant::now() + ttl });
    st.refresh.insert(refresh.clone(), Refresh { family, client_id, company, retired: false });
    st.stats.refreshes += 1;
    (
        StatusCode::OK,
        serde_json::json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": ttl.as_secs().max(1),
            "token_type": "Bearer",
        }),
    )
}
