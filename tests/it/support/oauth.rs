//! Shared pieces of the OAuth tests: one managed tenant, `hooli`, whose
//! OAuth client is registered with a production sandbox.

use std::time::Duration;

use pleo_gateway::config::Environment;
use pleo_gateway::sandbox::{OAuthClient, Sandbox, SandboxSpec};
use pleo_gateway::secret::Secret;

use super::{environments_yaml, http_client};

pub const CLIENT_ID: &str = "hooli-client";
pub const CLIENT_SECRET: &str = "hooli-client-secret-8a7b6c5d4e";
pub const INITIAL_RT: &str = "rt_initial_hooli_0123456789abcdef";
pub const SECOND_CONSENT_RT: &str = "rt_second_consent_hooli_fedcba9876";

/// No token the sandbox issued, and no configured secret, in any form.
pub fn assert_no_secret_in(text: &str, sandbox: &Sandbox) {
    use base64::Engine;
    let mut secrets: Vec<String> = sandbox.issued_tokens().iter().map(|s| s.expose_secret().to_string()).collect();
    secrets.extend([CLIENT_SECRET, INITIAL_RT, SECOND_CONSENT_RT].map(String::from));
    secrets.push(base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret leaked into the output");
    }
}

pub fn spec(ttl: Duration, refresh_tokens: &[&str]) -> SandboxSpec {
    let mut spec = SandboxSpec::new(Environment::Production).oauth_client(OAuthClient {
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET),
        company_id: "company-hooli".into(),
        refresh_tokens: refresh_tokens.iter().map(|t| Secret::new(*t)).collect(),
    });
    spec.access_token_ttl = ttl;
    spec
}

/// A config with one managed OAuth tenant, `hooli`, on `sandbox`.
pub fn config_yaml(dir: &std::path::Path, sandbox: &Sandbox, refresh_token: Option<&str>, extra: &str) -> String {
    std::fs::write(dir.join("hooli.secret"), format!("{CLIENT_SECRET}\n")).unwrap();
    let rt_line = match refresh_token {
        Some(rt) => {
            std::fs::write(dir.join("hooli.refresh"), format!("{rt}\n")).unwrap();
            "      refresh_token: { file: hooli.refresh }\n"
        }
        None => "",
    };
    let url = format!("http://{}", sandbox.addr);
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{}state_dir: ./state\ntenants:\n  hooli:\n    environment: production\n    auth:\n      model: oauth2\n      client_id: {CLIENT_ID}\n      client_secret: {{ file: hooli.secret }}\n{rt_line}{extra}",
        environments_yaml(&url, &url)
    )
}

/// What a browser does with the authorize URL: follow the sandbox's
/// auto-consent redirect to the loopback redirect URI. Returns the status
/// of the redirect URI's page.
pub async fn consent_in_browser(url: &str) -> u16 {
    let client = http_client();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 302, "the sandbox consents at once");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    client.get(location.parse().unwrap()).await.unwrap().status().as_u16()
}
