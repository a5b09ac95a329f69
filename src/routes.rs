//! The routing table: everything a request needs, prepared when the config
//! loads (tenant lookup, credential header values, upstream handles, metric
//! handles) so the hot path parses nothing and takes no lock. Requests read a
//! snapshot through `ArcSwap`; `observe` loads it once per request and every
//! later step reads that same snapshot, so a reload never splits a request.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, Request};

use crate::client_auth::ClientKeys;
use crate::config::{AuthModel, Config, Environment, Selector};
use crate::credential::Credential;
use crate::error::{ErrorCode, GatewayError};
use crate::metrics::{Metrics, TenantMetrics};
use crate::upstream::Upstream;
use crate::upstream::Upstreams;
use crate::BoxError;

/// One tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    pub id: Box<str>,
    pub environment: Environment,
    pub model: AuthModel,
    pub credential: Credential,
    pub upstream: Arc<Upstream>,
    pub metrics: TenantMetrics,
}

#[derive(Debug)]
pub struct Routes {
    pub tenants: HashMap<Box<str>, Arc<Tenant>>,
    pub selectors: Vec<Selector>,
    pub default_tenant: Option<Arc<Tenant>>,
    pub clients: ClientKeys,
    /// Headers that carry a tenant tag; removed before anything goes upstream.
    pub tenant_headers: Vec<HeaderName>,
}

pub type SharedRoutes = Arc<ArcSwap<Routes>>;

/// The routes a request is served with, put in its extensions by `observe`.
#[derive(Clone, Debug)]
pub struct Snapshot(pub Arc<Routes>);

impl Routes {
    pub fn build(config: &Config, upstreams: &Upstreams, metrics: &Metrics) -> Routes {
        let tenants: HashMap<Box<str>, Arc<Tenant>> = config
            .tenants
            .iter()
            .map(|(id, t)| {
                let model = t.auth.model();
                let tenant = Tenant {
                    id: id.as_str().into(),
                    environment: t.environment,
                    model,
                    credential: Credential::from_config(&t.auth),
                    upstream: upstreams.get(t.environment),
                    metrics: metrics.for_tenant(model, t.environment, id),
                };
                (id.as_str().into(), Arc::new(tenant))
            })
            .collect();
        metrics.set_tenants(|m, e| tenants.values().filter(|t| t.model == m && t.environment == e).count() as i64);
        let default_tenant = config.default_tenant.as_deref().and_then(|d| tenants.get(d).cloned());
        let tenant_headers = config
            .tenant_from
            .iter()
            .filter_map(|s| match s {
                Selector::Header(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        Routes {
            tenants,
            selectors: config.tenant_from.clone(),
            default_tenant,
            clients: ClientKeys::new(&config.clients),
            tenant_headers,
        }
    }
}

/// The snapshot `observe` attached. Missing only if the stack is mis-assembled.
pub fn snapshot<B>(req: &Request<B>) -> Result<Arc<Routes>, BoxError> {
    match req.extensions().get::<Snapshot>() {
        Some(s) => Ok(s.0.clone()),
        None => Err(GatewayError::new(ErrorCode::UpstreamUnavailable)
            .with_source("routes snapshot missing: observe layer not installed")
            .into()),
    }
}
