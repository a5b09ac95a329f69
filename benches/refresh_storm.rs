//! A refresh storm across replicas (`bench/refresh-storm.sh`): TENANTS
//! (default 1,000) managed OAuth tenants whose tokens, all issued at start,
//! expire within the same minute; REPLICAS (default 3) gateway processes
//! (the release binary, PLEO_GATEWAY_BIN) on one PostgreSQL database
//! (PLEO_GATEWAY_DATABASE_URL), the stand-in for Pleo in a process of its
//! own (`pleo-gateway sandbox`), and the load in this one: steady requests
//! to random tenants on random replicas throughout.
//!
//! Reports, for the second wave of refreshes (the first one is the start):
//! token calls (target: TENANTS, not TENANTS × REPLICAS), store round trips
//! per refresh (lease + mark + commit; target <= 3), and the p99 of proxied
//! requests during the wave against the p99 before it (target <= 1.2×).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default()
}

fn store_ops(text: &str, ops: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("pleo_gateway_store_operation_duration_seconds_count"))
        .filter(|l| ops.iter().any(|op| l.contains(&format!("op=\"{op}\""))))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(db) = std::env::var("PLEO_GATEWAY_DATABASE_URL") else {
        eprintln!("refresh_storm: set PLEO_GATEWAY_DATABASE_URL (bench/refresh-storm.sh starts a database)");
        return;
    };
    let tenants = env_or("TENANTS", 1000) as usize;
    let replicas = env_or("REPLICAS", 3) as usize;
    let ttl = Duration::from_secs(env_or("TOKEN_SECONDS", 60));

    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let pleo = free();
    let url = format!("http://{pleo}");

    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!(
        "listen: 127.0.0.1:@LISTEN@\nadmin_listen: 127.0.0.1:@ADMIN@\naccess_log: {{ format: off }}\n\
         environments:\n  production: {{ base_url: \"{url}\", token_url: \"{url}/oauth/token\" }}\n\
         store: {{ kind: postgres, url: {{ env: PLEO_GATEWAY_DATABASE_URL }}, pool_size: 8 }}\ntenants:\n"
    );
    for i in 0..tenants {
        yaml.push_str(&format!(
            "  t{i}:\n    environment: production\n    auth: {{ model: oauth2, client_id: storm-client-{i}, \
             client_secret: storm-secret-{i}-0123456789, refresh_token: rt_storm_{i}_0123456789 }}\n"
        ));
    }
    let bin = std::env::var("PLEO_GATEWAY_BIN").unwrap_or_else(|_| "target/release/pleo-gateway".into());
    // The stand-in: the same tenants, its tokens living TOKEN_SECONDS.
    let sandbox_config = dir.path().join("sandbox.yaml");
    let ttl_line = format!("sandbox: {{ access_token_ttl: {}s }}\n", ttl.as_secs());
    std::fs::write(&sandbox_config, format!("{ttl_line}{}", yaml.replace("@LISTEN@", "0").replace("@ADMIN@", "0")))
        .unwrap();
    let sandbox = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&sandbox_config)
        .args(["sandbox", "--production", &pleo.to_string()])
        .env("PLEO_GATEWAY_DATABASE_URL", &db)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} sandbox: {e}"));
    while tokio::net::TcpStream::connect(pleo).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut children, mut addrs, mut admins) = (vec![sandbox], Vec::new(), Vec::new());
    for i in 0..replicas {
        let (addr, admin) = (free(), free());
        let path = dir.path().join(format!("replica-{i}.yaml"));
        let text = yaml.replace("@LISTEN@", &addr.port().to_string()).replace("@ADMIN@", &admin.port().to_string());
        std::fs::write(&path, text).unwrap();
        let child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&path)
            .env("PLEO_GATEWAY_DATABASE_URL", &db)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        children.push(child);
        addrs.push(addr);
        admins.push(admin);
    }
    for a in &addrs {
        while tokio::net::TcpStream::connect(a).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let metrics = |admins: Vec<std::net::SocketAddr>, client: Client<_, Full<Bytes>>| async move {
        let mut text = String::new();
        for a in admins {
            let r = client.get(format!("http://{a}/metrics").parse().unwrap()).await.unwrap();
            text.push_str(&String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()));
        }
        text
    };
    // Token calls, summed over the replicas: (successes, failures).
    let token_calls = |text: &str| {
        let sum = |result: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("pleo_gateway_token_refresh_total{{result=\"{result}\"}}")))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum()
        };
        (sum("success"), sum("failure"))
    };
    let started = Instant::now();
    eprintln!("{tenants} tenants, {replicas} replicas, {}s tokens", ttl.as_secs());
    // The first wave (everyone's first refresh at start).
    loop {
        let (ok, failed) = token_calls(&metrics(admins.clone(), client.clone()).await);
        if ok >= tenants as u64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "start: {ok} refreshed, {failed} failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the first wave's commits and the followers' reads finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = token_calls(&metrics(admins.clone(), client.clone()).await);
    eprintln!("first wave done in {:.1}s: {first:?}", started.elapsed().as_secs_f64());

    // Steady load, recording (time, latency) until the second wave is over.
    let load = Arc::new(std::sync::Mutex::new(Vec::<(Instant, Duration, u16)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..16usize {
        let (client, addrs, load, stop) = (client.clone(), addrs.clone(), load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = w * 7919;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let req = http::Request::get(format!("http://{}/v2/expenses", addrs[n % addrs.len()]))
                    .header("x-pleo-tenant", format!("t{}", (n >> 8) % tenants))
                    .body(Full::default())
                    .unwrap();
                let t0 = Instant::now();
                let status = match client.request(req).await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.into_body().collect().await;
                        s
                    }
                    Err(_) => 0,
                };
                load.lock().unwrap().push((t0, t0.elapsed(), status));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let ops = ["lease", "mark", "commit", "release"];
    let before_ops = store_ops(&metrics(admins.clone(), client.clone()).await, &ops);
    let mut wave_start = None;
    loop {
        let refreshes = token_calls(&metrics(admins.clone(), client.clone()).await).0 - first.0;
        if refreshes > 0 && wave_start.is_none() {
            wave_start = Some(Instant::now());
        }
        if refreshes >= tenants as u64 {
            break;
        }
        assert!(started.elapsed() < ttl * 3, "second wave: {refreshes} of {tenants}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wave_end = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let second = token_calls(&metrics(admins.clone(), client.clone()).await);
    let after_ops = store_ops(&metrics(admins.clone(), client.clone()).await, &ops);
    let wave_start = wave_start.unwrap();
    let samples = load.lock().unwrap().clone();
    let failed = samples.iter().filter(|s| s.2 != 200).count();
    let outside: Vec<_> = samples.iter().filter(|s| s.0 < wave_start).map(|s| s.1).collect();
    let during: Vec<_> = samples.iter().filter(|s| s.0 >= wave_start && s.0 <= wave_end).map(|s| s.1).collect();
    let calls = second.0 - first.0;
    println!("second wave: {calls} token calls for {tenants} tenants on {replicas} replicas (target {tenants})");
    println!(
        "  over {:.1}s; failed token calls (a replay would fail): {}",
        (wave_end - wave_start).as_secs_f64(),
        second.1
    );
    println!(
        "store round trips per refresh (lease+mark+commit+release, all replicas): {:.2}",
        (after_ops - before_ops) / calls.max(1) as f64
    );
    let (p_out, p_in) = (p99(outside.clone()), p99(during.clone()));
    println!(
        "proxied p99: {:?} before the wave ({} requests), {:?} during it ({} requests): {:.2}x; {failed} failed",
        p_out,
        outside.len(),
        p_in,
        during.len(),
        p_in.as_secs_f64() / p_out.as_secs_f64().max(1e-9)
    );
    for mut c in children {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = c.wait();
    }
}
