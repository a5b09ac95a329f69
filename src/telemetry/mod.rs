//! OpenTelemetry traces, opt-in (`telemetry.otlp_endpoint`; docs/telemetry.md).
//!
//! Spans are `tracing` spans of one target ([`TARGET`]); with an endpoint,
//! `tracing-opentelemetry` turns them into OpenTelemetry spans and
//! [`export`] sends them. Without one, nothing here runs: every helper
//! checks [`enabled`] (one relaxed load) and hands back `Span::none()`, and
//! the log layers ignore the target, so the request path pays nothing.
//!
//! The spans: one SERVER span per request (`{method} {route}`, the route
//! being the tenant rule's path prefix and the path template, never a raw
//! id), one CLIENT span per attempt upstream (`http.request.resend_count` on
//! the 401 replay), and an INTERNAL span per OAuth refresh and key check,
//! linked both ways with the requests that waited on them. Attributes
//! follow the HTTP semantic conventions; none carries a credential, a query
//! string or a client key.

pub mod export;
pub mod stats;

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderValue, Request};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::model::TelemetryConfig;

/// The target of every span meant for export; the log layers leave it out.
pub const TARGET: &str = "pleo_gateway::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROPAGATE: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once, at start).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running export: the provider and its task.
#[derive(Debug)]
pub struct Pipeline {
    provider: SdkTracerProvider,
    exporting: export::Exporting,
}

/// The layer that bridges [`TARGET`] spans to OpenTelemetry.
pub type OtelLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

impl Pipeline {
    /// Starts exporting, on the current tokio runtime, when an endpoint is
    /// configured. The layer goes into the subscriber (`cli::init_logging`).
    pub fn start(cfg: &TelemetryConfig) -> Result<Option<(Pipeline, OtelLayer)>, String> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        use tracing_subscriber::Layer as _;
        PROPAGATE.store(cfg.propagate_upstream, Ordering::Relaxed);
        let Some(endpoint) = &cfg.otlp_endpoint else { return Ok(None) };
        // https collectors are verified against the public roots, as Pleo is.
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let client = opentelemetry_http::hyper::HyperClient::new(connector, export::FLUSH_TIMEOUT, None);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_http_client(client)
            .build()
            .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
        let resource = Resource::builder().with_service_name(cfg.service_name.clone()).build();
        let (processor, exporting) = export::start(exporter, &resource, stats::stats());
        let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
        let tracer = provider.tracer("pleo-gateway");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| m.target() == TARGET))
            .boxed();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some((Pipeline { provider, exporting }, layer)))
    }

    /// Exports what is still queued (bounded), then stops.
    pub async fn finish(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let _ = self.exporting.finish().await;
        drop(self.provider);
    }
}

/// The SERVER span of a request, continuing the client's `traceparent`.
pub fn server_span<B>(req: &Request<B>) -> Span {
    if !enabled() {
        return Span::none();
    }
    // A client picks the method: one the HTTP conventions do not know is
    // `_OTHER` (and the span "HTTP"), so no client can mint span names.
    let method = known_method(req.method());
    let name = if method == "_OTHER" { "HTTP" } else { method };
    let span = tracing::info_span!(target: TARGET, "request", otel.name = name, otel.kind = "server");
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    let _ = span.set_parent(parent);
    span.set_attribute("http.request.method", method);
    if method == "_OTHER" {
        let original: String = req.method().as_str().chars().take(32).collect();
        span.set_attribute("http.request.method_original", original);
    }
    span.set_attribute("url.path", req.uri().path().to_string());
    span.set_attribute("url.scheme", req.uri().scheme_str().unwrap_or("http").to_string());
    span.set_attribute("network.protocol.version", version(req.version()));
    if let Some(agent) = req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
        span.set_attribute("user_agent.original", agent.to_string());
    }
    span
}

/// The trace id of a span, for the access log (lowercase hex).
pub fn trace_id(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Names the SERVER span once the tenant is known: `{method} {route}`.
pub fn record_route(span: &Span, method: &http::Method, route: &str, tenant: &str, model: &str, environment: &str) {
    if span.is_none() {
        return;
    }
    // Started already (entered, and its trace id read for the access log):
    // the name is changed on the OpenTelemetry span itself.
    span.context().span().update_name(format!("{} {route}", known_method(method)));
    span.set_attribute("http.route", route.to_string());
    span.set_attribute("pleo_gateway.tenant", tenant.to_string());
    span.set_attribute("pleo_gateway.auth_model", model.to_string());
    span.set_attribute("pleo_gateway.environment", environment.to_string());
}

/// The answer on a span: its status code, and `error.type` (the gateway's
/// error code, or the status) when it failed. Server spans fail on 5xx,
/// client spans on 4xx too (the HTTP semantic conventions).
pub fn record_status(span: &Span, status: u16, gateway_error: Option<&str>, client: bool) {
    if span.is_none() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    if let Some(code) = gateway_error {
        span.set_attribute("error.type", code.to_string());
    }
    let failed = status >= 500 || (client && status >= 400);
    if failed {
        if gateway_error.is_none() {
            span.set_attribute("error.type", status.to_string());
        }
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

/// A request that never got an answer from Pleo (unreachable, timed out).
pub fn record_failure(span: &Span, error_type: &str) {
    if span.is_none() {
        return;
    }
    span.set_attribute("error.type", error_type.to_string());
    span.set_status(opentelemetry::trace::Status::error(""));
}

/// The CLIENT span of one attempt upstream (`req` prepared for `base`),
/// child of the current span. `url.full` is scheme, host, port and path:
/// never the query.
pub fn client_span<B>(req: &Request<B>, base: &crate::config::BaseUrl, resend: u8) -> Span {
    if !enabled() {
        return Span::none();
    }
    let method = req.method().as_str();
    let path = req.uri().path();
    let template = crate::migration::template(path);
    let span = tracing::info_span!(target: TARGET, "upstream", otel.name = format!("{method} {template}"), otel.kind = "client");
    let https = base.scheme == http::uri::Scheme::HTTPS;
    let port = base.authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    span.set_attribute("http.request.method", method.to_string());
    span.set_attribute("server.address", base.authority.host().to_string());
    span.set_attribute("server.port", i64::from(port));
    span.set_attribute("url.full", format!("{}://{}{path}", base.scheme, base.authority));
    span.set_attribute("url.template", template);
    if resend > 0 {
        span.set_attribute("http.request.resend_count", i64::from(resend));
    }
    span
}

/// With `propagate_upstream`: Pleo gets the trace context of `span` (the
/// attempt's CLIENT span).
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_none() || !PROPAGATE.load(Ordering::Relaxed) {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
}

/// Whether the client's `traceparent`/`tracestate` may reach Pleo as sent:
/// only with `propagate_upstream` and no export (with export, [`inject`]
/// replaces them with the gateway's own).
pub fn pass_client_trace_context() -> bool {
    PROPAGATE.load(Ordering::Relaxed) && !enabled()
}

/// An INTERNAL root span for work requests may wait on (`name`: "oauth
/// refresh", "key check"), linked to the request that started it, if one did.
pub fn background_span(name: &'static str, tenant: &str, started_by: Option<SpanContext>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span =
        tracing::info_span!(target: TARGET, parent: None, "background", otel.name = name, otel.kind = "internal");
    span.set_attribute("pleo_gateway.tenant", tenant.to_string());
    if let Some(started_by) = started_by {
        span.add_link_with_attributes(started_by, vec![KeyValue::new("pleo_gateway.link", "started_by")]);
    }
    span
}

/// The context of the current span (a request's), if traces are exported.
pub fn current_context() -> Option<SpanContext> {
    if !enabled() {
        return None;
    }
    context_of(&Span::current())
}

/// Sets an attribute on a span that may be `Span::none()`.
pub fn set_attribute(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if !span.is_none() {
        span.set_attribute(key, value);
    }
}

/// The context of a span, to link to it later (`None` when not exporting).
pub fn context_of(span: &Span) -> Option<SpanContext> {
    if span.is_none() {
        return None;
    }
    Some(span.context().span().span_context().clone()).filter(SpanContext::is_valid)
}

/// Links the current span (a request's) to work it waited on.
pub fn link_current(to: Option<SpanContext>) {
    if let Some(to) = to.filter(|_| enabled()) {
        Span::current().add_link_with_attributes(to, vec![KeyValue::new("pleo_gateway.link", "waited_on")]);
    }
}

/// The method as the HTTP semantic conventions name it: one of the nine
/// they know, else `_OTHER`.
fn known_method(m: &http::Method) -> &'static str {
    use http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_the_conventions_do_not_know_are_other() {
        assert_eq!(known_method(&http::Method::PATCH), "PATCH");
        assert_eq!(known_method(&http::Method::from_bytes(b"PROPFIND").unwrap()), "_OTHER");
        assert_eq!(known_method(&http::Method::from_bytes(b"GETX").unwrap()), "_OTHER");
    }

    #[test]
    fn everything_is_a_no_op_while_nothing_is_exported() {
        let req =
            Request::get("/v2/x").header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let req = req.body(()).unwrap();
        assert!(server_span(&req).is_none());
        assert!(trace_id(&Span::none()).is_none());
        assert!(current_context().is_none());
        let mut headers = HeaderMap::new();
        inject(&Span::none(), &mut headers);
        assert!(headers.is_empty());
    }
}
