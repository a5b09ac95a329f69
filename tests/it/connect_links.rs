//! Customers connect themselves (docs/connect.md): connect links made
//! through the management API, the API-key page ("Save and test
//! connection"), the OAuth consent on the public callback, and what must
//! never happen: a link used twice, a form from another link, a key
//! stored before Pleo took it, a secret in a page, a URL, a file or a log.
//! Real sockets throughout; the browser itself is in tests/it/browser.rs.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::support::connect::*;
use crate::support::logs::Logs;
use crate::support::*;
use http::{header, Method, StatusCode};
use pleo_gateway::secret::Secret;

#[tokio::test]
async fn a_customer_connects_an_api_key_on_a_link_and_it_rotates_without_a_failed_request() {
    let logs = Logs::capture();
    let s = setup().await;

    // The management API needs an admin token.
    let url = format!("http://{}/api/tenants/hooli/connect-links", s.kit.gw.admin_addr);
    let refused = send(Method::POST, &url, &[], "").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["x-pleo-gateway-error"], "admin_unauthenticated");
    let refused = send(Method::POST, &url, &[("authorization", "Bearer not-the-token")], "").await;
    assert_eq!(refused.status, 401);

    // Before the customer connects: 503 saying what to do.
    let r = s.kit.get("/v1/expenses", &[("x-pleo-tenant", "hooli")]).await;
    let j = r.assert_refused(503, "credential_unavailable");
    assert!(j["message"].as_str().unwrap().contains("not connected yet: send a connect link"), "{j}");

    let link = s.new_link("hooli").await;
    assert!(link.starts_with(&format!("http://127.0.0.1:{}/c/", s.connect.port())), "{link}");
    let token = link.rsplit('/').next().unwrap();
    assert!(token.len() >= 22, "at least 128 bits");
    assert!(!s.store_file().contains(token), "only the token's hash is stored");

    let p = page(&link).await;
    assert_eq!(p.status, 200);
    assert_page_headers(&p);
    assert!(p.body.contains("type=\"password\"") && p.body.contains("Save and test connection"), "{}", p.body);
    assert!(p.body.contains("<label for=\"key\">"), "the input is labelled");
    let csrf = csrf_of(&p.body);

    // A wrong key: the cause in words, nothing stored, the link still usable.
    let wrong = post_form(&format!("{link}/key"), &[("csrf", &csrf), ("key", WRONG_KEY)], &[]).await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.body.contains("did not accept this key") && wrong.body.contains("staging"), "{}", wrong.body);
    assert_no_secret("the error page", &wrong.body);
    assert_eq!(s.tenant_status("hooli").await, 503);
    assert!(s.stored_connections().is_empty(), "nothing stored");

    // The right key: connected, company id and the last 4 only.
    let ok = post_form(&format!("{link}/key"), &[("csrf", &csrf), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_page_headers(&ok);
    assert!(ok.body.contains("Connected") && ok.body.contains("company-hooli"), "{}", ok.body);
    assert!(ok.body.contains(&HOOLI_KEY[HOOLI_KEY.len() - 4..]), "the masked key");
    assert_no_secret("the connected page", &ok.body);
    assert_eq!(s.tenant_status("hooli").await, 200);
    let sent = s.kit.staging.requests().last().unwrap().headers[header::AUTHORIZATION].clone();
    assert_eq!(sent, basic(HOOLI_KEY));
    let stored = s.store_file();
    assert!(stored.contains("\"sealed_key\": \"v1:"), "sealed at rest");
    assert_no_secret("connect.json", &stored);

    // The same link again: used.
    let again = page(&link).await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("already been used"));

    // /tenants: where the credential came from, never the key.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let tenants =
        send(Method::GET, &format!("http://{}/tenants", s.kit.gw.admin_addr), &[("authorization", &auth)], "")
            .await
            .body;
    assert_no_secret("/tenants", &tenants);
    let all: serde_json::Value = serde_json::from_str(&tenants).unwrap();
    let hooli = all["tenants"].as_array().unwrap().iter().find(|t| t["name"] == "hooli").unwrap();
    assert_eq!((hooli["source"].as_str(), hooli["state"].as_str()), (Some("connection"), Some("connected")), "{hooli}");
    assert!(hooli["connect_link"].as_str().is_some_and(|l| !l.is_empty()), "{hooli}");

    // Rotation through the API while requests flow: none fails.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, addr) = (stop.clone(), s.kit.gw.addr);
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r =
                    send(Method::GET, &format!("http://{addr}/v1/expenses"), &[("x-pleo-tenant", "hooli")], "").await;
                statuses.push(r.status.as_u16());
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, j) = s.api(Method::PUT, "/api/tenants/hooli/key", &format!("{{\"key\": \"{WRONG_KEY}\"}}")).await;
    assert_eq!(status, 422, "a rejected rotation changes nothing: {j}");
    let (status, j) = s.api(Method::PUT, "/api/tenants/hooli/key", &format!("{{\"key\": \"{HOOLI_KEY_2}\"}}")).await;
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["rotated"], true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for h in load {
        let statuses = h.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "every request through the switch: {statuses:?}");
    }
    assert!(total > 20, "the load ran ({total} requests)");
    let sent = s.kit.staging.requests().last().unwrap().headers[header::AUTHORIZATION].clone();
    assert_eq!(sent, basic(HOOLI_KEY_2), "the new key is in service");

    let m = s.kit.metrics().await;
    let count =
        |result| sample(&m, "pleo_gateway_onboardings_total", &[("model", "integrated_api_key"), ("result", result)]);
    assert_eq!((count("connected"), count("rotated"), count("rejected")), (1.0, 1.0, 2.0));

    // Every key checked now, on request (a reload asks only about changed ones).
    let checks = s.kit.staging.credential_checks();
    let (status, j) = s.api(Method::POST, "/api/checks", "").await;
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["connected"], 3, "globex, initech and the connected hooli: {j}");
    assert_eq!(s.kit.staging.credential_checks() - checks, 3);

    // Disconnect: the key leaves service and the store.
    let (status, j) = s.api(Method::DELETE, "/api/tenants/hooli/connection", "").await;
    assert_eq!((status, &j["disconnected"]), (StatusCode::OK, &serde_json::json!(true)));
    assert_eq!(s.tenant_status("hooli").await, 503);
    assert!(s.stored_connections().is_empty(), "gone from the store");

    let log = logs.text();
    assert!(log.contains("action=\"connect_key\"") && log.contains("action=\"disconnect\""), "audit lines");
    assert!(log.contains("by=api:oncall") && log.contains("by=link:"), "who did it: {log}");
    assert_no_secret("the log", &log);
    assert!(!log.contains(token), "the link's token is not logged");
    s.kit.stop().await;
}

#[tokio::test]
async fn links_are_single_use_expire_can_be_revoked_and_forms_need_their_own_token() {
    let _logs = Logs::capture();
    let s = setup().await;
    let a = s.new_link("hooli").await;
    let b = s.new_link("hooli").await;
    let csrf_a = csrf_of(&page(&a).await.body);
    let csrf_b = csrf_of(&page(&b).await.body);
    assert_ne!(csrf_a, csrf_b, "bound to the link");

    // CSRF: no token, another link's token, a cross-site POST.
    let none = post_form(&format!("{a}/key"), &[("key", HOOLI_KEY)], &[]).await;
    assert_eq!(none.status, 403, "{}", none.body);
    let other = post_form(&format!("{a}/key"), &[("csrf", &csrf_b), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(other.status, 403);
    let cross = post_form(
        &format!("{a}/key"),
        &[("csrf", &csrf_a), ("key", HOOLI_KEY)],
        &[("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(cross.status, 403);
    assert_eq!(s.tenant_status("hooli").await, 503, "none of them connected anything");

    // Revoked: listed as such, and refused.
    let (status, list) = s.api(Method::GET, "/api/connect-links?tenant=hooli", "").await;
    assert_eq!(status, 200);
    let links = list["links"].as_array().unwrap();
    assert_eq!(links.len(), 2, "{list}");
    assert_no_secret("the link list", &list.to_string());
    let b_token = b.rsplit('/').next().unwrap();
    assert!(!list.to_string().contains(b_token), "no token in the list");
    let b_id = &pleo_gateway::onboarding::token_hash(b_token)[..16];
    assert!(links.iter().any(|l| l["id"] == b_id && l["state"] == "usable"), "{list}");
    let (status, j) = s.api(Method::DELETE, &format!("/api/connect-links/{b_id}"), "").await;
    assert_eq!((status, j["link"]["state"].as_str()), (StatusCode::OK, Some("revoked")), "{j}");
    let revoked = page(&b).await;
    assert_eq!(revoked.status, 410);
    assert!(revoked.body.contains("withdrawn"), "{}", revoked.body);
    let (status, _) = s.api(Method::DELETE, "/api/connect-links/0000000000000000", "").await;
    assert_eq!(status, 404);

    // Expired: a link whose time is up, straight in the store.
    let store = pleo_gateway::state::FileStore::new(s.kit.dir.path().join("state"));
    let token = "x".repeat(43);
    use pleo_gateway::state::{LinkRecord, OnboardingStore};
    let now = pleo_gateway::state::unix_now_ms();
    let hash = pleo_gateway::onboarding::token_hash(&token);
    store
        .put_link(&LinkRecord {
            id: hash[..16].to_string(),
            token_sha256: hash,
            tenant: "hooli".into(),
            created_by: "test".into(),
            created_at_ms: now - 10_000,
            expires_at_ms: now - 1,
            used_at_ms: None,
            revoked_at_ms: None,
            attempts: 0,
        })
        .await
        .unwrap();
    let expired = page(&format!("http://{}/c/{token}", s.connect)).await;
    assert_eq!(expired.status, 410);
    assert!(expired.body.contains("expired"));
    let bogus = page(&format!("http://{}/c/{}", s.connect, "y".repeat(43))).await;
    assert_eq!(bogus.status, 404);

    // Attempts are bounded: wrong keys lock the link.
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        last = post_form(&format!("{a}/key"), &[("csrf", &csrf_a), ("key", WRONG_KEY)], &[]).await.status;
    }
    assert_eq!(last, 429, "locked after too many attempts");
    let locked = post_form(&format!("{a}/key"), &[("csrf", &csrf_a), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(locked.status, 429, "even the right key, once locked");
    assert_eq!(s.tenant_status("hooli").await, 503);
    s.kit.stop().await;
}

/// Follows the OAuth flow as a browser without pages would: the link's
/// button, Pleo's authorize (the sandbox consents at once unless asked for
/// its page), the callback with the consent cookie.
async fn consent(s: &Setup, link: &str, deny: bool) -> Answer {
    let p = page(link).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Connect to Pleo") && p.body.contains("production"), "{}", p.body);
    let start = post_form(&format!("{link}/oauth"), &[("csrf", &csrf_of(&p.body))], &[]).await;
    assert_eq!(start.status, 303, "{}", start.body);
    let location = start.headers[header::LOCATION].to_str().unwrap().to_string();
    assert!(location.contains("code_challenge_method=S256"), "{location}");
    let redirect = format!("redirect_uri=http%3A%2F%2F127.0.0.1%3A{}%2Foauth%2Fcallback", s.connect.port());
    assert!(location.contains(&redirect), "{location}");
    let cookie = start.headers[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    let authorize = if deny {
        // The sandbox's consent page, and its Deny button.
        let html = send(Method::GET, &location, &[("accept", "text/html")], "").await;
        assert!(html.body.contains("Deny"));
        location.replace("/oauth/authorize?", "/oauth/consent?decision=deny&")
    } else {
        location
    };
    let back = send(Method::GET, &authorize, &[], "").await;
    assert!(back.status.is_redirection(), "{}", back.body);
    let callback = back.headers[header::LOCATION].to_str().unwrap().to_string();
    assert_no_secret("the callback URL", &callback);
    // Without the cookie (another browser): refused, nothing stored.
    let foreign = send(Method::GET, &callback, &[], "").await;
    assert_eq!(foreign.status, 400, "{}", foreign.body);
    send(Method::GET, &callback, &[("cookie", &cookie)], "").await
}

#[tokio::test]
async fn an_oauth_consent_on_a_link_connects_the_tenant_and_a_denial_stores_nothing() {
    let logs = Logs::capture();
    let s = setup().await;
    assert_eq!(s.tenant_status("umbrella").await, 503);
    let link = s.new_link("umbrella").await;

    let denied = consent(&s, &link, true).await;
    assert!(denied.body.contains("chose not to give access"), "{}", denied.body);
    assert_eq!(s.tenant_status("umbrella").await, 503, "nothing stored");
    assert!(!s.kit.dir.path().join("state/umbrella.json").exists());

    // The link stays usable after a denial; now allow.
    let connected = consent(&s, &link, false).await;
    assert_eq!(connected.status, 200, "{}", connected.body);
    assert!(connected.body.contains("Connected"), "{}", connected.body);
    assert_eq!(s.tenant_status("umbrella").await, 200);
    let sent = s.kit.production.requests().into_iter().rfind(|r| r.target == "/v1/expenses").unwrap().headers
        [header::AUTHORIZATION]
        .clone();
    assert!(sent.to_str().unwrap().starts_with("Bearer sbx_at_"), "the new consent's token: {sent:?}");
    assert!(s.kit.dir.path().join("state/umbrella.json").exists(), "saved like a refresh's tokens");
    assert_eq!(page(&link).await.status, 410, "used");

    // Disconnected: the chain is kept but marked dead, and requests stop.
    let (status, j) = s.api(Method::DELETE, "/api/tenants/umbrella/connection", "").await;
    assert_eq!((status, &j["disconnected"]), (StatusCode::OK, &serde_json::json!(true)), "{j}");
    assert_eq!(s.tenant_status("umbrella").await, 503);
    let state = std::fs::read_to_string(s.kit.dir.path().join("state/umbrella.json")).unwrap();
    assert!(state.contains("\"reauthorization_required\": true"), "{state}");
    // A new link connects it again.
    let relink = s.new_link("umbrella").await;
    assert_eq!(consent(&s, &relink, false).await.status, 200);
    assert_eq!(s.tenant_status("umbrella").await, 200);

    let m = s.kit.metrics().await;
    let count = |result| sample(&m, "pleo_gateway_onboardings_total", &[("model", "oauth2"), ("result", result)]);
    assert_eq!((count("connected"), count("denied"), count("disconnected")), (2.0, 1.0, 1.0));
    let log = logs.text();
    assert_no_secret("the log", &log);
    assert!(!log.contains("sbx_"), "no token or code logged");
    s.kit.stop().await;
}

#[tokio::test]
async fn a_connected_key_survives_a_restart_and_opens_only_with_its_encryption_key() {
    let _logs = Logs::capture();
    let s = setup().await;
    let link = s.new_link("hooli").await;
    let csrf = csrf_of(&page(&link).await.body);
    assert_eq!(post_form(&format!("{link}/key"), &[("csrf", &csrf), ("key", HOOLI_KEY)], &[]).await.status, 200);
    let port = s.connect.port();
    let Kit { gw, staging, production, dir: tmp, yaml, .. } = s.kit;
    let dir = tmp.path().to_path_buf();
    gw.shutdown().await;

    // The same store and key: connected at start.
    let again = start_gateway(&yaml.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0"), &dir).await;
    let r = send(Method::GET, &format!("http://{}/v1/x", again.addr), &[("x-pleo-tenant", "hooli")], "").await;
    assert_eq!(r.status, 200);
    again.shutdown().await;

    // Another encryption key: the stored key does not open; nothing is served with it.
    let other_key = "6162636465666768696a6b6c6d6e6f707172737475767778797a303132333435";
    let yaml = yaml.replace(STORE_KEY, other_key).replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    let third = start_gateway(&yaml, &dir).await;
    let r = send(Method::GET, &format!("http://{}/v1/x", third.addr), &[("x-pleo-tenant", "hooli")], "").await;
    assert_eq!(r.status, 503);
    // Rotation: the new key first, the old one as previous: it opens and is sealed again.
    let rotated = yaml.replace(
        &format!("encryption_key: {other_key}"),
        &format!("encryption_key: {other_key}\n  previous_encryption_keys: [{STORE_KEY}]"),
    );
    third.shutdown().await;
    let fourth = start_gateway(&rotated, &dir).await;
    let r = send(Method::GET, &format!("http://{}/v1/x", fourth.addr), &[("x-pleo-tenant", "hooli")], "").await;
    assert_eq!(r.status, 200);
    let stored = std::fs::read_to_string(dir.join("state/connect.json")).unwrap();
    let sealer = pleo_gateway::onboarding::seal::Sealer::new(&[Secret::new(other_key)]).unwrap();
    assert!(stored.contains(&format!("v1:{}:", sealer.current_id())), "sealed again with the current key");
    fourth.shutdown().await;
    staging.shutdown().await;
    production.shutdown().await;
}

/// Replicas on one PostgreSQL store: a link made on one is opened on
/// another and is then used for all; a key connected on one serves on the
/// others once they read the store (poll_interval); a disconnect too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_links_and_connected_keys_through_postgres() {
    let Some(pg) = support::postgres::Postgres::start("replicas_share_links_and_connected_keys") else { return };
    let staging = sandbox(staging_spec().api_key(HOOLI_KEY, "company-hooli")).await;
    let production = sandbox(production_spec()).await;
    let store = format!(
        "store:\n  kind: postgres\n  url: \"{}\"\n  poll_interval: 200ms\n  encryption_key: {STORE_KEY}\n",
        pg.url()
    );
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let yaml =
            standard_yaml(dir.path(), &base_url(&staging), &base_url(&production), &extra_with_store(port, &store));
        replicas.push((start_gateway(&yaml, dir.path()).await, dir));
    }
    let (a, b) = (&replicas[0].0, &replicas[1].0);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let made = send(
        Method::POST,
        &format!("http://{}/api/tenants/hooli/connect-links", a.admin_addr),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let url: serde_json::Value = serde_json::from_str(&made.body).unwrap();
    let token = url["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let on = |g: &pleo_gateway::gateway::Running| format!("http://{}/c/{token}", g.connect_addr.unwrap());

    // Opened and used on B.
    let p = page(&on(b)).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let ok = post_form(&format!("{}/key", on(b)), &[("csrf", &csrf_of(&p.body)), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let status = |g: &pleo_gateway::gateway::Running| {
        let url = format!("http://{}/v1/x", g.addr);
        async move { send(Method::GET, &url, &[("x-pleo-tenant", "hooli")], "").await.status }
    };
    assert_eq!(status(b).await, 200);
    // Used for A as well, and A takes up the key from the store.
    assert_eq!(page(&on(a)).await.status, 410);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(a).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "replica A never took up the connected key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Disconnected on A: B stops serving with it too.
    let gone = send(
        Method::DELETE,
        &format!("http://{}/api/tenants/hooli/connection", a.admin_addr),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(b).await != 503 {
        assert!(tokio::time::Instant::now() < deadline, "replica B kept a disconnected key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (g, _dir) in replicas {
        g.shutdown().await;
    }
    staging.shutdown().await;
    production.shutdown().await;
}

fn cli(s: &Setup, args: &[&str]) -> (Option<i32>, String) {
    run_binary(&s.kit.dir.path().join("gateway.yaml"), args, &SECRETS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_command_makes_lists_and_revokes_links_a_running_gateway_serves() {
    let s = setup().await;
    let (code, out) = cli(&s, &["link", "hooli", "--expires", "2h"]);
    assert_eq!(code, Some(0), "{out}");
    let url = out.split_whitespace().find(|w| w.starts_with("http://")).expect("the URL").to_string();
    assert_eq!(page(&url).await.status, 200, "the running gateway serves a link the command made");

    let (code, out) = cli(&s, &["link", "--list", "hooli"]);
    assert_eq!(code, Some(0), "{out}");
    let id = out.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(out.contains("usable") && !out.contains(url.rsplit('/').next().unwrap()), "{out}");
    let (code, out) = cli(&s, &["link", "--revoke", &id]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(page(&url).await.status, 410);

    // `check` says where each connection-sourced credential stands.
    let csrf = csrf_of(&page(&s.new_link("hooli").await).await.body);
    let link = s.new_link("hooli").await;
    let csrf2 = csrf_of(&page(&link).await.body);
    assert_ne!(csrf, csrf2);
    assert_eq!(post_form(&format!("{link}/key"), &[("csrf", &csrf2), ("key", HOOLI_KEY)], &[]).await.status, 200);
    let (code, out) = cli(&s, &["check"]);
    assert_eq!(code, Some(0), "{out}");
    let hooli = out
        .lines()
        .find(|l| l.starts_with("hooli") && l.contains("connection") && l.contains("link:"))
        .unwrap_or_default();
    assert!(hooli.contains(&HOOLI_KEY[HOOLI_KEY.len() - 4..]), "{out}");
    assert!(out.lines().any(|l| l.starts_with("umbrella") && l.contains("not connected yet")), "{out}");

    let (code, out) = cli(&s, &["link", "nobody"]);
    assert_eq!(code, Some(64), "{out}");
    s.kit.stop().await;
}

/// A key whose installation is an organisation's (a multi-entity customer):
/// the page and `/tenants` say organisation, for a connect link and for a
/// key in the config alike.
#[tokio::test]
async fn an_organisation_key_is_called_an_organisation_on_a_link_and_in_tenants() {
    let s = setup().await;
    s.kit.staging.set_installation_resource("company-hooli", "urn:pleo:organization:org-hooli");
    s.kit.staging.set_installation_resource("company-globex", "urn:pleo:organization:org-globex");
    let link = s.new_link("hooli").await;
    let p = page(&link).await;
    let ok = post_form(&format!("{link}/key"), &[("csrf", &csrf_of(&p.body)), ("key", HOOLI_KEY)], &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("Organisation id") && ok.body.contains("org-hooli"), "{}", ok.body);
    s.kit.gw.recheck_all().await;
    let (_, tenants) = s.api(Method::GET, "/tenants", "").await;
    let of = |name: &str| tenants["tenants"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!(
        (of("globex")["resource"].as_str(), of("globex")["company_id"].as_str()),
        (Some("organisation"), Some("org-globex"))
    );
    assert_eq!(of("hooli")["resource"], "organisation");
    s.kit.stop().await;
}
