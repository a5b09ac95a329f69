//! Connect links: a 256-bit token in a URL, kept only as its SHA-256 with
//! the tenant, the expiry and who made it. Used once; attempts are bounded.

use serde::{Deserialize, Serialize};

/// One connect link. `id` is what lists and revocations name (a prefix of
/// the token's hash, useless as a link); the token itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub id: String,
    pub token_sha256: String,
    pub tenant: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub used_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// Form submissions and OAuth starts on this link; bounded.
    pub attempts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Usable,
    Used,
    Expired,
    Revoked,
    /// Too many attempts: the link is spent.
    Locked,
}

/// Attempts one link allows (wrong keys, abandoned consents).
pub const MAX_ATTEMPTS: u32 = 10;

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Usable => "usable",
            LinkState::Used => "used",
            LinkState::Expired => "expired",
            LinkState::Revoked => "revoked",
            LinkState::Locked => "locked",
        }
    }
}

impl LinkRecord {
    pub fn state(&self, now_ms: u64) -> LinkState {
        if self.revoked_at_ms.is_some() {
            LinkState::Revoked
        } else if self.used_at_ms.is_some() {
            LinkState::Used
        } else if now_ms >= self.expires_at_ms {
            LinkState::Expired
        } else if self.attempts > MAX_ATTEMPTS {
            LinkState::Locked
        } else {
            LinkState::Usable
        }
    }
}
