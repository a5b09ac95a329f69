//! The sandbox's `/oauth/token`, with Pleo's rotation rules: every refresh
//! returns a new refresh token and retires the old one; presenting a retired
//! refresh token revokes the whole authorisation (every token descended from
//! the same consent). That is what makes a gateway that replays a token fail
//! its tests loudly.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

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
    /// Authorization codes exchanged for tokens (`connect`).
    pub code_exchanges: u64,
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

/// An authorization code from `/oauth/authorize`, waiting to be exchanged.
#[derive(Debug)]
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    company: String,
    issued: Instant,
}

/// What the sandbox keeps, bounded so the demo can run for weeks: retired
/// refresh tokens (for reuse detection) and issued access tokens (for tests
/// to search logs) are the newest this many; expired access tokens and
/// codes older than [`CODE_TTL`] are dropped.
pub const KEEP_RETIRED: usize = 1_000;
pub const KEEP_ISSUED: usize = 10_000;
const CODE_TTL: Duration = Duration::from_secs(600);

/// How much the token state holds now (for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retained {
    pub refresh_tokens: usize,
    pub access_tokens: usize,
    pub issued_access: usize,
    pub codes: usize,
}

#[derive(Debug)]
pub struct TokenState {
    clients: Vec<OAuthClient>,
    refresh: HashMap<String, Refresh>,
    codes: HashMap<String, Code>,
    next_family: u64,
    /// Access tokens issued, newest [`KEEP_ISSUED`] (the live ones are in `access`).
    issued_access: VecDeque<String>,
    /// Retired refresh tokens, oldest first, newest [`KEEP_RETIRED`] kept.
    retired: VecDeque<String>,
    access: HashMap<String, Access>,
    revoked: HashSet<u64>,
    salt: u64,
    counter: u64,
    stats: TokenStats,
    /// The marketplace's last Connect per client: the company the next
    /// consent of that client is for (an app's client serves many companies).
    pending: HashMap<String, String>,
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
            codes: HashMap::new(),
            next_family: clients.len() as u64,
            issued_access: VecDeque::new(),
            retired: VecDeque::new(),
            access: HashMap::new(),
            revoked: HashSet::new(),
            salt,
            counter: 0,
            stats: TokenStats::default(),
            pending: HashMap::new(),
        }
    }

    pub fn stats(&self) -> TokenStats {
        self.stats
    }

    /// Revokes every authorisation, as a customer disconnecting the app
    /// would: the next refresh of any of them gets `invalid_grant`.
    pub fn revoke_all(&mut self) {
        let families: Vec<u64> = self.refresh.values().map(|r| r.family).collect();
        self.revoked.extend(families);
    }

    /// A customer consents again: `token` becomes the refresh token of a
    /// new authorisation (a new family, untouched by earlier revocations).
    pub fn consent_again(&mut self, client_id: &str, token: &str) {
        let Some(c) = self.clients.iter().find(|c| c.client_id == client_id) else { return };
        let company = c.company_id.clone();
        let family = self.next_family;
        self.next_family += 1;
        let refresh = Refresh { family, client_id: client_id.to_string(), company, retired: false };
        self.refresh.insert(token.to_string(), refresh);
    }

    /// The marketplace sends a user of `company` to consent to `client_id`.
    pub fn consent_for(&mut self, client_id: &str, company: &str) {
        self.pending.insert(client_id.to_string(), company.to_string());
    }

    /// Uninstall (`DELETE /v1/installations/me`): every token of every
    /// authorisation for `company` stops working, access and refresh alike.
    pub fn revoke_company(&mut self, company: &str) {
        let refresh = self.refresh.values().filter(|r| r.company == company).map(|r| r.family);
        let access = self.access.values().filter(|a| a.company == company).map(|a| a.family);
        let families: Vec<u64> = refresh.chain(access).collect();
        self.revoked.extend(families);
        self.access.retain(|_, a| a.company != company);
    }

    pub fn expire_access_tokens(&mut self) {
        self.access.clear();
    }

    pub fn retained(&self) -> Retained {
        Retained {
            refresh_tokens: self.refresh.len(),
            access_tokens: self.access.len(),
            issued_access: self.issued_access.len(),
            codes: self.codes.len(),
        }
    }

    fn retire(&mut self, token: &str) {
        self.retired.push_back(token.to_string());
        while self.retired.len() > KEEP_RETIRED {
            if let Some(old) = self.retired.pop_front() {
                self.refresh.remove(&old);
            }
        }
    }

    pub fn issued(&self) -> Vec<Secret> {
        self.refresh.keys().chain(self.issued_access.iter()).map(|t| Secret::new(t.as_str())).collect()
    }

    /// Whether `token` is a refresh token that may still be used.
    pub fn is_live_refresh_token(&self, token: &str) -> bool {
        self.refresh.get(token).is_some_and(|r| !r.retired && !self.revoked.contains(&r.family))
    }

    /// `/oauth/authorize`, consenting at once: checks the client and PKCE
    /// parameters and returns where to redirect (with `code` and `state`).
    pub fn authorize(&mut self, query: &str) -> Result<String, String> {
        let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned().ok_or(format!("missing `{k}`"));
        if get("response_type")? != "code" {
            return Err("response_type must be code".into());
        }
        if get("code_challenge_method")? != "S256" {
            return Err("code_challenge_method must be S256".into());
        }
        let (client_id, redirect_uri, state, challenge) =
            (get("client_id")?, get("redirect_uri")?, get("state")?, get("code_challenge")?);
        let Some(client) = self.clients.iter().find(|c| c.client_id == client_id) else {
            return Err("unknown client_id".into());
        };
        let company = self.pending.get(&client_id).cloned().unwrap_or_else(|| client.company_id.clone());
        let code = self.mint("code");
        self.codes.retain(|_, c| c.issued.elapsed() < CODE_TTL);
        let issued = Instant::now();
        self.codes
            .insert(code.clone(), Code { client_id, redirect_uri: redirect_uri.clone(), challenge, company, issued });
        let sep = if redirect_uri.contains('?') { '&' } else { '?' };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &state)
            .finish();
        Ok(format!("{redirect_uri}{sep}{query}"))
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
    match fields.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some("authorization_code") => {
            let code = fields.get("code").and_then(|c| st.codes.remove(c));
            let Some(code) = code else {
                st.stats.invalid_grant += 1;
                return err(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or used authorization code");
            };
            let verifier = fields.get("code_verifier").map(String::as_str).unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
            if code.client_id != client_id
                || fields.get("redirect_uri") != Some(&code.redirect_uri)
                || computed != code.challenge
            {
                st.stats.invalid_grant += 1;
                return err(StatusCode::BAD_REQUEST, "invalid_grant", "code, redirect_uri or code_verifier mismatch");
            }
            let family = st.next_family;
            st.next_family += 1;
            st.stats.code_exchanges += 1;
            return issue(&mut st, family, client_id, code.company, ttl);
        }
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "expected grant_type=refresh_token or authorization_code",
            )
        }
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
            let found = (r.family, r.company.clone());
            st.retire(&presented);
            found
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
    st.stats.refreshes += 1;
    issue(&mut st, family, client_id, company, ttl)
}

/// Mints an access and a refresh token in `family`.
fn issue(
    st: &mut TokenState,
    family: u64,
    client_id: String,
    company: String,
    ttl: Duration,
) -> (StatusCode, serde_json::Value) {
    let access = st.mint("at");
    let refresh = st.mint("rt");
    let now = Instant::now();
    st.access.retain(|_, a| a.expires > now);
    st.issued_access.push_back(access.clone());
    if st.issued_access.len() > KEEP_ISSUED {
        st.issued_access.pop_front();
    }
    st.access.insert(access.clone(), Access { family, company: company.clone(), expires: Instant::now() + ttl });
    st.refresh.insert(refresh.clone(), Refresh { family, client_id, company, retired: false });
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
