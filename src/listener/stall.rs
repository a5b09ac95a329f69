//! The response-write timeout: a client that stops reading must not hold a
//! connection, a request slot and an upstream stream forever.
//!
//! hyper has no write timeout. A client that stops reading makes the
//! socket's send buffer fill up, and from then on every write the
//! connection tries is `Pending`. [`Watched`] wraps the client's socket and
//! notes when writes start pending and when one goes through again; the
//! connection task ends the connection once writes have pended for
//! `limits.response_write_timeout` (nginx's `send_timeout` works the same
//! way: time between two successful writes). The fast path, a write that
//! completes, costs one atomic load.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// When the connection's writes started pending (0: they are not).
#[derive(Debug)]
pub struct Stall {
    /// Milliseconds since `base`, plus one, of the first pending write.
    since: AtomicU64,
    base: Instant,
    started: Notify,
}

impl Stall {
    pub fn new() -> Arc<Stall> {
        Arc::new(Stall { since: AtomicU64::new(0), base: Instant::now(), started: Notify::new() })
    }

    fn pending(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            self.since.store(self.base.elapsed().as_millis() as u64 + 1, Ordering::Release);
            self.started.notify_one();
        }
    }

    fn progressed(&self) {
        if self.since.load(Ordering::Relaxed) != 0 {
            self.since.store(0, Ordering::Release);
        }
    }

    /// Resolves once writes have pended without a break for `limit`.
    pub async fn exceeded(&self, limit: Duration) {
        loop {
            let since = self.since.load(Ordering::Acquire);
            if since == 0 {
                // A stored permit makes this race-free with `pending`.
                self.started.notified().await;
                continue;
            }
            tokio::time::sleep_until(self.base + Duration::from_millis(since - 1) + limit).await;
            if self.since.load(Ordering::Acquire) == since {
                return;
            }
        }
    }
}

pin_project! {
    /// A client connection whose writes are watched by a [`Stall`].
    #[derive(Debug)]
    pub struct Watched<I> {
        #[pin]
        io: I,
        stall: Arc<Stall>,
    }
}

impl<I> Watched<I> {
    pub fn new(io: I, stall: Arc<Stall>) -> Self {
        Watched { io, stall }
    }
}

fn note<T>(stall: &Stall, polled: Poll<T>) -> Poll<T> {
    match polled {
        Poll::Pending => stall.pending(),
        Poll::Ready(_) => stall.progressed(),
    }
    polled
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        note(this.stall, this.io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        note(this.stall, this.io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        note(this.stall, this.io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn exceeded_only_after_writes_pend_for_the_whole_limit() {
        let stall = Stall::new();
        let waiting = tokio::spawn({
            let s = stall.clone();
            async move { s.exceeded(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiting.is_finished(), "no pending write, no stall");
        stall.pending();
        tokio::time::sleep(Duration::from_secs(6)).await;
        stall.progressed();
        stall.pending();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!waiting.is_finished(), "a write went through in between");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(waiting.is_finished());
    }
}
