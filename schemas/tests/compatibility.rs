//! The schemas are a contract with every consumer of the log: a change must stay readable.

use apache_avro::schema_compatibility::SchemaCompatibility;
use schemas::*;

#[test]
fn current_schemas_read_every_released_version() {
    for (name, set) in schemas::codec_sets() {
        for old in &set.released {
            if let Err(e) = SchemaCompatibility::can_read(&old.schema, &set.current.schema) {
                panic!("{name}.avsc cannot read data written with a released version: {e}");
            }
        }
    }
}

#[test]
fn every_schema_change_is_released() {
    for (name, set) in schemas::codec_sets() {
        let released = set
            .released
            .iter()
            .any(|v| v.canonical_form == set.current.canonical_form);
        assert!(
            released,
            "avro/{name}.avsc changed: copy it to avro/released/{name}/vN.avsc (the next N) and \
             list it in events.rs, so this test checks later changes against it"
        );
    }
}

#[test]
fn events_round_trip() {
    let record = RecordReceived {
        event_id: "e1".into(),
        source_id: "s1".into(),
        organization_id: "o1".into(),
        channel: "fhir_bundle".into(),
        received_at: 1_700_000_000_000_000,
        message_id: "m1".into(),
        patient: Some(PatientIdentity {
            assigning_authority: "urn:aa".into(),
            mrn: "42".into(),
        }),
        resource_type: "Observation".into(),
        resource_id: "o-1".into(),
        version: 1_700_000_000_000_001,
        sensitivity: "normal".into(),
        resource_json: "{\"resourceType\":\"Observation\"}".into(),
        resource_blob: None,
    };
    let bytes = encode(&record).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(decode::<RecordReceived>(&bytes).unwrap(), record);

    let no_patient = RecordReceived {
        patient: None,
        ..record
    };
    assert_eq!(
        decode::<RecordReceived>(&encode(&no_patient).unwrap()).unwrap(),
        no_patient
    );

    let consent = ConsentRecorded {
        event_id: "e2".into(),
        recorded_at: 5,
        patient: PatientIdentity {
            assigning_authority: "a".into(),
            mrn: "m".into(),
        },
        organization_id: "*".into(),
        decision: "grant".into(),
        effective_at: None,
        expires_at: Some(99),
        method: "written".into(),
        part2: false,
        recorded_by: "user:u".into(),
    };
    assert_eq!(
        decode::<ConsentRecorded>(&encode(&consent).unwrap()).unwrap(),
        consent
    );
}

#[test]
fn event_types_sharing_a_topic_are_told_apart() {
    let identity = |mrn: &str| PatientIdentity {
        assigning_authority: "a".into(),
        mrn: mrn.into(),
    };
    let merge = encode(&PatientMerged {
        event_id: "e".into(),
        merged_at: 1,
        source_id: "s".into(),
        organization_id: "o".into(),
        channel: "hl7v2_mllp".into(),
        message_id: "m".into(),
        survivor: identity("1"),
        prior: identity("2"),
    })
    .unwrap();
    assert!(is::<PatientMerged>(&merge));
    assert!(!is::<RecordReceived>(&merge));
    assert!(decode::<RecordReceived>(&merge).is_err());
    assert_eq!(decode::<PatientMerged>(&merge).unwrap().prior.mrn, "2");
    assert!(!is::<PatientMerged>(b"hello"));
}

#[test]
fn decode_refuses_foreign_bytes() {
    assert!(decode::<RecordRejected>(b"hello").is_err());
    assert!(decode::<RecordRejected>(&[0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
}

/// A claim check (v2) travels as a reference; an event written with v1, before claim checks,
/// still decodes, with none.
#[test]
fn record_received_v1_decodes_without_a_claim_check_and_v2_carries_one() {
    use apache_avro::writer::datum::GenericDatumWriter;

    /// `RecordReceived` as v1 wrote it: no `resource_blob`.
    #[derive(serde::Serialize)]
    struct V1<'a> {
        event_id: &'a str,
        source_id: &'a str,
        organization_id: &'a str,
        channel: &'a str,
        received_at: i64,
        message_id: &'a str,
        patient: Option<PatientIdentity>,
        resource_type: &'a str,
        resource_id: &'a str,
        version: i64,
        sensitivity: &'a str,
        resource_json: &'a str,
    }
    let v1 = &RecordReceived::schemas().released[0];
    let body = GenericDatumWriter::builder(&v1.schema)
        .build()
        .unwrap()
        .write_ser_to_vec(&V1 {
            event_id: "e1",
            source_id: "s1",
            organization_id: "o1",
            channel: "fhir_bundle",
            received_at: 1,
            message_id: "m1",
            patient: None,
            resource_type: "Observation",
            resource_id: "o-1",
            version: 2,
            sensitivity: "normal",
            resource_json: "{}",
        })
        .unwrap();
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&v1.fingerprint.to_le_bytes());
    bytes.extend_from_slice(&body);
    let old = decode::<RecordReceived>(&bytes).unwrap();
    assert_eq!(old.resource_json, "{}");
    assert_eq!(old.resource_blob, None);

    let claimed = RecordReceived {
        resource_json: String::new(),
        resource_blob: Some(BlobReference {
            sha256: "ab".repeat(32),
            size: 16 * 1024 * 1024,
        }),
        ..old
    };
    let bytes = encode(&claimed).unwrap();
    assert!(bytes.len() < 512, "a claim-checked event stays small");
    assert_eq!(decode::<RecordReceived>(&bytes).unwrap(), claimed);
}
