//! The audit trail and Break-the-Glass grants, published before anything is served: if an event
//! cannot be made durable, the request fails closed.

use std::time::Duration;

use platform::auth::{Role, User};
use platform::kafka::PublishError;
use rdkafka::producer::FutureProducer;
use schemas::{
    now_micros, topics, AccessRecorded, AccountRecorded, BreakGlassRecorded, CredentialRecorded,
    Event, Position,
};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit trail is unavailable: {0}")]
    Publish(#[from] PublishError),
    #[error("the audit trail did not acknowledge in time")]
    TimedOut,
}

/// One read (or refusal) to record.
pub struct Access<'a> {
    pub user: &'a User,
    /// The role the access was made under.
    pub role: Role,
    pub patient: Uuid,
    pub action: String,
    pub basis: &'static str,
    pub outcome: String,
    pub returned: usize,
    pub withheld: usize,
}

fn access_event(a: Access<'_>) -> AccessRecorded {
    AccessRecorded {
        event_id: Uuid::new_v4().to_string(),
        at: now_micros(),
        user_id: a.user.id.clone(),
        user_email: a.user.email.clone(),
        organization_id: a.user.org.clone(),
        role: a.role.to_string(),
        patient_id: a.patient.to_string(),
        action: a.action,
        basis: a.basis.to_string(),
        outcome: a.outcome,
        returned: a.returned as i64,
        withheld: a.withheld as i64,
    }
}

#[derive(Clone)]
pub struct Auditor {
    producer: FutureProducer,
    /// The longest a request waits for its audit event; the producer's own delivery timeout is
    /// the same, this bounds the wait even if a delivery report never comes.
    timeout: Duration,
}

impl Auditor {
    pub fn new(brokers: &str, timeout: Duration) -> Result<Self, platform::kafka::KafkaSetupError> {
        Ok(Auditor {
            producer: platform::kafka::producer(brokers, timeout)?,
            timeout,
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    async fn publish<E: Event>(
        &self,
        topic: &str,
        key: &str,
        event: &E,
    ) -> Result<Position, AuditError> {
        let send = platform::kafka::publish(&self.producer, topic, key, event);
        Ok(
            tokio::time::timeout(self.timeout + Duration::from_secs(1), send)
                .await
                .map_err(|_| AuditError::TimedOut)??,
        )
    }

    /// Record an access; returns once it is durable.
    pub async fn access(&self, a: Access<'_>) -> Result<(), AuditError> {
        self.publish_access(access_event(a)).await
    }

    /// Record several accesses (the patients a search showed), published together; returns once
    /// every one is durable.
    pub async fn accesses(&self, list: Vec<Access<'_>>) -> Result<(), AuditError> {
        let mut pending = tokio::task::JoinSet::new();
        for a in list {
            let (auditor, event) = (self.clone(), access_event(a));
            pending.spawn(async move { auditor.publish_access(event).await });
        }
        while let Some(done) = pending.join_next().await {
            done.map_err(|_| AuditError::TimedOut)??;
        }
        Ok(())
    }

    async fn publish_access(&self, event: AccessRecorded) -> Result<(), AuditError> {
        let recorded = self
            .publish(topics::ACCESS.name, &event.patient_id, &event)
            .await;
        match &recorded {
            Ok(_) => crate::metrics::access(&event.basis, &event.outcome),
            Err(_) => crate::metrics::audit_failed("access"),
        }
        recorded.map(|_| ())
    }

    /// Record a data steward's identity decision (`hie.identity`); returns its position once
    /// durable: the decision is its own audit record.
    pub async fn identity(&self, event: &schemas::IdentityDecided) -> Result<Position, AuditError> {
        self.publish(topics::IDENTITY.name, &event.key(), event)
            .await
    }

    /// Record an account's new state; returns its position once durable.
    pub async fn account(&self, event: &AccountRecorded) -> Result<Position, AuditError> {
        self.publish(topics::ACCOUNTS.name, &event.user_id, event)
            .await
    }

    /// Record a consent decision taken in the portal (`hie.consents`, keyed by the patient's
    /// source identity, as ingest does); returns its position once durable.
    pub async fn consent(&self, event: &schemas::ConsentRecorded) -> Result<Position, AuditError> {
        self.publish(topics::CONSENTS.name, &event.patient.key(), event)
            .await
    }

    /// Record a portal sign-in or password event (`hie.credentials`); returns once durable.
    pub async fn credential(&self, event: &CredentialRecorded) -> Result<Position, AuditError> {
        let recorded = self
            .publish(topics::CREDENTIALS.name, &event.user_id, event)
            .await;
        if recorded.is_err() {
            crate::metrics::audit_failed("credential");
        }
        recorded
    }

    /// Record a Break-the-Glass grant; returns its position once durable.
    pub async fn break_glass(&self, event: &BreakGlassRecorded) -> Result<Position, AuditError> {
        let recorded = self
            .publish(topics::BREAK_GLASS.name, &event.patient_id, event)
            .await;
        match &recorded {
            Ok(_) => crate::metrics::break_glass(),
            Err(_) => crate::metrics::audit_failed("break_glass"),
        }
        recorded
    }
}
