//! What a client connection has been doing, and when it must end.
//!
//! Four bounds apply to every connection, and one timer per connection
//! enforces them all:
//! - the first request must begin within `header_read_timeout` of accept
//!   (a client that never sends one, or stops after the h2 preface);
//! - an HTTP/1 request head must be complete within `header_read_timeout`
//!   of its first byte (a slowloris);
//! - a connection with no open request for `idle_timeout` is closed
//!   gracefully (HTTP/1: closed; HTTP/2: GOAWAY);
//! - writes to a client that stopped reading may pend for at most
//!   `response_write_timeout`.
//!
//! hyper's own header read timeout is off: it starts as soon as a response
//! is written, so it also closed idle keep-alive connections after
//! `header_read_timeout` instead of `idle_timeout`, and it armed and
//! disarmed a boxed timer for every request. Here, the request path only
//! stores a few timestamps in atomics ([`Watched`](super::watched::Watched)
//! notes reads and pending writes, [`Counted`] notes requests). The
//! connection's timer asks [`Activity::next`] what is due when it fires,
//! and is set so that it can never fire late: any deadline an event creates
//! after a check lies at least the shortest bound after that check.
//!
//! A request counts as open from the call until its response body has been
//! sent or dropped, so a slow download or a long wait for Pleo is never
//! "idle".

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

use super::ServeOptions;
use crate::tls::ClientCertNames;

/// Times are milliseconds since `base` plus one, so 0 can mean "none".
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Requests open now.
    open: AtomicUsize,
    /// Whether any request began on this connection.
    began: AtomicBool,
    /// When the last request ended.
    last_end: AtomicU64,
    /// When the first byte after the last request arrived, while no
    /// request was open: a request head is being read.
    head_since: AtomicU64,
    /// When writes started pending (0: they are not).
    stalled_since: AtomicU64,
    /// HTTP/2: bytes arrive between requests (pings, settings), so they do
    /// not start a head.
    multiplexed: AtomicBool,
    /// Chosen to close so that a new connection fits (`evict`).
    evicting: AtomicBool,
    /// Wakes the connection's task for `evict` (or keeps the wake-up for it
    /// until it waits, if it is still in its TLS handshake).
    evict: tokio::sync::Notify,
}

/// What the connection's timer should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing is due: check again then.
    CheckAt(Instant),
    /// No open request for `idle_timeout`: close gracefully.
    Idle,
    /// A bound was broken: drop the connection.
    Close(&'static str),
}

impl Activity {
    /// `base` is when the connection was accepted.
    pub fn new(base: Instant) -> Arc<Activity> {
        Arc::new(Activity {
            base,
            open: AtomicUsize::new(0),
            began: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            stalled_since: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        })
    }

    /// Since when the connection has been idle: no request open, no request
    /// head arriving, no write pending. `None` while it is busy, or once it
    /// was chosen to close.
    pub fn idle_since(&self) -> Option<Instant> {
        let busy = self.open.load(Ordering::Relaxed) > 0
            || self.head_since.load(Ordering::Relaxed) != 0
            || self.stalled_since.load(Ordering::Relaxed) != 0;
        if busy || self.evicting.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.at(self.last_end.load(Ordering::Relaxed)))
    }

    /// Asks the connection to close gracefully, to make room for a new one.
    pub fn evict(&self) {
        self.evicting.store(true, Ordering::Relaxed);
        self.evict.notify_one();
    }

    /// Resolves once `evict` was called.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    fn stamp(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, stamp: u64) -> Instant {
        self.base + Duration::from_millis(stamp.saturating_sub(1))
    }

    pub fn set_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
    }

    /// Bytes arrived from the client: with no request open on HTTP/1,
    /// they are the start of the next request's head.
    pub fn read_some(&self) {
        if self.open.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            self.head_since.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// A write to the client pends (the client is not reading).
    pub fn write_pending(&self) {
        if self.stalled_since.load(Ordering::Relaxed) == 0 {
            self.stalled_since.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// A write to the client went through.
    pub fn write_done(&self) {
        if self.stalled_since.load(Ordering::Relaxed) != 0 {
            self.stalled_since.store(0, Ordering::Relaxed);
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        if !self.began.load(Ordering::Relaxed) {
            self.began.store(true, Ordering::Relaxed);
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        if self.head_since.load(Ordering::Relaxed) != 0 {
            self.head_since.store(0, Ordering::Relaxed);
        }
        Busy(self.clone())
    }

    /// What is due at `now`. `closing`: a graceful close already began, so
    /// idleness no longer matters.
    pub fn next(&self, now: Instant, opts: &ServeOptions, closing: bool) -> Next {
        let (header, idle, write) = (opts.header_read_timeout, opts.idle_timeout, opts.response_write_timeout);
        // Any bound can start at any moment from now (a stall, a head, the
        // end of the last open request), and then ends no sooner than this.
        let mut check = now + header.min(idle).min(write);
        let stalled = self.stalled_since.load(Ordering::Relaxed);
        if stalled != 0 {
            let due = self.at(stalled) + write;
            if now >= due {
                return Next::Close("the client stopped reading (response_write_timeout)");
            }
            check = check.min(due);
        }
        if !self.began.load(Ordering::Relaxed) {
            let due = self.base + header;
            if now >= due {
                return Next::Close("no request within header_read_timeout");
            }
            return Next::CheckAt(check.min(due));
        }
        if self.open.load(Ordering::Relaxed) > 0 {
            return Next::CheckAt(check);
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 {
            let due = self.at(head) + header;
            if now >= due {
                return Next::Close("request head not complete within header_read_timeout");
            }
            check = check.min(due);
        }
        if !closing {
            let due = self.at(self.last_end.load(Ordering::Relaxed)) + idle;
            if now >= due {
                return Next::Idle;
            }
            check = check.min(due);
        }
        Next::CheckAt(check)
    }
}

/// One open request; ends when dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_end.store(a.stamp(), Ordering::Relaxed);
        a.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wraps a connection's service so every request is counted in `Activity`,
/// and carries what the TLS handshake learned (the client certificate's
/// names) into each request.
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    cert: Option<ClientCertNames>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, activity: Arc<Activity>, cert: Option<ClientCertNames>) -> Self {
        Counted { inner, activity, cert }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Counted<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<CountedBody<ResB>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        if let Some(cert) = &self.cert {
            req.extensions_mut().insert(cert.clone());
        }
        let busy = self.activity.begin();
        CountedFuture { inner: self.inner.call(req), busy: Some(busy) }
    }
}

pin_project! {
    #[derive(Debug)]
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let busy = this.busy.take();
        Poll::Ready(result.map(|resp| resp.map(|inner| CountedBody { inner, _busy: busy })))
    }
}

pin_project! {
    #[derive(Debug)]
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        _busy: Option<Busy>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ServeOptions {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 65536,
            response_write_timeout: Duration::from_secs(30),
            max_connections: 10,
        }
    }

    async fn advance(secs: u64) -> Instant {
        tokio::time::advance(Duration::from_secs(secs)).await;
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_must_begin_within_the_header_read_timeout() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.next(t0, &opts(), false), Next::CheckAt(t0 + Duration::from_secs(10)));
        let now = advance(10).await;
        assert_eq!(a.next(now, &opts(), false), Next::Close("no request within header_read_timeout"));
        let b = Activity::new(t0);
        drop(b.begin());
        assert!(matches!(b.next(now, &opts(), false), Next::CheckAt(_)), "a request began in time");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends() {
        let a = Activity::new(Instant::now());
        let busy = a.begin();
        let now = advance(100).await;
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)), "an open request is never idle");
        drop(busy);
        let now = advance(59).await;
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)));
        // Idle keep-alive outlives the header read timeout: no head started.
        let now = advance(1).await;
        assert_eq!(a.next(now, &opts(), false), Next::Idle);
        assert!(matches!(a.next(now, &opts(), true), Next::CheckAt(_)), "already closing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_be_complete_within_the_header_read_timeout_of_its_first_byte() {
        let a = Activity::new(Instant::now());
        drop(a.begin());
        advance(30).await;
        a.read_some();
        let now = advance(9).await;
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)));
        a.read_some(); // more bytes do not move the start
        let now = advance(1).await;
        assert_eq!(a.next(now, &opts(), false), Next::Close("request head not complete within header_read_timeout"));
        // Once the request begins, its head is complete.
        let busy = a.begin();
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)));
        drop(busy);
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_bytes_between_requests_start_no_head() {
        let a = Activity::new(Instant::now());
        a.set_multiplexed();
        drop(a.begin());
        a.read_some();
        let now = advance(59).await;
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)), "pings are not a slow head");
        let now = advance(1).await;
        assert_eq!(a.next(now, &opts(), false), Next::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_may_pend_for_the_response_write_timeout_between_progress() {
        let a = Activity::new(Instant::now());
        let _busy = a.begin();
        a.write_pending();
        let now = advance(20).await;
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)));
        a.write_done();
        a.write_pending();
        let now = advance(20).await;
        assert!(matches!(a.next(now, &opts(), false), Next::CheckAt(_)), "a write went through in between");
        let now = advance(10).await;
        assert_eq!(a.next(now, &opts(), false), Next::Close("the client stopped reading (response_write_timeout)"));
    }

    /// The timer is never late: whatever happens after a check, the next
    /// check comes no later than the earliest deadline those events create,
    /// because every check is within the shortest bound.
    #[tokio::test(start_paused = true)]
    async fn the_next_check_is_never_after_a_deadline() {
        let s = Duration::from_secs;
        for (header, idle, write) in [(s(10), s(60), s(30)), (s(10), s(3), s(30)), (s(10), s(60), s(2))] {
            let o = ServeOptions {
                header_read_timeout: header,
                idle_timeout: idle,
                response_write_timeout: write,
                ..opts()
            };
            let shortest = header.min(idle).min(write);
            let a = Activity::new(Instant::now());
            let mut busy = Vec::new();
            // A fixed pseudo-random walk of events, one second apart.
            let mut x: u32 = 12345;
            for _ in 0..2000 {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                match (x >> 16) % 6 {
                    0 => busy.push(a.begin()),
                    1 => drop(busy.pop()),
                    2 => a.read_some(),
                    3 => a.write_pending(),
                    4 => a.write_done(),
                    _ => {}
                }
                let now = advance(1).await;
                if let Next::CheckAt(at) = a.next(now, &o, false) {
                    assert!(at > now && at <= now + shortest, "{:?} from now", at - now);
                }
            }
        }
    }
}
