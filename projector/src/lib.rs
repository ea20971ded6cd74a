//! Projector: consumes the event log in a consumer group and keeps the per-patient views in
//! PostgreSQL, each batch and its offsets in one transaction.

mod claim_check;
pub mod config;
mod consume;
mod demographics;
mod http;
pub mod matching;
mod metrics;
pub mod store;

use std::future::Future;

pub use config::Config;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kafka(#[from] platform::kafka::KafkaSetupError),
    #[error("kafka consumer: {0}")]
    Consumer(#[from] rdkafka::error::KafkaError),
    #[error("database: {0}")]
    Database(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Blobs(#[from] platform::blobs::BlobError),
}

pub fn pool(database_url: &str) -> Result<deadpool_postgres::Pool, StartError> {
    platform::postgres::pool(database_url, 8).map_err(|e| StartError::Database(e.to_string()))
}

/// Run the projector until `shutdown` resolves; `listener` serves `/healthz` and `/metrics`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let pool = pool(&config.database_url)?;
    let blobs = config.blob_store.open()?;
    store::migrate(&pool).await?;
    platform::kafka::ensure_topics(&config.kafka_brokers, &schemas::topics::ALL).await?;
    let consumer = consume::consumer(&config, &pool).await?;
    let health = consume::Health::new(config.stall);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let server = axum::serve(listener, http::router(pool.clone(), health.clone()))
        .with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        });
    let server = tokio::spawn(async move { server.await });
    let matcher = config.matcher.then(|| {
        tokio::spawn(matching::run(
            config.clone(),
            pool.clone(),
            blobs.clone(),
            stop_rx.clone(),
        ))
    });
    tracing::info!("projector running");
    let mut loop_stop = stop_rx;
    let consuming = consume::run(config, pool, blobs, consumer, health, async move {
        let _ = loop_stop.changed().await;
    });
    tokio::pin!(consuming);
    tokio::select! {
        _ = &mut consuming => {}
        _ = shutdown => {
            let _ = stop_tx.send(true);
            consuming.await;
        }
    }
    let _ = stop_tx.send(true);
    if let Some(matcher) = matcher {
        let _ = matcher.await;
    }
    server
        .await
        .map_err(|e| StartError::Database(e.to_string()))??;
    Ok(())
}
