//! Encryption in transit: ingest (HTTP and MLLP) and the query API over TLS with certificates
//! made at run time (rcgen); MLLP senders known by their pinned client certificate; a listener
//! beyond loopback without TLS refuses to start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hie_tests::{Services, TestApp};
use platform::tls::TlsFiles;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::hl7_mllp::{fixture, MERCY_AA};

struct Pki {
    server_cert: CertificateDer<'static>,
    files: TlsFiles,
    _dir: std::path::PathBuf,
}

/// A self-signed server certificate for 127.0.0.1, as PEM files for the services.
fn server_pki() -> Pki {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("hie-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
    Pki {
        server_cert: cert.cert.der().clone(),
        files,
        _dir: dir,
    }
}

/// A client certificate and key, and its fingerprint as a source registers it.
fn client_identity(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>, String) {
    let c = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
    let der = c.cert.der().clone();
    let fp = platform::tls::fingerprint(&der);
    let key = PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
    (der, key, fp)
}

fn connector(
    pki: &Pki,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_cert.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// One HTTP/1.1 request over TLS; the status and the JSON body.
async fn https(
    pki: &Pki,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port(base)))
        .await
        .unwrap();
    let mut tls = connector(pki, None)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake with the service");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// One MLLP exchange over TLS (with `client`'s certificate, if any): MSA-1, or `None` when the
/// connection was refused.
async fn mllp_tls(
    app: &TestApp,
    pki: &Pki,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    message: &str,
) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    let mut tls = connector(pki, client)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .ok()?;
    let mut framed = vec![0x0b];
    framed.extend_from_slice(message.as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    tls.write_all(&framed).await.ok()?;
    let mut ack = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while !ack.ends_with(&[0x1c, 0x0d]) {
            match tls.read_u8().await {
                Ok(b) => ack.push(b),
                Err(_) => return,
            }
        }
    })
    .await
    .expect("no ACK");
    let ack = String::from_utf8_lossy(&ack).into_owned();
    let msa = ack.split('\r').find(|s| s.starts_with("MSA"))?;
    Some(msa.split('|').nth(1)?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_the_query_api_serve_over_tls_and_mllp_senders_are_pinned() {
    let pki = server_pki();
    let app = TestApp::spawn_with(Services {
        tls: Some(pki.files.clone()),
        ..Default::default()
    })
    .await;
    for base in [&app.ingest, &app.query] {
        let start = Instant::now();
        while https(&pki, base, "GET", "/healthz", None, None).await.0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{base} never healthy over TLS"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Plain HTTP to a TLS listener gets no answer.
    let plain = app.http.get(format!("{}/healthz", app.ingest)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    let (pinned_cert, pinned_key, pin) = client_identity("mercy-interface-engine");
    let (other_cert, other_key, _) = client_identity("somebody-else");
    let admin = app.admin();
    let source = |pin: Option<&str>| {
        json!({"name": "Mercy General", "organization_id": "org-mercy", "feed": "realtime",
               "assigning_authority": MERCY_AA, "data_elements": ["Patient", "Encounter"],
               "mllp_client_certificate_sha256": pin})
    };
    // A pin is a SHA-256; colons and capitals as `openssl x509 -fingerprint` prints them are fine.
    let (status, body) = https(
        &pki,
        &app.ingest,
        "PUT",
        "/v1/sources/MERCY-GENERAL",
        Some(&admin),
        Some(&source(Some("not-a-digest"))),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let openssl_style = pin
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let (status, body) = https(
        &pki,
        &app.ingest,
        "PUT",
        "/v1/sources/MERCY-GENERAL",
        Some(&admin),
        Some(&source(Some(&openssl_style))),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = https(&pki, &app.ingest, "PUT", "/v1/sources/VALLEY-LAB", Some(&admin), Some(&json!({"name": "Valley", "organization_id": "org-valley", "feed": "realtime", "assigning_authority": "urn:oid:1.2.3.99"}))).await;
    assert_eq!(status, 201);

    let a08 = fixture("mercy_adt_a08.hl7").replace('\n', "\r");
    // The pinned certificate: taken.
    assert_eq!(
        mllp_tls(
            &app,
            &pki,
            Some((pinned_cert.clone(), pinned_key.clone_key())),
            &a08
        )
        .await
        .as_deref(),
        Some("AA")
    );
    // Another certificate, or none, naming the same MSH-4: refused and dead-lettered.
    assert_eq!(
        mllp_tls(
            &app,
            &pki,
            Some((other_cert.clone(), other_key.clone_key())),
            &a08
        )
        .await
        .as_deref(),
        Some("AR")
    );
    assert_eq!(
        mllp_tls(&app, &pki, None, &a08).await.as_deref(),
        Some("AR")
    );
    // Over TLS, a source that registered no certificate is refused whatever is presented.
    let valley = a08.replace("MERCY-GENERAL^2.16.840.1.113883.3.1001^ISO", "VALLEY-LAB");
    assert_eq!(
        mllp_tls(&app, &pki, Some((other_cert, other_key)), &valley)
            .await
            .as_deref(),
        Some("AR")
    );
    // Plain MLLP to the TLS listener: no ACK.
    let mut plain = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    let _ = plain.write_all(&[0x0b]).await;
    let _ = plain.write_all(a08.as_bytes()).await;
    let _ = plain.write_all(&[0x1c, 0x0d]).await;
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(15), plain.read(&mut buf)).await;
    assert!(
        !matches!(got, Ok(Ok(n)) if n > 0 && buf[0] == 0x0b),
        "plain MLLP got an ACK over a TLS listener"
    );

    // The query API over TLS: the directory shows the source's data from the pinned sender.
    let (status, body) = https(&pki, &app.query, "PUT", "/v1/users/dr-tls", Some(&admin), Some(&json!({"email": "dr-tls@org-mercy.example", "organization_id": "org-mercy", "roles": ["physician"]}))).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let token = hie_tests::sign_token(hie_tests::SECRET, "dr-tls", "org-mercy", &["physician"]);
    let start = Instant::now();
    loop {
        let (status, body) =
            https(&pki, &app.query, "GET", "/v1/sources", Some(&token), None).await;
        assert_eq!(status, 200, "{body}");
        let mercy = body["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "MERCY-GENERAL")
            .cloned();
        if mercy.is_some_and(|m| !m["last_received_at"].is_null()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The dead letters are events too: projected on their own partition, maybe after the records.
    let start = Instant::now();
    loop {
        let refused: i64 = app
            .db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM dead_letters WHERE channel = 'hl7v2_mllp' AND reason LIKE '%certificate%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if refused == 3 || start.elapsed() > Duration::from_secs(15) {
            assert_eq!(refused, 3);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_beyond_loopback_without_tls_refuses_to_start() {
    for (var, addr) in [
        ("INGEST_HTTP_ADDR", "0.0.0.0:0"),
        ("INGEST_MLLP_ADDR", "0.0.0.0:0"),
    ] {
        let out = tokio::process::Command::new(hie_tests::workspace_binary("ingest"))
            .env(var, addr)
            .env(
                "HIE_JWT_SECRET",
                "a-development-secret-of-at-least-32-bytes",
            )
            .env("KAFKA_BROKERS", "127.0.0.1:1")
            .env_remove("INGEST_TLS_CERT")
            .env_remove("INGEST_TLS_KEY")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{var}={addr} started without TLS");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("INGEST_TLS_CERT"), "{stderr}");
    }
    let out = tokio::process::Command::new(hie_tests::workspace_binary("query-api"))
        .env("QUERY_HTTP_ADDR", "0.0.0.0:0")
        .env(
            "HIE_JWT_SECRET",
            "a-development-secret-of-at-least-32-bytes",
        )
        .env_remove("QUERY_TLS_CERT")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("QUERY_TLS_CERT"));
}
