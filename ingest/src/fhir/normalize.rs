//! Turning received FHIR resources into records: each gets an id, its patient's local identity
//! (an MRN under the source's assigning authority), and references rewritten from the bundle's
//! `urn:uuid:` full URLs to `Type/id`, so they still resolve once the bundle is gone.

use std::collections::HashMap;

use schemas::resource_types::PATIENT_SCOPED;
use schemas::PatientIdentity;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::parse::Entry;

/// What normalization needs to know about the sending source.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub source_id: String,
    pub assigning_authority: String,
}

#[derive(Debug)]
pub struct Record {
    pub resource_type: String,
    pub resource_id: String,
    pub patient: Option<PatientIdentity>,
    /// `meta.lastUpdated` in microseconds, when the source sent one.
    pub last_updated: Option<i64>,
    pub resource: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub index: usize,
    /// Why; names fields and positions, never their values.
    pub error: String,
    pub raw: String,
    /// Refused for its size alone (over `MAX_RESOURCE_BYTES`, or a line over the body limit): its
    /// per-entry result says 413, as a body over the limit is answered.
    pub too_large: bool,
}

impl Rejection {
    /// The entry's result in an answer (API.md): `{"index", "error"}`, and `"status": 413` for an
    /// entry refused for its size.
    pub fn result(&self) -> Value {
        let mut result = serde_json::json!({"index": self.index, "error": self.error});
        if self.too_large {
            result["status"] = 413.into();
        }
        result
    }
}

#[derive(Debug, Default)]
pub struct Normalized {
    pub records: Vec<Record>,
    pub rejections: Vec<Rejection>,
}

/// Resource types accepted without a patient: shared reference data.
const SHARED: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "Medication",
    "Device",
    "Substance",
    "HealthcareService",
    "Endpoint",
];

/// Elements FHIR R4 requires (cardinality 1..) on the types the HIE handles most.
fn required_elements(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Observation" => &["status", "code"],
        "DiagnosticReport" => &["status", "code"],
        "Encounter" => &["status", "class"],
        "Condition" => &["subject"],
        "Procedure" => &["status", "subject"],
        "MedicationRequest" => &["status", "intent", "subject"],
        "MedicationStatement" => &["status", "subject"],
        "AllergyIntolerance" => &["patient"],
        "Immunization" => &["status", "vaccineCode", "patient"],
        "DocumentReference" => &["status", "content"],
        "Claim" => &[
            "status",
            "type",
            "use",
            "patient",
            "created",
            "provider",
            "priority",
            "insurance",
        ],
        "ExplanationOfBenefit" => &[
            "status",
            "type",
            "use",
            "patient",
            "created",
            "insurer",
            "provider",
            "outcome",
            "insurance",
        ],
        _ => &[],
    }
}

/// `[A-Za-z0-9\-\.]{1,64}`, FHIR's `id`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn same_authority(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("urn:oid:").to_string();
    strip(a) == strip(b)
}

fn is_resource_type(t: &str) -> bool {
    PATIENT_SCOPED.contains(&t) || SHARED.contains(&t) || OTHER_TYPES.contains(&t) || t == "Patient"
}

/// The rest of FHIR R4's resource types, accepted as they come.
const OTHER_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "CapabilityStatement",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "ClaimResponse",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "ConceptMap",
    "Consent",
    "Contract",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DocumentManifest",
    "EffectEvidenceSynthesis",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "ImagingStudy",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Measure",
    "MeasureReport",
    "Media",
    "MedicationKnowledge",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Person",
    "PlanDefinition",
    "Provenance",
    "Questionnaire",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "Schedule",
    "SearchParameter",
    "Slot",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
    "MedicinalProduct",
    "Parameters",
];

struct Candidate {
    index: usize,
    resource_type: String,
    resource_id: String,
    resource: Value,
    raw: String,
}

/// Normalize every entry; a bad entry is rejected on its own, the others go on.
pub fn normalize(entries: Vec<Entry>, ctx: &SourceContext) -> Normalized {
    normalize_with(entries, ctx, &mut HashMap::new())
}

/// `normalize`, where `patients` (`Patient/<id>` → who it is) carries the Patients of earlier
/// chunks of the same file, so a file streamed in chunks resolves as if sent whole.
pub fn normalize_with(
    entries: Vec<Entry>,
    ctx: &SourceContext,
    patients: &mut HashMap<String, PatientIdentity>,
) -> Normalized {
    let mut out = Normalized::default();
    let mut candidates = Vec::with_capacity(entries.len());
    // fullUrl and `Type/id` → the `Type/id` a reference is rewritten to.
    let mut targets: HashMap<String, String> = HashMap::new();

    for entry in entries {
        let reject = |error: String| Rejection {
            index: entry.index,
            error,
            raw: entry.raw.clone(),
            too_large: false,
        };
        let resource = match entry.resource {
            Ok(r) => r,
            Err(e) => {
                out.rejections.push(reject(e));
                continue;
            }
        };
        if entry.raw.len() > schemas::topics::MAX_RESOURCE_BYTES {
            // Dead-lettered without its content, like a body over the limit: the log takes no
            // message that large.
            out.rejections.push(Rejection {
                index: entry.index,
                error: format!(
                    "the entry is {} bytes, over the limit of {} for one resource",
                    entry.raw.len(),
                    schemas::topics::MAX_RESOURCE_BYTES
                ),
                raw: String::new(),
                too_large: true,
            });
            continue;
        }
        let control = match &entry.full_url {
            Some(url) if url.chars().any(super::control::forbidden) => Some("fullUrl".into()),
            _ => super::control::find(&resource),
        };
        if let Some(path) = control {
            out.rejections.push(reject(format!(
                "{path} holds a control character (U+0000-U+001F other than tab, CR, LF): FHIR strings may not"
            )));
            continue;
        }
        match identify(&resource, entry.full_url.as_deref(), ctx) {
            Ok((resource_type, resource_id)) => {
                let local = format!("{resource_type}/{resource_id}");
                if let Some(url) = &entry.full_url {
                    targets.insert(url.clone(), local.clone());
                }
                targets.insert(local.clone(), local.clone());
                if resource_type == "Patient" {
                    match patient_identity(&resource, ctx) {
                        Some(identity) => {
                            patients.insert(local, identity);
                        }
                        None => {
                            out.rejections.push(reject(format!(
                                "Patient has no identifier with system {:?} (the source's assigning authority)",
                                ctx.assigning_authority
                            )));
                            continue;
                        }
                    }
                }
                candidates.push(Candidate {
                    index: entry.index,
                    resource_type,
                    resource_id,
                    resource,
                    raw: entry.raw,
                });
            }
            Err(e) => out.rejections.push(reject(e)),
        }
    }

    for mut c in candidates {
        match finish(&mut c, &targets, patients, ctx) {
            Ok((patient, last_updated)) => out.records.push(Record {
                resource_type: c.resource_type,
                resource_id: c.resource_id,
                patient,
                last_updated,
                resource: c.resource,
            }),
            Err(error) => out.rejections.push(Rejection {
                index: c.index,
                error,
                raw: c.raw,
                too_large: false,
            }),
        }
    }
    out.rejections.sort_by_key(|r| r.index);
    out
}

/// The resource's type and id. A resource without an id takes its `urn:uuid:` full URL's, else
/// one derived from its content, so that the same resource sent twice is the same record.
fn identify(
    resource: &Value,
    full_url: Option<&str>,
    ctx: &SourceContext,
) -> Result<(String, String), String> {
    let resource_type = match resource.get("resourceType") {
        Some(Value::String(t)) if is_resource_type(t) => t.clone(),
        Some(Value::String(_)) => return Err("resourceType is not a FHIR R4 resource type".into()),
        _ => return Err("resource has no resourceType".into()),
    };
    let id = match resource.get("id") {
        Some(Value::String(id)) if valid_id(id) => id.clone(),
        Some(_) => return Err(format!("{resource_type}.id is not a valid FHIR id")),
        None => match full_url.and_then(|u| u.strip_prefix("urn:uuid:")) {
            Some(uuid) if valid_id(uuid) => uuid.to_string(),
            _ => {
                let name = format!("{}|{}", ctx.source_id, resource);
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
            }
        },
    };
    Ok((resource_type, id))
}

fn patient_identity(patient: &Value, ctx: &SourceContext) -> Option<PatientIdentity> {
    patient
        .get("identifier")?
        .as_array()?
        .iter()
        .find(|i| {
            i.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| same_authority(s, &ctx.assigning_authority))
        })
        .and_then(|i| i.get("value").and_then(Value::as_str))
        .filter(|v| !v.trim().is_empty())
        .map(|mrn| PatientIdentity {
            assigning_authority: ctx.assigning_authority.clone(),
            mrn: mrn.trim().to_string(),
        })
}

fn finish(
    c: &mut Candidate,
    targets: &HashMap<String, String>,
    patients: &HashMap<String, PatientIdentity>,
    ctx: &SourceContext,
) -> Result<(Option<PatientIdentity>, Option<i64>), String> {
    let t = c.resource_type.as_str();
    for field in required_elements(t) {
        let present = c.resource.get(*field).is_some_and(|v| !v.is_null())
            || c.resource.as_object().is_some_and(|o| {
                o.keys().any(|k| {
                    k.starts_with(field)
                        && k.len() > field.len()
                        && k[field.len()..].starts_with(char::is_uppercase)
                })
            });
        if !present {
            return Err(format!("{t}.{field} is required"));
        }
    }
    if let Some(obj) = c.resource.as_object_mut() {
        obj.insert("id".into(), Value::String(c.resource_id.clone()));
    }
    rewrite_references(&mut c.resource, targets);

    let patient = if t == "Patient" {
        patients.get(&format!("Patient/{}", c.resource_id)).cloned()
    } else {
        match patient_reference(&c.resource) {
            Some(reference) => match patients.get(reference) {
                Some(identity) => Some(identity.clone()),
                None => {
                    return Err(format!(
                        "{t} references a patient that is not in this request: include the Patient resource"
                    ))
                }
            },
            None if PATIENT_SCOPED.contains(&t) => return Err(format!("{t} does not reference a patient")),
            None => None,
        }
    };

    let last_updated = match c.resource.pointer("/meta/lastUpdated") {
        None => None,
        Some(Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(at) => Some((at.unix_timestamp_nanos() / 1000) as i64),
            Err(_) => return Err(format!("{t}.meta.lastUpdated is not a valid instant")),
        },
        Some(_) => return Err(format!("{t}.meta.lastUpdated is not a valid instant")),
    };

    // Provenance, in the element FHIR has for it, unless the source already set one.
    if let Some(obj) = c.resource.as_object_mut() {
        let meta = obj
            .entry("meta")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("source")
                .or_insert_with(|| Value::String(format!("urn:hie:source:{}", ctx.source_id)));
        }
    }
    Ok((patient, last_updated))
}

/// The `Patient/<id>` a resource belongs to, from the elements FHIR uses for it.
fn patient_reference(resource: &Value) -> Option<&str> {
    ["subject", "patient", "beneficiary"]
        .iter()
        .filter_map(|f| resource.get(*f)?.get("reference")?.as_str())
        .find(|r| r.starts_with("Patient/"))
}

/// Rewrite every `reference` that names a bundle entry to that entry's `Type/id`.
fn rewrite_references(value: &mut Value, targets: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "reference" {
                    if let Value::String(r) = v {
                        if let Some(local) = targets.get(r.as_str()) {
                            *r = local.clone();
                        }
                    }
                } else {
                    rewrite_references(v, targets);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| rewrite_references(v, targets)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::parse::{parse_bundle, parse_ndjson};

    fn ctx() -> SourceContext {
        SourceContext {
            source_id: "src".into(),
            assigning_authority: "urn:oid:1.2.3".into(),
        }
    }

    #[test]
    fn an_entry_over_the_resource_limit_is_refused_alone_as_a_413() {
        let big = format!(
            r#"{{"resourceType":"Binary","id":"b","data":"{}"}}"#,
            "A".repeat(schemas::topics::MAX_RESOURCE_BYTES)
        );
        let small = r#"{"resourceType":"Organization","id":"o"}"#;
        let n = normalize(
            parse_ndjson(format!("{small}\n{big}").as_bytes())
                .unwrap()
                .entries,
            &ctx(),
        );
        assert_eq!(n.records.len(), 1);
        let r = &n.rejections[0];
        assert!(
            r.too_large && r.raw.is_empty(),
            "dead-lettered without content"
        );
        assert_eq!(
            r.result(),
            serde_json::json!({"index": 1, "error": r.error, "status": 413})
        );
        let other = Rejection {
            too_large: false,
            ..r.clone()
        };
        assert!(other.result().get("status").is_none());
    }

    #[test]
    fn bundle_references_resolve_to_the_patient() {
        let body = br#"{"resourceType":"Bundle","type":"batch","entry":[
          {"fullUrl":"urn:uuid:p1","resource":{"resourceType":"Patient","id":"p1","identifier":[{"system":"1.2.3","value":"MRN9"}]}},
          {"fullUrl":"urn:uuid:o1","resource":{"resourceType":"Observation","status":"final","code":{},"subject":{"reference":"urn:uuid:p1"}}},
          {"resource":{"resourceType":"Observation","status":"final","code":{},"subject":{"reference":"urn:uuid:nobody"}}},
          {"resource":{"resourceType":"Observation","code":{},"subject":{"reference":"urn:uuid:p1"}}},
          {"resource":{"resourceType":"Organization","id":"org1"}},
          {"resource":{"resourceType":"Wizard"}}
        ]}"#;
        let n = normalize(parse_bundle(body).unwrap().entries, &ctx());
        assert_eq!(n.records.len(), 3);
        let obs = &n.records[1];
        assert_eq!(obs.resource_id, "o1");
        assert_eq!(obs.resource["subject"]["reference"], "Patient/p1");
        assert_eq!(obs.patient.as_ref().unwrap().mrn, "MRN9");
        assert_eq!(
            obs.patient.as_ref().unwrap().assigning_authority,
            "urn:oid:1.2.3"
        );
        assert!(n.records[2].patient.is_none());
        let rejected: Vec<_> = n.rejections.iter().map(|r| r.index).collect();
        assert_eq!(rejected, vec![2, 3, 5]);
        assert!(n.rejections[1].error.contains("status"));
    }

    #[test]
    fn patient_without_the_sources_identifier_is_rejected_without_echoing_it() {
        let n = normalize(
            parse_ndjson(br#"{"resourceType":"Patient","id":"x","identifier":[{"system":"other","value":"SECRET-MRN"}]}"#)
                .unwrap()
                .entries,
            &ctx(),
        );
        assert_eq!(n.records.len(), 0);
        assert!(!n.rejections[0].error.contains("SECRET-MRN"));
    }

    #[test]
    fn last_updated_orders_versions() {
        let n = normalize(
            parse_ndjson(br#"{"resourceType":"Organization","id":"a","meta":{"lastUpdated":"2024-01-02T03:04:05.5Z"}}
{"resourceType":"Organization","id":"b","meta":{"lastUpdated":"yesterday"}}"#)
                .unwrap()
                .entries,
            &ctx(),
        );
        assert_eq!(n.records[0].last_updated, Some(1_704_164_645_500_000));
        assert_eq!(n.rejections.len(), 1);
    }

    #[test]
    fn control_characters_reject_the_entry_only() {
        let n = normalize(
            parse_ndjson(b"{\"resourceType\":\"Patient\",\"id\":\"p\",\"identifier\":[{\"system\":\"urn:oid:1.2.3\",\"value\":\"1\"}]}\n{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"a\\u0000b\"},\"subject\":{\"reference\":\"Patient/p\"}}\n{\"resourceType\":\"Organization\",\"id\":\"o\",\"name\":\"tab\\tok\"}")
                .unwrap()
                .entries,
            &ctx(),
        );
        assert_eq!(n.records.len(), 2);
        assert_eq!(n.rejections.len(), 1);
        assert_eq!(n.rejections[0].index, 1);
        assert!(n.rejections[0]
            .error
            .starts_with("Observation.code.text holds a control character"));
    }

    #[test]
    fn choice_elements_count_as_present() {
        let n = normalize(
            parse_ndjson(br#"{"resourceType":"Patient","id":"p","identifier":[{"system":"urn:oid:1.2.3","value":"1"}]}
{"resourceType":"Immunization","status":"completed","vaccineCode":{},"patient":{"reference":"Patient/p"},"occurrenceDateTime":"2020-01-01"}"#)
                .unwrap()
                .entries,
            &ctx(),
        );
        assert!(n.rejections.is_empty(), "{:?}", n.rejections);
    }
}
