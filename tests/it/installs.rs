//! Installs from Pleo's marketplace (docs/installs.md), through real
//! sockets: the sandbox plays the marketplace and signs the handover
//! tokens; a cookie-keeping client walks every redirect.

use http::{header, Method};

use crate::support::connect::{csrf_of, send, Answer, STORE_KEY};
use crate::support::install::*;
use crate::support::logs::Logs;
use crate::support::*;

const COMPANY: &str = "0b9c6a1e-1111-4c2d-9e8f-123456789abc";

#[tokio::test]
async fn an_oauth_install_from_the_marketplace_makes_a_tenant_that_serves_and_settings_uninstall_it() {
    let t = Installs::start().await;
    let mut b = Browser::default();
    let done = t.install_erp(&mut b, COMPANY).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(element(&done.body, "status").as_deref(), Some("Connected"));
    assert_eq!(element(&done.body, "company").as_deref(), Some(COMPANY));
    assert_eq!(element(&done.body, "environment").as_deref(), Some("production"));
    // The token is in the first URL only: the gateway's first answer drops it.
    let with_token: Vec<&String> = b.visited.iter().filter(|u| u.contains("pleo_id_token")).collect();
    assert_eq!(with_token.len(), 1, "{:?}", b.visited);
    assert!(with_token[0].contains("/install/erp?"));
    // The result is shown at a clean URL: the spent code does not stay in the address bar.
    assert_eq!(b.visited.last().unwrap(), &format!("{}/install/erp/done", t.public_url));
    let elsewhere = Browser::default().get(&format!("{}/install/erp/done", t.public_url)).await;
    assert_eq!(elsewhere.status, 404, "another browser sees nothing there");

    let tenant = format!("erp-{COMPANY}");
    let (status, echo) = t.tenant_status(&tenant).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["companyId"], COMPANY);
    let (_, tenants) = admin_json(&t, "/tenants").await;
    let entry = tenants["tenants"].as_array().unwrap().iter().find(|e| e["name"] == tenant.as_str()).unwrap().clone();
    assert_eq!(entry["source"], "install");
    assert_eq!(entry["app"], "erp");
    assert_eq!(entry["resource"], "company");
    assert_eq!(entry["installation_status"], "ACTIVATED", "activate: on_connect");
    assert_eq!(entry["installed_by"], format!("sandbox-user@{COMPANY}"));

    // Settings, from Pleo: then Disconnect.
    let settings =
        b.follow(&format!("http://{}/marketplace/settings?app=erp&company={COMPANY}", t.kit.production.addr)).await;
    assert_eq!(settings.status, 200, "{}", settings.body);
    assert_eq!(element(&settings.body, "status").as_deref(), Some("connected"));
    crate::support::connect::assert_page_headers(&settings);
    let csrf = csrf_of(&settings.body);
    // Reconnect: a new consent replaces the chain (one company, one chain).
    let again = b.post(&format!("{}/settings/erp/reconnect", t.public_url), &t.public_url, &[("csrf", &csrf)]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(element(&again.body, "status").as_deref(), Some("Connected"));
    assert_eq!(t.kit.production.token_stats().code_exchanges, 2);
    assert_eq!(t.tenant_status(&tenant).await.0, 200);
    // A Settings form from another site is refused.
    let mut mallory = Browser { cookies: b.cookies.clone(), ..Browser::default() };
    let forged = mallory
        .request(
            Method::POST,
            &format!("{}/settings/erp/disconnect", t.public_url),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(t.kit.production.uninstalls().is_empty());
    let after = b.post(&format!("{}/settings/erp/disconnect", t.public_url), &t.public_url, &[("csrf", &csrf)]).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(element(&after.body, "status").as_deref(), Some("uninstalled"));
    assert_eq!(t.kit.production.uninstalls(), vec![COMPANY.to_string()], "Pleo's DELETE was called");
    let (status, body) = t.tenant_status(&tenant).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "tenant_uninstalled");
    let _ = STORE_KEY;
    let _ = header::LOCATION;
    let _ = Method::GET;
}

async fn admin_json(t: &Installs, path: &str) -> (u16, serde_json::Value) {
    let (s, body) = admin_get(t.kit.gw.admin_addr, path).await;
    let auth_needed = s == 401;
    if auth_needed {
        let (s, j) = t.api(Method::GET, path, "").await;
        return (s.as_u16(), j);
    }
    (s.as_u16(), serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test]
async fn an_integrated_key_install_takes_a_wrong_key_then_the_right_one() {
    let t = Installs::start().await;
    let mut b = Browser::default();
    let company = "5d1c2b3a-2222-4e5f-8a9b-abcdefabcdef";
    // Pleo's install modal shows the key and leads on to the Initiation URI.
    let modal = b.get(&format!("http://{}/marketplace/connect?app=ledger&company={company}", t.kit.staging.addr)).await;
    assert_eq!(modal.status, 200);
    let key = element(&modal.body, "key").unwrap();
    let next = href(&modal.body, "continue").unwrap();
    let form = b.follow(&next).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("type=\"password\""));
    crate::support::connect::assert_page_headers(&form);
    assert!(!form.body.contains(&key));
    let csrf = csrf_of(&form.body);
    let url = format!("{}/install/ledger/key", t.public_url);
    let wrong = b.post(&url, &t.public_url, &[("csrf", &csrf), ("key", "ik_not_the_key_00000000")]).await;
    assert_eq!(wrong.status, 422, "{}", wrong.body);
    assert!(element(&wrong.body, "problem").unwrap().contains("did not accept"));
    assert!(!t.kit.dir.path().join("state/connect.json").exists(), "nothing stored");
    let csrf = csrf_of(&wrong.body);
    let right = b.post(&url, &t.public_url, &[("csrf", &csrf), ("key", &key)]).await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(element(&right.body, "status").as_deref(), Some("Connected"));
    assert_eq!(element(&right.body, "installation").as_deref(), Some("AUTHORIZED"), "activate: manual");
    assert!(element(&right.body, "masked").unwrap().ends_with(&key[key.len() - 4..]));
    let (status, echo) = t.tenant_status(&format!("ledger-{company}")).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["companyId"], company);
    // Stored sealed: the key is nowhere in the store.
    let stored = std::fs::read_to_string(t.kit.dir.path().join("state/connect.json")).unwrap();
    assert!(!stored.contains(&key));
    assert!(stored.contains("\"installs\""));
    // A form without the visit's CSRF token, or from another origin, is refused.
    let mut other = Browser::default();
    let forged = other.post(&url, &t.public_url, &[("csrf", &csrf), ("key", &key)]).await;
    assert_eq!(forged.status, 403);
    let null = b.post(&url, "null", &[("csrf", &csrf), ("key", &key)]).await;
    assert_eq!(null.status, 403, "Origin: null is refused");
}

/// A handover token signed as `header` says, with `claims`, by `key`.
fn forged(header: serde_json::Value, claims: serde_json::Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let head = URL_SAFE_NO_PAD.encode(header.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{head}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    format!("{input}.{sig}")
}

#[tokio::test]
async fn handover_tokens_that_do_not_verify_are_refused_and_counted() {
    let t = Installs::start().await;
    let sb = &t.kit.production;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |aud: &str, iss: &str, exp: u64| serde_json::json!({ "iss": iss, "sub": "mallory", "aud": aud, "exp": exp, "company_id": COMPANY });
    let kid = sb.signing_kid();
    let head = |alg: &str, kid: &str| serde_json::json!({ "alg": alg, "typ": "pleo_id+jwt", "kid": kid });
    // Another RSA key, claiming the sandbox's kid.
    let other = pleo_gateway::sandbox::Signer::generate();
    let forged_sig = other.handover(sb.issuer(), ERP_CLIENT, COMPANY, "mallory", std::time::Duration::from_secs(300));
    let forged_sig = {
        let mut parts: Vec<&str> = forged_sig.split('.').collect();
        let h = serde_json::json!({ "alg": "RS256", "typ": "pleo_id+jwt", "kid": kid }).to_string();
        use base64::Engine;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h);
        parts[0] = &h;
        parts.join(".")
    };
    // HS256 keyed with the public key (the JWKS as the server serves it).
    let jwks = send(Method::GET, &sb.jwks_url(), &[], "").await.body;
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwks.as_bytes());
    let cases: Vec<(&str, String)> = vec![
        ("signature", forged_sig),
        ("algorithm", forged(head("none", &kid), claims(ERP_CLIENT, sb.issuer(), now + 300), |_| Vec::new())),
        (
            "algorithm",
            forged(head("HS256", &kid), claims(ERP_CLIENT, sb.issuer(), now + 300), |m| {
                ring::hmac::sign(&hmac_key, m).as_ref().to_vec()
            }),
        ),
        ("audience", sb.handover_token("another-app", COMPANY, "mallory", std::time::Duration::from_secs(300))),
        ("expired", sb.sign_handover(&claims(ERP_CLIENT, sb.issuer(), now - 120))),
        ("issuer", sb.sign_handover(&claims(ERP_CLIENT, "http://evil.example", now + 300))),
        (
            "unknown_kid",
            forged(head("RS256", "not-a-kid"), claims(ERP_CLIENT, sb.issuer(), now + 300), |_| vec![1; 256]),
        ),
        ("malformed", "not.a.jwt".to_string()),
    ];
    for (reason, token) in &cases {
        let mut b = Browser::default();
        let a = b.get(&format!("{}/install/erp?pleo_id_token={token}", t.public_url)).await;
        assert_eq!(a.status, 401, "{reason}: {}", a.body);
        assert!(a.headers.get(header::SET_COOKIE).is_none(), "{reason}: no visit begins");
        assert!(!a.body.contains(token.as_str()), "{reason}: the token is not echoed");
    }
    // Settings without a verified handover: nothing shown.
    let a = Browser::default().get(&format!("{}/settings/erp", t.public_url)).await;
    assert_eq!(a.status, 401);
    assert!(a.body.contains("Open this page from Pleo"));
    // Within the 60 s of skew, an expiry just past still verifies (and `pleo_id` is read too).
    let mut b = Browser::default();
    let skewed = sb.sign_handover(&claims(ERP_CLIENT, sb.issuer(), now - 20));
    let a = b.get(&format!("{}/install/erp?pleo_id={skewed}", t.public_url)).await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.headers[header::LOCATION], "/install/erp");
    let metrics = admin_get(t.kit.gw.admin_addr, "/metrics").await.1;
    for reason in ["signature", "algorithm", "audience", "expired", "issuer", "unknown_kid", "malformed"] {
        let line = format!("pleo_gateway_handover_refused_total{{app=\"erp\",reason=\"{reason}\"}}");
        assert!(metrics.lines().any(|l| l.starts_with(&line)), "{line} in\n{metrics}");
    }
    // One fetch of the JWKS for all of that (and for the test's own read).
    assert_eq!(sb.jwks_fetches(), 2, "the gateway fetched once; unknown kids did not make it fetch again");
}

#[tokio::test]
async fn a_company_other_than_the_handover_named_is_refused_and_nothing_is_stored() {
    let t = Installs::start().await;
    let sb = &t.kit.production;
    let other = "9f8e7d6c-3333-4b2a-8c1d-0e0f1a2b3c4d";
    let mut b = Browser::default();
    let token = sb.handover_token(ERP_CLIENT, COMPANY, "alice", std::time::Duration::from_secs(300));
    let a = b.get(&format!("{}/install/erp?pleo_id_token={token}", t.public_url)).await;
    assert_eq!(a.status, 303);
    // Pleo's consent then turns out to be for another company.
    sb.consent_for(ERP_CLIENT, other);
    let done = b.follow(&format!("{}/install/erp", t.public_url)).await;
    assert_eq!(done.status, 409, "{}", done.body);
    assert!(done.body.contains("different company"));
    let (_, installs) = t.api(Method::GET, "/api/installs", "").await;
    assert_eq!(installs["installs"], serde_json::json!([]));
    let names: Vec<String> = std::fs::read_dir(t.kit.dir.path().join("state"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(names.iter().all(|n| !n.contains(other) && !n.contains(COMPANY)), "no chain stored: {names:?}");
    let (status, body) = t.tenant_status(&format!("erp-{other}")).await;
    assert_eq!(status, 403, "{body}");
    let metrics = admin_get(t.kit.gw.admin_addr, "/metrics").await.1;
    assert!(metrics.contains("pleo_gateway_installs_total{app=\"erp\",result=\"mismatch\"} 1"), "{metrics}");
}

#[tokio::test]
async fn two_installs_of_one_company_at_once_end_in_one_chain() {
    let t = Installs::start().await;
    let (mut a, mut b) = (Browser::default(), Browser::default());
    let (ra, rb) = tokio::join!(t.install_erp(&mut a, COMPANY), t.install_erp(&mut b, COMPANY));
    assert_eq!((ra.status, rb.status), (http::StatusCode::OK, http::StatusCode::OK), "{} / {}", ra.body, rb.body);
    assert_eq!(t.kit.production.token_stats().code_exchanges, 2);
    let tenant = format!("erp-{COMPANY}");
    let (_, installs) = t.api(Method::GET, "/api/installs", "").await;
    assert_eq!(installs["installs"].as_array().unwrap().len(), 1, "{installs}");
    // The stored chain is whole and current: its refresh token is live, and it serves.
    let stored =
        pleo_gateway::state::FileStore::new(t.kit.dir.path().join("state")).load_blocking(&tenant).unwrap().unwrap();
    assert!(t.kit.production.is_live_refresh_token(stored.refresh_token.expose_secret()));
    let (status, _) = t.tenant_status(&tenant).await;
    assert_eq!(status, 200);
    let metrics = admin_get(t.kit.gw.admin_addr, "/metrics").await.1;
    assert!(metrics.contains("pleo_gateway_installs_total{app=\"erp\",result=\"installed\"} 1"), "{metrics}");
    assert!(metrics.contains("pleo_gateway_installs_total{app=\"erp\",result=\"reinstalled\"} 1"), "{metrics}");
}

#[tokio::test]
async fn nothing_secret_shows_in_pages_urls_logs_metrics_or_tenants() {
    let logs = Logs::capture();
    let t = Installs::start().await;
    let mut b = Browser::default();
    let done = t.install_erp(&mut b, COMPANY).await;
    assert_eq!(done.status, 200);
    let mut k = Browser::default();
    let company = "5d1c2b3a-2222-4e5f-8a9b-abcdefabcdef";
    let modal = k.get(&format!("http://{}/marketplace/connect?app=ledger&company={company}", t.kit.staging.addr)).await;
    let key = element(&modal.body, "key").unwrap();
    let form = k.follow(&href(&modal.body, "continue").unwrap()).await;
    let url = format!("{}/install/ledger/key", t.public_url);
    let right = k.post(&url, &t.public_url, &[("csrf", &csrf_of(&form.body)), ("key", &key)]).await;
    assert_eq!(right.status, 200);

    let handover = b.visited[0].split("pleo_id_token=").nth(1).unwrap_or_default().to_string();
    let handover = b.visited.iter().find_map(|u| u.split("pleo_id_token=").nth(1)).unwrap_or(&handover).to_string();
    let code = b.visited.iter().find_map(|u| u.split("code=").nth(1)).unwrap().split('&').next().unwrap().to_string();
    let mut secrets: Vec<String> = vec![handover.clone(), code, key.clone(), ERP_SECRET.to_string()];
    secrets.extend(t.kit.production.issued_tokens().iter().map(|s| s.expose_secret().to_string()));
    let metrics = admin_get(t.kit.gw.admin_addr, "/metrics").await.1;
    let (_, tenants) = t.api(Method::GET, "/tenants", "").await;
    let (_, installs) = t.api(Method::GET, "/api/installs", "").await;
    // Each browser's URLs after Pleo's redirect to the Initiation URI (the
    // callback's `code` is Pleo's, single-use and spent by then: not checked there).
    let later = |v: &Vec<String>| -> Vec<String> {
        v.iter()
            .filter(|u| !u.contains("/marketplace/"))
            .skip(1)
            .map(|u| u.split("code=").next().unwrap().to_string())
            .collect()
    };
    let after_first: Vec<String> = later(&b.visited).into_iter().chain(later(&k.visited)).collect();
    let texts: Vec<(&str, String)> = vec![
        ("pages", b.pages.iter().chain(k.pages.iter().skip(1)).cloned().collect::<Vec<_>>().join("\n")),
        ("URLs after the first redirect", after_first.join("\n")),
        ("logs", logs.text()),
        ("metrics", metrics),
        ("/tenants", tenants.to_string()),
        ("/api/installs", installs.to_string()),
    ];
    for (what, text) in &texts {
        for s in &secrets {
            assert!(!s.is_empty() && !text.contains(s.as_str()), "a secret in {what}");
        }
    }
    assert!(!b.visited.iter().skip(2).any(|u| u.contains(&handover)), "the handover token in a later URL");
}

/// A key install of `company` for `ledger`, through the marketplace's modal.
async fn install_ledger(t: &Installs, company: &str, organisation: bool) -> (Browser, Answer, String) {
    let mut k = Browser::default();
    let org = if organisation { "&organisation=1" } else { "" };
    let modal =
        k.get(&format!("http://{}/marketplace/connect?app=ledger&company={company}{org}", t.kit.staging.addr)).await;
    let key = element(&modal.body, "key").unwrap();
    let form = k.follow(&href(&modal.body, "continue").unwrap()).await;
    let url = format!("{}/install/ledger/key", t.public_url);
    let done = k.post(&url, &t.public_url, &[("csrf", &csrf_of(&form.body)), ("key", &key)]).await;
    (k, done, key)
}

#[tokio::test]
async fn installs_survive_a_restart_and_a_reload_that_drops_their_app_idles_them() {
    let t = Installs::start().await;
    let mut b = Browser::default();
    assert_eq!(t.install_erp(&mut b, COMPANY).await.status, 200);
    let company = "5d1c2b3a-2222-4e5f-8a9b-abcdefabcdef";
    assert_eq!(install_ledger(&t, company, false).await.1.status, 200);
    let (erp, ledger) = (format!("erp-{COMPANY}"), format!("ledger-{company}"));

    // A restart on the same store: both serve again, with nothing in the YAML.
    let Installs { kit, connect: _, public_url } = t;
    let Kit { gw, staging, production, client, dir, yaml } = kit;
    gw.shutdown().await;
    let checks = staging.credential_checks();
    let gw = start_gateway(&yaml, dir.path()).await;
    gw.credential_check().await;
    assert_eq!(
        staging.credential_checks() - checks,
        2,
        "the start checks the config's two keys; the installed key keeps its install-time check"
    );
    let t = Installs {
        connect: gw.connect_addr.unwrap(),
        kit: Kit { gw, staging, production, client, dir, yaml },
        public_url,
    };
    assert_eq!(t.tenant_status(&erp).await.0, 200, "the OAuth install after a restart");
    assert_eq!(t.tenant_status(&ledger).await.0, 200, "the key install after a restart");

    // The operator removes `ledger` from the config: its install stays, idle, and says why.
    let start = t.kit.yaml.find("  ledger:\n    environment: staging\n    auth: { model: integrated_api_key").unwrap();
    let end = start + t.kit.yaml[start..].find("store:").unwrap();
    let without = format!("{}{}", &t.kit.yaml[..start], &t.kit.yaml[end..]);
    t.kit.write_config(&without);
    t.kit.gw.reload().await.unwrap();
    let (status, body) = t.tenant_status(&ledger).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "credential_unavailable");
    assert!(body["message"].as_str().unwrap().contains("no longer in the gateway's config"), "{body}");
    let (_, one) = t.api(Method::GET, &format!("/api/installs/{ledger}"), "").await;
    assert_eq!(one["state"], "app_removed");
    assert_eq!(t.tenant_status(&erp).await.0, 200, "the other app's installs go on");
    let page = crate::support::connect::page(&format!("{}/install/ledger", t.public_url)).await;
    assert_eq!(page.status, 404, "no new installs of a removed app");
    // Put back: it serves again.
    t.kit.write_config(&t.kit.yaml);
    t.kit.gw.reload().await.unwrap();
    assert_eq!(t.tenant_status(&ledger).await.0, 200);
}

#[tokio::test]
async fn an_organisation_installs_like_a_company_and_is_called_one() {
    let t = Installs::start().await;
    let org = "7a7a7a7a-4444-4c4c-9d9d-121212121212";
    let (_, done, _) = install_ledger(&t, org, true).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Organisation") && done.body.contains("for your organisation"), "{}", done.body);
    let tenant = format!("ledger-{org}");
    assert_eq!(t.tenant_status(&tenant).await.0, 200);
    let (_, one) = t.api(Method::GET, &format!("/api/installs/{tenant}"), "").await;
    assert_eq!((one["resource"].as_str(), one["company_id"].as_str()), (Some("organisation"), Some(org)));
    let metrics = admin_get(t.kit.gw.admin_addr, "/metrics").await.1;
    assert!(
        metrics.contains(
            "pleo_gateway_installed_tenants{app=\"ledger\",resource=\"organisation\",status=\"authorized\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_key_granted_an_app_reaches_its_installs_and_nothing_else() {
    let key = "pgw_client_for_every_erp_install_000001";
    let clients = format!(
        "clients:\n  - name: erp-backend\n    key_sha256: \"{}\"\n    tenants: [\"app:erp\"]\n",
        crate::support::connect::sha256_hex(key)
    );
    let t = Installs::start_with(&clients, &file_store()).await;
    let mut b = Browser::default();
    assert_eq!(t.install_erp(&mut b, COMPANY).await.status, 200);
    let bearer = format!("Bearer {key}");
    let tenant = format!("erp-{COMPANY}");
    let ok = t.kit.get("/v1/expenses", &[("x-pleo-tenant", &tenant), ("authorization", &bearer)]).await;
    assert_eq!(ok.status, 200);
    let other = t.kit.get("/v1/expenses", &[("x-pleo-tenant", "globex"), ("authorization", &bearer)]).await;
    other.assert_refused(403, "tenant_forbidden");
    // `explain` shows the installed tenant like any other.
    let (status, explained) = t
        .api(Method::POST, "/explain", &serde_json::json!({ "url": "/v1/expenses", "headers": { "x-pleo-tenant": tenant, "authorization": bearer } }).to_string())
        .await;
    assert_eq!(status, 200, "{explained}");
    assert!(explained.to_string().contains(&tenant), "{explained}");
}

#[tokio::test]
async fn pleo_revoking_an_install_reads_uninstalled_or_revoked_and_the_api_can_uninstall() {
    // Tokens that live 2 s: the session refreshes within a few seconds.
    let t = Installs::start_full("", &file_store(), std::time::Duration::from_secs(2)).await;
    let mut b = Browser::default();
    assert_eq!(t.install_erp(&mut b, COMPANY).await.status, 200);
    let tenant = format!("erp-{COMPANY}");
    // The customer removes the app on Pleo's side: every grant of it is revoked.
    t.kit.production.revoke_authorisations();
    let sb = &t.kit.production;
    eventually("invalid_grant", std::time::Duration::from_secs(10), || sb.token_stats().invalid_grant >= 1).await;
    // The session takes the answer in: then the install reads revoked.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, one) = t.api(Method::GET, &format!("/api/installs/{tenant}"), "").await;
        if one["state"] == "uninstalled_or_revoked" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{one}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = t.tenant_status(&tenant).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("credential_unavailable")), "{body}");
    let metrics = admin_get(t.kit.gw.admin_addr, "/metrics").await.1;
    assert!(
        metrics.contains(
            "pleo_gateway_installed_tenants{app=\"erp\",resource=\"company\",status=\"uninstalled_or_revoked\"} 1"
        ),
        "{metrics}"
    );
    // The operator cleans it up through the API (Pleo's DELETE finds the grant gone: fine).
    let (status, after) = t.api(Method::DELETE, &format!("/api/installs/{tenant}"), "").await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["state"], "uninstalled");
    assert_eq!(after["uninstalled_by"], "api:oncall");
    let (status, body) = t.tenant_status(&tenant).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("tenant_uninstalled")));
}

#[tokio::test]
async fn management_api_fields_of_the_wrong_type_are_named_400s() {
    let t = Installs::start().await;
    for (method, path, body, field) in [
        (Method::POST, "/api/tenants/globex/connect-links", r#"{"expires": 5}"#, "`expires`"),
        (Method::PUT, "/api/tenants/globex/key", r#"{"key": 12345}"#, "`key`"),
        (Method::POST, "/explain", r#"{"url": 5}"#, "`url`"),
        (Method::POST, "/explain", r#"{"url": "/v1/x", "method": ["GET"]}"#, "`method`"),
        (Method::POST, "/explain", r#"{"url": "/v1/x", "headers": {"x-pleo-tenant": 1}}"#, "`headers.x-pleo-tenant`"),
        (Method::POST, "/explain", r#"{"url": "/v1/x", "headers": "x"}"#, "`headers`"),
    ] {
        let (status, j) = t.api(method, path, body).await;
        assert_eq!(status, 400, "{path} {body}: {j}");
        assert_eq!(j["error"], "bad_request");
        assert!(j["message"].as_str().unwrap().contains(field), "{path} {body}: {j}");
    }
    let (_, links) = t.api(Method::GET, "/api/connect-links", "").await;
    assert_eq!(links["links"], serde_json::json!([]), "no link was made with a default expiry");
}

#[tokio::test]
async fn check_and_explain_show_installed_tenants_without_a_credential() {
    let t = Installs::start().await;
    let company = "5d1c2b3a-2222-4e5f-8a9b-abcdefabcdef";
    let (_, done, key) = install_ledger(&t, company, false).await;
    assert_eq!(done.status, 200);
    let config = t.kit.dir.path().join("gateway.yaml");
    let bin = env!("CARGO_BIN_EXE_pleo-gateway");
    let check = std::process::Command::new(bin).arg("check").arg("--config").arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{text}");
    let tenant = format!("ledger-{company}");
    let row = text.lines().find(|l| l.starts_with(&tenant)).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("install") && row.contains("ledger") && row.contains(&format!("company {company}")), "{row}");
    assert!(!text.contains(&key) && !text.contains(ERP_SECRET));
    let explain = std::process::Command::new(bin)
        .args(["explain", "--config"])
        .arg(&config)
        .args(["GET", "/v1/expenses", "-H", &format!("X-Pleo-Tenant: {tenant}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout).into_owned();
    assert!(explain.status.success(), "{text} {}", String::from_utf8_lossy(&explain.stderr));
    assert!(text.contains(&tenant) && text.contains("integrated_api_key"), "{text}");
    assert!(!text.contains(&key));
}

#[tokio::test]
async fn a_denied_consent_stores_nothing() {
    let t = Installs::start().await;
    let mut b = Browser::default();
    let token = t.kit.production.handover_token(ERP_CLIENT, COMPANY, "alice", std::time::Duration::from_secs(300));
    assert_eq!(b.get(&format!("{}/install/erp?pleo_id_token={token}", t.public_url)).await.status, 303);
    let to_pleo = b.get(&format!("{}/install/erp", t.public_url)).await;
    let authorize = to_pleo.headers[header::LOCATION].to_str().unwrap().to_string();
    // The customer presses Deny on Pleo's consent screen.
    let query = authorize.split_once('?').unwrap().1;
    let denied = b.follow(&format!("http://{}/oauth/consent?decision=deny&{query}", t.kit.production.addr)).await;
    assert_eq!(denied.status, 200, "{}", denied.body);
    assert!(denied.body.contains("chose not to give access"), "{}", denied.body);
    let (_, installs) = t.api(Method::GET, "/api/installs", "").await;
    assert_eq!(installs["installs"], serde_json::json!([]));
    assert!(!t.kit.dir.path().join("state").join(format!("erp-{COMPANY}.json")).exists());
    let metrics = admin_get(t.kit.gw.admin_addr, "/metrics").await.1;
    assert!(metrics.contains("pleo_gateway_installs_total{app=\"erp\",result=\"denied\"} 1"), "{metrics}");
}
