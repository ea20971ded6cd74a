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
    /// This projector's share of the partitions when several run: `(index, count)`; it owns
    /// partition `p` of every topic when `p % count == index`.
    pub instance: (i32, i32),
    /// Most events applied in one PostgreSQL transaction.
    pub batch_max: usize,
    /// How long a batch waits for more events once it has one.
    pub batch_wait: Duration,
    /// Longest the broker may hold a fetch that has no data. Apache Kafka answers as soon as data
    /// arrives; Tansu 0.6 waits the whole time, so this bounds freshness on the dev broker.
    pub fetch_wait: Duration,
    /// `/healthz` answers 503 once events have waited this long without a batch being applied.
    pub stall: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("database_url", &platform::redact_url(&self.database_url))
            .field("group_id", &self.group_id)
            .field(
                "instance",
                &format!("{}/{}", self.instance.0, self.instance.1),
            )
            .field("batch_max", &self.batch_max)
            .field("batch_wait", &self.batch_wait)
            .field("fetch_wait", &self.fetch_wait)
            .field("stall", &self.stall)
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
            instance: parse_instance(&env_or("PROJECTOR_INSTANCE", "0/1"))?,
            batch_max: parse("PROJECTOR_BATCH_MAX", "500")?,
            batch_wait: Duration::from_millis(parse("PROJECTOR_BATCH_WAIT_MS", "5")?),
            fetch_wait: Duration::from_millis(parse("PROJECTOR_FETCH_WAIT_MS", "10")?),
            stall: Duration::from_secs(parse("PROJECTOR_STALL_SECONDS", "30")?),
        })
    }
}

impl Config {
    pub fn owns(&self, partition: i32) -> bool {
        partition % self.instance.1 == self.instance.0
    }
}

/// `"i/n"`: instance `i` (from 0) of `n`.
fn parse_instance(raw: &str) -> Result<(i32, i32), ConfigError> {
    let bad = || {
        ConfigError(
            "PROJECTOR_INSTANCE",
            format!("{raw:?} is not i/n with 0 <= i < n"),
        )
    };
    let (i, n) = raw.split_once('/').ok_or_else(bad)?;
    let (i, n): (i32, i32) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n < 1 || i < 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

fn parse<T: std::str::FromStr>(name: &'static str, default: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    env_or(name, default)
        .parse()
        .map_err(|e: T::Err| ConfigError(name, e.to_string()))
}
