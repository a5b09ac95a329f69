//! The listener: accepts TCP connections and serves HTTP/1.1 and HTTP/2
//! (prior knowledge) on the same port with hyper-util's auto builder. On
//! shutdown it stops accepting and lets open connections finish, up to the
//! drain timeout.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Server-side knobs for one listener.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `service` on `listener` until `shutdown` flips, then drains.
pub async fn serve<S, B>(listener: TcpListener, service: S, opts: ServeOptions, mut shutdown: watch::Receiver<bool>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes);
    builder.http2().timer(TokioTimer::new()).adaptive_window(true).max_header_list_size(opts.max_header_bytes as u32);
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();

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
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = ?local, "all connections drained"),
        _ = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!(listener = ?local, "drain timeout reached; closing the remaining connections")
        }
    }
}
