//! The client's socket, watched for the connection's timeouts: a write
//! that pends means the client stopped reading (`response_write_timeout`;
//! nginx's `send_timeout` works the same way: time between two successful
//! writes), and bytes that arrive while no request is open start the next
//! request's head (`header_read_timeout`). The fast path costs a few
//! relaxed atomic loads; see [`Activity`].

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;

/// The HTTP/2 connection preface's first bytes (HTTP/1 has no `PRI` method,
/// and no other method starts with them).
const H2_PREFACE_START: &[u8; 3] = b"PRI";

pin_project! {
    /// A client connection whose reads and writes are noted in an [`Activity`].
    #[derive(Debug)]
    pub struct Watched<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
        // Whether the connection's first bytes were looked at (for the h2 preface).
        first_seen: bool,
    }
}

impl<I> Watched<I> {
    /// `cleartext`: the bytes read are HTTP, so an h2 preface can be seen
    /// (under TLS, ALPN tells instead).
    pub fn new(io: I, activity: Arc<Activity>, cleartext: bool) -> Self {
        Watched { io, activity, first_seen: !cleartext }
    }
}

fn note<T>(activity: &Activity, polled: Poll<T>) -> Poll<T> {
    match polled {
        Poll::Pending => activity.write_pending(),
        Poll::Ready(_) => activity.write_done(),
    }
    polled
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            if !*this.first_seen {
                *this.first_seen = true;
                if read.starts_with(H2_PREFACE_START) {
                    this.activity.set_multiplexed();
                }
            }
            this.activity.read_some();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        note(this.activity, this.io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        note(this.activity, this.io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        note(this.activity, this.io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
