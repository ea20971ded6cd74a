use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("ingest");
    let config = ingest::Config::from_env().context("configuration")?;
    tracing::info!(config = ?config, "ingest starting");
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    ingest::run(config, listener, platform::shutdown_signal()).await?;
    Ok(())
}
