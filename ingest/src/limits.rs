//! Bounds on everything a sender controls (API.md, "Limits and hostile input"), set by
//! environment variables (`config::Config::from_env`) and printed with the rest of the
//! configuration at start.

use std::time::Duration;

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
