//! Kafka clients configured the one way this project uses them.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use schemas::topics::TopicSpec;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

pub fn client_config(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "1000");
    cfg
}

/// An idempotent producer that waits for every in-sync replica (`acks=all`): a delivery report
/// means the record is durable. `delivery_timeout` bounds how long a request waits on a broker
/// that is down before it is told so.
pub fn producer(
    brokers: &str,
    delivery_timeout: Duration,
) -> Result<FutureProducer, KafkaSetupError> {
    let producer = client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "none")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        )
        .create()?;
    Ok(producer)
}

/// Create the topics that are missing (the dev broker does not auto-create them).
pub async fn ensure_topics(brokers: &str, topics: &[&TopicSpec]) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(-1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Replay `topic` from its beginning, then follow it, handing each event and its offset to `apply`
/// in log order.
/// `caught_up` becomes true once every partition's end, as it was at start, has been read. Runs
/// until the process stops; reconnects after errors. Undecodable events are logged and skipped.
pub async fn follow<E: schemas::Event>(
    brokers: String,
    topic: &'static TopicSpec,
    caught_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut apply: impl FnMut(E, i64) + Send,
) {
    loop {
        if let Err(e) = follow_once(&brokers, topic, &caught_up, &mut apply).await {
            tracing::warn!(topic = topic.name, error = %e, "topic follower failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn follow_once<E: schemas::Event>(
    brokers: &str,
    topic: &'static TopicSpec,
    caught_up: &std::sync::atomic::AtomicBool,
    apply: &mut (impl FnMut(E, i64) + Send),
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::sync::atomic::Ordering;

    let consumer: StreamConsumer = client_config(brokers)
        // Assigned, not subscribed: the group id only satisfies the client; nothing is committed.
        .set("group.id", format!("follower-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..topic.partitions {
        tpl.add_partition_offset(topic.name, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = vec![false; topic.partitions as usize];
    loop {
        match consumer.recv().await {
            Ok(msg) => match msg.payload().map(schemas::decode::<E>) {
                Some(Ok(event)) => apply(event, msg.offset()),
                Some(Err(e)) => {
                    tracing::error!(topic = topic.name, offset = msg.offset(), error = %e, "undecodable event skipped")
                }
                None => {}
            },
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                if let Some(flag) = at_end.get_mut(p as usize) {
                    *flag = true;
                }
                if at_end.iter().all(|f| *f) && !caught_up.swap(true, Ordering::AcqRel) {
                    tracing::info!(topic = topic.name, "caught up");
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not acknowledge the record: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
    #[error("encoding: {0}")]
    Encode(#[from] schemas::CodecError),
}

/// Encode `event` and publish it; returns once the broker has made it durable, with where.
pub async fn publish<E: schemas::Event>(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    event: &E,
) -> Result<schemas::Position, PublishError> {
    let payload = schemas::encode(event)?;
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(&payload);
    let delivery = producer
        .send(record, rdkafka::util::Timeout::Never)
        .await
        .map_err(|(e, _)| PublishError::Broker(e))?;
    let mut position = schemas::Position::new();
    position.include(topic, delivery.partition, delivery.offset);
    Ok(position)
}
