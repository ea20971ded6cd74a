//! The blob store: the claim-check path for resources too large to travel in an event. Ingest
//! keeps such a resource's JSON here, addressed by its SHA-256, before it publishes the event that
//! names it (`schemas::BlobReference`); the projector reads it back when it applies the event. The
//! log stays the source of truth only together with this store: it is written before the log,
//! never updated, never deleted, and a replay reads the same bytes at the same addresses.
//!
//! `HIE_BLOB_STORE` says where it is (`BlobLocation`), for ingest and the projector alike: a
//! PostgreSQL database (table `blobs`, created by whichever process first needs it), by default
//! the one at `DATABASE_URL`. Object storage (`s3://bucket/prefix`) is the production seam: an
//! implementation of `BlobStore` keeping `<prefix>/<sha256>` objects (PUT if absent, GET); not built
//! yet, so such a location is refused at start rather than failing on the first large record.

use std::sync::Arc;

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("blob store: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("blob store: {0}")]
    Setup(String),
}

/// Content-addressed bytes, written once. Implementations: `PostgresBlobs`; an S3 one would keep
/// an object per address (see the module's documentation).
pub trait BlobStore: Send + Sync {
    /// Keep `bytes` under `sha256` (their address, `address(bytes)`) unless already kept; returns
    /// once they are durable, `true` when this call stored them.
    fn put<'a>(
        &'a self,
        sha256: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, BlobError>>;
    /// The bytes kept under `sha256`, `None` when there are none.
    fn get<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BlobError>>;
}

/// A blob's address: the lowercase hex SHA-256 of its bytes.
pub fn address(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the blob store is (`HIE_BLOB_STORE`).
#[derive(Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// Table `blobs` of this PostgreSQL database.
    Postgres(String),
    /// Objects `<prefix>/<sha256>` in an S3 bucket: the production seam, not built yet.
    S3 { bucket: String, prefix: String },
}

impl std::fmt::Debug for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobLocation::Postgres(url) => write!(f, "Postgres({})", crate::redact_url(url)),
            BlobLocation::S3 { bucket, prefix } => write!(f, "S3(s3://{bucket}/{prefix})"),
        }
    }
}

impl BlobLocation {
    /// `HIE_BLOB_STORE`'s value: unset or empty is `database_url`'s database; `postgres://…` (or
    /// `postgresql://…`) another database; `s3://bucket[/prefix]` a bucket.
    pub fn parse(raw: Option<&str>, database_url: &str) -> Result<Self, crate::config::EnvError> {
        let raw = raw.map(str::trim).unwrap_or_default();
        if raw.is_empty() {
            return Ok(BlobLocation::Postgres(database_url.to_string()));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(BlobLocation::Postgres(raw.to_string()));
        }
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(crate::config::EnvError::invalid(
                    "HIE_BLOB_STORE",
                    "s3:// needs a bucket: s3://bucket[/prefix]",
                ));
            }
            return Ok(BlobLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_end_matches('/').to_string(),
            });
        }
        Err(crate::config::EnvError::invalid(
            "HIE_BLOB_STORE",
            "not a postgres:// or s3:// URL",
        ))
    }

    /// The store at this location (connections are made on first use).
    pub fn open(&self) -> Result<Arc<dyn BlobStore>, BlobError> {
        match self {
            BlobLocation::Postgres(url) => {
                let pool =
                    crate::postgres::pool(url, 4).map_err(|e| BlobError::Setup(e.to_string()))?;
                Ok(Arc::new(PostgresBlobs::new(pool)))
            }
            BlobLocation::S3 { .. } => Err(BlobError::Setup(
                "HIE_BLOB_STORE: object storage (s3://) is not built in this version; use a postgres:// URL".into(),
            )),
        }
    }
}

/// The blob store's one table. Not a view (a replay does not rebuild it), hence not among the
/// projector's migrations: it lives wherever `HIE_BLOB_STORE` says, possibly beside the views.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size bigint NOT NULL,
    bytes bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// Serializes the first use by several processes (CREATE TABLE IF NOT EXISTS races otherwise).
const SCHEMA_LOCK: i64 = 7_311_004;

/// Table `blobs` in a PostgreSQL database, created on first use (a process starts even while the
/// database is away; the first large record then waits for it, or is refused with 503).
pub struct PostgresBlobs {
    pool: Pool,
    ready: OnceCell<()>,
}

impl PostgresBlobs {
    pub fn new(pool: Pool) -> Self {
        PostgresBlobs {
            pool,
            ready: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, BlobError> {
        let mut client = self.pool.get().await?;
        self.ready
            .get_or_try_init(|| async {
                let tx = client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                    .await?;
                tx.batch_execute(SCHEMA).await?;
                tx.commit().await?;
                Ok::<_, BlobError>(())
            })
            .await?;
        Ok(client)
    }
}

impl BlobStore for PostgresBlobs {
    fn put<'a>(
        &'a self,
        sha256: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, BlobError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO blobs (sha256, size, bytes) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
                )
                .await?;
            let inserted = client
                .execute(&statement, &[&sha256, &(bytes.len() as i64), &bytes])
                .await?;
            Ok(inserted == 1)
        })
    }

    fn get<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, BlobError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT bytes FROM blobs WHERE sha256 = $1")
                .await?;
            Ok(client
                .query_opt(&statement, &[&sha256])
                .await?
                .map(|row| row.get(0)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_the_hex_sha256() {
        assert_eq!(
            address(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn locations() {
        let db = "postgres://u:pw@h/hie";
        assert_eq!(
            BlobLocation::parse(None, db).unwrap(),
            BlobLocation::Postgres(db.into())
        );
        assert_eq!(
            BlobLocation::parse(Some("  "), db).unwrap(),
            BlobLocation::Postgres(db.into())
        );
        assert_eq!(
            BlobLocation::parse(Some("postgresql://h/blobs"), db).unwrap(),
            BlobLocation::Postgres("postgresql://h/blobs".into())
        );
        assert_eq!(
            BlobLocation::parse(Some("s3://bucket/hie/blobs/"), db).unwrap(),
            BlobLocation::S3 {
                bucket: "bucket".into(),
                prefix: "hie/blobs".into()
            }
        );
        assert!(BlobLocation::parse(Some("s3://"), db).is_err());
        assert!(BlobLocation::parse(Some("/var/blobs"), db).is_err());
        // Printed at start: never the password.
        let shown = format!("{:?}", BlobLocation::parse(None, db).unwrap());
        assert!(!shown.contains("pw"), "{shown}");
        assert!(BlobLocation::S3 {
            bucket: "b".into(),
            prefix: String::new()
        }
        .open()
        .is_err());
    }
}
