//! Ingest's metrics, defined in one place. Labels come from closed sets only: registered source
//! ids (or `unknown`), the four channel names, the MLLP limits; never PHI or anything a sender wrote.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};

static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_ingest_records_published_total",
        "Records made durable on the records topic",
        &["source", "channel"]
    )
    .expect("metric registers once")
});

static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_ingest_records_rejected_total",
        "Inputs rejected and dead-lettered",
        &["source", "channel"]
    )
    .expect("metric registers once")
});

pub fn published(source: &str, channel: &str, n: usize) {
    PUBLISHED
        .with_label_values(&[source, channel])
        .inc_by(n as u64);
}

pub fn rejected(source: &str, channel: &str, n: usize) {
    if n > 0 {
        REJECTED
            .with_label_values(&[source, channel])
            .inc_by(n as u64);
    }
}

static MLLP_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "hie_ingest_mllp_connections",
        "MLLP connections open (at most INGEST_MLLP_MAX_CONNECTIONS)"
    )
    .expect("metric registers once")
});

static MLLP_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_ingest_mllp_refusals_total",
        "MLLP connections closed or frames refused at a limit, by which limit",
        &["limit"]
    )
    .expect("metric registers once")
});

/// Which MLLP limit refused something: the metric's label takes only these values.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    ConnectionLimit,
    IdleTimeout,
    FrameTooLarge,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connections",
            Refusal::IdleTimeout => "idle",
            Refusal::FrameTooLarge => "frame_bytes",
        }
    }
}

pub fn mllp_connection_opened() {
    MLLP_CONNECTIONS.inc();
}

pub fn mllp_connection_closed() {
    MLLP_CONNECTIONS.dec();
}

pub fn mllp_refused(refusal: Refusal) {
    MLLP_REFUSALS.with_label_values(&[refusal.label()]).inc();
}

static CLAIM_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_ingest_claim_checks_total",
        "Resources over INGEST_CLAIM_CHECK_BYTES sent through the blob store: stored, or already there (same content)",
        &["outcome"]
    )
    .expect("metric registers once")
});

static CLAIM_CHECK_BYTES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "hie_ingest_claim_check_bytes_total",
        "Bytes of resource JSON newly kept in the blob store"
    )
    .expect("metric registers once")
});

pub fn claim_checked(bytes: usize, stored: bool) {
    let outcome = if stored { "stored" } else { "already_stored" };
    CLAIM_CHECKS.with_label_values(&[outcome]).inc();
    if stored {
        CLAIM_CHECK_BYTES.inc_by(bytes as u64);
    }
}
