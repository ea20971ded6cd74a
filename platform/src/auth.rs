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
    DataSteward,
    Admin,
    /// An EHR client (SMART Backend Services) reading as its organization. Not a user role:
    /// not in `ALL` and not deserialized, so no user token or account can claim it; never
    /// breaks the glass.
    #[serde(skip)]
    System,
}

impl Role {
    pub const ALL: [Role; 12] = [
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
        Role::DataSteward,
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
            Role::DataSteward => "data_steward",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }

    /// Roles that see clinical data under a consent: the care team. Front desk staff, privacy
    /// officers and administrators see demographics, consent status and audit data only; data
    /// stewards (who link patients' identities) demographics only.
    pub fn reads_clinical_data(self) -> bool {
        !matches!(
            self,
            Role::FrontDesk | Role::PrivacyOfficer | Role::DataSteward | Role::Admin
        )
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

/// How user tokens are verified: a shared secret in development (`HIE_JWT_SECRET`, HS256, at least
/// 32 bytes), a public key in production (`HIE_JWT_PUBLIC_KEY_FILE`, RS256; it wins when both are
/// set), where the issuer and audience (`HIE_JWT_ISSUER`, `HIE_JWT_AUDIENCE`) must be configured and
/// every token must carry them: a key shared by several relying parties cannot be replayed here.
#[derive(Debug, Clone)]
pub enum JwtKey {
    Hs256(crate::Secret<String>),
    Rs256 {
        public_key_pem: String,
        issuer: String,
        audience: String,
    },
}

/// Shorter HS256 secrets can be brute-forced from one token (RFC 7518 §3.2: at least the hash's
/// size, 256 bits).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtKeyError {
    #[error("set HIE_JWT_SECRET (HS256) or HIE_JWT_PUBLIC_KEY_FILE (RS256)")]
    NotSet,
    #[error("HIE_JWT_PUBLIC_KEY_FILE: {0}")]
    Unreadable(String),
    #[error("HIE_JWT_SECRET is {0} bytes; HS256 needs at least 32 (e.g. `openssl rand -hex 32`)")]
    WeakSecret(usize),
    #[error("RS256 (HIE_JWT_PUBLIC_KEY_FILE) needs HIE_JWT_ISSUER and HIE_JWT_AUDIENCE")]
    NoIssuerOrAudience,
}

impl JwtKey {
    pub fn from_env() -> Result<JwtKey, JwtKeyError> {
        let set = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        match (set("HIE_JWT_PUBLIC_KEY_FILE"), set("HIE_JWT_SECRET")) {
            (Some(path), _) => {
                let (Some(issuer), Some(audience)) =
                    (set("HIE_JWT_ISSUER"), set("HIE_JWT_AUDIENCE"))
                else {
                    return Err(JwtKeyError::NoIssuerOrAudience);
                };
                let public_key_pem = std::fs::read_to_string(&path)
                    .map_err(|e| JwtKeyError::Unreadable(e.to_string()))?;
                Ok(JwtKey::Rs256 {
                    public_key_pem,
                    issuer,
                    audience,
                })
            }
            (None, Some(secret)) => {
                let key = JwtKey::Hs256(crate::Secret::new(secret));
                key.check()?;
                Ok(key)
            }
            (None, None) => Err(JwtKeyError::NotSet),
        }
    }

    /// Whether this key may be used at all (also for keys built in code, not from the environment).
    pub fn check(&self) -> Result<(), JwtKeyError> {
        match self {
            JwtKey::Hs256(secret) if secret.expose().len() < MIN_HS256_SECRET_BYTES => {
                Err(JwtKeyError::WeakSecret(secret.expose().len()))
            }
            JwtKey::Rs256 {
                issuer, audience, ..
            } if issuer.trim().is_empty() || audience.trim().is_empty() => {
                Err(JwtKeyError::NoIssuerOrAudience)
            }
            _ => Ok(()),
        }
    }

    /// The verifier of this key; refuses a key that `check` refuses, so a service cannot start
    /// with one.
    pub fn verifier(&self) -> Result<Verifier, AuthError> {
        self.check().map_err(|e| AuthError::BadKey(e.to_string()))?;
        match self {
            JwtKey::Hs256(secret) => Ok(Verifier::hs256(secret.expose().as_bytes())),
            JwtKey::Rs256 {
                public_key_pem,
                issuer,
                audience,
            } => Ok(Verifier::rs256_pem(public_key_pem.as_bytes())?.expecting(issuer, audience)),
        }
    }

    /// Which kind, for printed configurations (issuer and audience are not secret).
    pub fn describe(&self) -> String {
        match self {
            JwtKey::Hs256(_) => "HS256 (HIE_JWT_SECRET)".into(),
            JwtKey::Rs256 {
                issuer, audience, ..
            } => format!("RS256 (HIE_JWT_PUBLIC_KEY_FILE), iss={issuer}, aud={audience}"),
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
        // A token is not good before its `nbf` (when it has one), with the same skew as `exp`.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }

    /// Require `iss` and `aud` claims naming this issuer and this service.
    pub fn expecting(mut self, issuer: &str, audience: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self.validation.set_audience(&[audience]);
        self.validation
            .set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        self
    }

    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|_| AuthError::Invalid)?;
        let c = data.claims;
        // The email is compared with the account's (`accounts::Accounts::admit`): required.
        if c.sub.is_empty() || c.org.is_empty() || c.email.trim().is_empty() {
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
pub fn sign_hs256(claims: &impl Serialize, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing does not fail")
}

/// Sign RS256 claims with a PEM private key: for tests of the production signature.
pub fn sign_rs256(claims: &impl Serialize, private_key_pem: &[u8]) -> Result<String, AuthError> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem)
        .map_err(|e| AuthError::BadKey(e.to_string()))?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::RS256), claims, &key)
        .map_err(|e| AuthError::BadKey(e.to_string()))
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

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn an_hs256_secret_under_32_bytes_is_refused() {
        let short = JwtKey::Hs256(crate::Secret::new("integration-test-secret".into()));
        assert_eq!(short.check(), Err(JwtKeyError::WeakSecret(23)));
        assert!(matches!(short.verifier(), Err(AuthError::BadKey(_))));
        let enough = JwtKey::Hs256(crate::Secret::new("x".repeat(32)));
        assert!(enough.verifier().is_ok());
        let rs = JwtKey::Rs256 {
            public_key_pem: String::new(),
            issuer: "https://idp.example".into(),
            audience: " ".into(),
        };
        assert_eq!(rs.check(), Err(JwtKeyError::NoIssuerOrAudience));
    }

    #[test]
    fn a_token_is_not_good_before_its_nbf() {
        let v = Verifier::hs256(b"secret");
        let mut c = serde_json::to_value(claims(&["nurse"], 600)).unwrap();
        c["nbf"] = (now() + 300).into();
        assert_eq!(
            v.verify(&sign_hs256(&c, b"secret")),
            Err(AuthError::Invalid)
        );
        c["nbf"] = (now() - 10).into();
        assert!(v.verify(&sign_hs256(&c, b"secret")).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_required_when_expected() {
        let v = Verifier::hs256(b"secret").expecting("https://idp.example", "hie-query");
        let base = serde_json::to_value(claims(&["nurse"], 600)).unwrap();
        let with = |iss: Option<&str>, aud: Option<&str>| {
            let mut c = base.clone();
            if let Some(iss) = iss {
                c["iss"] = iss.into();
            }
            if let Some(aud) = aud {
                c["aud"] = aud.into();
            }
            v.verify(&sign_hs256(&c, b"secret"))
        };
        assert!(with(Some("https://idp.example"), Some("hie-query")).is_ok());
        assert_eq!(with(None, Some("hie-query")), Err(AuthError::Invalid));
        assert_eq!(
            with(Some("https://idp.example"), None),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            with(Some("https://other.example"), Some("hie-query")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            with(Some("https://idp.example"), Some("another-service")),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn a_token_without_an_email_is_refused() {
        let v = Verifier::hs256(b"secret");
        let mut c = claims(&["nurse"], 600);
        c.email = " ".into();
        assert_eq!(
            v.verify(&sign_hs256(&c, b"secret")),
            Err(AuthError::Invalid)
        );
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
