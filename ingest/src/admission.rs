//! Admission by the views' lag: ingest takes new records only while the projector keeps up, so a
//! sender faster than the stack is told to retry (503 + `Retry-After`, MLLP `AR` 207) instead of
//! being acknowledged into a backlog no one can read for minutes. The lag is the log's end on
//! `hie.records` (high watermarks) minus what the projector's consumer group committed, asked on a
//! timer on a client of its own (it never joins the group): Kafka's own view of consumer lag, the
//! same against the local broker and a real cluster. Unknown (no committed offsets yet, the broker
//! not answering) admits: the broker's own errors already refuse when it is down.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::publish::PublishError;

const EVERY: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(2);
/// The lag when it is not known.
const UNKNOWN: i64 = -1;

static LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "hie_ingest_views_lag_events",
        "Events on hie.records the projector's group has not committed (-1: unknown), asked every 0.5 s"
    )
    .expect("metric registers once")
});

static REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hie_ingest_admission_refused_total",
        "Writes refused (503/429 + Retry-After, MLLP AR 207) because the views were too far behind"
    )
    .expect("metric registers once")
});

#[derive(Clone)]
pub struct Admission {
    lag: Arc<AtomicI64>,
    /// 0: off.
    limit: i64,
}

impl Admission {
    /// Admits everything (tests of ingest alone, or `INGEST_MAX_VIEWS_LAG=0`).
    pub fn off() -> Admission {
        Admission {
            lag: Arc::new(AtomicI64::new(UNKNOWN)),
            limit: 0,
        }
    }

    /// Watches `group`'s lag on `topic` until the process stops.
    pub fn spawn(brokers: &str, group: &str, topic: &'static str, limit: i64) -> Admission {
        let admission = Admission {
            lag: Arc::new(AtomicI64::new(UNKNOWN)),
            limit,
        };
        if limit <= 0 {
            return admission;
        }
        let consumer: Option<BaseConsumer> = platform::kafka::client_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| tracing::error!(error = %e, "admission: no client; admitting everything"))
            .ok();
        let lag = admission.lag.clone();
        if let Some(consumer) = consumer {
            std::thread::Builder::new()
                .name("admission".into())
                .spawn(move || loop {
                    let now = measure(&consumer, topic).unwrap_or(UNKNOWN);
                    lag.store(now, Ordering::Relaxed);
                    LAG.set(now);
                    std::thread::sleep(EVERY);
                })
                .expect("a thread starts");
        }
        admission
    }

    /// Ok while the views keep up (or their lag is unknown).
    pub fn check(&self) -> Result<(), PublishError> {
        let lag = self.lag.load(Ordering::Relaxed);
        if self.limit > 0 && lag > self.limit {
            REFUSED.inc();
            return Err(PublishError::Overloaded {
                lag,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

/// The sum over `topic`'s partitions of end minus committed; `None` when any part is unknown.
fn measure(consumer: &BaseConsumer, topic: &str) -> Option<i64> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).ok()?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()?
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT).ok()?;
    let mut lag = 0;
    for p in partitions {
        let (_, end) = consumer.fetch_watermarks(topic, p, TIMEOUT).ok()?;
        let Offset::Offset(at) = committed.find_partition(topic, p)?.offset() else {
            return None;
        };
        lag += lag_of(end, at);
    }
    Some(lag)
}

/// A committed offset beyond the end (a log that is not the projector's) is no lag here: the
/// projector's own health says what is wrong.
fn lag_of(end: i64, committed: i64) -> i64 {
    (end - committed).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_over_a_known_lag_above_the_limit() {
        let a = Admission {
            lag: Arc::new(AtomicI64::new(UNKNOWN)),
            limit: 100,
        };
        assert!(a.check().is_ok(), "unknown admits");
        a.lag.store(100, Ordering::Relaxed);
        assert!(a.check().is_ok());
        a.lag.store(101, Ordering::Relaxed);
        assert!(matches!(
            a.check(),
            Err(PublishError::Overloaded {
                lag: 101,
                limit: 100
            })
        ));
        let off = Admission::off();
        off.lag.store(1 << 40, Ordering::Relaxed);
        assert!(off.check().is_ok());
        assert_eq!(lag_of(10, 12), 0);
        assert_eq!(lag_of(12, 10), 2);
    }
}
