//! Prometheus metrics (docs/errors.md). Every family is created up front on
//! a Registry the caller owns (no global registry: tests each make their own).
//! Label values come from closed enums; the `tenant` label is opt-in
//! (`metrics.per_tenant`) because tenants are unbounded in number.
//! Handles are looked up once per tenant when the config loads, not per request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::config::{AuthModel, Environment};
use crate::error::ErrorCode;

const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Statuses common enough to keep a ready counter handle for.
const COMMON_STATUSES: [u16; 14] = [200, 201, 202, 204, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503];

/// One OAuth session's refresh counters (`refresh.rs` counts into them).
#[derive(Debug)]
pub struct RefreshMetrics {
    pub success: IntCounter,
    pub failure: IntCounter,
    pub duration: Histogram,
    /// 401s that did not force a refresh: the token was just obtained, or
    /// the tenant had a forced refresh within `forced_refresh_interval`.
    pub suppressed_fresh: IntCounter,
    pub suppressed_rate: IntCounter,
}

/// The shared store's health (`store.kind: postgres`): whether it answers,
/// and each operation's time and failures. The file store reports nothing.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    pub up: IntGauge,
    duration: HistogramVec,
    errors: IntCounterVec,
}

/// The store's operations, the `op` label's closed set.
pub const STORE_OPS: [&str; 8] = ["load", "lease", "mark", "commit", "release", "save", "poll", "migrate"];

impl StoreMetrics {
    pub fn observe(&self, op: &'static str, seconds: f64, ok: bool) {
        self.duration.with_label_values(&[op]).observe(seconds);
        if !ok {
            self.errors.with_label_values(&[op]).inc();
        }
        self.up.set(i64::from(ok));
    }

    /// Store operations made so far, all kinds together (tests count them around proxied requests).
    pub fn operations(&self) -> u64 {
        STORE_OPS.iter().map(|op| self.duration.with_label_values(&[op]).get_sample_count()).sum()
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub store: StoreMetrics,
    per_tenant: bool,
    /// Without `per_tenant`: one set of request handles per auth model and environment.
    shared_tenant_metrics: std::sync::Mutex<HashMap<(AuthModel, Environment), Arc<TenantMetrics>>>,
    requests_total: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    refused_total: Vec<(ErrorCode, IntCounter)>,
    credential_rejected_total: IntCounterVec,
    token_refresh_total: IntCounterVec,
    token_refresh_duration: Histogram,
    forced_refresh_suppressed: IntCounterVec,
    tenants: IntGaugeVec,
    installations: IntGaugeVec,
    /// `pleo_gateway_onboardings_total{model,result}`: connect links and the API.
    pub onboardings_total: IntCounterVec,
    /// `pleo_gateway_installs_total{app,result}`: installs from Pleo (docs/installs.md).
    pub installs_total: IntCounterVec,
    /// `pleo_gateway_handover_refused_total{app,reason}`.
    pub handover_refused_total: IntCounterVec,
    /// `pleo_gateway_installed_tenants{app,resource,status}`, set at scrape time.
    pub installed_tenants: IntGaugeVec,
    /// Pleo's 404/405 answers by path template, and legacy tokens by client (`GET /migration`).
    pub migration: std::sync::Arc<crate::migration::MigrationLog>,
    rewrites_total: IntCounterVec,
    pub in_flight: IntGauge,
    pub config_reloads_total: IntCounterVec,
    legacy_token_refused_total: IntCounterVec,
    upstream_5xx_total: IntCounterVec,
    /// The state of each tenant's credential, counted (set at scrape time).
    tenant_states: IntGaugeVec,
    /// `limits.max_in_flight` of the config now serving.
    pub in_flight_limit: IntGauge,
    /// Client connections open, by listener (`gateway`, `connect`, `admin`).
    pub open_connections: IntGaugeVec,
    pub idle_connections_evicted: IntCounterVec,
    config_last_reload_successful: IntGauge,
    config_last_reload_success: Gauge,
    certificate_expiry: GaugeVec,
}

/// The `state` label values of `pleo_gateway_tenant_states` for one auth
/// model: the OAuth session states, or the API-key check states.
pub const OAUTH_STATES: [&str; 11] = [
    "configured",
    "starting",
    "connected",
    "refreshing",
    "refresh_failing",
    "persist_failed",
    "reauthorization_required",
    "not_connected",
    "client_rejected",
    "state_error",
    "store_unavailable",
];
pub const KEY_STATES: [&str; 5] = ["pending", "connected", "rejected", "unverified", "degraded"];

impl Metrics {
    pub fn register(registry: &Registry, per_tenant: bool) -> prometheus::Result<Metrics> {
        let scoped: &[&str] =
            if per_tenant { &["auth_model", "environment", "tenant"] } else { &["auth_model", "environment"] };
        let with_status: Vec<&str> = scoped.iter().copied().chain(["status"]).collect();

        let requests_total = IntCounterVec::new(
            Opts::new("pleo_gateway_requests_total", "Requests answered for a resolved tenant, by status."),
            &with_status,
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "pleo_gateway_request_duration_seconds",
                "Time from request arrival to response headers, for a resolved tenant.",
            )
            .buckets(BUCKETS.to_vec()),
            scoped,
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new("pleo_gateway_upstream_duration_seconds", "Time Pleo took to answer with headers.")
                .buckets(BUCKETS.to_vec()),
            scoped,
        )?;
        let refused = IntCounterVec::new(
            Opts::new("pleo_gateway_refused_total", "Requests the gateway answered itself, by error code."),
            &["reason"],
        )?;
        let credential_rejected_total = IntCounterVec::new(
            Opts::new("pleo_gateway_credential_rejected_total", "Pleo answered 401 or 403 to a tenant's credential."),
            &["auth_model"],
        )?;
        let token_refresh_total = IntCounterVec::new(
            Opts::new("pleo_gateway_token_refresh_total", "OAuth token refreshes, by result."),
            &["result"],
        )?;
        let token_refresh_duration = Histogram::with_opts(
            HistogramOpts::new(
                "pleo_gateway_token_refresh_duration_seconds",
                "Time one call to an OAuth token endpoint took, whatever the result.",
            )
            .buckets(BUCKETS.to_vec()),
        )?;
        let forced_refresh_suppressed = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_forced_refresh_suppressed_total",
                "401s from Pleo that did not force an OAuth refresh: the token was fresh (fresh_token) or the \
                 tenant had a forced refresh within limits.forced_refresh_interval (rate_limited).",
            ),
            &["reason"],
        )?;
        let tenants =
            IntGaugeVec::new(Opts::new("pleo_gateway_tenants", "Configured tenants."), &["auth_model", "environment"])?;
        let installations = IntGaugeVec::new(
            Opts::new(
                "pleo_gateway_installations",
                "API-key tenants by the installation status Pleo reports (GET /v1/installations/me).",
            ),
            &["status"],
        )?;
        let in_flight = IntGauge::new("pleo_gateway_in_flight_requests", "Requests being handled, bodies included.")?;
        let config_reloads_total = IntCounterVec::new(
            Opts::new("pleo_gateway_config_reloads_total", "Config reloads, by result."),
            &["result"],
        )?;

        // Bounded by the config: one series per named legacy token, plus "unnamed".
        let legacy_token_refused_total = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_legacy_token_refused_total",
                "Refused requests that carried a credential the gateway does not issue, by the legacy_tokens \
                 name of the app it belongs to (\"unnamed\" when not listed).",
            ),
            &["app"],
        )?;
        legacy_token_refused_total.with_label_values(&["unnamed"]);

        let upstream_5xx_total = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_upstream_5xx_total",
                "Responses with a 5xx status from Pleo itself (the gateway's own 502/503/504 are in refused_total).",
            ),
            scoped,
        )?;
        let tenant_states = IntGaugeVec::new(
            Opts::new(
                "pleo_gateway_tenant_states",
                "Tenants by the state of their credential (/tenants): OAuth session states, API-key check states.",
            ),
            &["auth_model", "state"],
        )?;
        let in_flight_limit =
            IntGauge::new("pleo_gateway_in_flight_limit", "limits.max_in_flight of the config now serving.")?;
        let open_connections = IntGaugeVec::new(
            Opts::new("pleo_gateway_open_connections", "Client connections open, by listener."),
            &["listener"],
        )?;
        let idle_connections_evicted = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_idle_connections_evicted_total",
                "Idle client connections closed to make room for a new one at limits.max_connections, by listener.",
            ),
            &["listener"],
        )?;
        for l in ["gateway", "connect", "admin"] {
            open_connections.with_label_values(&[l]);
            idle_connections_evicted.with_label_values(&[l]);
        }
        let config_last_reload_successful = IntGauge::new(
            "pleo_gateway_config_last_reload_successful",
            "1 when the last config reload (or the start) succeeded, 0 when it failed and the previous config serves.",
        )?;
        let config_last_reload_success = Gauge::new(
            "pleo_gateway_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (the start or a reload).",
        )?;
        let certificate_expiry = GaugeVec::new(
            Opts::new(
                "pleo_gateway_certificate_expiry_timestamp_seconds",
                "Unix time the certificate expires (notAfter), by certificate: listen, connect, client_ca \
                 (the earliest of the CA file's certificates).",
            ),
            &["certificate"],
        )?;
        for m in [
            Box::new(upstream_5xx_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tenant_states.clone()),
            Box::new(in_flight_limit.clone()),
            Box::new(open_connections.clone()),
            Box::new(idle_connections_evicted.clone()),
            Box::new(config_last_reload_successful.clone()),
            Box::new(config_last_reload_success.clone()),
            Box::new(certificate_expiry.clone()),
        ] {
            registry.register(m)?;
        }
        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(legacy_token_refused_total.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(credential_rejected_total.clone()))?;
        registry.register(Box::new(token_refresh_total.clone()))?;
        registry.register(Box::new(token_refresh_duration.clone()))?;
        registry.register(Box::new(forced_refresh_suppressed.clone()))?;
        registry.register(Box::new(tenants.clone()))?;
        registry.register(Box::new(installations.clone()))?;
        let onboardings_total = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_onboardings_total",
                "Connections made, rotated, refused and removed (connect links and the management API), by result.",
            ),
            &["model", "result"],
        )?;
        registry.register(Box::new(onboardings_total.clone()))?;
        // Bounded by the config: one series per app and closed result, reason and status sets.
        let installs_total = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_installs_total",
                "Installs from Pleo's marketplace (Initiation URI, Settings, the management API), by app and result.",
            ),
            &["app", "result"],
        )?;
        let handover_refused_total = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_handover_refused_total",
                "Session handover tokens (pleo_id_token) refused, by app and reason.",
            ),
            &["app", "reason"],
        )?;
        let installed_tenants = IntGaugeVec::new(
            Opts::new(
                "pleo_gateway_installed_tenants",
                "Tenants installs from Pleo made, by app, resource (company, organisation) and status \
                 (Pleo's installation status in lower case, uninstalled, uninstalled_or_revoked, app_removed).",
            ),
            &["app", "resource", "status"],
        )?;
        registry.register(Box::new(installs_total.clone()))?;
        registry.register(Box::new(handover_refused_total.clone()))?;
        registry.register(Box::new(installed_tenants.clone()))?;
        let migration = std::sync::Arc::new(crate::migration::MigrationLog::register(registry, 100)?);
        // Bounded by the config: one series per rewrite rule.
        let rewrites_total = IntCounterVec::new(
            Opts::new("pleo_gateway_rewrites_total", "Requests whose path a `rewrites` rule changed, by rule."),
            &["rule"],
        )?;
        registry.register(Box::new(rewrites_total.clone()))?;
        for s in crate::config::model::InstallationStatus::ALL {
            installations.with_label_values(&[s.label()]);
        }
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(config_reloads_total.clone()))?;
        let store = StoreMetrics {
            up: IntGauge::new(
                "pleo_gateway_store_up",
                "1 when the shared token store (store.kind: postgres) answered its last operation, else 0.",
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "pleo_gateway_store_operation_duration_seconds",
                    "Time of each shared token store operation, by operation.",
                )
                .buckets(BUCKETS.to_vec()),
                &["op"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("pleo_gateway_store_errors_total", "Failed shared token store operations, by operation."),
                &["op"],
            )?,
        };
        for op in STORE_OPS {
            store.duration.with_label_values(&[op]);
            store.errors.with_label_values(&[op]);
        }
        registry.register(Box::new(store.up.clone()))?;
        registry.register(Box::new(store.duration.clone()))?;
        registry.register(Box::new(store.errors.clone()))?;

        // Create the closed label sets now so they read 0 instead of being absent.
        let refused_total = ErrorCode::ALL.iter().map(|c| (*c, refused.with_label_values(&[c.as_str()]))).collect();
        for m in AuthModel::ALL {
            credential_rejected_total.with_label_values(&[m.as_str()]);
        }
        for r in ["fresh_token", "rate_limited"] {
            forced_refresh_suppressed.with_label_values(&[r]);
        }
        for r in ["success", "failure"] {
            token_refresh_total.with_label_values(&[r]);
            config_reloads_total.with_label_values(&[r]);
        }

        Ok(Metrics {
            store,
            per_tenant,
            shared_tenant_metrics: Default::default(),
            requests_total,
            request_duration,
            upstream_duration,
            refused_total,
            credential_rejected_total,
            token_refresh_total,
            token_refresh_duration,
            forced_refresh_suppressed,
            tenants,
            installations,
            onboardings_total,
            installs_total,
            handover_refused_total,
            installed_tenants,
            migration,
            rewrites_total,
            in_flight,
            config_reloads_total,
            legacy_token_refused_total,
            upstream_5xx_total,
            tenant_states,
            in_flight_limit,
            open_connections,
            idle_connections_evicted,
            config_last_reload_successful,
            config_last_reload_success,
            certificate_expiry,
        })
    }

    /// A config load's outcome: the start and every reload.
    pub fn config_loaded(&self, ok: bool) {
        self.config_last_reload_successful.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.config_last_reload_success.set(now.as_secs_f64());
        }
    }

    /// The certificates served now (`tls::expiries`): a certificate no longer
    /// configured leaves the gauge.
    pub fn set_certificate_expiry(&self, expiries: &[(&'static str, f64)]) {
        self.certificate_expiry.reset();
        for (which, at) in expiries {
            self.certificate_expiry.with_label_values(&[which]).set(*at);
        }
    }

    /// Sets `pleo_gateway_tenant_states` from one `(auth_model, state)` per tenant.
    pub fn set_tenant_states<'a>(&self, states: impl Iterator<Item = (AuthModel, &'a str)>) {
        let mut counts: std::collections::HashMap<(AuthModel, &str), i64> = Default::default();
        for k in states {
            *counts.entry(k).or_default() += 1;
        }
        for m in AuthModel::ALL {
            let known: &[&str] = if m == AuthModel::OAuth2 { &OAUTH_STATES } else { &KEY_STATES };
            for s in known {
                let n = counts.remove(&(m, *s)).unwrap_or(0);
                self.tenant_states.with_label_values(&[m.as_str(), s]).set(n);
            }
        }
        // A state outside the closed sets (a tenant not managed by the gateway) still counts.
        for ((m, s), n) in counts {
            self.tenant_states.with_label_values(&[m.as_str(), s]).set(n);
        }
    }

    /// The counter of one rewrite rule (by its label).
    pub fn rewrite(&self, label: &str) -> prometheus::IntCounter {
        self.rewrites_total.with_label_values(&[label])
    }

    /// Sets `pleo_gateway_installations{status}` from a count per status.
    pub fn set_installations(&self, count: impl Fn(crate::config::model::InstallationStatus) -> i64) {
        for s in crate::config::model::InstallationStatus::ALL {
            self.installations.with_label_values(&[s.label()]).set(count(s));
        }
    }

    pub fn refused(&self, code: ErrorCode) {
        if let Some((_, c)) = self.refused_total.iter().find(|(k, _)| *k == code) {
            c.inc();
        }
    }

    /// The handles one OAuth session reports its refreshes with.
    pub fn refresh_metrics(&self) -> RefreshMetrics {
        RefreshMetrics {
            success: self.token_refresh_total.with_label_values(&["success"]),
            failure: self.token_refresh_total.with_label_values(&["failure"]),
            duration: self.token_refresh_duration.clone(),
            suppressed_fresh: self.forced_refresh_suppressed.with_label_values(&["fresh_token"]),
            suppressed_rate: self.forced_refresh_suppressed.with_label_values(&["rate_limited"]),
        }
    }

    /// The refusal counter of one legacy app (`legacy_tokens[].name`, or "unnamed").
    pub fn legacy_token(&self, app: &str) -> IntCounter {
        self.legacy_token_refused_total.with_label_values(&[app])
    }

    /// Sets the tenant gauge from the loaded tenants (all label sets, zeros included).
    pub fn set_tenants(&self, counts: impl Fn(AuthModel, Environment) -> i64) {
        for m in AuthModel::ALL {
            for e in Environment::ALL {
                self.tenants.with_label_values(&[m.as_str(), e.as_str()]).set(counts(m, e));
            }
        }
    }

    /// The handles one tenant's requests are counted with. Without
    /// `per_tenant` every tenant of one auth model and environment counts
    /// into the same series, so they share one set of handles: at 100,000
    /// tenants a set each was 37 MB of identical handles.
    pub fn for_tenant(&self, model: AuthModel, env: Environment, tenant: &str) -> Arc<TenantMetrics> {
        if self.per_tenant {
            return Arc::new(self.tenant_handles(&[model.as_str(), env.as_str(), tenant], model));
        }
        let mut shared = self.shared_tenant_metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        shared
            .entry((model, env))
            .or_insert_with(|| Arc::new(self.tenant_handles(&[model.as_str(), env.as_str()], model)))
            .clone()
    }

    fn tenant_handles(&self, scoped: &[&str], model: AuthModel) -> TenantMetrics {
        TenantMetrics {
            requests: self.requests_total.clone(),
            labels: scoped.iter().map(|s| s.to_string()).collect(),
            statuses: Default::default(),
            duration: self.request_duration.with_label_values(scoped),
            upstream: self.upstream_duration.with_label_values(scoped),
            upstream_5xx: self.upstream_5xx_total.with_label_values(scoped),
            rejected: self.credential_rejected_total.with_label_values(&[model.as_str()]),
        }
    }
}

/// One tenant's metric handles, kept with the tenant.
#[derive(Debug)]
pub struct TenantMetrics {
    requests: IntCounterVec,
    labels: Vec<String>,
    /// Handles for COMMON_STATUSES, made on first use so /metrics lists only
    /// statuses that happened.
    statuses: [OnceLock<IntCounter>; COMMON_STATUSES.len()],
    pub duration: Histogram,
    pub upstream: Histogram,
    /// Pleo's own 5xx answers (`record` counts them).
    pub upstream_5xx: IntCounter,
    pub rejected: IntCounter,
}

impl TenantMetrics {
    pub fn count(&self, status: u16) {
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.statuses[i].get_or_init(|| self.handle(status)).inc(),
            // Rare status: look the label set up on the spot.
            None => self.handle(status).inc(),
        }
    }

    fn handle(&self, status: u16) -> IntCounter {
        let text = status.to_string();
        let mut labels: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        labels.push(&text);
        self.requests.with_label_values(&labels)
    }
}

/// `pleo_gateway_token_expiry_seconds{tenant}`: one series per OAuth tenant.
pub const TOKEN_EXPIRY: TenantGauge = TenantGauge {
    name: "pleo_gateway_token_expiry_seconds",
    help: "Seconds until the OAuth tenant's current access token expires (0: none).",
};
/// `pleo_gateway_token_refresh_failing{tenant}`.
pub const TOKEN_REFRESH_FAILING: TenantGauge = TenantGauge {
    name: "pleo_gateway_token_refresh_failing",
    help: "1 while the OAuth tenant's refreshes fail (refresh_failing, persist_failed, store_unavailable), else 0.",
};

/// A gauge with one series per tenant, written at scrape time straight
/// from the state it reports, in the text exposition format.
///
/// Why not a `GaugeVec`: OAuth tenants made by installs number in the tens
/// of thousands, and each child of a prometheus `GaugeVec` keeps its own
/// copy of the family's description and label pairs (about 400 bytes per
/// series: 41 MB for 50,000 OAuth installs' two gauges), and every scrape
/// copies each series again into a protobuf message before encoding. Here
/// a series costs nothing between scrapes and one text line during one.
#[derive(Clone, Copy, Debug)]
pub struct TenantGauge {
    pub name: &'static str,
    pub help: &'static str,
}

impl TenantGauge {
    /// Appends the family to `out` (nothing when there is no series, as the
    /// prometheus crate leaves out a family without children).
    pub fn write<'a>(&self, out: &mut Vec<u8>, series: impl Iterator<Item = (&'a str, f64)>) {
        use std::io::Write;
        let mut series = series.peekable();
        if series.peek().is_none() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (tenant, value) in series {
            out.extend_from_slice(self.name.as_bytes());
            out.extend_from_slice(b"{tenant=\"");
            escape_label_value(out, tenant);
            let _ = writeln!(out, "\"}} {value}");
        }
    }
}

/// A label value as the text exposition format quotes it: backslash,
/// double quote and line feed escaped.
fn escape_label_value(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tenant_gauge_tests {
    use super::*;

    /// The hand-written family is what the prometheus crate would encode
    /// for a `GaugeVec` with the same series, escapes included.
    #[test]
    fn a_tenant_gauge_encodes_as_the_prometheus_crate_does() {
        let series = [("hooli", 1799.25), ("say \"hi\"\\ \nnow", 0.0), ("pied-piper", 1.0)];
        let mut ours = Vec::new();
        TOKEN_EXPIRY.write(&mut ours, series.iter().map(|(t, v)| (*t, *v)));

        let registry = Registry::new();
        let vec = GaugeVec::new(Opts::new(TOKEN_EXPIRY.name, TOKEN_EXPIRY.help), &["tenant"]).unwrap();
        registry.register(Box::new(vec.clone())).unwrap();
        for (t, v) in series {
            vec.with_label_values(&[t]).set(v);
        }
        let mut theirs = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut theirs).unwrap();

        // The crate sorts series by label value; compare line sets.
        let lines = |b: &[u8]| {
            let mut l: Vec<String> = String::from_utf8(b.to_vec()).unwrap().lines().map(String::from).collect();
            l.sort();
            l
        };
        assert_eq!(lines(&ours), lines(&theirs));
        assert!(String::from_utf8(ours).unwrap().starts_with("# HELP pleo_gateway_token_expiry_seconds "));
    }

    #[test]
    fn a_tenant_gauge_without_series_writes_nothing() {
        let mut out = Vec::new();
        TOKEN_REFRESH_FAILING.write(&mut out, std::iter::empty());
        assert!(out.is_empty());
    }
}
