//! `apps`: integrations customers install from Pleo (docs/installs.md).

use super::*;

/// Pleo's company ids are UUIDs: 36 characters. A template leaves room for them.
const COMPANY_ID_ROOM: usize = 36;

pub(super) fn apps(
    raw: &RawConfig,
    base_dir: &Path,
    found: &mut Found,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, AppConfig> {
    let mut out = BTreeMap::new();
    if !raw.apps.is_empty() && raw.connect.is_none() {
        found.push((
            path("apps"),
            "needs `connect` (the Initiation and Settings URIs, /install/<app> and /settings/<app>, are served on \
             the connect listener)"
                .into(),
        ));
    }
    let mut templates: BTreeMap<String, String> = BTreeMap::new();
    for (name, a) in &raw.apps {
        let at = path("apps").key(name);
        if !tenant_name_ok(name) {
            found.push((
                at.clone(),
                "is not a valid app name (expected 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit)".into(),
            ));
            continue;
        }
        let auth_at = at.key("auth");
        let client_id = match a.auth.client_id.as_deref() {
            Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()) => Some(id.to_string()),
            Some(_) => {
                found.push((auth_at.key("client_id"), "expected a non-empty client id without spaces".into()));
                None
            }
            None => {
                found.push((
                    auth_at.clone(),
                    "missing `client_id` (the app's client id at Pleo: the handover token's audience, and for \
                     oauth2 the OAuth client)"
                        .into(),
                ));
                None
            }
        };
        let auth = match a.auth.model {
            AuthModel::OAuth2 => {
                let secret = match &a.auth.client_secret {
                    None => {
                        found.push((auth_at.clone(), "missing `client_secret` (required by model oauth2)".into()));
                        None
                    }
                    Some(src) => {
                        if src.is_inline() {
                            warnings.push(format!(
                                "{}: the secret is written inline in the config; prefer {{ env: NAME }} or {{ file: PATH }}",
                                super::super::locate::render(auth_at.key("client_secret").segs())
                            ));
                        }
                        src.resolve(base_dir)
                            .map_err(|e| found.push((auth_at.key("client_secret"), e.to_string())))
                            .ok()
                    }
                };
                client_id.zip(secret).map(|(client_id, client_secret)| AppAuth::OAuth2 { client_id, client_secret })
            }
            AuthModel::IntegratedApiKey => {
                if a.auth.client_secret.is_some() {
                    found.push((
                        auth_at.key("client_secret"),
                        "is not used by model integrated_api_key (the customer pastes the key Pleo shows them)".into(),
                    ));
                }
                client_id.map(|client_id| AppAuth::IntegratedApiKey { client_id })
            }
            AuthModel::StandaloneApiKey => {
                found.push((
                    auth_at.key("model"),
                    "standalone_api_key is for one company and is not installed from Pleo (expected oauth2 or \
                     integrated_api_key)"
                        .into(),
                ));
                None
            }
        };
        let activate_on_connect = match a.activate.as_deref() {
            None | Some("on_connect") => true,
            Some("manual") => false,
            Some(other) => {
                found.push((
                    at.key("activate"),
                    format!("`{other}` is not an activation (expected on_connect or manual)"),
                ));
                true
            }
        };
        let template = a.tenant_name.as_deref().unwrap_or("{company_id}");
        let tenant_name = match template.split_once("{company_id}") {
            Some((prefix, suffix))
                if !suffix.contains("{company_id}")
                    && prefix.len() + suffix.len() + COMPANY_ID_ROOM <= 63
                    && tenant_name_ok(&format!("{prefix}x{suffix}"))
                    && (prefix.is_empty() || prefix.as_bytes()[0].is_ascii_alphanumeric()) =>
            {
                Some(TenantTemplate { prefix: prefix.to_string(), suffix: suffix.to_string() })
            }
            _ => {
                found.push((
                    at.key("tenant_name"),
                    format!(
                        "`{template}` is not a tenant name template (expected `{{company_id}}` once, with at most \
                         27 lowercase letters, digits, '-' or '_' around it, such as erp-{{company_id}})"
                    ),
                ));
                None
            }
        };
        if let Some(t) = &tenant_name {
            if let Some(other) = templates.insert(t.to_string(), name.clone()) {
                found.push((
                    at.key("tenant_name"),
                    format!(
                        "`{t}` is also app `{other}`'s template: one company's installs of both would share a tenant"
                    ),
                ));
            }
        }
        let h_at = at.key("handover");
        let jwks_url = url(&a.handover.jwks_url, h_at.key("jwks_url"), found)
            .map(|b| format!("{b}").parse::<Uri>().expect("a validated URL parses"));
        if a.handover.issuer.is_empty() || a.handover.issuer.chars().any(char::is_control) {
            found.push((h_at.key("issuer"), "expected the issuer (`iss`) Pleo's handover tokens carry".into()));
        }
        let company_claim = a.handover.company_claim.clone().unwrap_or_else(|| "company_id".to_string());
        if company_claim.is_empty() || !company_claim.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            found.push((h_at.key("company_claim"), format!("`{company_claim}` is not a claim name")));
        }
        let (Some(auth), Some(tenant_name), Some(jwks_url)) = (auth, tenant_name, jwks_url) else { continue };
        out.insert(
            name.clone(),
            AppConfig {
                environment: a.environment,
                auth,
                activate_on_connect,
                tenant_name,
                handover: HandoverConfig { jwks_url, issuer: a.handover.issuer.clone(), company_claim },
            },
        );
    }
    out
}
