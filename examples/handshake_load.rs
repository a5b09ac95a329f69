//! A TLS handshake load generator, for measuring what a TLS-terminating
//! listener can take: `bench/ab.sh` with `HANDSHAKES=1.3|1.2` runs it on
//! CPU 1 against the gateway or nginx on CPU 0.
//!
//! Each of CONNECTIONS tasks opens a TCP connection, makes a TLS handshake,
//! sends `GET / HTTP/1.0` (so the server answers and closes) and reads to
//! the end, then starts over, for SECONDS. With `resume`, each connection
//! offers a session from the one before it (rustls' client cache); with
//! `full`, none.
//!
//! Why not `openssl s_time`: it makes one connection at a time, so its rate
//! is the sum of both ends' latency and its own CPU, not the server's
//! capacity; the server sits idle while the client works. Many connections
//! at once keep the server busy, as many reconnecting apps do.
//!
//! The generator does not verify the server's certificate or handshake
//! signature: that work is the client's, and skipping it keeps the client's
//! CPU per handshake under the server's, so the one client core can load
//! the server core to the full. The server does all of its work either way.
//!
//! usage: handshake_load ADDR 1.2|1.3 full|resume CONNECTIONS SECONDS
//! prints: `handshakes N in T s: R resumed, E failed`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Accepts any server: see the module comment for why a load generator may.
#[derive(Debug)]
struct AcceptAny(Vec<SignatureScheme>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    resumed: AtomicU64,
    failed: AtomicU64,
}

fn usage() -> ! {
    eprintln!("usage: handshake_load ADDR 1.2|1.3 full|resume CONNECTIONS SECONDS");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, version, mode, connections, seconds] = args.as_slice() else { usage() };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| usage());
    let version = match version.as_str() {
        "1.2" => &rustls::version::TLS12,
        "1.3" => &rustls::version::TLS13,
        _ => usage(),
    };
    let resume = match mode.as_str() {
        "resume" => true,
        "full" => false,
        _ => usage(),
    };
    let connections: usize = connections.parse().unwrap_or_else(|_| usage());
    let seconds: f64 = seconds.parse().unwrap_or_else(|_| usage());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider.signature_verification_algorithms.supported_schemes();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("ring supports both versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(schemes)))
        .with_no_client_auth();
    config.resumption = if resume { Resumption::in_memory_sessions(connections * 4) } else { Resumption::disabled() };
    let connector = TlsConnector::from(Arc::new(config));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let (connector, counts, stop) = (connector.clone(), counts.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match one(&connector, addr).await {
                            Ok(HandshakeKind::Resumed) => {
                                counts.done.fetch_add(1, Ordering::Relaxed);
                                counts.resumed.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {
                                counts.done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if counts.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("first failure: {e}");
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "handshakes {} in {elapsed:.3} s: {} resumed, {} failed",
        counts.done.load(Ordering::Relaxed),
        counts.resumed.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
}

/// One connection: handshake, `GET /`, the whole answer.
async fn one(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<HandshakeKind> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut tls = connector.connect(name, tcp).await?;
    let kind = tls.get_ref().1.handshake_kind().unwrap_or(HandshakeKind::Full);
    tls.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut sink = [0u8; 4096];
    // To the end: the server closes after an HTTP/1.0 answer. A close
    // without close_notify still ends the answer here.
    loop {
        match tls.read(&mut sink).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    Ok(kind)
}
