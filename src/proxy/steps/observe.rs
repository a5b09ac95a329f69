//! Step 1 of 12, outermost: what every request gets, refused or not.
//!
//! Loads the current routes snapshot once (every later step reads the same
//! one, so a reload never splits a request), sets or propagates
//! `x-request-id` (forwarded to Pleo and returned to the app), and counts the
//! request in `pleo_gateway_in_flight_requests` until its body has streamed,
//! and starts its access-log line (written when the body is done) and,
//! when traces are exported, its SERVER span (ended with the body too).

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::access_log::{AccessLine, Format};
use crate::body::{InFlight, Tracked};
use crate::error::ErrorCode;
use crate::proxy::routes::{SharedRoutes, Snapshot};
use crate::share::InFlightCount;
use crate::upstream::ResponseBody;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Makes request ids: a random per-process prefix and a counter, so ids are
/// unique across restarts without a syscall or lock per request.
#[derive(Debug)]
struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        RequestIds { prefix: h.finish() as u32, next: AtomicU64::new(1) }
    }

    /// 24 lowercase hex digits: prefix, then counter. Written into a stack
    /// buffer (no `format!` machinery on every request).
    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 24];
        hex_into(&mut id[..8], u64::from(self.prefix));
        hex_into(&mut id[8..], n);
        HeaderValue::from_bytes(&id).expect("hex is a valid header value")
    }
}

/// Writes `n` as `out.len()` lowercase hex digits (the low ones if it is longer).
fn hex_into(out: &mut [u8], mut n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// An app's own id is kept when it is a sane token (visible ASCII, <= 128).
fn usable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| (0x21..0x7f).contains(c))
}

#[derive(Clone, Debug)]
pub struct ObserveLayer {
    routes: SharedRoutes,
    in_flight: InFlightCount,
    ids: Arc<RequestIds>,
}

impl ObserveLayer {
    pub fn new(routes: SharedRoutes, in_flight: InFlightCount) -> Self {
        ObserveLayer { routes, in_flight, ids: Arc::new(RequestIds::new()) }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, layer: self.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<Tracked<ResponseBody>>;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let in_flight = InFlight::start(&self.layer.in_flight);
        let routes = self.layer.routes.load_full();
        let id = match req.headers().get(&REQUEST_ID) {
            Some(v) if usable(v) => v.clone(),
            _ => {
                let id = self.layer.ids.make();
                req.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        // Span::none() unless traces are exported; the steps below run inside it.
        let span = crate::telemetry::server_span(&req);
        let access = match routes.access_log.format {
            Format::Off => None,
            _ => {
                let mut line = AccessLine::start(req.method(), req.uri(), routes.access_log.include_query, id.clone());
                line.trace_id = crate::telemetry::trace_id(&span);
                req.extensions_mut().insert(line.slot.clone());
                Some(Box::new(line))
            }
        };
        req.extensions_mut().insert(Snapshot(routes));
        let inner = {
            let _in_span = span.enter();
            self.inner.call(req)
        };
        ObserveFuture { inner, in_flight: Some(in_flight), id: Some(id), access, span }
    }
}

pin_project! {
    #[derive(Debug)]
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        id: Option<HeaderValue>,
        access: Option<Box<AccessLine>>,
        span: tracing::Span,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Response<Tracked<ResponseBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let _in_span = this.span.enter();
            this.inner.poll(cx)
        };
        let Ok(mut resp) = ready!(polled);
        if let Some(id) = this.id.take() {
            resp.headers_mut().insert(REQUEST_ID, id);
        }
        let mut in_flight = this.in_flight.take().expect("polled after completion");
        in_flight.hold(resp.extensions_mut().remove::<crate::share::Slots>());
        if !this.span.is_none() {
            let code = resp.extensions().get::<ErrorCode>().map(|c| c.as_str());
            crate::telemetry::record_status(this.span, resp.status().as_u16(), code, false);
            in_flight.hold_span(std::mem::replace(this.span, tracing::Span::none()));
        }
        let access = this.access.take().map(|mut line| {
            line.status = resp.status().as_u16();
            line.error = resp.extensions().get::<ErrorCode>().copied();
            line
        });
        Poll::Ready(Ok(resp.map(|b| Tracked::new(b, in_flight, access))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prefix_then_counter_in_fixed_width_hex() {
        let ids = RequestIds { prefix: 0xdead_beef, next: AtomicU64::new(0x1f) };
        assert_eq!(ids.make(), "deadbeef000000000000001f");
        assert_eq!(ids.make(), "deadbeef0000000000000020");
        let ids = RequestIds { prefix: 0x7, next: AtomicU64::new(u64::MAX) };
        assert_eq!(ids.make(), "00000007ffffffffffffffff");
    }
}
