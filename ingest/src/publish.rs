//! Publishing events and waiting for the broker to make them durable.

use futures::future::try_join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use schemas::{Event, Position};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not acknowledge the record: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
    #[error("encoding: {0}")]
    Encode(#[from] schemas::CodecError),
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(producer: FutureProducer) -> Self {
        Publisher { producer }
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
        let payload = schemas::encode(event)?;
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        let delivery = self
            .producer
            .send(record, Timeout::Never)
            .await
            .map_err(|(e, _)| PublishError::Broker(e))?;
        let mut position = Position::new();
        position.include(topic, delivery.partition, delivery.offset);
        Ok(position)
    }

    /// Publish many events concurrently; returns once all are durable, or the first failure.
    pub async fn publish_all<E: Event>(
        &self,
        topic: &str,
        events: &[(String, E)],
    ) -> Result<Position, PublishError> {
        let positions =
            try_join_all(events.iter().map(|(key, e)| self.publish(topic, key, e))).await?;
        let mut all = Position::new();
        positions.iter().for_each(|p| all.merge(p));
        Ok(all)
    }
}
