//! The upstreams: each Pleo environment, its connections, and how a request
//! is rewritten for it. The `proxy` step sends through them.
//!
//! Rewrites the target to the environment's base URL (path and query kept
//! byte for byte), sets `Host` to the upstream's, removes hop-by-hop headers in
//! both directions, and sends through the environment's keep-alive [`Pool`]
//! (rustls, with webpki roots bundled, HTTP/2 by ALPN where Pleo offers it).
//! Bodies stream both ways. Connection failures answer 502
//! `upstream_unavailable`, no response head in time 504 `upstream_timeout`.

mod pool;

pub use pool::{Pool, PooledBody};

/// What goes back to the app: Pleo's body streaming through, or the
/// gateway's own small JSON answer.
pub type ResponseBody = http_body_util::Either<PooledBody, http_body_util::Full<bytes::Bytes>>;

pub fn local(body: http_body_util::Full<bytes::Bytes>) -> ResponseBody {
    http_body_util::Either::Right(body)
}

pub fn upstream(body: PooledBody) -> ResponseBody {
    http_body_util::Either::Left(body)
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::body::RequestBody;
use crate::config::{BaseUrl, Config, Environment, EnvironmentConfig};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// One Pleo environment: where it is and the connections that reach it.
#[derive(Debug)]
pub struct Upstream {
    pub environment: Environment,
    pub base: BaseUrl,
    host: HeaderValue,
    /// The request path's connections.
    pub(crate) pool: Arc<Pool>,
    /// For the gateway's own calls (token endpoint, credential check).
    client: HttpClient,
    pub(crate) timeout: Duration,
}

/// The upstreams of a config, one per environment.
#[derive(Debug, Clone)]
pub struct Upstreams(BTreeMap<Environment, Arc<Upstream>>);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("environments.{env}.ca_file: cannot read CA certificates from {path}: {reason}")]
    CaFile { env: &'static str, path: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl Upstreams {
    pub fn build(config: &Config) -> Result<Upstreams, UpstreamError> {
        let mut out = BTreeMap::new();
        for (env, ec) in &config.environments {
            let connector = connector(*env, ec, config)?;
            let pool = Arc::new(Pool::new(connector.clone(), &ec.base_url, config.limits.upstream_idle_timeout));
            let client = client(connector, config.limits.upstream_idle_timeout);
            let host =
                HeaderValue::from_str(ec.base_url.authority.as_str()).expect("authority is a valid header value");
            out.insert(
                *env,
                Arc::new(Upstream {
                    environment: *env,
                    base: ec.base_url.clone(),
                    host,
                    pool,
                    client,
                    timeout: config.limits.upstream_timeout,
                }),
            );
        }
        Ok(Upstreams(out))
    }

    pub fn get(&self, env: Environment) -> Arc<Upstream> {
        self.0.get(&env).cloned().expect("validated configs define every environment")
    }
}

/// TCP + rustls to one environment. One `ClientConfig` per environment,
/// shared by the pool and the client, so its session cache resumes TLS
/// sessions on new connections.
fn connector(
    env: Environment,
    ec: &EnvironmentConfig,
    config: &Config,
) -> Result<HttpsConnector<HttpConnector>, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &ec.ca_file {
        let bad =
            |reason: String| UpstreamError::CaFile { env: env.as_str(), path: path.display().to_string(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificates in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = crate::tls::provider();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.limits.upstream_connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http))
}

/// The client for the gateway's own few, small calls (token endpoint,
/// credential check, `connect`); app traffic goes through the [`Pool`],
/// which carries the h2 tuning for large streams.
fn client(https: HttpsConnector<HttpConnector>, idle_timeout: Duration) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .build(https)
}

/// RFC 9110 7.6.1: headers that describe one connection, never forwarded.
pub(crate) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The headers a `Connection` header names (RFC 9110 7.6.1): hop-by-hop too.
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect()
}

/// Removes hop-by-hop headers, including any that `Connection` names, from
/// Pleo's responses (requests are scrubbed by `scrub`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_named(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The upstream target in origin form: the base URL's path + the request's
/// path and query, as sent (the pool adds scheme and authority for h2).
fn target(base: &BaseUrl, uri: &Uri) -> Result<Uri, http::Error> {
    let pq = uri.path_and_query().map(PathAndQuery::as_str).unwrap_or("/");
    let pq = if base.path.is_empty() {
        uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"))
    } else {
        PathAndQuery::try_from(format!("{}{}", base.path, pq))?
    };
    Ok(Uri::from(pq))
}

impl Upstream {
    /// Turns an app's request into the one sent to Pleo: target on the base
    /// URL (path and query as sent), HTTP/1.1 semantics (the client picks
    /// h1 or h2 per connection by ALPN; an app's h2 must not force h2
    /// upstream), `Host` set to Pleo's. The client's headers were already
    /// scrubbed (`scrub`) before the credential was attached: stripping
    /// here, after it, would let `Connection: authorization` remove it.
    pub fn prepare<B>(&self, req: &mut Request<B>) -> Result<(), http::Error> {
        *req.uri_mut() = target(&self.base, req.uri())?;
        *req.version_mut() = Version::HTTP_11;
        req.headers_mut().insert(header::HOST, self.host.clone());
        Ok(())
    }

    /// Pleo's `Host` value for this environment.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The client for the gateway's own calls to this environment (token
    /// endpoint, credential check); requests from apps use the pool.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keeps_path_and_query_and_prepends_base_path() {
        let base = BaseUrl {
            scheme: "https".parse().unwrap(),
            authority: "external.pleo.io".parse().unwrap(),
            path: String::new(),
        };
        let uri: Uri = "/v2/employees%2F1?x=%20y&z".parse().unwrap();
        assert_eq!(target(&base, &uri).unwrap(), "/v2/employees%2F1?x=%20y&z");
        let base = BaseUrl { path: "/api".into(), ..base };
        assert_eq!(target(&base, &uri).unwrap(), "/api/v2/employees%2F1?x=%20y&z");
    }

    #[test]
    fn strips_connection_named_and_fixed_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-custom"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
