//! The gateway's own answers: the error table (docs/errors.md) written once, as data,
//! and the rescue layer that turns any error from the stack into that JSON
//! body plus `x-pleo-gateway-error`. The service hyper sees never fails: an
//! error reaching hyper would reset the connection without a response.

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::BoxError;

/// Name of the header that marks an answer as the gateway's, not Pleo's.
pub const ERROR_HEADER: &str = "x-pleo-gateway-error";

/// Every refusal or failure the gateway answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    TenantRequired,
    UnknownTenant,
    LegacyTokenRefused,
    LegacyHostRefused,
    ClientUnauthenticated,
    TenantForbidden,
    CredentialUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    RequestBodyTooLarge,
    Overloaded,
    MethodNotAllowed,
    HostNotAllowed,
    CrossSiteRefused,
    AmbiguousRequest,
    RequestBodyTimeout,
    AdminUnauthenticated,
    TenantUninstalled,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::TenantRequired,
        ErrorCode::UnknownTenant,
        ErrorCode::LegacyTokenRefused,
        ErrorCode::LegacyHostRefused,
        ErrorCode::ClientUnauthenticated,
        ErrorCode::TenantForbidden,
        ErrorCode::CredentialUnavailable,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamTimeout,
        ErrorCode::RequestBodyTooLarge,
        ErrorCode::Overloaded,
        ErrorCode::MethodNotAllowed,
        ErrorCode::HostNotAllowed,
        ErrorCode::CrossSiteRefused,
        ErrorCode::AmbiguousRequest,
        ErrorCode::RequestBodyTimeout,
        ErrorCode::AdminUnauthenticated,
        ErrorCode::TenantUninstalled,
    ];

    /// Status, code and message side by side: docs/errors.md.
    fn spec(self) -> (StatusCode, &'static str, &'static str) {
        use ErrorCode::*;
        match self {
            TenantRequired => (StatusCode::BAD_REQUEST, "tenant_required",
                "No tenant given. Tag the request with the X-Pleo-Tenant header (or the configured tenant rule, such as a /tenants/<name>/ path prefix), or configure default_tenant."),
            UnknownTenant => (StatusCode::FORBIDDEN, "unknown_tenant",
                "The tenant named by this request is not configured on this gateway. Check the tenant name, or add the tenant to gateway.yaml."),
            LegacyTokenRefused => (StatusCode::UNAUTHORIZED, "legacy_token_refused",
                "This request carries a credential the gateway does not issue (such as a legacy openapi.pleo.io API token). Legacy tokens do not work on Pleo's External API and are never forwarded: remove the Authorization header (the gateway attaches the tenant's External API credential), or send your gateway client key."),
            LegacyHostRefused => (StatusCode::MISDIRECTED_REQUEST, "legacy_host_refused",
                "This request is addressed to the legacy API openapi.pleo.io, which is deprecated. Point the app's base URL at this gateway instead; it forwards to Pleo's External API."),
            ClientUnauthenticated => (StatusCode::UNAUTHORIZED, "client_unauthenticated",
                "This gateway requires a gateway client key. Send it as Authorization: Bearer <key>."),
            TenantForbidden => (StatusCode::FORBIDDEN, "tenant_forbidden",
                "Your gateway client key may not use this tenant. Ask the gateway's operator to add the tenant to your client's list."),
            CredentialUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "credential_unavailable",
                "The tenant's Pleo credential is missing, rejected or needs renewing. The gateway's operator must fix the tenant's credential."),
            UpstreamUnavailable => (StatusCode::BAD_GATEWAY, "upstream_unavailable",
                "The gateway could not reach Pleo (connection, TLS or reset). Retry later; if it persists, check the gateway's network and environment base URL."),
            UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout",
                "Pleo did not answer in time. Retry later."),
            RequestBodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_body_too_large",
                "The request body is larger than this gateway accepts (limits.max_request_body_bytes). Send a smaller body, or ask the gateway's operator to raise the limit."),
            Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded",
                "The gateway is handling as many requests as it is allowed to (limits.max_in_flight, or this client's or tenant's share of it). Retry after the time in Retry-After."),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed",
                "Pleo's External API uses GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS only; other methods are not forwarded."),
            HostNotAllowed => (StatusCode::MISDIRECTED_REQUEST, "host_not_allowed",
                "This gateway does not serve the host name in this request. Use a loopback name or IP address, or ask the gateway's operator to add the name to allowed_hosts."),
            CrossSiteRefused => (StatusCode::FORBIDDEN, "cross_site_refused",
                "A browser marked this request as coming from another site. Web pages may not use the gateway's credentials; call it from a server-side app, or ask the gateway's operator to add the page's origin to allowed_origins."),
            AmbiguousRequest => (StatusCode::BAD_REQUEST, "ambiguous_request",
                "This request names its tenant or host more than once, or in a malformed way. Send exactly one tenant tag and one Host."),
            RequestBodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_body_timeout",
                "The request body stopped arriving (limits.body_read_timeout between two parts of it). Send the body without pauses."),
            AdminUnauthenticated => (StatusCode::UNAUTHORIZED, "admin_unauthenticated",
                "This admin endpoint needs an admin token. Send it as Authorization: Bearer <token> (admin.tokens holds its SHA-256)."),
            TenantUninstalled => (StatusCode::SERVICE_UNAVAILABLE, "tenant_uninstalled",
                "This tenant was made by an install from Pleo, and that installation was removed (from Pleo, from its settings page or by the gateway's operator). Nothing is sent to Pleo for it; the customer must install the app again from Pleo's marketplace."),
        }
    }

    pub fn status(self) -> StatusCode {
        self.spec().0
    }

    pub fn as_str(self) -> &'static str {
        self.spec().1
    }

    pub fn message(self) -> &'static str {
        self.spec().2
    }
}

/// An error the gateway answers itself. `detail` is written by us (never a
/// header value a client sent, never a secret); `source` is for the log.
#[derive(Debug)]
pub struct GatewayError {
    pub code: ErrorCode,
    detail: Option<String>,
    source: Option<BoxError>,
}

impl GatewayError {
    pub fn new(code: ErrorCode) -> Self {
        GatewayError { code, detail: None, source: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The JSON answer for the app.
    /// The message the answer's body carries: the detail, then what to do.
    pub fn full_message(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} {}", d, self.code.message()),
            None => self.code.message().to_string(),
        }
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let message = self.full_message();
        let body = serde_json::json!({ "error": self.code.as_str(), "message": message }).to_string();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.code.status();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code.as_str()));
        if self.code == ErrorCode::Overloaded {
            // Shedding lasts as long as the burst; a second is the usual wait.
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_str())?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The code an error from the stack answers with. Anything that is not a
/// GatewayError is a bug on our side; it is logged and answered as 502.
pub fn code_of(err: &BoxError) -> ErrorCode {
    err.downcast_ref::<GatewayError>().map(|e| e.code).unwrap_or(ErrorCode::UpstreamUnavailable)
}

/// The first error of type `T` in `err`'s chain, `err` included.
pub fn find<'a, T: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// Renders `err` and its causes on one line, for the log.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_contract_status() {
        let table = [
            (400, "tenant_required"),
            (403, "unknown_tenant"),
            (401, "legacy_token_refused"),
            (421, "legacy_host_refused"),
            (401, "client_unauthenticated"),
            (403, "tenant_forbidden"),
            (503, "credential_unavailable"),
            (502, "upstream_unavailable"),
            (504, "upstream_timeout"),
            (413, "request_body_too_large"),
            (503, "overloaded"),
            (405, "method_not_allowed"),
            (421, "host_not_allowed"),
            (403, "cross_site_refused"),
            (400, "ambiguous_request"),
            (408, "request_body_timeout"),
            (401, "admin_unauthenticated"),
        ];
        for (code, (status, name)) in ErrorCode::ALL.iter().zip(table) {
            assert_eq!(code.status().as_u16(), status, "{name}");
            assert_eq!(code.as_str(), name);
        }
    }

    #[test]
    fn response_is_json_with_marker_header() {
        let resp =
            GatewayError::new(ErrorCode::UnknownTenant).with_detail("Tenant `x` is not configured.").to_response();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[ERROR_HEADER], "unknown_tenant");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }
}
