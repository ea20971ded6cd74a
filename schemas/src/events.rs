//! Rust types matching the `.avsc` files field for field. Timestamps are microseconds since the
//! Unix epoch (`timestamp-micros`).

use serde::{Deserialize, Serialize};

use crate::codec::avro_event;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatientIdentity {
    pub assigning_authority: String,
    pub mrn: String,
}

impl PatientIdentity {
    /// The Kafka key of this patient's events: all of them land on one partition, in order.
    pub fn key(&self) -> String {
        format!("{}|{}", self.assigning_authority, self.mrn)
    }

    /// The enterprise patient id: stable, so a replay rebuilds the same ids.
    pub fn patient_id(&self) -> uuid::Uuid {
        uuid::Uuid::new_v5(&PATIENT_NAMESPACE, self.key().as_bytes())
    }
}

const PATIENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1c_2f3e_93a4_4c55_8a0e_5c1b_9d2f_7a10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordReceived {
    pub event_id: String,
    pub source_id: String,
    pub organization_id: String,
    pub channel: String,
    pub received_at: i64,
    pub message_id: String,
    pub patient: Option<PatientIdentity>,
    pub resource_type: String,
    pub resource_id: String,
    pub version: i64,
    pub sensitivity: String,
    /// The resource, JSON; empty when `resource_blob` names it instead.
    pub resource_json: String,
    /// A claim check (v2): the resource JSON kept in the blob store, for resources too large to
    /// travel in the event. `None` in every v1 event.
    #[serde(default)]
    pub resource_blob: Option<BlobReference>,
}
avro_event!(RecordReceived, "record_received", ["v1", "v2"]);

/// Where a claim-checked resource is: its content address in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobReference {
    /// Lowercase hex SHA-256 of the resource JSON's bytes.
    pub sha256: String,
    /// The resource JSON's length in bytes.
    pub size: i64,
}

impl RecordReceived {
    pub fn key(&self) -> String {
        match &self.patient {
            Some(p) => p.key(),
            None => format!(
                "{}|{}/{}",
                self.source_id, self.resource_type, self.resource_id
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRecorded {
    pub event_id: String,
    pub recorded_at: i64,
    pub patient: PatientIdentity,
    pub organization_id: String,
    pub decision: String,
    pub effective_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub method: String,
    pub part2: bool,
    pub recorded_by: String,
}
avro_event!(ConsentRecorded, "consent_recorded", ["v1"]);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordRejected {
    pub event_id: String,
    pub rejected_at: i64,
    pub source_id: Option<String>,
    pub channel: String,
    pub message_id: String,
    pub index: Option<i64>,
    pub reason: String,
    /// Exactly the bytes received (v1 wrote a string; Avro resolves it to these bytes).
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
}
avro_event!(RecordRejected, "record_rejected", ["v1", "v2"]);

impl RecordRejected {
    pub fn key(&self) -> String {
        self.source_id
            .clone()
            .unwrap_or_else(|| self.channel.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRegistered {
    pub event_id: String,
    pub registered_at: i64,
    pub source_id: String,
    pub name: String,
    pub organization_id: String,
    pub feed: String,
    pub assigning_authority: String,
    pub data_elements: Vec<String>,
    pub part2: bool,
    pub api_key_sha256: String,
    /// The MLLP client certificate pinned for this source (`platform::tls::fingerprint`).
    #[serde(default)]
    pub mllp_client_certificate_sha256: Option<String>,
}
avro_event!(SourceRegistered, "source_registered", ["v1", "v2"]);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecorded {
    pub event_id: String,
    pub at: i64,
    pub user_id: String,
    pub user_email: String,
    pub organization_id: String,
    pub role: String,
    pub patient_id: String,
    pub action: String,
    pub basis: String,
    pub outcome: String,
    pub returned: i64,
    pub withheld: i64,
}
avro_event!(AccessRecorded, "access_recorded", ["v1"]);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakGlassRecorded {
    pub event_id: String,
    pub at: i64,
    pub user_id: String,
    pub user_email: String,
    pub organization_id: String,
    pub role: String,
    pub patient_id: String,
    pub reason: String,
    pub expires_at: i64,
}
avro_event!(BreakGlassRecorded, "break_glass_recorded", ["v1"]);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecorded {
    pub event_id: String,
    pub at: i64,
    pub user_id: String,
    pub email: String,
    pub organization_id: String,
    pub roles: Vec<String>,
    pub active: bool,
    pub recorded_by: String,
}
avro_event!(AccountRecorded, "account_recorded", ["v1"]);

/// An EHR client of the FHIR API (SMART Backend Services, `hie.clients`): its organization,
/// public keys and allowed scopes; the whole current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRegistered {
    pub event_id: String,
    pub at: i64,
    pub client_id: String,
    pub organization_id: String,
    pub jwks_json: String,
    pub scopes: Vec<String>,
    pub active: bool,
    pub recorded_by: String,
}
avro_event!(ClientRegistered, "client_registered", ["v1"]);

/// A portal sign-in or password event (`hie.credentials`): no password, no hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialRecorded {
    pub event_id: String,
    pub at: i64,
    pub user_id: String,
    pub action: String,
    pub by: String,
    pub detail: String,
}
avro_event!(CredentialRecorded, "credential_recorded", ["v1"]);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientMerged {
    pub event_id: String,
    pub merged_at: i64,
    pub source_id: String,
    pub organization_id: String,
    pub channel: String,
    pub message_id: String,
    pub survivor: PatientIdentity,
    pub prior: PatientIdentity,
}
avro_event!(PatientMerged, "patient_merged", ["v1"]);

impl PatientMerged {
    /// The prior identity's key: the merge lands on the partition of the history it moves, after
    /// every record of that patient published before it.
    pub fn key(&self) -> String {
        self.prior.key()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterResubmitted {
    pub event_id: String,
    pub resubmitted_at: i64,
    pub dead_letter_id: String,
    pub via: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub position: Option<String>,
    pub payload_edited: bool,
    pub resubmitted_by: String,
}
avro_event!(DeadLetterResubmitted, "dead_letter_resubmitted", ["v1"]);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineReapplyRequested {
    pub event_id: String,
    pub requested_at: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub requested_by: String,
}
avro_event!(
    QuarantineReapplyRequested,
    "quarantine_reapply_requested",
    ["v1"]
);

impl QuarantineReapplyRequested {
    pub fn key(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

/// What the master patient index decided (`IdentityDecided`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityAction {
    NewPerson,
    Updated,
    Link,
    Review,
    NotAMatch,
    Unlink,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldComparison {
    pub field: String,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchCandidate {
    pub identity: PatientIdentity,
    pub score: f64,
    pub comparison: Vec<FieldComparison>,
}

/// Normalised demographics, as the matcher compared them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchFeatures {
    pub given: Option<String>,
    pub family: Option<String>,
    pub former_family: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub street: Option<String>,
    pub postal_code: Option<String>,
    pub phone: Option<String>,
    pub ssn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityDecided {
    pub event_id: String,
    pub decided_at: i64,
    pub action: IdentityAction,
    pub identity: PatientIdentity,
    pub other: Option<PatientIdentity>,
    pub decided_by: String,
    pub decider_role: String,
    pub score: Option<f64>,
    pub candidates: Vec<MatchCandidate>,
    pub features: Option<MatchFeatures>,
    pub model: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
}
avro_event!(IdentityDecided, "identity_decided", ["v1"]);

impl IdentityDecided {
    pub fn key(&self) -> String {
        self.identity.key()
    }
}
