//! The one way records enter the log, whatever the channel (HTTP, MLLP, drop folder): normalized
//! records become `RecordReceived` events, rejections become `RecordRejected` dead letters, and
//! both are published and acknowledged by the broker before the caller answers its sender. A
//! resource over `INGEST_CLAIM_CHECK_BYTES` is kept in the blob store first, and its event carries
//! the claim check (`Publisher::claim_check`).

use schemas::{topics, PatientMerged, Position, RecordReceived, RecordRejected, SourceRegistered};

use crate::fhir::{Record, Rejection};
use crate::hl7::Merge;
use crate::publish::{PublishError, Publisher};

/// Where a batch of records came from.
#[derive(Debug, Clone)]
pub struct Provenance<'a> {
    pub source: &'a SourceRegistered,
    pub channel: &'a str,
    pub message_id: &'a str,
    pub received_at: i64,
}

impl Provenance<'_> {
    pub fn record_event(&self, r: Record) -> (String, RecordReceived) {
        let sensitivity = if self.source.part2 { "part2" } else { "normal" };
        let event = RecordReceived {
            event_id: uuid::Uuid::new_v4().to_string(),
            source_id: self.source.source_id.clone(),
            organization_id: self.source.organization_id.clone(),
            channel: self.channel.to_string(),
            received_at: self.received_at,
            message_id: self.message_id.to_string(),
            patient: r.patient,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            version: r.last_updated.unwrap_or(self.received_at),
            sensitivity: sensitivity.to_string(),
            // serde_json::to_string writes into one growing buffer; `Value`'s `Display` (what
            // `.to_string()` calls) goes through a `fmt::Formatter` write by write: twice the work
            // for the same bytes, and this runs once per record.
            resource_json: serde_json::to_string(&r.resource).expect("a JSON value serializes"),
            // Set by `Publisher::claim_check` when the resource is too large to travel inline.
            resource_blob: None,
        };
        (event.key(), event)
    }

    /// Keyed by the prior patient (`PatientMerged::key`): see ARCHITECTURE.md, "A merge's path".
    pub fn merge_event(&self, m: Merge) -> (String, PatientMerged) {
        let event = PatientMerged {
            event_id: uuid::Uuid::new_v4().to_string(),
            merged_at: self.received_at,
            source_id: self.source.source_id.clone(),
            organization_id: self.source.organization_id.clone(),
            channel: self.channel.to_string(),
            message_id: self.message_id.to_string(),
            survivor: m.survivor,
            prior: m.prior,
        };
        (event.key(), event)
    }

    pub fn dead_letter(&self, rejection: &Rejection) -> (String, RecordRejected) {
        let event = dead_letter(
            Some(&self.source.source_id),
            self.channel,
            self.message_id,
            Some(rejection.index as i64),
            &rejection.error,
            rejection.raw.as_bytes(),
            self.received_at,
        );
        (event.key(), event)
    }
}

/// A dead letter for input that may not even have a known source.
pub fn dead_letter(
    source_id: Option<&str>,
    channel: &str,
    message_id: &str,
    index: Option<i64>,
    reason: &str,
    payload: &[u8],
    at: i64,
) -> RecordRejected {
    RecordRejected {
        event_id: uuid::Uuid::new_v4().to_string(),
        rejected_at: at,
        source_id: source_id.map(str::to_string),
        channel: channel.to_string(),
        message_id: message_id.to_string(),
        index,
        reason: reason.to_string(),
        payload: payload.to_vec(),
    }
}

/// Publish `records` and dead-letter `rejections`; returns once the broker acknowledged all,
/// with where the records were written.
pub async fn publish(
    publisher: &Publisher,
    from: &Provenance<'_>,
    records: Vec<Record>,
    rejections: &[Rejection],
) -> Result<Position, PublishError> {
    let mut records: Vec<_> = records.into_iter().map(|r| from.record_event(r)).collect();
    // Large resources are durable in the blob store before any event names them.
    publisher.claim_check(&mut records).await?;
    let dead_letters: Vec<_> = rejections.iter().map(|r| from.dead_letter(r)).collect();
    let (position, _) = tokio::try_join!(
        publisher.publish_all(topics::RECORDS.name, &records),
        publisher.publish_all(topics::DEAD_LETTERS.name, &dead_letters),
    )?;
    let source = from.source.source_id.as_str();
    crate::metrics::published(source, from.channel, records.len());
    crate::metrics::rejected(source, from.channel, dead_letters.len());
    tracing::info!(
        source,
        channel = from.channel,
        accepted = records.len(),
        rejected = dead_letters.len(),
        "records published"
    );
    Ok(position)
}

/// Publish a merge message: the survivor's updated Patient first, then the merges; returns once
/// the broker acknowledged all.
pub async fn publish_merges(
    publisher: &Publisher,
    from: &Provenance<'_>,
    records: Vec<Record>,
    merges: Vec<Merge>,
) -> Result<Position, PublishError> {
    let mut position = publish(publisher, from, records, &[]).await?;
    let merges: Vec<_> = merges.into_iter().map(|m| from.merge_event(m)).collect();
    position.merge(&publisher.publish_all(topics::RECORDS.name, &merges).await?);
    tracing::info!(
        source = from.source.source_id.as_str(),
        channel = from.channel,
        merges = merges.len(),
        "patient merges published"
    );
    Ok(position)
}
