//! Where finished spans go: OTLP/HTTP protobuf through hyper
//! (`opentelemetry-otlp`), batched by [`Bounded`]. The batching is ours,
//! not the SDK's, for one reason: every span that does not reach the
//! collector is counted (`pleo_gateway_spans_dropped_total{reason}`), and a
//! request never waits for any of it.
//!
//! - A finished span is handed over with `try_send` on a bounded queue
//!   (`QUEUE` spans): when the queue is full the span is dropped and
//!   counted (`queue_full`); the request's thread never blocks.
//! - One task takes up to `BATCH` spans at a time, waits `DELAY` for more,
//!   and exports them with a deadline (`EXPORT_TIMEOUT`). A batch the
//!   collector does not take (down, refusing, slow) is dropped and counted
//!   (`export_failed`); there is no retry queue to grow.
//! - On shutdown the task exports what is queued, within `FLUSH_TIMEOUT`.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use super::stats::SpanStats;

const QUEUE: usize = 4096;
const BATCH: usize = 512;
const DELAY: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The span processor: a bounded queue in front of the export task.
#[derive(Debug)]
pub struct Bounded {
    queue: mpsc::Sender<SpanData>,
    stats: Arc<SpanStats>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.stats.dropped_queue_full.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// The export task is stopped by [`Exporting::finish`], which can wait
    /// for it without blocking the runtime.
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The running export task.
#[derive(Debug)]
pub struct Exporting {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporting {
    /// Exports what is queued, within `FLUSH_TIMEOUT`, then stops. False
    /// when the task did not end cleanly (said in the log).
    pub async fn finish(self) -> bool {
        let _ = self.stop.send(());
        match tokio::time::timeout(FLUSH_TIMEOUT, self.task).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the trace export task failed; queued spans are lost");
                false
            }
            Err(_) => {
                tracing::warn!("the trace collector did not take the last spans in time; they are dropped");
                false
            }
        }
    }
}

/// The processor for the provider, and its export task (spawned on the current runtime).
pub fn start<E>(mut exporter: E, resource: &Resource, stats: Arc<SpanStats>) -> (Bounded, Exporting)
where
    E: SpanExporter + 'static,
{
    exporter.set_resource(resource);
    let (queue, spans) = mpsc::channel(QUEUE);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(run(exporter, spans, stopped, stats.clone()));
    (Bounded { queue, stats }, Exporting { stop, task })
}

async fn run<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    mut stopped: oneshot::Receiver<()>,
    stats: Arc<SpanStats>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Stopping: the stop signal, or the queue closed. The iteration that
        // sees it is the last, so the oneshot is never polled after it fired.
        let mut stopping = tokio::select! {
            n = spans.recv_many(&mut batch, BATCH) => n == 0,
            _ = &mut stopped => true,
        };
        if !stopping && batch.len() < BATCH {
            // Gather what arrives shortly after, so a burst is one export.
            stopping = tokio::select! {
                _ = tokio::time::sleep(DELAY) => false,
                _ = &mut stopped => true,
            };
        }
        while batch.len() < BATCH {
            match spans.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            export(&exporter, std::mem::take(&mut batch), &stats).await;
        }
        if stopping {
            // Whatever is still queued goes out in full batches, then the task ends.
            while let Ok(span) = spans.try_recv() {
                batch.push(span);
                if batch.len() == BATCH {
                    export(&exporter, std::mem::take(&mut batch), &stats).await;
                }
            }
            if !batch.is_empty() {
                export(&exporter, std::mem::take(&mut batch), &stats).await;
            }
            return;
        }
    }
}

async fn export<E: SpanExporter>(exporter: &E, batch: Vec<SpanData>, stats: &SpanStats) {
    let n = batch.len() as u64;
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
        Ok(Ok(())) => stats.exported.inc_by(n),
        Ok(Err(e)) => {
            stats.dropped_export_failed.inc_by(n);
            tracing::debug!(error = %e, spans = n, "the trace collector did not take a batch");
        }
        Err(_) => {
            stats.dropped_export_failed.inc_by(n);
            tracing::debug!(spans = n, "the trace collector did not answer in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use std::sync::Mutex;

    /// An exporter that keeps what it gets, or refuses everything.
    #[derive(Debug, Clone, Default)]
    struct Kept {
        spans: Arc<Mutex<Vec<String>>>,
        refuse: bool,
    }

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.refuse {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure("down".into()));
            }
            self.spans.lock().unwrap().extend(batch.into_iter().map(|s| s.name.to_string()));
            Ok(())
        }
    }

    fn provider(exporter: Kept, stats: Arc<SpanStats>) -> (opentelemetry_sdk::trace::SdkTracerProvider, Exporting) {
        let resource = Resource::builder().with_service_name("test").build();
        let (processor, exporting) = start(exporter, &resource, stats);
        (opentelemetry_sdk::trace::SdkTracerProvider::builder().with_span_processor(processor).build(), exporting)
    }

    #[tokio::test]
    async fn a_stop_while_gathering_exports_everything_queued_and_ends() {
        let (kept, stats) = (Kept::default(), Arc::new(SpanStats::new()));
        let (provider, exporting) = provider(kept.clone(), stats.clone());
        let tracer = provider.tracer("t");
        for i in 0..1500 {
            tracer.start(format!("s{i}")).end();
        }
        // The task is gathering (DELAY) when the stop comes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(exporting.finish().await, "the task ends cleanly");
        assert_eq!(kept.spans.lock().unwrap().len(), 1500);
        assert_eq!(stats.exported.get(), 1500);
        assert_eq!(stats.dropped_queue_full.get() + stats.dropped_export_failed.get(), 0);
    }

    #[tokio::test]
    async fn spans_the_collector_refuses_or_the_queue_cannot_hold_are_counted() {
        let stats = Arc::new(SpanStats::new());
        let (provider, exporting) = provider(Kept { refuse: true, ..Kept::default() }, stats.clone());
        let tracer = provider.tracer("t");
        // More than the queue holds, at once: the rest never leave this thread.
        for _ in 0..QUEUE + 100 {
            tracer.start("s").end();
        }
        assert!(exporting.finish().await);
        let (failed, full) = (stats.dropped_export_failed.get(), stats.dropped_queue_full.get());
        assert!(full >= 100, "{full}");
        assert_eq!(failed + full, (QUEUE + 100) as u64, "every span is accounted for");
        assert_eq!(stats.exported.get(), 0);
    }
}
