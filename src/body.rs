//! Bodies. [`RequestBody`] is an app's body on its way to Pleo (streamed,
//! or kept for the OAuth retry), held to the size and pause limits.
//! [`Tracked`] wraps a response body and ties the in-flight gauge, the
//! request's share slots and its access line to the body's life, so a long
//! download counts until it has streamed. (The response body type itself,
//! Pleo's or the gateway's own JSON, lives in `upstream`, which makes it.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use hyper::body::Incoming;

use crate::access_log::AccessLine;

/// Counts one request in flight from its creation until it is dropped, with
/// the tenant's and client's in-flight slots (`share::Slots`) it holds.
#[derive(Debug)]
pub struct InFlight(
    #[allow(dead_code)] crate::share::Entered,
    Option<crate::share::Slots>,
    #[allow(dead_code)] tracing::Span,
);

impl InFlight {
    pub fn start(count: &crate::share::InFlightCount) -> Self {
        InFlight(count.enter(), None, tracing::Span::none())
    }

    /// Keeps the request's share slots until the response body is done.
    pub fn hold(&mut self, slots: Option<crate::share::Slots>) {
        self.1 = slots;
    }

    /// Keeps the request's SERVER span open until the response body is done.
    pub fn hold_span(&mut self, span: tracing::Span) {
        self.2 = span;
    }
}

pin_project! {
    /// A body that holds an [`InFlight`] until hyper is done with it, and
    /// counts the bytes sent for the request's access line (if any).
    #[derive(Debug)]
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        _in_flight: InFlight,
        access: Option<Box<AccessLine>>,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight, access: Option<Box<AccessLine>>) -> Self {
        Tracked { inner, _in_flight: in_flight, access }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(line), Poll::Ready(Some(Ok(frame)))) = (this.access.as_mut(), &polled) {
            if let Some(data) = frame.data_ref() {
                line.bytes += bytes::Buf::remaining(data) as u64;
            }
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

/// A request body on its way to Pleo: the app's body streaming through
/// (`rest`), a body kept whole in memory (`prefix` only) so the request can be
/// retried, or the kept start of a body that turned out too large followed by
/// the rest of the stream.
///
/// The streaming part is held to `limits.max_request_body_bytes`: past it the
/// body fails with [`BodyTooLarge`], which the proxy answers with 413.
#[derive(Debug)]
pub struct RequestBody {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
    /// Bytes `rest` may still yield.
    remaining: u64,
    /// `limits.body_read_timeout`: the longest pause between two frames of `rest`.
    pause: Duration,
    /// Armed the first time `rest` is not ready; reset by every frame.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// A request body passed `limits.max_request_body_bytes` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than limits.max_request_body_bytes")]
pub struct BodyTooLarge;

/// A request body paused longer than `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body paused longer than limits.body_read_timeout")]
pub struct BodyTimedOut;

impl RequestBody {
    pub fn streaming(body: Incoming, limit: u64, pause: Duration) -> Self {
        RequestBody { prefix: None, rest: Some(body), remaining: limit, pause, deadline: None }
    }

    pub fn kept(bytes: Bytes) -> Self {
        RequestBody { prefix: Some(bytes), rest: None, remaining: 0, pause: Duration::MAX, deadline: None }
    }

    pub fn empty() -> Self {
        RequestBody { prefix: None, rest: None, remaining: 0, pause: Duration::MAX, deadline: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            if !prefix.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
        }
        let this = &mut *self;
        let Some(rest) = this.rest.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(rest).poll_frame(cx);
        // A slow client must not hold a request slot (and Pleo's connection) forever.
        match (&polled, &mut this.deadline) {
            (Poll::Pending, None) => {
                let mut sleep = Box::pin(tokio::time::sleep(this.pause));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.rest = None;
                    return Poll::Ready(Some(Err(BodyTimedOut.into())));
                }
                this.deadline = Some(sleep);
            }
            (Poll::Pending, Some(sleep)) => {
                if sleep.as_mut().poll(cx).is_ready() {
                    this.rest = None;
                    return Poll::Ready(Some(Err(BodyTimedOut.into())));
                }
            }
            (Poll::Ready(_), Some(sleep)) => {
                if let Some(at) = tokio::time::Instant::now().checked_add(this.pause) {
                    sleep.as_mut().reset(at);
                }
            }
            (Poll::Ready(_), None) => {}
        }
        let frame = match std::task::ready!(polled) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            match this.remaining.checked_sub(data.len() as u64) {
                Some(left) => this.remaining = left,
                None => {
                    // Stop reading: nothing past the limit is accepted or forwarded.
                    this.rest = None;
                    return Poll::Ready(Some(Err(BodyTooLarge.into())));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty) && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let kept = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(kept),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower() + kept);
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper + kept);
                }
                out
            }
        }
    }
}

/// The outcome of trying to keep a request body in memory.
#[derive(Debug)]
pub enum Kept {
    /// The whole body, no larger than the limit.
    Whole(Bytes),
    /// Larger than the limit: what was read so far, then the rest, streaming.
    TooLarge(RequestBody),
}

/// Reads `body` into memory if it fits in `limit` bytes. A body that declares
/// a larger size is not read at all; one of unknown size is read until it
/// ends or passes the limit. Nothing read is ever dropped. `max` is
/// `limits.max_request_body_bytes`, enforced on the rest as it streams.
pub async fn keep_if_small(
    mut body: Incoming,
    limit: usize,
    max: u64,
    pause: Duration,
) -> Result<Kept, crate::BoxError> {
    use http_body_util::BodyExt;
    let limit = limit.min(usize::try_from(max).unwrap_or(usize::MAX));
    if body.size_hint().lower() > limit as u64 {
        return Ok(Kept::TooLarge(RequestBody::streaming(body, max, pause)));
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(pause, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(BodyTimedOut.into()),
        };
        // Trailers on a request Pleo never asked for are dropped here.
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                if buf.len() as u64 > max {
                    return Err(BodyTooLarge.into());
                }
                let remaining = max - buf.len() as u64;
                return Ok(Kept::TooLarge(RequestBody {
                    prefix: Some(buf.freeze()),
                    rest: Some(body),
                    remaining,
                    pause,
                    deadline: None,
                }));
            }
        }
    }
    Ok(Kept::Whole(buf.freeze()))
}

/// Whether `err` (or one of its causes) is a body past the size limit.
pub fn is_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyTooLarge>(err)
}

/// Whether `err` (or one of its causes) is a body that paused too long.
pub fn is_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyTimedOut>(err)
}

fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}
