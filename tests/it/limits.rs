//! Limits and timeouts through real sockets: 413 for bodies over
//! `max_request_body_bytes` (declared or streamed), 503 `overloaded` past
//! `max_in_flight`, a slowloris head closed by `header_read_timeout`, and
//! idle keep-alive connections closed by `idle_timeout` (but never one with
//! a request still open).

use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (Ok(bytes)) or `within` passes (Err).
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Result<String, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return Err(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

/// A head that never ends: one header line, then a byte every `every`,
/// `bytes` times or until the gateway closes the connection.
async fn slow_head(s: &mut TcpStream, bytes: usize, every: Duration) {
    s.write_all(b"GET /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\n").await.unwrap();
    for _ in 0..bytes {
        tokio::time::sleep(every).await;
        if s.write_all(b"x").await.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn declared_body_over_the_limit_is_refused_before_reading_it() {
    let kit = Kit::start("limits: { max_request_body_bytes: 1000 }\n").await;
    let body = bytes::Bytes::from(vec![b'x'; 1001]);
    let r = kit.request(http::Method::POST, "/v2/x", &[("x-pleo-tenant", "globex")], body).await;
    r.assert_refused(413, "request_body_too_large");
    assert_eq!(kit.upstream_count(), 0);
    // At the limit is fine.
    let body = bytes::Bytes::from(vec![b'x'; 1000]);
    let r = kit.request(http::Method::POST, "/v2/x", &[("x-pleo-tenant", "globex")], body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"]["bytes"], 1000);
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_refused_total", &[("reason", "request_body_too_large")]), 1.0);
    kit.stop().await;
}

#[tokio::test]
async fn streamed_body_over_the_limit_gets_413() {
    let kit = Kit::start("limits: { max_request_body_bytes: 100000 }\n").await;
    for tenant in ["globex", "acme"] {
        let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
        let head = format!(
            "POST /v2/upload HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: {tenant}\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'y'; 10_000];
        // 150 kB in 10 kB chunks; the gateway may stop reading after 100 kB.
        for _ in 0..15 {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if s.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let reply = read_until_closed(&mut s, Duration::from_secs(10)).await.unwrap_or_else(|e| e);
        assert!(reply.starts_with("HTTP/1.1 413"), "{tenant}: {reply}");
        assert!(reply.contains("request_body_too_large"), "{reply}");
    }
    kit.stop().await;
}

#[tokio::test]
async fn a_tenant_alone_may_use_the_whole_limit_and_the_next_request_is_shed() {
    // The tenant's share is 1 (half of 2), yet alone it may borrow the second slot.
    let kit = Kit::start("limits: { max_in_flight: 2 }\n").await;
    let slow = |ms: u64| kit.get_owned(format!("/sandbox/delay/{ms}"), "globex");
    let (a, b) = (tokio::spawn(slow(1500)), tokio::spawn(slow(1500)));
    // Wait until both are in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&kit.metrics().await, "pleo_gateway_in_flight_requests", &[]) < 2.0 {
        assert!(Instant::now() < deadline, "two slow requests never went in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await;
    let j = r.assert_refused(503, "overloaded");
    assert_eq!(r.headers["retry-after"], "1");
    assert!(j["message"].as_str().unwrap().contains("max_in_flight"));
    assert_eq!(a.await.unwrap(), 200);
    assert_eq!(b.await.unwrap(), 200);
    // Capacity is back once they finish.
    assert_eq!(kit.get("/v2/x", &[("x-pleo-tenant", "globex")]).await.status, 200);
    kit.stop().await;
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_by_the_header_read_timeout() {
    let kit = Kit::start("limits: { header_read_timeout: 500ms }\n").await;
    let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
    let started = Instant::now();
    slow_head(&mut s, 50, Duration::from_millis(100)).await;
    let closed = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_ok(), "the connection is still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(kit.upstream_count(), 0);
    kit.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_but_busy_ones_are_not() {
    let kit = Kit::start("limits: { idle_timeout: 400ms }\n").await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: globex\r\n\r\n");

    // A request that takes longer than the idle timeout completes.
    let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
    s.write_all(request("/sandbox/delay/1200").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));

    // Then, with nothing open, the connection is closed after the idle timeout.
    let idle_from = Instant::now();
    let rest = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(rest.is_ok(), "an idle connection stayed open");
    assert!(idle_from.elapsed() >= Duration::from_millis(300), "closed too early: {:?}", idle_from.elapsed());
    kit.stop().await;
}

/// Reads one response with a content-length body; returns its status line.
async fn one_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text.lines().next().unwrap_or_default().to_string();
            }
        }
    }
}

#[tokio::test]
async fn keep_alive_outlives_the_header_read_timeout_but_a_later_slow_head_does_not() {
    let kit = Kit::start("limits: { header_read_timeout: 300ms, idle_timeout: 60s }\n").await;
    let request = b"GET /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: globex\r\n\r\n";
    let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    assert_eq!(one_response(&mut s).await, "HTTP/1.1 200 OK");

    // Idle between requests for longer than the header read timeout: the
    // connection is kept (idle_timeout is 60 s), and serves the next request.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.write_all(request).await.unwrap();
    assert_eq!(one_response(&mut s).await, "HTTP/1.1 200 OK", "an idle keep-alive connection was closed");

    // The next head starts after a pause and never ends: cut off after
    // header_read_timeout from its first byte, not from the last response.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let first_byte = Instant::now();
    slow_head(&mut s, 30, Duration::from_millis(50)).await;
    let closed = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_ok(), "a slow head is still open after {:?}", first_byte.elapsed());
    assert!(first_byte.elapsed() >= Duration::from_millis(250), "{:?}", first_byte.elapsed());
    assert_eq!(kit.upstream_count(), 2);
    kit.stop().await;
}

#[tokio::test]
async fn http2_pings_between_requests_do_not_count_as_a_slow_head() {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let kit = Kit::start("limits: { header_read_timeout: 300ms, idle_timeout: 60s }\n").await;
    let tcp = TcpStream::connect(kit.gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let get = || {
        http::Request::get(format!("http://{}/v2/x", kit.gw.addr))
            .header("x-pleo-tenant", "globex")
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);
    // A second of pings (frames arriving with no request open), then the
    // same connection serves another request.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let resp = send.send_request(get()).await.expect("the h2 connection was closed while idle");
    assert_eq!(resp.status(), 200);
    driver.abort();
    kit.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_after_body_read_timeout() {
    let kit = Kit::start("limits: { body_read_timeout: 300ms }\n").await;
    let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
    let started = Instant::now();
    // 100 bytes declared, 10 sent, then nothing: a trickling upload holding a slot.
    s.write_all(b"POST /v2/upload HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: globex\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(5)).await.unwrap_or_else(|e| e);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_body_timeout"), "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout: {:?}", started.elapsed());
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_in_flight_requests", &[]), 0.0, "the slot is free again");
    kit.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_response_write_timeout() {
    let kit = Kit::start("limits: { response_write_timeout: 500ms }\n").await;
    let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
    // 256 MiB asked for, nothing read: the socket buffers fill and writes pend.
    s.write_all(b"GET /sandbox/bytes/268435456 HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: globex\r\n\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sample(&kit.metrics().await, "pleo_gateway_in_flight_requests", &[]) == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "a client that reads nothing still holds its request");
    }
    // What the kernel had buffered, then the end: far less than was asked for.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the connection is still open"),
        }
    }
    assert!(got < 256 << 20, "{got} bytes");
    kit.stop().await;
}

#[tokio::test]
async fn connections_that_send_no_request_are_closed_after_header_read_timeout() {
    let kit = Kit::start("limits: { header_read_timeout: 300ms }\n").await;
    // Nothing at all (protocol detection waits), and an h2 preface with no request after it.
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"] {
        let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
        let started = Instant::now();
        s.write_all(opening).await.unwrap();
        // idle_timeout is 60 s: only the first-request bound can close it this soon.
        let closed = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(closed.is_ok(), "still open after {:?}", started.elapsed());
        assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    }
    kit.stop().await;
}

/// One request on `s`; its status line.
async fn request_on(s: &mut TcpStream) -> String {
    s.write_all(b"GET /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: globex\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn at_max_connections_the_longest_idle_connection_makes_room() {
    let kit = Kit::start("limits: { max_connections: 3 }\n").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
        assert_eq!(request_on(&mut s).await, "HTTP/1.1 200 OK");
        open.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The third is used again: the first is now idle the longest, then the second.
    assert_eq!(request_on(&mut open[2]).await, "HTTP/1.1 200 OK");
    let mut fourth = TcpStream::connect(kit.gw.addr).await.unwrap();
    assert_eq!(request_on(&mut fourth).await, "HTTP/1.1 200 OK", "a new connection is served at the limit");
    let closed = read_until_closed(&mut open[0], Duration::from_secs(5)).await.expect("the oldest idle one is closed");
    assert!(closed.is_empty(), "closed between requests, nothing cut off: {closed}");
    assert_eq!(request_on(&mut open[1]).await, "HTTP/1.1 200 OK", "the others keep serving");
    assert_eq!(request_on(&mut open[2]).await, "HTTP/1.1 200 OK");
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_idle_connections_evicted_total", &[("listener", "gateway")]), 1.0);
    kit.stop().await;
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once_when_none_is_idle() {
    let kit = Kit::start("limits: { max_connections: 3 }\n").await;
    let request = b"GET /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: globex\r\n\r\n";
    // Three connections busy sending a request head.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
        s.write_all(b"GET /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\n").await.unwrap();
        open.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(kit.gw.addr).await.unwrap();
    let _ = fourth.write_all(request).await;
    let reply = read_until_closed(&mut fourth, Duration::from_secs(5)).await.expect("closed at once");
    assert!(reply.is_empty(), "no answer past the limit: {reply}");
    // The busy ones were left alone: each finishes its request.
    for s in &mut open {
        s.write_all(b"x-pleo-tenant: globex\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    // One closes; a new connection is served again.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(kit.gw.addr).await.unwrap();
        let _ = s.write_all(request).await;
        let mut buf = vec![0u8; 8192];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            if buf[..n].starts_with(b"HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "capacity never came back");
    }
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_idle_connections_evicted_total", &[("listener", "gateway")]), 0.0);
    kit.stop().await;
}

fn share_key(n: &str) -> String {
    format!("pgw_share_test_key_{n}_0123456789abcdef")
}

/// max_in_flight 20: each tenant and each client is guaranteed 10, and may
/// borrow past it while the gateway holds at most 18 (the last tenth is kept).
async fn sharing_kit() -> Kit {
    let digest = |n: &str| pleo_gateway::clients::key_sha256(share_key(n).as_bytes());
    Kit::start(&format!(
        "limits: {{ max_in_flight: 20 }}\nclients:\n  - {{ name: noisy, key_sha256: \"{}\", tenants: [globex, initech] }}\n  - {{ name: quiet, key_sha256: \"{}\", tenants: [globex, initech] }}\n",
        digest("noisy"),
        digest("quiet")
    ))
    .await
}

/// A request as `who` for `tenant`, owning what it needs (for `tokio::spawn`).
fn send_as(kit: &Kit, who: &str, tenant: &str, path: &str) -> impl std::future::Future<Output = u16> + Send + 'static {
    let client = kit.client.clone();
    let req = http::Request::get(kit.url(path))
        .header("x-pleo-tenant", tenant)
        .header("authorization", format!("Bearer {}", share_key(who)))
        .body(Default::default())
        .unwrap();
    async move { client.request(req).await.unwrap().status().as_u16() }
}

async fn wait_in_flight(kit: &Kit, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&kit.metrics().await, "pleo_gateway_in_flight_requests", &[]) != n {
        assert!(Instant::now() < deadline, "in flight never reached {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A tenant's requests in flight, from `/tenants`.
async fn tenant_in_flight(kit: &Kit, tenant: &str) -> u64 {
    let (_, body) = admin_get(kit.gw.admin_addr, "/tenants").await;
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t = j["tenants"].as_array().unwrap().iter().find(|t| t["name"] == tenant).unwrap();
    t["in_flight"].as_u64().unwrap()
}

#[tokio::test]
async fn one_tenant_or_client_cannot_take_every_slot() {
    let kit = sharing_kit().await;
    // The noisy client fills globex past its share: 10 within it, 8 borrowed, and no more.
    let mut held: Vec<_> =
        (0..10).map(|_| tokio::spawn(send_as(&kit, "noisy", "globex", "/sandbox/delay/2500"))).collect();
    wait_in_flight(&kit, 10.0).await;
    held.extend((0..8).map(|_| tokio::spawn(send_as(&kit, "noisy", "globex", "/sandbox/delay/2500"))));
    wait_in_flight(&kit, 18.0).await;
    assert_eq!(tenant_in_flight(&kit, "globex").await, 18);
    // Past 18 a request past its share is shed, whoever sends it: globex is past its share,
    // and so is the noisy client.
    assert_eq!(send_as(&kit, "quiet", "globex", "/v2/x").await, 503);
    assert_eq!(send_as(&kit, "noisy", "initech", "/v2/x").await, 503);
    // Within their share, everyone else is served from the reserve: 2 at once.
    let quiet: Vec<_> =
        (0..2).map(|_| tokio::spawn(send_as(&kit, "quiet", "initech", "/sandbox/delay/1000"))).collect();
    wait_in_flight(&kit, 20.0).await;
    // Now the whole gateway is full.
    kit.get("/v2/x", &[("authorization", &format!("Bearer {}", share_key("quiet"))), ("x-pleo-tenant", "initech")])
        .await
        .assert_refused(503, "overloaded");
    for h in held.into_iter().chain(quiet) {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(send_as(&kit, "quiet", "globex", "/v2/x").await, 200, "the share is back once they finish");
    kit.stop().await;
}

#[tokio::test]
async fn a_quiet_tenant_gets_its_share_while_another_hammers() {
    let kit = sharing_kit().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The noisy client hammers globex from 40 loops: slow requests, sent again
    // the moment one ends or is shed.
    let hammer: Vec<_> = (0..40)
        .map(|_| {
            let (kit_req, stop) = ((kit.client.clone(), kit.url("/sandbox/delay/300")), stop.clone());
            tokio::spawn(async move {
                let (client, url) = kit_req;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = http::Request::get(&url)
                        .header("x-pleo-tenant", "globex")
                        .header("authorization", format!("Bearer {}", share_key("noisy")))
                        .body(Default::default())
                        .unwrap();
                    let _ = client.request(req).await.map(|r| r.status());
                }
            })
        })
        .collect();
    wait_in_flight(&kit, 18.0).await;
    // The quiet client wants 8 initech requests at once, each sent again
    // 100 ms after it is shed (a polite retry, slower than the hammering).
    let quiet: Vec<_> = (0..8)
        .map(|_| {
            let send = {
                let (client, url) = (kit.client.clone(), kit.url("/sandbox/delay/4000"));
                move || {
                    let req = http::Request::get(&url)
                        .header("x-pleo-tenant", "initech")
                        .header("authorization", format!("Bearer {}", share_key("quiet")))
                        .body(Default::default())
                        .unwrap();
                    client.request(req)
                }
            };
            tokio::spawn(async move {
                loop {
                    match send().await.unwrap().status().as_u16() {
                        503 => tokio::time::sleep(Duration::from_millis(100)).await,
                        s => return s,
                    }
                }
            })
        })
        .collect();
    // The hammering gives way: borrowed slots go back as its requests end, and
    // the quiet tenant holds all 8 it asked for, within its share of 10.
    let deadline = Instant::now() + Duration::from_secs(4);
    while tenant_in_flight(&kit, "initech").await < 8 {
        assert!(Instant::now() < deadline, "the quiet tenant never got its share");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let globex = tenant_in_flight(&kit, "globex").await;
    assert!(globex <= 12, "the noisy tenant holds {globex}, leaving the quiet one its share");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for q in quiet {
        assert_eq!(q.await.unwrap(), 200);
    }
    for h in hammer {
        h.await.unwrap();
    }
    kit.stop().await;
}
