use std::net::SocketAddr;
use std::time::Duration;

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
    /// The clinician portal (`/portal/`): idle timeout, e-mail.
    pub portal: crate::portal::PortalConfig,
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
            .field("portal", &self.portal)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Env(#[from] platform::config::EnvError),
    #[error("set HIE_JWT_SECRET (HS256) or HIE_JWT_PUBLIC_KEY_FILE (RS256)")]
    NoJwtKey,
    #[error(transparent)]
    Jwt(platform::auth::JwtKeyError),
    #[error(transparent)]
    Tls(#[from] platform::tls::TlsError),
}

/// The variables the query API reads (`platform::config`), with their defaults.
#[derive(serde::Deserialize)]
#[serde(default)]
struct Env {
    query_http_addr: String,
    database_url: String,
    kafka_brokers: String,
    query_audit_timeout_ms: u64,
    break_glass_ttl_seconds: u64,
    hie_bootstrap_admin: Option<String>,
    hie_operator_org: String,
    query_portal_idle_seconds: u64,
    query_portal_outbox: String,
    query_portal_url: Option<String>,
    query_smtp_url: Option<String>,
    query_mail_from: Option<String>,
    query_portal_database_url: Option<String>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            query_http_addr: "127.0.0.1:8080".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/hie".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            query_audit_timeout_ms: 5000,
            break_glass_ttl_seconds: 86_400,
            hie_bootstrap_admin: None,
            hie_operator_org: "hie".into(),
            query_portal_idle_seconds: 15 * 60,
            query_portal_outbox: "outbox".into(),
            query_portal_url: None,
            query_smtp_url: None,
            query_mail_from: None,
            query_portal_database_url: None,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let jwt = JwtKey::from_env().map_err(|e| match e {
            platform::auth::JwtKeyError::NotSet => ConfigError::NoJwtKey,
            other => ConfigError::Jwt(other),
        })?;
        let env: Env = platform::config::from_env()?;
        let http_addr = platform::config::addr("QUERY_HTTP_ADDR", &env.query_http_addr)?;
        let tls = platform::tls::TlsFiles::from_env("QUERY_TLS_CERT", "QUERY_TLS_KEY")?;
        platform::tls::require_beyond_loopback(
            "the query API",
            ("QUERY_TLS_CERT", "QUERY_TLS_KEY"),
            http_addr,
            tls.is_some(),
        )?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let defaults = crate::portal::PortalConfig::default();
        let portal = crate::portal::PortalConfig {
            idle_timeout: Duration::from_secs(env.query_portal_idle_seconds),
            outbox: env.query_portal_outbox.into(),
            smtp_url: env.query_smtp_url.map(platform::Secret::new),
            mail_from: env.query_mail_from.unwrap_or(defaults.mail_from),
            database_url: env.query_portal_database_url.map(platform::Secret::new),
            // Links in e-mail must end with a slash: paths are appended to it.
            public_url: env
                .query_portal_url
                .map(|u| format!("{}/", u.trim_end_matches('/')))
                .unwrap_or_else(|| format!("{scheme}://{http_addr}/portal/")),
        };
        Ok(Config {
            portal,
            http_addr,
            tls,
            database_url: env.database_url,
            jwt,
            min_position_timeout: Duration::from_secs(5),
            kafka_brokers: env.kafka_brokers,
            audit_timeout: Duration::from_millis(env.query_audit_timeout_ms),
            break_glass_ttl: Duration::from_secs(env.break_glass_ttl_seconds),
            bootstrap_admin: env.hie_bootstrap_admin.map(|s| s.trim().to_string()),
            operator_org: env.hie_operator_org.trim().to_string(),
        })
    }
}
