use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("query-api");
    let config = query_api::Config::from_env().context("configuration")?;
    tracing::info!(config = ?config, "query-api starting");
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    query_api::run(config, listener, platform::shutdown_signal()).await?;
    Ok(())
}
