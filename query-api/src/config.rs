use std::net::SocketAddr;
use std::time::Duration;

use platform::env_or;

pub use platform::auth::JwtKey;

#[derive(Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub jwt: JwtKey,
    /// Longest a read with `X-Min-Position` waits for the views to catch up.
    pub min_position_timeout: Duration,
    /// Where audit and Break-the-Glass events go.
    pub kafka_brokers: String,
    /// How long an audit event may wait for the broker before the read is refused (503).
    pub audit_timeout: Duration,
    /// How long a Break-the-Glass grant lasts (DOMAIN.md: configurable, default 24 h).
    pub break_glass_ttl: Duration,
    /// A user id whose admin tokens are honoured without an account, to create the first
    /// accounts (`HIE_BOOTSTRAP_ADMIN`); none by default.
    pub bootstrap_admin: Option<String>,
    /// The HIE operator's organization (`HIE_OPERATOR_ORG`, default `hie`): its admins manage
    /// every organization's accounts, reports and access logs; other admins their own only.
    pub operator_org: String,
    /// TLS for the HTTP listener (`QUERY_TLS_CERT`, `QUERY_TLS_KEY`): required beyond loopback.
    pub tls: Option<platform::tls::TlsFiles>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jwt = self.jwt.describe();
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("database_url", &platform::redact_url(&self.database_url))
            .field("jwt", &jwt)
            .field("min_position_timeout", &self.min_position_timeout)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("audit_timeout", &self.audit_timeout)
            .field("break_glass_ttl", &self.break_glass_ttl)
            .field("bootstrap_admin", &self.bootstrap_admin)
            .field("operator_org", &self.operator_org)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not valid: {1}")]
    Invalid(&'static str, String),
    #[error("set HIE_JWT_SECRET (HS256) or HIE_JWT_PUBLIC_KEY_FILE (RS256)")]
    NoJwtKey,
    #[error(transparent)]
    Jwt(platform::auth::JwtKeyError),
    #[error(transparent)]
    Tls(#[from] platform::tls::TlsError),
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let jwt = JwtKey::from_env().map_err(|e| match e {
            platform::auth::JwtKeyError::NotSet => ConfigError::NoJwtKey,
            other => ConfigError::Jwt(other),
        })?;
        let http_addr: SocketAddr = env_or("QUERY_HTTP_ADDR", "127.0.0.1:8080")
            .parse()
            .map_err(|e: std::net::AddrParseError| {
                ConfigError::Invalid("QUERY_HTTP_ADDR", e.to_string())
            })?;
        let tls = platform::tls::TlsFiles::from_env("QUERY")?;
        platform::tls::require_beyond_loopback("the query API", "QUERY", http_addr, tls.is_some())?;
        Ok(Config {
            http_addr,
            tls,
            database_url: env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hie"),
            jwt,
            min_position_timeout: Duration::from_secs(5),
            kafka_brokers: env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            audit_timeout: Duration::from_millis(seconds("QUERY_AUDIT_TIMEOUT_MS", "5000")?),
            break_glass_ttl: Duration::from_secs(seconds("BREAK_GLASS_TTL_SECONDS", "86400")?),
            bootstrap_admin: Some(env_or("HIE_BOOTSTRAP_ADMIN", "")).filter(|s| !s.is_empty()),
            operator_org: env_or("HIE_OPERATOR_ORG", "hie").trim().to_string(),
        })
    }
}

fn seconds(name: &'static str, default: &str) -> Result<u64, ConfigError> {
    env_or(name, default)
        .parse()
        .map_err(|e: std::num::ParseIntError| ConfigError::Invalid(name, e.to_string()))
}
