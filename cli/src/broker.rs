//! `hiectl check-broker`: does the broker answer real Kafka requests? For `deploy/local/up` and
//! its supervisor, which must not take a live process id (or an open port) for a working broker.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A Metadata request for every topic and a ListOffsets for each partition of the records topic:
/// the broker reads its storage to answer both. Returns a one-line summary.
pub fn check(brokers: &str, timeout: Duration) -> Result<String> {
    let started = Instant::now();
    let consumer: BaseConsumer = platform::kafka::client_config(brokers)
        .set("group.id", "hiectl-check-broker")
        .create()
        .context("creating a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .with_context(|| format!("metadata from {brokers}"))?;
    let topic = schemas::topics::RECORDS.name;
    let mut summary = format!(
        "{} topic(s) on {} broker(s)",
        metadata.topics().len(),
        metadata.brokers().len()
    );
    // A fresh broker has no topics yet (the services create them): metadata alone then.
    if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
        if let Some(e) = t.error() {
            bail!("metadata for {topic}: {e:?}");
        }
        let mut ends = Vec::new();
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .with_context(|| format!("offsets of {topic}/{}", p.id()))?;
            ends.push(high.to_string());
        }
        summary.push_str(&format!("; {topic} ends at [{}]", ends.join(", ")));
    }
    Ok(format!(
        "{summary}; answered in {} ms",
        started.elapsed().as_millis()
    ))
}
