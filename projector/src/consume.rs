//! The consumer loop: take a batch from the group's partitions, apply it with its offsets in one
//! transaction, then tell the group (best effort; PostgreSQL holds the truth).

use std::future::Future;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::topics;

use crate::store::{self, Envelope};
use crate::Config;

pub fn consumer(config: &Config) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let consumer: StreamConsumer = platform::kafka::client_config(&config.kafka_brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .set("session.timeout.ms", "10000")
        .create()?;
    let names: Vec<&str> = topics::ALL.iter().map(|t| t.name).collect();
    consumer.subscribe(&names)?;
    Ok(consumer)
}

/// Run until `shutdown` resolves. A batch in flight is finished (committed or rolled back) first.
pub async fn run(config: Config, pool: Pool, consumer: StreamConsumer, shutdown: impl Future<Output = ()>) {
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
                tracing::debug!(events = applied.events, skipped = applied.skipped_already_applied, "batch applied");
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
