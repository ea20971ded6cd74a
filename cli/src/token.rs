//! Development JWTs (HS256), the shape the services expect from portal users and EHRs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The roles the contract knows (API.md, "Identity of callers"); anything else is a typo.
pub const ROLES: [&str; 12] = [
    "physician",
    "resident",
    "physician_assistant",
    "nurse_practitioner",
    "ed_nurse",
    "ems",
    "nurse",
    "care_manager",
    "front_desk",
    "privacy_officer",
    "data_steward",
    "admin",
];

/// Exactly the claims of the contract, nothing more.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub org: String,
    pub roles: Vec<String>,
    pub exp: u64,
    pub iat: u64,
}

/// Who a token is for.
pub struct User<'a> {
    pub sub: &'a str,
    pub email: &'a str,
    pub org: &'a str,
    pub roles: &'a [&'a str],
}

/// The signing secret, shared with the services through the environment.
pub fn secret_from_env() -> Result<String> {
    match std::env::var("HIE_JWT_SECRET") {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => bail!(
            "HIE_JWT_SECRET is not set: export the secret the services use \
             (deploy/local/up keeps it in $HIE_DATA_DIR/jwt-secret)"
        ),
    }
}

pub fn mint(secret: &str, user: &User, ttl: Duration) -> Result<String> {
    if user.roles.is_empty() {
        bail!("a token needs at least one role");
    }
    if let Some(bad) = user.roles.iter().find(|r| !ROLES.contains(r)) {
        bail!("unknown role {bad:?}; known roles: {}", ROLES.join(", "));
    }
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs();
    let claims = Claims {
        sub: user.sub.to_owned(),
        email: user.email.to_owned(),
        org: user.org.to_owned(),
        roles: user.roles.iter().map(|r| r.to_string()).collect(),
        exp: iat + ttl.as_secs(),
        iat,
    };
    // Header::default() is HS256, what the services verify in development.
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing the token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

    #[test]
    fn round_trips_with_exactly_the_contract_claims() {
        let user = User {
            sub: "u1",
            email: "a@b.example",
            org: "org-x",
            roles: &["physician", "admin"],
        };
        let token = mint("s3cret", &user, Duration::from_secs(3600)).unwrap();

        let data = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        let obj = data.claims.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["email", "exp", "iat", "org", "roles", "sub"]);
        assert_eq!(obj["roles"], serde_json::json!(["physician", "admin"]));
        assert_eq!(
            obj["exp"].as_u64().unwrap() - obj["iat"].as_u64().unwrap(),
            3600
        );
    }

    #[test]
    fn refuses_unknown_roles() {
        let user = User {
            sub: "u1",
            email: "a@b.example",
            org: "org-x",
            roles: &["doctor"],
        };
        assert!(mint("s", &user, Duration::from_secs(60)).is_err());
    }
}
