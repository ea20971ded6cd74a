use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use platform::auth::{JwtKey, JwtKeyError};

pub use crate::limits::Limits;

/// Everything ingest is told at start; `Debug` prints it without secrets.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub kafka_brokers: String,
    /// How user tokens (admins, users recording consent) are verified.
    pub jwt: JwtKey,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// How long a record may wait for the broker's acknowledgement before the request fails.
    pub delivery_timeout: Duration,
    /// HL7 v2 over MLLP (`INGEST_MLLP_ADDR`); `off` disables it.
    pub mllp_addr: Option<SocketAddr>,
    /// The drop folder (`DROP_DIR`, else `$HIE_DATA_DIR/drop`); neither set disables it.
    pub drop_dir: Option<PathBuf>,
    /// A user id whose admin tokens are honoured without an account (`HIE_BOOTSTRAP_ADMIN`).
    pub bootstrap_admin: Option<String>,
    /// The HIE operator's organization (`HIE_OPERATOR_ORG`, default `hie`): only its admins (and
    /// the bootstrap admin) register sources or record consent for another organization.
    pub operator_org: String,
    /// Bounds on what a sender controls: MLLP frames, connections and idle time, HTTP time.
    pub limits: Limits,
    /// TLS for HTTP and MLLP (`INGEST_TLS_CERT`, `INGEST_TLS_KEY`): required on a listener beyond
    /// loopback. Over TLS, an MLLP sender is known by its client certificate, pinned per source.
    pub tls: Option<platform::tls::TlsFiles>,
    /// Admission (`INGEST_MAX_VIEWS_LAG`, 20000; 0 disables): new records are refused (503 +
    /// Retry-After, MLLP AR 207) while the projector's group (`INGEST_VIEWS_GROUP`,
    /// `hie-projector`) is more than this many events behind on `hie.records`.
    pub max_views_lag: i64,
    pub views_group: String,
    /// Where resources too large for an event are kept before it is published (`HIE_BLOB_STORE`,
    /// else the database at `DATABASE_URL`): the claim-check path, `platform::blobs`.
    pub blob_store: platform::blobs::BlobLocation,
    /// A resource whose JSON is larger than this travels as a claim check
    /// (`INGEST_CLAIM_CHECK_BYTES`, 262144): kept in the blob store, named in its event by SHA-256.
    pub claim_check_bytes: usize,
}

/// The database the blob store defaults to, as the projector's `DATABASE_URL` defaults.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/hie";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Env(#[from] platform::config::EnvError),
    #[error(transparent)]
    Jwt(#[from] JwtKeyError),
    #[error(transparent)]
    Tls(#[from] platform::tls::TlsError),
}

/// The certificate and key (PEM) of ingest's HTTP and MLLP listeners.
const TLS_VARS: (&str, &str) = ("INGEST_TLS_CERT", "INGEST_TLS_KEY");

/// The variables ingest reads (`platform::config`), with their defaults.
#[derive(serde::Deserialize)]
#[serde(default)]
struct Env {
    ingest_http_addr: String,
    kafka_brokers: String,
    ingest_max_body_bytes: usize,
    ingest_delivery_timeout_ms: u64,
    /// `off` disables MLLP.
    ingest_mllp_addr: String,
    drop_dir: Option<PathBuf>,
    hie_data_dir: Option<PathBuf>,
    hie_bootstrap_admin: Option<String>,
    hie_operator_org: String,
    ingest_mllp_max_frame_bytes: usize,
    ingest_mllp_idle_seconds: u64,
    ingest_mllp_max_connections: usize,
    ingest_http_request_timeout_seconds: u64,
    ingest_http_max_concurrent_requests: usize,
    ingest_max_views_lag: i64,
    ingest_views_group: String,
    database_url: String,
    hie_blob_store: Option<String>,
    ingest_claim_check_bytes: usize,
}

impl Default for Env {
    fn default() -> Self {
        let limits = Limits::default();
        Env {
            ingest_http_addr: "127.0.0.1:8081".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            ingest_max_body_bytes: 64 * 1024 * 1024,
            ingest_delivery_timeout_ms: 5000,
            ingest_mllp_addr: "127.0.0.1:2575".into(),
            drop_dir: None,
            hie_data_dir: None,
            hie_bootstrap_admin: None,
            hie_operator_org: "hie".into(),
            ingest_mllp_max_frame_bytes: limits.mllp_max_frame_bytes,
            ingest_mllp_idle_seconds: limits.mllp_idle.as_secs(),
            ingest_mllp_max_connections: limits.mllp_max_connections,
            ingest_http_request_timeout_seconds: limits.http_request_timeout.as_secs(),
            ingest_http_max_concurrent_requests: limits.http_max_concurrent_requests,
            ingest_max_views_lag: 20_000,
            ingest_views_group: "hie-projector".into(),
            database_url: DEFAULT_DATABASE_URL.into(),
            hie_blob_store: None,
            ingest_claim_check_bytes: 256 * 1024,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        use platform::config::{addr, at_least_one};
        let env: Env = platform::config::from_env()?;
        let http_addr = addr("INGEST_HTTP_ADDR", &env.ingest_http_addr)?;
        let mllp_addr = match env.ingest_mllp_addr.trim() {
            "off" => None,
            raw => Some(addr("INGEST_MLLP_ADDR", raw)?),
        };
        let tls = platform::tls::TlsFiles::from_env(TLS_VARS.0, TLS_VARS.1)?;
        platform::tls::require_beyond_loopback(
            "ingest's HTTP",
            TLS_VARS,
            http_addr,
            tls.is_some(),
        )?;
        if let Some(addr) = mllp_addr {
            platform::tls::require_beyond_loopback("ingest's MLLP", TLS_VARS, addr, tls.is_some())?;
        }
        let limits = Limits {
            mllp_max_frame_bytes: at_least_one(
                "INGEST_MLLP_MAX_FRAME_BYTES",
                env.ingest_mllp_max_frame_bytes,
            )?,
            mllp_idle: Duration::from_secs(at_least_one(
                "INGEST_MLLP_IDLE_SECONDS",
                env.ingest_mllp_idle_seconds as usize,
            )? as u64),
            mllp_max_connections: at_least_one(
                "INGEST_MLLP_MAX_CONNECTIONS",
                env.ingest_mllp_max_connections,
            )?,
            http_request_timeout: Duration::from_secs(at_least_one(
                "INGEST_HTTP_REQUEST_TIMEOUT_SECONDS",
                env.ingest_http_request_timeout_seconds as usize,
            )? as u64),
            http_max_concurrent_requests: at_least_one(
                "INGEST_HTTP_MAX_CONCURRENT_REQUESTS",
                env.ingest_http_max_concurrent_requests,
            )?,
        };
        Ok(Config {
            http_addr,
            tls,
            kafka_brokers: env.kafka_brokers,
            jwt: JwtKey::from_env()?,
            max_body_bytes: env.ingest_max_body_bytes,
            delivery_timeout: Duration::from_millis(env.ingest_delivery_timeout_ms),
            mllp_addr,
            // The drop folder: DROP_DIR, else $HIE_DATA_DIR/drop; neither set disables it.
            drop_dir: env.drop_dir.or(env.hie_data_dir.map(|d| d.join("drop"))),
            bootstrap_admin: env.hie_bootstrap_admin.map(|s| s.trim().to_string()),
            operator_org: env.hie_operator_org.trim().to_string(),
            limits,
            max_views_lag: env.ingest_max_views_lag.max(0),
            views_group: env.ingest_views_group,
            blob_store: platform::blobs::BlobLocation::parse(
                env.hie_blob_store.as_deref(),
                &env.database_url,
            )?,
            claim_check_bytes: at_least_one(
                "INGEST_CLAIM_CHECK_BYTES",
                env.ingest_claim_check_bytes,
            )?,
        })
    }
}
