//! Step 10 of 12: only the gateway decides what Pleo sees.
//!
//! Runs after the tenant is known and before its credential is attached, so
//! nothing a client sends can remove or replace that credential. (It used to
//! run after: `Connection: authorization` made the hop-by-hop strip delete
//! the gateway's own credential, Pleo answered 401, and every such request
//! rotated the tenant's refresh token.)
//!
//! Removes from the request:
//! - hop-by-hop headers and every header `Connection` names (RFC 9110 7.6.1);
//! - anything that carries a credential or session: `Authorization`,
//!   `Proxy-Authorization`, `Cookie`, API-key headers;
//! - forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) unless
//!   `trust_forwarded_headers` is set: a client must not choose what Pleo
//!   believes about where a request came from;
//! - W3C trace context (`traceparent`, `tracestate`) unless
//!   `telemetry.propagate_upstream`: the spec warns against leaking trace
//!   context to third parties, and Pleo is one. With it and traces
//!   exported, `proxy` sends the gateway's own context instead.
//!
//! `x-request-id` survives a `Connection` listing: observe set it for Pleo
//! and the app alike.

use http::{header, HeaderMap, HeaderName};
use tower::filter::Predicate;

use crate::proxy::context::Routed;
use crate::proxy::steps::observe::REQUEST_ID;
use crate::upstream::{connection_named, HOP_BY_HOP};
use crate::BoxError;

/// Headers that carry a credential or a browser session: never forwarded,
/// whatever the client meant by them.
const CREDENTIALS: [HeaderName; 7] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-auth-token"),
    HeaderName::from_static("x-access-token"),
];

/// W3C trace context: the app's, never sent on to Pleo by default.
const TRACE_CONTEXT: [HeaderName; 2] = [HeaderName::from_static("traceparent"), HeaderName::from_static("tracestate")];

/// What a client could use to claim another address or scheme.
const FORWARDING: [HeaderName; 7] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
];

#[derive(Clone, Copy, Debug, Default)]
pub struct ScrubHeaders;

impl<B> Predicate<Routed<B>> for ScrubHeaders {
    type Request = Routed<B>;

    fn check(&mut self, mut req: Routed<B>) -> Result<Routed<B>, BoxError> {
        let keep = Keep::of(&req.routes);
        scrub(req.req.headers_mut(), keep);
        Ok(req)
    }
}

/// Which of the optional headers a client's request keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keep {
    /// `trust_forwarded_headers`.
    pub forwarded: bool,
    /// `telemetry.propagate_upstream` without export: the app's own trace context.
    pub trace_context: bool,
}

impl Keep {
    /// What the config now serving (and the process's telemetry) keeps.
    pub fn of(routes: &crate::proxy::routes::Routes) -> Keep {
        Keep { forwarded: routes.trust_forwarded_headers, trace_context: crate::telemetry::pass_client_trace_context() }
    }
}

/// Removes what must not reach Pleo from a client's headers.
pub fn scrub(headers: &mut HeaderMap, keep: Keep) {
    // Most requests carry none of these: one pass over the few headers
    // there are, instead of a lookup for each of the 23 names.
    if !headers.keys().any(|k| stripped(k, keep)) {
        return;
    }
    for name in connection_named(headers).into_iter().filter(|n| *n != REQUEST_ID) {
        headers.remove(name);
    }
    let gone: Vec<HeaderName> = headers.keys().filter(|k| stripped(k, keep)).cloned().collect();
    for name in gone {
        headers.remove(name);
    }
}

/// Whether a header of this name never goes to Pleo.
fn stripped(name: &HeaderName, keep: Keep) -> bool {
    HOP_BY_HOP.contains(name)
        || CREDENTIALS.contains(name)
        || (!keep.forwarded && FORWARDING.contains(name))
        || (!keep.trace_context && TRACE_CONTEXT.contains(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn connection_cannot_protect_or_remove_what_the_gateway_sets() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("authorization, x-request-id, x-custom"));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert(header::COOKIE, HeaderValue::from_static("session=1"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("traceparent", HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        h.insert("tracestate", HeaderValue::from_static("vendor=secret"));
        scrub(&mut h, Keep::default());
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["x-kept", "x-request-id"]);

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("traceparent", HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        scrub(&mut h, Keep { forwarded: true, trace_context: true });
        assert!(h.contains_key("x-forwarded-for"));
        assert!(h.contains_key("traceparent"), "propagate_upstream without export passes the app's context");
    }
}
