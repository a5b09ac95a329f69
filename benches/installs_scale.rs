//! Installs at scale (`bench/installs-scale.sh`): INSTALLS (default 10,000)
//! tenants made by installs, half OAuth (their chains in the store) and half
//! integrated keys (sealed), in one PostgreSQL database (PLEO_GATEWAY_DATABASE_URL);
//! REPLICAS (default 3) gateway processes (the release binary,
//! PLEO_GATEWAY_BIN) start on it. The stand-in for Pleo runs in this process.
//!
//! Reports, per replica: start to ready (`/readyz` 200 with every install
//! routed; target <= 2 s) and RSS once ready and after its first credential
//! checks (target <= 128 MiB); then one install through the marketplace on
//! replica 0 and how long until replicas 1 and 2 serve it (target <= 1 s,
//! by notification: the replicas poll every 30 s).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pleo_gateway::config::{AuthModel, Environment, PostgresConfig};
use pleo_gateway::onboarding::seal::Sealer;
use pleo_gateway::sandbox::{MarketApp, Sandbox, SandboxSpec};
use pleo_gateway::secret::Secret;
use pleo_gateway::state::{InstallRecord, OnboardedKey, OnboardingStore, PostgresStore, StoredToken};

const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const ERP_SECRET: &str = "erp-bench-secret-0123456789";

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn company(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A line of /proc/PID/status in MiB (`VmRSS:` now, `VmHWM:` the high-water mark).
fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

async fn get(client: &HttpClient, url: &str, headers: &[(&str, String)]) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    match client.request(req.body(Full::default()).unwrap()).await {
        Ok(r) => {
            let (parts, body) = r.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
        }
        Err(_) => (0, http::HeaderMap::new(), String::new()),
    }
}

async fn seed(db: &str, n: usize) {
    let store = Arc::new(
        PostgresStore::for_command(&PostgresConfig {
            url: Secret::new(db),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            ca_file: None,
            poll_interval: Duration::from_secs(30),
        })
        .unwrap(),
    );
    let sealer = Arc::new(Sealer::new(&[Secret::new(STORE_KEY)]).unwrap());
    let now = pleo_gateway::state::unix_now_ms();
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (store, sealer, permit) = (store.clone(), sealer.clone(), permits.clone().acquire_owned().await.unwrap());
        tasks.spawn(async move {
            let oauth = i % 2 == 0;
            let (app, tenant) = if oauth {
                ("erp", format!("erp-{}", company(i)))
            } else {
                ("ledger", format!("ledger-{}", company(i)))
            };
            if oauth {
                let chain = StoredToken {
                    refresh_token: Secret::new(format!("rt_seeded_{i}_0123456789")),
                    access_token: Some(Secret::new(format!("at_seeded_{i}_0123456789"))),
                    access_issued_at_ms: Some(now),
                    access_expires_at_ms: Some(now + 3_600_000),
                    imported_from: None,
                    reauthorization_required: false,
                };
                store.import(&tenant, &chain).await.unwrap();
            } else {
                let key = Secret::new(format!("ik_seeded_{i}_0123456789"));
                let record = OnboardedKey {
                    tenant: tenant.clone(),
                    model: "integrated_api_key".into(),
                    sealed_key: Some(sealer.seal(&tenant, &key)),
                    masked: "key ••••6789".into(),
                    company_id: Some(company(i)),
                    connected_at_ms: now,
                    link_id: None,
                    by: "install:bench".into(),
                };
                store.put_onboarded(&record).await.unwrap();
            }
            let record = InstallRecord {
                tenant: tenant.into(),
                app: app.into(),
                environment: if oauth { Environment::Production } else { Environment::Staging },
                model: if oauth { AuthModel::OAuth2 } else { AuthModel::IntegratedApiKey },
                resource: format!("urn:pleo:company:{}", company(i)).into(),
                status: "ACTIVATED".into(),
                error_code: None,
                installed_by: Some("bench".into()),
                installed_at_ms: now,
                updated_at_ms: now,
                uninstalled_at_ms: None,
                uninstalled_by: None,
                last_error: None,
            };
            store.put_install(&record).await.unwrap();
            drop(permit);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Walks redirects with cookies, as a browser would (for the one live install).
async fn follow(client: &HttpClient, mut url: String) -> (u16, String) {
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..10 {
        let cookie = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let (status, headers, body) = get(client, &url, &[("cookie", cookie)]).await;
        for v in headers.get_all(http::header::SET_COOKIE) {
            if let Some((k, v)) = v.to_str().unwrap_or("").split(';').next().and_then(|p| p.split_once('=')) {
                cookies.insert(k.into(), v.into());
            }
        }
        match headers.get(http::header::LOCATION).and_then(|l| l.to_str().ok()) {
            Some(l) if (300..400).contains(&status) => {
                url = if l.starts_with("http") {
                    l.to_string()
                } else {
                    let host_end = url[7..].find('/').map_or(url.len(), |i| i + 7);
                    format!("{}{l}", &url[..host_end])
                };
            }
            _ => return (status, body),
        }
    }
    (0, "too many redirects".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(db) = std::env::var("PLEO_GATEWAY_DATABASE_URL") else {
        eprintln!("installs_scale: set PLEO_GATEWAY_DATABASE_URL (bench/installs-scale.sh starts a database)");
        return;
    };
    let installs = env_or("INSTALLS", 10_000) as usize;
    let replicas = env_or("REPLICAS", 3) as usize;
    let bin = std::env::var("PLEO_GATEWAY_BIN").unwrap_or_else(|_| "target/release/pleo-gateway".into());
    // A gateway under heaptrack starts many times slower: READY_SECS gives it longer.
    let ready_within = Duration::from_secs(env_or("READY_SECS", 60));
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let connect_ports: Vec<u16> = (0..replicas).map(|_| free().port()).collect();
    let public0 = format!("http://127.0.0.1:{}", connect_ports[0]);
    let market = |name: &str, client_id: &str, model| MarketApp {
        name: name.into(),
        client_id: client_id.into(),
        model,
        install_url: format!("{public0}/install/{name}"),
        settings_url: format!("{public0}/settings/{name}"),
    };
    // The stand-in knows the seeded keys, so each replica's first credential
    // checks (one per key install, 16 at a time) find them connected.
    let mut staging_spec =
        SandboxSpec::new(Environment::Staging).app(market("ledger", "ledger-app", AuthModel::IntegratedApiKey), None);
    for i in (1..installs).step_by(2) {
        staging_spec = staging_spec.api_key(&format!("ik_seeded_{i}_0123456789"), &company(i));
    }
    let staging = Sandbox::spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), staging_spec, None);
    let production = Sandbox::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SandboxSpec::new(Environment::Production)
            .app(market("erp", "erp-client", AuthModel::OAuth2), Some(Secret::new(ERP_SECRET))),
        None,
    );
    let (s, p) = (format!("http://{}", staging.addr), format!("http://{}", production.addr));

    let seeding = Instant::now();
    seed(&db, installs).await;
    eprintln!("seeded {installs} installs in {:.1}s", seeding.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut children = Vec::new();
    let mut gateways = Vec::new();
    println!("{installs} installed tenants, {replicas} replicas on PostgreSQL");
    for (i, port) in connect_ports.iter().enumerate() {
        let (addr, admin) = (free(), free());
        let yaml = format!(
            "listen: {addr}\nadmin_listen: {admin}\naccess_log: {{ format: off }}\n\
             environments:\n  staging: {{ base_url: \"{s}\", token_url: \"{s}/oauth/token\" }}\n  \
             production: {{ base_url: \"{p}\", token_url: \"{p}/oauth/token\" }}\n\
             store: {{ kind: postgres, url: {{ env: PLEO_GATEWAY_DATABASE_URL }}, pool_size: 8, poll_interval: 30s, \
             encryption_key: {STORE_KEY} }}\n\
             connect: {{ listen: \"127.0.0.1:{port}\", public_url: \"http://127.0.0.1:{port}\" }}\n\
             apps:\n  erp:\n    environment: production\n    auth: {{ model: oauth2, client_id: erp-client, \
             client_secret: {ERP_SECRET} }}\n    tenant_name: \"erp-{{company_id}}\"\n    handover: {{ jwks_url: \"{p}/oauth/jwks\", issuer: \"{p}\" }}\n  \
             ledger:\n    environment: staging\n    auth: {{ model: integrated_api_key, client_id: ledger-app }}\n    \
             tenant_name: \"ledger-{{company_id}}\"\n    handover: {{ jwks_url: \"{s}/oauth/jwks\", issuer: \"{s}\" }}\n"
        );
        let path = dir.path().join(format!("replica-{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let started = Instant::now();
        let child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&path)
            .env("PLEO_GATEWAY_DATABASE_URL", &db)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let pid = child.id();
        children.push(child);
        loop {
            if get(&client, &format!("http://{admin}/readyz"), &[]).await.0 == 200 {
                break;
            }
            assert!(started.elapsed() < ready_within, "replica {i} not ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready = started.elapsed();
        let rss_ready = rss_mib(pid);
        let metrics = get(&client, &format!("http://{admin}/metrics"), &[]).await.2;
        let routed: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("pleo_gateway_installed_tenants{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert_eq!(routed as usize, installs, "every install routed when ready");
        println!(
            "replica {i}: start to ready {:.0} ms (target <= 2000), RSS when ready {rss_ready:.1} MiB",
            ready.as_secs_f64() * 1000.0
        );
        gateways.push((addr, pid));
    }
    // Let the first credential checks (the key installs' GET /v1/installations/me) run.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (i, (_, pid)) in gateways.iter().enumerate() {
        println!(
            "replica {i}: RSS after 10 s {:.1} MiB (target <= 128), high-water {:.1} MiB",
            rss_mib(*pid),
            status_mib(*pid, "VmHWM:")
        );
    }

    // One live install on replica 0; how long until the others serve it.
    let fresh = company(installs + 1);
    let (status, body) =
        follow(&client, format!("http://{}/marketplace/connect?app=erp&company={fresh}", production.addr)).await;
    assert_eq!(status, 200, "the install: {body}");
    let installed = Instant::now();
    let tenant = format!("erp-{fresh}");
    for (i, (addr, _)) in gateways.iter().enumerate().skip(1) {
        loop {
            if get(&client, &format!("http://{addr}/v1/expenses"), &[("x-pleo-tenant", tenant.clone())]).await.0 == 200
            {
                break;
            }
            assert!(installed.elapsed() < Duration::from_secs(30), "replica {i} never served the install");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!(
            "replica {i}: serves the new install {:.0} ms after it (target <= 1000)",
            installed.elapsed().as_secs_f64() * 1000.0
        );
    }
    // An install rebuilds the routing table: what that costs at this size.
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "replica 0: after the live install RSS {:.1} MiB, high-water {:.1} MiB",
        rss_mib(gateways[0].1),
        status_mib(gateways[0].1, "VmHWM:")
    );
    for mut c in children {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = c.wait();
    }
}
