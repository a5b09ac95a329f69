//! Step 8 of 12 (the tenant is known from here): where a routed request's
//! outcome is recorded. Counts `requests_total` and
//! `request_duration_seconds` by auth model and environment (and tenant when
//! `metrics.per_tenant`), the `rewrites` rule that moved its path, and
//! Pleo's 404/405 per path template; and is the access record's one
//! writer of the tenant and the rewrite.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::code_of;
use crate::proxy::context::Routed;
use crate::proxy::routes::Tenant;
use crate::BoxError;

/// Counts `requests_total` and `request_duration_seconds` for requests whose
/// tenant is known; sits right after tenant resolution for that reason.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordLayer;

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;
    fn layer(&self, inner: S) -> Record<S> {
        Record { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
}

impl<S, B, RB> Service<Routed<B>> for Record<S>
where
    S: Service<Routed<B>, Response = Response<RB>, Error = BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Routed<B>) -> Self::Future {
        if let Some(slot) = &req.access {
            let _ = slot.tenant.set(req.tenant.labels());
            if let Some(r) = &req.rewrite {
                let _ = slot.rewrite.set(r.label.clone());
            }
        }
        // For Pleo's 404/405 (`GET /migration`): the path as the app sent it,
        // and who sent it. Clones of shared buffers, no copy.
        let path = match &req.rewrite {
            Some(r) => {
                r.counter.inc();
                Some(r.original.clone())
            }
            None => req.req.uri().path_and_query().cloned(),
        };
        if crate::telemetry::enabled() {
            let route = route(&req);
            let span = tracing::Span::current();
            let t = &req.tenant;
            crate::telemetry::record_route(
                &span,
                req.req.method(),
                &route,
                &t.id,
                t.model.as_str(),
                t.environment.as_str(),
            );
            crate::telemetry::set_attribute(&span, "pleo_gateway.tenant_rule", rule_name(&req));
        }
        let (tenant, client) = (req.tenant.clone(), req.client.clone());
        RecordFuture { inner: self.inner.call(req), tenant, started: Instant::now(), path, client }
    }
}

/// The route of a request for its SERVER span: the tenant rule's path
/// prefix (`/tenants/{tenant}`) and the path template as the app sent it,
/// ids folded to `{id}`.
fn route<B>(req: &Routed<B>) -> String {
    let path = match &req.rewrite {
        Some(r) => r.original.path(),
        None => req.req.uri().path(),
    };
    let template = crate::migration::template(path);
    match req.rule.and_then(|i| req.routes.selectors.get(i)) {
        Some(crate::config::Selector::PathPrefix(prefix)) => format!("{prefix}{{tenant}}{template}"),
        _ => template,
    }
}

/// Which `tenant_from` rule picked the tenant, for the SERVER span.
fn rule_name<B>(req: &Routed<B>) -> String {
    use crate::config::Selector;
    match req.rule.and_then(|i| req.routes.selectors.get(i)) {
        Some(Selector::Header(h)) => format!("header:{h}"),
        Some(Selector::PathPrefix(p)) => format!("path_prefix:{p}"),
        Some(Selector::HostSuffix(s)) => format!("host_suffix:{s}"),
        Some(Selector::ClientKey) => "client_key".into(),
        None => "default_tenant".into(),
    }
}

pin_project! {
    #[derive(Debug)]
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        tenant: Arc<Tenant>,
        started: Instant,
        path: Option<http::uri::PathAndQuery>,
        client: Option<Arc<crate::clients::Client>>,
    }
}

impl<F, RB> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<RB>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let t = this.tenant;
        let status = match &result {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => code_of(e).status().as_u16(),
        };
        t.metrics.count(status);
        // Pleo's own 5xx (the gateway's 502/503/504 arrive as errors).
        if matches!(&result, Ok(r) if r.status().is_server_error()) {
            t.metrics.upstream_5xx.inc();
        }
        // Pleo's own 404/405 (the gateway's refusals arrive as errors).
        if matches!(&result, Ok(r) if r.status() == 404 || r.status() == 405) {
            let path = this.path.as_ref().map_or("/", |p| p.path());
            t.migration.not_found(this.client.as_ref().map(|c| &*c.name), &t.id, path, status);
        }
        t.metrics.duration.observe(this.started.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}
