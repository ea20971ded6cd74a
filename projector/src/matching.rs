//! The master patient index's matcher, a stage of the projector: it reads every Patient record on
//! `hie.records`, decides who the identity is (`mpi::Matcher`), and publishes the decision on
//! `hie.identity`, from which the views (this projector's batch loop) and the matcher itself
//! follow. One matcher decides at a time across every projector instance (a PostgreSQL advisory
//! lock): a link joins identities from any partition, so one mind must see them all in one order.
//!
//! It keeps nothing of its own: at start it replays `hie.identity` (each matcher decision carries
//! the demographics it compared and the Patient record's position) and goes on after the
//! highest record decided. A Patient decided on but not yet published when the process died is
//! decided again; one already published is not (its position is in the log).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::stream::{FuturesOrdered, StreamExt};
use mpi::{Decision, Features, Matcher, Model, Thresholds};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::topics;
use schemas::{
    FieldComparison, IdentityAction, IdentityDecided, MatchCandidate, MatchFeatures,
    PatientIdentity, RecordReceived,
};
use tokio::sync::watch;

use crate::metrics;
use crate::Config;

/// Who the matcher is in its events.
pub const MATCHER: &str = "matcher";
/// Held by the one deciding matcher (session-level, on a connection kept for the purpose).
const LEADER_LOCK: i64 = 7_311_003;
/// Decisions published and not yet acknowledged, at most.
const IN_FLIGHT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum MatchingError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka setup: {0}")]
    Setup(#[from] platform::kafka::KafkaSetupError),
    #[error("publishing a decision: {0}")]
    Publish(#[from] platform::kafka::PublishError),
    #[error("database: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Blobs(#[from] platform::blobs::BlobError),
    #[error("decoding {topic} offset {offset}: {error}")]
    Decode {
        topic: &'static str,
        offset: i64,
        error: String,
    },
}

/// Runs until `stop` turns true; after an error it starts over (replaying `hie.identity`).
pub async fn run(
    config: Config,
    pool: Pool,
    blobs: std::sync::Arc<dyn platform::blobs::BlobStore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let outcome = tokio::select! {
            r = run_once(&config, &pool, &*blobs) => r,
            _ = stop.changed() => return,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "matcher failed; starting over");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn run_once(
    config: &Config,
    pool: &Pool,
    blobs: &dyn platform::blobs::BlobStore,
) -> Result<(), MatchingError> {
    // Leadership: held as long as this connection (kept in scope) lives. Taken out of the pool,
    // so a matcher stopped (shutdown, or its projector refusing the log) closes the session and
    // the lock with it, instead of leaving it held by a pooled connection.
    let leader = deadpool_postgres::Object::take(pool.get().await?);
    while !leader
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await?
        .get::<_, bool>(0)
    {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let producer = platform::kafka::producer(&config.kafka_brokers, Duration::from_secs(30))?;
    let consumer: StreamConsumer<platform::kafka::PartitionEofIsNoError> =
        platform::kafka::client_config(&config.kafka_brokers)
            // Assigned, not subscribed: nothing is committed; the log itself says where to go on.
            .set("group.id", format!("hie-matcher-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set(
                "fetch.wait.max.ms",
                config.fetch_wait.as_millis().to_string(),
            )
            .create_with_context(platform::kafka::PartitionEofIsNoError)?;

    // 1. What was decided so far.
    let mut matcher = Matcher::new(Model::default(), Thresholds::default());
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topics::IDENTITY.name, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut identity_next = 0;
    let mut resume: HashMap<i32, i64> = HashMap::new();
    loop {
        match consumer.recv().await {
            Ok(msg) => {
                identity_next = msg.offset() + 1;
                let Some(d) = decode_decision(&msg)? else {
                    continue;
                };
                if let (Some(p), Some(o)) = (d.source_partition, d.source_offset) {
                    let at = resume.entry(p).or_insert(o);
                    *at = (*at).max(o);
                }
                replay(&mut matcher, &d);
            }
            Err(KafkaError::PartitionEOF(_)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let started = std::time::Instant::now();
    if let Some(model) = matcher.learn() {
        tracing::info!(trained_on = %model, seconds = started.elapsed().as_secs_f64(), "matcher model estimated");
    }
    tracing::info!(
        identities = matcher.identities(),
        memory_bytes = matcher.memory_bytes(),
        "matcher replayed its decisions"
    );
    metrics::matcher_state(matcher.identities(), matcher.memory_bytes());

    // 2. Every Patient record after the last one decided, and stewards' decisions as they come.
    let records = consumer
        .fetch_metadata(Some(topics::RECORDS.name), Duration::from_secs(10))?
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(topics::RECORDS.partitions);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topics::IDENTITY.name, 0, Offset::Offset(identity_next))?;
    for p in 0..records {
        let from = resume
            .get(&p)
            .map(|o| Offset::Offset(o + 1))
            .unwrap_or(Offset::Beginning);
        tpl.add_partition_offset(topics::RECORDS.name, p, from)?;
    }
    consumer.assign(&tpl)?;
    let mut pending = FuturesOrdered::new();
    loop {
        tokio::select! {
            Some(published) = pending.next(), if !pending.is_empty() => {
                published?;
            }
            msg = consumer.recv() => {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(KafkaError::PartitionEOF(_)) => continue,
                    Err(e) => return Err(e.into()),
                };
                if msg.topic() == topics::IDENTITY.name {
                    if let Some(d) = decode_decision(&msg)? {
                        // The matcher's own are applied already, when decided.
                        if d.decided_by != MATCHER {
                            replay(&mut matcher, &d);
                        }
                    }
                    continue;
                }
                let Some(payload) = msg.payload() else { continue };
                if !schemas::is::<RecordReceived>(payload) {
                    continue;
                }
                let r = schemas::decode::<RecordReceived>(payload).map_err(|e| MatchingError::Decode {
                    topic: topics::RECORDS.name,
                    offset: msg.offset(),
                    error: e.to_string(),
                })?;
                let (Some(identity), "Patient") = (r.patient.clone(), r.resource_type.as_str()) else {
                    continue;
                };
                // A resource the views cannot parse (or whose claim check names no blob) is the
                // projector's quarantine's business; the matcher skips it. A blob store that
                // cannot be asked is waited for: the matcher starts over.
                let json = match crate::claim_check::resource_json(&r, blobs).await {
                    Ok(json) => json,
                    Err(crate::claim_check::Unresolved::Missing(_)) => continue,
                    Err(crate::claim_check::Unresolved::Store(e)) => return Err(e.into()),
                };
                let Ok(resource) = serde_json::from_str::<serde_json::Value>(&json) else {
                    continue;
                };
                let features = Features::from_patient(&resource);
                let decision = matcher.observe(&identity.assigning_authority, &identity.mrn, &features);
                let started = std::time::Instant::now();
                if let Some(model) = matcher.learn() {
                    tracing::info!(trained_on = %model, seconds = started.elapsed().as_secs_f64(), "matcher model estimated again");
                }
                let Some(event) = decision_event(
                    &decision,
                    identity,
                    &features,
                    &matcher.model().trained_on,
                    msg.partition(),
                    msg.offset(),
                ) else {
                    continue;
                };
                metrics::matcher_decided(action_name(event.action));
                metrics::matcher_state(matcher.identities(), matcher.memory_bytes());
                let producer: FutureProducer = producer.clone();
                pending.push_back(async move {
                    platform::kafka::publish(&producer, topics::IDENTITY.name, &event.key(), &event).await
                });
                if pending.len() >= IN_FLIGHT {
                    if let Some(published) = pending.next().await {
                        published?;
                    }
                }
            }
        }
    }
}

fn decode_decision(
    msg: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<Option<IdentityDecided>, MatchingError> {
    let Some(payload) = msg.payload() else {
        return Ok(None);
    };
    match schemas::decode::<IdentityDecided>(payload) {
        Ok(d) => Ok(Some(d)),
        // The views set an undecodable decision aside (quarantine); the matcher goes on without.
        Err(e) => {
            tracing::error!(offset = msg.offset(), error = %e, "undecodable identity decision skipped");
            Ok(None)
        }
    }
}

/// Applies a decision already in the log to the matcher's memory.
pub fn replay(matcher: &mut Matcher, d: &IdentityDecided) {
    let me = (
        d.identity.assigning_authority.as_str(),
        d.identity.mrn.as_str(),
    );
    if let Some(f) = &d.features {
        matcher.remember(me.0, me.1, &features_of(f));
    }
    let other = d
        .other
        .as_ref()
        .map(|o| (o.assigning_authority.as_str(), o.mrn.as_str()));
    match (d.action, other) {
        (IdentityAction::Link, Some(other)) => matcher.link(other, me),
        (IdentityAction::NotAMatch, Some(other)) => matcher.keep_apart(me, other),
        (IdentityAction::Unlink, _) => matcher.unlink(me),
        _ => {}
    }
}

fn action_name(a: IdentityAction) -> &'static str {
    match a {
        IdentityAction::NewPerson => "new_person",
        IdentityAction::Updated => "updated",
        IdentityAction::Link => "link",
        IdentityAction::Review => "review",
        IdentityAction::NotAMatch => "not_a_match",
        IdentityAction::Unlink => "unlink",
    }
}

fn features_of(f: &MatchFeatures) -> Features {
    Features {
        given: f.given.clone(),
        family: f.family.clone(),
        former_family: f.former_family.clone(),
        birth_date: f.birth_date.clone(),
        sex: f.sex.clone(),
        street: f.street.clone(),
        postal_code: f.postal_code.clone(),
        phone: f.phone.clone(),
        ssn: f.ssn.clone(),
    }
}

fn match_features(f: &Features) -> MatchFeatures {
    MatchFeatures {
        given: f.given.clone(),
        family: f.family.clone(),
        former_family: f.former_family.clone(),
        birth_date: f.birth_date.clone(),
        sex: f.sex.clone(),
        street: f.street.clone(),
        postal_code: f.postal_code.clone(),
        phone: f.phone.clone(),
        ssn: f.ssn.clone(),
    }
}

fn candidate(c: &mpi::Candidate) -> MatchCandidate {
    MatchCandidate {
        identity: PatientIdentity {
            assigning_authority: c.identity.0.clone(),
            mrn: c.identity.1.clone(),
        },
        score: c.score,
        comparison: c
            .comparison
            .named()
            .into_iter()
            .map(|(field, level)| FieldComparison {
                field: field.into(),
                level: level.into(),
            })
            .collect(),
    }
}

/// The event for a decision (`None` when nothing changed).
pub fn decision_event(
    decision: &Decision,
    identity: PatientIdentity,
    features: &Features,
    model: &str,
    partition: i32,
    offset: i64,
) -> Option<IdentityDecided> {
    let (action, candidates) = match decision {
        Decision::Unchanged => return None,
        Decision::Updated => (IdentityAction::Updated, Vec::new()),
        Decision::NewPerson => (IdentityAction::NewPerson, Vec::new()),
        Decision::Link(c) => (IdentityAction::Link, vec![candidate(c)]),
        Decision::Review(cs) => (IdentityAction::Review, cs.iter().map(candidate).collect()),
    };
    Some(IdentityDecided {
        event_id: uuid::Uuid::new_v4().to_string(),
        decided_at: schemas::now_micros(),
        action,
        identity,
        other: candidates.first().map(|c| c.identity.clone()),
        decided_by: MATCHER.into(),
        decider_role: MATCHER.into(),
        score: candidates.first().map(|c| c.score),
        candidates,
        features: Some(match_features(features)),
        model: Some(model.to_string()),
        source_partition: Some(partition),
        source_offset: Some(offset),
    })
}
