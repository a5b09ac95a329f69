//! A bounded soak (`bench/soak.sh`; SOAK_SECONDS, default 600): the release
//! binary at full load from keep-alive apps on three tenants (one managed
//! OAuth tenant on 10-second tokens, so it refreshes all the time), with
//! upstream resets, token-endpoint 5xx bursts and slow clients (slowloris
//! heads, stalled uploads, downloads nobody reads) mixed in. Every outcome
//! is classified; anything not expected fails the run. RSS and open file
//! descriptors of the gateway are sampled every 10 s and must stay flat
//! after warm-up (the first fifth of the run).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pleo_gateway::config::Environment;
use pleo_gateway::sandbox::{OAuthClient, Sandbox, SandboxSpec, TokenFault};
use pleo_gateway::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GLOBEX_KEY: &str = "ik_soak_globex_0123456789";
const INITECH_KEY: &str = "sk_soak_initech_0123456789";
const RT: &str = "rt_soak_initial_0123456789";
const APPS: usize = 24;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    resets: AtomicU64,
    slowloris_cut: AtomicU64,
    uploads_408: AtomicU64,
    readers_dropped: AtomicU64,
    unexpected: AtomicU64,
}

impl Tally {
    fn odd(&self, what: String) {
        if self.unexpected.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("unexpected: {what}");
        }
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// (VmRSS KiB, open fds) of a process.
fn sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss, fds)
}

async fn app(gw: SocketAddr, n: usize, until: Instant, tally: Arc<Tally>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut i = n;
    while Instant::now() < until {
        i += 1;
        let tenant = ["hooli", "globex", "initech"][i % 3];
        let reset = i.is_multiple_of(33);
        let path = if reset { "/sandbox/reset" } else { "/v2/employees" };
        let req = http::Request::get(format!("http://{gw}{path}"))
            .header("x-pleo-tenant", if reset { "globex" } else { tenant })
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                tally.odd(format!("{tenant} {path}: {e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await;
        match (reset, status, body) {
            (false, 200, Ok(_)) => tally.ok.fetch_add(1, Ordering::Relaxed),
            // Pleo dropped the connection mid-answer: the app sees it cut, or 502.
            (true, 200, Err(_)) | (true, 502, Ok(_)) => tally.resets.fetch_add(1, Ordering::Relaxed),
            (_, s, b) => {
                tally.odd(format!("{tenant} {path}: {s} {:?}", b.map(|b| b.to_bytes())));
                0
            }
        };
    }
}

/// Reads until the gateway closes the connection; what it sent.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

async fn slow_client(gw: SocketAddr, kind: usize, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        let Ok(mut s) = TcpStream::connect(gw).await else {
            tally.odd("slow client could not connect".into());
            continue;
        };
        match kind {
            0 => {
                let _ = s.write_all(b"GET /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: glo").await;
                match until_closed(&mut s, Duration::from_secs(10)).await {
                    Some(_) => tally.slowloris_cut.fetch_add(1, Ordering::Relaxed),
                    None => {
                        tally.odd("a slowloris head was not cut".into());
                        0
                    }
                };
            }
            1 => {
                let _ = s
                    .write_all(b"POST /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: hooli\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                match until_closed(&mut s, Duration::from_secs(10)).await {
                    Some(r) if r.starts_with(b"HTTP/1.1 408") => tally.uploads_408.fetch_add(1, Ordering::Relaxed),
                    other => {
                        tally.odd(format!(
                            "stalled upload: {:?}",
                            other.map(|r| String::from_utf8_lossy(&r[..r.len().min(80)]).into_owned())
                        ));
                        0
                    }
                };
            }
            _ => {
                let _ = s
                    .write_all(
                        b"GET /sandbox/bytes/268435456 HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: initech\r\n\r\n",
                    )
                    .await;
                // Read nothing for a while, then see the gateway gave up on us.
                tokio::time::sleep(Duration::from_secs(4)).await;
                match until_closed(&mut s, Duration::from_secs(20)).await {
                    Some(r) if r.len() < 256 << 20 => tally.readers_dropped.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        tally.odd("a client that did not read was not dropped".into());
                        0
                    }
                };
            }
        }
    }
}

fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    // `cargo bench` passes --bench; run only when asked by name (bench/soak.sh).
    if std::env::var("SOAK_SECONDS").is_err() && !std::env::args().any(|a| a == "--soak") {
        println!("soak: skipped (run bench/soak.sh, or set SOAK_SECONDS)");
        return;
    }
    let bin = std::env::var("PLEO_GATEWAY_BIN").unwrap_or_else(|_| "target/release/pleo-gateway".into());
    let out_dir = std::path::PathBuf::from(std::env::var("RESULTS_DIR").unwrap_or_else(|_| "bench-results".into()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run(seconds, bin, out_dir));
}

async fn run(seconds: u64, bin: String, out_dir: std::path::PathBuf) {
    let staging = Sandbox::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SandboxSpec::new(Environment::Staging)
            .api_key(GLOBEX_KEY, "company-globex")
            .api_key(INITECH_KEY, "company-initech"),
        None,
    );
    let mut spec = SandboxSpec::new(Environment::Production).oauth_client(OAuthClient {
        client_id: "hooli-client".into(),
        client_secret: Secret::new("hooli-secret-soak"),
        company_id: "company-hooli".into(),
        refresh_tokens: vec![Secret::new(RT)],
    });
    spec.access_token_ttl = Duration::from_secs(10);
    spec.record_limit = 1000;
    let production = Sandbox::spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), spec, None);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hooli.secret"), "hooli-secret-soak\n").unwrap();
    std::fs::write(dir.path().join("hooli.refresh"), format!("{RT}\n")).unwrap();
    let (gw, admin) = (free_port(), free_port());
    let (s, p) = (staging.addr, production.addr);
    let yaml = [
        format!("listen: {gw}\nadmin_listen: {admin}\nworkers: 1\naccess_log: {{ format: off }}\nstate_dir: ./state\n"),
        format!("environments:\n  staging: {{ base_url: http://{s}, token_url: http://{s}/oauth/token }}\n"),
        format!("  production: {{ base_url: http://{p}, token_url: http://{p}/oauth/token }}\n"),
        "limits: { header_read_timeout: 2s, body_read_timeout: 2s, response_write_timeout: 2s }\n".to_string(),
        "tenants:\n  hooli:\n    environment: production\n".to_string(),
        "    auth: { model: oauth2, client_id: hooli-client, client_secret: { file: hooli.secret }, refresh_token: { file: hooli.refresh } }\n".to_string(),
        format!("  globex:\n    environment: staging\n    auth: {{ model: integrated_api_key, key: {GLOBEX_KEY} }}\n"),
        format!("  initech:\n    environment: staging\n    auth: {{ model: standalone_api_key, key: {INITECH_KEY} }}\n"),
    ]
    .concat();
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let log = std::fs::File::create(out_dir.join("soak-gateway.log")).unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("--config")
        .arg(dir.path().join("gateway.yaml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let pid = child.id();
    let started = Instant::now();
    while TcpStream::connect(gw).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "the gateway did not start (see soak-gateway.log)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let until = Instant::now() + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for n in 0..APPS {
        tasks.push(tokio::spawn(app(gw, n, until, tally.clone())));
    }
    for kind in 0..3 {
        tasks.push(tokio::spawn(slow_client(gw, kind, until, tally.clone())));
    }
    let mut samples = Vec::new();
    let mut next_fault = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if Instant::now() >= next_fault {
            // Two failures in a row: the refresh backs off and succeeds while the token still serves.
            production.inject_token_faults([TokenFault::Status(503), TokenFault::Status(500)]);
            next_fault += Duration::from_secs(15);
        }
        let t = started.elapsed().as_secs();
        if t.is_multiple_of(10) && t > 0 && samples.last().is_none_or(|(last, _, _)| *last != t) {
            let (rss, fds) = sample(pid);
            samples.push((t, rss, fds));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();

    let warm = seconds / 5;
    // After warm-up and before the load winds down.
    let after: Vec<_> = samples.iter().filter(|(t, _, _)| *t >= warm && *t + 5 <= seconds).collect();
    let (rss0, rss_max) = (after.first().map_or(0, |s| s.1), after.iter().map(|s| s.1).max().unwrap_or(0));
    let rss_min = after.iter().map(|s| s.1).min().unwrap_or(0);
    let (fd_min, fd_max) = (after.iter().map(|s| s.2).min().unwrap_or(0), after.iter().map(|s| s.2).max().unwrap_or(0));
    let growth = if rss0 > 0 { (rss_max as f64 - rss0 as f64) / rss0 as f64 * 100.0 } else { 0.0 };
    let stats = production.token_stats();
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let report = format!(
        "soak: {seconds} s, {APPS} keep-alive apps + 3 slow clients, gateway pid {pid} (workers 1)\n\
         ok {} | expected: upstream resets {}, slowloris cut {}, stalled uploads 408 {}, non-readers dropped {} | unexpected {}\n\
         token refreshes {} (reuse {}, invalid_grant {}), token-endpoint 5xx injected {}\n\
         RSS after warm-up ({warm} s): first {rss0} KiB, min {rss_min}, max {rss_max} ({growth:+.1}%)\n\
         open fds after warm-up: min {fd_min}, max {fd_max}\n\
         gateway exit: {exit}\n\
         samples (s, RSS KiB, fds): {samples:?}\n",
        g(&tally.ok),
        g(&tally.resets),
        g(&tally.slowloris_cut),
        g(&tally.uploads_408),
        g(&tally.readers_dropped),
        g(&tally.unexpected),
        stats.refreshes,
        stats.reuse_detected,
        stats.invalid_grant,
        2 * (seconds / 15),
    );
    print!("{report}");
    std::fs::write(out_dir.join("soak.txt"), &report).unwrap();
    staging.shutdown().await;
    production.shutdown().await;
    let flat = growth <= 5.0 && fd_max - fd_min <= 16;
    let clean = g(&tally.unexpected) == 0 && stats.reuse_detected == 0 && exit.success();
    if !(flat && clean) {
        eprintln!("soak FAILED: flat={flat} clean={clean}");
        std::process::exit(1);
    }
    println!("soak passed");
}
