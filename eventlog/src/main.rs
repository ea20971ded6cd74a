use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    let config = eventlog::Config::parse();
    tracing::info!(?config, "configuration");
    let (broker, listener) = eventlog::start(&config).await?;
    tokio::select! {
        r = broker.serve(listener) => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; every acknowledged record is already on disk"),
    }
    Ok(())
}
