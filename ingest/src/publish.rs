//! Publishing events and waiting for the broker to make them durable; resources too large for an
//! event are first made durable in the blob store (the claim-check path).

use std::sync::Arc;

use platform::blobs::BlobStore;
pub use platform::kafka::PublishError;
use rdkafka::producer::FutureProducer;
use schemas::{BlobReference, Event, Position, RecordReceived};

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    claim_check: ClaimCheck,
    admission: crate::admission::Admission,
}

/// Where large resources go, and from what size.
#[derive(Clone)]
pub struct ClaimCheck {
    pub store: Arc<dyn BlobStore>,
    /// A resource whose JSON is longer than this many bytes travels as a claim check.
    pub threshold: usize,
}

impl Publisher {
    pub fn new(
        producer: FutureProducer,
        claim_check: ClaimCheck,
        admission: crate::admission::Admission,
    ) -> Self {
        Publisher {
            producer,
            claim_check,
            admission,
        }
    }

    /// Whether new records may be published now (the views keep up); asked before anything of a
    /// request is published, so a refused request publishes nothing.
    pub fn admit(&self) -> Result<(), PublishError> {
        self.admission.check()
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Publish one event; returns once it is durable, with where it was written.
    pub async fn publish<E: Event>(
        &self,
        topic: &str,
        key: &str,
        event: &E,
    ) -> Result<Position, PublishError> {
        platform::kafka::publish(&self.producer, topic, key, event).await
    }

    /// Publish many events together (encoded, then all handed to the producer before any ack is
    /// awaited); returns once all are durable, or the first failure.
    pub async fn publish_all<E: Event>(
        &self,
        topic: &str,
        events: &[(String, E)],
    ) -> Result<Position, PublishError> {
        if events.is_empty() {
            return Ok(Position::new());
        }
        platform::kafka::publish_batch(
            &self.producer,
            topic,
            events.iter().map(|(key, e)| (key.as_str(), e)),
        )
        .await
    }

    /// Records whose resource is over the threshold: their JSON is made durable in the blob store
    /// (once per content: the address is its SHA-256) and the event carries the reference instead.
    /// Called before the events are published, so no event names a blob that is not there.
    pub async fn claim_check(
        &self,
        records: &mut [(String, RecordReceived)],
    ) -> Result<(), PublishError> {
        for (_, event) in records.iter_mut() {
            let Some(reference) = reference_for(&event.resource_json, self.claim_check.threshold)
            else {
                continue;
            };
            let stored = self
                .claim_check
                .store
                .put(&reference.sha256, event.resource_json.as_bytes())
                .await?;
            crate::metrics::claim_checked(event.resource_json.len(), stored);
            event.resource_json = String::new();
            event.resource_blob = Some(reference);
        }
        Ok(())
    }
}

/// The claim check for a resource's JSON, when it is longer than `threshold` bytes.
fn reference_for(resource_json: &str, threshold: usize) -> Option<BlobReference> {
    (resource_json.len() > threshold).then(|| BlobReference {
        sha256: platform::blobs::address(resource_json.as_bytes()),
        size: resource_json.len() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resources_over_the_threshold_are_claim_checked() {
        assert_eq!(reference_for("{}", 2), None);
        let r = reference_for("{\"a\":1}", 2).unwrap();
        assert_eq!(r.size, 7);
        assert_eq!(r.sha256, platform::blobs::address(b"{\"a\":1}"));
        assert_eq!(r.sha256.len(), 64);
    }
}
