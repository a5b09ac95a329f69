//! Step 2 of 12, right inside `observe`: every error below becomes the
//! contract's JSON answer (`error::GatewayError::to_response`), is counted
//! in `pleo_gateway_refused_total` (a legacy credential also by app) and
//! logged once. Nothing reaches hyper as
//! an error (that would reset the connection without an answer).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::{chain, ErrorCode, GatewayError};
use crate::metrics::Metrics;
use crate::upstream::{self, ResponseBody};
use crate::BoxError;

/// Outermost step below `observe`: errors become the contract's JSON answer,
/// are counted in `pleo_gateway_refused_total` and logged once.
#[derive(Clone, Debug)]
pub struct RescueLayer {
    metrics: Arc<Metrics>,
}

impl RescueLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        RescueLayer { metrics }
    }
}

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for Rescue<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Our services are always ready (no backpressure below this point).
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        RescueFuture { inner: self.inner.call(req), metrics: self.metrics.clone() }
    }
}

pin_project! {
    #[derive(Debug)]
    pub struct RescueFuture<F> {
        #[pin]
        inner: F,
        metrics: Arc<Metrics>,
    }
}

impl<F> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, BoxError>>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err = match ready!(this.inner.poll(cx)) {
            Ok(resp) => return Poll::Ready(Ok(resp)),
            Err(err) => err,
        };
        let resp = match err.downcast_ref::<GatewayError>() {
            Some(e) => {
                this.metrics.refused(e.code);
                // Where refusals are recorded: a legacy credential counts by app here.
                if let Some(seen) = crate::error::find::<crate::clients::LegacyTokenSeen>(e) {
                    seen.record();
                }
                match e.code {
                    ErrorCode::UpstreamUnavailable | ErrorCode::UpstreamTimeout | ErrorCode::CredentialUnavailable => {
                        tracing::warn!(code = e.code.as_str(), error = %chain(e), "request failed")
                    }
                    _ => tracing::info!(code = e.code.as_str(), "request refused"),
                }
                e.to_response()
            }
            None => {
                let e = GatewayError::new(ErrorCode::UpstreamUnavailable);
                this.metrics.refused(e.code);
                tracing::error!(error = %chain(&*err), "unexpected error");
                e.to_response()
            }
        };
        // The code travels with the answer, for the access line (observe).
        let code = crate::error::code_of(&err);
        let mut resp = resp.map(upstream::local);
        resp.extensions_mut().insert(code);
        Poll::Ready(Ok(resp))
    }
}
