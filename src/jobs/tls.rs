//! TLS for the jobs API: a PEM certificate chain and key read once at start-up, served with
//! rustls on the process's crypto provider. Handshakes run beside the accept loop, each bounded
//! in time, so a client that stalls its handshake holds up no other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const READY_BACKLOG: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "the jobs API needs a certificate (--jobs-tls-cert and --jobs-tls-key) or, to serve plain HTTP, --jobs-plain-http"
    )]
    Unset,
    #[error(
        "the jobs API takes either a certificate and its key (--jobs-tls-cert, --jobs-tls-key) or --jobs-plain-http"
    )]
    Ambiguous,
    #[error("reading the jobs API certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("reading the jobs API key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the jobs API certificate and key do not go together: {0}")]
    Config(rustls::Error),
}

/// How the jobs API is served.
#[derive(Debug, PartialEq, Eq)]
pub enum Transport<'a> {
    Tls { cert: &'a Path, key: &'a Path },
    PlainHttp,
}

/// TLS when given a certificate and key, plain HTTP only when asked for; neither, or both, is
/// an error.
pub fn transport<'a>(
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
    plain_http: bool,
) -> Result<Transport<'a>, TlsError> {
    match (cert, key, plain_http) {
        (Some(cert), Some(key), false) => Ok(Transport::Tls { cert, key }),
        (None, None, true) => Ok(Transport::PlainHttp),
        (None, None, false) => Err(TlsError::Unset),
        _ => Err(TlsError::Ambiguous),
    }
}

/// The server configuration for a PEM certificate chain (leaf first) and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections and hands on those whose TLS handshake completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (sender, ready) = mpsc::channel(READY_BACKLOG);
        let mut listener = listener;
        tokio::spawn(async move {
            loop {
                let (stream, remote) = axum::serve::Listener::accept(&mut listener).await;
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                if sender.is_closed() {
                    return;
                }
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => drop(sender.send((tls, remote)).await),
                        Ok(Err(error)) => debug!(%remote, %error, "jobs API TLS handshake failed"),
                        Err(_) => debug!(%remote, "jobs API TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ends only when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_when_asked_for_and_never_beside_a_certificate() {
        let (cert, key) = (Path::new("tls.crt"), Path::new("tls.key"));
        assert_eq!(
            transport(Some(cert), Some(key), false).unwrap(),
            Transport::Tls { cert, key }
        );
        assert_eq!(transport(None, None, true).unwrap(), Transport::PlainHttp);
        assert!(matches!(transport(None, None, false), Err(TlsError::Unset)));
        assert!(matches!(
            transport(Some(cert), Some(key), true),
            Err(TlsError::Ambiguous)
        ));
        assert!(matches!(
            transport(Some(cert), None, false),
            Err(TlsError::Ambiguous)
        ));
    }

    #[test]
    fn a_certificate_and_key_that_do_not_go_together_are_refused() {
        let dir = std::env::temp_dir().join(format!("windlass-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generate = || {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let ((cert, key), (_, other_key)) = (generate(), generate());
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (cert, key, other_key) = (
            write("tls.crt", &cert),
            write("tls.key", &key),
            write("other.key", &other_key),
        );
        server_config(&cert, &key).unwrap();
        assert!(matches!(
            server_config(&cert, &other_key),
            Err(TlsError::Config(_))
        ));
        assert!(matches!(
            server_config(&key, &key),
            Err(TlsError::Certificate { .. })
        ));
        assert!(matches!(
            server_config(&cert, &dir.join("missing.key")),
            Err(TlsError::Key { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
