//! Encryption in transit (rustls, ring): the listeners' server configuration, the rule that a
//! listener reachable beyond loopback carries PHI only over TLS, HTTP served over it, client
//! certificates for MLLP senders (pinned per source by their SHA-256), and TLS to PostgreSQL.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub use rustls::ServerConfig as TlsServerConfig;
pub use tokio_rustls::TlsAcceptor;

/// The fingerprint of the client certificate a TLS peer presented, if any.
pub fn peer_fingerprint(connection: &rustls::ServerConnection) -> Option<String> {
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(fingerprint)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{var} and {other} go together: set both or neither")]
    Incomplete { var: String, other: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(
        "{what} listens on {addr}, beyond loopback, without TLS: PHI must be encrypted in transit \
         (set {cert_var} and {key_var}, or bind to 127.0.0.1)"
    )]
    PlainBeyondLoopback {
        what: &'static str,
        addr: SocketAddr,
        cert_var: &'static str,
        key_var: &'static str,
    },
}

/// A certificate chain and its private key, as PEM files. `Debug` shows the paths only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files the variables `cert_var` and `key_var` name: both, or neither (no TLS).
    pub fn from_env(cert_var: &str, key_var: &str) -> Result<Option<TlsFiles>, TlsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (cert_var, key_var) = (cert_var.to_string(), key_var.to_string());
        match (var(&cert_var), var(&key_var)) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Incomplete {
                var: cert_var,
                other: key_var,
            }),
            (None, Some(_)) => Err(TlsError::Incomplete {
                var: key_var,
                other: cert_var,
            }),
        }
    }
}

/// Whether a listener asks its peers for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCerts {
    /// Plain server authentication (HTTP: callers prove who they are with tokens and keys).
    None,
    /// Any client certificate is taken whose holder proves it owns the key; which one belongs to
    /// which sender is decided later, by its fingerprint (MLLP pins one per source).
    Requested,
}

/// The rustls server configuration for `files`.
pub fn server_config(
    files: &TlsFiles,
    clients: ClientCerts,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match clients {
        ClientCerts::None => builder.with_no_client_auth(),
        ClientCerts::Requested => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// A listener beyond loopback must use TLS; on loopback it may (the dev stack and the tests).
/// `vars` are the certificate's and the key's variables, for the error.
pub fn require_beyond_loopback(
    what: &'static str,
    vars: (&'static str, &'static str),
    addr: SocketAddr,
    tls: bool,
) -> Result<(), TlsError> {
    if tls || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(TlsError::PlainBeyondLoopback {
            what,
            addr,
            cert_var: vars.0,
            key_var: vars.1,
        })
    }
}

/// The SHA-256 of a certificate (DER), lowercase hex: what a source registers to pin its MLLP
/// client certificate (`openssl x509 -in cert.pem -noout -fingerprint -sha256`, colons and case
/// aside).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fingerprint as people write it (`AB:CD:...`, any case) in the form `fingerprint` gives.
pub fn normalize_fingerprint(raw: &str) -> Option<String> {
    let hex: String = raw
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// Takes any client certificate whose holder signs the handshake with its key (so a
/// fingerprint cannot be replayed without the key); trust is the pin's, per source.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How long a peer has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `router` on `listener` until `shutdown` resolves: over TLS when `tls` is given (each
/// connection's handshake bounded by `HANDSHAKE_TIMEOUT`), else as `axum::serve` does. Requests
/// in flight are finished before it returns.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    Ok(())
}

/// A PostgreSQL connector for `DATABASE_URL`s that ask for TLS (`sslmode=require`): the server's
/// certificate is checked against `PGSSLROOTCERT` when set, else the system's roots.
/// `sslmode=prefer` (the default) falls back to plain text when the server offers no TLS.
pub fn postgres_tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match std::env::var_os("PGSSLROOTCERT") {
        Some(path) => {
            for cert in read_certs(Path::new(&path))? {
                roots.add(cert)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_tls() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        const V: (&str, &str) = ("INGEST_TLS_CERT", "INGEST_TLS_KEY");
        assert!(require_beyond_loopback("ingest HTTP", V, lo, false).is_ok());
        assert!(require_beyond_loopback("ingest HTTP", V, v6, false).is_ok());
        assert!(require_beyond_loopback("ingest HTTP", V, any, true).is_ok());
        let e = require_beyond_loopback("ingest HTTP", V, any, false).unwrap_err();
        assert!(e.to_string().contains("INGEST_TLS_CERT"), "{e}");
    }

    #[test]
    fn fingerprints_are_compared_in_one_form() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            normalize_fingerprint(&colons).as_deref(),
            Some(hex.as_str())
        );
        assert_eq!(normalize_fingerprint(&hex).as_deref(), Some(hex.as_str()));
        assert_eq!(normalize_fingerprint("abc"), None);
        assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
        assert_eq!(
            fingerprint(&CertificateDer::from(b"x".to_vec())),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }
}
