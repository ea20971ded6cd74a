use std::net::SocketAddr;
use std::time::Duration;

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
    /// Whether this projector runs the master patient index's matcher (`matching`); with several
    /// instances, one decides at a time whatever this says.
    pub matcher: bool,
    /// Where claim-checked resources are read from (`HIE_BLOB_STORE`, else the database at
    /// `DATABASE_URL`): the store ingest keeps them in. A rebuild into another database points it
    /// at the live store.
    pub blob_store: platform::blobs::BlobLocation,
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
            .field("matcher", &self.matcher)
            .field("blob_store", &self.blob_store)
            .finish()
    }
}

pub use platform::config::EnvError as ConfigError;

/// The variables the projector reads (`platform::config`), with their defaults.
#[derive(serde::Deserialize)]
#[serde(default)]
struct Env {
    projector_http_addr: String,
    kafka_brokers: String,
    database_url: String,
    projector_group_id: String,
    projector_instance: String,
    projector_batch_max: usize,
    projector_batch_wait_ms: u64,
    projector_fetch_wait_ms: u64,
    projector_stall_seconds: u64,
    projector_matcher: bool,
    hie_blob_store: Option<String>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            projector_http_addr: "127.0.0.1:9102".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/hie".into(),
            projector_group_id: "hie-projector".into(),
            projector_instance: "0/1".into(),
            projector_batch_max: 500,
            projector_batch_wait_ms: 5,
            projector_fetch_wait_ms: 10,
            projector_stall_seconds: 30,
            projector_matcher: true,
            hie_blob_store: None,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        use platform::config::{addr, at_least_one};
        let env: Env = platform::config::from_env()?;
        let blob_store =
            platform::blobs::BlobLocation::parse(env.hie_blob_store.as_deref(), &env.database_url)?;
        Ok(Config {
            blob_store,
            http_addr: addr("PROJECTOR_HTTP_ADDR", &env.projector_http_addr)?,
            kafka_brokers: env.kafka_brokers,
            database_url: env.database_url,
            group_id: env.projector_group_id,
            instance: parse_instance(&env.projector_instance)?,
            batch_max: at_least_one("PROJECTOR_BATCH_MAX", env.projector_batch_max)?,
            batch_wait: Duration::from_millis(env.projector_batch_wait_ms),
            fetch_wait: Duration::from_millis(env.projector_fetch_wait_ms),
            stall: Duration::from_secs(env.projector_stall_seconds),
            matcher: env.projector_matcher,
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
        ConfigError::invalid(
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
