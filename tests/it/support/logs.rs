//! One test's captured log, for tests that search it for secrets and
//! for what the gateway said.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// One test's log. Tests in this binary run in parallel, so each test's
/// subscriber is the default only on the threads running that test: the
/// test's own thread (all of a current-thread runtime) and, for the
/// multi-thread tests, the workers of a runtime built by `runtime()`.
#[derive(Clone)]
pub struct Logs(pub Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// A new log, made the default on the calling thread.
    pub fn capture() -> Logs {
        let logs = Logs(Arc::new(Mutex::new(Vec::new())));
        logs.on_this_thread();
        logs
    }

    pub fn dispatch(&self) -> tracing::Dispatch {
        let writer = self.clone();
        tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_env_filter("pleo_gateway=trace,hyper=debug,hyper_util=debug,info")
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        )
    }

    pub fn on_this_thread(&self) {
        // Never restored: libtest gives each test its own thread, which ends
        // with the test, and a later default on the same thread replaces it.
        std::mem::forget(tracing::dispatcher::set_default(&self.dispatch()));
    }

    /// A two-worker runtime whose threads all log here.
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        let logs = self.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || logs.on_this_thread())
            .build()
            .unwrap()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// What was logged after `mark` (a `len()` taken earlier).
    pub fn since(&self, mark: usize) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()[mark..]).into_owned()
    }

    pub fn text(&self) -> String {
        self.since(0)
    }
}
