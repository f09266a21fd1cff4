//! Mutual TLS for the mesh (rustls via tokio-rustls, the version ractor_cluster's `NodeServer` takes,
//! with the aws-lc-rs provider). One CA signs every node's certificate: the listener requires a client
//! certificate chaining to it, and every dial — we make them all ourselves, the mesh runs in Isolated
//! mode — presents this node's certificate and checks the peer's against the same CA and the host the
//! peer advertises.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{ClusterError, Result};

#[cfg(test)]
mod tests;

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The cluster CA.
    pub ca: PathBuf,
}

/// The loaded TLS configuration: both ends of every mesh connection.
#[derive(Clone)]
pub(crate) struct MeshTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").finish_non_exhaustive()
    }
}

fn tls_err(what: &str, path: &Path, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(format!("{what} {}: {e}", path.display()))
}

impl MeshTls {
    /// Reads the PEM files and builds the acceptor (client certificates required) and the connector.
    pub fn load(files: &TlsFiles) -> Result<MeshTls> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| tls_err("cannot read the certificate", &files.cert, e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| tls_err("bad certificate PEM in", &files.cert, e))?;
        if certs.is_empty() {
            return Err(tls_err("no certificate in", &files.cert, "empty"));
        }
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_err("cannot read the key", &files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| tls_err("cannot read the CA", &files.ca, e))? {
            let ca = ca.map_err(|e| tls_err("bad CA PEM in", &files.ca, e))?;
            roots.add(ca).map_err(|e| tls_err("unusable CA certificate in", &files.ca, e))?;
        }
        if roots.is_empty() {
            return Err(tls_err("no CA certificate in", &files.ca, "empty"));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| ClusterError::Tls(format!("client verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClusterError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| tls_err("certificate and key do not match", &files.cert, e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClusterError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| tls_err("certificate and key do not match", &files.cert, e))?;
        Ok(MeshTls { acceptor: TlsAcceptor::from(Arc::new(server)), connector: TlsConnector::from(Arc::new(client)) })
    }
}

/// The name a dial to `addr` (`host:port`) checks the peer's certificate against.
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_owned()).map_err(|e| ClusterError::Tls(format!("bad peer host {host:?}: {e}")))
}
