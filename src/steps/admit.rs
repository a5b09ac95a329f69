//! Steps 3 and 9 of 12: admission, what the gateway agrees to work on.
//!
//! First of all ([`Admit`]): sheds load with 503 `overloaded` once
//! `limits.max_in_flight` requests are being handled (queuing without bound
//! would only turn a burst into timeouts and memory), refuses a method Pleo's
//! API does not use with 405 (TRACE would echo the attached credential back,
//! CONNECT would open a tunnel), and refuses a body whose declared
//! `Content-Length` is over `limits.max_request_body_bytes` with 413 before a
//! byte of it is read. Bodies of unknown length are held to the same limit
//! while they stream (`body::RequestBody`).
//!
//! Once the tenant is known ([`ShareLayer`]): each tenant and each client
//! key may hold only its share of the in-flight slots
//! (`max_in_flight_per_tenant`, `max_in_flight_per_client`), so one noisy app
//! or a tenant with trickling uploads gets 503 `overloaded` before it can
//! take every slot from the others. The slots are held until the response
//! body is done (`observe` moves them into the body).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, Method, Request, Response};
use pin_project_lite::pin_project;
use tower::filter::Predicate;
use tower::{Layer, Service};

use crate::clients::ClientIdentity;
use crate::error::{ErrorCode, GatewayError};
use crate::routes::{snapshot_ref, Tenant};
use crate::share::{InFlightCount, Slots};
use crate::BoxError;

#[derive(Clone, Debug)]
pub struct Admit {
    /// Requests in flight: `observe` has already counted this one.
    in_flight: InFlightCount,
}

impl Admit {
    pub fn new(in_flight: InFlightCount) -> Self {
        Admit { in_flight }
    }
}

/// The methods Pleo's External API uses.
fn forwarded_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS
    )
}

impl<B> Predicate<Request<B>> for Admit {
    type Request = Request<B>;

    fn check(&mut self, req: Request<B>) -> Result<Request<B>, BoxError> {
        // Borrowed, not cloned: this step only reads two numbers.
        let routes = snapshot_ref(&req)?;
        if self.in_flight.get() > routes.max_in_flight {
            return Err(GatewayError::new(ErrorCode::Overloaded).into());
        }
        if !forwarded_method(req.method()) {
            return Err(GatewayError::new(ErrorCode::MethodNotAllowed).into());
        }
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > routes.max_request_body_bytes) {
            return Err(GatewayError::new(ErrorCode::RequestBodyTooLarge).into());
        }
        Ok(req)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ShareLayer;

impl<S> Layer<S> for ShareLayer {
    type Service = Shares<S>;
    fn layer(&self, inner: S) -> Shares<S> {
        Shares { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Shares<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for Shares<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = SharesFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let refused = || SharesFuture::Refused { err: Some(GatewayError::new(ErrorCode::Overloaded).into()) };
        // A request without a tenant or client takes no slot of that kind.
        let tenant = match req.extensions().get::<Arc<Tenant>>().map(|t| t.in_flight.take()) {
            Some(None) => return refused(),
            taken => taken.flatten(),
        };
        let client = match req.extensions().get::<ClientIdentity>().map(|c| c.0.in_flight.take()) {
            Some(None) => return refused(),
            taken => taken.flatten(),
        };
        let slots = Slots::new(tenant, client);
        SharesFuture::Called { inner: self.inner.call(req), slots: Some(slots) }
    }
}

pin_project! {
    #[project = SharesProj]
    #[derive(Debug)]
    pub enum SharesFuture<F> {
        Called { #[pin] inner: F, slots: Option<Slots> },
        Refused { err: Option<BoxError> },
    }
}

impl<F, RB> Future for SharesFuture<F>
where
    F: Future<Output = Result<Response<RB>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SharesProj::Refused { err } => Poll::Ready(Err(err.take().expect("polled after completion"))),
            SharesProj::Called { inner, slots } => {
                let mut resp = ready!(inner.poll(cx))?;
                if let Some(slots) = slots.take() {
                    resp.extensions_mut().insert(slots);
                }
                Poll::Ready(Ok(resp))
            }
        }
    }
}
