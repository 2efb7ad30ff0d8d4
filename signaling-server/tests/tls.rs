//! The signaling server over TLS on 127.0.0.1, with a certificate from an authority made for the test:
//! HTTPS pages, WSS registration, and clients that do not trust the certificate or do not speak TLS get
//! nothing.

use async_tungstenite::tungstenite::Message;
use dht_link::Identity;
use futures::StreamExt;
use signaling_protocol::{prove, ClientMsg, ServerMsg};
use signaling_server::server::{Server, ServerConfig};
use signaling_server::tls::{server_config, LocalCa, TlsError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::ServerName, RootCertStore};

/// A server with a certificate for 127.0.0.1 read from PEM files, and the authority's certificate.
async fn start() -> (SocketAddr, CertificateDer<'static>) {
    let ca = LocalCa::new(&["127.0.0.1".into(), "localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write(dir.path()).unwrap();
    let tls = server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    let config = ServerConfig { tls: Some(tls), ..ServerConfig::default() };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    use rustls::pki_types::pem::PemObject;
    (addr, CertificateDer::from_pem_slice(ca.ca_pem.as_bytes()).unwrap())
}

fn connector(trusted: Option<CertificateDer<'static>>) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    if let Some(cert) = trusted {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_to(
    addr: SocketAddr,
    trusted: Option<CertificateDer<'static>>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector(trusted).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await
}

#[tokio::test]
async fn pages_and_registrations_go_over_tls() {
    let (addr, ca) = start().await;

    // HTTPS: the config document, with the same headers as over plain HTTP.
    let mut s = tls_to(addr, Some(ca.clone())).await.expect("a client trusting the authority connects");
    s.write_all(b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("Content-Security-Policy:"), "{answer}");
    assert!(answer.contains("\"iceServers\""), "{answer}");

    // WSS: challenge, proof, registered.
    let tls = tls_to(addr, Some(ca.clone())).await.unwrap();
    let (mut ws, _) = async_tungstenite::tokio::client_async(format!("wss://{addr}/ws"), tls).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("a challenge first") };
    let ServerMsg::Challenge { nonce, key, .. } = ServerMsg::decode(t.as_str()).unwrap() else { panic!("{t}") };
    let who = Identity::generate().unwrap();
    let (public_key, proof) = prove(who.private_bytes(), &nonce, &key).unwrap();
    let register = ClientMsg::Register { public_key, proof, addrs: vec![], work: 0 };
    ws.send(Message::text(register.encode())).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("an answer to the registration") };
    assert_eq!(ServerMsg::decode(t.as_str()).unwrap(), ServerMsg::Registered { id: who.node_id().into() });

    // A client that does not trust the certificate stops at the handshake.
    let refused = tls_to(addr, None).await.expect_err("an unknown authority");
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");

    // Plain HTTP on the TLS port gets no page (the handshake fails and the connection closes).
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await.expect("closed in time");
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/1.1 200"), "{got:?}");
}

#[test]
fn unusable_certificate_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::new(&["127.0.0.1".into()]).unwrap();
    ca.write(dir.path()).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    assert!(server_config(&cert, &key).is_ok());

    let missing = server_config(&dir.path().join("nope.pem"), &key).err().unwrap();
    assert!(matches!(missing, TlsError::File { .. }), "{missing}");
    assert!(missing.to_string().contains("nope.pem"), "{missing}");

    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let empty = server_config(&dir.path().join("empty.pem"), &key).err().unwrap();
    assert!(matches!(empty, TlsError::NoCertificate(_)), "{empty}");

    // A key that is not the certificate's.
    let other = LocalCa::new(&["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("other-key.pem"), &other.key_pem).unwrap();
    let mismatch = server_config(&cert, &dir.path().join("other-key.pem")).err().unwrap();
    assert!(matches!(mismatch, TlsError::Config(_)), "{mismatch}");

    // The certificate file as the key.
    let not_a_key = server_config(&cert, &cert).err().unwrap();
    assert!(matches!(not_a_key, TlsError::File { .. }), "{not_a_key}");
}
