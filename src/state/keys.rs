//! A tenant's onboarded key: an API key the customer entered (sealed with
//! AES-256-GCM), or the record of an OAuth consent (whose tokens live in
//! the token store), with what is safe to show about it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tenant's onboarding: the sealed key (API-key tenants; OAuth tokens
/// live in the token store) and what is safe to show about it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnboardedKey {
    pub tenant: String,
    pub model: String,
    /// `v1:<key id>:<base64url(nonce | ciphertext | tag)>`.
    pub sealed_key: Option<String>,
    /// `key ••••abcd`.
    pub masked: String,
    pub company_id: Option<String>,
    pub connected_at_ms: u64,
    pub link_id: Option<String>,
    pub by: String,
}

// The sealed key is ciphertext, but there is no reason to print it either.
impl fmt::Debug for OnboardedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnboardedKey")
            .field("tenant", &self.tenant)
            .field("model", &self.model)
            .field("masked", &self.masked)
            .field("link_id", &self.link_id)
            .finish_non_exhaustive()
    }
}
