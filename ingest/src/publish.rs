//! Publishing events and waiting for the broker to make them durable.

pub use platform::kafka::PublishError;
use rdkafka::producer::FutureProducer;
use schemas::{Event, Position};

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    admission: crate::admission::Admission,
}

impl Publisher {
    pub fn new(producer: FutureProducer, admission: crate::admission::Admission) -> Self {
        Publisher {
            producer,
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
}
