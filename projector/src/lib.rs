//! Projector: consumes the event log in a consumer group and keeps the per-patient views in
//! PostgreSQL, each batch and its offsets in one transaction.

mod claim_check;
pub mod config;
mod consume;
mod demographics;
pub mod health;
mod http;
pub mod matching;
mod metrics;
pub mod store;
pub mod watch;

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
    let (consumer, tracked) = consume::consumer(&config, &pool).await?;
    let consumer = std::sync::Arc::new(consumer);
    let health = health::Health::new(config.stall);
    health.track(tracked);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The matcher starts at once, as before the check below: it reads the log, not the views, and
    // the later it starts, the more Patients of several partitions it finds waiting, whose
    // arrival order it cannot tell. Stopped again when the log is refused.
    let (matcher_stop, matcher_stopped) = tokio::sync::watch::channel(false);
    let matcher = config.matcher.then(|| {
        tokio::spawn(matching::run(
            config.clone(),
            pool.clone(),
            blobs.clone(),
            matcher_stopped,
        ))
    });
    let probe = std::sync::Arc::new(watch::Probe::new(&config.kafka_brokers)?);
    // Before anything is applied: is the log the one the views were built from?
    let own_log = watch::check_at_start(&pool, &probe, &health).await?;
    if !own_log {
        // A projector that refuses the log decides nothing either.
        let _ = matcher_stop.send(true);
    }
    let mut http_stop = stop_rx.clone();
    let server = axum::serve(listener, http::router(pool.clone(), health.clone()))
        .with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        });
    let server = tokio::spawn(async move { server.await });
    let watcher = tokio::spawn(watch::run(
        pool.clone(),
        probe,
        Some(consumer.clone()),
        health.clone(),
        stop_rx.clone(),
    ));
    tracing::info!(own_log, "projector running");
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
    let _ = matcher_stop.send(true);
    let _ = watcher.await;
    if let Some(matcher) = matcher {
        let _ = matcher.await;
    }
    server
        .await
        .map_err(|e| StartError::Database(e.to_string()))??;
    Ok(())
}
