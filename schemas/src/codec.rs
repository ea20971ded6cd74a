//! Avro single-object encoding: `C3 01`, the writer schema's CRC-64-AVRO fingerprint (8 bytes,
//! little-endian), then the Avro binary body.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::{de::DeserializeOwned, Serialize};

use crate::canonical::{fingerprint64, parsing_canonical_form};

const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not an Avro single-object message (missing C3 01 header)")]
    NotSingleObject,
    #[error("writer schema fingerprint {0:016x} is not a known version of {1}")]
    UnknownFingerprint(u64, &'static str),
    #[error("avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        CodecError::Avro(Box::new(e))
    }
}

/// One writer schema, parsed, with its specification fingerprint.
pub struct VersionedSchema {
    pub schema: Schema,
    pub fingerprint: u64,
    pub canonical_form: String,
}

impl VersionedSchema {
    fn parse(text: &str) -> Self {
        let json: serde_json::Value = serde_json::from_str(text).expect("committed .avsc is JSON");
        let canonical_form = parsing_canonical_form(&json);
        VersionedSchema {
            schema: Schema::parse(&json).expect("committed .avsc is a valid Avro schema"),
            fingerprint: fingerprint64(canonical_form.as_bytes()),
            canonical_form,
        }
    }
}

/// The current schema of an event type and every released one it still reads.
pub struct SchemaSet {
    pub current: VersionedSchema,
    pub released: Vec<VersionedSchema>,
}

impl SchemaSet {
    pub fn load(current: &str, released: &[&str]) -> Self {
        SchemaSet {
            current: VersionedSchema::parse(current),
            released: released.iter().map(|t| VersionedSchema::parse(t)).collect(),
        }
    }

    fn writer(&self, fingerprint: u64) -> Option<&Schema> {
        std::iter::once(&self.current)
            .chain(&self.released)
            .find(|v| v.fingerprint == fingerprint)
            .map(|v| &v.schema)
    }
}

/// An event type of the log, tied to its `.avsc` files.
pub trait Event: Serialize + DeserializeOwned {
    const NAME: &'static str;
    fn schemas() -> &'static SchemaSet;
}

macro_rules! avro_event {
    ($ty:ty, $file:literal, [$($released:literal),* $(,)?]) => {
        impl $crate::codec::Event for $ty {
            const NAME: &'static str = $file;
            fn schemas() -> &'static $crate::codec::SchemaSet {
                static SET: std::sync::OnceLock<$crate::codec::SchemaSet> = std::sync::OnceLock::new();
                SET.get_or_init(|| $crate::codec::SchemaSet::load(
                    include_str!(concat!("../avro/", $file, ".avsc")),
                    &[$(include_str!(concat!("../avro/released/", $file, "/", $released, ".avsc"))),*],
                ))
            }
        }
    };
}
pub(crate) use avro_event;

/// Encode with the current writer schema.
pub fn encode<E: Event>(event: &E) -> Result<Vec<u8>, CodecError> {
    let set = E::schemas();
    let body = GenericDatumWriter::builder(&set.current.schema)
        .build()?
        .write_ser_to_vec(event)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&set.current.fingerprint.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Whether `bytes` were written with a schema of `E`: tells apart the event types that share a
/// topic (`hie.records`, `hie.deadletter`) by their writer fingerprint.
pub fn is<E: Event>(bytes: &[u8]) -> bool {
    if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
        return false;
    }
    let fingerprint = u64::from_le_bytes(bytes[2..HEADER_LEN].try_into().expect("8 bytes"));
    E::schemas().writer(fingerprint).is_some()
}

/// Decode a message written with the current or any released schema of `E`.
pub fn decode<E: Event>(bytes: &[u8]) -> Result<E, CodecError> {
    if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
        return Err(CodecError::NotSingleObject);
    }
    let fingerprint = u64::from_le_bytes(bytes[2..HEADER_LEN].try_into().expect("8 bytes"));
    let set = E::schemas();
    let writer = set
        .writer(fingerprint)
        .ok_or(CodecError::UnknownFingerprint(fingerprint, E::NAME))?;
    let mut body = &bytes[HEADER_LEN..];
    let value = GenericDatumReader::builder(writer)
        .reader_schema(&set.current.schema)
        .build()?
        .read_value(&mut body)?;
    Ok(apache_avro::from_value::<E>(&value)?)
}

/// Every event type's schema set, for tests and tools that check them all.
pub fn codec_sets() -> Vec<(&'static str, &'static SchemaSet)> {
    use crate::events::*;
    vec![
        (RecordReceived::NAME, RecordReceived::schemas()),
        (ConsentRecorded::NAME, ConsentRecorded::schemas()),
        (RecordRejected::NAME, RecordRejected::schemas()),
        (SourceRegistered::NAME, SourceRegistered::schemas()),
        (AccessRecorded::NAME, AccessRecorded::schemas()),
        (BreakGlassRecorded::NAME, BreakGlassRecorded::schemas()),
        (AccountRecorded::NAME, AccountRecorded::schemas()),
        (ClientRegistered::NAME, ClientRegistered::schemas()),
        (CredentialRecorded::NAME, CredentialRecorded::schemas()),
        (PatientMerged::NAME, PatientMerged::schemas()),
        (IdentityDecided::NAME, IdentityDecided::schemas()),
        (
            DeadLetterResubmitted::NAME,
            DeadLetterResubmitted::schemas(),
        ),
        (
            QuarantineReapplyRequested::NAME,
            QuarantineReapplyRequested::schemas(),
        ),
    ]
}
