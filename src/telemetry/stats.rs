//! What happened to the spans: exported, or dropped and why. One set of
//! counters per process (the exporter is one per process), registered on
//! each metrics registry made in it.

use std::sync::{Arc, OnceLock};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Debug)]
pub struct SpanStats {
    exported_family: IntCounter,
    dropped_family: IntCounterVec,
    pub exported: IntCounter,
    /// The queue to the export task was full: the span never left the request's thread.
    pub dropped_queue_full: IntCounter,
    /// The collector did not take the batch (down, refused, too slow).
    pub dropped_export_failed: IntCounter,
}

impl SpanStats {
    /// Counters of their own (the process's are [`stats`]).
    pub fn new() -> SpanStats {
        let exported = IntCounter::new(
            "pleo_gateway_spans_exported_total",
            "Trace spans the OTLP collector accepted (telemetry.otlp_endpoint).",
        )
        .expect("a valid metric");
        let dropped = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_spans_dropped_total",
                "Trace spans dropped: the export queue was full (queue_full) or the collector did not take \
                     them (export_failed).",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        SpanStats {
            exported: exported.clone(),
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_export_failed: dropped.with_label_values(&["export_failed"]),
            exported_family: exported,
            dropped_family: dropped,
        }
    }
}

impl Default for SpanStats {
    fn default() -> Self {
        SpanStats::new()
    }
}

pub fn stats() -> Arc<SpanStats> {
    static STATS: OnceLock<Arc<SpanStats>> = OnceLock::new();
    STATS.get_or_init(|| Arc::new(SpanStats::new())).clone()
}

/// Adds the span counters to a registry.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let s = stats();
    registry.register(Box::new(s.exported_family.clone()))?;
    registry.register(Box::new(s.dropped_family.clone()))
}
