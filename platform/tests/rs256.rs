//! RS256, the production signature, with a key pair made by `openssl` for this run only (no key
//! is kept in the repository).

use std::process::Command;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use platform::auth::{AuthError, Claims, JwtKey, Role};

fn key_pair() -> (Vec<u8>, String) {
    let dir = std::env::temp_dir().join(format!("hie-rs256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("k.pem"), dir.join("k.pub"));
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (tests/prereqs.sh installs it)")
            .status
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    run(&["genrsa", "-out", private.to_str().unwrap(), "2048"]);
    run(&[
        "rsa",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let pair = (
        std::fs::read(&private).unwrap(),
        std::fs::read_to_string(&public).unwrap(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

fn claims() -> Claims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        sub: "u1".into(),
        email: "u1@example.org".into(),
        org: "org-1".into(),
        roles: vec!["ems".into()],
        exp: now + 600,
        iat: None,
    }
}

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "hie-query-api";

fn signed(private: &[u8], iss: Option<&str>, aud: Option<&str>) -> String {
    let mut c = serde_json::to_value(claims()).unwrap();
    if let Some(iss) = iss {
        c["iss"] = iss.into();
    }
    if let Some(aud) = aud {
        c["aud"] = aud.into();
    }
    let key = EncodingKey::from_rsa_pem(private).unwrap();
    encode(&Header::new(Algorithm::RS256), &c, &key).unwrap()
}

#[test]
fn rs256_tokens_verify_with_the_public_key_and_hs256_ones_do_not() {
    let (private, public) = key_pair();
    let verifier = JwtKey::Rs256 {
        public_key_pem: public.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
    }
    .verifier()
    .unwrap();
    let token = signed(&private, Some(ISSUER), Some(AUDIENCE));
    assert_eq!(verifier.verify(&token).unwrap().roles, vec![Role::Ems]);
    // A token signed with HS256 (say, with the public key as the secret) is refused.
    let mut c = serde_json::to_value(claims()).unwrap();
    c["iss"] = ISSUER.into();
    c["aud"] = AUDIENCE.into();
    let forged = platform::auth::sign_hs256(&c, public.as_bytes());
    assert_eq!(verifier.verify(&forged), Err(AuthError::Invalid));
    // Issuer and audience are required, and must be these.
    for (iss, aud) in [
        (None, Some(AUDIENCE)),
        (Some(ISSUER), None),
        (Some("https://elsewhere.example"), Some(AUDIENCE)),
        (Some(ISSUER), Some("another-relying-party")),
    ] {
        assert_eq!(
            verifier.verify(&signed(&private, iss, aud)),
            Err(AuthError::Invalid),
            "iss {iss:?} aud {aud:?}"
        );
    }
}
