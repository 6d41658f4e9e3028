//! The REST API served over TLS with `ApiTls` + `TlsListener`: a real rustls client with a
//! private test CA gets answers, a client that never finishes its handshake does not hold up
//! others, and bad certificate/key input is refused with a clear message.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::serve::ListenerExt as _;
use sentra_api::{Api, ApiConfig, ApiTls, Error, TlsListener};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Pki {
    ca: rcgen::Certificate,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

async fn get_healthz(addr: SocketAddr, ca: &rcgen::Certificate) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_and_a_stalled_handshake_blocks_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::open(dir.path(), ApiConfig::default()).await.unwrap();
    let pki = pki();
    let tls = ApiTls::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, tls).unwrap().tap_io(|_| {});
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    tokio::spawn(
        axum::serve(
            listener,
            api.router()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future(),
    );

    // Clients that connect and never send a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let response = tokio::time::timeout(Duration::from_secs(5), get_healthz(addr, &pki.ca))
        .await
        .expect("a real client was held up by stalled handshakes");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    drop(stalled);
}

#[test]
fn bad_certificate_or_key_input_is_refused_clearly() {
    let pki = pki();
    let other = pki_key_only();
    let cases: [(&[u8], &[u8], &str, &str); 4] = [
        (
            b"",
            pki.key_pem.as_bytes(),
            "api_tls_cert",
            "no CERTIFICATE",
        ),
        (
            pki.cert_pem.as_bytes(),
            b"",
            "api_tls_key",
            "no private key",
        ),
        (
            pki.cert_pem.as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
            "api_tls_key",
            "",
        ),
        (
            pki.cert_pem.as_bytes(),
            other.as_bytes(),
            "api_tls_key",
            "does not fit",
        ),
    ];
    for (cert, key, want_field, want_reason) in cases {
        match ApiTls::from_pem(cert, key) {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, want_field, "{reason}");
                assert!(reason.contains(want_reason), "{field}: {reason}");
                assert!(
                    !reason.contains("BEGIN"),
                    "key material in the message: {reason}"
                );
            }
            other => panic!("expected Error::Invalid for {want_field}, got {other:?}"),
        }
    }
    let err = ApiTls::from_files("/nonexistent/api.crt", "/nonexistent/api.key").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/api.crt"), "{err}");
}

fn pki_key_only() -> String {
    rcgen::KeyPair::generate().unwrap().serialize_pem()
}
