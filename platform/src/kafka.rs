//! Kafka clients configured the one way this project uses them.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use schemas::topics::{TopicSpec, MAX_MESSAGE_BYTES};

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

/// How the clients authenticate to and encrypt for the cluster, from the environment (unset: plain
/// text, as the dev broker on loopback). `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// `KAFKA_SECURITY_PROTOCOL`: plaintext, ssl, sasl_plaintext or sasl_ssl.
    pub protocol: Option<String>,
    /// `KAFKA_SASL_MECHANISM`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// `KAFKA_SASL_PASSWORD`.
    pub sasl_password: Option<crate::Secret<String>>,
    /// `KAFKA_SSL_CA_LOCATION`: the CA bundle (PEM) that signs the brokers' certificates.
    pub ssl_ca_location: Option<String>,
    /// `KAFKA_SSL_CERTIFICATE_LOCATION` and `KAFKA_SSL_KEY_LOCATION`: a client certificate (mTLS).
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
}

impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol.as_deref().unwrap_or("plaintext"))
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<set>"),
            )
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .finish()
    }
}

impl KafkaSecurity {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        KafkaSecurity {
            protocol: var("KAFKA_SECURITY_PROTOCOL"),
            sasl_mechanism: var("KAFKA_SASL_MECHANISM"),
            sasl_username: var("KAFKA_SASL_USERNAME"),
            sasl_password: var("KAFKA_SASL_PASSWORD").map(crate::Secret::new),
            ssl_ca_location: var("KAFKA_SSL_CA_LOCATION"),
            ssl_certificate_location: var("KAFKA_SSL_CERTIFICATE_LOCATION"),
            ssl_key_location: var("KAFKA_SSL_KEY_LOCATION"),
        }
    }

    fn apply(&self, cfg: &mut ClientConfig) {
        let settings = [
            ("security.protocol", self.protocol.as_deref()),
            ("sasl.mechanism", self.sasl_mechanism.as_deref()),
            ("sasl.username", self.sasl_username.as_deref()),
            (
                "sasl.password",
                self.sasl_password.as_ref().map(|s| s.expose().as_str()),
            ),
            ("ssl.ca.location", self.ssl_ca_location.as_deref()),
            (
                "ssl.certificate.location",
                self.ssl_certificate_location.as_deref(),
            ),
            ("ssl.key.location", self.ssl_key_location.as_deref()),
        ];
        for (key, value) in settings {
            if let Some(value) = value {
                cfg.set(key, value);
            }
        }
    }
}

pub fn client_config(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    KafkaSecurity::from_env().apply(&mut cfg);
    cfg.set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "1000")
        // One record may be a 16 MiB document: librdkafka's default (1 MB) would refuse to produce
        // it. Consumers raise fetch.max.bytes and receive.message.max.bytes to match by themselves.
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string());
    cfg
}

/// The context of consumers that ask for `enable.partition.eof`: librdkafka's errors are logged
/// as by default, except the end of a partition, which such a consumer asked to be told (it also
/// arrives as a consumer event) and is no error.
#[derive(Clone, Copy, Debug, Default)]
pub struct PartitionEofIsNoError;

impl rdkafka::client::ClientContext for PartitionEofIsNoError {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_partition_eof(&error) {
            tracing::debug!(reason, "librdkafka: end of partition");
        } else {
            tracing::error!("librdkafka: {}: {}", error, reason);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for PartitionEofIsNoError {}

/// Whether `error` only says a partition's end was reached.
pub fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
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
        // A produce request gets the whole delivery timeout, not the 10 s of other requests: one
        // that times out makes librdkafka bump the producer's epoch on its own, and Tansu 0.6's
        // SQLite storage dies on the next produce (lite.rs:503); a slow broker is not a dead one.
        .set(
            "socket.timeout.ms",
            delivery_timeout
                .max(Duration::from_secs(10))
                .as_millis()
                .to_string(),
        )
        .create()?;
    Ok(producer)
}

/// Create the topics that are missing (the dev broker does not auto-create them). The log is the
/// source of truth: nothing is ever deleted by age or size (the views are rebuilt from it), and a
/// message may be as large as the largest record.
pub async fn ensure_topics(brokers: &str, topics: &[&TopicSpec]) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let max_message_bytes = MAX_MESSAGE_BYTES.to_string();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(-1))
                // Forever, as a number: Tansu 0.6 reads -1 literally and its maintenance (at
                // start, then every 10 minutes) deletes every record older than -1 ms.
                .set("retention.ms", "9223372036854775807")
                .set("retention.bytes", "-1")
                .set("cleanup.policy", "delete")
                .set("max.message.bytes", &max_message_bytes)
        })
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

/// In-memory state replayed from a topic (`follow`).
pub trait Replica: Clone + Send + 'static {
    type Event: schemas::Event;
    /// The whole state, built aside while a topic is replayed.
    type State: Default + Send;
    /// Apply one event, in log order, to a state being built.
    fn apply_to(state: &mut Self::State, event: Self::Event, offset: i64);
    /// Swap a state replayed to the topic's end in for the one served until now.
    fn install(&self, state: Self::State);
    /// Apply one event, in log order, to the state being served.
    fn apply(&self, event: Self::Event, offset: i64);
}

/// Replay `topic` from its beginning into a fresh state built aside, swap it in once every
/// partition's end has been read, then apply each later event as it comes. Runs until the process
/// stops. After an error it reconnects and replays again, aside: until the new replay has caught
/// up the state served stays the last complete one, so a replay half-way through (an account's
/// early "active" before its later "disabled") is never what answers. Undecodable events are
/// logged and skipped.
pub async fn follow<R: Replica>(brokers: String, topic: &'static TopicSpec, replica: R) {
    loop {
        if let Err(e) = follow_once(&brokers, topic, &replica).await {
            tracing::warn!(topic = topic.name, error = %e, "topic follower failed; replaying aside");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn follow_once<R: Replica>(
    brokers: &str,
    topic: &'static TopicSpec,
    replica: &R,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let consumer: StreamConsumer<PartitionEofIsNoError> = client_config(brokers)
        // Assigned, not subscribed: the group id only satisfies the client; nothing is committed.
        .set("group.id", format!("follower-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(PartitionEofIsNoError)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..topic.partitions {
        tpl.add_partition_offset(topic.name, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = vec![false; topic.partitions as usize];
    // `Some` while replaying aside; `None` once swapped in.
    let mut aside = Some(R::State::default());
    loop {
        match consumer.recv().await {
            Ok(msg) => match msg.payload().map(schemas::decode::<R::Event>) {
                Some(Ok(event)) => match aside.as_mut() {
                    Some(state) => R::apply_to(state, event, msg.offset()),
                    None => replica.apply(event, msg.offset()),
                },
                Some(Err(e)) => {
                    tracing::error!(topic = topic.name, offset = msg.offset(), error = %e, "undecodable event skipped")
                }
                None => {}
            },
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                if let Some(flag) = at_end.get_mut(p as usize) {
                    *flag = true;
                }
                if at_end.iter().all(|f| *f) {
                    if let Some(state) = aside.take() {
                        replica.install(state);
                        metrics::REPLAYS.with_label_values(&[topic.name]).inc();
                        tracing::info!(topic = topic.name, "caught up");
                    }
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
    /// Not tried: the views are too far behind the log to take more (ingest's admission).
    #[error("the views are {lag} events behind the log (limit {limit}): retry later")]
    Overloaded { lag: i64, limit: i64 },
    /// A claim-checked resource could not be made durable in the blob store before its event.
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
}

/// Encode `event` and publish it; returns once the broker has made it durable, with where. The
/// current span's `traceparent` goes along in the record's headers.
pub async fn publish<E: schemas::Event>(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    event: &E,
) -> Result<schemas::Position, PublishError> {
    publish_batch(producer, topic, std::iter::once((key, event))).await
}

/// Encode `events` and hand them all to the producer at once, then wait until the broker has made
/// every one durable; returns where they were written, or the first failure. One pass for what a
/// batch shares (the `traceparent` header, the metrics' label lookups), and librdkafka puts the
/// records that are queued together into as few produce requests as its batching allows.
pub async fn publish_batch<'e, E: schemas::Event + 'e>(
    producer: &FutureProducer,
    topic: &str,
    events: impl IntoIterator<Item = (&'e str, &'e E)>,
) -> Result<schemas::Position, PublishError> {
    use futures::StreamExt;

    let trace = crate::telemetry::traceparent(&tracing::Span::current());
    let records = events
        .into_iter()
        .map(|(key, event)| {
            Ok(Encoded {
                key: key.to_string(),
                payload: schemas::encode(event)?,
                traceparent: trace.clone(),
            })
        })
        .collect::<Result<Vec<_>, PublishError>>()?;
    let mut acks = send_encoded(producer, topic, &records).await;
    let mut position = schemas::Position::new();
    while let Some((_, ack)) = acks.next().await {
        let (partition, offset) = ack?;
        position.include(topic, partition, offset);
    }
    Ok(position)
}

/// A record encoded for the log, with the `traceparent` of the request it comes from.
pub struct Encoded {
    pub key: String,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
}

impl Encoded {
    /// `event` encoded, carrying the current span's `traceparent`.
    pub fn new<E: schemas::Event>(key: String, event: &E) -> Result<Self, PublishError> {
        Ok(Encoded {
            key,
            payload: schemas::encode(event)?,
            traceparent: crate::telemetry::traceparent(&tracing::Span::current()),
        })
    }
}

/// Hand every record to the producer before any ack is awaited (librdkafka sends what is queued
/// together in as few produce requests as it can), then yield each record's own outcome as its
/// ack comes: its index in `records` and where it was written, or why it was not.
pub async fn send_encoded(
    producer: &FutureProducer,
    topic: &str,
    records: &[Encoded],
) -> futures::stream::FuturesUnordered<
    impl std::future::Future<Output = (usize, Result<(i32, i64), PublishError>)> + Send + 'static,
> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::Producer;

    let failures = metrics::FAILURES.with_label_values(&[topic]);
    let delivery_seconds = metrics::DELIVERY.with_label_values(&[topic]);
    let started = std::time::Instant::now();
    let acks = futures::stream::FuturesUnordered::new();
    for (i, r) in records.iter().enumerate() {
        let mut record = rdkafka::producer::FutureRecord::to(topic)
            .key(&r.key)
            .payload(&r.payload);
        if let Some(value) = &r.traceparent {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: crate::telemetry::TRACEPARENT,
                value: Some(value),
            }));
        }
        let queued = loop {
            match producer.send_result(record) {
                Ok(delivery) => break Ok(delivery),
                // The producer's queue is full: wait for room, as `FutureProducer::send` does.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((e, _)) => break Err(e),
            }
        };
        let (failures, delivery_seconds) = (failures.clone(), delivery_seconds.clone());
        acks.push(async move {
            let ack = match queued {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(d)) => {
                        delivery_seconds.observe(started.elapsed().as_secs_f64());
                        Ok((d.partition, d.offset))
                    }
                    Ok(Err((e, _))) => Err(PublishError::Broker(e)),
                    // The producer was dropped with the record in its queue.
                    Err(_) => Err(PublishError::Broker(KafkaError::Canceled)),
                },
                Err(e) => Err(PublishError::Broker(e)),
            };
            if ack.is_err() {
                failures.inc();
            }
            (i, ack)
        });
    }
    metrics::QUEUE_DEPTH.set(producer.in_flight_count() as i64);
    acks
}

/// Producer and follower metrics: labels are topic names only.
mod metrics {
    use std::sync::LazyLock;

    use prometheus::{
        register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec,
        IntCounterVec, IntGauge,
    };

    pub static DELIVERY: LazyLock<HistogramVec> = LazyLock::new(|| {
        register_histogram_vec!(
            "hie_kafka_delivery_seconds",
            "From handing a record to the producer to the broker's acknowledgement",
            &["topic"],
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
        )
        .expect("metric registers once")
    });
    pub static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "hie_kafka_delivery_failures_total",
            "Records the broker did not acknowledge in time",
            &["topic"]
        )
        .expect("metric registers once")
    });
    /// Replays of a followed topic swapped in: one at start, one after each reconnect.
    pub static REPLAYS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "hie_topic_follower_replays_total",
            "Replays of a followed topic (accounts, sources) built aside and swapped in",
            &["topic"]
        )
        .expect("metric registers once")
    });
    pub static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
        register_int_gauge!(
            "hie_kafka_producer_queue_messages",
            "Records handed to the producer and not yet acknowledged, as of the last delivery"
        )
        .expect("metric registers once")
    });
}

#[cfg(test)]
mod security_tests {
    use super::*;

    /// The clients are built with TLS and SASL: a production cluster's settings are taken (a
    /// client is created without connecting), and the password never shows in `Debug`.
    #[test]
    fn sasl_ssl_settings_make_a_client() {
        let security = KafkaSecurity {
            protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("hie-ingest".into()),
            sasl_password: Some(crate::Secret::new("s3cret-pass".into())),
            ..Default::default()
        };
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", "127.0.0.1:1");
        security.apply(&mut cfg);
        assert_eq!(cfg.get("security.protocol"), Some("sasl_ssl"));
        let producer: Result<FutureProducer, _> = cfg.create();
        assert!(producer.is_ok(), "{:?}", producer.err());
        assert!(!format!("{security:?}").contains("s3cret-pass"));
    }
}
