//! The connect pages in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`) driven through WebDriver. A customer's
//! admin opens a link, clicks "Connect to Pleo", allows (or denies) on the
//! sandbox's consent page, or types an API key and presses "Save and test
//! connection"; no JavaScript on our side, and nothing a browser keeps
//! (URLs, page sources) ever holds a key or a token.
//!
//! Skipped when chromedriver is not installed, unless
//! PLEO_GATEWAY_REQUIRE_BROWSER=1 (`.ci/run` installs it and sets that).
//! Screenshots of each page go to target/screenshots, or to the directory
//! in PLEO_GATEWAY_SCREENSHOTS (docs/screenshots holds the committed ones).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::connect::*;
use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<Driver> {
    let required = std::env::var("PLEO_GATEWAY_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let found = Command::new("chromedriver").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!required, "PLEO_GATEWAY_REQUIRE_BROWSER=1 but chromedriver is not installed");
        eprintln!("skipped: chromedriver not installed (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    Some(Driver { child, port })
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let mut args =
        vec!["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,760"];
    args.push("--lang=en-US");
    let mut chrome = serde_json::json!({ "args": args });
    if std::path::Path::new("/usr/bin/chromium").exists() {
        chrome["binary"] = "/usr/bin/chromium".into();
    }
    caps.insert("goog:chromeOptions".into(), chrome);
    let url = format!("http://127.0.0.1:{}", driver.port);
    // chromedriver takes a moment to listen.
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("cannot start a WebDriver session on chromedriver");
}

fn shots_dir() -> PathBuf {
    let dir = std::env::var_os("PLEO_GATEWAY_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a screenshot, and checks what the browser holds: the page source
/// and the URL carry no secret.
async fn look(c: &Client, name: &str) -> String {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
    let source = c.source().await.unwrap();
    let url = c.current_url().await.unwrap().to_string();
    for s in SECRETS {
        assert!(!source.contains(s), "a secret in the page source of {name}");
        assert!(!url.contains(s), "a secret in the URL of {name}");
    }
    assert!(!url.contains("sbx_at_") && !url.contains("sbx_rt_") && !source.contains("sbx_at_"), "no token in {name}");
    source
}

async fn heading(c: &Client) -> String {
    c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_allows_and_denies_oauth_consent_in_a_browser() {
    let Some(driver) = chromedriver() else { return };
    let s = setup().await;
    let c = browser(&driver).await;
    let link = s.new_link("umbrella").await;

    // Deny first: a clear page, nothing stored, the link still usable.
    c.goto(&link).await.unwrap();
    let source = look(&c, "connect-oauth").await;
    assert!(source.contains("Connect umbrella to Pleo") && source.contains("production"));
    c.find(Locator::Id("connect")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("deny")).await.unwrap();
    assert!(look(&c, "sandbox-consent").await.contains("Allow access to your Pleo account?"));
    c.find(Locator::Id("deny")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("h1#status")).await.unwrap();
    assert_eq!(heading(&c).await, "Not connected");
    assert!(look(&c, "consent-denied").await.contains("chose not to give access"));
    assert_eq!(s.tenant_status("umbrella").await, 503, "nothing stored");

    // Allow: connected, and the tenant serves with the new token.
    c.goto(&link).await.unwrap();
    c.find(Locator::Id("connect")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("allow")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("h1#status")).await.unwrap();
    assert_eq!(heading(&c).await, "Connected");
    let company = c.find(Locator::Id("company")).await.unwrap().text().await.unwrap();
    assert_eq!(company, "company-umbrella", "what Pleo says about the company");
    look(&c, "connected-oauth").await;
    assert_eq!(s.tenant_status("umbrella").await, 200);

    // The same link again: used.
    c.goto(&link).await.unwrap();
    assert_eq!(heading(&c).await, "This link has already been used");
    look(&c, "link-used").await;
    c.close().await.unwrap();
    s.kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_saves_and_tests_an_api_key_in_a_browser() {
    let Some(driver) = chromedriver() else { return };
    let s = setup().await;
    let c = browser(&driver).await;
    let link = s.new_link("hooli").await;

    c.goto(&link).await.unwrap();
    let source = look(&c, "connect-key").await;
    assert!(source.contains("type=\"password\""));
    // Keyboard only: the key field, then Enter submits the form.
    let field = c.find(Locator::Id("key")).await.unwrap();
    field.send_keys(WRONG_KEY).await.unwrap();
    c.find(Locator::Id("save")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Id("problem")).await.unwrap();
    let source = look(&c, "key-rejected").await;
    assert!(source.contains("did not accept this key"), "the cause, in words");
    assert!(s.stored_connections().is_empty(), "nothing stored");
    assert_eq!(s.tenant_status("hooli").await, 503);

    let field = c.find(Locator::Id("key")).await.unwrap();
    field.send_keys(&format!("{HOOLI_KEY}\n")).await.unwrap();
    c.wait().for_element(Locator::Css("h1#status")).await.unwrap();
    assert_eq!(heading(&c).await, "Connected");
    let company = c.find(Locator::Id("company")).await.unwrap().text().await.unwrap();
    assert_eq!(company, "company-hooli");
    let masked = c.find(Locator::Id("masked")).await.unwrap().text().await.unwrap();
    assert!(masked.ends_with(&HOOLI_KEY[HOOLI_KEY.len() - 4..]), "{masked}");
    look(&c, "connected-key").await;
    assert_eq!(s.tenant_status("hooli").await, 200);

    // Rotation: a second link for the same tenant, with the new key.
    let second = s.new_link("hooli").await;
    c.goto(&second).await.unwrap();
    c.find(Locator::Id("key")).await.unwrap().send_keys(&format!("{HOOLI_KEY_2}\n")).await.unwrap();
    c.wait().for_element(Locator::Css("h1#status")).await.unwrap();
    assert_eq!(heading(&c).await, "Connected");
    look(&c, "rotated-key").await;
    let sent = s.kit.get("/v1/expenses", &[("x-pleo-tenant", "hooli")]).await;
    assert_eq!(sent.status, 200);
    let last = s.kit.staging.requests().into_iter().rfind(|r| r.target == "/v1/expenses").unwrap();
    assert_eq!(last.headers[http::header::AUTHORIZATION], basic(HOOLI_KEY_2), "the rotated key is in service");
    c.close().await.unwrap();
    s.kit.stop().await;
}

/// Installs from the sandbox's marketplace, as a customer clicks through them.
mod installs {
    use super::*;
    use crate::support::install::Installs;

    const COMPANY: &str = "4e6f7a1c-0c1d-4a8e-9d6b-5a1e2c3d4f50";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_customer_installs_an_oauth_app_from_the_marketplace_and_disconnects_it_in_settings() {
        let Some(driver) = chromedriver() else { return };
        let t = Installs::start().await;
        let c = browser(&driver).await;
        let marketplace = format!("http://{}/marketplace", t.kit.production.addr);
        c.goto(&marketplace).await.unwrap();
        look(&c, "install-marketplace").await;
        c.find(Locator::Id("connect-erp")).await.unwrap().click().await.unwrap();
        // Pleo's consent screen, reached through the app's Initiation URI.
        c.wait().for_element(Locator::Id("allow")).await.unwrap();
        let at_consent = c.current_url().await.unwrap().to_string();
        assert!(!at_consent.contains("pleo_id_token"), "the handover token is gone from the URL: {at_consent}");
        look(&c, "install-consent").await;
        c.find(Locator::Id("allow")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("h1#status")).await.unwrap();
        assert_eq!(heading(&c).await, "Connected");
        assert_eq!(c.find(Locator::Id("company")).await.unwrap().text().await.unwrap(), COMPANY);
        let at = c.current_url().await.unwrap().to_string();
        assert!(at.ends_with("/install/erp/done") && !at.contains("code="), "a clean URL: {at}");
        look(&c, "install-connected").await;
        let tenant = format!("erp-{COMPANY}");
        assert_eq!(t.tenant_status(&tenant).await.0, 200, "the new tenant serves");

        // Settings, from Pleo: the installation, then Disconnect.
        c.goto(&marketplace).await.unwrap();
        c.find(Locator::Id("settings-erp")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Id("disconnect")).await.unwrap();
        let source = look(&c, "install-settings").await;
        assert!(source.contains("ACTIVATED"), "the installation's status");
        assert!(source.contains("id=\"checked\""), "the last refresh");
        c.find(Locator::Id("disconnect")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Id("problem")).await.unwrap();
        assert_eq!(c.find(Locator::Id("status")).await.unwrap().text().await.unwrap(), "uninstalled");
        look(&c, "install-disconnected").await;
        assert_eq!(t.kit.production.uninstalls(), vec![COMPANY.to_string()], "Pleo's DELETE was made");
        let (status, body) = t.tenant_status(&tenant).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("tenant_uninstalled")));
        c.close().await.unwrap();
        t.kit.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_customer_installs_a_key_app_with_a_wrong_key_then_the_right_one() {
        let Some(driver) = chromedriver() else { return };
        let t = Installs::start().await;
        let c = browser(&driver).await;
        c.goto(&format!("http://{}/marketplace", t.kit.staging.addr)).await.unwrap();
        c.find(Locator::Id("connect-ledger")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Id("continue")).await.unwrap();
        let key = c.find(Locator::Id("key")).await.unwrap().text().await.unwrap();
        c.find(Locator::Id("continue")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Id("save")).await.unwrap();
        assert!(!c.current_url().await.unwrap().to_string().contains("pleo_id_token"));
        look(&c, "install-key").await;
        c.find(Locator::Id("key")).await.unwrap().send_keys("ik_not_the_key_000000").await.unwrap();
        c.find(Locator::Id("save")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Id("problem")).await.unwrap();
        assert!(look(&c, "install-key-rejected").await.contains("did not accept this key"));
        c.find(Locator::Id("key")).await.unwrap().send_keys(&format!("{key}\n")).await.unwrap();
        c.wait().for_element(Locator::Css("h1#status")).await.unwrap();
        assert_eq!(heading(&c).await, "Connected");
        let source = look(&c, "install-key-connected").await;
        assert!(!source.contains(&key), "the key is never shown back");
        assert_eq!(t.tenant_status(&format!("ledger-{COMPANY}")).await.0, 200);
        c.close().await.unwrap();
        t.kit.stop().await;
    }
}
