//! The watch: on a timer of its own, with a Kafka client of its own (so a slow broker answer never
//! holds up consuming), it asks every partition's end (ListOffsets), compares it with the next
//! offset to apply, sets the lag gauge and marks a partition stalled when events have waited
//! `PROJECTOR_STALL_SECONDS` with none applied from it. It also checks that the log is still the
//! one the views were built from (`log_identity`, `log_cluster`): at start before anything is
//! applied, whenever a partition's end is below the next offset to apply, and every minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::health::{Health, Refusal, Seen};
use crate::store::{self, FirstRecord};

/// How long one question to the broker may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the log's first records are compared again while running.
const VERIFY_EVERY: Duration = Duration::from_secs(60);

/// What the broker holds at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The first record at or after the offset asked, with its fingerprint.
    Record { offset: i64, fingerprint: [u8; 32] },
    /// The partition ends at or before the offset asked (or no longer holds it).
    Absent,
    /// No answer in time: says nothing.
    Unknown,
}

/// Whether the partition's first record is still the one the views started from.
pub fn judge_first(recorded: &FirstRecord, seen: &At) -> Option<&'static str> {
    match seen {
        At::Record {
            offset,
            fingerprint,
        } if *offset == recorded.offset && fingerprint[..] == recorded.fingerprint[..] => None,
        // Another record there, or none at all: the log is kept forever, so this is another one.
        At::Record { .. } | At::Absent => Some("another_log"),
        At::Unknown => None,
    }
}

/// Whether the last record applied (`next - 1`) is still in the log.
pub fn judge_last(next: i64, seen: &At) -> Option<&'static str> {
    match seen {
        At::Absent if next > 0 => Some("offsets_beyond_end"),
        _ => None,
    }
}

/// A Kafka client of the watch's own. Its calls block: run them on a blocking thread.
pub struct Probe {
    consumer: BaseConsumer<platform::kafka::PartitionEofIsNoError>,
}

impl Probe {
    pub fn new(brokers: &str) -> Result<Probe, KafkaError> {
        let consumer: BaseConsumer<platform::kafka::PartitionEofIsNoError> =
            platform::kafka::client_config(brokers)
                .set(
                    "group.id",
                    format!("hie-projector-watch-{}", uuid::Uuid::new_v4()),
                )
                .set("enable.auto.commit", "false")
                // The end of a partition is an answer here, not an error.
                .set("enable.partition.eof", "true")
                .set("auto.offset.reset", "error")
                .create_with_context(platform::kafka::PartitionEofIsNoError)?;
        Ok(Probe { consumer })
    }

    /// The partition's end (ListOffsets, latest): a lower bound on some brokers. An error when
    /// the broker did not answer in time.
    pub fn end(&self, topic: &str, partition: i32) -> Result<Option<i64>, KafkaError> {
        match self
            .consumer
            .fetch_watermarks(topic, partition, ASK_TIMEOUT)
        {
            Ok((_, high)) => Ok((high >= 0).then_some(high)),
            Err(e) => {
                tracing::debug!(topic, partition, error = %e, "ListOffsets failed");
                Err(e)
            }
        }
    }

    /// Every partition's end, one after the other; once the broker fails to answer, the rest are
    /// not asked this time (a broker that is down costs one timeout, not one per partition).
    pub fn ends(&self, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
        let mut reachable = true;
        partitions
            .iter()
            .map(|(topic, partition)| {
                if !reachable {
                    return None;
                }
                self.end(topic, *partition).unwrap_or_else(|_| {
                    reachable = false;
                    None
                })
            })
            .collect()
    }

    pub fn cluster_id(&self) -> Option<String> {
        // A Metadata answer first: librdkafka keeps the cluster id it carries, and
        // `rd_kafka_clusterid` asked on a client not yet connected waits in steps of a second.
        let _ = self
            .consumer
            .fetch_metadata(Some(schemas::topics::SOURCES.name), ASK_TIMEOUT);
        self.consumer
            .client()
            .fetch_cluster_id(ASK_TIMEOUT)
            .filter(|id| !id.is_empty())
    }

    /// Reads the first record at or after `offset` (`Offset::Beginning`: the earliest).
    pub fn record_at(&self, topic: &str, partition: i32, offset: Offset) -> At {
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(topic, partition, offset).is_err()
            || self.consumer.assign(&tpl).is_err()
        {
            return At::Unknown;
        }
        let deadline = Instant::now() + ASK_TIMEOUT;
        let seen = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break At::Unknown;
            }
            match self.consumer.poll(left) {
                None => break At::Unknown,
                Some(Ok(m)) if m.topic() == topic && m.partition() == partition => {
                    break At::Record {
                        offset: m.offset(),
                        fingerprint: store::fingerprint(m.key(), m.payload().unwrap_or_default()),
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break At::Absent,
                Some(Err(e))
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::AutoOffsetReset)
                            | Some(RDKafkaErrorCode::OffsetOutOfRange)
                    ) =>
                {
                    break At::Absent
                }
                Some(Err(e)) => {
                    tracing::debug!(topic, partition, error = %e, "probe read failed");
                    continue;
                }
            }
        };
        let _ = self.consumer.unassign();
        seen
    }
}

/// The check before anything is applied: the broker's cluster, each partition's first record,
/// and (when the partition's end is below it) the last record applied. Views built before
/// `log_identity` existed adopt the log's earliest records, unless their offsets are beyond its
/// end. Refusals go to `health`; returns whether the log is the views' own.
pub async fn check_at_start(
    pool: &Pool,
    probe: &Arc<Probe>,
    health: &Health,
) -> Result<bool, store::StoreError> {
    let started = Instant::now();
    let reported = {
        let probe = probe.clone();
        tokio::task::spawn_blocking(move || probe.cluster_id())
            .await
            .unwrap_or(None)
    };
    let recorded = store::log_cluster(pool, reported.as_deref()).await?;
    if let (Some(recorded), Some(reported)) = (&recorded, &reported) {
        if recorded != reported {
            tracing::error!(
                recorded_cluster_id = %recorded,
                broker_cluster_id = %reported,
                "the broker is another Kafka cluster than the one the views were built from: nothing will be applied (rebuild the views from this log: SELECT hie_forget_log(), then restart; see ARCHITECTURE.md)"
            );
            health.refuse(Refusal {
                reason: "another_cluster",
                partition: None,
            });
        }
    }
    verify(pool, probe, health, &health.tracked(), true).await?;
    tracing::info!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        own_log = !health.refused(),
        "the log checked against the views' own"
    );
    Ok(!health.refused())
}

/// Compares the partitions' first records with the recorded ones and, for those `suspect` of it
/// (or all, at start, whose end ListOffsets puts below the next offset), checks the last record
/// applied is still there.
async fn verify(
    pool: &Pool,
    probe: &Arc<Probe>,
    health: &Health,
    partitions: &[((String, i32), i64)],
    at_start: bool,
) -> Result<(), store::StoreError> {
    let firsts = store::log_identity(pool).await?;
    let work: Vec<((String, i32), i64, Option<FirstRecord>)> = partitions
        .iter()
        .map(|(key, next)| (key.clone(), *next, firsts.get(key).cloned()))
        .collect();
    let probe = probe.clone();
    type Verdict = (
        (String, i32),
        i64,
        Option<i64>,
        Vec<&'static str>,
        Option<FirstRecord>,
    );
    let verdicts: Vec<Verdict> = tokio::task::spawn_blocking(move || {
        // Once the broker fails to answer, the other partitions are left for the next check.
        let mut reachable = true;
        work.into_iter()
            .map(|((topic, partition), next, first)| {
                let mut reasons = Vec::new();
                if !reachable {
                    return ((topic, partition), next, None, reasons, None);
                }
                let mut look = |offset| {
                    let seen = probe.record_at(&topic, partition, offset);
                    reachable &= seen != At::Unknown;
                    seen
                };
                let mut adopt = None;
                match &first {
                    Some(first) => {
                        let seen = look(Offset::Offset(first.offset));
                        reasons.extend(judge_first(first, &seen));
                    }
                    None if next > 0 => {
                        // Views from before log_identity: adopt the earliest record (below).
                        if let At::Record {
                            offset,
                            fingerprint,
                        } = look(Offset::Beginning)
                        {
                            adopt = Some(FirstRecord {
                                offset,
                                fingerprint: fingerprint.to_vec(),
                            });
                        }
                    }
                    None => {}
                }
                // At start, a partition never applied from has nothing to check: no question to
                // the broker (the matcher waits for this check).
                let end = if next > 0 || !at_start {
                    probe.end(&topic, partition).unwrap_or_else(|_| {
                        reachable = false;
                        None
                    })
                } else {
                    None
                };
                // While running (the partitions whose end was seen below `next`, and every one
                // once a minute), the last record applied is looked for whatever ListOffsets says:
                // it may report too low an end.
                let below = next > 0 && (!at_start || end.is_none_or(|end| end < next));
                if below && reachable {
                    let seen = probe.record_at(&topic, partition, Offset::Offset(next - 1));
                    reachable &= seen != At::Unknown;
                    reasons.extend(judge_last(next, &seen));
                }
                ((topic, partition), next, end, reasons, adopt)
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    for ((topic, partition), next, end, reasons, adopt) in verdicts {
        if end.is_some() {
            health.with_partition(&topic, partition, |p| p.end = end);
        }
        for reason in &reasons {
            let recorded = firsts.get(&(topic.clone(), partition));
            tracing::error!(
                topic = %topic,
                partition,
                next_offset = next,
                end_offset = end,
                first_offset = recorded.map(|f| f.offset),
                reason,
                "the log is not the one the views were built from: nothing will be applied (rebuild the views from this log: SELECT hie_forget_log(), then restart; see ARCHITECTURE.md)"
            );
            health.refuse(Refusal {
                reason,
                partition: Some((topic.clone(), partition)),
            });
        }
        if let (Some(first), true) = (adopt, reasons.is_empty()) {
            tracing::info!(topic = %topic, partition, first_offset = first.offset, "views built before log_identity: the log's earliest record recorded as their first");
            store::record_first(pool, &topic, partition, &first).await?;
        }
    }
    Ok(())
}

/// Runs until `stop` turns true.
pub async fn run(
    pool: Pool,
    probe: Arc<Probe>,
    consumer: Option<Arc<StreamConsumer>>,
    health: Health,
    mut stop: watch::Receiver<bool>,
) {
    let stall = health.stall();
    let every = (stall / 5).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut last_verified = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let tracked = health.tracked();
        let listed: Vec<Option<i64>> = {
            let probe = probe.clone();
            let keys: Vec<(String, i32)> = tracked.iter().map(|(k, _)| k.clone()).collect();
            let asking = tokio::task::spawn_blocking(move || probe.ends(&keys));
            // Stopping never waits for the broker's answer.
            tokio::select! {
                listed = asking => listed.unwrap_or_default(),
                _ = stop.changed() => return,
            }
        };
        let now = Instant::now();
        let mut suspects = Vec::new();
        for (((topic, partition), _), listed) in tracked.iter().zip(listed) {
            let fetched = consumer
                .as_deref()
                .and_then(|c| crate::consume::cached_high_watermark(c, topic, *partition));
            let Some((seen, p)) = health.with_partition(topic, *partition, |p| {
                (p.observe(listed, fetched, now, stall), p.clone())
            }) else {
                continue;
            };
            crate::metrics::lag(topic, *partition, p.lag());
            match seen {
                Seen::Stalled => tracing::error!(
                    topic = %topic,
                    partition,
                    next_offset = p.next,
                    end_offset = p.end,
                    stall_seconds = stall.as_secs(),
                    "partition stalled: offset {} has waited to be applied longer than the stall limit",
                    p.next
                ),
                Seen::BehindNext | Seen::Fine | Seen::StillStalled => {}
            }
            // ListOffsets below the next offset is reason enough to look (not to refuse): a
            // fetch's high watermark kept from before a topic was replaced would hide it, and
            // the look reads the last record applied, whatever either end says.
            if seen == Seen::BehindNext || listed.is_some_and(|end| end < p.next) {
                suspects.push(((topic.clone(), *partition), p.next));
            }
        }
        let due = now.duration_since(last_verified) >= VERIFY_EVERY;
        if !suspects.is_empty() || due {
            let partitions = if due { tracked.clone() } else { suspects };
            last_verified = now;
            let refused_before = health.refused();
            let verified = tokio::select! {
                verified = verify(&pool, &probe, &health, &partitions, false) => verified,
                _ = stop.changed() => return,
            };
            if let Err(e) = verified {
                tracing::warn!(error = %e, "checking the log's identity failed; trying again later");
            }
            if !refused_before && health.refused() {
                tracing::error!("the projector stopped applying: the log changed under it");
            }
        }
    }
}

/// The next offset to apply for every partition this projector owns, for the watch.
pub fn tracked(
    owned: &[(String, i32)],
    stored: &HashMap<(String, i32), i64>,
) -> Vec<((String, i32), i64)> {
    owned
        .iter()
        .map(|k| (k.clone(), stored.get(k).copied().unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first() -> FirstRecord {
        FirstRecord {
            offset: 0,
            fingerprint: store::fingerprint(Some(b"k"), b"payload").to_vec(),
        }
    }

    #[test]
    fn the_same_first_record_is_the_same_log() {
        let seen = At::Record {
            offset: 0,
            fingerprint: store::fingerprint(Some(b"k"), b"payload"),
        };
        assert_eq!(judge_first(&first(), &seen), None);
    }

    #[test]
    fn another_first_record_or_none_is_another_log() {
        let other = At::Record {
            offset: 0,
            fingerprint: store::fingerprint(Some(b"k"), b"other payload"),
        };
        assert_eq!(judge_first(&first(), &other), Some("another_log"));
        let later = At::Record {
            offset: 3,
            fingerprint: store::fingerprint(Some(b"k"), b"payload"),
        };
        assert_eq!(judge_first(&first(), &later), Some("another_log"));
        assert_eq!(judge_first(&first(), &At::Absent), Some("another_log"));
        // No answer is no verdict.
        assert_eq!(judge_first(&first(), &At::Unknown), None);
    }

    #[test]
    fn the_last_applied_record_missing_is_offsets_beyond_end() {
        assert_eq!(judge_last(7508, &At::Absent), Some("offsets_beyond_end"));
        assert_eq!(judge_last(7508, &At::Unknown), None);
        let there = At::Record {
            offset: 7507,
            fingerprint: [0; 32],
        };
        assert_eq!(judge_last(7508, &there), None);
        assert_eq!(judge_last(0, &At::Absent), None);
    }

    #[test]
    fn fingerprints_tell_an_absent_key_from_an_empty_one() {
        assert_ne!(
            store::fingerprint(None, b"x"),
            store::fingerprint(Some(b""), b"x")
        );
        assert_ne!(
            store::fingerprint(Some(b"ab"), b"c"),
            store::fingerprint(Some(b"a"), b"bc")
        );
    }

    #[test]
    fn partitions_never_applied_start_at_zero() {
        let owned = vec![
            ("hie.records".to_string(), 0),
            ("hie.records".to_string(), 1),
        ];
        let stored = HashMap::from([(("hie.records".to_string(), 1), 42)]);
        assert_eq!(
            tracked(&owned, &stored),
            vec![
                (("hie.records".to_string(), 0), 0),
                (("hie.records".to_string(), 1), 42)
            ]
        );
    }
}
