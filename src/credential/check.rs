//! One API-key tenant's credential check, as Pleo answers it:
//! `GET /v1/installations/me` in the tenant's environment ([`check_key`]),
//! and what the gateway makes of the answer ([`KeyCheck`], [`CheckState`]).
//! `key_checks` runs it over a routing table, at start, after each reload and
//! again for tenants that are not connected.
//!
//! - 2xx: Pleo's installation document (`installation`) decides. The
//!   company id comes from its `resource` URN. `ACTIVATED`: `connected`;
//!   `AUTHORIZED` and `PENDING_INTEGRATION`: `connected`, with a note that
//!   the installation is not active yet; `INACTIVE` and `ERROR`: `degraded`,
//!   its requests get 503 `credential_unavailable` saying what Pleo's error
//!   code means; a status the gateway does not know: `unverified`.
//! - 401/403: `rejected` with Pleo's status. The tenant is degraded: its
//!   requests get 503 `credential_unavailable` instead of a sure 401 from
//!   Pleo. Other tenants are untouched.
//! - anything else (timeout, 5xx, connection): `unverified`. The tenant
//!   keeps serving; Pleo being down is not the key's fault.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderValue, StatusCode};

use crate::error::{ErrorCode, GatewayError};
use crate::pleo::installation::{self, explain_error_code, Call, Status};
use crate::upstream::Upstream;

/// Says what this call is, in Pleo's logs (and to the sandbox).
const USER_AGENT: &str = concat!("pleo-gateway-credential-check/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CheckState {
    /// Not an API-key tenant, or not checked yet.
    Pending = 0,
    Connected = 1,
    Rejected = 2,
    Unverified = 3,
    /// The key works, but Pleo reports the installation INACTIVE or ERROR.
    Degraded = 4,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pending => "pending",
            CheckState::Connected => "connected",
            CheckState::Rejected => "rejected",
            CheckState::Unverified => "unverified",
            CheckState::Degraded => "degraded",
        }
    }
}

/// One tenant's validation result. The state is an atomic because the
/// request path reads it (is the tenant rejected?); the details are for
/// `/tenants`.
#[derive(Debug, Default)]
pub struct KeyCheck {
    state: AtomicU8,
    /// The last check's details and when Pleo was asked; `None` until the
    /// first check. Boxed: OAuth tenants never have one, and inline it was
    /// ~150 bytes in each of 100,000 tenants.
    last: Mutex<Option<Box<(Detail, std::time::Instant)>>>,
    /// The company id, for tenants that add it to requests (`company_id_header`/`_query`).
    company_id: arc_swap::ArcSwapOption<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Detail {
    pub company_id: Option<String>,
    /// Whether `company_id` names a company or an organisation.
    pub resource: Option<crate::pleo::installation::Resource>,
    /// Pleo's status when it answered.
    pub status: Option<u16>,
    /// Why a check could not decide (no secret in it: our words and an error kind).
    pub reason: Option<String>,
    /// The installation's status and error code, as Pleo reports them.
    pub installation: Option<Status>,
    pub error_code: Option<String>,
    /// What an operator should know (an installation not active yet, a
    /// document that does not look as documented).
    pub note: Option<String>,
    /// The key works in this environment instead (the environment interlock).
    pub wrong_environment: Option<crate::config::Environment>,
}

impl KeyCheck {
    pub fn state(&self) -> CheckState {
        match self.state.load(Ordering::Relaxed) {
            1 => CheckState::Connected,
            2 => CheckState::Rejected,
            3 => CheckState::Unverified,
            4 => CheckState::Degraded,
            _ => CheckState::Pending,
        }
    }

    /// Whether the tenant's requests are refused (key rejected, installation
    /// inactive): a certain failure at Pleo is answered here instead.
    pub fn refuses(&self) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        s == CheckState::Rejected as u8 || s == CheckState::Degraded as u8
    }

    /// The 503 a refused tenant's requests get, saying why.
    pub fn refusal(&self, tenant: &str) -> GatewayError {
        let d = self.detail();
        let why = match (self.state(), d.installation, d.error_code.as_deref()) {
            (CheckState::Degraded, Some(status), Some(code)) => format!(
                "Pleo reports the installation of tenant `{tenant}` as {} ({code}: {}).",
                status.as_str(),
                explain_error_code(code)
            ),
            (CheckState::Degraded, Some(status), None) => {
                format!("Pleo reports the installation of tenant `{tenant}` as {}.", status.as_str())
            }
            _ => match (d.wrong_environment, &d.reason) {
                (Some(_), Some(why)) => format!("Pleo rejected tenant `{tenant}`'s API key: {why}."),
                _ => format!(
                    "Pleo rejected tenant `{tenant}`'s API key when the gateway checked it (GET /v1/installations/me)."
                ),
            },
        };
        GatewayError::new(ErrorCode::CredentialUnavailable).with_detail(why)
    }

    pub fn detail(&self) -> Detail {
        self.last.lock().expect("check lock").as_ref().map(|l| l.0.clone()).unwrap_or_default()
    }

    /// The company id the last check found, if any.
    pub fn company_id(&self) -> Option<Arc<String>> {
        self.company_id.load_full()
    }

    /// When Pleo was last asked about this key (`None`: never, a new or changed key).
    pub fn checked_at(&self) -> Option<std::time::Instant> {
        self.last.lock().expect("check lock").as_ref().map(|l| l.1)
    }

    /// Back-dates the last check (the schedule's tests).
    #[doc(hidden)]
    pub fn age_to(&self, at: std::time::Instant) {
        self.last.lock().expect("check lock").get_or_insert_with(|| Box::new((Detail::default(), at))).1 = at;
    }

    pub fn set(&self, state: CheckState, detail: Detail) {
        if detail.company_id.is_some() || state == CheckState::Rejected {
            self.company_id.store(detail.company_id.clone().map(Arc::new));
        }
        *self.last.lock().expect("check lock") = Some(Box::new((detail, std::time::Instant::now())));
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

/// [`check_key`] in the tenant's environment and, when Pleo rejects the key
/// there, once in the other environment: a key that works there is
/// reported as from the wrong environment ("this is a staging key; the
/// tenant is configured for production"). Only this check ever goes to the
/// other environment; traffic never does.
pub async fn check_key_interlocked(
    authorization: &HeaderValue,
    own: &Upstream,
    env: crate::config::Environment,
    other: &Upstream,
    other_env: crate::config::Environment,
) -> (CheckState, Detail) {
    let (state, mut detail) = check_key(authorization, own).await;
    if state == CheckState::Rejected {
        let (there, _) = check_key(authorization, other).await;
        if matches!(there, CheckState::Connected | CheckState::Degraded) {
            detail.reason = Some(format!(
                "this is a {} key; the tenant is configured for {} (a key works only in the environment that issued it)",
                other_env.as_str(),
                env.as_str()
            ));
            detail.wrong_environment = Some(other_env);
        }
    }
    (state, detail)
}

/// One line on a tenant that is not connected, for the log and `check --online`.
pub fn describe(state: CheckState, d: &Detail) -> String {
    match state {
        CheckState::Rejected => match &d.reason {
            Some(why) => format!("Pleo rejected the key ({}): {why}", d.status.unwrap_or_default()),
            None => format!("Pleo rejected the key ({})", d.status.unwrap_or_default()),
        },
        CheckState::Degraded => {
            let status = d.installation.map_or("unknown", Status::as_str);
            match d.error_code.as_deref() {
                Some(code) => format!("installation {status} ({code}: {})", explain_error_code(code)),
                None => format!("installation {status}"),
            }
        }
        _ => {
            let mut why = format!("could not verify the key: {}", d.reason.as_deref().unwrap_or("not checked"));
            if let Some(note) = &d.note {
                why.push_str(&format!(" ({note})"));
            }
            why
        }
    }
}

/// `GET /v1/installations/me` with `authorization` in `up`'s environment.
pub async fn check_key(authorization: &HeaderValue, up: &Upstream) -> (CheckState, Detail) {
    let (status, body) = match installation::call(up, Call::Show, authorization, USER_AGENT).await {
        Ok(answer) => answer,
        Err(e) => return (CheckState::Unverified, Detail { reason: Some(e.to_string()), ..Detail::default() }),
    };
    let detail = Detail { status: Some(status.as_u16()), ..Detail::default() };
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return (CheckState::Rejected, detail);
    }
    if !status.is_success() {
        return (CheckState::Unverified, Detail { reason: Some(format!("Pleo answered {status}")), ..detail });
    }
    let inst = installation::parse(&body);
    let mut detail = Detail {
        company_id: inst.company_id,
        resource: inst.resource,
        installation: Some(inst.status),
        error_code: inst.error_code,
        note: inst.note,
        ..detail
    };
    let state = match inst.status {
        Status::Activated => CheckState::Connected,
        Status::Authorized | Status::PendingIntegration => {
            let waiting = format!(
                "the installation is not active yet ({}): activate it with `pleo-gateway installation <tenant> activate`",
                inst.status.as_str()
            );
            detail.note = Some(match detail.note.take() {
                Some(n) => format!("{waiting}; {n}"),
                None => waiting,
            });
            CheckState::Connected
        }
        Status::Inactive | Status::Error => CheckState::Degraded,
        Status::Unknown => {
            detail.reason = Some("Pleo's installation document has no status the gateway knows".into());
            CheckState::Unverified
        }
    };
    (state, detail)
}
