//! The query API's metrics, defined in one place. Labels never carry PHI.

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};

static ACCESS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_query_access_events_total",
        "Access events made durable on the audit topic, by basis and outcome",
        &["basis", "outcome"]
    )
    .expect("registers once")
});
static BREAK_GLASS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hie_query_break_glass_total",
        "Break-the-Glass grants made durable on their topic"
    )
    .expect("registers once")
});

static AUDIT_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_query_audit_failures_total",
        "Audit events the broker did not take in time; the request was refused (503)",
        &["kind"]
    )
    .expect("registers once")
});

pub fn audit_failed(kind: &str) {
    AUDIT_FAILED.with_label_values(&[kind]).inc();
}

pub fn access(basis: &str, outcome: &str) {
    ACCESS.with_label_values(&[basis, outcome]).inc();
}

pub fn break_glass() {
    BREAK_GLASS.inc();
}
