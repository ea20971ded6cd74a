//! The consumer loop: take a batch from the group's partitions, apply it with its offsets in one
//! transaction, then tell the group (best effort; PostgreSQL holds the truth).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use platform::blobs::BlobStore;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::topics;

use crate::health::Health;
use crate::store::{self, Envelope};
use crate::{Config, StartError};

/// The partitions this projector applies, each with the next offset to apply.
pub type Tracked = Vec<((String, i32), i64)>;

/// A consumer assigned this projector's partitions of every topic, each positioned at the offset
/// PostgreSQL says comes next. Offsets live with the views, so the consumer is assigned rather than
/// subscribed: a projector killed anywhere resumes exactly where its last transaction ended, at
/// once, without waiting for a group rebalance.
pub async fn consumer(
    config: &Config,
    pool: &Pool,
) -> Result<(StreamConsumer, Tracked), StartError> {
    let consumer: StreamConsumer = platform::kafka::client_config(&config.kafka_brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        // A stored offset the broker no longer holds is a gap in the log: an error, never a
        // silent jump to the earliest or latest offset (`Health::gap`).
        .set("auto.offset.reset", "error")
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().to_string(),
        )
        .create()?;
    let stored = store::offsets(pool).await?;
    let mut tpl = TopicPartitionList::new();
    let mut owned = Vec::new();
    for topic in topics::ALL {
        let partitions = partition_count(&consumer, topic.name)?;
        for partition in (0..partitions).filter(|p| config.owns(*p)) {
            owned.push((topic.name.to_string(), partition));
            let offset = match stored.get(&(topic.name.to_string(), partition)) {
                Some(next) => Offset::Offset(*next),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(topic.name, partition, offset)?;
        }
    }
    tracing::info!(partitions = tpl.count(), "projector assigned");
    consumer.assign(&tpl)?;
    Ok((consumer, crate::watch::tracked(&owned, &stored)))
}

/// Blocks briefly, once, at start.
fn partition_count(consumer: &StreamConsumer, topic: &str) -> Result<i32, StartError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let count = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if count == 0 {
        return Err(StartError::NoPartitions(topic.to_string()));
    }
    Ok(count as i32)
}

/// Run until `shutdown` resolves. A batch in flight is finished (committed or rolled back) first.
pub async fn run(
    config: Config,
    pool: Pool,
    blobs: Arc<dyn BlobStore>,
    consumer: Arc<StreamConsumer>,
    health: Health,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        if health.refused() {
            // The log is not the views' (`watch`): nothing more is applied until an operator
            // rebuilds the views and restarts the projector.
            tracing::error!("not applying: the log is not the one the views were built from");
            shutdown.await;
            return;
        }
        let first = tokio::select! {
            _ = &mut shutdown => return,
            m = consumer.recv() => m,
        };
        let mut batch = Vec::with_capacity(config.batch_max);
        let mut traces = Traces::default();
        match first {
            Ok(m) => {
                traces.add(&m);
                batch.push(envelope(&m));
            }
            Err(e) => {
                consumer_error(&health, &e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        health.pending();
        let deadline = tokio::time::Instant::now() + config.batch_wait;
        while batch.len() < config.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => {
                    traces.add(&m);
                    batch.push(envelope(&m));
                }
                Ok(Err(e)) => {
                    consumer_error(&health, &e);
                    break;
                }
                Err(_) => break,
            }
        }
        if health.refused() {
            continue;
        }
        let spans = traces.spans();
        apply_with_retry(&pool, &*blobs, &consumer, &batch, &traces).await;
        let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
        for e in &batch {
            let slot = next.entry((e.topic.as_str(), e.partition)).or_default();
            *slot = (*slot).max(e.offset + 1);
        }
        health.applied(&next);
        drop(spans);
        commit_to_group(&consumer, &batch);
        record_lag(&consumer, &batch, Applied::Yes);
    }
}

fn consumer_error(health: &Health, e: &rdkafka::error::KafkaError) {
    use rdkafka::types::RDKafkaErrorCode;
    if platform::kafka::is_partition_eof(e) {
        // The end of a partition is not an error (this consumer does not ask for it anyway).
        return;
    }
    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) {
        health.set_gap();
        tracing::error!(error = %e, "the broker no longer holds the next offset to apply: a gap in the log; not skipping it (restore the topic, or rebuild the views)");
    } else {
        tracing::warn!(error = %e, "consumer error");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Applied {
    Yes,
    Not,
}

/// The distinct traces a batch carries (`traceparent` record headers), so the projector's write
/// joins each record's trace and its log line names them.
#[derive(Default)]
struct Traces {
    parents: std::collections::BTreeSet<String>,
}

impl Traces {
    /// A log line names at most this many; the spans are made for all of them.
    const LOGGED: usize = 32;

    fn add(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        use rdkafka::message::Headers;
        let Some(headers) = m.headers() else { return };
        for header in headers.iter() {
            if header.key == platform::telemetry::TRACEPARENT {
                if let Some(value) = header.value.and_then(|v| std::str::from_utf8(v).ok()) {
                    self.parents.insert(value.to_owned());
                }
            }
        }
    }

    /// One `project` span per trace, open while the batch is applied.
    fn spans(&self) -> Vec<tracing::Span> {
        self.parents
            .iter()
            .map(|parent| {
                let span = tracing::info_span!("project", trace_id = tracing::field::Empty);
                platform::telemetry::continue_trace(&span, Some(parent));
                span
            })
            .collect()
    }

    fn trace_ids(&self) -> String {
        let ids: Vec<String> = self
            .parents
            .iter()
            .take(Self::LOGGED)
            .filter_map(|p| platform::telemetry::trace_id_of(p))
            .collect();
        ids.join(",")
    }
}

/// Lag per partition, at once after a batch, from the high watermark the last fetch reported and
/// the next offset this projector will apply (the watch sets it on a timer too, from ListOffsets
/// and that high watermark: `watch::run`).
/// A batch still being retried counts whole: its first offset per partition is the next to apply.
fn record_lag(consumer: &StreamConsumer, batch: &[Envelope], applied: Applied) {
    let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
    for e in batch {
        let slot = next.entry((e.topic.as_str(), e.partition));
        match applied {
            Applied::Yes => *slot.or_default() = e.offset + 1,
            Applied::Not => {
                slot.or_insert(e.offset);
            }
        }
    }
    for ((topic, partition), next) in next {
        if let Some(high) = cached_high_watermark(consumer, topic, partition) {
            crate::metrics::lag(topic, partition, (high - next).max(0));
        }
    }
}

/// The high watermark librdkafka keeps from fetch responses, without asking the broker
/// (`rd_kafka_get_watermark_offsets`, which the rdkafka crate does not wrap).
pub(crate) fn cached_high_watermark(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::bindings::{rd_kafka_get_watermark_offsets, rd_kafka_resp_err_t};
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer lives as long as `consumer`; librdkafka only reads the
    // NUL-terminated topic name and writes the two offsets.
    let err = unsafe {
        rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

fn envelope(m: &rdkafka::message::BorrowedMessage<'_>) -> Envelope {
    Envelope {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

/// A batch is never skipped: a database that is down is waited for.
async fn apply_with_retry(
    pool: &Pool,
    blobs: &dyn BlobStore,
    consumer: &StreamConsumer,
    batch: &[Envelope],
    traces: &Traces,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match store::apply_batch(pool, blobs, batch).await {
            Ok(applied) => {
                crate::metrics::batch(&applied, batch.len(), started.elapsed());
                tracing::info!(
                    events = applied.events,
                    skipped = applied.skipped_already_applied,
                    quarantined = applied.quarantined,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    trace_ids = %traces.trace_ids(),
                    "batch applied"
                );
                return;
            }
            Err(e) => {
                record_lag(consumer, batch, Applied::Not);
                tracing::error!(error = %e, events = batch.len(), "applying batch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn commit_to_group(consumer: &StreamConsumer, batch: &[Envelope]) {
    let mut tpl = TopicPartitionList::new();
    for e in batch {
        let _ = tpl.add_partition_offset(&e.topic, e.partition, Offset::Offset(e.offset + 1));
    }
    // Later entries for the same partition replace earlier ones; a failed commit only means
    // some events are read again and skipped by the stored offsets.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "group offset commit failed");
    }
}
