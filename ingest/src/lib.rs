//! Ingest: receives records from sources, validates and normalizes them to FHIR R4, and
//! publishes them to the event log; answers only once the broker made them durable.

pub mod config;
mod fhir;
pub mod http;
mod metrics;
mod publish;
mod sources;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
use platform::auth::Verifier;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kafka(#[from] platform::kafka::KafkaSetupError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Run ingest on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    platform::kafka::ensure_topics(&config.kafka_brokers, &schemas::topics::ALL).await?;
    let producer = platform::kafka::producer(&config.kafka_brokers, config.delivery_timeout)?;
    let registry = sources::Registry::default();
    let follower = tokio::spawn(sources::follow(
        registry.clone(),
        config.kafka_brokers.clone(),
    ));
    let state = http::AppState {
        verifier: Verifier::hs256(config.jwt_secret.expose().as_bytes()),
        config: Arc::new(config),
        publisher: publish::Publisher::new(producer),
        registry,
    };
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    let served = axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    follower.abort();
    // Whatever was accepted was already acknowledged; flush anything still in flight.
    use rdkafka::producer::Producer;
    let _ = state
        .publisher
        .producer()
        .flush(std::time::Duration::from_secs(5));
    Ok(served?)
}
