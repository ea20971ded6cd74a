use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use platform::auth::{JwtKey, JwtKeyError};
use platform::env_or;

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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not valid: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Jwt(#[from] JwtKeyError),
    #[error(transparent)]
    Tls(#[from] platform::tls::TlsError),
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let http_addr = parse("INGEST_HTTP_ADDR", "127.0.0.1:8081")?;
        let mllp_addr = match env_or("INGEST_MLLP_ADDR", "127.0.0.1:2575").as_str() {
            "off" | "" => None,
            _ => Some(parse("INGEST_MLLP_ADDR", "127.0.0.1:2575")?),
        };
        let tls = platform::tls::TlsFiles::from_env("INGEST")?;
        platform::tls::require_beyond_loopback(
            "ingest's HTTP",
            "INGEST",
            http_addr,
            tls.is_some(),
        )?;
        if let Some(addr) = mllp_addr {
            platform::tls::require_beyond_loopback("ingest's MLLP", "INGEST", addr, tls.is_some())?;
        }
        Ok(Config {
            http_addr,
            tls,
            kafka_brokers: env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            jwt: JwtKey::from_env()?,
            max_body_bytes: parse("INGEST_MAX_BODY_BYTES", "67108864")?,
            delivery_timeout: Duration::from_millis(parse("INGEST_DELIVERY_TIMEOUT_MS", "5000")?),
            mllp_addr,
            drop_dir: drop_dir(),
            bootstrap_admin: Some(env_or("HIE_BOOTSTRAP_ADMIN", "")).filter(|s| !s.is_empty()),
            operator_org: env_or("HIE_OPERATOR_ORG", "hie").trim().to_string(),
            limits: Limits::from_env()?,
        })
    }
}

fn drop_dir() -> Option<PathBuf> {
    let set = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    set("DROP_DIR")
        .map(PathBuf::from)
        .or_else(|| set("HIE_DATA_DIR").map(|d| PathBuf::from(d).join("drop")))
}

fn parse<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = env_or(name, default);
    raw.parse()
        .map_err(|e: T::Err| ConfigError::Invalid(name, e.to_string()))
}
