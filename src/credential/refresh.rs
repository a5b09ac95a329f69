//! Managed OAuth: one session per tenant that keeps a valid access token on
//! hand for months without a person touching it.
//!
//! - Requests read the current token lock-free (`ArcSwap`); only a request
//!   that finds no usable token waits, and then for one shared refresh.
//! - One schedule (`schedule`) refreshes every session before expiry: margin = min(60 s, lifetime/5)
//!   plus jitter up to the margin again, so tenants started together spread
//!   over a whole margin (bench/refresh-storm.sh) and a 3-second token works
//!   like a 15-minute one.
//! - Single flight: every refresh runs under one lock per tenant and checks
//!   first whether another finished meanwhile. The refresh itself runs in a
//!   task of its own, so a caller that gives up (timeout, client gone) can
//!   never cancel it halfway and lose a rotated refresh token.
//! - The rotated refresh token is saved before the new access token is used.
//!   If saving fails, the new tokens stay in memory and saving is retried;
//!   the old refresh token is never sent again.
//! - `invalid_grant` stops the tenant (`reauthorization_required`) until its
//!   config or stored state changes; transient failures back off
//!   exponentially with jitter, capped, never in a tight loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::Mutex;

use super::oauth2::bearer;
pub use super::token_state::{Current, Status};
use crate::error::{ErrorCode, GatewayError};
pub use crate::metrics::RefreshMetrics;
use crate::pleo::token_endpoint::{Exchange, Grant, TokenError};
use crate::secret::Secret;
use crate::state::{fingerprint, unix_now_ms, Lease, Leased, StoreError, StoredToken, TokenStore};

const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How often a request waiting for a forced refresh looks at its outcome.
const FORCED_WAIT_POLL: Duration = Duration::from_millis(5);
/// How often a replica waiting for another's refresh reads the store.
const OTHER_REPLICA_POLL: Duration = Duration::from_millis(100);

/// What only the refresh in flight touches.
#[derive(Debug, Default)]
struct Flight {
    /// Refreshed tokens not yet saved. Saved before anything else happens.
    /// With the lease they were obtained under: if another replica has
    /// taken the lease since, its chain is newer and these must not land.
    /// Boxed: rare, and ~90 bytes inline in each of 50,000 sessions.
    pending: Option<Box<(StoredToken, Lease)>>,
    /// Fingerprint of a refresh token the endpoint answered invalid_grant to,
    /// in case marking it in the store failed: it is never sent again.
    dead: Option<Box<str>>,
    failures: u32,
}

/// What a session takes from the config; swapped whole on a reload. A
/// refresh reads it once, so it never mixes two configs.
#[derive(Debug)]
struct Settings {
    endpoint: Arc<dyn Exchange>,
    /// The config's `refresh_token` and its fingerprint.
    initial: Option<(Secret, String)>,
    /// Request bodies up to this size are kept for one retry after a 401.
    retry_body_bytes: usize,
    /// How long a request waits for a refresh.
    wait: Duration,
    /// A 401 forces at most one refresh this often, and none for a token
    /// younger than this.
    forced_interval: Duration,
    /// How long a refresh may hold the store's lease: a token call and a
    /// commit, with room to spare; past it another replica may take over.
    lease: Duration,
}

impl Settings {
    /// The same settings: every install of one app has them, so its
    /// sessions share one (`Common::share`).
    fn same(&self, other: &Settings) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.endpoint), Arc::as_ptr(&other.endpoint))
            && self.initial.is_none()
            && other.initial.is_none()
            && (self.retry_body_bytes, self.wait, self.forced_interval, self.lease)
                == (other.retry_body_bytes, other.wait, other.forced_interval, other.lease)
    }

    fn from(cfg: SessionConfig) -> Settings {
        Settings {
            endpoint: cfg.endpoint,
            initial: cfg.initial_refresh_token.map(|rt| {
                let fp = fingerprint(&rt);
                (rt, fp)
            }),
            retry_body_bytes: cfg.retry_body_bytes,
            wait: cfg.wait,
            forced_interval: cfg.forced_refresh_interval,
            lease: cfg.wait * 2,
        }
    }

    /// Whether the credentials differ: another token endpoint or client, or a new consent.
    fn credentials_differ(&self, other: &Settings) -> bool {
        self.endpoint.client_identity() != other.endpoint.client_identity()
            || self.initial.as_ref().map(|i| &i.1) != other.initial.as_ref().map(|i| &i.1)
    }
}

/// What every session of one process shares: held once, not in each of
/// 50,000 sessions (~200 bytes each with the settings).
pub struct Common {
    store: Arc<dyn TokenStore>,
    metrics: RefreshMetrics,
    /// How many refresh steps run at once (see [`REFRESH_STEPS`]).
    steps: Arc<tokio::sync::Semaphore>,
    /// Settings sessions have alike (no initial refresh token: every
    /// install of one app), each held by the sessions that use it.
    settings: std::sync::Mutex<Vec<std::sync::Weak<Settings>>>,
}

impl Common {
    pub fn new(store: Arc<dyn TokenStore>, metrics: RefreshMetrics, steps: Arc<tokio::sync::Semaphore>) -> Arc<Common> {
        Arc::new(Common { store, metrics, steps, settings: Default::default() })
    }

    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// `settings`, or the equal ones a session already has.
    fn share(&self, settings: Settings) -> Arc<Settings> {
        if settings.initial.is_some() {
            return Arc::new(settings);
        }
        let mut held = self.settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(same) = held.iter().filter_map(std::sync::Weak::upgrade).find(|h| h.same(&settings)) {
            return same;
        }
        held.retain(|w| w.strong_count() > 0);
        let made = Arc::new(settings);
        held.push(Arc::downgrade(&made));
        made
    }
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common").finish_non_exhaustive()
    }
}

/// One OAuth tenant's token lifecycle.
pub struct OAuthSession {
    /// The routing table's name for the tenant (one allocation for both).
    pub tenant: Arc<str>,
    settings: ArcSwap<Settings>,
    common: Arc<Common>,
    current: ArcSwap<Current>,
    flight: Mutex<Flight>,
    refreshing: AtomicBool,
    /// Itself, for waking the schedule from `&self`.
    me: std::sync::Weak<OAuthSession>,
    /// The schedule of background refreshes (`schedule`), once driven;
    /// never for a dry run's sessions.
    wakes: std::sync::OnceLock<super::schedule::Wakes>,
    /// The number of its live entry in the schedule.
    pub(super) scheduled: std::sync::atomic::AtomicU64,
    /// The tenant left the config: no background refresh.
    retired: AtomicBool,
    /// The gateway is stopping: no refresh starts any more.
    stopping: AtomicBool,
    /// When a 401 last forced a refresh.
    /// When a 401 last forced a refresh, and the epoch it found: until the
    /// epoch moves on, that refresh has not finished.
    last_forced: std::sync::Mutex<Option<(Instant, u64)>>,
    /// The span of the last refresh, for requests that waited on it to link
    /// to (only with traces exported).
    /// Boxed: set only with traces exported (~60 bytes a session otherwise).
    refresh_span: std::sync::Mutex<Option<Box<opentelemetry::trace::SpanContext>>>,
}

/// Refresh steps (a store lease, maybe a token call, a commit) running at
/// once across all tenants. A start with 50,000 OAuth installs began all of
/// them together: 50,000 lease futures waited for the store's connection
/// pool, 168 MB at the peak. Past this many, a step waits for a free one
/// while holding only its tenant's flight lock.
pub const REFRESH_STEPS: usize = 64;

// Holds secrets (the initial refresh token, the bearer value): say only where it stands.
impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSession")
            .field("tenant", &self.tenant)
            .field("status", &self.current.load().status)
            .finish_non_exhaustive()
    }
}

/// What a session needs from the config.
#[derive(Debug)]
pub struct SessionConfig {
    pub tenant: Arc<str>,
    pub endpoint: Arc<dyn Exchange>,
    pub initial_refresh_token: Option<Secret>,
    pub retry_body_bytes: usize,
    pub wait: Duration,
    pub forced_refresh_interval: Duration,
}

impl OAuthSession {
    /// A session in `Starting`; `drive` it to have it load and refresh.
    pub fn new(cfg: SessionConfig, common: Arc<Common>) -> Arc<OAuthSession> {
        let now = Instant::now();
        let tenant = cfg.tenant.clone();
        let settings = common.share(Settings::from(cfg));
        Arc::new_cyclic(|me| OAuthSession {
            tenant,
            settings: ArcSwap::new(settings),
            common,
            current: ArcSwap::from_pointee(Current { next_at: now, ..Current::blocked(Status::Starting, now) }),
            flight: Mutex::new(Flight::default()),
            refreshing: AtomicBool::new(false),
            me: me.clone(),
            wakes: std::sync::OnceLock::new(),
            scheduled: std::sync::atomic::AtomicU64::new(0),
            retired: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            last_forced: std::sync::Mutex::new(None),
            refresh_span: std::sync::Mutex::new(None),
        })
    }

    /// Request bodies up to this size are kept for one retry after a 401.
    pub fn retry_body_bytes(&self) -> usize {
        self.settings.load().retry_body_bytes
    }

    /// A reload: takes the new settings. If the credentials changed and the
    /// tenant is not connected (waiting for an operator, or backing off), it
    /// tries again now instead of at its next re-check. Also revives a
    /// session retired by an earlier reload.
    pub fn reconfigure(self: &Arc<Self>, cfg: SessionConfig) {
        let next = self.common.share(Settings::from(cfg));
        let differ = self.settings.load().credentials_differ(&next);
        self.settings.store(next);
        if self.retired.swap(false, Ordering::AcqRel) {
            self.changed();
        }
        if differ && self.current.load().status != Status::Connected {
            tracing::info!(tenant = %self.tenant, "OAuth credentials changed in the config; trying them now");
            let this = self.clone();
            let epoch = self.current.load().epoch;
            tokio::spawn(async move { this.refresh(epoch, None).await });
        }
    }

    /// The tenant left the config: stop refreshing in the background (the
    /// schedule skips it until the tenant comes back). The
    /// session itself is kept (by `Sessions`) so that if the tenant comes
    /// back it continues this chain: a second session could replay a token.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.changed();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// When the access token in use was obtained (the last refresh or
    /// consent), in Unix milliseconds; `None` before the first.
    pub fn obtained_at_ms(&self) -> Option<u64> {
        let ago = Instant::now().saturating_duration_since(self.current.load().obtained_at?);
        Some(crate::state::unix_now_ms().saturating_sub(ago.as_millis() as u64))
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// `refreshing` while a refresh is in flight, otherwise the status.
    pub fn state(&self) -> &'static str {
        if self.refreshing.load(Ordering::Relaxed) {
            "refreshing"
        } else {
            self.current.load().status.as_str()
        }
    }

    /// The `Authorization` value for a request now. Lock-free when a token is
    /// usable; otherwise waits (bounded) for one shared refresh.
    pub async fn authorization(self: &Arc<Self>) -> Result<HeaderValue, GatewayError> {
        let seen = {
            let cur = self.current.load();
            let now = Instant::now();
            if let Some(v) = cur.usable(now) {
                return Ok(v.clone());
            }
            // Backing off, or waiting for an operator: answer now, don't pile on.
            if now < cur.next_at {
                return Err(self.unavailable(cur.status));
            }
            cur.epoch
        };
        let wait = self.settings.load().wait;
        let _ = tokio::time::timeout(wait, self.refresh(seen, None)).await;
        let cur = self.current.load();
        cur.usable(Instant::now()).cloned().ok_or_else(|| self.unavailable(cur.status))
    }

    /// Pleo answered 401 to `rejected`. Returns the token to retry with:
    /// one a refresh (or another request) already put in its place, or a
    /// new one from a refresh this 401 forces. `Ok(None)`: no retry, Pleo's
    /// answer stands.
    ///
    /// A 401 is not proof that the token is bad (an endpoint may answer 401
    /// for its own reasons, and clients choose which endpoints they call),
    /// while every refresh rotates the refresh token. So a 401 forces a
    /// refresh only when the rejected token is the current one, is older than
    /// `forced_refresh_interval`, and the tenant had no forced refresh within
    /// that interval; requests that find a forced refresh running wait for it.
    pub async fn after_rejection(
        self: &Arc<Self>,
        rejected: &HeaderValue,
    ) -> Result<Option<HeaderValue>, GatewayError> {
        let now = Instant::now();
        let settings = self.settings.load_full();
        let seen = {
            let cur = self.current.load();
            match cur.usable(now) {
                // Someone already replaced the rejected token.
                Some(v) if v != rejected => return Ok(Some(v.clone())),
                Some(_) if cur.obtained_at.is_some_and(|t| now.duration_since(t) < settings.forced_interval) => {
                    self.common.metrics.suppressed_fresh.inc();
                    return Ok(None);
                }
                _ => cur.epoch,
            }
        };
        let (allowed, forced_at_epoch) = {
            let mut last = self.last_forced.lock().unwrap_or_else(|p| p.into_inner());
            let allowed = last.is_none_or(|(l, _)| now.duration_since(l) >= settings.forced_interval);
            if allowed {
                *last = Some((now, seen));
            }
            (allowed, last.map(|(_, e)| e))
        };
        if !allowed {
            // A forced refresh ran lately or is running: wait until the one
            // in flight has finished (never start one) and use what it brought.
            let deadline = Instant::now() + settings.wait;
            while forced_at_epoch == Some(self.current.load().epoch) && Instant::now() < deadline {
                let _ = tokio::time::timeout(FORCED_WAIT_POLL, self.flight.lock()).await;
                tokio::time::sleep(FORCED_WAIT_POLL).await;
            }
            self.link_to_refresh();
            let cur = self.current.load();
            return match cur.usable(Instant::now()) {
                Some(v) if v != rejected => Ok(Some(v.clone())),
                _ => {
                    self.common.metrics.suppressed_rate.inc();
                    Ok(None)
                }
            };
        }
        let _ = tokio::time::timeout(settings.wait, self.refresh(seen, Some(rejected.clone()))).await;
        let cur = self.current.load();
        match cur.usable(Instant::now()) {
            Some(v) if v != rejected => Ok(Some(v.clone())),
            _ => Err(self.unavailable(cur.status)),
        }
    }

    /// Shutdown: no refresh starts from now on, and the one in flight (if
    /// any) is finished and its rotated token stored before this returns.
    /// Pleo commits a rotation whether or not we are still listening, so
    /// abandoning a refresh halfway would leave only the old, now retired,
    /// refresh token on disk; presenting it after a restart revokes the
    /// customer's consent.
    pub async fn finish(&self) {
        self.stop_refreshing();
        drop(self.flight.lock().await);
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn stop_refreshing(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn unavailable(&self, status: Status) -> GatewayError {
        GatewayError::new(ErrorCode::CredentialUnavailable).with_detail(status.explain(&self.tenant))
    }

    /// Runs one refresh step unless another finished since `seen`. Spawned,
    /// so the caller may stop waiting without cancelling it.
    pub(super) async fn refresh(self: &Arc<Self>, seen: u64, rejected: Option<HeaderValue>) {
        use tracing::Instrument;
        let this = self.clone();
        // With traces exported: the refresh is a span of its own, linked to
        // the request that started it; every request that waited links to it.
        let asked_by = crate::telemetry::current_context();
        let task = tokio::spawn(async move {
            let mut flight = this.flight.lock().await;
            let cur = this.current.load_full();
            if cur.epoch != seen || this.stopping.load(Ordering::Acquire) {
                return;
            }
            // Closed only if the semaphore is dropped, which it never is.
            let Ok(_step) = this.common.steps.acquire().await else { return };
            if this.stopping.load(Ordering::Acquire) {
                return;
            }
            this.refreshing.store(true, Ordering::Relaxed);
            let span = crate::telemetry::background_span("oauth refresh", &this.tenant, asked_by);
            if let Some(cx) = crate::telemetry::context_of(&span) {
                *this.refresh_span.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(cx));
            }
            crate::telemetry::set_attribute(&span, "pleo_gateway.forced", rejected.is_some());
            let mut next = this.step(&mut flight, &cur, rejected.as_ref()).instrument(span.clone()).await;
            crate::telemetry::set_attribute(&span, "pleo_gateway.oauth.status", next.status.as_str());
            drop(span);
            next.epoch = cur.epoch + 1;
            if next.status != cur.status {
                this.log_transition(cur.status, &next);
            }
            this.current.store(Arc::new(next));
            this.refreshing.store(false, Ordering::Relaxed);
            this.changed();
        });
        let _ = task.await;
        self.link_to_refresh();
    }

    /// Links the current request's span to the refresh it waited on.
    fn link_to_refresh(&self) {
        if crate::telemetry::enabled() {
            let last = self.refresh_span.lock().unwrap_or_else(|p| p.into_inner()).as_deref().cloned();
            crate::telemetry::link_current(last);
        }
    }

    fn log_transition(&self, from: Status, to: &Current) {
        let (tenant, from, status) = (&*self.tenant, from.as_str(), to.status.as_str());
        match to.status {
            Status::Connected => tracing::info!(tenant, from, status, "OAuth tenant connected"),
            Status::ReauthorizationRequired | Status::NotConnected | Status::StateError | Status::ClientRejected => {
                tracing::error!(tenant, from, status, "OAuth tenant needs an operator: {}", to.status.explain(tenant))
            }
            _ => tracing::warn!(tenant, from, status, "OAuth tenant degraded"),
        }
    }

    /// The refresh state machine, under the flight lock and the store's
    /// lease, in four phases: tokens rotated but not yet saved go first;
    /// then the chain to refresh (stored, or a new consent from the config);
    /// a stored access token that is still good is used as it is; otherwise
    /// the token endpoint. Every path ends the lease: a commit or a release.
    async fn step(&self, flight: &mut Flight, cur: &Current, rejected: Option<&HeaderValue>) -> Current {
        let settings = self.settings.load_full();
        let tenant = &*self.tenant;
        // Phase 1: the old refresh token these replaced is retired; never
        // send it again. Committed under their own lease (fenced).
        if let Some((pending, lease)) = flight.pending.take().map(|p| *p) {
            return self.save_then_use(flight, cur, pending, lease).await;
        }
        let (lease, stored) = match self.common.store.lease(tenant, settings.lease).await {
            Ok(Leased::Held { lease, stored, interrupted }) => {
                if interrupted {
                    tracing::warn!(
                        tenant,
                        "a replica stopped in the middle of refreshing this tenant; the stored refresh token is \
                         tried once and Pleo's answer decides"
                    );
                }
                (lease, stored)
            }
            // Another replica is refreshing: wait for what it stores.
            Ok(Leased::Busy) => return self.wait_for_other(cur, &settings).await,
            Err(e) => return self.store_failed(flight, cur, &e),
        };
        let chain = match self.chain(flight, &settings, stored) {
            Ok(chain) => chain,
            Err(blocked) => {
                self.release(lease).await;
                return blocked;
            }
        };
        if let Some(view) = self.stored_still_good(flight, &chain, cur, rejected) {
            self.release(lease).await;
            return view;
        }
        self.refresh_chain(flight, cur, chain, &settings, lease).await
    }

    async fn release(&self, lease: Lease) {
        if let Err(e) = self.common.store.release(&self.tenant, lease).await {
            // It runs out by itself; until then other replicas wait for it.
            tracing::warn!(tenant = %self.tenant, error = %e, "cannot release the refresh lease");
        }
    }

    /// The store failed before anything was asked of Pleo. A shared store
    /// that does not answer leaves the current token in use while it is
    /// valid and is tried again with backoff; a file that cannot be read is
    /// an operator's matter.
    fn store_failed(&self, flight: &mut Flight, cur: &Current, e: &StoreError) -> Current {
        let tenant = &*self.tenant;
        if let StoreError::Unavailable(_) = e {
            flight.failures += 1;
            let wait = backoff(flight.failures);
            tracing::warn!(tenant, error = %e, retry_in = ?wait, "the token store is unreachable");
            return cur.failing(Status::StoreUnavailable, Instant::now() + wait);
        }
        tracing::error!(tenant, error = %e, "cannot read the OAuth token state");
        Current::blocked(Status::StateError, Instant::now())
    }

    /// Another replica holds the lease: polls the store (bounded by the
    /// request wait) until it stores a token, and uses that one.
    async fn wait_for_other(&self, cur: &Current, settings: &Settings) -> Current {
        let deadline = Instant::now() + settings.wait;
        loop {
            tokio::time::sleep(OTHER_REPLICA_POLL).await;
            let now = Instant::now();
            if let Ok(Some(stored)) = self.common.store.load(&self.tenant).await {
                if stored.reauthorization_required {
                    return Current::blocked(Status::ReauthorizationRequired, now);
                }
                let view = self.connected(&stored, now);
                if view.usable(now).is_some_and(|v| Some(v) != cur.authorization.as_ref()) && now < view.next_at {
                    return view;
                }
            }
            if now >= deadline || self.stopping.load(Ordering::Acquire) {
                // Try again soon: the lease may have run out by then.
                return Current { next_at: now + OTHER_REPLICA_POLL, ..cur.clone() };
            }
        }
    }

    /// The view of what is stored now (after a refused commit, or when
    /// another replica announced a change).
    async fn view_of_stored(&self, cur: &Current) -> Current {
        let now = Instant::now();
        match self.common.store.load(&self.tenant).await {
            Ok(Some(s)) if s.reauthorization_required => Current::blocked(Status::ReauthorizationRequired, now),
            Ok(Some(s)) => self.connected(&s, now),
            Ok(None) => Current::blocked(Status::NotConnected, now),
            Err(_) => cur.failing(Status::StoreUnavailable, now + OTHER_REPLICA_POLL),
        }
    }

    /// A new consent made here (a connect link's OAuth callback): saved
    /// before use, exactly as a refresh's tokens are, replacing the chain.
    /// Waits for a refresh in flight, whose tokens belong to the old chain
    /// and are dropped; the store's save also fences other replicas' leases.
    pub async fn new_consent(self: &Arc<Self>, stored: StoredToken) -> Result<(), StoreError> {
        let mut flight = self.flight.lock().await;
        self.common.store.save(&self.tenant, &stored).await?;
        flight.pending = None;
        flight.dead = None;
        flight.failures = 0;
        let cur = self.current.load_full();
        let next = Current { epoch: cur.epoch + 1, ..self.connected(&stored, Instant::now()) };
        if next.status != cur.status {
            self.log_transition(cur.status, &next);
        }
        self.current.store(Arc::new(next));
        drop(flight);
        self.changed();
        Ok(())
    }

    /// The customer's connection is removed (`DELETE /api/tenants/{t}/connection`):
    /// the stored chain is marked as needing a new consent, so no replica
    /// refreshes it again, and requests get 503 until a new link is used.
    pub async fn disconnect(self: &Arc<Self>) -> Result<(), StoreError> {
        let flight = self.flight.lock().await;
        if let Some(stored) = self.common.store.load(&self.tenant).await? {
            self.common.store.save(&self.tenant, &stored.needing_reauthorization()).await?;
        }
        let cur = self.current.load_full();
        let next =
            Current { epoch: cur.epoch + 1, ..Current::blocked(Status::ReauthorizationRequired, Instant::now()) };
        self.log_transition(cur.status, &next);
        self.current.store(Arc::new(next));
        drop(flight);
        self.changed();
        Ok(())
    }

    /// The config's initial refresh token's fingerprint, if it has one: a
    /// new consent marks it seen so it is not imported over the new chain.
    pub fn initial_fingerprint(&self) -> Option<String> {
        self.settings.load().initial.as_ref().map(|(_, fp)| fp.clone())
    }

    /// The epoch now: `adopt` takes up what was read after it only if
    /// nothing happened here in between.
    pub fn epoch(&self) -> u64 {
        self.current.load().epoch
    }

    /// Another replica changed this tenant's stored state (a refresh, a new
    /// consent, `reauthorization_required`), read as `stored` at `epoch`:
    /// take it up without asking Pleo. Waits for a refresh in flight here;
    /// if one ran since the read, it read the store itself and this is moot.
    pub async fn adopt(self: &Arc<Self>, stored: StoredToken, epoch: u64) {
        let flight = self.flight.lock().await;
        if flight.pending.is_some() || self.stopping.load(Ordering::Acquire) {
            return;
        }
        let cur = self.current.load_full();
        if cur.epoch != epoch {
            return;
        }
        let now = Instant::now();
        let next = if stored.reauthorization_required {
            if cur.status == Status::ReauthorizationRequired {
                return;
            }
            Current::blocked(Status::ReauthorizationRequired, now)
        } else {
            let view = self.connected(&stored, now);
            let newer = view.expires_at > cur.expires_at || cur.usable(now).is_none();
            if view.usable(now).is_none() || view.authorization == cur.authorization || !newer {
                return;
            }
            view
        };
        let next = Current { epoch: cur.epoch + 1, ..next };
        if next.status != cur.status {
            self.log_transition(cur.status, &next);
        }
        self.current.store(Arc::new(next));
        drop(flight);
        self.changed();
    }

    /// Phase 2, the chain to continue: what is stored (it may have changed
    /// under us through `connect`, an operator restoring a backup, another
    /// replica), unless the config holds a refresh token the stored chain was
    /// not imported from, which is a new consent that replaces it.
    fn chain(&self, flight: &Flight, settings: &Settings, stored: Option<StoredToken>) -> Result<StoredToken, Current> {
        let (tenant, now) = (&*self.tenant, Instant::now());
        let chain = match (&settings.initial, stored) {
            (Some((rt, fp)), s) if s.as_ref().and_then(|s| s.imported_from.as_deref()) != Some(fp.as_str()) => {
                // Names the key, never its value (tests/it/oauth.rs searches the
                // captured logs for INITIAL_RT and SECOND_CONSENT_RT).
                tracing::info!(tenant, "importing the refresh_token from the config (new consent)");
                StoredToken::imported(rt.clone(), fp.clone())
            }
            (_, Some(s)) => s,
            (_, None) => return Err(Current::blocked(Status::NotConnected, now)),
        };
        let dead = flight.dead.as_deref() == Some(fingerprint(&chain.refresh_token).as_str());
        if chain.reauthorization_required || dead {
            return Err(Current::blocked(Status::ReauthorizationRequired, now));
        }
        Ok(chain)
    }

    /// Phase 3: a stored access token other than the one in hand, still good, is
    /// used as is (after a restart, or tokens `connect` just stored), unless
    /// Pleo has just rejected that very token.
    fn stored_still_good(
        &self,
        flight: &mut Flight,
        chain: &StoredToken,
        cur: &Current,
        rejected: Option<&HeaderValue>,
    ) -> Option<Current> {
        let now = Instant::now();
        let view = self.connected(chain, now);
        let v = view.usable(now)?;
        if now < view.next_at && Some(v) != cur.authorization.as_ref() && Some(v) != rejected {
            flight.failures = 0;
            return Some(view);
        }
        None
    }

    /// Phase 4: ask the token endpoint, and act on its answer. Recorded in
    /// the store as in flight first: a replica that takes the lease over
    /// after this one died knows the stored token may be spent.
    async fn refresh_chain(
        &self,
        flight: &mut Flight,
        cur: &Current,
        chain: StoredToken,
        settings: &Settings,
        lease: Lease,
    ) -> Current {
        let tenant = &*self.tenant;
        if let Err(e) = self.common.store.mark_in_flight(tenant, lease).await {
            tracing::warn!(tenant, error = %e, "cannot record the refresh in the token store; not refreshing now");
            self.release(lease).await;
            return self.store_failed(flight, cur, &e);
        }
        let issued_ms = unix_now_ms();
        let started = Instant::now();
        let result = settings.endpoint.exchange(Grant::Refresh(&chain.refresh_token)).await;
        self.common.metrics.duration.observe(started.elapsed().as_secs_f64());
        let now = Instant::now();
        match result {
            Ok(tokens) => {
                self.common.metrics.success.inc();
                tracing::debug!(tenant, expires_in = ?tokens.expires_in, "refreshed the OAuth access token");
                self.save_then_use(flight, cur, tokens.rotate(chain, issued_ms), lease).await
            }
            Err(TokenError::InvalidGrant) => {
                self.common.metrics.failure.inc();
                flight.dead = Some(fingerprint(&chain.refresh_token).into());
                if let Err(e) = self.common.store.commit(tenant, lease, &chain.needing_reauthorization()).await {
                    tracing::error!(tenant, error = %e, "cannot record reauthorization_required in the token state");
                }
                Current::blocked(Status::ReauthorizationRequired, now)
            }
            Err(e) => {
                self.common.metrics.failure.inc();
                flight.failures += 1;
                let wait = backoff(flight.failures);
                tracing::warn!(tenant, error = %e, retry_in = ?wait, "OAuth token refresh failed");
                self.release(lease).await;
                let status = if matches!(e, TokenError::ClientRejected(_)) {
                    Status::ClientRejected
                } else {
                    Status::RefreshFailing
                };
                cur.failing(status, now + wait)
            }
        }
    }

    /// Saves rotated tokens, and only then makes them the ones requests use.
    /// If saving fails they are kept in memory (`pending`) for the next try.
    async fn save_then_use(&self, flight: &mut Flight, cur: &Current, tokens: StoredToken, lease: Lease) -> Current {
        let tenant = &*self.tenant;
        match self.common.store.commit(tenant, lease, &tokens).await {
            Ok(()) => {
                flight.failures = 0;
                self.connected(&tokens, Instant::now())
            }
            Err(StoreError::Fenced) => {
                // Another replica took the lease after ours ran out and its
                // chain is the stored one: ours must not overwrite it.
                tracing::error!(tenant, "{}", StoreError::Fenced);
                self.view_of_stored(cur).await
            }
            Err(e) => {
                tracing::error!(tenant, error = %e, "cannot save the rotated OAuth token; keeping it in memory");
                flight.pending = Some(Box::new((tokens, lease)));
                flight.failures += 1;
                cur.failing(Status::PersistFailed, Instant::now() + backoff(flight.failures))
            }
        }
    }

    /// The view of a stored chain: its access token (if any) and when to
    /// refresh it.
    fn connected(&self, t: &StoredToken, now: Instant) -> Current {
        let (Some(token), Some(issued), Some(expires)) =
            (&t.access_token, t.access_issued_at_ms, t.access_expires_at_ms)
        else {
            // Only a refresh token: refresh right away.
            return Current { next_at: now, ..Current::blocked(Status::Connected, now) };
        };
        let lifetime = Duration::from_millis(expires.saturating_sub(issued));
        let expires_at = now + Duration::from_millis(expires.saturating_sub(unix_now_ms()));
        let margin = (lifetime / 5).min(Duration::from_secs(60));
        let jitter = margin.mul_f64(random_unit());
        // Stop using a token a little before it expires: it must still be
        // valid when the request reaches Pleo.
        let skew = (lifetime / 10).min(Duration::from_secs(5));
        let age = Duration::from_millis(unix_now_ms().saturating_sub(issued));
        Current {
            epoch: 0,
            status: Status::Connected,
            obtained_at: Some(now.checked_sub(age).unwrap_or(now)),
            authorization: Some(bearer(token)),
            expires_at: Some(expires_at),
            usable_until: Some(expires_at.checked_sub(skew).unwrap_or(now)),
            next_at: expires_at.checked_sub(margin + jitter).unwrap_or(now),
        }
    }

    /// Has the schedule (`schedule`) refresh it in the background from now
    /// on: loaded first, then before each expiry, with retries.
    pub(super) fn drive(&self, wakes: super::schedule::Wakes) {
        if self.wakes.set(wakes).is_ok() {
            self.changed();
        }
    }

    /// Its state or settings changed: the schedule plans it again.
    pub(super) fn changed(&self) {
        if let (Some(wakes), Some(me)) = (self.wakes.get(), self.me.upgrade()) {
            // Closed only once the gateway stops, when nothing is planned any more.
            let _ = wakes.send(me);
        }
    }
}

/// Exponential backoff with jitter: 250 ms, 500 ms, 1 s ... capped at 30 s,
/// each scaled by a random factor in [0.5, 1].
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(BACKOFF_CAP);
    exp.mul_f64(0.5 + random_unit() / 2.0)
}

/// A uniform number in [0, 1) for jitter (not for secrets).
fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};
    use crate::sandbox::{OAuthClient, Sandbox, SandboxSpec};
    use crate::state::{FileStore, StoreFuture};
    use crate::upstream::Upstreams;

    /// A file store whose saves fail while `fail` is set (a full disk, a
    /// read-only mount).
    #[derive(Debug)]
    struct Flaky {
        inner: FileStore,
        fail: AtomicBool,
    }

    impl TokenStore for Flaky {
        fn load<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
            self.inner.load(tenant)
        }
        fn save<'a>(&'a self, tenant: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()> {
            if self.fail.load(Ordering::SeqCst) {
                let path = self.inner.path(tenant);
                let source = std::io::Error::other("disk full");
                return Box::pin(async move { Err(crate::state::StoreError::Unwritable { path, source }) });
            }
            self.inner.save(tenant, token)
        }
    }

    #[tokio::test]
    async fn a_rotated_token_that_cannot_be_saved_is_kept_and_never_replayed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let spec = SandboxSpec::new(Environment::Production).oauth_client(OAuthClient {
            client_id: "c1".into(),
            client_secret: Secret::new("client-secret-value"),
            company_id: "company-1".into(),
            refresh_tokens: vec![Secret::new("rt_initial_value_1234")],
        });
        let sandbox = Sandbox::spawn(listener, spec, None);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://{}", sandbox.addr);
        let yaml = format!("environments:\n  staging: {{ base_url: {url} }}\n  production: {{ base_url: {url}, token_url: {url}/oauth/token }}\n");
        let config = Config::from_yaml(&yaml, &dir.path().join("g.yaml")).unwrap();
        let client = Upstreams::build(&config).unwrap().get(Environment::Production).client().clone();
        let token_url = config.environments[&Environment::Production].token_url.clone();
        let endpoint = Arc::new(crate::pleo::token_endpoint::TokenEndpoint::new(
            token_url,
            "c1",
            &Secret::new("client-secret-value"),
            client,
            Duration::from_secs(5),
        ));
        let store = Arc::new(Flaky { inner: FileStore::new(dir.path()), fail: AtomicBool::new(true) });
        let metrics = crate::metrics::Metrics::register(&prometheus::Registry::new(), false).unwrap();
        let cfg = SessionConfig {
            tenant: "t1".into(),
            endpoint,
            initial_refresh_token: Some(Secret::new("rt_initial_value_1234")),
            retry_body_bytes: 0,
            wait: Duration::from_secs(5),
            forced_refresh_interval: Duration::from_secs(10),
        };
        let steps = Arc::new(tokio::sync::Semaphore::new(REFRESH_STEPS));
        let session = OAuthSession::new(cfg, Common::new(store.clone(), metrics.refresh_metrics(), steps));

        let e = session.authorization().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::CredentialUnavailable);
        assert_eq!(session.current().status, Status::PersistFailed);
        assert_eq!(sandbox.token_stats().refreshes, 1);

        // The disk recovers; after the backoff the kept tokens are saved and used.
        store.fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = session.authorization().await.unwrap();
        assert_eq!(session.current().status, Status::Connected);
        assert_eq!(sandbox.token_stats().refreshes, 1, "no second refresh: the kept tokens were used");
        let stored = store.inner.load_blocking("t1").unwrap().unwrap();
        assert!(sandbox.is_live_refresh_token(stored.refresh_token.expose_secret()));
        assert_eq!(v.to_str().unwrap(), format!("Bearer {}", stored.access_token.unwrap().expose_secret()));
        assert_eq!(sandbox.token_stats().reuse_detected, 0);
        sandbox.shutdown().await;
    }

    // === the state machine against a scripted token endpoint ===

    use crate::pleo::token_endpoint::Tokens;
    use std::sync::Mutex as StdMutex;

    /// A token endpoint that answers from a script and records what it was sent.
    #[derive(Debug, Default)]
    struct Scripted {
        answers: StdMutex<Vec<Result<Tokens, TokenError>>>,
        presented: StdMutex<Vec<String>>,
    }

    impl Scripted {
        fn answering(answers: Vec<Result<Tokens, TokenError>>) -> Arc<Scripted> {
            Arc::new(Scripted { answers: StdMutex::new(answers.into_iter().rev().collect()), ..Default::default() })
        }
        fn calls(&self) -> usize {
            self.presented.lock().unwrap().len()
        }
    }

    impl Exchange for Scripted {
        fn exchange<'a>(
            &'a self,
            grant: Grant<'a>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Tokens, TokenError>> + Send + 'a>> {
            if let Grant::Refresh(rt) = grant {
                self.presented.lock().unwrap().push(rt.expose_secret().to_string());
            }
            let next = self.answers.lock().unwrap().pop().unwrap_or(Err(TokenError::Transient("script ended".into())));
            Box::pin(std::future::ready(next))
        }
        fn client_identity(&self) -> String {
            "scripted".into()
        }
    }

    fn tokens(n: u32) -> Result<Tokens, TokenError> {
        Ok(Tokens {
            access_token: Secret::new(format!("at_scripted_{n}")),
            refresh_token: Some(Secret::new(format!("rt_scripted_{n}"))),
            expires_in: Duration::from_secs(900),
        })
    }

    fn session(endpoint: Arc<Scripted>, dir: &std::path::Path, interval: Duration) -> Arc<OAuthSession> {
        let metrics = crate::metrics::Metrics::register(&prometheus::Registry::new(), false).unwrap();
        let cfg = SessionConfig {
            tenant: "t1".into(),
            endpoint,
            initial_refresh_token: Some(Secret::new("rt_initial_scripted")),
            retry_body_bytes: 0,
            wait: Duration::from_secs(5),
            forced_refresh_interval: interval,
        };
        let steps = Arc::new(tokio::sync::Semaphore::new(REFRESH_STEPS));
        OAuthSession::new(cfg, Common::new(Arc::new(FileStore::new(dir)), metrics.refresh_metrics(), steps))
    }

    /// Every install of one app has the same settings: its sessions hold
    /// one copy. A session with its own initial refresh token, another
    /// endpoint, or a reload to other settings has its own.
    #[test]
    fn sessions_with_the_same_settings_share_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = crate::metrics::Metrics::register(&prometheus::Registry::new(), false).unwrap();
        let steps = Arc::new(tokio::sync::Semaphore::new(REFRESH_STEPS));
        let common = Common::new(Arc::new(FileStore::new(dir.path())), metrics.refresh_metrics(), steps);
        let (app, other) = (Scripted::answering(vec![]), Scripted::answering(vec![]));
        let cfg = |tenant: &str, endpoint: &Arc<Scripted>, initial: Option<&str>| SessionConfig {
            tenant: tenant.into(),
            endpoint: endpoint.clone(),
            initial_refresh_token: initial.map(Secret::new),
            retry_body_bytes: 0,
            wait: Duration::from_secs(5),
            forced_refresh_interval: Duration::from_secs(10),
        };
        let a = OAuthSession::new(cfg("a", &app, None), common.clone());
        let b = OAuthSession::new(cfg("b", &app, None), common.clone());
        let own = OAuthSession::new(cfg("c", &app, Some("rt_initial_c")), common.clone());
        let elsewhere = OAuthSession::new(cfg("d", &other, None), common.clone());
        let settings = |s: &OAuthSession| s.settings.load_full();
        assert!(Arc::ptr_eq(&settings(&a), &settings(&b)), "one app's installs share");
        assert!(!Arc::ptr_eq(&settings(&a), &settings(&own)), "an initial refresh token is the session's own");
        assert!(!Arc::ptr_eq(&settings(&a), &settings(&elsewhere)), "another token endpoint");
        assert_eq!(&*a.tenant, "a");

        // A reload gives b other settings; a keeps its own, unchanged.
        let mut changed = cfg("b", &app, None);
        changed.retry_body_bytes = 1024;
        let before = settings(&a);
        b.settings.store(common.share(Settings::from(changed)));
        assert_eq!(b.retry_body_bytes(), 1024);
        assert_eq!(a.retry_body_bytes(), 0);
        assert!(Arc::ptr_eq(&settings(&a), &before));
    }

    #[tokio::test]
    async fn the_rotated_token_is_stored_before_its_access_token_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Scripted::answering(vec![tokens(1)]);
        let s = session(endpoint.clone(), dir.path(), Duration::from_secs(10));
        let v = s.authorization().await.unwrap();
        assert_eq!(v, "Bearer at_scripted_1");
        let stored = FileStore::new(dir.path()).load_blocking("t1").unwrap().unwrap();
        assert_eq!(stored.refresh_token.expose_secret(), "rt_scripted_1");
        assert_eq!(*endpoint.presented.lock().unwrap(), ["rt_initial_scripted"]);
        // Still good: no second call.
        s.authorization().await.unwrap();
        assert_eq!(endpoint.calls(), 1);
    }

    #[tokio::test]
    async fn invalid_grant_marks_the_chain_and_the_endpoint_is_not_called_again() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Scripted::answering(vec![Err(TokenError::InvalidGrant)]);
        let s = session(endpoint.clone(), dir.path(), Duration::from_secs(10));
        let e = s.authorization().await.unwrap_err();
        assert!(e.to_string().contains("consent must be"), "{e}");
        assert_eq!(s.current().status, Status::ReauthorizationRequired);
        assert!(FileStore::new(dir.path()).load_blocking("t1").unwrap().unwrap().reauthorization_required);
        tokio::time::sleep(super::super::token_state::RECHECK + Duration::from_millis(50)).await;
        let _ = s.authorization().await;
        assert_eq!(endpoint.calls(), 1, "a dead chain is never presented again");
    }

    #[tokio::test]
    async fn a_transient_failure_backs_off_instead_of_retrying_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Scripted::answering(vec![Err(TokenError::Transient("503".into())), tokens(2)]);
        let s = session(endpoint.clone(), dir.path(), Duration::from_secs(10));
        assert!(s.authorization().await.is_err());
        assert_eq!(s.current().status, Status::RefreshFailing);
        // Asked again at once: answered from the backoff, no second call.
        assert!(s.authorization().await.is_err());
        assert_eq!(endpoint.calls(), 1);
        tokio::time::sleep(BACKOFF_BASE + Duration::from_millis(50)).await;
        assert_eq!(s.authorization().await.unwrap(), "Bearer at_scripted_2");
        assert_eq!(endpoint.calls(), 2);
    }

    #[tokio::test]
    async fn a_401_for_a_fresh_token_does_not_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Scripted::answering(vec![tokens(1), tokens(2)]);
        let s = session(endpoint.clone(), dir.path(), Duration::from_secs(10));
        let v = s.authorization().await.unwrap();
        assert_eq!(s.after_rejection(&v).await.unwrap(), None, "Pleo's 401 stands");
        assert_eq!(endpoint.calls(), 1);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for n in 1..40 {
            let b = backoff(n);
            let exp = BACKOFF_BASE.saturating_mul(1 << (n - 1).min(16)).min(BACKOFF_CAP);
            assert!(b >= exp / 2 && b <= exp, "{n}: {b:?}");
        }
        assert!(backoff(30) <= BACKOFF_CAP);
    }
}
