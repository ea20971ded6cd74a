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
        match first {
            Ok(m) => batch.push(envelope(&m)),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + config.batch_wait;
        while batch.len() < config.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(envelope(&m)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        apply_with_retry(&pool, &batch).await;
        commit_to_group(&consumer, &batch);
    }
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
async fn apply_with_retry(pool: &Pool, batch: &[Envelope]) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match store::apply_batch(pool, batch).await {
            Ok(applied) => {
                crate::metrics::batch(&applied, batch.len(), started.elapsed());
                tracing::debug!(
                    events = applied.events,
                    skipped = applied.skipped_already_applied,
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
