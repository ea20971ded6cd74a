//! Query API: consent-filtered reads of the views the projector keeps.

mod audit;
pub mod config;
pub mod consent;
mod db;
pub mod http;
mod metrics;
pub mod portal;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(String),
    #[error(transparent)]
    Kafka(#[from] platform::kafka::KafkaSetupError),
    #[error("JWT key: {0}")]
    Jwt(#[from] platform::auth::AuthError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] platform::tls::TlsError),
    #[error("portal e-mail: {0}")]
    Mail(String),
}

/// Run the query API on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let tls = match &config.tls {
        Some(files) => Some(platform::tls::server_config(
            files,
            platform::tls::ClientCerts::None,
        )?),
        None => None,
    };
    let pool = platform::postgres::pool(&config.database_url, 16)
        .map_err(|e| StartError::Database(e.to_string()))?;
    platform::kafka::ensure_topics(&config.kafka_brokers, &schemas::topics::ALL).await?;
    platform::kafka::ensure_topics(&config.kafka_brokers, &[&schemas::topics::CREDENTIALS]).await?;
    let accounts = platform::accounts::Accounts::new(
        config.bootstrap_admin.clone(),
        config.operator_org.clone(),
    );
    let follower = tokio::spawn(accounts.clone().follow(config.kafka_brokers.clone()));
    // EHR clients: only the query API writes and follows `hie.clients`.
    platform::kafka::ensure_topics(&config.kafka_brokers, &[&schemas::topics::CLIENTS]).await?;
    let clients = platform::clients::Clients::default();
    let clients_follower = tokio::spawn(clients.clone().follow(config.kafka_brokers.clone()));
    let auditor = audit::Auditor::new(&config.kafka_brokers, config.audit_timeout)?;
    let broker = platform::broker_watch::BrokerWatch::spawn(
        auditor.producer().clone(),
        schemas::topics::ACCESS.name,
    );
    // The credential store writes: its own database when the views are read from a replica.
    let credential_pool = match &config.portal.database_url {
        Some(url) => platform::postgres::pool(url.expose(), 4)
            .map_err(|e| StartError::Database(e.to_string()))?,
        None => pool.clone(),
    };
    let portal = portal::Portal::new(config.portal.clone(), credential_pool, auditor.clone())
        .map_err(|e| StartError::Mail(e.to_string()))?;
    let state = http::AppState {
        clients,
        access_tokens: platform::clients::AccessTokens::new(),
        portal,
        accounts,
        verifier: config.jwt.verifier()?,
        auditor,
        broker,
        config: Arc::new(config),
        pool,
    };
    tracing::info!(addr = %listener.local_addr()?, "query-api listening");
    let served = platform::tls::serve_http(listener, http::router(state), tls, shutdown).await;
    follower.abort();
    clients_follower.abort();
    Ok(served?)
}
