//! Bounds on everything a sender controls (API.md, "Limits and hostile input"), set by
//! environment variables and printed with the rest of the configuration at start.

use std::time::Duration;

use crate::config::ConfigError;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest MLLP frame (`INGEST_MLLP_MAX_FRAME_BYTES`, 16 MiB): a larger one is read to its
    /// end without being kept, answered `AR` and dead-lettered without its content.
    pub mllp_max_frame_bytes: usize,
    /// An MLLP connection that sends nothing this long is closed (`INGEST_MLLP_IDLE_SECONDS`, 300);
    /// the same bound applies to writing an ACK to a peer that does not read.
    pub mllp_idle: Duration,
    /// Open MLLP connections at most (`INGEST_MLLP_MAX_CONNECTIONS`, 1024); more are closed at once.
    pub mllp_max_connections: usize,
    /// An HTTP request not answered in this time gets 408 (`INGEST_HTTP_REQUEST_TIMEOUT_SECONDS`,
    /// 300: a 64 MiB body over a slow link and its publishing).
    pub http_request_timeout: Duration,
    /// Source and consent requests in progress at most (`INGEST_HTTP_MAX_CONCURRENT_REQUESTS`,
    /// 64); more get 503 at once. With the body limit it bounds the memory of Bundles in flight.
    pub http_max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            mllp_max_frame_bytes: 16 * 1024 * 1024,
            mllp_idle: Duration::from_secs(300),
            mllp_max_connections: 1024,
            http_request_timeout: Duration::from_secs(300),
            http_max_concurrent_requests: 64,
        }
    }
}

impl Limits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Limits::default();
        Ok(Limits {
            mllp_max_frame_bytes: positive("INGEST_MLLP_MAX_FRAME_BYTES", d.mllp_max_frame_bytes)?,
            mllp_idle: Duration::from_secs(positive(
                "INGEST_MLLP_IDLE_SECONDS",
                d.mllp_idle.as_secs() as usize,
            )? as u64),
            mllp_max_connections: positive("INGEST_MLLP_MAX_CONNECTIONS", d.mllp_max_connections)?,
            http_request_timeout: Duration::from_secs(positive(
                "INGEST_HTTP_REQUEST_TIMEOUT_SECONDS",
                d.http_request_timeout.as_secs() as usize,
            )? as u64),
            http_max_concurrent_requests: positive(
                "INGEST_HTTP_MAX_CONCURRENT_REQUESTS",
                d.http_max_concurrent_requests,
            )?,
        })
    }
}

/// `name` as a whole number of at least 1, `default` when unset.
fn positive(name: &'static str, default: usize) -> Result<usize, ConfigError> {
    let raw = platform::env_or(name, &default.to_string());
    match raw.trim().parse::<usize>() {
        Ok(0) => Err(ConfigError::Invalid(name, "must be at least 1".into())),
        Ok(v) => Ok(v),
        Err(e) => Err(ConfigError::Invalid(name, e.to_string())),
    }
}
