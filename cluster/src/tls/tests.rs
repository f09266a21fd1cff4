#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A CA and node certificates it signs, written as PEM files.
pub(crate) struct TestPki {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
}

impl TestPki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Self { dir, issuer: Issuer::new(params, key), ca_pem }
    }

    /// Files for a node whose certificate covers `hosts`.
    pub fn node(&self, tag: &str, hosts: &[&str]) -> TlsFiles {
        let params = CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles {
            cert: self.dir.path().join(format!("{tag}.pem")),
            key: self.dir.path().join(format!("{tag}.key")),
            ca: self.dir.path().join("ca.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

/// A TLS handshake plus one byte each way between `server` and `client` over loopback.
async fn handshake(server: &MeshTls, client: &MeshTls, host: &str) -> std::result::Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = server.acceptor.clone();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(&b).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = server_name(&format!("{host}:{}", addr.port())).unwrap();
    let client_side = async {
        let mut tls = client.connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let client_result = client_side.await;
    let server_result = accept.await.unwrap();
    client_result.and(server_result)
}

#[tokio::test]
async fn nodes_of_one_ca_talk_and_strangers_are_refused() {
    let pki = TestPki::new();
    let a = MeshTls::load(&pki.node("a", &["127.0.0.1", "localhost"])).unwrap();
    let b = MeshTls::load(&pki.node("b", &["127.0.0.2"])).unwrap();
    handshake(&a, &b, "127.0.0.1").await.unwrap();
    handshake(&a, &b, "localhost").await.unwrap();
    // The server's certificate must name the host the client dialed.
    assert!(handshake(&b, &a, "127.0.0.1").await.is_err(), "b's certificate does not cover 127.0.0.1");
    // A node from another CA is refused both ways.
    let other = TestPki::new();
    let mut stranger_files = other.node("s", &["127.0.0.1"]);
    let s = MeshTls::load(&stranger_files).unwrap();
    assert!(handshake(&a, &s, "127.0.0.1").await.is_err(), "a stranger's client certificate is refused");
    assert!(handshake(&s, &a, "127.0.0.1").await.is_err(), "a stranger's server certificate is refused");
    // A stranger that trusts our CA but holds its own certificate is still refused by our listener.
    stranger_files.ca = pki.dir.path().join("ca.pem");
    let s2 = MeshTls::load(&stranger_files).unwrap();
    assert!(handshake(&a, &s2, "127.0.0.1").await.is_err());
    assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn bad_files_are_clear_errors() {
    let pki = TestPki::new();
    let good = pki.node("a", &["127.0.0.1"]);
    let missing = TlsFiles { cert: pki.dir.path().join("nope.pem"), ..good.clone() };
    let e = MeshTls::load(&missing).err().unwrap().to_string();
    assert!(e.contains("nope.pem"), "{e}");
    let swapped = TlsFiles { cert: good.key.clone(), key: good.cert.clone(), ..good.clone() };
    assert!(MeshTls::load(&swapped).is_err());
    let other = pki.node("b", &["127.0.0.1"]);
    let mismatched = TlsFiles { key: other.key, ..good };
    let e = MeshTls::load(&mismatched).err().unwrap().to_string();
    assert!(e.contains("do not match"), "{e}");
    assert_eq!(server_name("[::1]:4000").unwrap().to_str(), "::1");
    assert!(server_name("bad host:1").is_err());
}
