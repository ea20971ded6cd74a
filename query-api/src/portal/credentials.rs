//! Portal passwords. Hashes are Argon2id (PHC strings) and live in one PostgreSQL table the query
//! API owns, `portal_credentials` — the one credential store outside the log: the log is
//! append-only and kept forever, so it carries only what happened (`CredentialRecorded` on
//! `hie.credentials`: "password set at T by U"), never a hash. Changing a password overwrites the
//! row; the last `REMEMBERED` hashes stay in it only to refuse their reuse. Reset links are stored
//! as SHA-256 digests, single use, for `RESET_TTL`.

use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// How many earlier hashes a new password is checked against.
pub const REMEMBERED: usize = 5;
/// How long a temporary password is good for, unused.
pub const TEMPORARY_TTL: Duration = Duration::from_secs(72 * 3600);
/// How long a reset link is good for.
pub const RESET_TTL: Duration = Duration::from_secs(3600);
/// Failures before the first delay.
const FREE_FAILURES: i32 = 3;
/// The first delay, doubled with each further failure, up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_secs(15);
const MAX_DELAY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("credential store: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("credential store: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("hashing failed")]
    Hash,
}

pub struct Credential {
    pub hash: String,
    pub temporary: bool,
    pub expires_at: Option<SystemTime>,
    pub previous: Vec<String>,
    pub failures: i32,
    pub locked_until: Option<SystemTime>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portal_credentials (
    user_id text PRIMARY KEY,
    hash text NOT NULL,
    temporary boolean NOT NULL,
    expires_at timestamptz,
    previous text[] NOT NULL DEFAULT '{}',
    failures integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    set_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS portal_resets (
    token_sha256 bytea PRIMARY KEY,
    user_id text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);";

/// The credential store (SQL for the portal's own tables lives here, nowhere else).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    ready: std::sync::Arc<OnceCell<()>>,
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Store {
            pool,
            ready: Default::default(),
        }
    }

    /// A client, once the tables exist (created on first use: the query API starts even while
    /// PostgreSQL is down).
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.pool.get().await?;
        self.ready
            .get_or_try_init(|| async {
                // Two instances starting together may race on CREATE TABLE: serialize them.
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock(7427001); {SCHEMA} COMMIT;"
                    ))
                    .await
            })
            .await?;
        Ok(client)
    }

    pub async fn get(&self, user_id: &str) -> Result<Option<Credential>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT hash, temporary, expires_at, previous, failures, locked_until
                 FROM portal_credentials WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        Ok(row.map(|r| Credential {
            hash: r.get(0),
            temporary: r.get(1),
            expires_at: r.get(2),
            previous: r.get(3),
            failures: r.get(4),
            locked_until: r.get(5),
        }))
    }

    /// Store a new hash; the one it replaces joins the remembered ones (a temporary one does not).
    pub async fn set(
        &self,
        user_id: &str,
        hash: &str,
        temporary: bool,
        expires_at: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let mut previous = Vec::new();
        if let Some(old) = self.get(user_id).await? {
            if !old.temporary {
                previous.push(old.hash);
            }
            previous.extend(old.previous);
        }
        previous.truncate(REMEMBERED);
        client
            .execute(
                "INSERT INTO portal_credentials (user_id, hash, temporary, expires_at, previous, failures, locked_until, set_at)
                 VALUES ($1, $2, $3, $4, $5, 0, NULL, now())
                 ON CONFLICT (user_id) DO UPDATE SET hash = $2, temporary = $3, expires_at = $4,
                     previous = $5, failures = 0, locked_until = NULL, set_at = now()",
                &[&user_id, &hash, &temporary, &expires_at, &previous],
            )
            .await?;
        Ok(())
    }

    /// Count a failed sign-in; returns the failures so far and the delay now imposed.
    pub async fn failed(&self, user_id: &str) -> Result<(i32, Duration), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE portal_credentials SET failures = failures + 1 WHERE user_id = $1 RETURNING failures",
                &[&user_id],
            )
            .await?;
        let Some(failures) = row.map(|r| r.get::<_, i32>(0)) else {
            return Ok((0, Duration::ZERO));
        };
        let delay = delay_after(failures);
        if !delay.is_zero() {
            let until = SystemTime::now() + delay;
            client
                .execute(
                    "UPDATE portal_credentials SET locked_until = $2 WHERE user_id = $1",
                    &[&user_id, &until],
                )
                .await?;
        }
        Ok((failures, delay))
    }

    pub async fn succeeded(&self, user_id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE portal_credentials SET failures = 0, locked_until = NULL WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        Ok(())
    }

    /// A new reset link's token (only its digest is stored).
    pub async fn new_reset(&self, user_id: &str) -> Result<String, StoreError> {
        let client = self.client().await?;
        let token = super::session::random_token(32);
        let expires = SystemTime::now() + RESET_TTL;
        client
            .execute(
                "INSERT INTO portal_resets (token_sha256, user_id, expires_at) VALUES ($1, $2, $3)",
                &[&digest(&token), &user_id, &expires],
            )
            .await?;
        Ok(token)
    }

    /// The account a reset token is for, while unused and unexpired.
    pub async fn reset_user(&self, token: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT user_id FROM portal_resets WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > now()",
                &[&digest(token)],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// Use a reset token up; false when it was already used (or expired) meanwhile.
    pub async fn use_reset(&self, token: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE portal_resets SET used_at = now() WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > now()",
                &[&digest(token)],
            )
            .await?
            == 1)
    }
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The delay after `failures` consecutive failures: none for the first few, then doubling.
pub fn delay_after(failures: i32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(16) as u32;
    (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

/// Argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1: OWASP's minimum), off the
/// async threads.
pub async fn hash(password: String) -> Result<String, StoreError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(super::session::random_token(16).as_bytes())
            .map_err(|_| StoreError::Hash)?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| StoreError::Hash)
    })
    .await
    .map_err(|_| StoreError::Hash)?
}

/// Whether `password` matches any of `hashes`.
pub async fn verify(password: String, hashes: Vec<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        hashes.iter().any(|h| {
            PasswordHash::new(h).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash of a random password nobody knows, verified for unknown usernames so that they take as
/// long as known ones.
pub fn decoy_hash() -> String {
    static DECOY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let salt = SaltString::encode_b64(super::session::random_token(16).as_bytes())
            .expect("a salt of 22 characters");
        Argon2::default()
            .hash_password(super::session::random_token(32).as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    });
    DECOY.clone()
}

/// The password policy: 12+ characters, neither holding the username nor the e-mail address
/// (nor its local part). Reuse of a remembered password is checked against the hashes.
pub fn policy(password: &str, username: &str, email: &str) -> Result<(), &'static str> {
    if password.chars().count() < 12 {
        return Err("The new password must be at least 12 characters long.");
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if lower.contains(&username.to_lowercase())
        || lower.contains(&email.to_lowercase())
        || (local.len() >= 3 && lower.contains(&local))
    {
        return Err("The new password must not contain your username or e-mail address.");
    }
    Ok(())
}

/// A temporary password: 16 characters from an alphabet without look-alikes (~90 bits).
pub fn temporary_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_refuses_short_passwords_and_the_username_or_email() {
        assert!(policy("short", "dr-rivera", "dr.rivera@mercy.example").is_err());
        assert!(policy("my dr-rivera password", "dr-rivera", "x@y.example").is_err());
        assert!(policy("DR.RIVERA is my name", "u1", "dr.rivera@mercy.example").is_err());
        assert!(policy(
            "correct horse battery",
            "dr-rivera",
            "dr.rivera@mercy.example"
        )
        .is_ok());
    }

    #[test]
    fn delays_grow_after_a_few_failures_and_stop_growing() {
        assert_eq!(delay_after(1), Duration::ZERO);
        assert_eq!(delay_after(2), Duration::ZERO);
        assert_eq!(delay_after(3), Duration::from_secs(15));
        assert_eq!(delay_after(4), Duration::from_secs(30));
        assert_eq!(delay_after(5), Duration::from_secs(60));
        assert_eq!(delay_after(40), MAX_DELAY);
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify_only_their_password() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery".into(), vec![h.clone()]).await);
        assert!(!verify("wrong horse battery".into(), vec![h]).await);
        assert!(decoy_hash().starts_with("$argon2id$"));
        assert!(!verify("anything".into(), vec![decoy_hash()]).await);
        assert_eq!(temporary_password().len(), 16);
    }
}
