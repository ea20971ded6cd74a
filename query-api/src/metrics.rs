//! The query API's metrics, defined in one place. Labels never carry PHI.

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};

static ACCESS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_query_access_events_total",
        "Audited reads of clinical data",
        &["basis", "outcome"]
    )
    .expect("registers once")
});
static BREAK_GLASS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("hie_query_break_glass_total", "Break-the-Glass grants")
        .expect("registers once")
});

pub fn access(basis: &str, outcome: &str) {
    ACCESS.with_label_values(&[basis, outcome]).inc();
}

pub fn break_glass() {
    BREAK_GLASS.inc();
}
