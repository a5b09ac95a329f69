//! pleo-gateway: CLI, load config, start, wait for a signal. Nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc over glibc malloc: fewer CPU cycles per request under load
/// (README "Tests and benchmarks" has the before/after runs).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pleo_gateway::access_log::Format;
use pleo_gateway::config::Config;
use pleo_gateway::connect::{connect, ConnectError, ConnectOptions};
use pleo_gateway::gateway;

/// Authenticating reverse proxy in front of Pleo's External API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = "./gateway.yaml")]
    config: PathBuf,
    /// Refuse to start unless every API-key tenant's credential checks out
    /// with Pleo (GET /v1/installations/me). Without it a failing tenant is
    /// only degraded.
    #[arg(long, global = true)]
    strict: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config and print the tenants with masked credentials.
    Check {
        /// Also ask Pleo about every API-key tenant: the key, the company and
        /// the installation's status (exit 69 unless all are connected).
        #[arg(long)]
        online: bool,
    },
    /// Show a tenant's Pleo installation, or activate it
    /// (POST /v1/installations/me:activate). API-key tenants (or unmanaged oauth2).
    Installation {
        /// The tenant, as named in the config.
        tenant: String,
        #[arg(value_enum)]
        action: pleo_gateway::manage::InstallationAction,
    },
    /// Connect an oauth2 tenant: authorization-code flow with PKCE; stores
    /// the tokens in state_dir.
    Connect {
        /// The tenant, as named in the config.
        tenant: String,
        /// Redirect URI registered for the OAuth client (http, loopback). Port 0 picks a free port.
        #[arg(long, default_value = "http://127.0.0.1:8765/callback")]
        redirect_uri: String,
        /// OAuth scopes to ask for (space-separated), if the client needs them.
        #[arg(long)]
        scope: Option<String>,
        /// How long to wait for the browser to come back.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Connect links: make one for a tenant (printed once), or --list, or --revoke ID.
    Link {
        /// The tenant to make a link for.
        tenant: Option<String>,
        /// How long the link stays usable (default connect.link_ttl, 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// List the links (of TENANT, if given) instead.
        #[arg(long)]
        list: bool,
        /// Revoke the link with this id instead.
        #[arg(long)]
        revoke: Option<String>,
    },
    /// A dry run: what the gateway would do with a request (tenant and rule,
    /// or the refusal; environment, masked credential, rewrites, the upstream
    /// URL, the headers removed). Nothing is sent.
    Explain {
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The method, such as GET.
        method: String,
        /// The URL as the app sends it (http://127.0.0.1:8080/v2/x), or a path.
        url: String,
    },
    /// Where each legacy app stands: the running gateway's GET /migration as a
    /// table (Pleo's 404/405 answers per path template and client, and the
    /// legacy tokens still sent). The admin token comes from PLEO_GATEWAY_ADMIN_TOKEN.
    MigrationReport {
        /// The admin listener to ask (default: the config's admin_listen).
        #[arg(long)]
        admin: Option<String>,
    },
    /// Run only the offline Pleo stand-in for the config's tenants (no
    /// gateway), on the given addresses: one stand-in shared by several
    /// gateway processes, as in deploy/compose.
    Sandbox {
        /// Address for the staging stand-in.
        #[arg(long)]
        staging: Option<std::net::SocketAddr>,
        /// Address for the production stand-in.
        #[arg(long)]
        production: Option<std::net::SocketAddr>,
    },
    /// The OAuth token store: `store import` copies state_dir into a
    /// PostgreSQL store (store.kind: postgres), never over a chain it has.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Make a gateway client key: prints a new random key once, with the
    /// SHA-256 the config stores. With --stdin, hashes a key or legacy token
    /// read from standard input instead (for `clients` or `legacy_tokens`).
    HashKey {
        /// Read the key to hash from standard input (one line) instead of generating one.
        #[arg(long)]
        stdin: bool,
        /// Client name for the printed `clients` entry.
        #[arg(long, default_value = "my-app")]
        name: String,
        /// Tenants for the printed `clients` entry (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "acme")]
        tenants: Vec<String>,
        /// Make an admin token (for /tenants on admin_listen) instead of a client key.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StoreAction {
    /// Copy every tenant's tokens from state_dir into the configured PostgreSQL store.
    Import,
}

/// sysexits.h EX_USAGE: the config is wrong, nothing was started.
const EX_CONFIG: u8 = 64;
/// sysexits.h EX_UNAVAILABLE: a listener or upstream could not be set up.
const EX_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no config: it is how an operator writes one.
    if let Some(Command::HashKey { stdin, name, tenants, admin }) = &cli.command {
        return hash_key(*stdin, name, tenants, *admin);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid config:\n{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check { online } => {
            print!("{}", pleo_gateway::config::check_report(&config));
            match block_on(pleo_gateway::manage::check_store(&config, &mut std::io::stdout())) {
                Ok(true) => {}
                Ok(false) => return ExitCode::from(EX_UNAVAILABLE),
                Err(e) => return manage_failed(e),
            }
            if !online {
                return ExitCode::SUCCESS;
            }
            println!();
            match block_on(pleo_gateway::manage::check_online(&config, &mut std::io::stdout())) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(EX_UNAVAILABLE),
                Err(e) => manage_failed(e),
            }
        }
        Command::Installation { tenant, action } => {
            match block_on(pleo_gateway::manage::installation(&config, &tenant, action, &mut std::io::stdout())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => manage_failed(e),
            }
        }
        Command::Store { action: StoreAction::Import } => {
            match block_on(pleo_gateway::manage::store_import(&config, &mut std::io::stdout())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => manage_failed(e),
            }
        }
        Command::Link { tenant, expires, list, revoke } => {
            use pleo_gateway::manage::LinkAction;
            let action = match (tenant, list, revoke) {
                (tenant, true, None) => LinkAction::List { tenant },
                (None, false, Some(id)) => LinkAction::Revoke { id },
                (Some(tenant), false, None) => LinkAction::Create { tenant, expires },
                _ => {
                    eprintln!(
                        "usage: pleo-gateway link TENANT [--expires 7d] | link --list [TENANT] | link --revoke ID"
                    );
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match block_on(pleo_gateway::manage::link(&config, action, &mut std::io::stdout())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => manage_failed(e),
            }
        }
        Command::Explain { headers, method, url } => {
            let mut parsed = Vec::new();
            for h in &headers {
                let Some((name, value)) = h.split_once(':') else {
                    eprintln!("-H `{h}`: expected `Name: value`");
                    return ExitCode::from(EX_CONFIG);
                };
                parsed.push((name.trim().to_string(), value.trim().to_string()));
            }
            let req = match pleo_gateway::explain::request(&method, &url, &parsed) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match block_on(async {
                pleo_gateway::explain::offline(&config, req).await.map_err(pleo_gateway::manage::ManageError::Failed)
            }) {
                Ok(x) => {
                    print!("{}", x.text());
                    ExitCode::SUCCESS
                }
                Err(e) => manage_failed(e),
            }
        }
        Command::MigrationReport { admin } => {
            let addr = admin.unwrap_or_else(|| config.admin_listen.to_string());
            match block_on(pleo_gateway::manage::migration_report(&addr, &mut std::io::stdout())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => manage_failed(e),
            }
        }
        Command::Sandbox { staging, production } => sandbox_only(&config, staging, production),
        Command::Run => run(config, cli.strict),
        Command::HashKey { .. } => unreachable!("handled before the config is loaded"),
        Command::Connect { tenant, redirect_uri, scope, timeout } => {
            init_logging(Format::Off);
            let opts = ConnectOptions { tenant, redirect_uri, scope, timeout };
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(EX_UNAVAILABLE);
                }
            };
            match rt.block_on(connect(&config, &opts, &mut std::io::stdout())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ ConnectError::Usage(_)) => {
                    eprintln!("{e}");
                    ExitCode::from(EX_CONFIG)
                }
                Err(e) => {
                    eprintln!("connect failed: {e}");
                    ExitCode::from(EX_UNAVAILABLE)
                }
            }
        }
    }
}

/// Runs an operator command's future on a small runtime of its own.
fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, pleo_gateway::manage::ManageError>>,
) -> Result<T, pleo_gateway::manage::ManageError> {
    init_logging(Format::Off);
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(f),
        Err(e) => Err(pleo_gateway::manage::ManageError::Failed(format!("cannot start the async runtime: {e}"))),
    }
}

fn manage_failed(e: pleo_gateway::manage::ManageError) -> ExitCode {
    eprintln!("{e}");
    match e {
        pleo_gateway::manage::ManageError::Usage(_) => ExitCode::from(EX_CONFIG),
        pleo_gateway::manage::ManageError::Failed(_) => ExitCode::from(EX_UNAVAILABLE),
    }
}

fn hash_key(stdin: bool, name: &str, tenants: &[String], admin: bool) -> ExitCode {
    use pleo_gateway::clients::{generate_key, key_sha256};
    if stdin {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("cannot read standard input: {e}");
            return ExitCode::from(EX_CONFIG);
        }
        let key = line.trim_end_matches(['\r', '\n']);
        if key.is_empty() {
            eprintln!("no key on standard input (expected the key or token on one line)");
            return ExitCode::from(EX_CONFIG);
        }
        // The digest only: the key was typed by the operator and stays with them.
        println!("{}", key_sha256(key.as_bytes()));
        return ExitCode::SUCCESS;
    }
    let key = generate_key();
    let digest = key_sha256(key.expose_secret().as_bytes());
    println!("key: {}", key.expose_secret());
    if admin {
        println!(
            "  Shown once: send it as Authorization: Bearer <key> to the admin listener, and keep it as a secret."
        );
        println!("  The gateway stores only the digest below.");
        println!();
        println!("admin:");
        println!("  tokens:");
        println!("    - {{ name: {name}, sha256: \"{digest}\" }}");
        return ExitCode::SUCCESS;
    }
    println!("  Shown once: give it to the app (it sends Authorization: Bearer <key>) and keep it as a secret.");
    println!("  The gateway stores only the digest below.");
    println!();
    println!("clients:");
    println!("  - name: {name}");
    println!("    key_sha256: \"{digest}\"");
    println!("    tenants: [{}]", tenants.join(", "));
    ExitCode::SUCCESS
}

/// Logs go to stderr, filtered by RUST_LOG (default info). The access log
/// (target `access`) goes to stdout in the configured format, so a log
/// shipper can tell requests from events.
fn init_logging(access: Format) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let is_access = |m: &tracing::Metadata<'_>| m.target() == "access";
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_filter(filter_fn(move |m| !is_access(m)));
    let only_access = filter_fn(is_access);
    let (json, text) = match access {
        Format::Off => (None, None),
        Format::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_target(false)
                    .with_writer(std::io::stdout)
                    .with_filter(only_access.clone()),
            ),
            None,
        ),
        Format::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::io::stdout)
                    .with_filter(only_access.clone()),
            ),
        ),
    };
    // Once per process: `check --online` runs two operator steps, each of
    // which sets logging up; the first one's stays.
    let _ = tracing_subscriber::registry().with(logs).with(json).with(text).try_init();
}

fn run(config: Config, strict: bool) -> ExitCode {
    init_logging(config.access_log.format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let mut rt = match config.workers {
        // One worker: a current-thread runtime has no work-stealing overhead.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = config.workers {
        if n > 1 {
            rt.worker_threads(n);
        }
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    rt.block_on(async move {
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
        let signal = serve_until_stopped(&running).await;
        tracing::info!(signal, "shutting down: no new connections, draining open ones");
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// `pleo-gateway sandbox`: the stand-in alone, until SIGTERM or SIGINT.
fn sandbox_only(
    config: &Config,
    staging: Option<std::net::SocketAddr>,
    production: Option<std::net::SocketAddr>,
) -> ExitCode {
    use pleo_gateway::config::Environment;
    use pleo_gateway::sandbox::{Sandbox, SandboxSpec};
    init_logging(Format::Off);
    let addrs: Vec<_> = [(Environment::Staging, staging), (Environment::Production, production)]
        .into_iter()
        .filter_map(|(env, addr)| Some((env, addr?)))
        .collect();
    if addrs.is_empty() {
        eprintln!("sandbox: give --staging ADDR and/or --production ADDR");
        return ExitCode::from(EX_CONFIG);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
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

/// Reloads on SIGHUP; returns the signal that asks to stop.
async fn serve_until_stopped(running: &gateway::Running) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
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
