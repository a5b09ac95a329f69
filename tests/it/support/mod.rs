//! Shared kit for the integration tests: two sandboxes (staging and
//! production) on 127.0.0.1:0, a gateway in-process pointed at them, and a
//! small HTTP client. Everything binds loopback and is shut down by `stop`.
#![allow(dead_code)]

pub mod connect;
pub mod install;
pub mod logs;
pub mod oauth;
pub mod otlp;
pub mod postgres;

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pleo_gateway::config::{Config, Environment};
use pleo_gateway::gateway::{self, Running};
use pleo_gateway::sandbox::{Sandbox, SandboxSpec};
use tokio::net::TcpListener;

pub const ACME_TOKEN: &str = "at_acme_production_5f1e2d3c4b5a";
pub const GLOBEX_KEY: &str = "ik_globex_staging_a1b2c3d4e5f6";
pub const INITECH_KEY: &str = "sk_initech_staging_f6e5d4c3b2a1";
pub const LEGACY_TOKEN: &str = "legacy_openapi_token_0123456789";
pub const ALL_SECRETS: [&str; 3] = [ACME_TOKEN, GLOBEX_KEY, INITECH_KEY];

/// The `Authorization` value Pleo expects for an API key.
pub fn basic(key: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
}

pub fn staging_spec() -> SandboxSpec {
    SandboxSpec::new(Environment::Staging)
        .api_key(GLOBEX_KEY, "company-globex")
        .api_key(INITECH_KEY, "company-initech")
        .legacy_token(LEGACY_TOKEN)
}

pub fn production_spec() -> SandboxSpec {
    SandboxSpec::new(Environment::Production).access_token(ACME_TOKEN, "company-acme").legacy_token(LEGACY_TOKEN)
}

pub async fn sandbox(spec: SandboxSpec) -> Sandbox {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::spawn(listener, spec, None)
}

/// A sandbox serving HTTPS with ALPN h2 + http/1.1, under a CA made here;
/// returns it with the CA's PEM (for `ca_file`).
pub async fn h2_tls_sandbox(spec: SandboxSpec) -> (Sandbox, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (Sandbox::spawn(listener, spec, Some(std::sync::Arc::new(tls))), ca_cert.pem())
}

/// The standard tenants with staging on `secure` (HTTPS, h2; its CA written
/// to `dir`/ca.pem) and production on `plain`.
pub fn tls_staging_yaml(dir: &Path, secure: &Sandbox, ca_pem: &str, plain: &Sandbox) -> String {
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nenvironments:\n  staging: {{ base_url: https://{}, ca_file: ca.pem }}\n  production: {{ base_url: http://{} }}\n{}",
        secure.addr,
        plain.addr,
        tenants_yaml(dir)
    )
}

/// Writes the tenants' secrets as files in `dir` and returns the tenants block.
pub fn tenants_yaml(dir: &Path) -> String {
    for (name, value) in [("acme.token", ACME_TOKEN), ("globex.key", GLOBEX_KEY), ("initech.key", INITECH_KEY)] {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    "tenants:
  acme:
    environment: production
    auth:
      model: oauth2
      access_token: { file: acme.token }
  globex:
    environment: staging
    auth:
      model: integrated_api_key
      key: { file: globex.key }
  initech:
    environment: staging
    auth:
      model: standalone_api_key
      key: { file: initech.key }
"
    .to_string()
}

pub fn environments_yaml(staging: &str, production: &str) -> String {
    format!(
        "environments:
  staging: {{ base_url: {staging}, token_url: {staging}/oauth/token }}
  production: {{ base_url: {production}, token_url: {production}/oauth/token }}
"
    )
}

/// A sandbox's base URL.
pub fn base_url(sandbox: &Sandbox) -> String {
    format!("http://{}", sandbox.addr)
}

/// The standard three tenants on port 0, pointed at these base URLs, with
/// their secret files in `dir`; `extra` is appended.
pub fn standard_yaml(dir: &Path, staging: &str, production: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{}{}{extra}",
        environments_yaml(staging, production),
        tenants_yaml(dir)
    )
}

/// `standard_yaml` written to `dir`/gateway.yaml, for running the binary.
pub fn write_standard_config(dir: &Path, staging: &str, production: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, standard_yaml(dir, staging, production, extra)).unwrap();
    path
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A plain-HTTP client for talking to gateways and sandboxes on loopback.
///
/// Pooled connections are dropped after 5 s unused, under the gateway's
/// shortest bound (a connection's first request within
/// `header_read_timeout`, 10 s). The pool can hold a connection it opened
/// for a request that then took another: hyper's default of 90 s let a
/// test pick one up just as the gateway closed it (`IncompleteMessage`,
/// seen once under a loaded full run of tests/postgres).
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .build_http()
}

pub struct Kit {
    pub gw: Running,
    pub staging: Sandbox,
    pub production: Sandbox,
    pub client: HttpClient,
    pub dir: tempfile::TempDir,
    /// The config the gateway was started with (in `dir`/gateway.yaml).
    pub yaml: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts the contract's refusal shape and returns the body.
    pub fn assert_refused(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", self.body);
        assert_eq!(self.headers["x-pleo-gateway-error"], code);
        assert_eq!(self.headers["content-type"], "application/json");
        let j = self.json();
        assert_eq!(j["error"], code);
        assert!(j["message"].as_str().unwrap().len() > 20, "message says what to do");
        j
    }
}

impl Kit {
    /// A gateway with the three standard tenants; `extra` is appended to the config.
    pub async fn start(extra: &str) -> Kit {
        Kit::start_with(staging_spec(), production_spec(), extra).await
    }

    pub async fn start_with(staging: SandboxSpec, production: SandboxSpec, extra: &str) -> Kit {
        let staging = sandbox(staging).await;
        let production = sandbox(production).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = standard_yaml(dir.path(), &base_url(&staging), &base_url(&production), extra);
        let gw = start_gateway(&yaml, dir.path()).await;
        let client = http_client();
        Kit { gw, staging, production, client, dir, yaml }
    }

    /// Replaces the config file (the gateway sees it on reload).
    pub fn write_config(&self, yaml: &str) {
        // Write then rename, as editors and Kubernetes do: the watcher never
        // reads half a file.
        let tmp = self.dir.path().join(".gateway.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("gateway.yaml")).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.addr, path)
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = self.client.request(req).await.expect("gateway answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, path, headers, Bytes::new()).await
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
        let mut b = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(body)).unwrap()).await
    }

    /// A GET for `tenant` that owns what it needs (for `tokio::spawn`); returns the status.
    pub fn get_owned(
        &self,
        path: String,
        tenant: &'static str,
    ) -> impl std::future::Future<Output = u16> + Send + 'static {
        let client = self.client.clone();
        let req = Request::get(self.url(&path)).header("x-pleo-tenant", tenant).body(Full::new(Bytes::new())).unwrap();
        async move { client.request(req).await.expect("gateway answers").status().as_u16() }
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.gw.admin_addr, "/metrics").await.1
    }

    /// Requests both sandboxes have received.
    pub fn upstream_count(&self) -> usize {
        self.staging.requests().len() + self.production.requests().len()
    }

    pub async fn stop(self) {
        self.gw.shutdown().await;
        self.staging.shutdown().await;
        self.production.shutdown().await;
    }
}

/// A loopback port for a listener whose address a config must name before
/// it binds (`connect.public_url`, a PostgreSQL server, Prometheus).
///
/// Taken from below the kernel's ephemeral range, one after another in this
/// process and checked free: a port the kernel handed out for `bind(0)` and
/// given back could be handed to any other test's `bind(0)` or outgoing
/// connection before its owner binds it again (a test saw `AddrInUse` on a
/// connect listener that way). Each test binary (process) starts in its own
/// stretch, by process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOW).max(1000);
    let start = (std::process::id() * 997) % span;
    for _ in 0..span {
        let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port below {ephemeral}");
}

pub async fn start_gateway(yaml: &str, dir: &Path) -> Running {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    gateway::start(&config).await.expect("gateway starts")
}

pub async fn admin_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let resp = http_client().get(format!("http://{addr}{path}").parse().unwrap()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of one sample in Prometheus text, 0 if absent. `labels` must
/// list every label of the series, in any order.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let mut have: Vec<(String, String)> = l
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        have.sort();
        want.sort();
        if have == want {
            return value.parse().unwrap();
        }
    }
    0.0
}

/// Polls `cond` every 10 ms until it holds, failing the test with `what`
/// after `within`: the one wait-loop of the test kit.
pub async fn eventually(what: &str, within: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A `pleo-gateway` process whose stdout and stderr are collected together.
pub struct Process {
    pub child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pleo-gateway"));
        cmd.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        Process { child, log, readers }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The first output line containing `needle`, waiting up to `timeout`.
    pub async fn line_with(&self, needle: &str, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let text = self.log();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no line with {needle:?} in:\n{text}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The gateway and admin addresses from the "listening" log line.
    pub async fn listening(&self) -> (SocketAddr, SocketAddr) {
        let line = self.line_with("pleo-gateway listening", std::time::Duration::from_secs(20)).await;
        let field = |name: &str| {
            let rest = &line[line.find(&format!(" {name}=")).unwrap() + name.len() + 2..];
            rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap()
        };
        (field("addr"), field("admin_addr"))
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the exit and for all output; returns the status and the log.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        (status, self.log())
    }
}

/// A failing test (a panic before `wait`) must not leave a gateway running.
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the gateway binary with `args` and `--config config`: its exit code
/// and all it printed, which must hold none of `secrets`.
pub fn run_binary(config: &Path, args: &[&str], secrets: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pleo-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for s in secrets {
        assert!(!text.contains(s), "a secret in the output of {args:?}");
    }
    (out.status.code(), text)
}
