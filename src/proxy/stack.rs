//! The one place the request path is assembled, top-down in the order a
//! request travels (docs/architecture.md).

use std::sync::Arc;

use tower::filter::{Filter, FilterLayer};
use tower::ServiceBuilder;

use crate::metrics::Metrics;
use crate::proxy::routes::SharedRoutes;
use crate::proxy::steps::admit::{Admit, ShareLayer, Shares};
use crate::proxy::steps::attach::{Attach, AttachLayer};
use crate::proxy::steps::client_auth::AuthenticateClient;
use crate::proxy::steps::guard::GuardBrowsers;
use crate::proxy::steps::legacy::RefuseLegacy;
use crate::proxy::steps::observe::{Observe, ObserveLayer};
use crate::proxy::steps::proxy::Proxy;
use crate::proxy::steps::record::{Record, RecordLayer};
use crate::proxy::steps::rescue::{Rescue, RescueLayer};
use crate::proxy::steps::scrub::ScrubHeaders;
use crate::proxy::steps::tenant::ResolveTenant;
use crate::share::InFlightCount;

type Inner = Record<Shares<Filter<Attach<Proxy>, ScrubHeaders>>>;

/// The whole gateway as one tower service (`Error = Infallible`).
pub type GatewayService = Observe<
    Rescue<
        Filter<
            Filter<Filter<Filter<Filter<Inner, ResolveTenant>, AuthenticateClient>, GuardBrowsers>, RefuseLegacy>,
            Admit,
        >,
    >,
>;

pub fn build(routes: SharedRoutes, metrics: Arc<Metrics>, in_flight: InFlightCount) -> GatewayService {
    ServiceBuilder::new()
        // Outermost: snapshot, request id and in-flight count for every request, refusals included.
        .layer(ObserveLayer::new(routes, in_flight.clone()))
        // Every error below becomes the contract's JSON answer; nothing reaches hyper as an error.
        .layer(RescueLayer::new(metrics.clone()))
        // Shed load, refuse unused methods and oversized bodies before doing any work for them.
        .layer(FilterLayer::new(Admit::new(in_flight)))
        // Legacy host/credentials first: they are refused whatever else is wrong.
        .layer(FilterLayer::new(RefuseLegacy))
        // Then what a browser could be tricked into sending (DNS rebinding, cross-site).
        .layer(FilterLayer::new(GuardBrowsers))
        // Who is calling, before we tell them anything about tenants.
        .layer(FilterLayer::new(AuthenticateClient))
        // Which tenant; strips the tag so it never goes upstream.
        .layer(FilterLayer::new(ResolveTenant))
        // From here the tenant is known: count requests by auth model and environment.
        .layer(RecordLayer)
        // One tenant or client may hold only its share of the in-flight slots.
        .layer(ShareLayer)
        // The client's headers are cleaned before the credential goes on, so none can remove it.
        .layer(FilterLayer::new(ScrubHeaders))
        // The tenant's Pleo credential; for OAuth tenants also the one retry after a 401.
        .layer(AttachLayer)
        .service(Proxy)
}
