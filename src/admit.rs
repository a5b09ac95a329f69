//! Step 1, first of all: admission. Sheds load with 503 `overloaded` once
//! `limits.max_in_flight` requests are being handled (queuing without bound
//! would only turn a burst into timeouts and memory), and refuses a body
//! whose declared `Content-Length` is over `limits.max_request_body_bytes`
//! with 413 before a byte of it is read. Bodies of unknown length are held
//! to the same limit while they stream (`body::RequestBody`).

use http::{header, Request};
use prometheus::IntGauge;
use tower::filter::Predicate;

use crate::error::{ErrorCode, GatewayError};
use crate::routes::snapshot_ref;
use crate::BoxError;

#[derive(Clone, Debug)]
pub struct Admit {
    /// `pleo_gateway_in_flight_requests`: `observe` has already counted this request.
    in_flight: IntGauge,
}

impl Admit {
    pub fn new(in_flight: IntGauge) -> Self {
        Admit { in_flight }
    }
}

impl<B> Predicate<Request<B>> for Admit {
    type Request = Request<B>;

    fn check(&mut self, req: Request<B>) -> Result<Request<B>, BoxError> {
        // Borrowed, not cloned: this step only reads two numbers.
        let routes = snapshot_ref(&req)?;
        if self.in_flight.get() > routes.max_in_flight as i64 {
            return Err(GatewayError::new(ErrorCode::Overloaded).into());
        }
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > routes.max_request_body_bytes) {
            return Err(GatewayError::new(ErrorCode::RequestBodyTooLarge).into());
        }
        Ok(req)
    }
}
