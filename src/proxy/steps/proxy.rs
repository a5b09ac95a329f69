//! Step 12 of 12, innermost: send the request to the tenant's Pleo environment
//! (`upstream::Upstream::prepare`: base URL, `Host`) through its keep-alive
//! pool and stream the answer back. Connection failures answer 502
//! `upstream_unavailable`, no response head in time 504 `upstream_timeout`,
//! a body past its limits 413 / 408. Pleo's hop-by-hop headers stop here.
//! With traces exported, each attempt is a CLIENT span, from the send to
//! Pleo's response head.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Response, StatusCode};
use tower::Service;

use crate::body::{self, RequestBody};
use crate::error::{ErrorCode, GatewayError};
use crate::proxy::context::Routed;
use crate::upstream::{self, strip_hop_by_hop, ResponseBody};
use crate::BoxError;

/// On the second attempt of a request (the OAuth 401 replay): its
/// `http.request.resend_count`.
#[derive(Clone, Copy, Debug)]
pub struct Resend(pub u8);

/// The innermost service: forwards to Pleo and streams the answer back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Proxy;

impl Service<Routed<RequestBody>> for Proxy {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed<RequestBody>) -> Self::Future {
        let Routed { mut req, tenant, access, .. } = routed;
        let up = &tenant.upstream;
        if let Err(e) = up.prepare(&mut req) {
            let err = GatewayError::new(ErrorCode::UpstreamUnavailable).with_source(e);
            return Box::pin(std::future::ready(Err(err.into())));
        }
        let timeout = up.timeout;
        // Span::none() unless traces are exported.
        let resend = req.extensions().get::<Resend>().map_or(0, |r| r.0);
        let span = crate::telemetry::client_span(&req, &up.base, resend);
        crate::telemetry::inject(&span, req.headers_mut());
        Box::pin(async move {
            let started = Instant::now();
            let result = tokio::time::timeout(timeout, tenant.upstream.pool.send(req)).await;
            let took = started.elapsed();
            match &result {
                Ok(Ok(resp)) => crate::telemetry::record_status(&span, resp.status().as_u16(), None, true),
                Ok(Err(_)) => crate::telemetry::record_failure(&span, "upstream_unavailable"),
                Err(_) => crate::telemetry::record_failure(&span, "upstream_timeout"),
            }
            drop(span);
            tenant.metrics.upstream.observe(took.as_secs_f64());
            if let Some(slot) = access {
                slot.add_upstream(took);
            }
            let mut resp = match result {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) if body::is_too_large(&*e) => {
                    return Err(GatewayError::new(ErrorCode::RequestBodyTooLarge).with_source(e).into())
                }
                Ok(Err(e)) if body::is_timed_out(&*e) => {
                    return Err(GatewayError::new(ErrorCode::RequestBodyTimeout).with_source(e).into())
                }
                Ok(Err(e)) => return Err(GatewayError::new(ErrorCode::UpstreamUnavailable).with_source(e).into()),
                Err(elapsed) => return Err(GatewayError::new(ErrorCode::UpstreamTimeout).with_source(elapsed).into()),
            };
            if matches!(resp.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                tenant.metrics.rejected.inc();
                tracing::warn!(tenant = %tenant.id, status = resp.status().as_u16(), "Pleo rejected the tenant's credential");
            }
            strip_hop_by_hop(resp.headers_mut());
            Ok(resp.map(upstream::upstream))
        })
    }
}
