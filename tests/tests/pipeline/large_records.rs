//! One resource of up to 16 MiB (a document with its PDF) goes through whole: ingest, the blob
//! store (the claim-check path: resources over INGEST_CLAIM_CHECK_BYTES travel on the log as a
//! reference), the views, the query API, the FHIR API and the portal.

use std::time::{Duration, Instant};

use hie_tests::{PortalSession, TestApp};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::StatusCode;
use schemas::{topics, BlobReference, PatientIdentity, RecordReceived};
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.1616";

/// A batch Bundle: patient `mrn` and one DocumentReference `doc` whose attachment holds `data`
/// (base64) as `content_type`.
fn document_bundle(mrn: &str, patient: &str, doc: &str, content_type: &str, data: &str) -> Value {
    let mut bundle = crate::bundle(AA, mrn, patient, &[]);
    bundle["entry"].as_array_mut().unwrap().push(json!({
        "fullUrl": format!("urn:uuid:{doc}"),
        "resource": {
            "resourceType": "DocumentReference", "id": doc, "status": "current",
            "subject": {"reference": format!("urn:uuid:{patient}")},
            "content": [{"attachment": {"contentType": content_type, "title": "Discharge summary", "data": data}}]
        },
        "request": {"method": "POST", "url": "DocumentReference"}
    }));
    bundle
}

/// Every `RecordReceived` on `hie.records` so far, with its encoded size.
async fn record_events(app: &TestApp) -> Vec<(usize, RecordReceived)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", app.broker.address())
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", (64 * 1024 * 1024).to_string())
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..topics::RECORDS.partitions {
        tpl.add_partition_offset(topics::RECORDS.name, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
        let m = m.unwrap();
        let payload = m.payload().unwrap_or_default();
        if schemas::is::<RecordReceived>(payload) {
            out.push((payload.len(), schemas::decode(payload).unwrap()));
        }
    }
    out
}

/// The blob store's rows for `sha256` (the test's database is the store, as in the local stack).
async fn blob_rows(app: &TestApp, sha256: &str) -> (i64, Option<i64>) {
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*), max(size) FROM blobs WHERE sha256 = $1",
            &[&sha256],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_document_takes_the_claim_check_path_and_is_read_back_whole() {
    let app = TestApp::spawn().await;
    let key = app.register_source("docs", "org-d", AA).await;
    // 16 MiB of base64 less room for the rest of the resource, of a text the portal shows.
    let shown = hie_tests::document_text((16 * 1024 * 1024 - 4096) / 4 * 3, 0x9E37_79B9_7F4A_7C15);
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(&shown);
    let bundle = document_bundle("D1", "d1", "doc1", "text/plain", &data);
    let body = serde_json::to_vec(&bundle).unwrap();
    assert!(body.len() > 16 * 1024 * 1024 - 8192);

    let started = Instant::now();
    let pos = app.post_bundle_ok("docs", &key, &bundle).await;
    let ingested = started.elapsed();
    let id = app.patient_id(AA, "D1", Some(&pos)).await;
    let p = app.consent(AA, "D1", "org-d", "grant").await;
    let visible = started.elapsed();
    let token = app.token("org-d", &["physician"]);

    // /v1: the record whole.
    let started = Instant::now();
    let r = app
        .get(
            &format!("/v1/patients/{id}/records?type=DocumentReference"),
            &token,
            Some(&p),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let read: Value = r.json().await.unwrap();
    let v1_read = started.elapsed();
    let records = read["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    let read = records[0]["content"][0]["attachment"]["data"]
        .as_str()
        .unwrap();
    assert_eq!(read.len(), data.len());
    assert!(read == data, "the document came back altered through /v1");

    // /fhir: the same bytes in a searchset Bundle.
    let started = Instant::now();
    let r = app
        .get(
            &format!("/fhir/DocumentReference?patient={id}"),
            &token,
            Some(&p),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let found: Value = r.json().await.unwrap();
    let fhir_read = started.elapsed();
    let read = found["entry"][0]["resource"]["content"][0]["attachment"]["data"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(read.len(), data.len(), "{}", found["total"]);
    assert!(read == data, "the document came back altered through /fhir");

    // The portal's document pop-up shows the text whole.
    let portal = PortalSession::sign_in(
        &app.query,
        &app.admin(),
        "clin-doc",
        "org-d",
        &["physician"],
    )
    .await;
    let started = Instant::now();
    let pre = portal.document(&id, "doc1").await;
    let portal_read = started.elapsed();
    assert_eq!(pre.len(), shown.len());
    assert!(
        pre == shown,
        "the document came back altered through the portal"
    );

    // On the log the record is a claim check: a small event naming the blob.
    let events = record_events(&app).await;
    let (size, event) = events
        .iter()
        .find(|(_, e)| e.resource_type == "DocumentReference" && e.resource_id == "doc1")
        .expect("the document's event");
    let reference = event.resource_blob.clone().expect("a claim check");
    assert!(event.resource_json.is_empty());
    assert!(*size < 2048, "the event is {size} bytes");
    assert!(reference.size > 16 * 1024 * 1024 - 8192);
    assert_eq!(
        blob_rows(&app, &reference.sha256).await,
        (1, Some(reference.size))
    );
    // Small records stay inline.
    assert!(events
        .iter()
        .filter(|(_, e)| e.resource_type == "Patient")
        .all(|(_, e)| e.resource_blob.is_none() && !e.resource_json.is_empty()));

    // The same document sent again is stored once (its address is its content).
    let again = app.post_bundle_ok("docs", &key, &bundle).await;
    assert_eq!(
        blob_rows(&app, &reference.sha256).await,
        (1, Some(reference.size))
    );

    // A later small record of the same patient (the same partition) is projected: it moved on.
    let later = crate::bundle(AA, "D1", "d1", &[("d1-o", "2024-01-01T00:00:00Z", 1.0)]);
    let pos = app.post_bundle_ok("docs", &key, &later).await;
    let r = app
        .get(
            &format!("/v1/patients/{id}/records?type=Observation"),
            &token,
            Some(&pos),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["records"][0]["id"], "d1-o", "{body}");
    let r = app
        .get(
            &format!("/v1/patients/{id}/records?type=DocumentReference"),
            &token,
            Some(&again),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["records"].as_array().map(Vec::len), Some(1));
    eprintln!(
        "claim check, 16 MiB document: ingest 202 in {ingested:?}, visible (patient search + consent) after {visible:?}; \
         event {size} bytes; reads /v1 {v1_read:?}, /fhir {fhir_read:?}, portal pop-up {portal_read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_check_whose_blob_is_missing_is_set_aside_and_the_partition_moves_on() {
    let app = TestApp::spawn().await;
    let key = app.register_source("docs", "org-d", AA).await;
    let pos = app
        .post_bundle_ok("docs", &key, &crate::bundle(AA, "D4", "d4", &[]))
        .await;
    let id = app.patient_id(AA, "D4", Some(&pos)).await;

    // An event naming a blob the store does not hold (lost, or never written).
    let absent =
        br#"{"resourceType":"DocumentReference","id":"orphan","status":"current","content":[]}"#;
    let orphan = RecordReceived {
        event_id: uuid::Uuid::new_v4().to_string(),
        source_id: "docs".into(),
        organization_id: "org-d".into(),
        channel: "fhir_bundle".into(),
        received_at: schemas::now_micros(),
        message_id: "m-orphan".into(),
        patient: Some(PatientIdentity {
            assigning_authority: AA.into(),
            mrn: "D4".into(),
        }),
        resource_type: "DocumentReference".into(),
        resource_id: "orphan".into(),
        version: 1,
        sensitivity: "normal".into(),
        resource_json: String::new(),
        resource_blob: Some(BlobReference {
            sha256: platform::blobs::address(absent),
            size: absent.len() as i64,
        }),
    };
    let producer =
        platform::kafka::producer(&app.broker.address(), Duration::from_secs(10)).unwrap();
    producer
        .send(
            FutureRecord::to(topics::RECORDS.name)
                .key(&orphan.key())
                .payload(&schemas::encode(&orphan).unwrap()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    // The patient's next record, on the same partition after it, is applied.
    let later = crate::bundle(AA, "D4", "d4", &[("d4-o", "2024-01-01T00:00:00Z", 2.0)]);
    let pos = app.post_bundle_ok("docs", &key, &later).await;
    app.patient_id(AA, "D4", Some(&pos)).await;
    let p = app.consent(AA, "D4", "org-d", "grant").await;
    let token = app.token("org-d", &["physician"]);
    let r = app
        .get(&format!("/v1/patients/{id}/records"), &token, Some(&p))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let ids: Vec<&str> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(&"d4-o"), "{body}");
    assert!(!ids.contains(&"orphan"), "{body}");

    // The orphan is in quarantine, named by its address only.
    let rows = app
        .db
        .client()
        .await
        .query(
            "SELECT event_type, error, status FROM quarantine WHERE topic = $1",
            &[&topics::RECORDS.name],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "record_received");
    let error: String = rows[0].get(1);
    assert!(
        error.starts_with("unresolved: claim check") && error.contains("no such blob"),
        "{error}"
    );
    assert_eq!(rows[0].get::<_, String>(2), "open");

    // Once the blob is restored, an operator's re-apply brings the record into the views.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO blobs (sha256, size, bytes) VALUES ($1, $2, $3)",
            &[
                &platform::blobs::address(absent),
                &(absent.len() as i64),
                &absent.as_slice(),
            ],
        )
        .await
        .unwrap();
    let out = tokio::process::Command::new(hie_tests::workspace_binary("hiectl"))
        .args(["quarantine", "reapply", "--all", "--by", "ops"])
        .env("DATABASE_URL", app.db.url())
        .env("KAFKA_BROKERS", app.broker.address())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = app
        .get(
            &format!("/v1/patients/{id}/records?type=DocumentReference"),
            &token,
            None,
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["records"][0]["id"], "orphan", "{body}");
}

/// Polls the views until `sql` (one row, one bigint) answers, or 20 s pass.
async fn eventually(app: &TestApp, sql: &str) -> i64 {
    let client = app.db.client().await;
    let start = Instant::now();
    loop {
        if let Ok(Some(row)) = client.query_opt(sql, &[]).await {
            if let Some(n) = row.get::<_, Option<i64>>(0) {
                return n;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never: {sql}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_over_mllp_and_the_drop_folder_take_the_same_claim_check_path() {
    use crate::hl7_mllp::{Mllp, MERCY_AA};
    let app = TestApp::spawn().await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    app.register_source("drop-docs", "org-d", AA).await;

    // HL7 v2: an ORU whose report text (OBX-5, TX) makes an Observation over 256 KiB.
    let report = hie_tests::document_text(300 * 1024, 7);
    let oru = [
        "MSH|^~\\&|LAB|MERCY-GENERAL|HIE|HIE|20240302120000-0500||ORU^R01^ORU_R01|MG-BIG-1|P|2.5.1",
        "PID|1||MG777^^^MERCY&2.16.840.1.113883.3.1001&ISO^MR||Big^Report",
        "OBR|1|PLC-9|FIL-9|11502-2^Lab report^LN|||20240302080000-0500||||||||||||||||||F",
        &format!("OBX|1|TX|11502-2^Lab report^LN||{report}||||||F"),
    ]
    .join("\r");
    let ack = Mllp::connect(&app).await.send(&oru).await;
    assert_eq!(ack.code(), "AA", "{}", ack.0);
    let shown = eventually(
        &app,
        "SELECT length(resource->>'valueString')::bigint FROM records WHERE source_id = 'MERCY-GENERAL' AND resource_type = 'Observation'",
    )
    .await;
    assert_eq!(shown, report.len() as i64);

    // The drop folder: an NDJSON file whose second line is a 1 MiB document.
    let data = hie_tests::document_text(1024 * 1024, 11);
    let lines = [
        json!({"resourceType": "Patient", "id": "dp", "identifier": [{"system": AA, "value": "D9"}]})
            .to_string(),
        json!({"resourceType": "DocumentReference", "id": "dropped-doc", "status": "current",
               "subject": {"reference": "Patient/dp"},
               "content": [{"attachment": {"contentType": "application/pdf", "data": data}}]})
        .to_string(),
    ];
    let base = app.drop_dir.join("drop-docs");
    std::fs::create_dir_all(base.join("inbox")).unwrap();
    std::fs::write(base.join(".docs.partial"), lines.join("\n") + "\n").unwrap();
    std::fs::rename(base.join(".docs.partial"), base.join("inbox/docs.ndjson")).unwrap();
    let read = eventually(
        &app,
        "SELECT length(resource->'content'->0->'attachment'->>'data')::bigint FROM records WHERE resource_id = 'dropped-doc'",
    )
    .await;
    assert_eq!(read, data.len() as i64);

    // Both went through the blob store, and both events on the log are small.
    let stored = eventually(&app, "SELECT count(*) FROM blobs").await;
    assert_eq!(stored, 2);
    let events = record_events(&app).await;
    let claimed: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.resource_blob.is_some())
        .map(|(size, e)| (e.channel.as_str(), e.resource_type.as_str(), *size))
        .collect();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert!(
        claimed
            .iter()
            .any(|c| c.0 == "hl7v2_mllp" && c.1 == "Observation"),
        "{claimed:?}"
    );
    assert!(
        claimed
            .iter()
            .any(|c| c.0 == "drop_folder" && c.1 == "DocumentReference"),
        "{claimed:?}"
    );
    assert!(claimed.iter().all(|c| c.2 < 2048), "{claimed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_over_16_mib_is_refused_alone_and_the_others_go_on() {
    let app = TestApp::spawn().await;
    let key = app.register_source("docs", "org-d", AA).await;
    let mut bundle = crate::bundle(AA, "D2", "d2", &[("d2-o", "2024-01-01T00:00:00Z", 1.0)]);
    bundle["entry"].as_array_mut().unwrap().push(json!({
        "fullUrl": "urn:uuid:big",
        "resource": {
            "resourceType": "DocumentReference", "id": "big", "status": "current",
            "subject": {"reference": "urn:uuid:d2"},
            "content": [{"attachment": {"contentType": "application/pdf",
                                        "data": "A".repeat(16 * 1024 * 1024 + 1)}}]
        },
        "request": {"method": "POST", "url": "DocumentReference"}
    }));
    let r = app
        .post_fhir("docs", &key, "application/fhir+json", bundle.to_string())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"][0]["index"], 2);
    assert!(
        body["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{body}"
    );
    // The entry's own result is a 413, as a body over the limit would be.
    assert_eq!(body["rejected"][0]["status"], 413, "{body}");
}
