//! The sandbox is strict the way Pleo is, so tests against it mean something.

use crate::support::*;
use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use pleo_gateway::config::Environment;
use pleo_gateway::sandbox::{OAuthClient, SandboxSpec};
use pleo_gateway::secret::Secret;

async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let client = http_client();
    let mut b = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    if !body.is_empty() {
        b = b.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = client.request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn api_accepts_only_its_environments_credentials() {
    let staging = sandbox(staging_spec()).await;
    let (s, j) = call(staging.addr, "GET", "/v1/installations/me", Some(&basic(GLOBEX_KEY)), "").await;
    assert_eq!((s, j["resource"].as_str()), (200, Some("urn:pleo:company:company-globex")));
    // A production credential does not work on staging.
    let (s, j) = call(staging.addr, "GET", "/v1/installations/me", Some(&format!("Bearer {ACME_TOKEN}")), "").await;
    assert_eq!((s, j["error"].as_str()), (401, Some("invalid_credentials")));
    let (s, j) = call(staging.addr, "GET", "/v1/x", Some(&format!("Bearer {LEGACY_TOKEN}")), "").await;
    assert_eq!((s, j["error"].as_str()), (401, Some("legacy_token")));
    let (s, _) = call(staging.addr, "GET", "/v1/x", None, "").await;
    assert_eq!(s, 401);
    // The key must be the Basic username with an empty password.
    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!(":{GLOBEX_KEY}")));
    assert_eq!(call(staging.addr, "GET", "/v1/x", Some(&wrong), "").await.0, 401);
    staging.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_rotates_and_revokes_on_replay() {
    let client = OAuthClient {
        client_id: "cid".into(),
        client_secret: Secret::new("csecret"),
        company_id: "company-oauth".into(),
        refresh_tokens: vec![Secret::new("rt_initial")],
    };
    let sb = sandbox(SandboxSpec::new(Environment::Staging).oauth_client(client)).await;
    let client_auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("cid:csecret"));

    let (s, j) =
        call(sb.addr, "POST", "/oauth/token", Some(&client_auth), "grant_type=refresh_token&refresh_token=rt_initial")
            .await;
    assert_eq!(s, 200, "{j}");
    let access = j["access_token"].as_str().unwrap().to_string();
    let rotated = j["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, "rt_initial");
    assert_eq!(j["token_type"], "Bearer");
    let (s, j) = call(sb.addr, "GET", "/v1/installations/me", Some(&format!("Bearer {access}")), "").await;
    assert_eq!((s, j["resource"].as_str()), (200, Some("urn:pleo:company:company-oauth")));

    // Wrong client secret.
    let bad_client = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("cid:nope"));
    assert_eq!(
        call(
            sb.addr,
            "POST",
            "/oauth/token",
            Some(&bad_client),
            &format!("grant_type=refresh_token&refresh_token={rotated}")
        )
        .await
        .0,
        401
    );

    // Replaying the retired token revokes the whole authorisation.
    let (s, j) =
        call(sb.addr, "POST", "/oauth/token", Some(&client_auth), "grant_type=refresh_token&refresh_token=rt_initial")
            .await;
    assert_eq!((s, j["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = call(
        sb.addr,
        "POST",
        "/oauth/token",
        Some(&client_auth),
        &format!("grant_type=refresh_token&refresh_token={rotated}"),
    )
    .await;
    assert_eq!(s, 400, "the newest refresh token died with the family");
    assert_eq!(call(sb.addr, "GET", "/v1/installations/me", Some(&format!("Bearer {access}")), "").await.0, 401);
    let stats = sb.token_stats();
    assert_eq!((stats.refreshes, stats.reuse_detected), (1, 1));
    sb.shutdown().await;
}

#[tokio::test]
async fn the_sandbox_keeps_bounded_state_so_the_demo_runs_for_weeks() {
    use pleo_gateway::sandbox::{KEEP_ISSUED, KEEP_RETIRED};
    let client = OAuthClient {
        client_id: "cid".into(),
        client_secret: Secret::new("csecret"),
        company_id: "company-oauth".into(),
        refresh_tokens: vec![Secret::new("rt_initial")],
    };
    let mut spec = SandboxSpec::new(Environment::Staging).oauth_client(client);
    spec.access_token_ttl = std::time::Duration::from_secs(1);
    let sb = sandbox(spec).await;
    let client_auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("cid:csecret"));
    let refresh = |rt: String| {
        let auth = client_auth.clone();
        async move {
            let form = format!("grant_type=refresh_token&refresh_token={rt}");
            let (s, j) = call(sb.addr, "POST", "/oauth/token", Some(&auth), &form).await;
            assert_eq!(s, 200, "{j}");
            j["refresh_token"].as_str().unwrap().to_string()
        }
    };
    // More rotations than the sandbox keeps retired tokens for, each on a new connection.
    let mut rt = "rt_initial".to_string();
    for _ in 0..KEEP_RETIRED + 200 {
        rt = refresh(rt).await;
    }
    // Once the access tokens have expired, the next refresh drops them.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let previous = rt.clone();
    refresh(rt).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (kept, connections) = loop {
        let (kept, connections) = sb.retained();
        if connections <= 1 || std::time::Instant::now() > deadline {
            break (kept, connections);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(connections <= 1, "{connections} connection tasks kept");
    assert_eq!(kept.refresh_tokens, KEEP_RETIRED + 1, "the newest retired ones and the live one");
    assert_eq!(kept.access_tokens, 1, "expired access tokens dropped");
    assert!(kept.issued_access <= KEEP_ISSUED);
    assert!(sb.presented_refresh_tokens().len() <= KEEP_ISSUED);
    // A recently retired token is still recognised as a replay.
    let form = format!("grant_type=refresh_token&refresh_token={previous}");
    let (s, j) = call(sb.addr, "POST", "/oauth/token", Some(&client_auth), &form).await;
    assert_eq!((s, j["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(sb.token_stats().reuse_detected, 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn the_installation_resource_has_pleos_shape_and_verbs() {
    let staging = sandbox(staging_spec()).await;
    let key = basic(GLOBEX_KEY);
    let (s, j) = call(staging.addr, "GET", "/v1/installations/me", Some(&key), "").await;
    assert_eq!(s, 200);
    for field in ["id", "applicationId", "resource", "status", "metadata", "createdAt", "updatedAt"] {
        assert!(j.get(field).is_some(), "{field} missing: {j}");
    }
    assert_eq!(
        (j["resource"].as_str(), j["status"].as_str()),
        (Some("urn:pleo:company:company-globex"), Some("ACTIVATED"))
    );
    assert!(j.get("errorCode").is_none(), "only for an installation that is not active");

    let (s, j) =
        call(staging.addr, "POST", "/v1/installations/me", Some(&key), r#"{"status":"AUTHORIZED","metadata":{"a":1}}"#)
            .await;
    assert_eq!((s, j["status"].as_str(), j["metadata"]["a"].as_i64()), (201, Some("AUTHORIZED"), Some(1)));
    let body = r#"{"status":"INACTIVE","errorCode":"NOT_ENTITLED"}"#;
    let (s, j) = call(staging.addr, "PUT", "/v1/installations/me", Some(&key), body).await;
    assert_eq!((s, j["status"].as_str(), j["errorCode"].as_str()), (200, Some("INACTIVE"), Some("NOT_ENTITLED")));
    let (s, j) = call(staging.addr, "POST", "/v1/installations/me:activate", Some(&key), "").await;
    assert_eq!((s, j["status"].as_str()), (200, Some("ACTIVATED")));
    assert!(j.get("errorCode").is_none());
    let (s, _) = call(staging.addr, "PUT", "/v1/installations/me", Some(&key), r#"{"status":"BOGUS"}"#).await;
    assert_eq!(s, 400);
    let (s, _) = call(staging.addr, "GET", "/v1/installations/me", None, "").await;
    assert_eq!(s, 401, "behind the same authentication");
    staging.shutdown().await;
}
