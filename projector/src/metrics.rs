//! The projector's metrics, defined in one place.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge_vec,
    Histogram, IntCounter, IntCounterVec, IntGaugeVec,
};

use crate::store::Applied;

static EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hie_projector_events_applied_total",
        "Events applied to the views"
    )
    .expect("registers once")
});
static QUARANTINED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_projector_events_quarantined_total",
        "Events set aside in quarantine (undecodable, or refused by PostgreSQL); the views went on",
        &["topic", "event_type"]
    )
    .expect("registers once")
});
static REAPPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hie_projector_quarantine_reapplied_total",
        "Quarantined events applied again on an operator's request"
    )
    .expect("registers once")
});
static MATCHER_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_mpi_decisions_total",
        "Decisions the master patient index's matcher published, by action",
        &["action"]
    )
    .expect("registers once")
});
static MATCHER_IDENTITIES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "hie_mpi_identities",
        "Source identities the matcher holds in memory"
    )
    .expect("registers once")
});
static MATCHER_BYTES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "hie_mpi_matcher_memory_bytes",
        "Memory the matcher's identities, people and blocking index take (estimated)"
    )
    .expect("registers once")
});

/// `action` is one of IdentityDecided's six.
pub fn matcher_decided(action: &'static str) {
    MATCHER_DECISIONS.with_label_values(&[action]).inc();
}

pub fn matcher_state(identities: usize, bytes: usize) {
    MATCHER_IDENTITIES.set(identities as i64);
    MATCHER_BYTES.set(bytes as i64);
}

static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "hie_projector_batch_size",
        "Events per projection transaction",
        vec![1.0, 5.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0]
    )
    .expect("registers once")
});
static BATCH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!("hie_projector_batch_seconds", "Time to apply one batch")
        .expect("registers once")
});
static FRESHNESS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "hie_projector_freshness_seconds",
        "From a record's receipt at ingest to its projection",
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0]
    )
    .expect("registers once")
});

static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "hie_projector_consumer_lag_messages",
        "Events on a partition not yet applied: its end (ListOffsets on a timer, or the last fetch's high watermark when larger) minus the next offset to apply",
        &["topic", "partition"]
    )
    .expect("registers once")
});

pub fn lag(topic: &str, partition: i32, behind: i64) {
    LAG.with_label_values(&[topic, &partition.to_string()])
        .set(behind);
}

/// `topic` is one of the project's topics and `event_type` an event name or `unknown`: a closed set.
pub fn quarantined(topic: &str, event_type: &str) {
    QUARANTINED.with_label_values(&[topic, event_type]).inc();
}

pub fn reapplied() {
    REAPPLIED.inc();
}

pub fn batch(applied: &Applied, size: usize, took: Duration) {
    EVENTS.inc_by(applied.events as u64);
    BATCH_SIZE.observe(size as f64);
    BATCH_SECONDS.observe(took.as_secs_f64());
    if let Some(received) = applied.newest_received_at {
        let lag = (schemas::now_micros() - received).max(0) as f64 / 1e6;
        FRESHNESS.observe(lag);
    }
}
