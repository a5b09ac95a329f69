//! API keys customers enter on a connect link (or an operator PUTs through
//! the management API), for tenants configured with `source: connection`.
//! The slot outlives config reloads (it lives in `Sessions`, like OAuth
//! sessions do): a reload must not disconnect a customer. A rotation swaps
//! the slot's value; requests that already read the old one finish on it.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::secret::Secret;

/// One tenant's connected key, or none yet.
#[derive(Default)]
pub struct KeySlot {
    current: ArcSwapOption<ConnectedKey>,
}

/// A key that passed `GET /v1/installations/me`, ready for the wire.
pub struct ConnectedKey {
    pub authorization: HeaderValue,
    /// `key ••••abcd`: for humans.
    pub masked: String,
    pub meta: ConnectionMeta,
}

/// What `/tenants` and `check` say about a connection; no secret in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionMeta {
    pub connected_at_ms: u64,
    /// The connect link's id, or `None` when made through the API.
    pub link_id: Option<String>,
    /// Who made it: `link`, or `api:<admin token name>`.
    pub by: String,
    pub company_id: Option<String>,
}

// The header value is the key: say only what is safe.
impl fmt::Debug for ConnectedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectedKey").field("masked", &self.masked).field("meta", &self.meta).finish()
    }
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySlot").field("connected", &self.current.load().is_some()).finish()
    }
}

impl KeySlot {
    pub fn get(&self) -> Option<Arc<ConnectedKey>> {
        self.current.load_full()
    }

    /// Puts `key` in place of whatever was there.
    pub fn set(&self, key: &Secret, meta: ConnectionMeta) {
        let authorization = super::api_key::basic(key);
        self.current.store(Some(Arc::new(ConnectedKey {
            authorization,
            masked: format!("key {}", key.masked()),
            meta,
        })));
    }

    pub fn clear(&self) {
        self.current.store(None);
    }
}
