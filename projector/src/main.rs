use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("projector");
    let config = projector::Config::from_env().context("configuration")?;
    tracing::info!(config = ?config, "projector starting");
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    projector::run(config, listener, platform::shutdown_signal()).await?;
    Ok(())
}
