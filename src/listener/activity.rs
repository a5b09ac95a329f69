//! Per-connection activity, for the idle keep-alive timeout. hyper 1.x has
//! no idle timeout of its own (its header read timeout only starts when a
//! request begins), so each connection counts its open requests, and a
//! connection with none for `idle_timeout` is closed gracefully (HTTP/1:
//! closed; HTTP/2: GOAWAY). A request counts as open from the call until
//! its response body has been sent or dropped, so a slow download or a long
//! wait for Pleo is never "idle".

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::Service;

use crate::tls::ClientCertNames;

#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    /// Whether any request began on this connection.
    began: std::sync::atomic::AtomicBool,
    /// Milliseconds since `base` when the last request ended.
    last_ms: AtomicU64,
    base: Instant,
    went_idle: Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            began: std::sync::atomic::AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
            base: Instant::now(),
            went_idle: Notify::new(),
        })
    }

    pub fn ever_began(&self) -> bool {
        self.began.load(Ordering::Acquire)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        if !self.began.load(Ordering::Relaxed) {
            self.began.store(true, Ordering::Release);
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once the connection has had no open request for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            if self.open.load(Ordering::Acquire) > 0 {
                // Woken (with a stored permit, so no race) when the count drops to 0.
                self.went_idle.notified().await;
                continue;
            }
            let since = self.base + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            let deadline = since + idle;
            if Instant::now() >= deadline {
                if self.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                continue;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One open request; ends when dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms.store(a.base.elapsed().as_millis() as u64, Ordering::Release);
        if a.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.went_idle.notify_one();
        }
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

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends() {
        let a = Activity::new();
        let busy = a.begin();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiting.is_finished(), "an open request is never idle");
        drop(busy);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!waiting.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(waiting.is_finished());
    }
}
