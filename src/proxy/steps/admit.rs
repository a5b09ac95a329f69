//! Steps 3 and 9 of 12: admission, what the gateway agrees to work on.
//!
//! First of all ([`admit`]): sheds load with 503 `overloaded` once
//! `limits.max_in_flight` requests are being handled (queuing without bound
//! would only turn a burst into timeouts and memory), refuses a method Pleo's
//! API does not use with 405 (TRACE would echo the attached credential back,
//! CONNECT would open a tunnel), and refuses a body whose declared
//! `Content-Length` is over `limits.max_request_body_bytes` with 413 before a
//! byte of it is read. Bodies of unknown length are held to the same limit
//! while they stream (`body::RequestBody`).
//!
//! Once the tenant is known ([`ShareLayer`]): each tenant and each client
//! key is guaranteed its share of the in-flight slots
//! (`max_in_flight_per_tenant`, `max_in_flight_per_client`) and may borrow
//! past it only while the gateway is short of its limit by a tenth
//! (`share::may_borrow`), so one noisy app or a tenant with trickling
//! uploads gets 503 `overloaded` before it can take every slot from the
//! others, while an app alone can use all of them. The slots are held until
//! the response body is done (`observe` moves them into the body).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, Method, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::{ErrorCode, GatewayError};
use crate::proxy::context::Routed;
use crate::proxy::routes::Routes;
use crate::share::{may_borrow, InFlightCount, Slots};
use crate::BoxError;

/// The methods Pleo's External API uses.
fn forwarded_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS
    )
}

/// Step 3: shed load past `max_in_flight` (`in_flight` counts this
/// request), refuse methods Pleo does not use and declared bodies over the limit.
pub fn admit<B>(req: &Request<B>, routes: &Routes, in_flight: usize) -> Result<(), GatewayError> {
    if in_flight > routes.max_in_flight {
        return Err(GatewayError::new(ErrorCode::Overloaded));
    }
    if !forwarded_method(req.method()) {
        return Err(GatewayError::new(ErrorCode::MethodNotAllowed));
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > routes.max_request_body_bytes) {
        return Err(GatewayError::new(ErrorCode::RequestBodyTooLarge));
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct ShareLayer {
    /// The gateway's requests in flight (`observe` counted this one): what
    /// decides whether a request past its share may borrow.
    in_flight: InFlightCount,
}

impl ShareLayer {
    pub fn new(in_flight: InFlightCount) -> Self {
        ShareLayer { in_flight }
    }
}

impl<S> Layer<S> for ShareLayer {
    type Service = Shares<S>;
    fn layer(&self, inner: S) -> Shares<S> {
        Shares { inner, in_flight: self.in_flight.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct Shares<S> {
    inner: S,
    in_flight: InFlightCount,
}

impl<S, B, RB> Service<Routed<B>> for Shares<S>
where
    S: Service<Routed<B>, Response = Response<RB>, Error = BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = SharesFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Routed<B>) -> Self::Future {
        let refused = || SharesFuture::Refused { err: Some(GatewayError::new(ErrorCode::Overloaded).into()) };
        // Read only by a request past its share: the common path costs no extra load.
        let borrow = || may_borrow(self.in_flight.get(), req.routes.max_in_flight);
        let Some(tenant) = req.tenant.in_flight.take(borrow) else { return refused() };
        // A request without a client takes no client slot.
        let client = match req.client.as_ref().map(|c| c.in_flight.take(borrow)) {
            Some(None) => return refused(),
            taken => taken.flatten(),
        };
        let slots = Slots::new(Some(tenant), client);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code_of;
    use crate::proxy::routes::for_tests;
    use tower::ServiceExt;

    const CONFIG: &str = "limits: { max_in_flight: 2, max_in_flight_per_tenant: 1, max_request_body_bytes: 100 }\ntenants:\n  t1:\n    environment: staging\n    auth: { model: integrated_api_key, key: ik_unit_0123456789abcdef }\n";

    fn request(method: Method, content_length: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/v2/x");
        if let Some(n) = content_length {
            b = b.header(header::CONTENT_LENGTH, n);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn sheds_load_past_max_in_flight_counting_this_request() {
        let (routes, _) = for_tests(CONFIG);
        // `observe` has entered this request already: 2 of 2 is admitted, a third is not.
        assert!(admit(&request(Method::GET, None), &routes, 2).is_ok());
        assert_eq!(admit(&request(Method::GET, None), &routes, 3).unwrap_err().code, ErrorCode::Overloaded);
    }

    #[test]
    fn refuses_methods_pleo_does_not_use_and_declared_bodies_over_the_limit() {
        let (routes, _) = for_tests(CONFIG);
        for m in [Method::TRACE, Method::CONNECT, Method::from_bytes(b"PROPFIND").unwrap()] {
            let err = admit(&request(m.clone(), None), &routes, 1).unwrap_err();
            assert_eq!(err.code, ErrorCode::MethodNotAllowed, "{m}");
        }
        assert!(admit(&request(Method::POST, Some("100")), &routes, 1).is_ok(), "at the limit");
        let over = admit(&request(Method::POST, Some("101")), &routes, 1).unwrap_err();
        assert_eq!(over.code, ErrorCode::RequestBodyTooLarge);
        // An unreadable length is left to the streaming limit in `body`.
        assert!(admit(&request(Method::POST, Some("lots")), &routes, 1).is_ok());
    }

    #[tokio::test]
    async fn a_tenant_holds_its_share_until_the_response_is_dropped() {
        let (routes, _) = for_tests(CONFIG);
        let tenant = routes.tenants.get("t1").unwrap().clone();
        let inner = tower::service_fn(|_: Routed<()>| async { Ok::<_, BoxError>(Response::new(())) });
        // The gateway is full (3 of max 2 with this one): nothing may be borrowed.
        let in_flight = InFlightCount::default();
        let _entered: Vec<_> = (0..3).map(|_| in_flight.enter()).collect();
        let shares = ShareLayer::new(in_flight.clone()).layer(inner);
        let call = |shares: Shares<_>| {
            let req = Routed {
                req: Request::new(()),
                tenant: tenant.clone(),
                client: None,
                rule: None,
                rewrite: None,
                access: None,
                routes: routes.clone(),
            };
            shares.oneshot(req)
        };
        let held = call(shares.clone()).await.unwrap();
        assert!(held.extensions().get::<Slots>().is_some(), "the slot travels with the response");
        assert_eq!(tenant.in_flight.used(), 1);
        // The share is 1: a second request for the tenant is refused while the first is held.
        assert_eq!(code_of(&call(shares.clone()).await.unwrap_err()), ErrorCode::Overloaded);
        drop(held);
        assert_eq!(tenant.in_flight.used(), 0);
        assert!(call(shares.clone()).await.is_ok());
        // With room in the gateway (2 of 2, this one counted) it may borrow a second slot.
        drop(_entered);
        let _entered: Vec<_> = (0..2).map(|_| in_flight.enter()).collect();
        let held = call(shares.clone()).await.unwrap();
        let borrowed = call(shares).await.unwrap();
        assert_eq!(tenant.in_flight.used(), 2, "one within the share, one borrowed");
        drop((held, borrowed));
        assert_eq!(tenant.in_flight.used(), 0);
    }
}
