//! Response bodies. Pleo's body streams through untouched (`Incoming`); the
//! gateway's own answers are small JSON (`Full`). `Tracked` ties the in-flight
//! gauge to the body's life, so a long download counts until it has streamed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use prometheus::IntGauge;

pub type ResponseBody = Either<Incoming, Full<Bytes>>;

pub fn local(body: Full<Bytes>) -> ResponseBody {
    Either::Right(body)
}

pub fn upstream(body: Incoming) -> ResponseBody {
    Either::Left(body)
}

/// Counts one request in flight from its creation until it is dropped.
#[derive(Debug)]
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pin_project! {
    /// A body that holds an [`InFlight`] until hyper is done with it.
    #[derive(Debug)]
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        _in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked { inner, _in_flight: in_flight }
    }
}

impl<B: Body> Body for Tracked<B> {
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

/// A request body on its way to Pleo: the app's body streaming through
/// (`rest`), a body kept whole in memory (`prefix` only) so the request can be
/// retried, or the kept start of a body that turned out too large followed by
/// the rest of the stream.
#[derive(Debug)]
pub struct RequestBody {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
}

impl RequestBody {
    pub fn streaming(body: Incoming) -> Self {
        RequestBody { prefix: None, rest: Some(body) }
    }

    pub fn kept(bytes: Bytes) -> Self {
        RequestBody { prefix: Some(bytes), rest: None }
    }

    pub fn empty() -> Self {
        RequestBody { prefix: None, rest: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            if !prefix.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
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
/// ends or passes the limit. Nothing read is ever dropped.
pub async fn keep_if_small(mut body: Incoming, limit: usize) -> Result<Kept, hyper::Error> {
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return Ok(Kept::TooLarge(RequestBody::streaming(body)));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        // Trailers on a request Pleo never asked for are dropped here.
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Kept::TooLarge(RequestBody { prefix: Some(buf.freeze()), rest: Some(body) }));
            }
        }
    }
    Ok(Kept::Whole(buf.freeze()))
}
