//! ORU^R01 → a DiagnosticReport per OBR and an Observation per OBX, under the PID before them.

use serde_json::{json, Value};

use super::parse::Segment;
use super::patient::Patient;
use super::{datetime, MapError, Mapper};
use crate::fhir::Record;

struct Order<'s, 'a> {
    patient: usize,
    orc: Option<&'s Segment<'a>>,
    obr: &'s Segment<'a>,
    notes: Vec<String>,
    results: Vec<(&'s Segment<'a>, Vec<String>)>,
}

pub fn records(m: &Mapper) -> Result<Vec<Record>, MapError> {
    let mut patients: Vec<Patient> = Vec::new();
    let mut orders: Vec<Order> = Vec::new();
    let mut orc = None;
    for seg in &m.msg.segments {
        match seg.name {
            "PID" => {
                patients.push(Patient::read(m, seg)?);
                orc = None;
            }
            "ORC" => orc = Some(seg),
            "OBR" => {
                if patients.is_empty() {
                    return Err(MapError::Invalid("OBR comes before any PID".into()));
                }
                orders.push(Order {
                    patient: patients.len() - 1,
                    orc: orc.take(),
                    obr: seg,
                    notes: Vec::new(),
                    results: Vec::new(),
                });
            }
            "OBX" => match orders.last_mut() {
                Some(order) => order.results.push((seg, Vec::new())),
                None => return Err(MapError::Invalid("OBX comes before any OBR".into())),
            },
            "NTE" => {
                let Some(order) = orders.last_mut() else {
                    continue;
                };
                let text: Vec<String> = m
                    .repetitions(seg, 3)
                    .iter()
                    .filter_map(|r| m.text(r.raw()))
                    .collect();
                if text.is_empty() {
                    continue;
                }
                match order.results.last_mut() {
                    Some((_, notes)) => notes.push(text.join("\n")),
                    None => order.notes.push(text.join("\n")),
                }
            }
            _ => {}
        }
    }
    if orders.is_empty() {
        return Err(MapError::Invalid("ORU^R01 carries no OBR".into()));
    }
    let mut records = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        records.extend(order_records(m, &patients[order.patient], order, n + 1)?);
    }
    Ok(records)
}

fn order_records(
    m: &Mapper,
    patient: &Patient,
    order: &Order,
    n: usize,
) -> Result<Vec<Record>, MapError> {
    let obr = order.obr;
    let filler = m
        .component(obr, 3, 1)
        .or_else(|| order.orc.and_then(|orc| m.component(orc, 3, 1)));
    let key = match (filler, m.component(obr, 2, 1)) {
        (Some(f), _) => format!("filler|{f}"),
        (None, Some(p)) => format!("placer|{p}"),
        (None, None) => {
            return Err(MapError::Invalid(format!(
                "OBR {n}: OBR-3 (filler order number) or OBR-2 (placer order number) is required"
            )))
        }
    };
    let code = m
        .repetitions(obr, 4)
        .first()
        .and_then(|ce| m.codeable(ce))
        .ok_or_else(|| {
            MapError::Invalid(format!("OBR {n}: OBR-4 (universal service id) is required"))
        })?;
    let report_id = m.id("DiagnosticReport", &key);
    let effective = m.component(obr, 7, 1).and_then(|t| datetime::parse(&t));

    let mut records = Vec::new();
    let mut results = Vec::new();
    for (i, (obx, notes)) in order.results.iter().enumerate() {
        let set_id = m.field_text(obx, 1).unwrap_or_else(|| (i + 1).to_string());
        let sub_id = m.field_text(obx, 4).unwrap_or_default();
        let id = m.id("Observation", &format!("{key}|{set_id}|{sub_id}"));
        let observation = observation(m, obx, notes, &id, patient, effective.as_ref(), &report_id)
            .map_err(|e| MapError::Invalid(format!("OBR {n}, OBX {}: {e}", i + 1)))?;
        results.push(json!({"reference": format!("Observation/{id}")}));
        records.push(Record {
            resource_type: "Observation".into(),
            resource_id: id,
            patient: Some(patient.identity.clone()),
            last_updated: m.version(),
            resource: observation,
        });
    }

    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "meta": m.meta(),
        "status": result_status(m.field_text(obr, 25).as_deref(), true),
        "code": code,
        "subject": {"reference": patient.reference},
    });
    if let Some(filler) = m.component(obr, 3, 1) {
        report["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "FILL"}]}, "value": filler}]);
    }
    if let Some(at) = &effective {
        report["effectiveDateTime"] = at.fhir.clone().into();
    }
    if let Some(issued) = m.component(obr, 22, 1).and_then(|t| datetime::parse(&t)) {
        if issued.fhir.contains('T') {
            report["issued"] = issued.fhir.into();
        }
    }
    if let Some(section) = m.field_text(obr, 24) {
        report["category"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": section}]}]);
    }
    if !results.is_empty() {
        report["result"] = results.into();
    }
    if !order.notes.is_empty() {
        report["conclusion"] = order.notes.join("\n").into();
    }
    records.push(Record {
        resource_type: "DiagnosticReport".into(),
        resource_id: report_id,
        patient: Some(patient.identity.clone()),
        last_updated: m.version(),
        resource: report,
    });
    Ok(records)
}

fn observation(
    m: &Mapper,
    obx: &Segment,
    notes: &[String],
    id: &str,
    patient: &Patient,
    report_effective: Option<&datetime::Timestamp>,
    report_id: &str,
) -> Result<Value, String> {
    let code = m
        .repetitions(obx, 3)
        .first()
        .and_then(|ce| m.codeable(ce))
        .ok_or("OBX-3 (observation identifier) is required")?;
    let mut obs = json!({
        "resourceType": "Observation",
        "id": id,
        "meta": m.meta(),
        "status": result_status(m.field_text(obx, 11).as_deref(), false),
        "code": code,
        "subject": {"reference": patient.reference},
        "derivedFrom": [{"reference": format!("DiagnosticReport/{report_id}")}],
    });
    let value_type = m.field_text(obx, 2).unwrap_or_default();
    if let Some((key, value)) = value(m, obx, &value_type)? {
        obs[key] = value;
    }
    let effective = m
        .component(obx, 14, 1)
        .and_then(|t| datetime::parse(&t))
        .or_else(|| report_effective.cloned());
    if let Some(at) = effective {
        obs["effectiveDateTime"] = at.fhir.into();
    }
    if let Some(range) = m.field_text(obx, 7) {
        obs["referenceRange"] = json!([reference_range(&range, unit(m, obx))]);
    }
    let flags: Vec<Value> = m
        .repetitions(obx, 8)
        .iter()
        .filter_map(|r| m.text(r.raw()))
        .map(|flag| {
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag}]})
        })
        .collect();
    if !flags.is_empty() {
        obs["interpretation"] = flags.into();
    }
    if !notes.is_empty() {
        obs["note"] = notes
            .iter()
            .map(|n| json!({"text": n}))
            .collect::<Vec<_>>()
            .into();
    }
    Ok(obs)
}

/// OBX-5 by its type (OBX-2). A value that does not fit its numeric type is kept as text rather
/// than lost: lab feeds routinely send `<0.1` as NM.
fn value(
    m: &Mapper,
    obx: &Segment,
    value_type: &str,
) -> Result<Option<(&'static str, Value)>, String> {
    let reps = m.repetitions(obx, 5);
    let Some(first) = reps.first() else {
        return Ok(None);
    };
    let as_text = || -> Option<(&'static str, Value)> {
        let lines: Vec<String> = reps.iter().filter_map(|r| m.text(r.raw())).collect();
        (!lines.is_empty()).then(|| ("valueString", lines.join("\n").into()))
    };
    let v = match value_type {
        "NM" => match m.text(first.raw()).as_deref().and_then(number) {
            Some(n) => Some(("valueQuantity", quantity(n, unit(m, obx)))),
            None => as_text(),
        },
        "SN" => structured_numeric(m, first, unit(m, obx)).or_else(as_text),
        "CE" | "CWE" | "CNE" | "CF" => m.codeable(first).map(|c| ("valueCodeableConcept", c)),
        "TS" | "DT" | "DTM" => match m.text(first.raw()).and_then(|t| datetime::parse(&t)) {
            Some(at) => Some(("valueDateTime", at.fhir.into())),
            None => as_text(),
        },
        "ST" | "TX" | "FT" | "" => as_text(),
        _ => as_text(),
    };
    Ok(v)
}

/// A finite decimal, as FHIR takes it (no `inf`, no `NaN`, no exponent).
fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
        && s.bytes().any(|b| b.is_ascii_digit());
    ok.then(|| s.parse::<f64>().ok())
        .flatten()
        .filter(|n| n.is_finite())
}

/// OBX-6: the unit code (or its text) and whether it is UCUM.
fn unit(m: &Mapper, obx: &Segment) -> Option<(String, bool)> {
    let code = m.component(obx, 6, 1).or_else(|| m.component(obx, 6, 2))?;
    let system = m.component(obx, 6, 3);
    Some((code, matches!(system.as_deref(), Some("UCUM") | None)))
}

fn quantity(value: f64, unit: Option<(String, bool)>) -> Value {
    let mut q = json!({"value": value});
    if let Some((code, ucum)) = unit {
        q["unit"] = code.clone().into();
        if ucum {
            q["system"] = "http://unitsofmeasure.org".into();
            q["code"] = code.into();
        }
    }
    q
}

/// SN: comparator ^ number ^ separator/suffix ^ number.
fn structured_numeric(
    m: &Mapper,
    sn: &super::parse::Repetition,
    unit: Option<(String, bool)>,
) -> Option<(&'static str, Value)> {
    let comparator = m.rep_component(sn, 1);
    let n1 = m.rep_component(sn, 2).as_deref().and_then(number);
    let separator = m.rep_component(sn, 3);
    let n2 = m.rep_component(sn, 4).as_deref().and_then(number);
    match (comparator.as_deref(), n1, separator.as_deref(), n2) {
        (c, Some(a), None, None) => {
            let mut q = quantity(a, unit);
            match c {
                None | Some("=") => {}
                Some(c @ ("<" | "<=" | ">" | ">=")) => q["comparator"] = c.into(),
                Some("<>") => return None,
                Some(_) => return None,
            }
            Some(("valueQuantity", q))
        }
        (None, Some(a), Some("-"), Some(b)) => Some((
            "valueRange",
            json!({"low": quantity(a, unit.clone()), "high": quantity(b, unit)}),
        )),
        (None, Some(a), Some(":" | "/"), Some(b)) => Some((
            "valueRatio",
            json!({"numerator": {"value": a}, "denominator": {"value": b}}),
        )),
        _ => None,
    }
}

fn reference_range(text: &str, unit: Option<(String, bool)>) -> Value {
    let mut range = json!({"text": text});
    if let Some((low, high)) = text.split_once('-') {
        if let (Some(l), Some(h)) = (number(low), number(high)) {
            range["low"] = quantity(l, unit.clone());
            range["high"] = quantity(h, unit);
        }
    }
    range
}

/// OBR-25 / OBX-11 result status (HL7 table 0123 / 0085) as FHIR's.
fn result_status(code: Option<&str>, report: bool) -> &'static str {
    match code {
        Some("F") => "final",
        Some("C") => "corrected",
        Some("P" | "R" | "S") => "preliminary",
        Some("A") => {
            if report {
                "partial"
            } else {
                "preliminary"
            }
        }
        Some("I" | "O") => "registered",
        Some("X") => "cancelled",
        Some("D" | "W") => "entered-in-error",
        _ => "final",
    }
}
