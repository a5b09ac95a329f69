//! The process lifecycle through the real binary: SIGTERM stops accepting at
//! once, lets a request in flight finish, and exits 0.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_request_in_flight_then_exits_0() {
    let staging = sandbox(staging_spec()).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_standard_config(
        dir.path(),
        &base_url(&staging),
        &base_url(&production),
        "limits: { drain_timeout: 10s }\n",
    );
    let gw = Process::spawn(&["--config", path.to_str().unwrap()], &[]);
    let (addr, _) = gw.listening().await;

    let client = http_client();
    let slow = {
        let req = http::Request::get(format!("http://{addr}/sandbox/delay/1500")).header("x-pleo-tenant", "globex");
        let client = client.clone();
        tokio::spawn(async move {
            let resp = client.request(req.body(Default::default()).unwrap()).await.unwrap();
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (status, body)
        })
    };
    // Let the slow request reach the sandbox before the signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while staging.requests().is_empty() {
        assert!(Instant::now() < deadline, "the slow request never reached the sandbox");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    gw.line_with("shutting down", Duration::from_secs(5)).await;

    // New connections are refused while the old one drains.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener still accepts after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!slow.is_finished(), "the drain did not wait for the request in flight");

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "the request in flight completed");
    assert!(!body.is_empty());
    let (exit, log) = tokio::task::spawn_blocking(move || gw.wait()).await.unwrap();
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert!(signalled.elapsed() < Duration::from_secs(10), "it did not wait for the drain timeout");
    assert!(log.contains("drained"), "{log}");
    staging.shutdown().await;
    production.shutdown().await;
}
