use hie_tests::TestApp;
use reqwest::StatusCode;
use serde_json::Value;

const AA: &str = "urn:oid:2.16.840.1.113883.3.88";

async fn observation_value(app: &TestApp, id: &str, position: &str) -> Vec<f64> {
    let token = app.token("org-v", &["physician"]);
    let r = app
        .get(
            &format!("/v1/patients/{id}/records?type=Observation"),
            &token,
            Some(position),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["valueQuantity"]["value"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_version_wins_and_duplicates_change_nothing() {
    let app = TestApp::spawn().await;
    let key = app.register_source("lab", "org-v", AA).await;
    app.consent(AA, "V1", "org-v", "grant").await;
    let p = app
        .post_bundle_ok(
            "lab",
            &key,
            &crate::bundle(AA, "V1", "p", &[("glu", "2024-03-01T10:00:00Z", 1.0)]),
        )
        .await;
    let id = app.patient_id(AA, "V1", Some(&p)).await;
    assert_eq!(observation_value(&app, &id, &p).await, vec![1.0]);

    // A later version replaces it.
    let p = app
        .post_bundle_ok(
            "lab",
            &key,
            &crate::bundle(AA, "V1", "p", &[("glu", "2024-03-02T10:00:00Z", 2.0)]),
        )
        .await;
    assert_eq!(observation_value(&app, &id, &p).await, vec![2.0]);

    // An older version, arriving late, does not overwrite the newer one.
    let p = app
        .post_bundle_ok(
            "lab",
            &key,
            &crate::bundle(AA, "V1", "p", &[("glu", "2024-03-01T12:00:00Z", 1.5)]),
        )
        .await;
    assert_eq!(observation_value(&app, &id, &p).await, vec![2.0]);

    // The same message delivered again changes nothing, not even its provenance.
    let db = app.db.client().await;
    let before: String = db
        .query_one(
            "SELECT event_id FROM records WHERE resource_id = 'glu'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let p = app
        .post_bundle_ok(
            "lab",
            &key,
            &crate::bundle(AA, "V1", "p", &[("glu", "2024-03-02T10:00:00Z", 2.0)]),
        )
        .await;
    assert_eq!(observation_value(&app, &id, &p).await, vec![2.0]);
    let after: String = db
        .query_one(
            "SELECT event_id FROM records WHERE resource_id = 'glu'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);

    // An equal version with other content (HL7 MSH-7 is to the second; lastUpdated may tie): the
    // later in the log wins.
    let p = app
        .post_bundle_ok(
            "lab",
            &key,
            &crate::bundle(AA, "V1", "p", &[("glu", "2024-03-02T10:00:00Z", 2.25)]),
        )
        .await;
    assert_eq!(observation_value(&app, &id, &p).await, vec![2.25]);

    // Resources without meta.lastUpdated are ordered by receipt: the later send wins.
    let mut b = crate::bundle(AA, "V1", "p", &[("bp", "2024-03-02T10:00:00Z", 120.0)]);
    b["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("meta");
    app.post_bundle_ok("lab", &key, &b).await;
    b["entry"][1]["resource"]["valueQuantity"]["value"] = 130.0.into();
    let p = app.post_bundle_ok("lab", &key, &b).await;
    let mut values = observation_value(&app, &id, &p).await;
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![2.25, 130.0]);
}
