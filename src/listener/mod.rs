//! The listener: accepts TCP connections and serves HTTP/1.1 and HTTP/2
//! (prior knowledge, or ALPN over TLS) on the same port with hyper-util's
//! auto builder.
//!
//! Each connection runs in its own task that also watches the shutdown
//! signal (stop reading new requests, finish the open ones) and one timer
//! for the connection's timeouts (see `activity`). On shutdown the accept
//! loop stops at once, open connections get `drain_timeout` to finish, and
//! whatever is left after that is aborted.

mod activity;
mod watched;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use activity::{Activity, Counted, Next};
use tokio_rustls::TlsAcceptor;
use watched::Watched;

use crate::tls::{self, ClientCertNames, SharedTls};

/// Server-side knobs for one listener. Read at each accept, so a reload
/// changes them for new connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_header_bytes: usize,
    /// Writes to a client that stopped reading may pend this long.
    pub response_write_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

/// One listener's series: connections open now, and idle ones closed to
/// make room at `max_connections`.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pub open: prometheus::IntGauge,
    pub evicted: prometheus::IntCounter,
}

/// Serves `service` on `listener` until `shutdown` turns true, then drains.
/// With `tls`, every connection is a TLS handshake (bounded by the header
/// read timeout) before HTTP. `metrics` counts the connections open and evicted.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    options: Arc<ArcSwap<ServeOptions>>,
    tls: Option<SharedTls>,
    metrics: ListenerMetrics,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut opts = **options.load();
    let mut builder = builder(&opts);
    let local = listener.local_addr().ok();
    let mut conns = JoinSet::new();
    // Each open connection's activity, by task: where `oldest_idle` looks.
    let mut activities: HashMap<tokio::task::Id, Arc<Activity>> = HashMap::new();
    // Connections get their own receiver; the accept loop waits on this one.
    let conn_shutdown = shutdown.clone();

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if **options.load() != opts {
                    opts = **options.load();
                    builder = self::builder(&opts);
                }
                // Reap first, so the count is of live connections only.
                while let Some(done) = conns.try_join_next_with_id() {
                    activities.remove(&done.map_or_else(|e| e.id(), |(id, ())| id));
                }
                if conns.len() >= opts.max_connections {
                    // At the limit, the connection idle the longest makes
                    // room (keep-alive clients reconnect when they need to);
                    // with none idle, the new one is closed at once: a clear
                    // failure for the client, and the backlog does not fill
                    // with connections nobody serves.
                    match oldest_idle(&activities) {
                        Some(idle) => {
                            idle.evict();
                            metrics.evicted.inc();
                        }
                        None => {
                            tracing::warn!(max_connections = opts.max_connections, "connection limit reached and none idle; closing a new connection");
                            drop(stream);
                            continue;
                        }
                    }
                }
                let _ = stream.set_nodelay(true);
                let activity = Activity::new(tokio::time::Instant::now());
                let registered = activity.clone();
                let stream = Watched::new(stream, activity.clone(), tls.is_none());
                let (service, builder, shutdown) = (service.clone(), builder.clone(), conn_shutdown.clone());
                let task = match &tls {
                    None => conns.spawn(connection(stream, service, builder, opts, activity, None, shutdown)),
                    Some(tls) => {
                        let config = tls.load_full();
                        conns.spawn(async move {
                            let handshake = TlsAcceptor::from(config).accept(stream);
                            let stream = match tokio::time::timeout(opts.header_read_timeout, handshake).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => return tracing::debug!("TLS handshake timed out"),
                            };
                            let session = stream.get_ref().1;
                            if session.alpn_protocol() == Some(b"h2") {
                                activity.set_multiplexed();
                            }
                            let cert = tls::client_cert_names(session);
                            connection(stream, service, builder, opts, activity, cert, shutdown).await
                        })
                    }
                };
                activities.insert(task.id(), registered);
                metrics.open.set(conns.len() as i64);
            }
            // Reap finished connections so the set holds only live ones.
            Some(done) = conns.join_next_with_id(), if !conns.is_empty() => {
                activities.remove(&done.map_or_else(|e| e.id(), |(id, ())| id));
                metrics.open.set(conns.len() as i64);
            }
            _ = stopping(&mut shutdown) => break,
        }
    }
    drop(listener);
    let open_at_stop = conns.len();
    let drained =
        tokio::time::timeout(options.load().drain_timeout, async { while conns.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => tracing::info!(listener = ?local, connections = open_at_stop, "all connections drained"),
        Err(_) => {
            tracing::warn!(listener = ?local, left = conns.len(), "drain timeout reached; closing the remaining connections");
            conns.shutdown().await;
        }
    }
    metrics.open.set(0);
}

/// The connection with no open request for the longest time, if any. Runs
/// only at `max_connections`: one pass over the open connections.
fn oldest_idle(activities: &HashMap<tokio::task::Id, Arc<Activity>>) -> Option<&Arc<Activity>> {
    activities.values().filter_map(|a| Some((a.idle_since()?, a))).min_by_key(|(since, _)| *since).map(|(_, a)| a)
}

fn builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The head timeout is the connection's own (see `activity`):
        // hyper's also ran between requests, closing idle keep-alive
        // connections after header_read_timeout instead of idle_timeout.
        .header_read_timeout(None)
        // One write() of head + body instead of writev(): for API-sized
        // answers it saves the iovec work, measured at ~6% CPU/request at
        // http c32 (docs/benchmarks.md). Large bodies are still
        // bounded by max_buf_size.
        .writev(false)
        .max_buf_size(opts.max_header_bytes);
    builder.http2().timer(TokioTimer::new()).adaptive_window(true).max_header_list_size(opts.max_header_bytes as u32);
    builder
}

/// Serves one connection until it ends: closes it gracefully on shutdown or
/// after `idle_timeout` without an open request, and drops it when a bound
/// in [`Activity::next`] is broken (no first request, a head that never
/// ends, a client that stopped reading).
async fn connection<I, S, B>(
    io: I,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    opts: ServeOptions,
    activity: Arc<Activity>,
    cert: Option<ClientCertNames>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = TowerToHyperService::new(Counted::new(service, activity.clone(), cert));
    // Pinned where it is made: a binding moved into `tokio::pin!` kept a
    // second slot for it in this future (rustc does not overlap the two),
    // which made the future 4,304 bytes instead of 2,712.
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    let first = match activity.next(tokio::time::Instant::now(), &opts, false) {
        Next::CheckAt(at) => at,
        _ => return,
    };
    let mut timer = std::pin::pin!(tokio::time::sleep_until(first));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut timer => {
                let now = tokio::time::Instant::now();
                let mut next = activity.next(now, &opts, closing);
                if next == Next::Idle {
                    tracing::trace!("closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    next = activity.next(now, &opts, closing);
                }
                match next {
                    Next::CheckAt(at) => timer.as_mut().reset(at),
                    Next::Close(why) => return tracing::debug!(why, "closing the connection"),
                    // Never answered once closing; nothing is left to wait for.
                    Next::Idle => return,
                }
            }
            _ = stopping(&mut shutdown), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.evicted(), if !closing => {
                tracing::debug!("closing an idle connection to make room for a new one (max_connections)");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Resolves when shutdown begins (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, not in a select arm.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
