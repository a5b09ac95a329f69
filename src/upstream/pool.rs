//! The data path's upstream connections: a small keep-alive pool per Pleo
//! environment, over hyper's connection API.
//!
//! Why not hyper-util's legacy `Client` (it still serves the token endpoint,
//! the credential check and `connect`, which are rare): per request it
//! hashes its pool key under a lock twice and, for HTTP/1, spawns a task
//! that waits for the connection to be idle again. Here an HTTP/1
//! connection goes back to the pool when its response body ends
//! ([`PooledBody`]), in the task that read it. The measurement that
//! justifies this is in docs/benchmarks.md.
//!
//! Pleo picks the protocol by ALPN. An h2 connection is shared by up to
//! [`H2_STREAMS_PER_CONN`] requests at once (more open another one), HTTP/1
//! connections are one request at a time, most recently used first so that
//! the hot ones stay warm and the rest age out after `idle_timeout`.
//!
//! h2 isolation: data Pleo sends on a stream counts against the
//! connection's flow-control window until our reader takes it. An app that
//! stops reading a large download leaves its stream's data unread, and with
//! one window for everything (hyper's adaptive window sizes the connection
//! like a stream) eight such apps stopped every other tenant's traffic on
//! the environment (tests/it/h2_isolation.rs). So each stream gets a fixed
//! window and the connection a window as large as all the streams it may
//! carry together: stalled streams can only use up their own share. The
//! stream cap also keeps us under Pleo's SETTINGS_MAX_CONCURRENT_STREAMS
//! (RFC 9113 recommends servers allow at least 100), where requests would
//! otherwise queue behind stalled ones. Stalled streams end with their
//! client connection (`limits.response_write_timeout`).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Parts;
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::ServiceExt;

use crate::body::RequestBody;
use crate::config::BaseUrl;
use crate::BoxError;

/// Idle HTTP/1 connections kept per environment. Enough for a busy edge
/// (each one serves requests back to back); past it a returning connection
/// is closed rather than hoarded.
const MAX_IDLE_HTTP1: usize = 256;

/// Requests one h2 connection carries at once.
pub const H2_STREAMS_PER_CONN: usize = 100;
/// Each stream's receive window: 1 MiB is 50 MiB/s per download at 20 ms RTT.
const H2_STREAM_WINDOW: u32 = 1 << 20;

/// Sends requests to one Pleo environment over kept-alive connections.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the environment: what we connect to.
    origin: Uri,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    idle_timeout: Duration,
    idle: Mutex<Idle>,
    reaper: OnceLock<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map(|i| i.h1.len()).unwrap_or(0);
        f.debug_struct("Pool").field("origin", &self.origin).field("idle_http1", &idle).finish()
    }
}

#[derive(Default)]
struct Idle {
    /// Ready (or about to be) HTTP/1 connections and when each was returned.
    h1: Vec<(http1::SendRequest<RequestBody>, Instant)>,
    /// The shared h2 connections, once Pleo negotiated h2, with their open streams.
    h2: Vec<(http2::SendRequest<RequestBody>, Arc<AtomicUsize>)>,
}

enum Conn {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>, Stream),
}

/// One open stream of an h2 connection: counted until the response body is
/// done (or the request failed).
#[derive(Debug)]
struct Stream(Arc<AtomicUsize>);

impl Stream {
    fn open(count: &Arc<AtomicUsize>) -> Stream {
        count.fetch_add(1, Ordering::AcqRel);
        Stream(count.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>, base: &BaseUrl, idle_timeout: Duration) -> Pool {
        let origin = Uri::builder()
            .scheme(base.scheme.clone())
            .authority(base.authority.clone())
            .path_and_query("/")
            .build()
            .expect("a validated base URL makes a valid URI");
        let mut h1 = http1::Builder::new();
        // As on the listener: one write() per request head + small body.
        h1.writev(false);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            // Fixed windows, the connection's covering every stream it carries
            // (see the module docs): no stalled reader can starve the others.
            .adaptive_window(false)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_STREAM_WINDOW * H2_STREAMS_PER_CONN as u32)
            // Notice a dead h2 connection (NAT, LB) before a request lands on it.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Pool { connector, origin, h1, h2, idle_timeout, idle: Mutex::new(Idle::default()), reaper: OnceLock::new() }
    }

    /// Sends `req` (origin-form URI) and returns Pleo's response head; the
    /// body streams, and its end gives the connection back.
    ///
    /// A kept-alive connection can be closed by Pleo (or a load balancer in
    /// front of it) just as we pick it. hyper then either hands the request
    /// back unsent, or reports that the connection closed before any answer.
    /// The first is sent again on a fresh connection; the second only for a
    /// bodiless idempotent request (RFC 9110 9.2.2), as browsers and Go's
    /// client do: a POST that may have reached Pleo is never sent twice.
    pub async fn send(self: &Arc<Self>, mut req: Request<RequestBody>) -> Result<Response<PooledBody>, BoxError> {
        let (mut conn, mut reused) = match self.checkout().await {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        let mut replay = (reused && replayable(&req)).then(|| head_of(&req));
        loop {
            let sent = match &mut conn {
                Conn::H1(tx) => tx.try_send_request(req).await,
                Conn::H2(tx, _) => {
                    *req.uri_mut() = self.absolute(req.uri());
                    *req.version_mut() = Version::HTTP_2;
                    tx.try_send_request(req).await
                }
            };
            let mut err = match sent {
                Ok(resp) => {
                    let (back, stream) = match conn {
                        Conn::H1(tx) => (Some((self.clone(), tx)), None),
                        Conn::H2(_, stream) => (None, Some(stream)),
                    };
                    return Ok(resp.map(|inner| PooledBody { inner, back, _stream: stream }));
                }
                Err(err) => err,
            };
            let unsent = err.take_message();
            let closed_before_answer = err.error().is_incomplete_message();
            let again = match (retry(reused, unsent.is_some(), closed_before_answer, replay.is_some()), unsent) {
                (Retry::Unsent, Some(unsent)) => Some(unsent),
                (Retry::KeptCopy, _) => replay.take(),
                _ => None,
            };
            let Some(again) = again else {
                return Err(err.into_error().into());
            };
            tracing::debug!(error = %err.error(), "kept-alive upstream connection was closed; sending on a new one");
            req = again;
            // Back to what `send` was given, whatever the next connection speaks.
            if let Some(pq) = req.uri().path_and_query().filter(|_| req.uri().scheme().is_some()) {
                *req.uri_mut() = Uri::from(pq.clone());
            }
            *req.version_mut() = Version::HTTP_11;
            conn = self.connect().await?;
            reused = false;
        }
    }

    /// h2 needs `:scheme` and `:authority`; HTTP/1 sends the origin form.
    fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = Parts::default();
        parts.scheme = self.origin.scheme().cloned();
        parts.authority = self.origin.authority().cloned();
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }

    /// A live kept-alive connection, if there is one.
    async fn checkout(&self) -> Option<Conn> {
        loop {
            let (mut tx, since) = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if !idle.h2.is_empty() {
                    idle.h2.retain(|(tx, _)| !tx.is_closed());
                    let free = idle.h2.iter().find(|(_, n)| n.load(Ordering::Acquire) < H2_STREAMS_PER_CONN);
                    if let Some((tx, n)) = free {
                        return Some(Conn::H2(tx.clone(), Stream::open(n)));
                    }
                }
                idle.h1.pop()?
            };
            if tx.is_closed() || since.elapsed() > self.idle_timeout {
                continue;
            }
            // Returned at the end of its body, a connection may still be
            // finishing that response in its own task: wait for it (a closed
            // one errors out and the next is tried).
            if tx.ready().await.is_ok() {
                return Some(Conn::H1(tx));
            }
        }
    }

    async fn connect(&self) -> Result<Conn, BoxError> {
        let io = self.connector.clone().oneshot(self.origin.clone()).await?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = self.h2.handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            let streams = Arc::new(AtomicUsize::new(0));
            let stream = Stream::open(&streams);
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).h2.push((tx.clone(), streams));
            Ok(Conn::H2(tx, stream))
        } else {
            let (tx, conn) = self.h1.handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Conn::H1(tx))
        }
    }

    fn checkin(self: &Arc<Self>, tx: http1::SendRequest<RequestBody>) {
        if tx.is_closed() {
            return;
        }
        self.reaper.get_or_init(|| spawn_reaper(Arc::downgrade(self), self.idle_timeout));
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.h1.len() < MAX_IDLE_HTTP1 {
            idle.h1.push((tx, Instant::now()));
        }
    }

    /// Idle HTTP/1 connections in the pool (for tests and `Debug`).
    pub fn idle_http1(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).h1.len()
    }
}

/// What to do when a send failed.
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    /// hyper handed the request back: it never left, so send it as it is.
    Unsent,
    /// The kept-alive connection closed before any answer: send the copy
    /// kept for a replayable request.
    KeptCopy,
    /// Report the failure. A fresh connection's failure is the upstream's
    /// answer, and a request that may have been seen is never sent twice.
    No,
}

fn retry(reused: bool, handed_back: bool, closed_before_answer: bool, copy_kept: bool) -> Retry {
    match (reused, handed_back, closed_before_answer && copy_kept) {
        (false, _, _) => Retry::No,
        (true, true, _) => Retry::Unsent,
        (true, false, true) => Retry::KeptCopy,
        (true, false, false) => Retry::No,
    }
}

/// Safe to send twice: idempotent and nothing to lose in a body.
fn replayable(req: &Request<RequestBody>) -> bool {
    req.method().is_idempotent() && req.body().is_end_stream()
}

/// A copy of a bodiless request, for sending it once more.
fn head_of(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Closes connections idle past the timeout, so a quiet environment holds
/// no sockets; ends when the pool is dropped (a reload replaced it).
fn spawn_reaper(pool: Weak<Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.h1.retain(|(tx, since)| !tx.is_closed() && since.elapsed() <= idle_timeout);
        }
    });
}

/// Pleo's response body; when it has streamed to its end, its HTTP/1
/// connection goes back to the pool. Cut short, the connection is dropped
/// (hyper closes it: it cannot be reused mid-body).
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Arc<Pool>, http1::SendRequest<RequestBody>)>,
    /// h2: the stream's place on its connection, freed with the body.
    _stream: Option<Stream>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("inner", &self.inner).finish()
    }
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((pool, tx)) = self.back.take() {
            pool.checkin(tx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper does not poll a body that says it is empty (204, HEAD,
        // Content-Length: 0): its end is reached without a poll.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn request(method: Method, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        req
    }

    #[test]
    fn only_bodiless_idempotent_requests_are_replayable() {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert!(replayable(&request(m.clone(), RequestBody::empty())), "{m}");
        }
        assert!(!replayable(&request(Method::POST, RequestBody::empty())), "POST is never sent twice");
        assert!(!replayable(&request(Method::PATCH, RequestBody::empty())));
        assert!(!replayable(&request(Method::PUT, RequestBody::kept(Bytes::from_static(b"x")))), "a body to lose");
        assert!(replayable(&request(Method::GET, RequestBody::kept(Bytes::new()))), "an empty kept body");
    }

    #[test]
    fn retries_only_on_a_reused_connection_and_never_what_may_have_been_seen() {
        // (reused, handed back, closed before any answer, copy kept) -> decision
        let table = [
            ((false, true, false, false), Retry::No),
            ((false, false, true, true), Retry::No),
            ((true, true, false, false), Retry::Unsent),
            ((true, true, true, true), Retry::Unsent),
            ((true, false, true, true), Retry::KeptCopy),
            ((true, false, true, false), Retry::No),
            ((true, false, false, true), Retry::No),
        ];
        for ((reused, back, closed, kept), want) in table {
            assert_eq!(
                retry(reused, back, closed, kept),
                want,
                "reused={reused} back={back} closed={closed} kept={kept}"
            );
        }
    }

    #[test]
    fn the_kept_copy_is_the_same_request_without_a_body() {
        let mut req = request(Method::GET, RequestBody::empty());
        *req.uri_mut() = Uri::from_static("/v2/expenses?page=2");
        req.headers_mut().insert("authorization", http::HeaderValue::from_static("Basic abc"));
        let copy = head_of(&req);
        assert_eq!((copy.method(), copy.uri(), copy.version()), (req.method(), req.uri(), req.version()));
        assert_eq!(copy.headers(), req.headers());
        assert!(copy.body().is_end_stream());
    }
}
