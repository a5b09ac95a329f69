//! The one place the request path is assembled, top-down in the order a
//! request travels (docs/architecture.md).

use std::sync::Arc;

use tower::filter::{Filter, FilterLayer};
use tower::ServiceBuilder;

use super::routes::SharedRoutes;
use super::steps::admit::{ShareLayer, Shares};
use super::steps::attach::{Attach, AttachLayer};
use super::steps::observe::{Observe, ObserveLayer};
use super::steps::proxy::Proxy;
use super::steps::record::{Record, RecordLayer};
use super::steps::rescue::{Rescue, RescueLayer};
use super::steps::scrub::ScrubHeaders;
use super::steps::Route;
use crate::metrics::Metrics;
use crate::share::InFlightCount;

/// The whole gateway as one tower service (`Error = Infallible`).
pub type GatewayService = Observe<Rescue<Filter<Record<Shares<Filter<Attach<Proxy>, ScrubHeaders>>>, Route>>>;

pub fn build(routes: SharedRoutes, metrics: Arc<Metrics>, in_flight: InFlightCount) -> GatewayService {
    ServiceBuilder::new()
        // Outermost: snapshot, request id and in-flight count for every request, refusals included.
        .layer(ObserveLayer::new(routes, in_flight.clone()))
        // Every error below becomes the contract's JSON answer, and refusals are recorded here;
        // nothing reaches hyper as an error.
        .layer(RescueLayer::new(metrics))
        // Steps 3-7, pure decisions in this order (`steps::route`, which `explain` runs too):
        // admit (shed load, unused methods, oversized bodies: before any work), legacy (refused
        // whatever else is wrong), guard (what a browser could be tricked into sending),
        // client_auth (who calls, before we say anything about tenants), tenant (which one; the
        // tag never goes upstream). Out comes a `Routed` request.
        .layer(FilterLayer::new(Route::new(in_flight.clone())))
        // From here the tenant is known: count requests by auth model and environment.
        .layer(RecordLayer)
        // One tenant or client is guaranteed its share of the in-flight slots, and may
        // borrow past it only while the gateway is a tenth short of its limit.
        .layer(ShareLayer::new(in_flight.clone()))
        // The client's headers are cleaned before the credential goes on, so none can remove it.
        .layer(FilterLayer::new(ScrubHeaders))
        // The tenant's Pleo credential; for OAuth tenants also the one retry after a 401.
        .layer(AttachLayer)
        .service(Proxy)
}
