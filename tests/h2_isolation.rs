//! HTTP/2 to Pleo: every tenant of an environment shares one connection, so
//! one app that stops reading a large download must not stall everyone
//! else's traffic on it (the connection's flow-control window is shared).

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
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
    // Let their streams fill whatever the gateway lets them fill.
    eventually("the downloads reaching the sandbox", Duration::from_secs(5), || secure.requests().len() >= 8).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

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
    drop(stalled);
    gw.shutdown().await;
    secure.shutdown().await;
    plain.shutdown().await;
}
