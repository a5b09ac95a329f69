//! `telemetry`: OpenTelemetry traces over OTLP/HTTP (docs/telemetry.md).

use super::*;
use crate::config::model::TelemetryConfig;

pub(super) fn telemetry(raw: &RawConfig, found: &mut Found) -> TelemetryConfig {
    let mut out = TelemetryConfig::default();
    let Some(t) = &raw.telemetry else { return out };
    let at = path("telemetry");
    if let Some(endpoint) = &t.otlp_endpoint {
        match endpoint_error(endpoint) {
            None => out.otlp_endpoint = Some(endpoint.trim_end_matches('/').to_string()),
            Some(why) => found.push((at.clone().key("otlp_endpoint"), why)),
        }
    }
    if let Some(name) = &t.service_name {
        let plain = !name.is_empty() && name.len() <= 100 && name.chars().all(|c| c.is_ascii_graphic());
        if plain {
            out.service_name = name.clone();
        } else {
            found.push((at.clone().key("service_name"), "must be 1-100 printable ASCII characters, no spaces".into()));
        }
    }
    out.propagate_upstream = t.propagate_upstream.unwrap_or(false);
    out
}

/// Why an `otlp_endpoint` cannot be used, if it cannot. The value is a URL
/// the operator wrote; it may carry a collector's credentials, so it is
/// never echoed.
fn endpoint_error(endpoint: &str) -> Option<String> {
    if endpoint.starts_with("grpc://") {
        return Some(
            "OTLP over gRPC is not built in: use the collector's OTLP/HTTP receiver (http://host:4318; \
             docs/deviations.md)"
                .into(),
        );
    }
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return Some("is not a URL (expected http://host:4318 or https://...)".into());
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Some("must be an http:// or https:// URL of an OTLP/HTTP receiver (http://host:4318)".into());
    }
    if uri.query().is_some() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Some("must not carry a query or user info (put a collector's credentials elsewhere)".into());
    }
    None
}
