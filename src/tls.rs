//! TLS on the gateway's listener (rustls): TLS 1.2 and 1.3 only, ALPN h2
//! and http/1.1, and optionally client certificates verified against
//! `client_ca`. The server config sits behind an `ArcSwap` so a reload
//! re-reads the certificate and key for new handshakes while open
//! connections keep theirs.
//!
//! A verified client certificate names its client by a DNS name in its
//! subject alternative names; `client_auth` maps that name to a `clients`
//! entry of the same `name`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// `tls` and `client_ca` from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificates from {path}: {reason}")]
    Certs { path: String, reason: String },
    #[error("cannot read the TLS private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS certificate and key do not make a usable server identity (do they belong together?): {0}")]
    Identity(rustls::Error),
    #[error("{path} holds no usable client CA certificate: {reason}")]
    ClientCa { path: String, reason: String },
}

/// The swappable server config the listener hands each new connection.
pub type SharedTls = Arc<ArcSwap<ServerConfig>>;

/// The name a verified client certificate gives, put in each request's
/// extensions for `client_auth`.
#[derive(Clone, Debug)]
pub struct ClientCertNames(pub Arc<[Box<str>]>);

/// The crypto under every TLS connection the gateway makes or accepts
/// (listener, Pleo, PostgreSQL, the OTLP collector).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    rustls::crypto::ring::Ticketer::new()
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// Reads the files and builds a server config; nothing is changed on error.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let show = |p: &Path| p.display().to_string();
    let chain = certs(&files.cert).map_err(|reason| TlsError::Certs { path: show(&files.cert), reason })?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key { path: show(&files.key), reason: e.to_string() })?;
    let provider = crate::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Identity)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let bad = |reason: String| TlsError::ClientCa { path: show(ca), reason };
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(ca).map_err(bad)? {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(TlsError::Identity)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Resumption by ticket (TLS 1.2 and 1.3): any number of clients resume,
    // where the default session cache holds 256. Each config has its own
    // ticket keys, so a reload (a rotated `client_ca`, say) ends every
    // resumption and the next handshake is a full one, verified again.
    config.ticketer = ticketer().map_err(TlsError::Identity)?;
    Ok(config)
}

/// When a certificate expires (its notAfter), in Unix seconds.
fn not_after(cert: &CertificateDer<'_>) -> Option<f64> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.tbs_certificate.validity.not_after.to_unix_duration().as_secs_f64())
}

/// The expiry of each certificate served (the listener's and the connect
/// pages' end-entity certificates) and of the client CA (its earliest),
/// for `pleo_gateway_certificate_expiry_timestamp_seconds`. Read after the
/// files were accepted; one that cannot be read again is left out.
pub fn expiries(listen: Option<&TlsFiles>, connect: Option<&TlsFiles>) -> Vec<(&'static str, f64)> {
    let first = |path: &Path| certs(path).ok()?.first().and_then(not_after);
    let earliest = |path: &Path| certs(path).ok()?.iter().filter_map(not_after).reduce(f64::min);
    let mut out = Vec::new();
    for (which, files) in [("listen", listen), ("connect", connect)] {
        if let Some(at) = files.and_then(|f| first(&f.cert)) {
            out.push((which, at));
        }
    }
    let ca = [listen, connect].into_iter().flatten().filter_map(|f| f.client_ca.as_deref().and_then(earliest));
    if let Some(at) = ca.reduce(f64::min) {
        out.push(("client_ca", at));
    }
    out
}

/// The DNS names of a verified client certificate (its end-entity cert).
pub fn client_cert_names(conn: &rustls::ServerConnection) -> Option<ClientCertNames> {
    let cert = conn.peer_certificates()?.first()?;
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let names: Vec<Box<str>> = parsed.valid_dns_names().map(Into::into).collect();
    Some(ClientCertNames(names.into()))
}
