//! TLS on the gateway's listener, with a CA made in the test: handshakes
//! over h2 and http/1.1 (ALPN), client certificates verified against
//! `client_ca` and mapped to `clients` by name, and a renewed server
//! certificate picked up by a reload without dropping open connections.

use std::sync::Arc;

use crate::support::*;
use bytes::Bytes;
use http::Version;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

struct Issued {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "pleo-gateway test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    fn issue(&self, names: &[&str], client: bool) -> Issued {
        self.issue_until(names, client, (4096, 1, 1))
    }

    /// A certificate valid until midnight UTC of `(year, month, day)`.
    fn issue_until(&self, names: &[&str], client: bool, (y, m, d): (i32, u8, u8)) -> Issued {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued { cert, key }
    }
}

type TlsClient = Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

fn client_config(pki: &Pki, identity: Option<&Issued>) -> rustls::ClientConfig {
    client_config_for(pki, identity, rustls::DEFAULT_VERSIONS)
}

fn client_config_for(
    pki: &Pki,
    identity: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert.der().clone()], PrivateKeyDer::Pkcs8(id.key.serialize_der().into()))
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

fn tls_client(pki: &Pki, identity: Option<&Issued>, h2: bool) -> TlsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(client_config(pki, identity)).https_only();
    let https = if h2 { https.enable_all_versions().build() } else { https.enable_http1().build() };
    Client::builder(TokioExecutor::new()).build(https)
}

async fn get(
    client: &TlsClient,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Version, serde_json::Value), String> {
    let mut b = http::Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client.request(b.body(Full::default()).unwrap()).await.map_err(|e| format!("{e:?}"))?;
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, version, serde_json::from_slice(&body).unwrap_or_default()))
}

const BI_KEY: &str = "gw_bi_key_over_tls_1a2b3c4d";

async fn start(pki: &Pki, server: &Issued) -> Kit {
    let staging = sandbox(staging_spec()).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), server.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), server.key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("clients-ca.pem"), pki.ca.pem()).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(BI_KEY));
    let extra = format!(
        "tls: {{ cert: tls.crt, key: tls.key }}\nclient_ca: clients-ca.pem\nclients:\n  - name: erp-client\n    tenants: [globex]\n  - name: bi\n    key_sha256: \"{digest}\"\n    tenants: [initech]\ntenant_from:\n  - header: X-Pleo-Tenant\n  - client_key\n"
    );
    let yaml = standard_yaml(dir.path(), &base_url(&staging), &base_url(&production), &extra);
    let gw = start_gateway(&yaml, dir.path()).await;
    Kit { gw, staging, production, client: http_client(), dir, yaml }
}

#[tokio::test]
async fn tls_with_client_certificates_mapped_to_clients() {
    let pki = Pki::new();
    let server = pki.issue(&["127.0.0.1", "localhost"], false);
    let kit = start(&pki, &server).await;
    let url = format!("https://127.0.0.1:{}/v2/employees", kit.gw.addr.port());

    // A certificate naming a configured client: its tenant, over h2 and http/1.1.
    let erp = pki.issue(&["erp-client"], true);
    let (status, version, body) = get(&tls_client(&pki, Some(&erp), true), &url, &[]).await.unwrap();
    assert_eq!((status, version), (200, Version::HTTP_2));
    assert_eq!(body["companyId"], "company-globex");
    let (status, version, _) = get(&tls_client(&pki, Some(&erp), false), &url, &[]).await.unwrap();
    assert_eq!((status, version), (200, Version::HTTP_11));
    let (status, _, body) =
        get(&tls_client(&pki, Some(&erp), true), &url, &[("x-pleo-tenant", "initech")]).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["error"], "tenant_forbidden");

    // A certificate from the CA that names no client: it may connect, but only a key identifies it.
    let stranger = pki.issue(&["stranger"], true);
    let (status, _, body) = get(&tls_client(&pki, Some(&stranger), true), &url, &[]).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"], "client_unauthenticated");
    let bearer = format!("Bearer {BI_KEY}");
    let (status, _, body) =
        get(&tls_client(&pki, Some(&stranger), true), &url, &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["companyId"], "company-initech");

    // No certificate, or one from another CA: the handshake fails.
    assert!(get(&tls_client(&pki, None, true), &url, &[]).await.is_err());
    let other = Pki::new();
    let foreign = other.issue(&["erp-client"], true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(&pki, Some(&foreign)))
        .https_only()
        .enable_all_versions()
        .build();
    let foreign_client: TlsClient = Client::builder(TokioExecutor::new()).build(https);
    assert!(get(&foreign_client, &url, &[]).await.is_err());
    // Plain HTTP on a TLS listener gets no answer.
    assert!(kit.client.get(format!("http://{}/v2/x", kit.gw.addr).parse().unwrap()).await.is_err());
    assert_eq!(kit.upstream_count(), 3);
    kit.stop().await;
}

async fn served_certificate(addr: std::net::SocketAddr, pki: &Pki, identity: &Issued) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(pki, Some(identity))));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// One TLS connection with `config` (and its session cache) that sends a
/// request and reads the answer to the end (TLS 1.3 tickets arrive after the
/// handshake): whether the handshake was a full one or a resumption.
async fn handshake(addr: std::net::SocketAddr, config: &Arc<rustls::ClientConfig>) -> rustls::HandshakeKind {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /v2/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    tls.get_ref().1.handshake_kind().unwrap()
}

#[tokio::test]
async fn sessions_resume_by_ticket_for_any_number_of_clients_and_not_across_a_reload() {
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = Pki::new();
    let server = pki.issue(&["127.0.0.1"], false);
    let kit = start(&pki, &server).await;
    let erp = pki.issue(&["erp-client"], true);
    let first = Arc::new(client_config(&pki, Some(&erp)));
    assert_eq!(handshake(kit.gw.addr, &first).await, Full);
    assert_eq!(handshake(kit.gw.addr, &first).await, Resumed);
    // 300 other clients: more sessions than a server-side cache of 256 holds.
    for _ in 0..300 {
        handshake(kit.gw.addr, &Arc::new(client_config(&pki, Some(&erp)))).await;
    }
    assert_eq!(handshake(kit.gw.addr, &first).await, Resumed, "the ticket does not depend on a cache entry");
    // TLS 1.2 resumes by ticket too.
    let tls12 = Arc::new(client_config_for(&pki, Some(&erp), &[&rustls::version::TLS12]));
    assert_eq!(handshake(kit.gw.addr, &tls12).await, Full);
    assert_eq!(handshake(kit.gw.addr, &tls12).await, Resumed);
    // A reload (a rotated client_ca, say) makes new ticket keys: the next
    // handshake is a full one, its client certificate verified again.
    kit.gw.reload().await.unwrap();
    assert_eq!(handshake(kit.gw.addr, &first).await, Full);
    assert_eq!(handshake(kit.gw.addr, &tls12).await, Full);
    assert_eq!(handshake(kit.gw.addr, &first).await, Resumed);
    kit.stop().await;
}

/// `pleo_gateway_certificate_expiry_timestamp_seconds{certificate}`.
async fn expiry(kit: &Kit, which: &str) -> f64 {
    sample(&kit.metrics().await, "pleo_gateway_certificate_expiry_timestamp_seconds", &[("certificate", which)])
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_a_reload_and_open_connections_stay() {
    let pki = Pki::new();
    // 2031-01-01T00:00:00Z, then 2032-06-01.
    let first = pki.issue_until(&["127.0.0.1"], false, (2031, 1, 1));
    let kit = start(&pki, &first).await;
    assert_eq!(expiry(&kit, "listen").await, 1_924_992_000.0, "the served certificate's notAfter");
    assert!(expiry(&kit, "client_ca").await > 1_924_992_000.0, "the client CA's, listed apart");
    assert_eq!(sample(&kit.metrics().await, "pleo_gateway_config_last_reload_successful", &[]), 1.0);
    let erp = pki.issue(&["erp-client"], true);
    let url = format!("https://127.0.0.1:{}/v2/x", kit.gw.addr.port());
    assert_eq!(served_certificate(kit.gw.addr, &pki, &erp).await, *first.cert.der());
    let open = tls_client(&pki, Some(&erp), true);
    assert_eq!(get(&open, &url, &[]).await.unwrap().0, 200);

    let renewed = pki.issue_until(&["127.0.0.1", "localhost"], false, (2032, 6, 1));
    std::fs::write(kit.dir.path().join("tls.crt"), renewed.cert.pem()).unwrap();
    std::fs::write(kit.dir.path().join("tls.key"), renewed.key.serialize_pem()).unwrap();
    kit.gw.reload().await.unwrap();
    assert_eq!(served_certificate(kit.gw.addr, &pki, &erp).await, *renewed.cert.der());
    assert_eq!(expiry(&kit, "listen").await, 1_969_660_800.0, "the renewed certificate's notAfter");
    // The pooled h2 connection from before the reload still serves.
    assert_eq!(get(&open, &url, &[]).await.unwrap().0, 200);

    // A key that does not match its certificate is refused; the renewed pair keeps serving.
    std::fs::write(kit.dir.path().join("tls.key"), first.key.serialize_pem()).unwrap();
    let e = kit.gw.reload().await.unwrap_err().to_string();
    assert!(e.contains("tls"), "{e}");
    assert!(!e.contains("PRIVATE KEY"));
    assert_eq!(served_certificate(kit.gw.addr, &pki, &erp).await, *renewed.cert.der());
    // The alert's signal: the last reload failed; the gauge keeps what is served.
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_config_last_reload_successful", &[]), 0.0);
    assert_eq!(sample(&m, "pleo_gateway_config_reloads_total", &[("result", "failure")]), 1.0);
    assert_eq!(expiry(&kit, "listen").await, 1_969_660_800.0);
    // Fixed, and reloaded: successful again, with a newer timestamp.
    let before = sample(&m, "pleo_gateway_config_last_reload_success_timestamp_seconds", &[]);
    std::fs::write(kit.dir.path().join("tls.key"), renewed.key.serialize_pem()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    kit.gw.reload().await.unwrap();
    let m = kit.metrics().await;
    assert_eq!(sample(&m, "pleo_gateway_config_last_reload_successful", &[]), 1.0);
    assert!(sample(&m, "pleo_gateway_config_last_reload_success_timestamp_seconds", &[]) > before);
    kit.stop().await;
}

/// The connect pages over TLS (`connect.tls`), their certificate renewed by
/// a reload like `listen`'s.
#[tokio::test]
async fn connect_pages_serve_tls_and_take_a_renewed_certificate_on_reload() {
    let pki = Pki::new();
    let first = pki.issue(&["127.0.0.1", "localhost"], false);
    let staging = sandbox(staging_spec()).await;
    let production = sandbox(production_spec()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("connect.crt"), first.cert.pem()).unwrap();
    std::fs::write(dir.path().join("connect.key"), first.key.serialize_pem()).unwrap();
    let port = free_port();
    let extra = format!(
        "  hooli:\n    environment: staging\n    auth: {{ model: integrated_api_key, source: connection }}\n\
         store: {{ kind: file, dir: state, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }}\n\
         connect:\n  listen: 127.0.0.1:{port}\n  public_url: https://127.0.0.1:{port}\n  tls: {{ cert: connect.crt, key: connect.key }}\n"
    );
    let yaml = standard_yaml(dir.path(), &base_url(&staging), &base_url(&production), &extra);
    let gw = start_gateway(&yaml, dir.path()).await;
    let by = pleo_gateway::onboarding::Actor::Cli("test".into());
    let (_, url) = gw.onboarding.create_link("hooli", std::time::Duration::from_secs(600), &by).await.unwrap();
    let url = url.unwrap();
    assert!(url.starts_with(&format!("https://127.0.0.1:{port}/c/")), "{url}");

    let client = tls_client(&pki, None, false);
    let resp = client.request(http::Request::get(&url).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    // Served over TLS: browsers are told to keep to https (refusals and the stylesheet too).
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
    let missing = format!("https://127.0.0.1:{port}/c/not-a-link");
    let resp = client.request(http::Request::get(&missing).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
    let addr = gw.connect_addr.unwrap();
    let served = |pki: &Pki| {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(pki, None)));
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
            tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
        }
    };
    assert_eq!(served(&pki).await, *first.cert.der());
    let renewed = pki.issue(&["127.0.0.1", "localhost"], false);
    std::fs::write(dir.path().join("connect.crt"), renewed.cert.pem()).unwrap();
    std::fs::write(dir.path().join("connect.key"), renewed.key.serialize_pem()).unwrap();
    gw.reload().await.unwrap();
    assert_eq!(served(&pki).await, *renewed.cert.der(), "the renewed certificate after the reload");
    gw.shutdown().await;
    staging.shutdown().await;
    production.shutdown().await;
}
