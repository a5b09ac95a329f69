//! Limits and timeouts through real sockets: 413 for bodies over
//! `max_request_body_bytes` (declared or streamed), 503 `overloaded` past
//! `max_in_flight`, a slowloris head closed by `header_read_timeout`, and
//! idle keep-alive connections closed by `idle_timeout` (but never one with
//! a request still open).

mod support;

use std::time::{Duration, Instant};

use support::*;
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
async fn requests_past_max_in_flight_are_shed_with_503() {
    let kit = Kit::start("limits: { max_in_flight: 2, max_in_flight_per_tenant: 2 }\n").await;
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
    // A head that never ends: one header line, then a byte now and then.
    s.write_all(b"GET /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\n").await.unwrap();
    let trickle = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    trickle.await;
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
