use std::net::SocketAddr;
use std::time::Duration;

use platform::env_or;

/// Everything the projector is told at start; `Debug` prints it (the database URL without its
/// password).
#[derive(Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub kafka_brokers: String,
    pub database_url: String,
    pub group_id: String,
    /// Most events applied in one PostgreSQL transaction.
    pub batch_max: usize,
    /// How long a batch waits for more events once it has one.
    pub batch_wait: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("database_url", &platform::redact_url(&self.database_url))
            .field("group_id", &self.group_id)
            .field("batch_max", &self.batch_max)
            .field("batch_wait", &self.batch_wait)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} is not valid: {1}")]
pub struct ConfigError(&'static str, String);

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Config {
            http_addr: parse("PROJECTOR_HTTP_ADDR", "127.0.0.1:9102")?,
            kafka_brokers: env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            database_url: env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hie"),
            group_id: env_or("PROJECTOR_GROUP_ID", "hie-projector"),
            batch_max: parse("PROJECTOR_BATCH_MAX", "500")?,
            batch_wait: Duration::from_millis(parse("PROJECTOR_BATCH_WAIT_MS", "5")?),
        })
    }
}

fn parse<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    env_or(name, default).parse().map_err(|e: T::Err| ConfigError(name, e.to_string()))
}
