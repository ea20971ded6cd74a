//! Ingest: receives records from sources, validates and normalizes them to FHIR R4, and
//! publishes them to the event log; answers only once the broker made them durable.

mod admission;
pub mod config;
mod dropfolder;
mod fhir;
#[doc(hidden)]
pub mod fuzzing;
mod hl7;
pub mod http;
mod intake;
mod limits;
mod metrics;
mod mllp;
mod publish;
mod sources;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kafka(#[from] platform::kafka::KafkaSetupError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    #[error("JWT key: {0}")]
    Jwt(#[from] platform::auth::AuthError),
    #[error(transparent)]
    Tls(#[from] platform::tls::TlsError),
    #[error(transparent)]
    Blobs(#[from] platform::blobs::BlobError),
}

/// Run ingest on `listener` (HTTP) and on `config.mllp_addr` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let mllp = match config.mllp_addr {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    run_with(config, listener, mllp, shutdown).await
}

/// Run ingest on the given listeners (tests pass port-0 ones) until `shutdown` resolves.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    mllp: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    use platform::tls::{server_config, ClientCerts};
    let (http_tls, mllp_tls) = match &config.tls {
        Some(files) => (
            Some(server_config(files, ClientCerts::None)?),
            Some(server_config(files, ClientCerts::Requested)?),
        ),
        None => (None, None),
    };
    platform::kafka::ensure_topics(&config.kafka_brokers, &schemas::topics::ALL).await?;
    let producer = platform::kafka::producer(&config.kafka_brokers, config.delivery_timeout)?;
    let registry = sources::Registry::default();
    let follower = tokio::spawn(sources::follow(
        registry.clone(),
        config.kafka_brokers.clone(),
    ));
    let broker =
        platform::broker_watch::BrokerWatch::spawn(producer.clone(), schemas::topics::RECORDS.name);
    let admission = admission::Admission::spawn(
        &config.kafka_brokers,
        &config.views_group,
        schemas::topics::RECORDS.name,
        config.max_views_lag,
    );
    let claim_check = publish::ClaimCheck {
        store: config.blob_store.open()?,
        threshold: config.claim_check_bytes,
    };
    let publisher = publish::Publisher::new(producer, claim_check, admission);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    if let Some(mllp) = mllp {
        let receiver = mllp::Receiver {
            publisher: publisher.clone(),
            registry: registry.clone(),
            limits: config.limits.clone(),
        };
        workers.push(tokio::spawn(mllp::serve(
            mllp,
            Arc::new(receiver),
            mllp_tls,
            stopping.clone(),
        )));
    }
    if let Some(root) = &config.drop_dir {
        let drop_folder = dropfolder::DropFolder {
            root: root.clone(),
            publisher: publisher.clone(),
            registry: registry.clone(),
            max_line_bytes: config.max_body_bytes,
        };
        workers.push(tokio::spawn(drop_folder.watch(stopping.clone())));
    }
    let accounts = platform::accounts::Accounts::new(
        config.bootstrap_admin.clone(),
        config.operator_org.clone(),
    );
    let accounts_follower = tokio::spawn(accounts.clone().follow(config.kafka_brokers.clone()));
    let state = http::AppState {
        accounts,
        verifier: config.jwt.verifier()?,
        config: Arc::new(config),
        publisher,
        registry,
        broker,
    };
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    let served = platform::tls::serve_http(
        listener,
        http::router(state.clone()),
        http_tls,
        async move {
            shutdown.await;
            let _ = stop.send(true);
        },
    )
    .await;
    for worker in workers {
        let _ = worker.await;
    }
    follower.abort();
    accounts_follower.abort();
    // Whatever was accepted was already acknowledged; flush anything still in flight.
    use rdkafka::producer::Producer;
    let _ = state
        .publisher
        .producer()
        .flush(std::time::Duration::from_secs(5));
    Ok(served?)
}
