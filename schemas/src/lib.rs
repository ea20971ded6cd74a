//! The contract between the services: Avro schemas (`../avro/*.avsc`), the Rust types that match
//! them, the single-object codec, topic names and position tokens.

mod canonical;
mod codec;
mod events;
pub mod position;
pub mod resource_types;
pub mod topics;

pub use canonical::{fingerprint64, parsing_canonical_form};
pub use codec::{codec_sets, decode, encode, is, CodecError, Event, SchemaSet, VersionedSchema};
pub use events::{
    AccessRecorded, AccountRecorded, BlobReference, BreakGlassRecorded, ClientRegistered,
    ConsentRecorded, CredentialRecorded, DeadLetterResubmitted, FieldComparison, IdentityAction,
    IdentityDecided, MatchCandidate, MatchFeatures, PatientIdentity, PatientMerged,
    QuarantineReapplyRequested, RecordReceived, RecordRejected, SourceRegistered,
};
pub use position::Position;

/// Microseconds since the Unix epoch, the unit of every timestamp in the events.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_micros() as i64
}
