//! `pleo-gateway connect <tenant>`: onboard an OAuth tenant with the
//! authorization-code flow and PKCE (RFC 7636, S256). Prints the authorize
//! URL, waits on a loopback redirect URI for Pleo to send the browser back,
//! checks `state`, exchanges the code at the environment's token endpoint and
//! saves the tokens in the state store, so the tenant needs no refresh_token
//! in the config. Tokens are never printed.

use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::CommandError;
use crate::config::{AuthConfig, Config, StoreConfig};
use crate::pleo::authorize::ConsentClient;
use crate::secret::random_token;
use crate::state::postgres::PostgresStore;
use crate::state::{fingerprint, FileStore, TokenStore};
use crate::upstream::Upstreams;

#[derive(Debug)]
pub struct ConnectOptions {
    pub tenant: String,
    /// Where Pleo sends the browser back: http on a loopback address. Port 0
    /// picks a free port (useful when the client allows any loopback port).
    pub redirect_uri: String,
    pub scope: Option<String>,
    pub timeout: Duration,
}

/// What the redirect brought back.
type Callback = Result<String, String>;

pub async fn connect(config: &Config, opts: &ConnectOptions, out: &mut impl Write) -> Result<(), CommandError> {
    let usage = |m: String| CommandError::Usage(m);
    let failed = |m: String| CommandError::Unavailable(m);
    let tenant = config
        .tenants
        .get(&opts.tenant)
        .ok_or_else(|| usage(format!("no tenant `{}` in {}", opts.tenant, config.source.display())))?;
    let AuthConfig::OAuth2Managed { refresh_token, .. } = &tenant.auth else {
        return Err(usage(format!(
            "tenant `{}` is not a managed oauth2 tenant (expected model oauth2 with client_id and client_secret)",
            opts.tenant
        )));
    };
    let _env = &config.environments[&tenant.environment];

    // The redirect listener first: it fixes the port the URL names.
    let redirect: Uri = opts.redirect_uri.parse().map_err(|_| usage("--redirect-uri is not a URL".into()))?;
    let host = redirect.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    };
    if redirect.scheme_str() != Some("http") || !ip.is_loopback() {
        return Err(usage(
            "--redirect-uri must be http on a loopback address, such as http://127.0.0.1:8765/callback".into(),
        ));
    }
    let listener = TcpListener::bind(SocketAddr::new(ip, redirect.port_u16().unwrap_or(80)))
        .await
        .map_err(|e| failed(format!("cannot listen for the redirect on {}: {e}", opts.redirect_uri)))?;
    let port = listener.local_addr().map_err(|e| failed(e.to_string()))?.port();
    let path = redirect.path().to_string();
    let redirect_uri = format!("http://{}:{port}{path}", redirect.host().unwrap_or_default());

    if let StoreConfig::File = config.store {
        crate::state::prepare_dir(&config.state_dir)
            .map_err(|e| failed(format!("state_dir {} is not writable: {e}", config.state_dir.display())))?;
    }

    let upstreams = Upstreams::build(config).map_err(|e| failed(e.to_string()))?;
    let http = upstreams.get(tenant.environment).client().clone();
    let consent = ConsentClient::for_tenant(config, tenant, http).expect("a managed oauth2 tenant");
    let verifier = random_token(32);
    let state = random_token(16);
    let url = consent.url(&redirect_uri, &state, &verifier, opts.scope.as_deref());
    let _ = writeln!(
        out,
        "To connect tenant `{}` ({}), open this URL in a browser and approve access:\n\n  {url}\n\n\
         Waiting for the redirect to {redirect_uri} (up to {}) ...",
        opts.tenant,
        tenant.environment.as_str(),
        humantime::format_duration(opts.timeout)
    );
    let _ = out.flush();

    let code = tokio::time::timeout(opts.timeout, wait_for_code(listener, path, state))
        .await
        .map_err(|_| failed("no redirect arrived in time; run connect again".into()))?
        .map_err(failed)?;

    // A refresh_token still in the config is older than this consent:
    // mark it as seen so it is not imported over the new tokens.
    let stored = consent
        .exchange(&code, &verifier, &redirect_uri, refresh_token.as_ref().map(fingerprint))
        .await
        .map_err(|e| failed(format!("exchanging the authorization code failed: {e}")))?;
    let saved_in = match &config.store {
        StoreConfig::File => {
            let store = FileStore::new(&config.state_dir);
            let name = opts.tenant.clone();
            tokio::task::spawn_blocking(move || store.save_blocking(&name, &stored))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
            let path = FileStore::new(&config.state_dir).path(&opts.tenant);
            format!("{}; a running gateway picks them up at the tenant's next request", path.display())
        }
        StoreConfig::Postgres(pg) => {
            let shared = PostgresStore::for_command(pg).map_err(failed)?;
            shared.save(&opts.tenant, &stored).await.map_err(|e| failed(e.to_string()))?;
            "the shared token store (PostgreSQL); running replicas take them up at once".to_string()
        }
    };
    let _ = writeln!(out, "Tenant `{}` is connected. Its tokens are saved in {saved_in}.", opts.tenant);
    Ok(())
}

/// Serves the redirect URI until the browser arrives with a code (or an error).
async fn wait_for_code(listener: TcpListener, path: String, state: String) -> Result<String, String> {
    let (tx, mut rx) = mpsc::channel::<Callback>(1);
    let expected = Arc::new((path, state));
    let done = Arc::new(Mutex::new(false));
    loop {
        tokio::select! {
            got = rx.recv() => return got.unwrap_or_else(|| Err("redirect listener stopped".into())),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (tx, expected, done) = (tx.clone(), expected.clone(), done.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let answer = callback(&req, &expected.0, &expected.1);
                        let first = !std::mem::replace(&mut *done.lock().expect("connect lock"), answer.is_some());
                        let page = match &answer {
                            None => (StatusCode::NOT_FOUND, "pleo-gateway: not the redirect path\n"),
                            Some(Ok(_)) => (StatusCode::OK, "pleo-gateway: consent received. You can close this tab.\n"),
                            Some(Err(_)) => (StatusCode::BAD_REQUEST, "pleo-gateway: the consent failed; see the terminal.\n"),
                        };
                        if let (Some(a), true) = (answer, first) {
                            let _ = tx.try_send(a);
                        }
                        let mut resp = Response::new(Full::new(Bytes::from_static(page.1.as_bytes())));
                        *resp.status_mut() = page.0;
                        resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
                        std::future::ready(Ok::<_, Infallible>(resp))
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }
    }
}

/// `None` for a request that is not the redirect (a favicon); otherwise the
/// code, or why there is none.
fn callback(req: &Request<Incoming>, path: &str, state: &str) -> Option<Callback> {
    if req.uri().path() != path {
        return None;
    }
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    if q.get("state").map(String::as_str) != Some(state) {
        return Some(Err("the redirect's state does not match (a stale or forged redirect); run connect again".into()));
    }
    if let Some(e) = q.get("error") {
        let e: String = e.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect();
        return Some(Err(format!("consent was not given ({e})")));
    }
    match q.get("code") {
        Some(code) if !code.is_empty() => Some(Ok(code.clone())),
        _ => Some(Err("the redirect carries no code".into())),
    }
}
