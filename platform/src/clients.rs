//! EHR clients (SMART Backend Services) as the query API sees them: every `ClientRegistered`
//! event, replayed at start and followed after, like `accounts`. A client authenticates with a
//! `private_key_jwt` assertion signed by a key of its registered JWKS (`verify_assertion`) and
//! then reads with a short-lived access token (`AccessTokens`) that is honoured only while its
//! client is registered, active and of the same organization: disabling a client stops its
//! tokens at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemas::{topics, ClientRegistered};
use serde::{Deserialize, Serialize};

/// The longest an assertion may live (SMART Backend Services: `exp` no more than 5 minutes
/// ahead), and the lifetime of the access tokens issued.
pub const MAX_ASSERTION_SECONDS: u64 = 300;
pub const ACCESS_TOKEN_SECONDS: u64 = 300;
/// Clock skew allowed on an assertion's `exp`/`nbf`/`iat`.
const LEEWAY_SECONDS: u64 = 30;
/// At most this many `jti`s are remembered (each only until its assertion's `exp`, ≤ 5 min):
/// beyond, assertions are refused until some expire, rather than forgetting one early.
const MAX_REMEMBERED_JTI: usize = 100_000;

/// A registered client, as the registry holds it.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub organization_id: String,
    pub scopes: Vec<String>,
    pub active: bool,
    keys: JwkSet,
}

#[derive(Clone, Default)]
pub struct Clients {
    by_id: Arc<RwLock<HashMap<String, Client>>>,
    caught_up: Arc<AtomicBool>,
    /// `jti`s seen, per client, with their assertion's `exp`: a replayed assertion is refused.
    seen: Arc<Mutex<HashMap<(String, String), u64>>>,
}

/// Why a client's assertion or access token is refused. Messages name no key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientAuthError {
    #[error("the client registry is still loading")]
    Loading,
    #[error("unknown or disabled client")]
    UnknownClient,
    #[error("{0}")]
    BadAssertion(&'static str),
    #[error("this assertion (jti) was already used")]
    Replayed,
    #[error("too many assertions in flight; retry shortly")]
    Busy,
}

/// A JWKS as registered: parsed, with at least one RSA or P-384 key usable for RS384/ES384.
pub fn parse_jwks(json: &str) -> Result<JwkSet, &'static str> {
    let set: JwkSet = serde_json::from_str(json).map_err(|_| "jwks is not a JSON Web Key Set")?;
    if set.keys.is_empty() {
        return Err("jwks holds no key");
    }
    for key in &set.keys {
        match &key.algorithm {
            AlgorithmParameters::RSA(_) => {}
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => {}
            _ => return Err("jwks keys must be RSA (RS384) or EC P-384 (ES384) public keys"),
        }
        DecodingKey::from_jwk(key).map_err(|_| "a jwks key is malformed")?;
    }
    Ok(set)
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: u64,
    jti: String,
}

impl Clients {
    /// Replay and follow `hie.clients` into this registry; runs until the process stops.
    pub async fn follow(self, brokers: String) {
        crate::kafka::follow(brokers, &topics::CLIENTS, self).await
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    pub fn get(&self, id: &str) -> Option<Client> {
        self.by_id.read().expect("clients lock").get(id).cloned()
    }

    /// Apply an event in log order (also right after publishing it, so the registering instance
    /// answers with the new state at once).
    pub fn apply(&self, event: ClientRegistered) {
        if let Some(client) = client(event) {
            self.by_id
                .write()
                .expect("clients lock")
                .insert(client.id.clone(), client);
        }
    }

    /// The client a `private_key_jwt` assertion authenticates (RFC 7523, SMART Backend
    /// Services): RS384 or ES384 by a key of its JWKS (by `kid` when the header names one),
    /// `iss` = `sub` = client id, `aud` = one of `token_urls` (the token endpoint's URL), `exp`
    /// at most 5 minutes ahead, a `jti` never used before.
    pub fn verify_assertion(
        &self,
        assertion: &str,
        token_urls: &[String],
    ) -> Result<Client, ClientAuthError> {
        if !self.is_caught_up() {
            return Err(ClientAuthError::Loading);
        }
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| ClientAuthError::BadAssertion("client_assertion is not a JWT"))?;
        if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
            return Err(ClientAuthError::BadAssertion(
                "client_assertion must be signed RS384 or ES384",
            ));
        }
        // Which client it claims to be, to find its keys; nothing is trusted before the
        // signature is checked with them.
        let claimed: AssertionClaims = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|_| {
            ClientAuthError::BadAssertion("client_assertion needs iss, sub, exp and jti")
        })?;
        let client = self
            .get(&claimed.iss)
            .filter(|c| c.active)
            .ok_or(ClientAuthError::UnknownClient)?;
        let keys: Vec<_> = match &header.kid {
            Some(kid) => client.keys.find(kid).into_iter().collect(),
            None => client.keys.keys.iter().collect(),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["iss", "sub", "aud", "exp", "jti"]);
        validation.set_issuer(&[&client.id]);
        validation.sub = Some(client.id.clone());
        validation.set_audience(token_urls);
        let claims = keys
            .iter()
            .filter_map(|k| DecodingKey::from_jwk(k).ok())
            .find_map(|key| {
                jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation).ok()
            })
            .map(|data| data.claims)
            .ok_or(ClientAuthError::BadAssertion(
                "client_assertion: bad signature, or iss/sub/aud/exp do not match",
            ))?;
        let now = jsonwebtoken::get_current_timestamp();
        if claims.exp > now + MAX_ASSERTION_SECONDS + LEEWAY_SECONDS {
            return Err(ClientAuthError::BadAssertion(
                "client_assertion exp is more than 5 minutes ahead",
            ));
        }
        if claims.jti.is_empty() || claims.sub != client.id {
            return Err(ClientAuthError::BadAssertion(
                "client_assertion needs a jti and sub = iss",
            ));
        }
        self.remember_jti(&client.id, &claims.jti, claims.exp, now)?;
        Ok(client)
    }

    /// Remember a `jti` until its assertion expires (and the skew after); refuse one seen.
    fn remember_jti(
        &self,
        client: &str,
        jti: &str,
        exp: u64,
        now: u64,
    ) -> Result<(), ClientAuthError> {
        let mut seen = self.seen.lock().expect("jti lock");
        let key = (client.to_string(), jti.to_string());
        if seen.get(&key).is_some_and(|until| *until >= now) {
            return Err(ClientAuthError::Replayed);
        }
        if seen.len() >= MAX_REMEMBERED_JTI {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= MAX_REMEMBERED_JTI {
                return Err(ClientAuthError::Busy);
            }
        }
        seen.insert(key, exp + LEEWAY_SECONDS);
        Ok(())
    }
}

fn client(event: ClientRegistered) -> Option<Client> {
    // Checked when registered; an event that does not parse (written by hand) counts as none.
    let keys = match parse_jwks(&event.jwks_json) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(client = %event.client_id, error = e, "client event ignored: bad jwks");
            return None;
        }
    };
    Some(Client {
        id: event.client_id,
        organization_id: event.organization_id,
        scopes: event.scopes,
        active: event.active,
        keys,
    })
}

impl crate::kafka::Replica for Clients {
    type Event = ClientRegistered;
    type State = HashMap<String, Client>;

    fn apply_to(state: &mut Self::State, event: ClientRegistered, _offset: i64) {
        if let Some(client) = client(event) {
            state.insert(client.id.clone(), client);
        }
    }

    fn install(&self, state: Self::State) {
        *self.by_id.write().expect("clients lock") = state;
        self.caught_up.store(true, Ordering::Release);
    }

    fn apply(&self, event: ClientRegistered, _offset: i64) {
        Clients::apply(self, event);
    }
}

/// The access tokens this process issues: JWTs (HS256) under a key made at start, so they are
/// good on this instance only and never outlive it; `ACCESS_TOKEN_SECONDS` long.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// What an access token says: which client, of which organization, with which scopes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub org: String,
    pub scope: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
}

/// The `iss` of the access tokens: tells them apart from user tokens at a glance.
const ACCESS_ISSUER: &str = "urn:hie:query-api:oauth";

impl AccessTokens {
    pub fn new() -> Self {
        // 3 × 122 random bits of UUIDv4 (the OS's generator): the HS256 key of this process.
        let key: Vec<u8> = (0..3)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        AccessTokens {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
        }
    }

    /// A token for `client` with the `scope` granted (space-separated).
    pub fn issue(&self, client: &Client, scope: &str) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = AccessClaims {
            iss: ACCESS_ISSUER.into(),
            sub: client.id.clone(),
            org: client.organization_id.clone(),
            scope: scope.into(),
            exp: now + ACCESS_TOKEN_SECONDS,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail")
    }

    /// The claims of a token this process issued and that has not expired; `None` for any
    /// other token (a user's JWT among them).
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ACCESS_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

impl Default for AccessTokens {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_refused_twice_until_it_expires() {
        let c = Clients::default();
        c.remember_jti("a", "j1", 1_000, 900).unwrap();
        assert_eq!(
            c.remember_jti("a", "j1", 1_000, 950),
            Err(ClientAuthError::Replayed)
        );
        // Another client's jti is its own.
        c.remember_jti("b", "j1", 1_000, 950).unwrap();
        // Long after exp (and the skew) it is forgotten.
        c.remember_jti("a", "j1", 2_000, 1_100).unwrap();
    }

    #[test]
    fn access_tokens_are_this_process_own() {
        let tokens = AccessTokens::new();
        let client = Client {
            id: "ehr-1".into(),
            organization_id: "org-1".into(),
            scopes: vec!["system/*.rs".into()],
            active: true,
            keys: JwkSet { keys: vec![] },
        };
        let t = tokens.issue(&client, "system/Observation.rs");
        let claims = tokens.verify(&t).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.org.as_str()),
            ("ehr-1", "org-1")
        );
        assert!(AccessTokens::new().verify(&t).is_none());
        let user = crate::auth::sign_hs256(&claims, b"another secret of at least 32 bytes!");
        assert!(tokens.verify(&user).is_none());
    }

    #[test]
    fn jwks_must_hold_rs384_or_es384_keys() {
        assert!(parse_jwks("{}").is_err());
        assert!(parse_jwks(r#"{"keys": []}"#).is_err());
        assert!(parse_jwks(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
        let ec = r#"{"keys": [{"kty": "EC", "crv": "P-384", "kid": "k1",
            "x": "fu2B5LAiHKMg4mrWpCWPeMrUlj8g2_X-L1PkEOUJyONpd4A8sOgA6WuXnVMzOxbE",
            "y": "vfKiz2FeF8F07m5ocazfXjgvBxlz8BuMpQLHgxdmBYuJTCMmv-zKSeIDl0cCeJgH"}]}"#;
        let set = parse_jwks(ec);
        assert!(set.is_ok(), "{set:?}");
    }
}
