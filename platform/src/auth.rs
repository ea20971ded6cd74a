//! Who is calling: JWTs for users and EHRs (HS256 in development, RS256 in production).

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Physician,
    Resident,
    PhysicianAssistant,
    NursePractitioner,
    EdNurse,
    Ems,
    Nurse,
    CareManager,
    FrontDesk,
    PrivacyOfficer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 11] = [
        Role::Physician,
        Role::Resident,
        Role::PhysicianAssistant,
        Role::NursePractitioner,
        Role::EdNurse,
        Role::Ems,
        Role::Nurse,
        Role::CareManager,
        Role::FrontDesk,
        Role::PrivacyOfficer,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Physician => "physician",
            Role::Resident => "resident",
            Role::PhysicianAssistant => "physician_assistant",
            Role::NursePractitioner => "nurse_practitioner",
            Role::EdNurse => "ed_nurse",
            Role::Ems => "ems",
            Role::Nurse => "nurse",
            Role::CareManager => "care_manager",
            Role::FrontDesk => "front_desk",
            Role::PrivacyOfficer => "privacy_officer",
            Role::Admin => "admin",
        }
    }

    /// Roles that see clinical data under a consent: the care team. Front desk staff, privacy
    /// officers and administrators see demographics, consent status and audit data only.
    pub fn reads_clinical_data(self) -> bool {
        !matches!(self, Role::FrontDesk | Role::PrivacyOfficer | Role::Admin)
    }

    /// Roles that may break the glass (DOMAIN.md).
    pub fn may_break_glass(self) -> bool {
        matches!(
            self,
            Role::Physician
                | Role::Resident
                | Role::PhysicianAssistant
                | Role::NursePractitioner
                | Role::EdNurse
                | Role::Ems
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(AuthError::UnknownRole)
    }
}

/// How user tokens are verified: a shared secret in development (`HIE_JWT_SECRET`, HS256), a
/// public key in production (`HIE_JWT_PUBLIC_KEY_FILE`, RS256; it wins when both are set).
#[derive(Debug, Clone)]
pub enum JwtKey {
    Hs256(crate::Secret<String>),
    Rs256PublicKeyPem(String),
}

#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("set HIE_JWT_SECRET (HS256) or HIE_JWT_PUBLIC_KEY_FILE (RS256)")]
    NotSet,
    #[error("HIE_JWT_PUBLIC_KEY_FILE: {0}")]
    Unreadable(String),
}

impl JwtKey {
    pub fn from_env() -> Result<JwtKey, JwtKeyError> {
        let set = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        match (set("HIE_JWT_PUBLIC_KEY_FILE"), set("HIE_JWT_SECRET")) {
            (Some(path), _) => std::fs::read_to_string(&path)
                .map(JwtKey::Rs256PublicKeyPem)
                .map_err(|e| JwtKeyError::Unreadable(e.to_string())),
            (None, Some(secret)) => Ok(JwtKey::Hs256(crate::Secret::new(secret))),
            (None, None) => Err(JwtKeyError::NotSet),
        }
    }

    pub fn verifier(&self) -> Result<Verifier, AuthError> {
        match self {
            JwtKey::Hs256(secret) => Ok(Verifier::hs256(secret.expose().as_bytes())),
            JwtKey::Rs256PublicKeyPem(pem) => Verifier::rs256_pem(pem.as_bytes()),
        }
    }

    /// Which kind, for printed configurations.
    pub fn describe(&self) -> &'static str {
        match self {
            JwtKey::Hs256(_) => "HS256 (HIE_JWT_SECRET)",
            JwtKey::Rs256PublicKeyPem(_) => "RS256 (HIE_JWT_PUBLIC_KEY_FILE)",
        }
    }
}

/// The claims a token must carry (API.md, "Identity of callers").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub org: String,
    pub roles: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// A verified caller. Only built from a token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub org: String,
    pub roles: Vec<Role>,
}

impl User {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn may_break_glass(&self) -> bool {
        self.roles.iter().any(|r| r.may_break_glass())
    }

    /// The role an access is recorded under: the first one the token lists.
    pub fn primary_role(&self) -> Role {
        self.roles[0]
    }

    /// The first of the user's roles that satisfies `allowed`.
    pub fn role_for(&self, allowed: impl Fn(Role) -> bool) -> Option<Role> {
        self.roles.iter().copied().find(|r| allowed(*r))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid or expired token")]
    Invalid,
    #[error("token names a role that does not exist")]
    UnknownRole,
    #[error("token carries no role")]
    NoRole,
    #[error("bad verification key: {0}")]
    BadKey(String),
}

/// Checks signatures, expiry (with bounded clock skew) and claim shape.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({:?})", self.validation.algorithms)
    }
}

/// Allowed clock skew between the token issuer and this service.
const LEEWAY_SECONDS: u64 = 30;

impl Verifier {
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    pub fn rs256_pem(public_key_pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|e| AuthError::BadKey(e.to_string()))?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }

    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|_| AuthError::Invalid)?;
        let c = data.claims;
        if c.sub.is_empty() || c.org.is_empty() {
            return Err(AuthError::Invalid);
        }
        let roles = c
            .roles
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<Role>, _>>()?;
        if roles.is_empty() {
            return Err(AuthError::NoRole);
        }
        Ok(User {
            id: c.sub,
            email: c.email,
            org: c.org,
            roles,
        })
    }

    /// `Authorization: Bearer <token>` → the verified user.
    pub fn verify_header(&self, authorization: Option<&str>) -> Result<User, AuthError> {
        let token = bearer(authorization).ok_or(AuthError::Missing)?;
        self.verify(token)
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Sign HS256 claims: for development tools and tests.
pub fn sign_hs256(claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing does not fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(roles: &[&str], exp_offset: i64) -> Claims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Claims {
            sub: "u1".into(),
            email: "a@b.example".into(),
            org: "org-1".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            exp: (now + exp_offset) as u64,
            iat: None,
        }
    }

    #[test]
    fn accepts_a_valid_token_and_rejects_the_rest() {
        let v = Verifier::hs256(b"secret");
        let ok = sign_hs256(&claims(&["physician"], 600), b"secret");
        assert_eq!(v.verify(&ok).unwrap().roles, vec![Role::Physician]);
        assert_eq!(
            v.verify(&sign_hs256(&claims(&["physician"], 600), b"other")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            v.verify(&sign_hs256(&claims(&["physician"], -120), b"secret")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            v.verify(&sign_hs256(&claims(&["wizard"], 600), b"secret")),
            Err(AuthError::UnknownRole)
        );
        assert_eq!(
            v.verify(&sign_hs256(&claims(&[], 600), b"secret")),
            Err(AuthError::NoRole)
        );
        assert_eq!(v.verify_header(None), Err(AuthError::Missing));
        assert_eq!(v.verify_header(Some("Basic abc")), Err(AuthError::Missing));
    }

    #[test]
    fn break_glass_roles_are_the_six_of_the_domain() {
        let eligible: Vec<_> = Role::ALL
            .into_iter()
            .filter(|r| r.may_break_glass())
            .collect();
        assert_eq!(eligible.len(), 6);
        assert!(!Role::Nurse.may_break_glass());
    }
}
