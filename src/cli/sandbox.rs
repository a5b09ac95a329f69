//! `pleo-gateway sandbox`: only the offline Pleo stand-in for the config's
//! tenants, for several gateway processes to share (deploy/compose).

use std::process::ExitCode;

use super::{init_logging, EX_UNAVAILABLE, EX_USAGE};
use crate::access_log::Format;
use crate::config::Config;

/// `pleo-gateway sandbox`: the stand-in alone, until SIGTERM or SIGINT.
pub fn sandbox_only(
    config: &Config,
    staging: Option<std::net::SocketAddr>,
    production: Option<std::net::SocketAddr>,
) -> ExitCode {
    use crate::config::Environment;
    use crate::sandbox::{Sandbox, SandboxSpec};
    init_logging(Format::Off, None);
    let addrs: Vec<_> = [(Environment::Staging, staging), (Environment::Production, production)]
        .into_iter()
        .filter_map(|(env, addr)| Some((env, addr?)))
        .collect();
    if addrs.is_empty() {
        eprintln!("sandbox: give --staging ADDR and/or --production ADDR");
        return ExitCode::from(EX_USAGE);
    }
    let rt = match super::runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => return super::failed(e),
    };
    rt.block_on(async {
        let mut running = Vec::new();
        for (env, addr) in addrs {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("sandbox: cannot listen on {addr}: {e}");
                    return ExitCode::from(EX_UNAVAILABLE);
                }
            };
            let sandbox = Sandbox::spawn(listener, SandboxSpec::for_gateway(config, env), None);
            tracing::info!(environment = env.as_str(), addr = %sandbox.addr, "sandbox (offline Pleo stand-in) listening");
            running.push(sandbox);
        }
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        } else {
            std::future::pending::<()>().await;
        }
        for s in running {
            s.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}
