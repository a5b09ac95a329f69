//! Managed OAuth tenants against the sandbox's token endpoint, which rotates
//! the refresh token on every refresh and revokes the whole authorisation
//! when a rotated one is replayed. Every test ends by checking that the
//! sandbox saw no replay and that no token it issued shows in the logs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::logs::Logs;
use crate::support::oauth::*;
use crate::support::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use pleo_gateway::cli::connect::{connect, ConnectOptions};
use pleo_gateway::config::Config;
use pleo_gateway::gateway::Running;
use pleo_gateway::sandbox::{Sandbox, TokenFault};

// === log capture: one buffer per test ===

fn finish(sandbox: &Sandbox, logs: &Logs) {
    let stats = sandbox.token_stats();
    assert_eq!(stats.reuse_detected, 0, "the gateway replayed a rotated refresh token: {stats:?}");
    let text = logs.text();
    // An empty capture would make the secrets check pass for nothing.
    assert!(text.contains("pleo_gateway"), "this test's gateway logged into its own capture");
    assert_no_secret_in(&text, sandbox);
}

// === kit ===

struct OAuthKit {
    logs: Logs,
    sandbox: Sandbox,
    gw: Option<Running>,
    dir: tempfile::TempDir,
    client: HttpClient,
}

impl OAuthKit {
    async fn start(ttl: Duration, extra: &str) -> OAuthKit {
        Self::start_logging_to(Logs::capture(), ttl, extra).await
    }

    async fn start_logging_to(logs: Logs, ttl: Duration, extra: &str) -> OAuthKit {
        let sandbox = sandbox(spec(ttl, &[INITIAL_RT, SECOND_CONSENT_RT])).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = config_yaml(dir.path(), &sandbox, Some(INITIAL_RT), extra);
        let gw = start_gateway(&yaml, dir.path()).await;
        OAuthKit { logs, sandbox, gw: Some(gw), dir, client: http_client() }
    }

    fn gw(&self) -> &Running {
        self.gw.as_ref().expect("gateway running")
    }

    async fn send(&self, method: Method, path: &str, body: Full<Bytes>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.gw().addr))
            .header("x-pleo-tenant", "hooli")
            .body(body)
            .unwrap();
        let resp = self.client.request(req).await.expect("gateway answers");
        let (parts, body) = resp.into_parts();
        Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Full::default()).await
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sample(&admin_get(self.gw().admin_addr, "/metrics").await.1, name, labels)
    }

    async fn tenant(&self) -> serde_json::Value {
        let text = admin_get(self.gw().admin_addr, "/tenants").await.1;
        assert_no_secret_in(&text, &self.sandbox);
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        j["tenants"].as_array().unwrap().iter().find(|t| t["name"] == "hooli").unwrap().clone()
    }

    /// Waits (up to 5 s) until `/tenants` shows the tenant in `state`.
    async fn wait_for_state(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.tenant().await["state"] != state {
            assert!(Instant::now() < deadline, "the tenant never reached {state}: {}", self.tenant().await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("state/hooli.json")).expect("state file");
        serde_json::from_str(&text).unwrap()
    }

    fn token_calls(&self) -> usize {
        self.sandbox.requests().iter().filter(|r| r.target == "/oauth/token").count()
    }

    async fn restart(&mut self) {
        self.gw.take().unwrap().shutdown().await;
        let config = Config::load(&self.dir.path().join("gateway.yaml")).unwrap();
        self.gw = Some(pleo_gateway::gateway::start(&config).await.unwrap());
    }

    async fn stop(mut self) {
        self.gw.take().unwrap().shutdown().await;
        finish(&self.sandbox, &self.logs);
        self.sandbox.shutdown().await;
    }
}

// === tests ===

#[tokio::test]
async fn refreshes_from_the_config_token_stores_the_rotation_and_survives_a_restart() {
    let mut kit = OAuthKit::start(Duration::from_secs(900), "").await;
    let r = kit.get("/v1/installations/me").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["resource"], "urn:pleo:company:company-hooli");
    assert_eq!(kit.sandbox.token_stats().refreshes, 1);
    let sent = kit.sandbox.requests().last().unwrap().headers["authorization"].to_str().unwrap().to_string();
    assert!(sent.starts_with("Bearer sbx_at_"), "a token the sandbox minted is sent");

    // The rotated refresh token is on disk (0600), live, and not the initial one.
    let state = kit.state();
    let rt = state["refresh_token"].as_str().unwrap();
    assert_ne!(rt, INITIAL_RT);
    assert!(kit.sandbox.is_live_refresh_token(rt));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(kit.dir.path().join("state/hooli.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(kit.metric("pleo_gateway_token_refresh_total", &[("result", "success")]).await, 1.0);
    let left = kit.metric("pleo_gateway_token_expiry_seconds", &[("tenant", "hooli")]).await;
    assert!(left > 800.0 && left <= 900.0, "expiry gauge {left}");
    let t = kit.tenant().await;
    assert_eq!(t["state"], "connected");
    assert!(t["token_expires_in_seconds"].as_u64().unwrap() > 800);

    // Restart on the same state: the stored access token is still good, so no refresh.
    kit.restart().await;
    assert_eq!(kit.get("/v1/installations/me").await.status, 200);
    assert_eq!(kit.sandbox.token_stats().refreshes, 1, "restart reuses the stored token");

    // A new consent in the config (a different refresh_token) wins over the stored chain.
    let before_new_consent = kit.logs.len();
    std::fs::write(kit.dir.path().join("hooli.refresh"), SECOND_CONSENT_RT).unwrap();
    kit.restart().await;
    assert_eq!(kit.get("/v1/installations/me").await.status, 200);
    assert_eq!(kit.sandbox.token_stats().refreshes, 2);
    assert_eq!(kit.sandbox.presented_refresh_tokens().last().unwrap().expose_secret(), SECOND_CONSENT_RT);
    // The import is logged by key name; `finish` then proves neither token value was.
    let text = kit.logs.since(before_new_consent);
    assert!(text.contains("importing the refresh_token from the config"), "the new consent's import was logged");
    kit.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_requests_at_expiry_cause_one_refresh() {
    // 4 s tokens: refreshed 2.4-3.2 s after issue, unusable from 3.6 s.
    let kit = OAuthKit::start(Duration::from_secs(4), "").await;
    // The first token: fetched at start by the background task.
    eventually("the first refresh", Duration::from_secs(5), || kit.sandbox.token_stats().refreshes == 1).await;
    let issued = Instant::now();
    // The next refresh is slow, so it is still in flight when the token
    // stops being usable and requests must wait for it. Its token then lives
    // until at least 7 s, so no scheduled refresh falls inside this test.
    kit.sandbox.inject_token_faults([TokenFault::Slow(Duration::from_millis(1500))]);
    tokio::time::sleep_until((issued + Duration::from_millis(3700)).into()).await;
    let before = kit.token_calls();
    let kit = Arc::new(kit);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let kit = kit.clone();
        tasks.spawn(async move { kit.get(&format!("/v2/expenses?i={i}")).await.status });
    }
    let mut ok = 0;
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
        ok += 1;
    }
    assert_eq!(ok, 100);
    assert_eq!(kit.token_calls(), before, "the refresh they waited for was already in flight");
    assert_eq!(kit.sandbox.token_stats().refreshes, 2, "exactly one refresh for this expiry");
    let kit = Arc::into_inner(kit).unwrap();
    kit.stop().await;
}

#[tokio::test]
#[ignore = "a 30 s statistical run: bench/oauth-schedule.sh runs it"]
async fn thirty_seconds_of_load_on_two_second_tokens_never_fails() {
    let kit = Arc::new(OAuthKit::start(Duration::from_secs(2), "").await);
    eventually("the first refresh", Duration::from_secs(5), || kit.sandbox.token_stats().refreshes == 1).await;
    let t0 = Instant::now();
    let refreshes0 = kit.sandbox.token_stats().refreshes;
    let run = Duration::from_secs(30);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let kit = kit.clone();
        workers.spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while t0.elapsed() < run {
                let r = kit.get(&format!("/v2/expenses?w={w}")).await;
                if r.status == 200 {
                    ok += 1;
                } else {
                    failed.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        });
    }
    let mut total = 0;
    while let Some(r) = workers.join_next().await {
        let (ok, failed) = r.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let refreshes = (kit.sandbox.token_stats().refreshes - refreshes0) as f64;
    // The schedule: refresh at expiry - margin - jitter, margin = lifetime/5
    // (0.4 s), jitter uniform in [0, margin]: on average every 1.4 s.
    let expected = elapsed / 1.4;
    // Each period varies by up to a margin, so the count over 30 s does too.
    assert!((refreshes - expected).abs() <= 1.5, "{refreshes} refreshes in {elapsed:.1} s, expected {expected:.1}");
    assert!(total > 1000, "steady load: {total} requests");
    let kit = Arc::into_inner(kit).unwrap();
    kit.stop().await;
}

#[tokio::test]
async fn invalid_grant_stops_refreshing_until_consent_is_renewed() {
    let kit = OAuthKit::start(Duration::from_secs(2), "").await;
    eventually("the first refresh", Duration::from_secs(5), || kit.sandbox.token_stats().refreshes == 1).await;
    assert_eq!(kit.get("/v2/x").await.status, 200);
    // The customer disconnects the app: the next refresh gets invalid_grant.
    kit.sandbox.revoke_authorisations();
    eventually("invalid_grant", Duration::from_secs(5), || kit.sandbox.token_stats().invalid_grant == 1).await;
    kit.wait_for_state("reauthorization_required").await;
    let r = kit.get("/v2/x").await;
    let j = r.assert_refused(503, "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("consent must be renewed"), "{j}");
    assert_eq!(kit.tenant().await["state"], "reauthorization_required");
    assert_eq!(kit.state()["reauthorization_required"], true);
    assert_eq!(kit.metric("pleo_gateway_token_refresh_total", &[("result", "failure")]).await, 1.0);
    // What the alert "needs reauthorization" reads: the state, counted; not a transient failure.
    let state = [("auth_model", "oauth2"), ("state", "reauthorization_required")];
    assert_eq!(kit.metric("pleo_gateway_tenant_states", &state).await, 1.0);
    assert_eq!(kit.metric("pleo_gateway_token_refresh_failing", &[("tenant", "hooli")]).await, 0.0);

    // Requests keep coming for longer than the recheck interval: the token
    // endpoint is not called again with the dead token.
    let calls = kit.token_calls();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(kit.get("/v2/x").await.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kit.token_calls(), calls, "no refresh attempts while reauthorization is required");

    // Consent renewed with `connect` (in-process here; the CLI has its own
    // test): the running gateway picks the new tokens up from the state.
    let config = Config::load(&kit.dir.path().join("gateway.yaml")).unwrap();
    // `connect` prints the consent URL; the "browser" reads it from there.
    let out = Logs(Arc::new(Mutex::new(Vec::new())));
    let printed = out.clone();
    let opts = ConnectOptions {
        tenant: "hooli".into(),
        redirect_uri: "http://127.0.0.1:0/callback".into(),
        scope: None,
        timeout: Duration::from_secs(20),
    };
    let browser = tokio::spawn(async move {
        let url = loop {
            let text = printed.text();
            if let Some(u) = text.split_whitespace().find(|w| w.contains("/oauth/authorize?")) {
                break u.to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        consent_in_browser(&url).await
    });
    let mut writer = out.clone();
    connect(&config, &opts, &mut writer).await.unwrap();
    assert_eq!(browser.await.unwrap(), 200);
    wait_until_ok(&kit).await;
    assert_eq!(kit.tenant().await["state"], "connected");
    assert_no_secret_in(&out.text(), &kit.sandbox);
    kit.stop().await;
}

async fn wait_until_ok(kit: &OAuthKit) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if kit.get("/v2/x").await.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "the tenant did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn transient_token_endpoint_failures_back_off_while_the_token_is_still_valid() {
    // 20 s tokens: the refresh starts 4-8 s before expiry, leaving room for
    // a 5xx, a timeout and their backoff while the old token still works.
    let kit = Arc::new(OAuthKit::start(Duration::from_secs(20), "limits: { token_timeout: 300ms }\n").await);
    eventually("the first refresh", Duration::from_secs(5), || kit.sandbox.token_stats().refreshes == 1).await;
    kit.sandbox.inject_token_faults([TokenFault::Status(503), TokenFault::Stall(Duration::from_millis(800))]);
    let load = {
        let kit = kit.clone();
        tokio::spawn(async move {
            let mut failed = Vec::new();
            while kit.sandbox.token_stats().refreshes < 2 {
                let r = kit.get("/v2/x").await;
                if r.status != 200 {
                    failed.push(r.status);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failed
        })
    };
    eventually("the 503", Duration::from_secs(20), || kit.token_calls() >= 2).await;
    let first_failure = Instant::now();
    // While it backs off and retries, the alert's gauge says the refresh is failing.
    let deadline = Instant::now() + Duration::from_millis(250);
    while kit.metric("pleo_gateway_token_refresh_failing", &[("tenant", "hooli")]).await != 1.0 {
        assert!(Instant::now() < deadline, "refresh_failing during the backoff");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("recovery", Duration::from_secs(10), || kit.sandbox.token_stats().refreshes == 2).await;
    assert!(load.await.unwrap().is_empty(), "requests kept succeeding on the still-valid token");
    assert!(first_failure.elapsed() >= Duration::from_millis(300), "backoff, not a tight loop");
    assert_eq!(kit.token_calls(), 4, "initial, 503, stalled, success");
    assert_eq!(kit.metric("pleo_gateway_token_refresh_total", &[("result", "failure")]).await, 2.0);
    assert_eq!(kit.metric("pleo_gateway_token_refresh_total", &[("result", "success")]).await, 2.0);
    let m = admin_get(kit.gw().admin_addr, "/metrics").await.1;
    assert_eq!(sample(&m, "pleo_gateway_token_refresh_duration_seconds_count", &[]), 4.0);
    // The sandbox counts the refresh when it answers; the gateway then still
    // saves the rotated token before it reports `connected`.
    let deadline = Instant::now() + Duration::from_secs(5);
    while kit.tenant().await["state"] != "connected" {
        assert!(Instant::now() < deadline, "state: {}", kit.tenant().await["state"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kit = Arc::into_inner(kit).unwrap();
    kit.stop().await;
}

#[tokio::test]
async fn a_401_is_retried_once_with_a_new_token_when_the_body_was_kept() {
    // The token is seconds old when Pleo drops it: allow the forced refresh at once.
    let kit = OAuthKit::start(Duration::from_secs(900), "limits: { forced_refresh_interval: 1ms }\n").await;
    assert_eq!(kit.get("/v2/x").await.status, 200);

    // Pleo drops the access token early: a small POST is retried once.
    kit.sandbox.expire_access_tokens();
    let body = Bytes::from(vec![b'a'; 10_000]);
    let r = kit.send(Method::POST, "/v2/expenses", Full::new(body.clone())).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["body"]["bytes"], 10_000);
    let posts: Vec<_> = kit.sandbox.requests().into_iter().filter(|r| r.target == "/v2/expenses").collect();
    assert_eq!(posts.len(), 2, "sent, rejected, sent again");
    assert_eq!(posts[0].body_sha256, posts[1].body_sha256);
    assert_ne!(posts[0].headers["authorization"], posts[1].headers["authorization"]);
    assert_eq!(kit.sandbox.token_stats().refreshes, 2);
    assert_eq!(kit.metric("pleo_gateway_credential_rejected_total", &[("auth_model", "oauth2")]).await, 1.0);

    // A streamed body larger than retry_body_bytes (64 KiB) has gone to Pleo
    // already: Pleo's 401 comes back as it is.
    kit.sandbox.expire_access_tokens();
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
        (0..16).map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'b'; 16 * 1024])))).collect();
    let req = Request::post(format!("http://{}/v2/receipts", kit.gw().addr))
        .header("x-pleo-tenant", "hooli")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let streaming_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<StreamBody<_>>();
    let resp = streaming_client.request(req).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("x-pleo-gateway-error").is_none(), "Pleo's own answer");
    let receipts: Vec<_> = kit.sandbox.requests().into_iter().filter(|r| r.target == "/v2/receipts").collect();
    assert_eq!(receipts.len(), 1, "not retried");
    assert_eq!(receipts[0].body_len, 256 * 1024, "the kept start and the streamed rest both arrived");
    assert_eq!(kit.metric("pleo_gateway_credential_rejected_total", &[("auth_model", "oauth2")]).await, 2.0);
    kit.stop().await;
}

#[test]
fn a_401_cannot_burn_refresh_tokens() {
    let logs = Logs::capture();
    logs.runtime().block_on(async {
        let kit = Arc::new(
            OAuthKit::start_logging_to(
                logs.clone(),
                Duration::from_secs(900),
                "limits: { forced_refresh_interval: 1s }\n",
            )
            .await,
        );
        assert_eq!(kit.get("/v2/x").await.status, 200);
        assert_eq!(kit.sandbox.token_stats().refreshes, 1);

        // A 401 for a token issued moments ago is about the request, not the
        // token: Pleo's answer passes through and nothing rotates.
        kit.sandbox.expire_access_tokens();
        assert_eq!(kit.get("/v2/x").await.status, 401);
        assert_eq!(kit.sandbox.token_stats().refreshes, 1, "no rotation for a fresh token");
        let fresh = [("reason", "fresh_token")];
        assert_eq!(kit.metric("pleo_gateway_forced_refresh_suppressed_total", &fresh).await, 1.0);

        // Once the token is older than the interval, twenty requests that all see
        // 401 at once make exactly one refresh and are retried with its token.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let all: Vec<_> = (0..20)
            .map(|_| {
                let k = kit.clone();
                tokio::spawn(async move { k.get("/v2/x").await.status })
            })
            .collect();
        for h in all {
            assert_eq!(h.await.unwrap(), 200);
        }
        assert_eq!(kit.sandbox.token_stats().refreshes, 2, "one forced refresh for twenty 401s");

        // An endpoint that answers 401 for its own reasons, called over and over
        // (a client choosing what to call): at most one rotation per interval.
        let started = Instant::now();
        for _ in 0..30 {
            assert_eq!(kit.get("/sandbox/status/401").await.status, 401);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let forced = kit.sandbox.token_stats().refreshes - 2;
        let allowed = started.elapsed().as_secs() + 1;
        assert!(forced <= allowed, "{forced} forced refreshes in {:?} (30 requests)", started.elapsed());
        // Most of the 30 came within a second of a forced refresh: passed through, no rotation.
        assert!(kit.metric("pleo_gateway_forced_refresh_suppressed_total", &fresh).await >= 10.0);
        let stats = kit.sandbox.token_stats();
        assert_eq!((stats.reuse_detected, stats.invalid_grant), (0, 0));
        let kit = Arc::into_inner(kit).unwrap();
        kit.stop().await;
    })
}

#[tokio::test]
async fn a_body_kept_for_the_retry_is_bounded_by_body_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let kit = OAuthKit::start(Duration::from_secs(900), "limits: { body_read_timeout: 300ms }\n").await;
    assert_eq!(kit.get("/v2/x").await.status, 200);
    let mut s = tokio::net::TcpStream::connect(kit.gw().addr).await.unwrap();
    // Small enough to be kept in memory for a 401 retry, but it never finishes.
    s.write_all(
        b"POST /v2/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pleo-tenant: hooli\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut reply)).await.expect("answered").unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 408") && reply.contains("request_body_timeout"), "{reply}");
    kit.stop().await;
}

#[test]
fn a_reload_that_removes_the_tenant_mid_refresh_and_a_shutdown_lose_no_rotation() {
    let logs = Logs::capture();
    logs.runtime().block_on(async {
        use pleo_gateway::sandbox::TokenFault;
        let mut kit = OAuthKit::start_logging_to(
            logs.clone(),
            Duration::from_secs(900),
            "limits: { forced_refresh_interval: 1ms }\n",
        )
        .await;
        assert_eq!(kit.get("/v2/x").await.status, 200);
        // Pleo commits the next rotation at once but answers 1.5 s later.
        kit.sandbox.inject_token_faults([TokenFault::CommitThenHold(Duration::from_millis(1500))]);
        kit.sandbox.expire_access_tokens();
        let (client, url) = (kit.client.clone(), format!("http://{}/v2/x", kit.gw().addr));
        let request = tokio::spawn(async move {
            let req = Request::get(url).header("x-pleo-tenant", "hooli").body(Full::default()).unwrap();
            client.request(req).await.map(|r| r.status().as_u16())
        });
        eventually("the forced refresh at the token endpoint", Duration::from_secs(5), || {
            kit.sandbox.token_stats().refreshes >= 2
        })
        .await;
        // While the answer is on its way: the tenant leaves the config, then the gateway stops.
        let yaml = std::fs::read_to_string(kit.dir.path().join("gateway.yaml")).unwrap();
        let without = yaml[..yaml.find("tenants:").unwrap()].to_string() + "tenants: {}\n";
        std::fs::write(kit.dir.path().join("gateway.yaml"), &without).unwrap();
        kit.gw().reload().await.unwrap();
        kit.gw.take().unwrap().shutdown().await;
        let _ = request.await;
        let text = std::fs::read_to_string(kit.dir.path().join("state/hooli.json")).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rt = stored["refresh_token"].as_str().unwrap();
        assert!(kit.sandbox.is_live_refresh_token(rt), "the rotation Pleo committed was stored before the stop");
        // Back with the tenant: the next refresh presents that token, no replay.
        std::fs::write(kit.dir.path().join("gateway.yaml"), &yaml).unwrap();
        let config = Config::load(&kit.dir.path().join("gateway.yaml")).unwrap();
        kit.gw = Some(pleo_gateway::gateway::start(&config).await.unwrap());
        kit.sandbox.expire_access_tokens();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(kit.get("/v2/x").await.status, 200);
        assert_eq!(kit.sandbox.presented_refresh_tokens().last().unwrap().expose_secret(), rt);
        assert_eq!(kit.sandbox.token_stats().reuse_detected, 0);
        kit.stop().await;
    })
}

#[tokio::test]
async fn a_corrupt_state_file_degrades_the_tenant_and_never_falls_back() {
    let logs = Logs::capture();
    let sandbox = sandbox(spec(Duration::from_secs(900), &[INITIAL_RT])).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/hooli.json"), "{\"version\": 1, \"tenant\": ").unwrap();
    let yaml = config_yaml(dir.path(), &sandbox, Some(INITIAL_RT), "");
    let kit = OAuthKit { logs, gw: Some(start_gateway(&yaml, dir.path()).await), sandbox, dir, client: http_client() };
    let j = kit.get("/v2/x").await.assert_refused(503, "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("stored OAuth state"), "{j}");
    assert_eq!(kit.tenant().await["state"], "state_error");
    assert_eq!(kit.token_calls(), 0, "the config's token is not used instead");
    let text = kit.logs.text();
    assert!(text.contains("corrupt"), "the log says what is wrong with the file");
    kit.stop().await;
}

#[tokio::test]
async fn a_tenant_without_tokens_says_to_run_connect() {
    let logs = Logs::capture();
    let sandbox = sandbox(spec(Duration::from_secs(900), &[])).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(dir.path(), &sandbox, None, "");
    let kit = OAuthKit { logs, gw: Some(start_gateway(&yaml, dir.path()).await), sandbox, dir, client: http_client() };
    let j = kit.get("/v2/x").await.assert_refused(503, "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("pleo-gateway connect hooli"), "{j}");
    assert_eq!(kit.tenant().await["state"], "not_connected");
    kit.stop().await;
}

#[tokio::test]
async fn oauth_state_survives_reloads_and_a_new_consent_in_the_config_applies_at_once() {
    let kit = OAuthKit::start(Duration::from_secs(3), "").await;
    eventually("the first refresh", Duration::from_secs(5), || kit.sandbox.token_stats().refreshes == 1).await;
    assert_eq!(kit.get("/v2/x").await.status, 200);
    let yaml = std::fs::read_to_string(kit.dir.path().join("gateway.yaml")).unwrap();

    // An unchanged config: same session, no extra token call.
    let calls = kit.token_calls();
    kit.gw().reload().await.unwrap();
    assert_eq!(kit.get("/v2/x").await.status, 200);
    assert_eq!(kit.token_calls(), calls);

    // The tenant leaves, then comes back: it continues its own chain (the
    // sandbox would revoke the family on any replay; `stop` checks none happened).
    let without = yaml[..yaml.find("tenants:").unwrap()].to_string() + "tenants: {}\n";
    std::fs::write(kit.dir.path().join("gateway.yaml"), &without).unwrap();
    kit.gw().reload().await.unwrap();
    kit.get("/v2/x").await.assert_refused(403, "unknown_tenant");
    // Its token gauges go with it (the session is kept, retired) and come back with it.
    let scrape = admin_get(kit.gw().admin_addr, "/metrics").await.1;
    assert!(!scrape.contains("pleo_gateway_token_expiry_seconds"), "{scrape}");
    assert!(!scrape.contains("pleo_gateway_token_refresh_failing"), "{scrape}");
    std::fs::write(kit.dir.path().join("gateway.yaml"), &yaml).unwrap();
    kit.gw().reload().await.unwrap();
    assert!(kit.metric("pleo_gateway_token_expiry_seconds", &[("tenant", "hooli")]).await > 0.0);
    // Across several 3 s token lifetimes, so refreshes happen after the comeback.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(kit.get("/v2/x").await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kit.sandbox.token_stats().refreshes >= 2, "refreshing resumed");

    // The customer revokes; the operator puts a new consent's refresh token
    // in the config's file: the reload imports it now, no restart, no wait.
    kit.sandbox.revoke_authorisations();
    eventually("invalid_grant", Duration::from_secs(5), || kit.sandbox.token_stats().invalid_grant == 1).await;
    kit.wait_for_state("reauthorization_required").await;
    kit.get("/v2/x").await.assert_refused(503, "credential_unavailable");
    const THIRD_CONSENT_RT: &str = "rt_hooli_third_consent_5a6b7c8d";
    kit.sandbox.consent_again(CLIENT_ID, THIRD_CONSENT_RT);
    std::fs::write(kit.dir.path().join("hooli.refresh"), THIRD_CONSENT_RT).unwrap();
    kit.gw().reload().await.unwrap();
    eventually("the new consent is used", Duration::from_secs(3), || {
        kit.sandbox.presented_refresh_tokens().last().is_some_and(|t| t.expose_secret() == THIRD_CONSENT_RT)
    })
    .await;
    wait_until_ok(&kit).await;
    assert_eq!(kit.tenant().await["state"], "connected");
    // `stop` searches the logs for every token, this consent's included.
    assert!(kit.sandbox.issued_tokens().iter().any(|t| t.expose_secret() == THIRD_CONSENT_RT));
    kit.stop().await;
}

/// A start with more managed OAuth tenants than refresh steps may run at
/// once: Pleo's token endpoint (slow here) never sees more than
/// `REFRESH_STEPS` calls at a time, and every tenant still connects.
#[tokio::test]
async fn a_start_with_many_oauth_tenants_keeps_refreshes_within_the_step_limit() {
    use pleo_gateway::credential::refresh::REFRESH_STEPS;
    let n = REFRESH_STEPS + 16;
    let tokens: Vec<String> = (0..n).map(|i| format!("rt_many_tenants_{i:03}_0123456789")).collect();
    let sandbox = sandbox(spec(Duration::from_secs(600), &tokens.iter().map(String::as_str).collect::<Vec<_>>())).await;
    sandbox.inject_token_faults((0..n).map(|_| TokenFault::Slow(Duration::from_millis(400))));
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = config_yaml(dir.path(), &sandbox, Some(&tokens[0]), "");
    for (i, rt) in tokens.iter().enumerate().skip(1) {
        yaml.push_str(&format!(
            "  t{i:03}:\n    environment: production\n    auth: {{ model: oauth2, client_id: {CLIENT_ID}, client_secret: {{ file: hooli.secret }}, refresh_token: \"{rt}\" }}\n"
        ));
    }
    let gw = start_gateway(&yaml, dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.token_stats().refreshes < n as u64 {
        assert!(Instant::now() < deadline, "{} of {n} tenants refreshed", sandbox.token_stats().refreshes);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sandbox.token_calls_max(), REFRESH_STEPS, "the limit was reached and held");
    assert_eq!(sandbox.token_stats().reuse_detected, 0);
    gw.shutdown().await;
    sandbox.shutdown().await;
}
