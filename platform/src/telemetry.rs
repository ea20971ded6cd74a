use tracing_subscriber::EnvFilter;

/// JSON logs on stderr, filtered by `RUST_LOG` (default `info`). Log lines carry ids, counts and
/// error kinds only; never names, birth dates, MRNs or clinical content.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,tokio_postgres=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .try_init();
}
