//! One resource of up to 16 MiB (a document with its PDF) goes through whole: ingest, the log
//! (producer, topic and fetch sizes), the views and the query API.

use hie_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.1616";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_document_is_stored_and_read_back_whole() {
    let app = TestApp::spawn().await;
    let key = app.register_source("docs", "org-d", AA).await;
    // Base64 text as FHIR's `attachment.data` holds it: 16 MiB less room for the rest of the
    // resource, different in every position so a truncation or a mix-up cannot go unseen.
    let len = 16 * 1024 * 1024 - 4096;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: String = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % 64) as usize] as char
        })
        .collect();
    let mut bundle = crate::bundle(AA, "D1", "d1", &[]);
    bundle["entry"].as_array_mut().unwrap().push(json!({
        "fullUrl": "urn:uuid:doc1",
        "resource": {
            "resourceType": "DocumentReference", "id": "doc1", "status": "current",
            "subject": {"reference": "urn:uuid:d1"},
            "content": [{"attachment": {"contentType": "application/pdf", "data": data}}]
        },
        "request": {"method": "POST", "url": "DocumentReference"}
    }));
    let body = serde_json::to_vec(&bundle).unwrap();
    assert!(body.len() > 16 * 1024 * 1024 - 8192);
    let pos = app.post_bundle_ok("docs", &key, &bundle).await;
    let id = app.patient_id(AA, "D1", Some(&pos)).await;
    let p = app.consent(AA, "D1", "org-d", "grant").await;

    let token = app.token("org-d", &["physician"]);
    let r = app
        .get(
            &format!("/v1/patients/{id}/records?type=DocumentReference"),
            &token,
            Some(&p),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    let read = records[0]["content"][0]["attachment"]["data"]
        .as_str()
        .unwrap();
    assert_eq!(read.len(), data.len());
    assert!(read == data, "the document came back altered");
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
}
