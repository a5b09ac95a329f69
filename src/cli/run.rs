//! `pleo-gateway [run]`: start the gateway and serve until SIGTERM or
//! SIGINT; SIGHUP reloads the config.

use std::process::ExitCode;

use super::{init_logging, EX_UNAVAILABLE};
use crate::config::Config;
use crate::gateway;

pub fn run(config: Config, strict: bool) -> ExitCode {
    let rt = match super::runtime(config.workers) {
        Ok(rt) => rt,
        Err(e) => return super::failed(e),
    };
    // The export task runs on the gateway's runtime; its layer joins the logs'.
    let telemetry = {
        let _rt = rt.enter();
        crate::telemetry::Pipeline::start(&config.telemetry)
    };
    let (telemetry, otel_layer) = match telemetry {
        Ok(Some((pipeline, layer))) => (Some(pipeline), Some(layer)),
        Ok(None) => (None, None),
        Err(e) => return super::failed(super::CommandError::Usage(format!("telemetry: {e}"))),
    };
    init_logging(config.access_log.format, otel_layer);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        tracing::info!(endpoint, "exporting traces (OTLP/HTTP)");
    }
    rt.block_on(async move {
        // Before the start: "listening" is logged there, and a SIGTERM
        // right after it (a supervisor, a test) must stop the gateway the
        // orderly way, not by the signal's default action.
        let signals = Signals::install();
        let running = match gateway::start_with(&config, strict).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        // Everything serving holds what it needs; the config itself (every
        // tenant's secrets and settings once more) is not kept.
        drop(config);
        let signal = serve_until_stopped(&running, signals).await;
        tracing::info!(signal, "shutting down: no new connections, draining open ones");
        running.shutdown().await;
        if let Some(t) = telemetry {
            t.finish().await;
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// SIGTERM, SIGINT and SIGHUP, caught from when they are installed.
struct Signals(Option<[tokio::signal::unix::Signal; 3]>);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some([term, int, hup])),
            _ => Signals(None),
        }
    }
}

/// Reloads on SIGHUP; returns the signal that asks to stop.
async fn serve_until_stopped(running: &gateway::Running, signals: Signals) -> &'static str {
    let Some([mut term, mut int, mut hup]) = signals.0 else {
        // Without signal handlers, Ctrl-C still ends the process the default way.
        std::future::pending::<()>().await;
        unreachable!()
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // The outcome is logged and counted by the reload itself.
                let _ = running.reload().await;
            }
        }
    }
}
