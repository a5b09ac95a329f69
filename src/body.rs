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
