//! The consumer loop: take a batch from the group's partitions, apply it with its offsets in one
//! transaction, then tell the group (best effort; PostgreSQL holds the truth).

use std::future::Future;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::topics;

use crate::store::{self, Envelope};
use crate::{Config, StartError};

/// A consumer assigned this projector's partitions of every topic, each positioned at the offset
/// PostgreSQL says comes next. Offsets live with the views, so the consumer is assigned rather than
/// subscribed: a projector killed anywhere resumes exactly where its last transaction ended, at
/// once, without waiting for a group rebalance.
pub async fn consumer(config: &Config, pool: &Pool) -> Result<StreamConsumer, StartError> {
    let consumer: StreamConsumer = platform::kafka::client_config(&config.kafka_brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().to_string(),
        )
        .create()?;
    let stored = store::offsets(pool).await?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics::ALL {
        let partitions = partition_count(&consumer, topic.name)?;
        for partition in (0..partitions).filter(|p| config.owns(*p)) {
            let offset = match stored.get(&(topic.name.to_string(), partition)) {
                Some(next) => Offset::Offset(*next),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(topic.name, partition, offset)?;
        }
    }
    tracing::info!(partitions = tpl.count(), "projector assigned");
    consumer.assign(&tpl)?;
    Ok(consumer)
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
    consumer: StreamConsumer,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
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
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + config.batch_wait;
        while batch.len() < config.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => {
                    traces.add(&m);
                    batch.push(envelope(&m));
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        let spans = traces.spans();
        apply_with_retry(&pool, &batch, &traces).await;
        drop(spans);
        commit_to_group(&consumer, &batch);
        record_lag(&consumer, &batch);
    }
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

/// Lag per partition from the high watermark the last fetch reported (not ListOffsets, which
/// Tansu can report too low) and the next offset this projector will apply.
fn record_lag(consumer: &StreamConsumer, batch: &[Envelope]) {
    let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
    for e in batch {
        next.insert((e.topic.as_str(), e.partition), e.offset + 1);
    }
    for ((topic, partition), next) in next {
        if let Some(high) = cached_high_watermark(consumer, topic, partition) {
            crate::metrics::lag(topic, partition, (high - next).max(0));
        }
    }
}

/// The high watermark librdkafka keeps from fetch responses, without asking the broker
/// (`rd_kafka_get_watermark_offsets`, which the rdkafka crate does not wrap).
fn cached_high_watermark(consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<i64> {
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
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

/// A batch is never skipped: a database that is down is waited for.
async fn apply_with_retry(pool: &Pool, batch: &[Envelope], traces: &Traces) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match store::apply_batch(pool, batch).await {
            Ok(applied) => {
                crate::metrics::batch(&applied, batch.len(), started.elapsed());
                tracing::info!(
                    events = applied.events,
                    skipped = applied.skipped_already_applied,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    trace_ids = %traces.trace_ids(),
                    "batch applied"
                );
                return;
            }
            Err(e) => {
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
