//! Installs from Pleo's marketplace (docs/installs.md), through real
//! sockets: the sandbox plays the marketplace and signs the handover
//! tokens; a cookie-keeping client walks every redirect.

use http::{header, Method};

use crate::support::connect::{csrf_of, STORE_KEY};
use crate::support::install::*;
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
    let settings = b
        .follow(&format!("http://{}/marketplace/settings?app=erp&company={COMPANY}", t.kit.production.addr))
        .await;
    assert_eq!(settings.status, 200, "{}", settings.body);
    assert_eq!(element(&settings.body, "status").as_deref(), Some("connected"));
    let csrf = csrf_of(&settings.body);
    let after = b
        .post(&format!("{}/settings/erp/disconnect", t.public_url), &t.public_url, &[("csrf", &csrf)])
        .await;
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
