//! PID → the patient's local identity (the MRN under the source's assigning authority) and a FHIR
//! Patient.

use schemas::PatientIdentity;
use serde_json::{json, Value};

use super::parse::{Repetition, Segment};
use super::{datetime, MapError, Mapper};
use crate::fhir::Record;

pub struct Patient<'s, 'a> {
    pub identity: PatientIdentity,
    /// `Patient/<id>`, for the subject of the message's other resources.
    pub reference: String,
    id: String,
    pid: &'s Segment<'a>,
}

impl<'s, 'a> Patient<'s, 'a> {
    /// The PID-3 repetition under the source's assigning authority (CX-4), else the first typed
    /// `MR`/`MRN` (CX-5).
    pub fn read(m: &Mapper<'_, 'a>, pid: &'s Segment<'a>) -> Result<Self, MapError> {
        let mrn = local_mrn(m, pid, 3).ok_or_else(|| {
            MapError::Invalid(
                "PID-3 has no identifier under the source's assigning authority nor one typed MR"
                    .into(),
            )
        })?;
        let id = m.id("Patient", &mrn);
        Ok(Patient {
            identity: PatientIdentity {
                assigning_authority: m.ctx.assigning_authority.clone(),
                mrn,
            },
            reference: format!("Patient/{id}"),
            id,
            pid,
        })
    }

    pub fn record(&self, m: &Mapper) -> Record {
        let pid = self.pid;
        let mut identifiers = vec![json!({
            "use": "usual",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": m.ctx.assigning_authority,
            "value": self.identity.mrn,
        })];
        for cx in m.repetitions(pid, 3) {
            if let Some(other) = other_identifier(m, &cx) {
                if other["value"] != identifiers[0]["value"]
                    || other["system"] != identifiers[0]["system"]
                {
                    identifiers.push(other);
                }
            }
        }
        let mut patient = json!({
            "resourceType": "Patient",
            "id": self.id,
            "meta": m.meta(),
            "identifier": identifiers,
        });
        let names: Vec<Value> = m
            .repetitions(pid, 5)
            .iter()
            .filter_map(|xpn| name(m, xpn))
            .collect();
        if !names.is_empty() {
            patient["name"] = names.into();
        }
        if let Some(birth) = m.component(pid, 7, 1).and_then(|b| datetime::date(&b)) {
            patient["birthDate"] = birth.into();
        }
        if let Some(sex) = m.field_text(pid, 8) {
            let gender = match sex.as_str() {
                "M" => "male",
                "F" => "female",
                "O" | "A" | "N" => "other",
                _ => "unknown",
            };
            patient["gender"] = gender.into();
        }
        let addresses: Vec<Value> = m
            .repetitions(pid, 11)
            .iter()
            .filter_map(|xad| address(m, xad))
            .collect();
        if !addresses.is_empty() {
            patient["address"] = addresses.into();
        }
        let mut telecom = Vec::new();
        for (field, use_) in [(13, "home"), (14, "work")] {
            for xtn in m.repetitions(pid, field) {
                let system = match m.rep_component(&xtn, 3).as_deref() {
                    Some("Internet" | "X.400") => "email",
                    Some("FX") => "fax",
                    _ => "phone",
                };
                let value = if system == "email" {
                    m.rep_component(&xtn, 4)
                } else {
                    m.rep_component(&xtn, 1).or_else(|| {
                        let area = m.rep_component(&xtn, 6).unwrap_or_default();
                        m.rep_component(&xtn, 7).map(|n| format!("{area}{n}"))
                    })
                };
                if let Some(value) = value {
                    telecom.push(json!({"system": system, "value": value, "use": use_}));
                }
            }
        }
        if !telecom.is_empty() {
            patient["telecom"] = telecom.into();
        }
        match (
            m.component(pid, 29, 1).and_then(|d| datetime::parse(&d)),
            m.field_text(pid, 30),
        ) {
            (Some(at), _) => patient["deceasedDateTime"] = at.fhir.into(),
            (None, Some(flag)) if flag == "Y" => patient["deceasedBoolean"] = true.into(),
            _ => {}
        }
        Record {
            resource_type: "Patient".into(),
            resource_id: self.id.clone(),
            patient: Some(self.identity.clone()),
            last_updated: m.version(),
            resource: patient,
        }
    }
}

/// Authorities compare without a `urn:oid:` prefix: senders write OIDs either way.
/// The MRN in a CX list (PID-3, MRG-1): the repetition under the source's assigning authority
/// (CX-4), else the first typed `MR`/`MRN` (CX-5).
pub fn local_mrn(m: &Mapper<'_, '_>, seg: &Segment<'_>, field: usize) -> Option<String> {
    let ids = m.repetitions(seg, field);
    let sep = &m.msg.separators;
    let under_authority = ids.iter().find(|cx| {
        let ns = m.text(cx.subcomponent(4, 1, sep));
        let universal = m.text(cx.subcomponent(4, 2, sep));
        [ns, universal]
            .iter()
            .flatten()
            .any(|a| same_authority(a, &m.ctx.assigning_authority))
    });
    let typed_mr = || {
        ids.iter()
            .find(|cx| matches!(m.rep_component(cx, 5).as_deref(), Some("MR" | "MRN")))
    };
    under_authority
        .or_else(typed_mr)
        .and_then(|cx| m.rep_component(cx, 1))
}

fn same_authority(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("urn:oid:").to_string();
    strip(a) == strip(b)
}

fn other_identifier(m: &Mapper, cx: &Repetition) -> Option<Value> {
    let sep = &m.msg.separators;
    let value = m.rep_component(cx, 1)?;
    let universal = m.text(cx.subcomponent(4, 2, sep));
    let system = match (universal, m.text(cx.subcomponent(4, 3, sep)).as_deref()) {
        (Some(u), Some("ISO")) if !u.starts_with("urn:") => format!("urn:oid:{u}"),
        (Some(u), _) => u,
        (None, _) => {
            let ns = m.text(cx.subcomponent(4, 1, sep))?;
            if same_authority(&ns, &m.ctx.assigning_authority) {
                m.ctx.assigning_authority.clone()
            } else {
                format!("urn:hie:authority:{ns}")
            }
        }
    };
    let mut identifier = json!({"system": system, "value": value});
    if let Some(t) = m.rep_component(cx, 5) {
        identifier["type"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t}]});
    }
    Some(identifier)
}

fn name(m: &Mapper, xpn: &Repetition) -> Option<Value> {
    let sep = &m.msg.separators;
    // XPN-1 is itself an FN in 2.3+; its first subcomponent is the surname.
    let family = m.text(xpn.subcomponent(1, 1, sep));
    let given: Vec<String> = [2, 3]
        .iter()
        .filter_map(|c| m.rep_component(xpn, *c))
        .collect();
    if family.is_none() && given.is_empty() {
        return None;
    }
    let mut name = json!({});
    if let Some(f) = family {
        name["family"] = f.into();
    }
    if !given.is_empty() {
        name["given"] = given.into();
    }
    if let Some(suffix) = m.rep_component(xpn, 4) {
        name["suffix"] = json!([suffix]);
    }
    if let Some(prefix) = m.rep_component(xpn, 5) {
        name["prefix"] = json!([prefix]);
    }
    let use_ = match m.rep_component(xpn, 7).as_deref() {
        Some("L") => Some("official"),
        Some("D") => Some("usual"),
        Some("M") => Some("maiden"),
        Some("A") => Some("nickname"),
        _ => None,
    };
    if let Some(u) = use_ {
        name["use"] = u.into();
    }
    Some(name)
}

fn address(m: &Mapper, xad: &Repetition) -> Option<Value> {
    let sep = &m.msg.separators;
    let line: Vec<String> = [m.text(xad.subcomponent(1, 1, sep)), m.rep_component(xad, 2)]
        .into_iter()
        .flatten()
        .collect();
    let mut address = json!({});
    if !line.is_empty() {
        address["line"] = line.into();
    }
    for (c, key) in [(3, "city"), (4, "state"), (5, "postalCode"), (6, "country")] {
        if let Some(v) = m.rep_component(xad, c) {
            address[key] = v.into();
        }
    }
    (address.as_object().is_some_and(|o| !o.is_empty())).then_some(address)
}
