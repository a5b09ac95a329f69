//! Where a managed OAuth tenant stands: its status, and the token requests
//! may use now with the moment the session acts next. Published whole
//! through `ArcSwap` by the refresh in flight; requests only read it.

use std::time::{Duration, Instant};

use http::HeaderValue;

/// How often a tenant that needs an operator re-reads its stored state when
/// requests keep arriving (a `connect` run elsewhere is picked up this way).
pub const RECHECK: Duration = Duration::from_secs(5);

/// Where a tenant's OAuth connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Stored state not read yet.
    Starting,
    Connected,
    /// The token endpoint failed transiently; retrying with backoff.
    RefreshFailing,
    /// A refreshed token could not be saved; it is kept in memory and saving is retried.
    PersistFailed,
    /// `invalid_grant`: consent must be renewed.
    ReauthorizationRequired,
    /// No refresh token anywhere: `connect` has not been run.
    NotConnected,
    /// The token endpoint refuses the client id or secret.
    ClientRejected,
    /// The stored state is unreadable or corrupt.
    StateError,
    /// The shared token store does not answer: the current token is used
    /// while it is valid, and no refresh happens that could not be stored.
    StoreUnavailable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Connected => "connected",
            Status::RefreshFailing => "refresh_failing",
            Status::PersistFailed => "persist_failed",
            Status::ReauthorizationRequired => "reauthorization_required",
            Status::NotConnected => "not_connected",
            Status::ClientRejected => "client_rejected",
            Status::StateError => "state_error",
            Status::StoreUnavailable => "store_unavailable",
        }
    }

    /// What a request that finds no usable token is told.
    pub(super) fn explain(self, tenant: &str) -> String {
        match self {
            Status::ReauthorizationRequired => format!(
                "The OAuth authorisation of tenant {tenant} has expired or was revoked by Pleo: consent must be \
                 renewed (run `pleo-gateway connect {tenant}`, or configure a new refresh_token)."
            ),
            Status::NotConnected => format!(
                "Tenant {tenant} is not connected yet: send a connect link to the customer's Pleo admin \
                 (`pleo-gateway link {tenant}`), run `pleo-gateway connect {tenant}`, or configure its refresh_token."
            ),
            Status::ClientRejected => format!(
                "Pleo's token endpoint rejects the client_id/client_secret of tenant {tenant}; the gateway keeps \
                 retrying slowly."
            ),
            Status::StateError => {
                format!("The stored OAuth state of tenant {tenant} cannot be read; see the gateway's log.")
            }
            Status::PersistFailed => format!(
                "A refreshed token of tenant {tenant} could not be written to state_dir; it is used once it is \
                 stored (see the gateway's log)."
            ),
            Status::StoreUnavailable => format!(
                "The shared token store (PostgreSQL) is unreachable and the access token of tenant {tenant} has \
                 expired; the gateway refreshes it once the store answers again (see pleo_gateway_store_up)."
            ),
            Status::RefreshFailing => format!(
                "The access token of tenant {tenant} expired and Pleo's token endpoint is failing; the gateway \
                 retries with backoff."
            ),
            Status::Starting | Status::Connected => {
                format!("Refreshing the access token of tenant {tenant} did not finish in time.")
            }
        }
    }
}

/// The token a request may use now, and what the session does next.
#[derive(Clone, Debug)]
pub struct Current {
    pub(super) epoch: u64,
    pub status: Status,
    pub(super) authorization: Option<HeaderValue>,
    /// When the token was issued (a 401 right after does not force a refresh).
    pub(super) obtained_at: Option<Instant>,
    pub expires_at: Option<Instant>,
    pub(super) usable_until: Option<Instant>,
    /// When to refresh, retry or re-read the store.
    pub(super) next_at: Instant,
}

impl Current {
    pub(super) fn usable(&self, now: Instant) -> Option<&HeaderValue> {
        match (&self.authorization, self.usable_until) {
            (Some(v), Some(until)) if now < until => Some(v),
            _ => None,
        }
    }

    /// Statuses the schedule acts on by itself; the others need an
    /// operator, and are re-checked only when requests ask.
    pub(super) fn background(&self) -> bool {
        matches!(
            self.status,
            Status::Starting
                | Status::Connected
                | Status::RefreshFailing
                | Status::PersistFailed
                | Status::ClientRejected
                | Status::StoreUnavailable
        )
    }

    /// Same token and expiry, new status and next step.
    pub(super) fn failing(&self, status: Status, next_at: Instant) -> Current {
        Current { status, next_at, ..self.clone() }
    }

    pub(super) fn blocked(status: Status, now: Instant) -> Current {
        Current {
            epoch: 0,
            status,
            authorization: None,
            obtained_at: None,
            expires_at: None,
            usable_until: None,
            next_at: now + RECHECK,
        }
    }
}
