//! SMART Backend Services client assertions (`platform::clients`), with an ES384 key pair made by
//! `openssl` for this run only: what is accepted once, and every refusal.

use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::clients::{ClientAuthError, Clients};
use platform::kafka::Replica;
use schemas::ClientRegistered;
use serde_json::json;

const TOKEN_URL: &str = "http://127.0.0.1:8080/oauth/token";

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (tests/prereqs.sh installs it)");
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A P-384 key: its PKCS#8 PEM and its public JWK (kid `k1`).
fn key_pair(dir: &std::path::Path) -> (Vec<u8>, serde_json::Value) {
    let ec = dir.join("ec.pem");
    openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        ec.to_str().unwrap(),
    ]);
    let pem = openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", ec.to_str().unwrap()]);
    let der = openssl(&[
        "ec",
        "-in",
        ec.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    // The DER ends with the uncompressed point: 04 || x (48 bytes) || y (48 bytes).
    let point = &der[der.len() - 97..];
    assert_eq!(point[0], 4);
    let jwk = json!({"kty": "EC", "crv": "P-384", "kid": "k1",
        "x": base64url(&point[1..49]), "y": base64url(&point[49..])});
    (pem, jwk)
}

fn registered(jwk: &serde_json::Value, active: bool) -> ClientRegistered {
    ClientRegistered {
        event_id: "e".into(),
        at: 0,
        client_id: "ehr-1".into(),
        organization_id: "org-ehr".into(),
        jwks_json: json!({"keys": [jwk]}).to_string(),
        scopes: vec!["system/*.rs".into()],
        active,
        recorded_by: "admin".into(),
    }
}

fn assertion(pem: &[u8], alg: Algorithm, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_pem(pem).unwrap()).unwrap()
}

#[test]
fn an_assertion_is_accepted_once_and_every_bad_one_refused() {
    let dir = std::env::temp_dir().join(format!("hie-assert-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pem, jwk) = key_pair(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let clients = Clients::default();
    let urls = [TOKEN_URL.to_string()];
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |iss: &str, aud: &str, exp: u64, jti: &str| json!({"iss": iss, "sub": iss, "aud": aud, "exp": exp, "jti": jti});
    let good = assertion(
        &pem,
        Algorithm::ES384,
        claims("ehr-1", TOKEN_URL, now + 240, "j1"),
    );
    // Before the registry has replayed its topic: refused as not ready, not as unknown.
    assert_eq!(
        clients.verify_assertion(&good, &urls).unwrap_err(),
        ClientAuthError::Loading
    );
    let mut state = Default::default();
    Clients::apply_to(&mut state, registered(&jwk, true), 0);
    clients.install(state);

    let client = clients.verify_assertion(&good, &urls).unwrap();
    assert_eq!(
        (client.id.as_str(), client.organization_id.as_str()),
        ("ehr-1", "org-ehr")
    );
    assert_eq!(
        clients.verify_assertion(&good, &urls).unwrap_err(),
        ClientAuthError::Replayed
    );
    for (what, bad) in [
        (
            "another audience",
            claims("ehr-1", "http://elsewhere/token", now + 240, "j2"),
        ),
        (
            "exp more than 5 minutes ahead",
            claims("ehr-1", TOKEN_URL, now + 600, "j3"),
        ),
        ("expired", claims("ehr-1", TOKEN_URL, now - 120, "j4")),
        (
            "sub is not iss",
            json!({"iss": "ehr-1", "sub": "x", "aud": TOKEN_URL, "exp": now + 240, "jti": "j5"}),
        ),
        (
            "no jti",
            json!({"iss": "ehr-1", "sub": "ehr-1", "aud": TOKEN_URL, "exp": now + 240}),
        ),
    ] {
        let token = assertion(&pem, Algorithm::ES384, bad);
        assert!(
            matches!(
                clients.verify_assertion(&token, &urls),
                Err(ClientAuthError::BadAssertion(_))
            ),
            "{what}"
        );
    }
    let stranger = assertion(
        &pem,
        Algorithm::ES384,
        claims("nobody", TOKEN_URL, now + 240, "j6"),
    );
    assert_eq!(
        clients.verify_assertion(&stranger, &urls).unwrap_err(),
        ClientAuthError::UnknownClient
    );
    // HS256 (a shared secret) is not SMART's: refused before any key is tried.
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("ehr-1", TOKEN_URL, now + 240, "j7"),
        &EncodingKey::from_secret(b"a secret the client should not have"),
    )
    .unwrap();
    assert!(matches!(
        clients.verify_assertion(&hs256, &urls),
        Err(ClientAuthError::BadAssertion(_))
    ));
    // Disabled: unknown from then on.
    clients.apply(registered(&jwk, false));
    let later = assertion(
        &pem,
        Algorithm::ES384,
        claims("ehr-1", TOKEN_URL, now + 240, "j8"),
    );
    assert_eq!(
        clients.verify_assertion(&later, &urls).unwrap_err(),
        ClientAuthError::UnknownClient
    );
}
