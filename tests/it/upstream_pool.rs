//! The upstream keep-alive pool, against a bare HTTP/1.1 origin that counts
//! its connections: requests reuse kept-alive connections, a connection the
//! origin closed while idle is never a failed request, and connections idle
//! past `limits.upstream_idle_timeout` are closed by the gateway.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    /// Connections the gateway closed (the origin read EOF).
    closed_by_peer: AtomicUsize,
    requests: AtomicUsize,
}

/// Answers every request head with `200 ok`, keeping the connection open;
/// with `close_idle`, closes a connection that stays idle that long after a
/// response (without announcing it, as servers and load balancers do).
struct Origin {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start(close_idle: Option<Duration>) -> Origin {
        Origin::start_with(close_idle, &[]).await
    }

    /// Also hangs up, without answering, on the requests numbered in
    /// `hang_up_on` (1 is the first request the origin reads).
    async fn start_with(close_idle: Option<Duration>, hang_up_on: &[usize]) -> Origin {
        let hang_up_on: Arc<[usize]> = hang_up_on.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                c.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, c.clone(), close_idle, hang_up_on.clone()));
            }
        });
        Origin { addr, counts, task }
    }

    fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, counts: Arc<Counts>, close_idle: Option<Duration>, hang_up_on: Arc<[usize]>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = match close_idle {
                Some(idle) if buf.is_empty() => match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
                    Ok(r) => r,
                    Err(_) => return, // idle too long: hang up
                },
                _ => stream.read(&mut chunk).await,
            };
            match read {
                Ok(0) | Err(_) => {
                    counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        let n = counts.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if hang_up_on.contains(&n) {
            return;
        }
        if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
            return;
        }
    }
}

/// A gateway whose production environment (tenant `acme`, a static OAuth
/// token: no credential check traffic) is the bare origin.
async fn gateway(origin: &Origin, dir: &std::path::Path, limits: &str) -> pleo_gateway::gateway::Running {
    let dead = format!("127.0.0.1:{}", crate::support::free_port());
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\naccess_log: {{ format: off }}\n{limits}environments:\n  staging: {{ base_url: http://{dead} }}\n  production: {{ base_url: http://{} }}\n{}",
        origin.addr,
        tenants_yaml(dir)
    );
    start_gateway(&yaml, dir).await
}

async fn get(client: &HttpClient, gw: SocketAddr) -> u16 {
    send(client, gw, http::Method::GET, "").await
}

async fn send(client: &HttpClient, gw: SocketAddr, method: http::Method, body: &'static str) -> u16 {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{gw}/v2/expenses"))
        .header("x-pleo-tenant", "acme")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(None).await;
    let gw = gateway(&origin, dir.path(), "").await;
    let client = http_client();
    for _ in 0..20 {
        assert_eq!(get(&client, gw.addr).await, 200);
    }
    assert_eq!(origin.accepted(), 1, "20 requests one after another share one connection");

    // Eight at a time: at most eight connections, kept for the next rounds.
    for _ in 0..5 {
        let round: Vec<_> = (0..8)
            .map(|_| {
                let (client, addr) = (client.clone(), gw.addr);
                tokio::spawn(async move { get(&client, addr).await })
            })
            .collect();
        for r in round {
            assert_eq!(r.await.unwrap(), 200);
        }
    }
    assert!(origin.accepted() <= 8, "{} connections for 8 concurrent requests", origin.accepted());
    assert_eq!(origin.counts.requests.load(Ordering::SeqCst), 60);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_origin_closed_while_idle_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    // The origin hangs up on any connection idle for 20 ms.
    let origin = Origin::start(Some(Duration::from_millis(20))).await;
    let gw = gateway(&origin, dir.path(), "").await;
    let client = http_client();
    // Requests land just before, at and after the origin's hang-up, so some
    // are sent on a connection being closed: none may fail.
    for i in 0..60u64 {
        assert_eq!(get(&client, gw.addr).await, 200, "request {i}");
        tokio::time::sleep(Duration::from_micros(17_000 + (i % 7) * 1_000)).await;
    }
    assert!(origin.accepted() > 1, "the origin's hang-ups were noticed and new connections made");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(None).await;
    let gw = gateway(&origin, dir.path(), "limits: { upstream_idle_timeout: 300ms }\n").await;
    let client = http_client();
    assert_eq!(get(&client, gw.addr).await, 200);
    assert_eq!(origin.counts.closed_by_peer.load(Ordering::SeqCst), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.counts.closed_by_peer.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the idle upstream connection was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next request simply connects again.
    assert_eq!(get(&client, gw.addr).await, 200);
    assert_eq!(origin.accepted(), 2);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_bodiless_idempotent_requests_are_sent_again_after_a_hang_up() {
    let dir = tempfile::tempdir().unwrap();
    // Requests 2 and 4 reach the origin, which hangs up without answering.
    let origin = Origin::start_with(None, &[2, 4]).await;
    let gw = gateway(&origin, dir.path(), "").await;
    let client = http_client();
    assert_eq!(get(&client, gw.addr).await, 200);
    // A POST on the kept-alive connection may have been acted on: never twice.
    assert_eq!(send(&client, gw.addr, http::Method::POST, r#"{"amount":1}"#).await, 502);
    assert_eq!(origin.counts.requests.load(Ordering::SeqCst), 2, "the POST was sent once");
    // A GET on a kept-alive connection is sent again on a new connection.
    assert_eq!(get(&client, gw.addr).await, 200, "request 3, on a new connection");
    assert_eq!(get(&client, gw.addr).await, 200, "request 4, hung up and sent again as 5");
    assert_eq!(origin.counts.requests.load(Ordering::SeqCst), 5, "the hung-up GET went out twice");
    gw.shutdown().await;
}
