//! Messages we write are readable by another Avro implementation (fastavro) given only the
//! committed `.avsc` files: the fingerprints are the specification's, not apache-avro's.

use std::process::Command;

use schemas::*;

#[test]
fn fastavro_decodes_every_event_type() {
    let dir = std::env::temp_dir().join(format!("hie-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let patient = PatientIdentity {
        assigning_authority: "urn:oid:1.2".into(),
        mrn: "7".into(),
    };
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "record_received",
            encode(&RecordReceived {
                event_id: "e".into(),
                source_id: "s".into(),
                organization_id: "o".into(),
                channel: "fhir_bundle".into(),
                received_at: 1_700_000_000_123_456,
                message_id: "m".into(),
                patient: Some(patient.clone()),
                resource_type: "Observation".into(),
                resource_id: "r".into(),
                version: 1,
                sensitivity: "normal".into(),
                resource_json: "{}".into(),
                resource_blob: None,
            })
            .unwrap(),
        ),
        (
            "consent_recorded",
            encode(&ConsentRecorded {
                event_id: "e".into(),
                recorded_at: 1,
                patient: patient.clone(),
                organization_id: "*".into(),
                decision: "grant".into(),
                effective_at: Some(2),
                expires_at: None,
                method: "written".into(),
                part2: true,
                recorded_by: "user:u".into(),
            })
            .unwrap(),
        ),
        (
            "record_rejected",
            encode(&RecordRejected {
                event_id: "e".into(),
                rejected_at: 1,
                source_id: None,
                channel: "fhir_ndjson".into(),
                message_id: "m".into(),
                index: Some(3),
                reason: "bad".into(),
                payload: b"x\0\xe9".to_vec(),
            })
            .unwrap(),
        ),
        (
            "source_registered",
            encode(&SourceRegistered {
                event_id: "e".into(),
                registered_at: 1,
                source_id: "s".into(),
                name: "n".into(),
                organization_id: "o".into(),
                feed: "batch".into(),
                assigning_authority: "a".into(),
                data_elements: vec!["Observation".into()],
                part2: false,
                api_key_sha256: "00".into(),
                mllp_client_certificate_sha256: None,
            })
            .unwrap(),
        ),
        (
            "patient_merged",
            encode(&PatientMerged {
                event_id: "e".into(),
                merged_at: 1,
                source_id: "s".into(),
                organization_id: "o".into(),
                channel: "hl7v2_mllp".into(),
                message_id: "m".into(),
                survivor: patient.clone(),
                prior: PatientIdentity {
                    assigning_authority: "urn:oid:1.2".into(),
                    mrn: "8".into(),
                },
            })
            .unwrap(),
        ),
        (
            "identity_decided",
            encode(&IdentityDecided {
                event_id: "e".into(),
                decided_at: 1,
                action: IdentityAction::Link,
                identity: patient.clone(),
                other: Some(PatientIdentity {
                    assigning_authority: "urn:oid:1.3".into(),
                    mrn: "9".into(),
                }),
                decided_by: "matcher".into(),
                decider_role: "matcher".into(),
                score: Some(23.5),
                candidates: vec![MatchCandidate {
                    identity: patient.clone(),
                    score: 23.5,
                    comparison: vec![FieldComparison {
                        field: "given_name".into(),
                        level: "nickname".into(),
                    }],
                }],
                features: Some(MatchFeatures {
                    given: Some("jon".into()),
                    ..Default::default()
                }),
                model: Some("em".into()),
                source_partition: Some(1),
                source_offset: Some(7),
            })
            .unwrap(),
        ),
        (
            "dead_letter_resubmitted",
            encode(&DeadLetterResubmitted {
                event_id: "e".into(),
                resubmitted_at: 1,
                dead_letter_id: "d".into(),
                via: "hl7v2_mllp".into(),
                outcome: "rejected".into(),
                reason: Some("why".into()),
                position: None,
                payload_edited: true,
                resubmitted_by: "op".into(),
            })
            .unwrap(),
        ),
        (
            "quarantine_reapply_requested",
            encode(&QuarantineReapplyRequested {
                event_id: "e".into(),
                requested_at: 1,
                topic: "hie.consents".into(),
                partition: 2,
                offset: 7,
                requested_by: "op".into(),
            })
            .unwrap(),
        ),
    ];
    let mut files = Vec::new();
    for (name, bytes) in &messages {
        let path = dir.join(format!("{name}.0.bin"));
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(here.join("tests/decode_with_fastavro.py"))
        .arg(here.join("avro"))
        .args(&files)
        .output()
        .expect("python3 (tests/prereqs.sh installs fastavro)");
    assert!(
        out.status.success(),
        "fastavro failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0]["record"]["patient"]["mrn"], "7");
    assert_eq!(lines[1]["record"]["part2"], true);
    assert_eq!(lines[2]["record"]["index"], 3);
    // bytes, exactly: fastavro hands them to Python as b'x\x00\xe9'.
    assert_eq!(lines[2]["record"]["payload"], "b'x\\x00\\xe9'");
    assert_eq!(lines[3]["record"]["data_elements"][0], "Observation");
    assert_eq!(lines[4]["record"]["survivor"]["mrn"], "7");
    assert_eq!(lines[4]["record"]["prior"]["mrn"], "8");
    assert_eq!(lines[5]["record"]["action"], "link");
    assert_eq!(lines[5]["record"]["other"]["mrn"], "9");
    assert_eq!(
        lines[5]["record"]["candidates"][0]["comparison"][0]["level"],
        "nickname"
    );
    assert_eq!(lines[5]["record"]["features"]["given"], "jon");
    assert_eq!(lines[6]["record"]["reason"], "why");
    assert_eq!(lines[6]["record"]["payload_edited"], true);
    assert_eq!(lines[7]["record"]["offset"], 7);
    assert_eq!(lines[7]["record"]["topic"], "hie.consents");
    let _ = std::fs::remove_dir_all(&dir);
}
