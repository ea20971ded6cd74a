//! Ingest's metrics, defined in one place. Labels are source ids and channels, never PHI.

use std::sync::LazyLock;

use prometheus::{register_int_counter_vec, IntCounterVec};

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
