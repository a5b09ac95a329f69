//! A bare hyper reverse proxy, for measuring the floor under the gateway:
//! the same job as the bench harness' nginx proxy (tenant header to an
//! `Authorization`, header removed, keep-alive to one origin) written the
//! plainest way on the gateway's stack (tokio current-thread runtime,
//! hyper's HTTP/1 server, hyper-util's pooled client, rustls, mimalloc)
//! and nothing else: no limits, no metrics, no logs, no timeouts.
//!
//! What it costs per request is what hyper and tokio cost; the rest of the
//! gateway's cost is its own. `bench/ab.sh hyper http|https` runs it.
//!
//! usage: bare_proxy LISTEN UPSTREAM_URL TENANTS_AUTH [CA_FILE]
//! (TENANTS_AUTH: lines of `tenant<TAB>Authorization value`)

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = Either<Incoming, Full<Bytes>>;

struct Proxy {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host: HeaderValue,
    tenants: HashMap<String, HeaderValue>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, auth, rest @ ..] = args.as_slice() else {
        return Err("usage: bare_proxy LISTEN UPSTREAM_URL TENANTS_AUTH [CA_FILE]".into());
    };
    let upstream: Uri = upstream.parse()?;
    let tenants = std::fs::read_to_string(auth)?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, a)| Ok((t.to_string(), HeaderValue::from_str(a)?)))
        .collect::<Result<_, http::header::InvalidHeaderValue>>()?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = rest.first() {
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new("localhost".try_into()?))
        .enable_http1()
        .build();
    let authority = upstream.authority().ok_or("the upstream URL has no host")?.clone();
    let proxy = Arc::new(Proxy {
        client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector),
        scheme: upstream.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
        host: HeaderValue::from_str(authority.as_str())?,
        authority,
        tenants,
    });
    let listen = listen.clone();
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| forward(proxy.clone(), req));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

async fn forward(proxy: Arc<Proxy>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let tenant = req.headers_mut().remove("x-pleo-tenant");
    let Some(auth) = tenant.and_then(|t| proxy.tenants.get(t.to_str().ok()?).cloned()) else {
        return Ok(status(StatusCode::FORBIDDEN));
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(proxy.scheme.clone());
    parts.authority = Some(proxy.authority.clone());
    let Ok(uri) = Uri::from_parts(parts) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *req.uri_mut() = uri;
    req.headers_mut().insert(HOST, proxy.host.clone());
    req.headers_mut().insert(AUTHORIZATION, auth);
    match proxy.client.request(req).await {
        Ok(resp) => Ok(resp.map(Either::Left)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = code;
    resp
}
