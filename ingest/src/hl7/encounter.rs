//! PV1 → a FHIR Encounter, its status following the ADT trigger event.

use serde_json::{json, Value};

use super::parse::Segment;
use super::patient::Patient;
use super::{datetime, Mapper};
use crate::fhir::Record;

/// The encounter, when the visit can be identified: by its visit number (PV1-19), else by the
/// patient and the admit time (PV1-44). Without either there is nothing stable to update later.
pub fn record(m: &Mapper, pv1: &Segment, patient: &Patient) -> Option<Record> {
    let key = match (m.component(pv1, 19, 1), m.component(pv1, 44, 1)) {
        (Some(visit), _) => format!("visit|{visit}"),
        (None, Some(admit)) => format!("admit|{}|{admit}", patient.identity.mrn),
        (None, None) => return None,
    };
    let id = m.id("Encounter", &key);
    let status = match m.header.trigger.as_str() {
        "A03" => "finished",
        "A11" => "cancelled",
        "A04" => "arrived",
        "A08" if m.component(pv1, 45, 1).is_some() => "finished",
        _ => "in-progress",
    };
    let (class_code, class_display) = match m.field_text(pv1, 2).as_deref() {
        Some("E") => ("EMER", "emergency"),
        Some("I") => ("IMP", "inpatient encounter"),
        Some("P") => ("PRENC", "pre-admission"),
        _ => ("AMB", "ambulatory"),
    };
    let mut encounter = json!({
        "resourceType": "Encounter",
        "id": id,
        "meta": m.meta(),
        "status": status,
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": class_code,
            "display": class_display,
        },
        "subject": {"reference": patient.reference},
    });
    if let Some(visit) = m.component(pv1, 19, 1) {
        encounter["identifier"] = json!([{"use": "official", "value": visit}]);
    }
    let mut period = json!({});
    if let Some(start) = m.component(pv1, 44, 1).and_then(|t| datetime::parse(&t)) {
        period["start"] = start.fhir.into();
    }
    if let Some(end) = m.component(pv1, 45, 1).and_then(|t| datetime::parse(&t)) {
        period["end"] = end.fhir.into();
    }
    if period.as_object().is_some_and(|p| !p.is_empty()) {
        encounter["period"] = period;
    }
    // PV1-3: point of care ^ room ^ bed ^ facility.
    let location: Vec<String> = (1..=4).filter_map(|c| m.component(pv1, 3, c)).collect();
    if !location.is_empty() {
        encounter["location"] = json!([{"location": {"display": location.join(" ")}}]);
    }
    let participants: Vec<Value> = [(7, "ATND"), (8, "REF"), (17, "ADM")]
        .iter()
        .flat_map(|(field, role)| {
            m.repetitions(pv1, *field).into_iter().filter_map(move |xcn| {
                let family = m.text(xcn.subcomponent(2, 1, &m.msg.separators));
                let given = m.rep_component(&xcn, 3);
                let display = [given, family].into_iter().flatten().collect::<Vec<_>>().join(" ");
                (!display.is_empty()).then(|| {
                    json!({
                        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": role}]}],
                        "individual": {"display": display},
                    })
                })
            })
        })
        .collect();
    if !participants.is_empty() {
        encounter["participant"] = participants.into();
    }
    Some(Record {
        resource_type: "Encounter".into(),
        resource_id: id,
        patient: Some(patient.identity.clone()),
        last_updated: m.version(),
        resource: encounter,
    })
}
