//! Where rotated OAuth tokens live between refreshes and across restarts.
//!
//! Pleo rotates the refresh token on every refresh and treats a replay of an
//! old one as theft (the whole authorisation is revoked). So the newest
//! refresh token must be stored before the access token that came with it is
//! used: a crash right after a refresh must come back with the new token.
//! The session calls [`TokenStore`] only on the refresh path, never per request.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::StoreFuture;
use crate::secret::Secret;

/// What is kept for one OAuth tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub refresh_token: Secret,
    pub access_token: Option<Secret>,
    /// When the access token was asked for and when it expires, in Unix
    /// milliseconds (second precision is too coarse for short-lived tokens).
    pub access_issued_at_ms: Option<u64>,
    pub access_expires_at_ms: Option<u64>,
    /// Fingerprint of the config's initial `refresh_token` this chain was
    /// imported from (or that was already in the config when `connect` ran).
    /// A different fingerprint in the config means a new consent to import.
    pub imported_from: Option<String>,
    /// The token endpoint answered `invalid_grant`: consent must be renewed;
    /// the gateway does not call the token endpoint with this chain again.
    pub reauthorization_required: bool,
}

// Tokens never printed; what is useful for debugging is.
impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_expires_at_ms", &self.access_expires_at_ms)
            .field("reauthorization_required", &self.reauthorization_required)
            .finish_non_exhaustive()
    }
}

impl StoredToken {
    /// A new consent's refresh token from the config, with its fingerprint.
    pub fn imported(refresh_token: Secret, fingerprint: String) -> StoredToken {
        StoredToken {
            refresh_token,
            access_token: None,
            access_issued_at_ms: None,
            access_expires_at_ms: None,
            imported_from: Some(fingerprint),
            reauthorization_required: false,
        }
    }

    /// This chain, dead (`invalid_grant`): a new consent is needed.
    pub fn needing_reauthorization(&self) -> StoredToken {
        StoredToken {
            access_token: None,
            access_issued_at_ms: None,
            access_expires_at_ms: None,
            reauthorization_required: true,
            ..self.clone()
        }
    }
}

/// A fingerprint of a refresh token, to recognise it later without keeping it.
pub fn fingerprint(token: &Secret) -> String {
    hex::encode(&Sha256::digest(token.expose_secret().as_bytes())[..16])
}
/// The right to refresh one tenant's chain until it is committed or
/// released. In a shared store it also runs out (its holder may have died),
/// and `generation` then fences the late holder: its commit is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub generation: i64,
}

/// What asking for a lease gives.
#[derive(Debug)]
pub enum Leased {
    Held {
        lease: Lease,
        /// The tenant's chain as it stands under the lease.
        stored: Option<StoredToken>,
        /// A previous holder marked a refresh in flight and never committed
        /// (it died, or lost the store, after asking Pleo): the stored
        /// refresh token may already be retired.
        interrupted: bool,
    },
    /// Another replica holds the lease and is refreshing.
    Busy,
}

/// Durable storage of each OAuth tenant's newest tokens.
///
/// A refresh goes `lease` -> (`mark_in_flight` -> token endpoint) ->
/// `commit`, or `release` when nothing was asked. The file store serves one
/// process (it locks its directory), so its lease is the session's own
/// flight lock and these default to plain loads and saves; the shared store
/// makes them a cross-replica lock with fencing (docs/oauth.md, "Replicas").
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The tenant's stored tokens; `Ok(None)` if there are none yet.
    fn load<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Option<StoredToken>>;
    /// Durably replaces the tenant's tokens: when this returns `Ok`, a crash
    /// cannot bring back the previous ones. Outside a refresh (a new consent
    /// from `connect`): it also ends any lease another holder has.
    fn save<'a>(&'a self, tenant: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()>;

    /// Takes the tenant's refresh lease for `ttl`, with its stored chain.
    fn lease<'a>(&'a self, tenant: &'a str, _ttl: Duration) -> StoreFuture<'a, Leased> {
        Box::pin(async move {
            let stored = self.load(tenant).await?;
            Ok(Leased::Held { lease: Lease { generation: 0 }, stored, interrupted: false })
        })
    }

    /// Records, before the token endpoint is called, that a refresh is in flight.
    fn mark_in_flight<'a>(&'a self, _tenant: &'a str, _lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Writes the tokens a refresh brought and ends the lease; refused with
    /// [`StoreError::Fenced`] when the lease was lost.
    fn commit<'a>(&'a self, tenant: &'a str, _lease: Lease, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        self.save(tenant, token)
    }

    /// Ends the lease without a write (nothing was asked of Pleo, or it refused).
    fn release<'a>(&'a self, _tenant: &'a str, _lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Several tenants' stored tokens at once (those that have any), for
    /// taking up a burst of other replicas' changes in one round trip.
    fn load_many<'a>(&'a self, tenants: &'a [Box<str>]) -> StoreFuture<'a, Vec<(Box<str>, StoredToken)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for t in tenants {
                if let Some(s) = self.load(t).await? {
                    out.push((t.clone(), s));
                }
            }
            Ok(out)
        })
    }

    /// Tenants whose state another replica changed, for stores shared by
    /// several processes.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Box<str>>> {
        None
    }

    /// Whether the store answers now, and if not why (for `/readyz` and `/tenants`).
    fn health(&self) -> StoreHealth {
        StoreHealth { kind: "file", up: true, error: None }
    }
}

/// What `/readyz` and `/tenants` say about the store.
#[derive(Clone, Debug)]
pub struct StoreHealth {
    pub kind: &'static str,
    pub up: bool,
    pub error: Option<String>,
}
