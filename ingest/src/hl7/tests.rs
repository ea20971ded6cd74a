//! Mapping tests on the project's fixtures (`tests/fixtures/hl7/`): three facilities' styles.

use serde_json::Value;

use super::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../tests/fixtures/hl7/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn map(name: &str, aa: &str) -> Result<Vec<Record>, MapError> {
    let text = fixture(name);
    let msg = Message::parse(&text).unwrap();
    let header = Header::read(&msg).unwrap();
    let ctx = SourceContext {
        source_id: header.source_id.clone(),
        assigning_authority: aa.into(),
    };
    to_records(&msg, &header, &ctx)
}

fn find<'r>(records: &'r [Record], t: &str) -> Vec<&'r Value> {
    records
        .iter()
        .filter(|r| r.resource_type == t)
        .map(|r| &r.resource)
        .collect()
}

const MERCY: &str = "urn:oid:2.16.840.1.113883.3.1001";

#[test]
fn a04_patient_and_encounter() {
    let records = map("mercy_adt_a04.hl7", MERCY).unwrap();
    assert_eq!(records.len(), 2);
    let p = find(&records, "Patient")[0];
    assert_eq!(records[0].patient.as_ref().unwrap().mrn, "MG12345");
    assert_eq!(p["identifier"][0]["system"], MERCY);
    assert_eq!(p["identifier"][0]["value"], "MG12345");
    assert_eq!(p["identifier"][1]["system"], "urn:hie:authority:SSA");
    assert_eq!(p["name"][0]["family"], "O'Neil");
    assert_eq!(p["name"][0]["given"], serde_json::json!(["Mary", "Kate"]));
    assert_eq!(p["name"][0]["use"], "official");
    assert_eq!(p["name"][1]["use"], "maiden");
    assert_eq!(p["birthDate"], "1980-02-03");
    assert_eq!(p["gender"], "female");
    assert_eq!(p["address"][0]["line"][0], "12 Main St & 3rd Ave");
    assert_eq!(p["telecom"][1]["system"], "email");
    assert_eq!(p["telecom"][1]["value"], "mary@example.org");
    assert_eq!(p["meta"]["lastUpdated"], "2024-03-01T10:15:00-05:00");
    assert_eq!(records[0].last_updated, Some(1_709_306_100_000_000));
    let e = find(&records, "Encounter")[0];
    assert_eq!(e["status"], "arrived");
    assert_eq!(e["class"]["code"], "AMB");
    assert_eq!(
        e["subject"]["reference"],
        format!("Patient/{}", p["id"].as_str().unwrap())
    );
    assert_eq!(e["identifier"][0]["value"], "V1001");
    assert_eq!(e["period"]["start"], "2024-03-01T10:10:00-05:00");
    assert_eq!(e["participant"][0]["individual"]["display"], "Marcus Welby");
}

#[test]
fn a08_updates_the_same_resources_with_a_later_version() {
    let first = map("mercy_adt_a04.hl7", MERCY).unwrap();
    let update = map("mercy_adt_a08.hl7", MERCY).unwrap();
    assert_eq!(first[0].resource_id, update[0].resource_id);
    assert_eq!(first[1].resource_id, update[1].resource_id);
    assert!(update[0].last_updated > first[0].last_updated);
    assert_eq!(update[0].resource["name"][0]["family"], "O'Neil-Hart");
    assert_eq!(update[1].resource["status"], "finished");
}

#[test]
fn oru_report_and_observations() {
    let records = map("mercy_oru_r01.hl7", MERCY).unwrap();
    let report = find(&records, "DiagnosticReport")[0];
    let obs = find(&records, "Observation");
    assert_eq!(obs.len(), 6);
    assert_eq!(report["status"], "final");
    assert_eq!(report["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(report["identifier"][0]["value"], "FIL-5501");
    assert_eq!(report["result"].as_array().unwrap().len(), 6);
    assert_eq!(report["issued"], "2024-03-02T11:55:00-05:00");
    let glucose = obs[0];
    assert_eq!(glucose["valueQuantity"]["value"], 182.0);
    assert_eq!(glucose["valueQuantity"]["code"], "mg/dL");
    assert_eq!(glucose["referenceRange"][0]["low"]["value"], 70.0);
    assert_eq!(glucose["referenceRange"][0]["high"]["value"], 99.0);
    assert_eq!(glucose["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(glucose["effectiveDateTime"], "2024-03-02T08:00:00-05:00");
    assert_eq!(obs[2]["valueQuantity"]["comparator"], "<");
    assert_eq!(obs[2]["valueQuantity"]["value"], 0.5);
    assert_eq!(obs[3]["valueCodeableConcept"]["coding"][0]["code"], "YEL");
    assert_eq!(
        obs[3]["valueCodeableConcept"]["coding"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(obs[4]["valueString"], "Sample slightly hemolyzed & lipemic");
    assert_eq!(obs[4]["note"][0]["text"], "Repeat if clinically indicated.");
    assert_eq!(obs[5]["valueString"], "Line one\nLine two | pipe");
    // Every result has its own stable id.
    let mut ids: Vec<_> = obs.iter().map(|o| o["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    assert_eq!(
        map("mercy_oru_r01.hl7", MERCY).unwrap()[0].resource_id,
        records[0].resource_id
    );
}

#[test]
fn custom_separators_namespace_authority_and_admit_time_key() {
    let records = map("riverside_adt_a01.hl7", "RIVERSIDE").unwrap();
    assert_eq!(records.len(), 2);
    let p = &records[0];
    assert_eq!(p.patient.as_ref().unwrap().mrn, "RC-0042");
    assert_eq!(p.resource["name"][0]["family"], "Tran");
    assert_eq!(p.resource["gender"], "male");
    assert!(p.resource.get("address").is_none());
    let e = &records[1].resource;
    assert_eq!(e["status"], "in-progress");
    assert_eq!(e["class"]["code"], "IMP");
    assert_eq!(e["location"][0]["location"]["display"], "WARD3 12 B");
    assert_eq!(e["period"]["start"], "2024-03-05T11:55:00Z");
}

#[test]
fn typed_mr_fallback_orc_order_number_and_odd_values() {
    let records = map("valley_oru_r01.hl7", "urn:oid:1.3.6.1.4.1.99999").unwrap();
    assert_eq!(records[0].patient.as_ref().unwrap().mrn, "L-5521");
    let obs = find(&records, "Observation");
    assert_eq!(obs[0]["valueRange"]["low"]["value"], 150.0);
    assert_eq!(obs[0]["valueRange"]["high"]["value"], 400.0);
    assert_eq!(obs[1]["valueRatio"]["denominator"]["value"], 2.0);
    assert_eq!(obs[2]["valueString"], "<0.1");
    assert_eq!(obs[2]["status"], "preliminary");
    assert_eq!(obs[3]["status"], "cancelled");
    assert!(obs[3].get("valueString").is_none());
    let report = find(&records, "DiagnosticReport")[0];
    assert_eq!(report["effectiveDateTime"], "2024-03-10T12:00:00+01:00");
}

#[test]
fn rejections_name_fields_not_values() {
    let text = fixture("mercy_adt_a04.hl7").replace(
        "MG12345^^^MERCY&2.16.840.1.113883.3.1001&ISO^MR",
        "SECRET^^^ELSEWHERE^XX",
    );
    let msg = Message::parse(&text).unwrap();
    let header = Header::read(&msg).unwrap();
    let ctx = SourceContext {
        source_id: "mercy".into(),
        assigning_authority: MERCY.into(),
    };
    let err = to_records(&msg, &header, &ctx).unwrap_err();
    assert!(matches!(err, MapError::Invalid(_)));
    assert!(!err.to_string().contains("SECRET"));

    // An A40 without its MRG: nothing to merge.
    let merge = fixture("mercy_adt_a08.hl7").replace("ADT^A08^ADT_A01", "ADT^A40^ADT_A39");
    let msg = Message::parse(&merge).unwrap();
    let header = Header::read(&msg).unwrap();
    assert!(matches!(
        super::map(&msg, &header, &ctx).unwrap_err(),
        MapError::Invalid(_)
    ));

    let old = fixture("mercy_adt_a08.hl7").replace("|2.5.1", "|2.2");
    let msg = Message::parse(&old).unwrap();
    let header = Header::read(&msg).unwrap();
    assert_eq!(
        to_records(&msg, &header, &ctx).unwrap_err(),
        MapError::Version
    );

    let other = fixture("mercy_adt_a08.hl7").replace("ADT^A08^ADT_A01", "SIU^S12");
    let msg = Message::parse(&other).unwrap();
    let header = Header::read(&msg).unwrap();
    assert_eq!(
        to_records(&msg, &header, &ctx).unwrap_err().ack_code(),
        AckCode::Reject
    );
}

fn map_a40(text: &str) -> Result<Mapped, MapError> {
    let msg = Message::parse(text).unwrap();
    let header = Header::read(&msg).unwrap();
    let ctx = SourceContext {
        source_id: header.source_id.clone(),
        assigning_authority: MERCY.into(),
    };
    super::map(&msg, &header, &ctx)
}

#[test]
fn a40_merges_the_mrg_patient_into_the_pid_patient() {
    let mapped = map_a40(&fixture("mercy_adt_a40.hl7")).unwrap();
    assert_eq!(
        mapped.merges,
        vec![Merge {
            survivor: schemas::PatientIdentity {
                assigning_authority: MERCY.into(),
                mrn: "MG12345".into(),
            },
            prior: schemas::PatientIdentity {
                assigning_authority: MERCY.into(),
                mrn: "MG67890".into(),
            },
        }]
    );
    // The PID updates the survivor like an A08: the same Patient resource as the A04 made.
    assert_eq!(mapped.records.len(), 1);
    let a04 = map("mercy_adt_a04.hl7", MERCY).unwrap();
    assert_eq!(mapped.records[0].resource_id, a04[0].resource_id);
    assert_eq!(
        mapped.records[0].resource["name"][0]["family"],
        "O'Neil-Hart"
    );

    // The drop folder publishes records only: a merge there is refused, to be sent over MLLP.
    let text = fixture("mercy_adt_a40.hl7");
    let msg = Message::parse(&text).unwrap();
    let header = Header::read(&msg).unwrap();
    let ctx = SourceContext {
        source_id: "MERCY-GENERAL".into(),
        assigning_authority: MERCY.into(),
    };
    let err = to_records(&msg, &header, &ctx).unwrap_err();
    assert_eq!(err, MapError::MergeOverMllpOnly);
    assert_eq!(err.ack_code(), AckCode::Error);
}

#[test]
fn a40_with_several_patient_groups_merges_each() {
    let text = fixture("mercy_adt_a40.hl7")
        + "PID|2||MG2^^^MERCY&2.16.840.1.113883.3.1001&ISO^MR\rMRG|MG3^^^MERCY&2.16.840.1.113883.3.1001&ISO^MR\r";
    let mapped = map_a40(&text).unwrap();
    let pairs: Vec<(&str, &str)> = mapped
        .merges
        .iter()
        .map(|m| (m.survivor.mrn.as_str(), m.prior.mrn.as_str()))
        .collect();
    assert_eq!(pairs, vec![("MG12345", "MG67890"), ("MG2", "MG3")]);
    assert_eq!(mapped.records.len(), 2);
}

#[test]
fn a40_errors_name_segments_not_values() {
    let a40 = fixture("mercy_adt_a40.hl7");
    // MRG-1 only under another authority, untyped: no prior to merge.
    let foreign = a40.replace(
        "MRG|MG67890^^^MERCY&2.16.840.1.113883.3.1001&ISO^MR~555^^^OTHER^PI",
        "MRG|SECRET-9^^^ELSEWHERE^PI",
    );
    let err = map_a40(&foreign).unwrap_err();
    assert!(err.to_string().contains("MRG-1"), "{err}");
    assert!(!err.to_string().contains("SECRET"));
    // A patient merged into itself.
    let same = a40.replace("MRG|MG67890", "MRG|MG12345");
    let err = map_a40(&same).unwrap_err();
    assert_eq!(
        err,
        MapError::Invalid("MRG-1 names the same patient as PID-3".into())
    );
    assert!(!err.to_string().contains("MG12345"));
    // The MRG belongs to the PID before it, not to a later group.
    let misplaced = a40.replace("\rMRG|", "\rZZZ|")
        + "PID|2||MG2^^^MERCY&2.16.840.1.113883.3.1001&ISO^MR\rMRG|MG3^^^MERCY^MR\r";
    assert!(map_a40(&misplaced).is_err());
}

/// A cheap stand-in for a fuzz target: random messages built from the characters that matter
/// never panic the parser or the mapping.
#[test]
fn random_messages_never_panic() {
    let alphabet: Vec<char> = "MSHPIDOBXRV1|^~\\&#$*!%\r\nA0123456789.-+ "
        .chars()
        .collect();
    let heads = [
        "MSH|^~\\&|",
        "MSH#$*!%#",
        "MSH|^~\\&|A|F|B|G|20240101||ORU^R01|1|P|2.5\rPID|||",
        "MSH|^~\\&|A|F|B|G|20240101||ORU^R01|1|P|2.5\rPID|||1^^^F^MR\rOBR|1||F1|C^D^LN\rOBX|1|",
        "MSH|^~\\&|A|F|B|G|20240101||ADT^A01|1|P|2.5\rPID|||1^^^F^MR|",
        "MSH|^~\\&|A|F|B|G|20240101||ADT^A40|1|P|2.5\rPID|||1^^^F^MR\rMRG|",
        "",
    ];
    let ctx = SourceContext {
        source_id: "F".into(),
        assigning_authority: "F".into(),
    };
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut text = heads[(next() % heads.len() as u64) as usize].to_string();
        for _ in 0..(next() % 120) {
            text.push(alphabet[(next() % alphabet.len() as u64) as usize]);
        }
        if let Ok(msg) = Message::parse(&text) {
            if let Ok(header) = Header::read(&msg) {
                let _ = super::map(&msg, &header, &ctx);
            }
            let _ = ack(Some(&msg), AckCode::Error, Some(("101", "x")));
        }
    }
}

#[test]
fn control_characters_are_refused_with_ar_naming_the_position() {
    let ctx = SourceContext {
        source_id: "MERCY-GENERAL".into(),
        assigning_authority: MERCY.into(),
    };
    let refused = |text: &str| {
        let msg = Message::parse(text).unwrap();
        let header = Header::read(&msg).unwrap();
        super::map(&msg, &header, &ctx).unwrap_err()
    };
    let oru = fixture("mercy_oru_r01.hl7");
    // A raw NUL in OBX-5, as the issue's sender did.
    let err = refused(&oru.replace("||182|", "||18\u{0}2|"));
    assert_eq!(err, MapError::ControlCharacter(5, 5));
    assert_eq!((err.ack_code(), err.hl7_code()), (AckCode::Reject, "102"));
    assert!(!err.to_string().contains("182"));
    // Another C0 control; tab is allowed.
    assert!(matches!(
        refused(&oru.replace("Yellow^L", "Yel\u{1b}low^L")),
        MapError::ControlCharacter(..)
    ));
    assert!(to_records(
        &Message::parse(&oru.replace("Yellow^L", "Yel\tlow^L")).unwrap(),
        &Header::read(&Message::parse(&oru).unwrap()).unwrap(),
        &ctx
    )
    .is_ok());
    // A NUL smuggled in as an escape sequence, in a value and in the MRN.
    let err = refused(&oru.replace("||182|", "||18\\X00\\2|"));
    assert!(
        matches!(&err, MapError::DecodedControlCharacter(p) if p.starts_with("Observation.")),
        "{err:?}"
    );
    assert_eq!(err.ack_code(), AckCode::Reject);
    assert!(matches!(
        refused(&oru.replace("MG12345^^^MERCY", "MG\\X01\\12345^^^MERCY")),
        MapError::DecodedControlCharacter(_)
    ));
    // MSH-10 is provenance (dead letters too): no control character survives in it.
    let text = oru.replace("|MG0003|", "|MG\u{0}0003|");
    let msg = Message::parse(&text).unwrap();
    assert_eq!(Header::read(&msg).unwrap().control_id, "MG\u{fffd}0003");
}
