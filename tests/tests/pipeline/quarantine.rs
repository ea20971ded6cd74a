//! Nothing on the log stops the views: what the projector cannot apply is set aside in its
//! quarantine (counted, listed and re-applied with `hiectl quarantine`), later events are applied,
//! and a consent set aside withholds its patient's data until it is resolved.

use std::time::{Duration, Instant};

use hie_tests::{workspace_binary, TestApp};
use rdkafka::producer::FutureRecord;
use reqwest::StatusCode;
use schemas::{topics, PatientIdentity, RecordReceived};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AA: &str = "urn:oid:2.16.840.1.113883.3.4242";

/// Publishes `payload` as is to `topic`, as a buggy or hostile producer would.
async fn publish_raw(app: &TestApp, topic: &str, key: &str, payload: &[u8]) {
    let producer =
        platform::kafka::producer(&app.broker.address(), Duration::from_secs(10)).unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

async fn records(
    app: &TestApp,
    id: &str,
    org: &str,
    position: Option<&str>,
) -> (StatusCode, Value) {
    let token = app.token(org, &["physician"]);
    let r = app
        .get(&format!("/v1/patients/{id}/records"), &token, position)
        .await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn metric(app: &TestApp, family: &str) -> f64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.projector.as_ref().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(family))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn projector_health(app: &TestApp) -> StatusCode {
    app.http
        .get(format!("{}/healthz", app.projector.as_ref().unwrap()))
        .send()
        .await
        .unwrap()
        .status()
}

async fn hiectl(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(workspace_binary("hiectl"))
        .arg("quarantine")
        .args(args)
        .env("DATABASE_URL", app.db.url())
        .env("KAFKA_BROKERS", app.broker.address())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() || !stdout.is_empty(),
        "hiectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), stdout)
}

async fn quarantined(app: &TestApp) -> Vec<Value> {
    let (ok, out) = hiectl(app, &["list", "--json", "--status", "all"]).await;
    assert!(ok);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An MLLP exchange with raw bytes (a NUL, a Latin-1 byte): returns MSA-1.
async fn mllp_raw(app: &TestApp, message: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    let mut framed = vec![0x0b];
    framed.extend_from_slice(message);
    framed.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&framed).await.unwrap();
    let mut ack = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while !ack.ends_with(&[0x1c, 0x0d]) {
            ack.push(stream.read_u8().await.unwrap());
        }
    })
    .await
    .expect("no ACK");
    let ack = String::from_utf8_lossy(&ack).into_owned();
    let msa = ack.split('\r').find(|s| s.starts_with("MSA")).unwrap();
    msa.split('|').nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_views_cannot_take_is_set_aside_and_a_revocation_still_applies() {
    let app = TestApp::spawn().await;
    let key = app.register_source("qsrc", "org-q", AA).await;
    let pos = app
        .post_bundle_ok(
            "qsrc",
            &key,
            &crate::bundle(AA, "Q1", "q1", &[("qo1", "2024-01-01T00:00:00Z", 1.0)]),
        )
        .await;
    let id = app.patient_id(AA, "Q1", Some(&pos)).await;
    let p = app.consent(AA, "Q1", "org-a", "grant").await;
    assert_eq!(
        records(&app, &id, "org-a", Some(&p)).await.0,
        StatusCode::OK
    );

    // The issue's report: an ORU^R01 with a NUL byte (and a Latin-1 byte) from a facility no one
    // registered. It is refused, and its dead letter keeps the bytes exactly.
    let hostile: &[u8] = b"MSH|^~\\&|LAB|NOBODY|HIE|HIE|20240101120000||ORU^R01|N1|P|2.5.1\rPID|||Q1^^^NOBODY^MR||Doe^Jane\rOBR|1||O1|2345-7^Glucose^LN\rOBX|1|ST|2345-7^Glucose^LN||high\x00\xe9\r";
    assert_eq!(mllp_raw(&app, hostile).await, "AR");
    // Events the projector cannot apply, straight on the log: bytes that are no event at all, and
    // a record whose FHIR JSON holds U+0000, which PostgreSQL's jsonb refuses.
    publish_raw(
        &app,
        topics::RECORDS.name,
        &format!("{AA}|Q1"),
        b"\xff\x00not avro",
    )
    .await;
    let poisoned = RecordReceived {
        event_id: uuid::Uuid::new_v4().to_string(),
        source_id: "qsrc".into(),
        organization_id: "org-q".into(),
        channel: "fhir_bundle".into(),
        received_at: schemas::now_micros(),
        message_id: "m-poison".into(),
        patient: Some(PatientIdentity {
            assigning_authority: AA.into(),
            mrn: "Q1".into(),
        }),
        resource_type: "Observation".into(),
        resource_id: "poison".into(),
        version: 1,
        sensitivity: "normal".into(),
        resource_json: r#"{"resourceType":"Observation","id":"poison","status":"final","note":[{"text":"a\u0000b"}]}"#.into(),
        resource_blob: None,
    };
    publish_raw(
        &app,
        topics::RECORDS.name,
        &poisoned.key(),
        &schemas::encode(&poisoned).unwrap(),
    )
    .await;

    // A revocation after them takes effect at once: the views went on.
    let revoked = app.consent(AA, "Q1", "org-a", "revoke").await;
    let (status, body) = records(&app, &id, "org-a", Some(&revoked)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("consent_required")),
        "{body}"
    );

    let db = app.db.client().await;
    let letter: Vec<u8> = db
        .query_one(
            "SELECT payload FROM dead_letters WHERE channel = 'hl7v2_mllp'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(letter, hostile, "the dead letter keeps the raw bytes");

    let entries = quarantined(&app).await;
    let mut types: Vec<&str> = entries
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["record_received", "unknown"], "{entries:?}");
    let refused = entries
        .iter()
        .find(|e| e["event_type"] == "record_received")
        .unwrap();
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("postgres 22"),
        "{refused}"
    );
    assert_eq!(
        metric(&app, "hie_projector_events_quarantined_total").await,
        2.0
    );
    assert_eq!(projector_health(&app).await, StatusCode::OK);

    // Nothing of the poisoned record reached the views; the good one is still there.
    let poisoned_rows: i64 = db
        .query_one(
            "SELECT count(*) FROM records WHERE resource_id = 'poison'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(poisoned_rows, 0);
    let p = app.consent(AA, "Q1", "org-a", "grant").await;
    let (status, body) = records(&app, &id, "org-a", Some(&p)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["records"].as_array().unwrap().len(), 2);

    // Re-applying what PostgreSQL still refuses leaves it open, with one more attempt.
    let (ok, out) = hiectl(
        &app,
        &[
            "reapply",
            &format!(
                "{}/{}/{}",
                refused["topic"].as_str().unwrap(),
                refused["partition"],
                refused["offset"]
            ),
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("still refused"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_set_aside_withholds_the_patient_until_it_is_reapplied() {
    let app = TestApp::spawn().await;
    let key = app.register_source("qsrc", "org-q", AA).await;
    for mrn in ["W1", "W2"] {
        let pos = app
            .post_bundle_ok(
                "qsrc",
                &key,
                &crate::bundle(
                    AA,
                    mrn,
                    &mrn.to_lowercase(),
                    &[(&format!("{mrn}-o"), "2024-01-01T00:00:00Z", 1.0)],
                ),
            )
            .await;
        app.consent(AA, mrn, "org-a", "grant").await;
        app.patient_id(AA, mrn, Some(&pos)).await;
    }
    let w1 = app.patient_id(AA, "W1", None).await;
    let w2 = app.patient_id(AA, "W2", None).await;

    // The consents view refuses one decision (an operator's constraint stands in for any cause).
    let db = app.db.client().await;
    db.batch_execute(
        "ALTER TABLE consents ADD CONSTRAINT test_refuses_org_blocked CHECK (organization_id <> 'org-blocked')",
    )
    .await
    .unwrap();
    let p = app.consent(AA, "W1", "org-blocked", "deny").await;

    // W1's decision is unknown: nothing of W1 is served, not even by Break-the-Glass.
    let (status, body) = records(&app, &w1, "org-a", Some(&p)).await;
    assert_eq!(
        (
            status,
            body["error"].as_str(),
            body["break_glass_allowed"].as_bool()
        ),
        (
            StatusCode::FORBIDDEN,
            Some("consent_unresolved"),
            Some(false)
        ),
        "{body}"
    );
    let btg = app
        .post_query(
            &format!("/v1/patients/{w1}/break-glass"),
            &app.token("org-er", &["physician"]),
            &json!({"reason": "unconscious in the ED", "attest": true}),
        )
        .await;
    assert_eq!(btg.status(), StatusCode::FORBIDDEN);
    // W2 is not concerned.
    assert_eq!(
        records(&app, &w2, "org-a", Some(&p)).await.0,
        StatusCode::OK
    );
    let entries = quarantined(&app).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["event_type"], "consent_recorded");
    assert_eq!(entries[0]["withholds"], true);

    // The cause fixed, the operator re-applies it: the decision is in force, W1 is served again.
    db.batch_execute("ALTER TABLE consents DROP CONSTRAINT test_refuses_org_blocked")
        .await
        .unwrap();
    let (ok, out) = hiectl(&app, &["reapply", "--all", "--by", "ops"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("re-applied"), "{out}");
    assert_eq!(records(&app, &w1, "org-a", None).await.0, StatusCode::OK);
    assert_eq!(
        records(&app, &w1, "org-blocked", None).await.1["error"],
        "consent_denied"
    );
    let entries = quarantined(&app).await;
    assert_eq!(entries[0]["status"], "reapplied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_views_are_held_up() {
    let app = TestApp::spawn().await;
    let key = app.register_source("qsrc", "org-q", AA).await;
    let pos = app
        .post_bundle_ok("qsrc", &key, &crate::bundle(AA, "H1", "h1", &[]))
        .await;
    app.patient_id(AA, "H1", Some(&pos)).await;
    assert_eq!(projector_health(&app).await, StatusCode::OK);

    // Hold the views: the projector's next batch waits on the lock.
    let mut holder = app.db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE projection_offsets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    app.post_bundle_ok("qsrc", &key, &crate::bundle(AA, "H2", "h2", &[]))
        .await;
    let until = |want: StatusCode| {
        let app = &app;
        async move {
            let start = Instant::now();
            while projector_health(app).await != want {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "projector /healthz never became {want}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // PROJECTOR_STALL_SECONDS is 5 in the tests.
    until(StatusCode::SERVICE_UNAVAILABLE).await;
    tx.rollback().await.unwrap();
    until(StatusCode::OK).await;
}
