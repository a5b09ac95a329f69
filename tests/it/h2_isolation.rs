//! HTTP/2 to Pleo: every tenant of an environment shares one connection, so
//! one app that stops reading a large download must not stall everyone
//! else's traffic on it (the connection's flow-control window is shared).

use std::time::Duration;

use crate::support::*;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_does_not_stop_other_tenants_on_the_shared_h2_connection() {
    let (secure, ca_pem) = h2_tls_sandbox(staging_spec()).await;
    let plain = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = tls_staging_yaml(dir.path(), &secure, &ca_pem, &plain);
    let gw = start_gateway(&yaml, dir.path()).await;

    // Eight apps start 64 MiB downloads and stop reading (raw sockets that never read).
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /sandbox/bytes/67108864 HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: globex\r\n\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    eventually("the downloads reaching the sandbox", Duration::from_secs(5), || secure.requests().len() >= 8).await;
    // Their streams fill until flow control stops them: the sandbox then
    // produces no more bytes for them. Wait for that state (the total holds
    // still across several polls), and check it is a stall, far short of the
    // 512 MiB asked for: the stalled readers' windows are exhausted.
    let full = stalled_total(&secure).await;
    assert!(full >= 8 << 20, "each stalled stream took at least its 1 MiB window: {full} bytes");
    assert!(full < 256 << 20, "the stalled downloads are held back, not streamed: {full} bytes");

    // Another tenant on the same environment (and connection) downloads 8 MiB.
    let req = http::Request::get(format!("http://{}/sandbox/bytes/8388608", gw.addr))
        .header("x-pleo-tenant", "initech")
        .body(Default::default())
        .unwrap();
    let fetch = async {
        let resp = http_client().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes().len()
    };
    let got = tokio::time::timeout(Duration::from_secs(20), fetch).await.expect("the other tenant's download stalled");
    assert_eq!(got, 8 << 20);
    assert!(secure.requests().iter().all(|r| r.version == http::Version::HTTP_2), "one shared h2 connection");
    assert_eq!(stalled_total(&secure).await, full + (8 << 20), "the stalled streams are still stalled");
    drop(stalled);
    gw.shutdown().await;
    secure.shutdown().await;
    plain.shutdown().await;
}

/// The sandbox's streamed-byte total once it has stopped growing: the same
/// value on five polls 100 ms apart (within 30 s).
async fn stalled_total(sandbox: &pleo_gateway::sandbox::Sandbox) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut last, mut same) = (sandbox.bytes_streamed(), 0);
    while same < 5 {
        assert!(tokio::time::Instant::now() < deadline, "the streams never stopped growing");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sandbox.bytes_streamed();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}
