//! The demo's own synthetic data set. Fixed lists, and resource ids derived from stable keys, so
//! every run produces byte-identical bundles: running the demo twice re-delivers the same records
//! instead of inventing new ones. The people are fictional; the names say so.

use serde_json::{json, Value};
use uuid::Uuid;

pub const MERCY: &str = "mercy-hospital";
pub const MERCY_AA: &str = "urn:oid:2.16.840.1.113883.3.7001";
pub const NORTHSIDE: &str = "northside-lab";
pub const NORTHSIDE_AA: &str = "urn:oid:2.16.840.1.113883.3.7002";

pub struct Person {
    /// How the demo refers to them (A..E): consents and examples pick people by label.
    pub label: char,
    pub given: &'static str,
    pub family: &'static str,
    pub gender: &'static str,
    pub birth_date: &'static str,
    pub mercy_mrn: Option<&'static str>,
    pub northside_mrn: Option<&'static str>,
}

/// B and D are known to both sources (same demographics, different MRNs), so the master patient
/// index has something to link.
pub const PEOPLE: [Person; 5] = [
    Person {
        label: 'A',
        given: "Ada",
        family: "Exampleton",
        gender: "female",
        birth_date: "1958-03-14",
        mercy_mrn: Some("MGH-100001"),
        northside_mrn: None,
    },
    Person {
        label: 'B',
        given: "Bruno",
        family: "Sampleworth",
        gender: "male",
        birth_date: "1971-11-02",
        mercy_mrn: Some("MGH-100002"),
        northside_mrn: Some("NRL-200417"),
    },
    Person {
        label: 'C',
        given: "Carmen",
        family: "Testwell",
        gender: "female",
        birth_date: "1989-06-27",
        mercy_mrn: Some("MGH-100003"),
        northside_mrn: None,
    },
    Person {
        label: 'D',
        given: "Dmitri",
        family: "Demoford",
        gender: "male",
        birth_date: "1946-09-09",
        mercy_mrn: Some("MGH-100004"),
        northside_mrn: Some("NRL-200533"),
    },
    Person {
        label: 'E',
        given: "Esther",
        family: "Mockridge",
        gender: "female",
        birth_date: "1995-01-18",
        mercy_mrn: None,
        northside_mrn: Some("NRL-200681"),
    },
];

pub fn person(label: char) -> &'static Person {
    PEOPLE
        .iter()
        .find(|p| p.label == label)
        .expect("demo person labels are fixed")
}

/// One hospital visit: (SNOMED problem, optional RxNorm prescription).
struct Visit {
    date: &'static str,
    class: (&'static str, &'static str),
    kind: (&'static str, &'static str),
    problems: &'static [(Code, Option<Code>)],
}
type Code = (&'static str, &'static str);

/// (LOINC, display, value, UCUM unit, low, high)
type Lab = (
    &'static str,
    &'static str,
    f64,
    &'static str,
    Option<f64>,
    Option<f64>,
);

const AMB: (&str, &str) = ("AMB", "ambulatory");
const EMER: (&str, &str) = ("EMER", "emergency");
const CHECKUP: (&str, &str) = ("185349003", "Encounter for check up (procedure)");
const ED_VISIT: (&str, &str) = ("50849002", "Emergency room admission (procedure)");
const HYPERTENSION: Code = (
    "38341003",
    "Hypertensive disorder, systemic arterial (disorder)",
);

fn mercy_visits(label: char) -> &'static [Visit] {
    match label {
        'A' => &[Visit {
            date: "2026-09-15",
            class: AMB,
            kind: CHECKUP,
            problems: &[(
                HYPERTENSION,
                Some(("314076", "lisinopril 10 MG Oral Tablet")),
            )],
        }],
        'B' => &[
            Visit {
                date: "2026-08-04",
                class: AMB,
                kind: CHECKUP,
                problems: &[(
                    ("44054006", "Diabetes mellitus type 2 (disorder)"),
                    Some((
                        "860975",
                        "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
                    )),
                )],
            },
            Visit {
                date: "2026-10-20",
                class: AMB,
                kind: CHECKUP,
                problems: &[(
                    ("55822004", "Hyperlipidemia (disorder)"),
                    Some(("259255", "Atorvastatin 80 MG Oral Tablet")),
                )],
            },
        ],
        'C' => &[Visit {
            date: "2026-10-02",
            class: EMER,
            kind: ED_VISIT,
            problems: &[(
                ("195967001", "Asthma (disorder)"),
                Some((
                    "745679",
                    "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
                )),
            )],
        }],
        'D' => &[Visit {
            date: "2026-07-28",
            class: AMB,
            kind: CHECKUP,
            problems: &[
                (
                    ("433144002", "Chronic kidney disease stage 3 (disorder)"),
                    None,
                ),
                (
                    HYPERTENSION,
                    Some(("197361", "amlodipine 5 MG Oral Tablet")),
                ),
            ],
        }],
        _ => &[],
    }
}

/// (SNOMED, display, category, criticality)
fn mercy_allergies(
    label: char,
) -> &'static [(&'static str, &'static str, &'static str, &'static str)] {
    match label {
        'A' => &[("91936005", "Allergy to penicillin", "medication", "high")],
        'B' => &[("91935009", "Allergy to peanuts", "food", "high")],
        'C' => &[("300913006", "Shellfish allergy", "food", "low")],
        'D' => &[("300916003", "Latex allergy", "environment", "low")],
        _ => &[],
    }
}

fn northside_labs(label: char) -> (&'static str, &'static [Lab]) {
    match label {
        'B' => (
            "2026-10-18",
            &[
                ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 7.9, "%", Some(4.0), Some(5.6)),
                ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", 162.0, "mg/dL", Some(70.0), Some(99.0)),
                ("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", 131.0, "mg/dL", None, Some(99.0)),
            ],
        ),
        'D' => (
            "2026-07-26",
            &[
                ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", 1.8, "mg/dL", Some(0.6), Some(1.2)),
                ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)", 38.0, "mL/min/{1.73_m2}", Some(60.0), None),
                ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", 5.3, "mmol/L", Some(3.5), Some(5.1)),
            ],
        ),
        'E' => (
            "2026-11-03",
            &[
                ("718-7", "Hemoglobin [Mass/volume] in Blood", 13.6, "g/dL", Some(12.0), Some(15.5)),
                ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", 7.2, "10*3/uL", Some(4.5), Some(11.0)),
                ("777-3", "Platelets [#/volume] in Blood by Automated count", 250.0, "10*3/uL", Some(150.0), Some(400.0)),
                ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", 2.1, "m[IU]/L", Some(0.4), Some(4.0)),
            ],
        ),
        _ => ("", &[]),
    }
}

/// A bundle for one person at one source.
pub struct DemoBundle {
    pub source: &'static str,
    pub label: char,
    pub bundle: Value,
}

/// Every demo bundle, mercy-hospital first, then northside-lab.
pub fn bundles() -> Vec<DemoBundle> {
    let mut out = Vec::new();
    for p in &PEOPLE {
        if let Some(mrn) = p.mercy_mrn {
            out.push(DemoBundle {
                source: MERCY,
                label: p.label,
                bundle: mercy_bundle(p, mrn),
            });
        }
    }
    for p in &PEOPLE {
        if let Some(mrn) = p.northside_mrn {
            out.push(DemoBundle {
                source: NORTHSIDE,
                label: p.label,
                bundle: northside_bundle(p, mrn),
            });
        }
    }
    out
}

/// Collects entries; each resource gets an id derived from `source/key`, used for both its
/// `id` and its `urn:uuid:` full URL (as Synthea does).
struct Entries {
    source: &'static str,
    entries: Vec<Value>,
}

impl Entries {
    fn new(source: &'static str) -> Self {
        Entries {
            source,
            entries: Vec::new(),
        }
    }

    /// Adds the resource and returns its `urn:uuid:` reference.
    fn add(&mut self, key: &str, mut resource: Value) -> String {
        let id = stable_uuid(&format!("{}/{key}", self.source)).to_string();
        let kind = resource["resourceType"]
            .as_str()
            .expect("demo resources have a type")
            .to_owned();
        resource["id"] = json!(id);
        let full_url = format!("urn:uuid:{id}");
        self.entries.push(json!({
            "fullUrl": full_url,
            "resource": resource,
            "request": {"method": "POST", "url": kind},
        }));
        full_url
    }

    fn into_bundle(self) -> Value {
        json!({"resourceType": "Bundle", "type": "batch", "entry": self.entries})
    }
}

fn patient(p: &Person, assigning_authority: &str, mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                "code": "MR",
                "display": "Medical record number",
            }]},
            "system": assigning_authority,
            "value": mrn,
        }],
        "name": [{"use": "official", "family": p.family, "given": [p.given]}],
        "gender": p.gender,
        "birthDate": p.birth_date,
        // 555-01xx is reserved for fiction.
        "telecom": [{"system": "phone", "value": format!("555-01{:02}", p.label as u32 - 'A' as u32 + 10), "use": "home"}],
        "address": [{"line": ["1 Example Street"], "city": "Springfield", "state": "NY", "postalCode": "10001"}],
    })
}

fn coding(system: &str, (code, display): Code) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}], "text": display})
}

const SNOMED: &str = "http://snomed.info/sct";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";

fn mercy_bundle(p: &Person, mrn: &str) -> Value {
    let mut e = Entries::new(MERCY);
    let who = e.add(&format!("{mrn}/patient"), patient(p, MERCY_AA, mrn));
    let subject = json!({"reference": who});

    for (i, v) in mercy_visits(p.label).iter().enumerate() {
        let enc = e.add(
            &format!("{mrn}/encounter/{i}"),
            json!({
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": v.class.0, "display": v.class.1,
                },
                "type": [coding(SNOMED, v.kind)],
                "subject": subject,
                "period": {"start": format!("{}T09:00:00Z", v.date), "end": format!("{}T10:00:00Z", v.date)},
                "serviceProvider": {"display": "Mercy General Hospital"},
            }),
        );
        for (j, (problem, rx)) in v.problems.iter().enumerate() {
            e.add(
                &format!("{mrn}/condition/{i}/{j}"),
                json!({
                    "resourceType": "Condition",
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}],
                    "code": coding(SNOMED, *problem),
                    "subject": subject,
                    "encounter": {"reference": enc},
                    "onsetDateTime": format!("{}T09:30:00Z", v.date),
                    "recordedDate": format!("{}T09:30:00Z", v.date),
                }),
            );
            if let Some(drug) = rx {
                e.add(
                    &format!("{mrn}/medication-request/{i}/{j}"),
                    json!({
                        "resourceType": "MedicationRequest",
                        "status": "active",
                        "intent": "order",
                        "medicationCodeableConcept": coding(RXNORM, *drug),
                        "subject": subject,
                        "encounter": {"reference": enc},
                        "authoredOn": format!("{}T09:45:00Z", v.date),
                        "dosageInstruction": [{"text": "as directed"}],
                    }),
                );
            }
        }
    }
    for (i, (code, display, category, criticality)) in mercy_allergies(p.label).iter().enumerate() {
        e.add(
            &format!("{mrn}/allergy/{i}"),
            json!({
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
                "type": "allergy",
                "category": [category],
                "criticality": criticality,
                "code": coding(SNOMED, (code, display)),
                "patient": subject,
                "recordedDate": "2026-06-01T12:00:00Z",
            }),
        );
    }
    e.into_bundle()
}

fn quantity(value: f64, unit: &str) -> Value {
    json!({"value": value, "unit": unit, "system": UCUM, "code": unit})
}

/// H/L/N against the reference range, as the lab's analyser would flag it.
fn interpretation(value: f64, low: Option<f64>, high: Option<f64>) -> (&'static str, &'static str) {
    match (low, high) {
        (Some(l), _) if value < l => ("L", "Low"),
        (_, Some(h)) if value > h => ("H", "High"),
        _ => ("N", "Normal"),
    }
}

fn northside_bundle(p: &Person, mrn: &str) -> Value {
    let mut e = Entries::new(NORTHSIDE);
    let who = e.add(&format!("{mrn}/patient"), patient(p, NORTHSIDE_AA, mrn));
    let subject = json!({"reference": who});
    let (date, labs) = northside_labs(p.label);
    let effective = format!("{date}T07:30:00Z");
    let issued = format!("{date}T14:00:00Z");

    let mut results = Vec::new();
    for &(loinc, display, value, unit, low, high) in labs {
        let mut range = json!({});
        if let Some(l) = low {
            range["low"] = quantity(l, unit);
        }
        if let Some(h) = high {
            range["high"] = quantity(h, unit);
        }
        let (flag, flag_display) = interpretation(value, low, high);
        let obs = e.add(
            &format!("{mrn}/{date}/{loinc}"),
            json!({
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory", "display": "Laboratory"}]}],
                "code": coding(LOINC, (loinc, display)),
                "subject": subject,
                "effectiveDateTime": effective,
                "issued": issued,
                "valueQuantity": quantity(value, unit),
                "referenceRange": [range],
                "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag, "display": flag_display}]}],
            }),
        );
        results.push(json!({"reference": obs}));
    }
    e.add(
        &format!("{mrn}/{date}/report"),
        json!({
            "resourceType": "DiagnosticReport",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB", "display": "Laboratory"}]}],
            "code": coding(LOINC, ("11502-2", "Laboratory report")),
            "subject": subject,
            "effectiveDateTime": effective,
            "issued": issued,
            "performer": [{"display": "Northside Reference Lab"}],
            "result": results,
        }),
    );
    e.into_bundle()
}

/// A version-4-shaped UUID derived from `key` (two FNV-1a hashes through the splitmix64
/// finaliser): stable across runs and machines, no randomness source needed.
fn stable_uuid(key: &str) -> Uuid {
    fn hash(seed: u64, key: &str) -> u64 {
        let mut h = seed;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // splitmix64 finaliser spreads the bits of similar keys.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hash(0xcbf2_9ce4_8422_2325, key).to_le_bytes());
    bytes[8..].copy_from_slice(&hash(0x84222325_cbf29ce4, key).to_le_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn bundles_are_deterministic() {
        let a: Vec<Value> = bundles().into_iter().map(|b| b.bundle).collect();
        let b: Vec<Value> = bundles().into_iter().map(|b| b.bundle).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn every_clinical_resource_references_the_bundles_patient() {
        let mut ids = HashSet::new();
        for b in bundles() {
            let entries = b.bundle["entry"].as_array().unwrap();
            let patients: Vec<&Value> = entries
                .iter()
                .filter(|e| e["resource"]["resourceType"] == "Patient")
                .collect();
            assert_eq!(patients.len(), 1);
            let patient_url = &patients[0]["fullUrl"];
            let aa = if b.source == MERCY {
                MERCY_AA
            } else {
                NORTHSIDE_AA
            };
            assert_eq!(patients[0]["resource"]["identifier"][0]["system"], aa);

            for e in entries {
                assert!(
                    ids.insert(e["fullUrl"].as_str().unwrap().to_owned()),
                    "full URLs are unique"
                );
                let r = &e["resource"];
                assert_eq!(e["request"]["url"], r["resourceType"]);
                match r["resourceType"].as_str().unwrap() {
                    "Patient" => {}
                    "AllergyIntolerance" => assert_eq!(&r["patient"]["reference"], patient_url),
                    _ => assert_eq!(&r["subject"]["reference"], patient_url),
                }
            }
        }
    }

    #[test]
    fn some_people_are_at_both_sources() {
        let both = PEOPLE
            .iter()
            .filter(|p| p.mercy_mrn.is_some() && p.northside_mrn.is_some())
            .count();
        assert!(both >= 1);
    }

    #[test]
    fn flags_out_of_range_values() {
        assert_eq!(interpretation(7.9, Some(4.0), Some(5.6)).0, "H");
        assert_eq!(interpretation(38.0, Some(60.0), None).0, "L");
        assert_eq!(interpretation(13.6, Some(12.0), Some(15.5)).0, "N");
    }
}
