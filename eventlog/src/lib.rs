//! The local stack's event log: a single-node broker speaking the Kafka protocol (the subset
//! librdkafka's producers, consumers and admin client use), storing each partition as one
//! append-only file of record batches, and acknowledging a produce only once it is on disk.
//!
//! Production runs Apache Kafka; this is what `deploy/local/up` and the tests run instead of a
//! cluster. What it guarantees, and what a Tansu 0.6 broker did not (issue 21): deleting a topic
//! deletes that topic only; a record is served however large it is (the first batch of a fetch is
//! sent whole, past the fetch's byte limit, as Kafka does); a producer's epoch bump (KIP-360) gets
//! the next epoch; a `kill -9` loses nothing that was acknowledged (fdatasync before the answer,
//! and consumers see only what is synced); a torn tail from a crash mid-write is cut at start.

pub mod batch;
pub mod partition;
pub mod server;
pub mod topics;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the broker is asked to be, from flags or the environment; printed at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "hie-log",
    about = "The local stack's event log (a Kafka-protocol broker)"
)]
pub struct Config {
    /// Where to listen (loopback unless you mean it).
    #[arg(long, env = "HIE_LOG_ADDR", default_value = "127.0.0.1:9092")]
    pub addr: std::net::SocketAddr,
    /// The address clients are told to connect to (default: `addr`).
    #[arg(long, env = "HIE_LOG_ADVERTISED")]
    pub advertised: Option<String>,
    /// The directory holding the log (created when missing).
    #[arg(long, env = "HIE_LOG_DIR")]
    pub dir: PathBuf,
    /// The largest record batch taken, in bytes.
    #[arg(long, env = "HIE_LOG_MAX_MESSAGE_BYTES", default_value_t = 64 << 20)]
    pub max_message_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the log directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Topics(#[from] topics::TopicError),
    #[error("advertised address {0:?} is not host:port")]
    Advertised(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The cluster id, made once and kept with the log: a client (the projector) can tell this log
/// from another one at the same address.
fn cluster_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            topics::write_synced(&path, id.as_bytes())?;
            topics::sync_dir(dir)?;
            Ok(id)
        }
    }
}

/// Opens the log and binds the listener; `serve` on the result runs the broker.
pub async fn start(
    config: &Config,
) -> Result<(Arc<server::Broker>, tokio::net::TcpListener), StartError> {
    let dir_err = |source| StartError::Dir {
        dir: config.dir.clone(),
        source,
    };
    std::fs::create_dir_all(&config.dir).map_err(dir_err)?;
    let cluster_id = cluster_id(&config.dir).map_err(dir_err)?;
    let data = Arc::new(tokio::sync::Notify::new());
    let topics = topics::Topics::open(&config.dir, data.clone())?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.addr,
            source,
        })?;
    let bound = listener.local_addr().map_err(dir_err)?;
    let advertised = config
        .advertised
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let (host, port) = advertised
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)))
        .ok_or_else(|| StartError::Advertised(advertised.clone()))?;
    let settings = server::Settings {
        node_id: 0,
        advertised_host: host,
        advertised_port: port,
        cluster_id: cluster_id.clone(),
        max_message_bytes: config.max_message_bytes,
        max_request_bytes: config.max_message_bytes + (1 << 20),
    };
    let topic_count = topics.all().len();
    tracing::info!(%bound, %advertised, cluster_id, topics = topic_count, "event log open");
    Ok((
        Arc::new(server::Broker::new(settings, topics, data)),
        listener,
    ))
}
