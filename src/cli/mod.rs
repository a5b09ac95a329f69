//! The command line: parse, load the config, run one subcommand (one file
//! each), turn its outcome into an exit code. `main.rs` only calls [`main`].
//!
//! Exit codes (sysexits.h): 0 done, 64 the command or config is wrong
//! (nothing was started), 69 something it needs is unavailable (Pleo, the
//! store, a port).

mod check;
pub mod connect;
mod explain;
mod hash_key;
mod installation;
mod link;
mod migration_report;
mod run;
mod sandbox;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::access_log::Format;
use crate::config::Config;

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
        action: installation::InstallationAction,
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

/// sysexits.h EX_USAGE: the command or the config is wrong; nothing was started.
pub const EX_USAGE: u8 = 64;
/// sysexits.h EX_UNAVAILABLE: a listener, the store or Pleo could not be used.
pub const EX_UNAVAILABLE: u8 = 69;

/// Why a command failed, and so its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command cannot be done as asked (exit 64).
    #[error("{0}")]
    Usage(String),
    /// Something it needs could not be used, or said no (exit 69).
    #[error("{0}")]
    Unavailable(String),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no config: it is how an operator writes one.
    if let Some(Command::HashKey { stdin, name, tenants, admin }) = &cli.command {
        return hash_key::hash_key(*stdin, name, tenants, *admin);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid config:\n{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let out = &mut std::io::stdout();
    let done = match cli.command.unwrap_or(Command::Run) {
        Command::Run => return run::run(config, cli.strict),
        Command::Sandbox { staging, production } => return sandbox::sandbox_only(&config, staging, production),
        Command::HashKey { .. } => unreachable!("handled before the config is loaded"),
        Command::Check { online } => match block_on(check::check(&config, online, out)) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(EX_UNAVAILABLE),
            Err(e) => Err(e),
        },
        Command::Installation { tenant, action } => block_on(installation::installation(&config, &tenant, action, out)),
        Command::Store { action: StoreAction::Import } => block_on(store::store_import(&config, out)),
        Command::Link { tenant, expires, list, revoke } => {
            match link::LinkAction::from_args(tenant, expires, list, revoke) {
                Ok(action) => block_on(link::link(&config, action, out)),
                Err(e) => Err(e),
            }
        }
        Command::Explain { headers, method, url } => block_on(explain::explain(&config, &method, &url, &headers, out)),
        Command::MigrationReport { admin } => {
            let addr = admin.unwrap_or_else(|| config.admin_listen.to_string());
            block_on(migration_report::migration_report(&addr, out))
        }
        Command::Connect { tenant, redirect_uri, scope, timeout } => {
            let opts = connect::ConnectOptions { tenant, redirect_uri, scope, timeout };
            block_on(connect::connect(&config, &opts, out))
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

/// The message on stderr and the exit code for it.
fn failed(e: CommandError) -> ExitCode {
    eprintln!("{e}");
    match e {
        CommandError::Usage(_) => ExitCode::from(EX_USAGE),
        CommandError::Unavailable(_) => ExitCode::from(EX_UNAVAILABLE),
    }
}

/// The runtime: one worker is a current-thread runtime (no work-stealing
/// overhead); otherwise `workers` threads, or one per CPU.
fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, CommandError> {
    let mut rt = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = workers.filter(|n| *n > 1) {
        rt.worker_threads(n);
    }
    rt.enable_all().build().map_err(|e| CommandError::Unavailable(format!("cannot start the async runtime: {e}")))
}

/// Runs an operator command's future on a small runtime of its own.
fn block_on<T>(f: impl std::future::Future<Output = Result<T, CommandError>>) -> Result<T, CommandError> {
    init_logging(Format::Off, None);
    runtime(Some(1))?.block_on(f)
}

/// Logs go to stderr, filtered by RUST_LOG (default info). The access log
/// (target `access`) goes to stdout in the configured format, so a log
/// shipper can tell requests from events. Spans for export (`otel`, when
/// `telemetry` is on) go only to OpenTelemetry.
fn init_logging(access: Format, otel: Option<crate::telemetry::OtelLayer>) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let is_access = |m: &tracing::Metadata<'_>| m.target() == "access";
    let for_export = |m: &tracing::Metadata<'_>| m.target() == crate::telemetry::TARGET;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_filter(filter_fn(move |m| !is_access(m) && !for_export(m)));
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
    let _ = tracing_subscriber::registry().with(otel).with(logs).with(json).with(text).try_init();
}
