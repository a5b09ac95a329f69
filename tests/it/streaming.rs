//! Bodies stream both ways: a large upload arrives intact, a large download
//! arrives intact, and a download far larger than memory starts flowing
//! before Pleo has finished sending it (a buffering gateway would never answer).

use crate::support::*;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn large_upload_and_download_arrive_intact() {
    // Uploads past the default 10 MiB limit are the operator's choice to allow.
    let kit = Kit::start("limits: { max_request_body_bytes: 1073741824 }\n").await;
    let upload: Bytes = (0..64 * MIB).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    let r = kit.request(Method::POST, "/v2/files", &[("x-pleo-tenant", "globex")], upload.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"]["bytes"], 64 * MIB);
    assert_eq!(r.json()["body"]["sha256"], hex::encode(Sha256::digest(&upload)));

    let r = kit.get(&format!("/sandbox/bytes/{}", 64 * MIB), &[("x-pleo-tenant", "acme")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 64 * MIB);
    assert!(r.body.iter().all(|b| *b == 0));
    kit.stop().await;
}

#[tokio::test]
async fn a_huge_download_streams_instead_of_buffering() {
    let kit = Kit::start("").await;
    let huge: u64 = 64 * 1024 * MIB as u64; // 64 GiB: more than this machine could buffer
    let req = http::Request::get(kit.url(&format!("/sandbox/bytes/{huge}")))
        .header("x-pleo-tenant", "initech")
        .body(Default::default())
        .unwrap();
    let resp = kit.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0usize;
    while got < 8 * MIB {
        let frame = body.frame().await.expect("more data").unwrap();
        got += frame.into_data().map(|d| d.len()).unwrap_or(0);
    }
    // While the body streams, the request is still counted in flight.
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_in_flight_requests", &[]), 1.0);
    drop(body);
    kit.stop().await;
}
