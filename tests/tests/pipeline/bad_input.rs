use std::time::Duration;

use hie_tests::{Services, TestApp};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::StatusCode;
use schemas::RecordRejected;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.99";

/// Every dead letter on the log, read straight from the topic.
async fn dead_letters(app: &TestApp, expected: usize) -> Vec<RecordRejected> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", app.broker.address())
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(schemas::topics::DEAD_LETTERS.name, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while out.len() < expected {
        let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("dead letter not on the topic")
            .unwrap();
        out.push(schemas::decode::<RecordRejected>(m.payload().unwrap()).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_rejections_are_dead_lettered() {
    let app = TestApp::spawn_with(Services {
        max_body_bytes: 64 * 1024,
        ..Default::default()
    })
    .await;
    let key = app.register_source("clinic", "org-c", AA).await;
    let other_key = app.register_source("other", "org-o", "urn:oid:9.9").await;

    // Credentials.
    let ok = crate::bundle(AA, "B1", "p", &[]).to_string();
    assert_eq!(
        app.post_fhir("nope", &key, "application/fhir+json", ok.clone())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post_fhir("clinic", "wrong", "application/fhir+json", ok.clone())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post_fhir("clinic", &other_key, "application/fhir+json", ok.clone())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .http
        .post(format!("{}/v1/sources/clinic/fhir", app.ingest))
        .body(ok.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Malformed bodies.
    let r = app
        .post_fhir(
            "clinic",
            &key,
            "application/fhir+json",
            "{\"resourceType\": \"Bundle\", ",
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "malformed_body");
    let r = app
        .post_fhir(
            "clinic",
            &key,
            "application/fhir+json",
            r#"{"resourceType":"Patient"}"#,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.post_fhir("clinic", &key, "text/csv", "a,b")
            .await
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let huge = format!(
        "{{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"id\":\"{}\"}}",
        "x".repeat(100 * 1024)
    );
    let r = app
        .post_fhir("clinic", &key, "application/fhir+json", huge)
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "body_too_large");

    // An invalid resource is rejected with its index and reason; the rest are accepted.
    let mut b = crate::bundle(
        AA,
        "B1",
        "p",
        &[
            ("good", "2024-01-01T00:00:00Z", 1.0),
            ("bad", "2024-01-01T00:00:00Z", 2.0),
        ],
    );
    b["entry"][2]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    let r = app
        .post_fhir("clinic", &key, "application/fhir+json", b.to_string())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    assert_eq!(
        body["rejected"],
        json!([{"index": 2, "error": "Observation.status is required"}])
    );

    // NDJSON: a line that is not JSON is that line's rejection only.
    let ndjson = format!(
        "{}\nthis is not json\n{}\n",
        json!({"resourceType": "Patient", "id": "n1", "identifier": [{"system": AA, "value": "B2"}]}),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/n1"}})
    );
    let r = app
        .post_fhir("clinic", &key, "application/fhir+ndjson", ndjson)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 1);

    // A transaction is all-or-nothing.
    let mut t = crate::bundle(
        AA,
        "B3",
        "pt",
        &[
            ("t-good", "2024-01-01T00:00:00Z", 1.0),
            ("t-bad", "2024-01-01T00:00:00Z", 2.0),
        ],
    );
    t["type"] = "transaction".into();
    t["entry"][2]["resource"]["subject"]["reference"] = "urn:uuid:somebody-else".into();
    let r = app
        .post_fhir("clinic", &key, "application/fhir+json", t.to_string())
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rejected"][0]["index"], 2);

    // Every rejection is on the dead-letter topic with its reason, source, channel and payload:
    // bodies refused as a whole (with what was read of them) as well as single entries. Requests
    // without valid credentials are not (nothing attributable to a source was received).
    let letters = dead_letters(&app, 7).await;
    assert_eq!(letters[0].payload, b"{\"resourceType\": \"Bundle\", ");
    assert_eq!(letters[0].source_id.as_deref(), Some("clinic"));
    assert_eq!(letters[0].channel, "fhir_bundle");
    assert_eq!(letters[0].index, None);
    assert!(!letters[0].reason.is_empty());
    assert_eq!(letters[1].payload, br#"{"resourceType":"Patient"}"#);
    assert_eq!(letters[2].payload, b"a,b");
    assert!(
        letters[2].reason.contains("text/csv"),
        "{}",
        letters[2].reason
    );
    assert!(letters[3].payload.is_empty());
    assert!(letters[3].reason.contains("limit"), "{}", letters[3].reason);
    let entries = &letters[4..];
    assert_eq!(entries[0].reason, "Observation.status is required");
    assert_eq!(entries[0].source_id.as_deref(), Some("clinic"));
    assert_eq!(entries[0].channel, "fhir_bundle");
    assert_eq!(entries[0].index, Some(2));
    assert!(String::from_utf8_lossy(&entries[0].payload).contains("\"bad\""));
    assert_eq!(entries[1].channel, "fhir_ndjson");
    assert_eq!(entries[1].payload, b"this is not json");
    assert_eq!(entries[2].index, Some(2));

    // Nothing of the transaction reached the views.
    let p = app
        .post_bundle_ok("clinic", &key, &crate::bundle(AA, "B4", "p4", &[]))
        .await;
    app.patient_id(AA, "B4", Some(&p)).await;
    let db = app.db.client().await;
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM records WHERE resource_id IN ('pt', 't-good', 't-bad')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_crashes_ingest() {
    let app = TestApp::spawn().await;
    let key = app.register_source("clinic", "org-c", AA).await;
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff, 0xfe, 0x00],
        b"null".to_vec(),
        b"[]".to_vec(),
        br#"{"resourceType":"Bundle","type":"batch","entry":{}}"#.to_vec(),
        br#"{"resourceType":"Bundle","type":"batch","entry":[1,"x",null,{"resource":[]}]}"#.to_vec(),
        br#"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Observation","id":"../../etc","status":"final","code":{}}}]}"#.to_vec(),
        br#"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","identifier":"nope"}}]}"#.to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        br#"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{},"subject":{"reference":7},"meta":{"lastUpdated":12}}}]}"#.to_vec(),
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        for ct in ["application/fhir+json", "application/fhir+ndjson"] {
            let r = app.post_fhir("clinic", &key, ct, body.clone()).await;
            assert!(
                r.status().is_client_error() || r.status() == StatusCode::ACCEPTED,
                "body {i} as {ct}: {}",
                r.status()
            );
        }
    }
    let r = app
        .http
        .get(format!("{}/healthz", app.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_503_never_202() {
    let mut app = TestApp::spawn().await;
    let key = app.register_source("clinic", "org-c", AA).await;
    app.post_bundle_ok("clinic", &key, &crate::bundle(AA, "D1", "p", &[]))
        .await;
    app.broker.kill();
    let r = app
        .post_fhir(
            "clinic",
            &key,
            "application/fhir+json",
            crate::bundle(AA, "D2", "p2", &[]).to_string(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "broker_unavailable");
    let r = app
        .http
        .post(format!("{}/v1/consents", app.ingest))
        .bearer_auth(app.admin())
        .json(&json!({"patient": {"assigning_authority": AA, "mrn": "D1"}, "organization_id": "*", "decision": "grant", "method": "written"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}
