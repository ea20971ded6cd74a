//! End-to-end tests of the pipeline through its public HTTP APIs, against a real broker (hie-log) and
//! a real PostgreSQL. One binary, one module per concern.

mod audit;
mod authority;
mod bad_input;
mod consent;
mod dead_letters;
mod drop_folder;
mod ehr_smart;
mod event_log;
mod fhir_api;
mod hl7_mllp;
mod hostile_input;
mod identity;
mod large_records;
mod merge;
mod observability;
mod phi_logs;
mod portal;
mod privacy;
mod projector_restart;
mod quarantine;
mod round_trip;
mod tls;
mod versions;

use serde_json::{json, Value};

/// A small batch Bundle: one Patient (MRN under `aa`) and Observations `(id, lastUpdated, value)`.
pub fn bundle(aa: &str, mrn: &str, patient_id: &str, observations: &[(&str, &str, f64)]) -> Value {
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{patient_id}"),
        "resource": {
            "resourceType": "Patient", "id": patient_id,
            "identifier": [{"system": aa, "value": mrn}],
            "name": [{"family": "Testpatient", "given": ["Alex"]}],
            "birthDate": "1980-02-03", "gender": "other"
        },
        "request": {"method": "POST", "url": "Patient"}
    })];
    for (id, updated, value) in observations {
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{id}"),
            "resource": {
                "resourceType": "Observation", "id": id, "status": "final",
                "meta": {"lastUpdated": updated},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                "subject": {"reference": format!("urn:uuid:{patient_id}")},
                "valueQuantity": {"value": value, "unit": "mg/dL"}
            },
            "request": {"method": "POST", "url": "Observation"}
        }));
    }
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}
