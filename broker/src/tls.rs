//! TLS for AMQP (`amqps`, RabbitMQ's port 5671) and for the management API (HTTPS),
//! with rustls on the `ring` crypto provider.
//!
//! A [`TlsConfig`] is a certificate chain and its private key, read from PEM files
//! ([`TlsConfig::from_pem_files`]) or bytes ([`TlsConfig::from_pem`]). Reading fails
//! with a [`TlsError`] that names the file, never a panic. The broker builds one
//! rustls server configuration for AMQP (no ALPN, as RabbitMQ) and one for HTTP/1.1.
//!
//! Handshakes run in each connection's own task under the AMQP handshake timeout (for
//! HTTPS, under the management listener's request timeout), so a client that stalls
//! or sends plain AMQP to the TLS port only costs its own task.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    Read {
        /// `"certificate"` or `"key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No certificate could be parsed.
    #[error("no valid PEM certificate in {origin}: {reason}")]
    Certificate {
        /// The file, or `"in-memory certificate"`.
        origin: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// No private key could be parsed.
    #[error("no valid PEM private key in {origin}: {reason}")]
    Key {
        /// The file, or `"in-memory key"`.
        origin: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("certificate {cert} and key {key} cannot be used: {source}")]
    Config {
        /// Where the certificate came from.
        cert: String,
        /// Where the key came from.
        key: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// A certificate chain and private key, ready to serve TLS with.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    amqp: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    chain: Vec<CertificateDer<'static>>,
}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1).
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read("certificate", cert)?;
        let key_pem = read("key", key)?;
        Self::build(
            &cert_pem,
            &key_pem,
            cert.display().to_string(),
            key.display().to_string(),
        )
    }

    /// The same from PEM bytes in memory.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::build(
            cert,
            key,
            "in-memory certificate".to_owned(),
            "in-memory key".to_owned(),
        )
    }

    fn build(
        cert: &[u8],
        key: &[u8],
        cert_origin: String,
        key_origin: String,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Certificate {
                origin: cert_origin.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Certificate {
                origin: cert_origin,
                reason: pem::Error::NoItemsFound.to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key {
            origin: key_origin.clone(),
            reason: e.to_string(),
        })?;
        let config = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, TlsError> {
            let refused = |source| TlsError::Config {
                cert: cert_origin.clone(),
                key: key_origin.clone(),
                source,
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut c = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(refused)?
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(refused)?;
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(c))
        };
        Ok(Self {
            amqp: config(&[])?,
            http: config(&[b"http/1.1"])?,
            chain,
        })
    }

    /// The certificate chain presented to clients, leaf first, in DER.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub(crate) fn amqp_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.amqp))
    }

    pub(crate) fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.http))
    }
}

/// What a TLS connection negotiated, as the management API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// RabbitMQ's spelling: `"tlsv1.3"` or `"tlsv1.2"`.
    pub protocol: &'static str,
    /// The cipher suite, e.g. `"TLS13_AES_256_GCM_SHA384"`.
    pub cipher: &'static str,
}

impl TlsInfo {
    fn of(conn: &rustls::ServerConnection) -> Self {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "tlsv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "tlsv1.2",
            _ => "unknown",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        Self { protocol, cipher }
    }
}

/// Runs the server side of a TLS handshake on `stream`, giving up after `limit`.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limit: impl Future<Output = ()>,
) -> io::Result<(TlsStream<TcpStream>, TlsInfo)> {
    tokio::select! {
        done = acceptor.accept(stream) => {
            let tls = done?;
            let info = TlsInfo::of(tls.get_ref().1);
            Ok((tls, info))
        }
        () = limit => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_an_error_naming_its_origin() {
        let err = TlsConfig::from_pem(b"not a certificate", b"nor a key").expect_err("garbage");
        assert!(err.to_string().contains("in-memory certificate"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
            .expect_err("missing");
        assert!(matches!(
            err,
            TlsError::Read {
                what: "certificate",
                ..
            }
        ));
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
