//! The request's path, one step per file, in the order a request travels
//! (`stack.rs` assembles them): 1 observe, 2 rescue, 3 admit, 4 legacy,
//! 5 guard, 6 client_auth, 7 tenant, 8 record, 9 shares (in `admit`),
//! 10 scrub, 11 attach, 12 proxy.
//!
//! The decisions of steps 3 to 7 are pure functions over the request and
//! the routes snapshot: they count nothing and send nothing (counting
//! happens where an outcome is recorded: `rescue` for refusals, `record`
//! for routed requests; each field of the access record has one writer). [`route`] runs them in order; the stack runs it as
//! one filter and `explain` runs the very same function, so the two cannot
//! drift.

pub mod admit;
pub mod attach;
pub mod client_auth;
pub mod guard;
pub mod legacy;
pub mod observe;
pub mod proxy;
pub mod record;
pub mod rescue;
pub mod scrub;
pub mod tenant;

use std::sync::Arc;

use http::Request;
use tower::filter::Predicate;

use super::context::Routed;
use super::routes::Snapshot;
use crate::access_log::AccessSlot;
use crate::error::{ErrorCode, GatewayError};
use crate::share::InFlightCount;
use crate::BoxError;

/// Steps 3 to 7: whether the gateway works on this request at all, and for
/// which tenant. `in_flight` counts this request (`observe` entered it).
pub fn route<B>(mut req: Request<B>, in_flight: usize) -> Result<Routed<B>, BoxError> {
    let Some(Snapshot(routes)) = req.extensions_mut().remove::<Snapshot>() else {
        return Err(GatewayError::new(ErrorCode::UpstreamUnavailable)
            .with_source("routes snapshot missing: observe layer not installed")
            .into());
    };
    admit::admit(&req, &routes, in_flight)?; // 3: load, method, declared size
    legacy::refuse_legacy(&req)?; // 4: openapi.pleo.io, Proxy-Authorization
    guard::guard(&req, &routes)?; // 5: DNS rebinding, cross-site
    let client = client_auth::authenticate(&mut req, &routes)?; // 6: who calls
    let access = req.extensions_mut().remove::<Arc<AccessSlot>>();
    // The access record's one writer of the client: known from here, and
    // named even when the tenant step refuses (`record` writes the tenant).
    if let (Some(slot), Some(c)) = (&access, &client) {
        let _ = slot.client.set(c.name.clone());
    }
    Ok(tenant::resolve(req, routes, client, access)?) // 7: for which tenant
}

/// [`route`] as the stack's filter: a request in, a [`Routed`] out.
#[derive(Clone, Debug)]
pub struct Route {
    /// Requests in flight: `observe` has already counted this one.
    in_flight: InFlightCount,
}

impl Route {
    pub fn new(in_flight: InFlightCount) -> Self {
        Route { in_flight }
    }
}

impl<B> Predicate<Request<B>> for Route {
    type Request = Routed<B>;

    fn check(&mut self, req: Request<B>) -> Result<Routed<B>, BoxError> {
        route(req, self.in_flight.get())
    }
}
