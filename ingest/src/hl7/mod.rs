//! HL7 v2 input: the message structure (`parse`), and the mapping of ADT and ORU messages to FHIR
//! R4 records (`patient`, `encounter`, `report`), with ids derived from the message's own keys so
//! that an update (A08) replaces what the first message (A04) created.

mod ack;
mod datetime;
mod encounter;
mod merge;
pub mod parse;
mod patient;
mod report;

pub use ack::{ack, AckCode};
pub use merge::Merge;
pub use parse::Message;

use serde_json::{json, Value};

use crate::fhir::{Record, SourceContext};
use datetime::Timestamp;
use parse::{Raw, Repetition, Segment};

/// What a message says about itself in its MSH segment.
#[derive(Debug, Clone)]
pub struct Header {
    /// MSH-4, first component: the source id.
    pub source_id: String,
    /// MSH-10: unique only per source and day, so it is provenance, never a dedup key.
    pub control_id: String,
    pub code: String,
    pub trigger: String,
    pub version: String,
    /// MSH-7, the version of every record the message carries.
    pub sent_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("HL7 version (MSH-12) is missing or not supported: send 2.3 to 2.5.1")]
    Version,
    #[error("message type {0} is not supported")]
    MessageType(String),
    #[error("ADT^A40 (merge) is taken over MLLP only, one message at a time")]
    MergeOverMllpOnly,
    #[error("{0}")]
    Invalid(String),
    #[error("segment {0}, field {1} holds a control character (NUL or another C0 but tab), which HL7 v2 and FHIR forbid")]
    ControlCharacter(usize, usize),
    #[error("{0}, decoded from an escape sequence, holds a control character (NUL or another C0 but tab, CR, LF), which FHIR forbids")]
    DecodedControlCharacter(String),
}

impl MapError {
    /// HL7 table 0357 error code for the ERR segment.
    pub fn hl7_code(&self) -> &'static str {
        match self {
            MapError::Version => "203",
            MapError::MessageType(_) => "200",
            MapError::MergeOverMllpOnly => "201",
            MapError::Invalid(_) => "101",
            MapError::ControlCharacter(..) | MapError::DecodedControlCharacter(_) => "102",
        }
    }

    /// AR for what this receiver does not take at all (control characters included: API.md
    /// says `AR` for a NUL), AE for what is wrong in the content.
    pub fn ack_code(&self) -> AckCode {
        match self {
            MapError::Version
            | MapError::MessageType(_)
            | MapError::ControlCharacter(..)
            | MapError::DecodedControlCharacter(_) => AckCode::Reject,
            MapError::MergeOverMllpOnly | MapError::Invalid(_) => AckCode::Error,
        }
    }
}

impl Header {
    pub fn read(msg: &Message) -> Result<Header, MapError> {
        let msh = msg
            .segment("MSH")
            .ok_or(MapError::Invalid("MSH is missing".into()))?;
        let sep = &msg.separators;
        let (code, trigger) = msg.message_type();
        let version = msg
            .value(msh.field(12).component(1, sep))
            .trim()
            .to_string();
        Ok(Header {
            source_id: msg.value(msh.field(4).component(1, sep)).trim().to_string(),
            // Kept as provenance (and in dead letters): a control character in it would be
            // refused downstream, so it is replaced here; the raw bytes keep the original.
            control_id: msg
                .value(msh.field(10).raw())
                .trim()
                .replace(crate::fhir::control::forbidden, "\u{fffd}"),
            code,
            trigger,
            version,
            sent_at: datetime::parse(&msg.value(msh.field(7).component(1, sep))),
        })
    }

    fn check_version(&self) -> Result<(), MapError> {
        let mut parts = self.version.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(2), Some(minor)) if minor >= 3 => Ok(()),
            _ => Err(MapError::Version),
        }
    }
}

const ADT_PATIENT_AND_ENCOUNTER: &[&str] = &["A01", "A02", "A03", "A04", "A08", "A11", "A13"];
const ADT_PATIENT_ONLY: &[&str] = &["A28", "A31"];

/// What a message stands for: records, and for an A40 the patients it merges.
#[derive(Debug, Default)]
pub struct Mapped {
    pub records: Vec<Record>,
    pub merges: Vec<Merge>,
}

/// What a message stands for, or why it cannot be taken.
pub fn map(msg: &Message, header: &Header, ctx: &SourceContext) -> Result<Mapped, MapError> {
    if let Some((segment, field)) = msg.control_character() {
        return Err(MapError::ControlCharacter(segment, field));
    }
    let mapped = map_checked(msg, header, ctx)?;
    // `\X00\` and the like decode to what the raw text may not hold.
    if let Some(path) = mapped
        .records
        .iter()
        .find_map(|r| crate::fhir::control::find(&r.resource))
    {
        return Err(MapError::DecodedControlCharacter(path));
    }
    let identities = (mapped.records.iter().filter_map(|r| r.patient.as_ref()))
        .chain(mapped.merges.iter().flat_map(|m| [&m.survivor, &m.prior]));
    for identity in identities {
        if identity.mrn.chars().any(crate::fhir::control::forbidden) {
            return Err(MapError::DecodedControlCharacter(
                "the patient identifier".into(),
            ));
        }
    }
    Ok(mapped)
}

fn map_checked(msg: &Message, header: &Header, ctx: &SourceContext) -> Result<Mapped, MapError> {
    header.check_version()?;
    if header.control_id.is_empty() {
        return Err(MapError::Invalid(
            "MSH-10 (message control id) is required".into(),
        ));
    }
    let m = Mapper { msg, header, ctx };
    let records = match (header.code.as_str(), header.trigger.as_str()) {
        ("ADT", "A40") => return merge::map(&m),
        ("ADT", t) if ADT_PATIENT_AND_ENCOUNTER.contains(&t) => m.adt(true),
        ("ADT", t) if ADT_PATIENT_ONLY.contains(&t) => m.adt(false),
        ("ORU", "R01") => report::records(&m),
        (code, trigger) => Err(MapError::MessageType(format!("{code}^{trigger}"))),
    }?;
    Ok(Mapped {
        records,
        merges: Vec::new(),
    })
}

/// The records a message carries, for channels that publish records only (the drop folder's
/// batches): a merge is refused there and dead-lettered, to be sent over MLLP.
pub fn to_records(
    msg: &Message,
    header: &Header,
    ctx: &SourceContext,
) -> Result<Vec<Record>, MapError> {
    if (header.code.as_str(), header.trigger.as_str()) == ("ADT", "A40") {
        header.check_version()?;
        return Err(MapError::MergeOverMllpOnly);
    }
    Ok(map(msg, header, ctx)?.records)
}

/// One message being mapped, with what every mapping step needs.
struct Mapper<'m, 'a> {
    msg: &'m Message<'a>,
    header: &'m Header,
    ctx: &'m SourceContext,
}

impl<'a> Mapper<'_, 'a> {
    fn adt(&self, with_encounter: bool) -> Result<Vec<Record>, MapError> {
        let pid = self
            .msg
            .segment("PID")
            .ok_or_else(|| MapError::Invalid("PID is required".into()))?;
        let patient = patient::Patient::read(self, pid)?;
        let mut records = vec![patient.record(self)];
        if with_encounter {
            if let Some(pv1) = self.msg.segment("PV1") {
                records.extend(encounter::record(self, pv1, &patient));
            }
        }
        Ok(records)
    }

    /// A deterministic FHIR id: the same key from the same source is the same resource.
    fn id(&self, resource_type: &str, key: &str) -> String {
        let name = format!("hl7v2|{}|{resource_type}|{key}", self.ctx.source_id);
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
    }

    fn version(&self) -> Option<i64> {
        self.header.sent_at.as_ref().map(|t| t.micros)
    }

    /// A decoded, trimmed value; `None` when empty (or HL7's explicit null `""`).
    fn text(&self, raw: Raw) -> Option<String> {
        if raw.is_empty() {
            return None;
        }
        let v = self.msg.value(raw).trim().to_string();
        (!v.is_empty()).then_some(v)
    }

    fn field_text(&self, seg: &Segment, n: usize) -> Option<String> {
        self.text(seg.field(n).raw())
    }

    fn component(&self, seg: &Segment, field: usize, component: usize) -> Option<String> {
        self.text(seg.field(field).component(component, &self.msg.separators))
    }

    fn rep_component(&self, rep: &Repetition, component: usize) -> Option<String> {
        self.text(rep.component(component, &self.msg.separators))
    }

    fn repetitions(&self, seg: &Segment<'a>, field: usize) -> Vec<Repetition<'a>> {
        seg.field(field).repetitions(&self.msg.separators)
    }

    /// A CE/CWE/CNE as a CodeableConcept: the primary and the alternate coding.
    fn codeable(&self, rep: &Repetition) -> Option<Value> {
        let mut codings = Vec::new();
        for first in [1, 4] {
            let code = self.rep_component(rep, first);
            let display = self.rep_component(rep, first + 1);
            if code.is_none() && display.is_none() {
                continue;
            }
            let mut coding = serde_json::Map::new();
            if let Some(system) = self
                .rep_component(rep, first + 2)
                .and_then(|s| code_system(&s))
            {
                coding.insert("system".into(), system.into());
            }
            if let Some(code) = code {
                coding.insert("code".into(), code.into());
            }
            if let Some(display) = display {
                coding.insert("display".into(), display.into());
            }
            codings.push(Value::Object(coding));
        }
        if codings.is_empty() {
            return None;
        }
        let text = self
            .rep_component(rep, 2)
            .or_else(|| self.rep_component(rep, 5));
        let mut concept = json!({ "coding": codings });
        if let Some(text) = text {
            concept["text"] = text.into();
        }
        Some(concept)
    }

    /// Provenance every mapped resource carries.
    fn meta(&self) -> Value {
        let mut meta = json!({ "source": format!("urn:hie:source:{}", self.ctx.source_id) });
        if let Some(t) = &self.header.sent_at {
            meta["lastUpdated"] = t.fhir.clone().into();
        }
        meta
    }
}

/// The FHIR system URI of a v2 coding system name, when it has a well-known one.
fn code_system(name: &str) -> Option<String> {
    let uri = match name {
        "LN" | "LOINC" => "http://loinc.org",
        "SCT" | "SNM" | "SNOMED" | "SNOMED-CT" => "http://snomed.info/sct",
        "I10" | "I10C" | "ICD10CM" => "http://hl7.org/fhir/sid/icd-10-cm",
        "I9" | "I9C" => "http://hl7.org/fhir/sid/icd-9-cm",
        "UCUM" => "http://unitsofmeasure.org",
        "CPT" | "C4" => "http://www.ama-assn.org/go/cpt",
        "RXNORM" | "RXN" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        n if !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && n.contains('.') =>
        {
            return Some(format!("urn:oid:{n}"))
        }
        n if n.starts_with("HL7") && n.len() == 7 => {
            return Some(format!(
                "http://terminology.hl7.org/CodeSystem/v2-{}",
                &n[3..]
            ))
        }
        _ => return None,
    };
    Some(uri.to_string())
}

#[cfg(test)]
mod tests;
