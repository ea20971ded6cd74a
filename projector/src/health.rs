//! What `/healthz` reports beyond the database: whether the views keep up with the log, per
//! partition, and whether the log is still the one the views were built from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Shared by the batch loop (progress), the watch (ends, stalls, the log's identity) and `/healthz`.
#[derive(Clone)]
pub struct Health {
    started: Instant,
    /// Milliseconds since `started` when the batch in hand arrived (0: none in hand). Events in
    /// hand are lag; that it stays for `stall` means nothing is being applied.
    pending_since_ms: Arc<AtomicU64>,
    gap: Arc<AtomicBool>,
    stall: Duration,
    partitions: Arc<Mutex<BTreeMap<(String, i32), Partition>>>,
    refusals: Arc<Mutex<Vec<Refusal>>>,
}

/// Why the projector refuses the log it is pointed at: it is not the one the views were built
/// from. Names a topic and partition (or the cluster), never a record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `another_log` (the partition's first record is not the one the views started from),
    /// `offsets_beyond_end` (the last record applied is not in the log), `another_cluster`.
    pub reason: &'static str,
    /// `None` for the cluster.
    pub partition: Option<(String, i32)>,
}

/// One partition as the watch sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    /// The next offset to apply: the stored one at start, then one past the last applied.
    pub next: i64,
    /// The partition's end as last seen (the larger of ListOffsets' and the last fetch's high
    /// watermark, both lower bounds of the true end); `None` until seen.
    pub end: Option<i64>,
    /// Since when events have waited on this partition with none applied from it.
    waiting_since: Option<Instant>,
    pub stalled: bool,
}

/// What one look at a partition's end showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing to say (caught up, or events waiting for less than the stall limit).
    Fine,
    /// Events have waited the stall limit with none applied: just now (`Stalled`) or since
    /// before (`StillStalled`).
    Stalled,
    StillStalled,
    /// Every end seen is below the next offset to apply: the log may have been replaced.
    BehindNext,
}

impl Partition {
    /// A look at the partition's end: `listed` from ListOffsets (some brokers report too low an
    /// end: only a lower bound), `fetched` from the last fetch's high watermark. The end taken is
    /// the larger, so ListOffsets never hides what fetches showed.
    pub fn observe(
        &mut self,
        listed: Option<i64>,
        fetched: Option<i64>,
        now: Instant,
        stall: Duration,
    ) -> Seen {
        let Some(end) = listed.max(fetched) else {
            return Seen::Fine;
        };
        self.end = Some(end);
        if end < self.next {
            self.waiting_since = None;
            return Seen::BehindNext;
        }
        if end == self.next {
            self.waiting_since = None;
            self.stalled = false;
            return Seen::Fine;
        }
        let since = *self.waiting_since.get_or_insert(now);
        if now.saturating_duration_since(since) < stall {
            return Seen::Fine;
        }
        if std::mem::replace(&mut self.stalled, true) {
            Seen::StillStalled
        } else {
            Seen::Stalled
        }
    }

    /// Events applied up to `next` (exclusive). Progress ends a stall; the wait starts again.
    /// True when it ended one.
    pub fn progressed(&mut self, next: i64) -> bool {
        if next <= self.next {
            return false;
        }
        self.next = next;
        self.waiting_since = None;
        std::mem::replace(&mut self.stalled, false)
    }

    /// Events the views have not applied yet, as far as the end seen tells.
    pub fn lag(&self) -> i64 {
        self.end.map_or(0, |end| (end - self.next).max(0))
    }
}

/// Why `/healthz` is 503.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub details: Vec<Value>,
}

impl Health {
    pub fn new(stall: Duration) -> Self {
        Health {
            started: Instant::now(),
            pending_since_ms: Arc::default(),
            gap: Arc::default(),
            stall,
            partitions: Arc::default(),
            refusals: Arc::default(),
        }
    }

    pub fn stall(&self) -> Duration {
        self.stall
    }

    /// The partitions this projector applies, each at the next offset to apply.
    pub fn track(&self, partitions: impl IntoIterator<Item = ((String, i32), i64)>) {
        let mut map = self.partitions.lock().expect("health lock");
        for (key, next) in partitions {
            map.entry(key).or_default().next = next;
        }
    }

    pub fn tracked(&self) -> Vec<((String, i32), i64)> {
        let map = self.partitions.lock().expect("health lock");
        map.iter().map(|(k, p)| (k.clone(), p.next)).collect()
    }

    /// Runs `f` on the partition's state (`None` when not tracked).
    pub fn with_partition<R>(
        &self,
        topic: &str,
        partition: i32,
        f: impl FnOnce(&mut Partition) -> R,
    ) -> Option<R> {
        let mut map = self.partitions.lock().expect("health lock");
        map.get_mut(&(topic.to_string(), partition)).map(f)
    }

    pub(crate) fn pending(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let _ = self.pending_since_ms.compare_exchange(
            0,
            now.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A batch was applied: `next` per partition it advanced.
    pub(crate) fn applied(&self, next: &BTreeMap<(&str, i32), i64>) {
        self.pending_since_ms.store(0, Ordering::Relaxed);
        let mut map = self.partitions.lock().expect("health lock");
        for ((topic, partition), next) in next {
            if let Some(p) = map.get_mut(&(topic.to_string(), *partition)) {
                if p.progressed(*next) {
                    tracing::info!(
                        topic,
                        partition,
                        next_offset = next,
                        "partition applying again"
                    );
                }
            }
        }
    }

    pub(crate) fn set_gap(&self) {
        self.gap.store(true, Ordering::Relaxed);
    }

    /// Refuse the log: nothing more is applied, `/healthz` is 503 with `refusal` until a restart
    /// finds the log is the views' again.
    pub fn refuse(&self, refusal: Refusal) {
        let mut refusals = self.refusals.lock().expect("health lock");
        if !refusals.contains(&refusal) {
            refusals.push(refusal);
        }
    }

    pub fn refused(&self) -> bool {
        !self.refusals.lock().expect("health lock").is_empty()
    }

    /// `Some(why)` when the projector is not keeping the views up to date: it refuses the log, the
    /// log has a gap, a partition's events wait with none applied, or the batch in hand has waited
    /// longer than the stall limit (the database down).
    pub fn problem(&self) -> Option<Problem> {
        let refusals = self.refusals.lock().expect("health lock").clone();
        if let Some(first) = refusals.first() {
            let details = refusals
                .iter()
                .map(|r| match &r.partition {
                    Some((topic, partition)) => {
                        let p = self.with_partition(topic, *partition, |p| p.clone());
                        json!({
                            "reason": r.reason, "topic": topic, "partition": partition,
                            "next_offset": p.as_ref().map(|p| p.next),
                            "end_offset": p.as_ref().and_then(|p| p.end),
                        })
                    }
                    None => json!({"reason": r.reason}),
                })
                .collect();
            return Some(Problem {
                reason: first.reason,
                details,
            });
        }
        if self.gap.load(Ordering::Relaxed) {
            return Some(Problem {
                reason: "gap_in_log",
                details: vec![],
            });
        }
        let stalled: Vec<Value> = {
            let map = self.partitions.lock().expect("health lock");
            map.iter()
                .filter(|(_, p)| p.stalled)
                .map(|((topic, partition), p)| {
                    json!({"reason": "stalled", "topic": topic, "partition": partition,
                           "next_offset": p.next, "end_offset": p.end})
                })
                .collect()
        };
        let since = self.pending_since_ms.load(Ordering::Relaxed);
        let batch_stalled = since != 0
            && self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(since))
                >= self.stall;
        (batch_stalled || !stalled.is_empty()).then_some(Problem {
            reason: "stalled",
            details: stalled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(30);

    #[test]
    fn a_partition_whose_end_is_beyond_next_stalls_after_the_limit() {
        let t0 = Instant::now();
        let mut p = Partition {
            next: 10,
            ..Default::default()
        };
        assert_eq!(p.observe(Some(15), None, t0, STALL), Seen::Fine);
        assert_eq!(p.lag(), 5);
        assert_eq!(
            p.observe(Some(15), None, t0 + Duration::from_secs(29), STALL),
            Seen::Fine
        );
        assert_eq!(p.observe(Some(15), None, t0 + STALL, STALL), Seen::Stalled);
        assert!(p.stalled);
        assert_eq!(
            p.observe(Some(16), None, t0 + STALL * 2, STALL),
            Seen::StillStalled
        );
        assert_eq!(p.lag(), 6);
        // Progress ends it, and the wait starts again from the next look.
        assert!(p.progressed(12));
        assert!(!p.stalled);
        let t1 = t0 + STALL * 3;
        assert_eq!(p.observe(Some(16), None, t1, STALL), Seen::Fine);
        assert_eq!(p.observe(Some(16), None, t1 + STALL, STALL), Seen::Stalled);
    }

    #[test]
    fn a_partition_caught_up_or_idle_never_stalls() {
        let t0 = Instant::now();
        let mut p = Partition {
            next: 7,
            ..Default::default()
        };
        for i in 0..10 {
            assert_eq!(
                p.observe(Some(7), Some(7), t0 + STALL * i, STALL),
                Seen::Fine
            );
        }
        assert_eq!(p.lag(), 0);
        // A new event after a long idle time waits afresh.
        assert_eq!(p.observe(Some(8), None, t0 + STALL * 11, STALL), Seen::Fine);
    }

    #[test]
    fn list_offsets_too_low_never_hides_what_fetches_showed() {
        let t0 = Instant::now();
        let mut p = Partition {
            next: 100,
            ..Default::default()
        };
        // A broker whose ListOffsets says 40 while fetches said 120: the end is 120.
        assert_eq!(p.observe(Some(40), Some(120), t0, STALL), Seen::Fine);
        assert_eq!(p.end, Some(120));
        assert_eq!(p.lag(), 20);
        assert_eq!(
            p.observe(Some(40), Some(120), t0 + STALL, STALL),
            Seen::Stalled
        );
        // And with nothing from fetches, ListOffsets still counts as a lower bound.
        let mut q = Partition {
            next: 3,
            ..Default::default()
        };
        assert_eq!(q.observe(Some(9), None, t0, STALL), Seen::Fine);
        assert_eq!(q.lag(), 6);
    }

    #[test]
    fn an_end_below_next_is_reported_not_counted_as_lag() {
        let t0 = Instant::now();
        let mut p = Partition {
            next: 7508,
            ..Default::default()
        };
        assert_eq!(p.observe(Some(258), None, t0, STALL), Seen::BehindNext);
        assert_eq!(p.lag(), 0);
        assert!(!p.stalled);
        // Unknown ends say nothing.
        assert_eq!(p.observe(None, None, t0, STALL), Seen::Fine);
    }

    #[test]
    fn progress_backwards_is_ignored() {
        let mut p = Partition {
            next: 10,
            ..Default::default()
        };
        assert!(!p.progressed(5));
        assert_eq!(p.next, 10);
    }

    #[test]
    fn healthz_names_the_stalled_partition_and_refusals_come_first() {
        let h = Health::new(Duration::from_secs(0));
        h.track([(("hie.records".to_string(), 2), 4)]);
        assert_eq!(h.problem(), None);
        h.with_partition("hie.records", 2, |p| {
            p.observe(Some(9), None, Instant::now(), Duration::ZERO)
        });
        let problem = h.problem().unwrap();
        assert_eq!(problem.reason, "stalled");
        assert_eq!(
            problem.details,
            vec![
                json!({"reason": "stalled", "topic": "hie.records", "partition": 2, "next_offset": 4, "end_offset": 9})
            ]
        );
        h.refuse(Refusal {
            reason: "another_log",
            partition: Some(("hie.records".to_string(), 2)),
        });
        h.refuse(Refusal {
            reason: "another_log",
            partition: Some(("hie.records".to_string(), 2)),
        });
        let problem = h.problem().unwrap();
        assert_eq!(problem.reason, "another_log");
        assert_eq!(problem.details.len(), 1);
        assert_eq!(problem.details[0]["topic"], "hie.records");
        assert!(h.refused());
    }
}
