use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hie_tests::{synthea_dir, synthea_patient_bundles, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SYNTHEA_AA: &str = "http://hospital.smarthealthit.org";

fn mrn_of(bundle: &Value) -> String {
    let patient = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .unwrap();
    patient["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["system"] == SYNTHEA_AA)
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Per type, the ids of the entries that belong to the patient (everything but shared data).
fn patient_entries(bundle: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in bundle["entry"].as_array().unwrap() {
        let r = &e["resource"];
        let t = r["resourceType"].as_str().unwrap();
        if t == "Organization" || t == "Practitioner" {
            continue;
        }
        out.entry(t.to_string())
            .or_default()
            .push(r["id"].as_str().unwrap().to_string());
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_bundles_as_they_are_are_readable_under_consent() {
    let app = TestApp::spawn().await;
    let key = app
        .register_source("synthea", "org-synthea", SYNTHEA_AA)
        .await;
    let reader = app.token("org-reader", &["physician"]);

    for name in [
        "hospitalInformation1603148702656.json",
        "practitionerInformation1603148702656.json",
    ] {
        let bundle: Value =
            serde_json::from_slice(&std::fs::read(synthea_dir().join(name)).unwrap()).unwrap();
        let r = app
            .post_fhir("synthea", &key, "application/fhir+json", bundle.to_string())
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["accepted"], bundle["entry"].as_array().unwrap().len());
    }

    let files = synthea_patient_bundles();
    assert_eq!(files.len(), 5);
    for file in files {
        let raw = std::fs::read(&file).unwrap();
        let bundle: Value = serde_json::from_slice(&raw).unwrap();
        let mrn = mrn_of(&bundle);
        let granted = app.consent(SYNTHEA_AA, &mrn, "org-reader", "grant").await;

        let started = Instant::now();
        let r = app
            .post_fhir("synthea", &key, "application/fhir+json", raw)
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["rejected"], json!([]), "{}: {body}", file.display());
        assert_eq!(body["accepted"], bundle["entry"].as_array().unwrap().len());
        // Wait for both the records and the consent recorded before them.
        let mut both = schemas::Position::decode(body["position"].as_str().unwrap()).unwrap();
        both.merge(&schemas::Position::decode(&granted).unwrap());
        let position = both.encode();

        let id = app.patient_id(SYNTHEA_AA, &mrn, Some(&position)).await;
        let r = app
            .get(
                &format!("/v1/patients/{id}/records"),
                &reader,
                Some(&position),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let elapsed = started.elapsed();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["basis"], "consent");
        let records = body["records"].as_array().unwrap();
        let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rec in records {
            got.entry(rec["resourceType"].as_str().unwrap().to_string())
                .or_default()
                .push(rec["id"].as_str().unwrap().to_string());
            // Bundle-local references were rewritten to resolvable ones.
            assert!(
                !rec.to_string().contains("urn:uuid:"),
                "unresolved reference left in a record"
            );
        }
        got.values_mut().for_each(|v| v.sort());
        assert_eq!(got, patient_entries(&bundle), "{}", file.display());
        eprintln!(
            "{}: {} records, ingest → readable {:?}",
            file.file_name().unwrap().to_string_lossy(),
            records.len(),
            elapsed
        );
    }
}

/// Without `X-Min-Position`, a record is visible within a second of the ingest response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_readable_within_a_second_without_waiting_headers() {
    let app = TestApp::spawn().await;
    let aa = "urn:oid:2.16.840.1.113883.3.42";
    let key = app.register_source("lab", "org-lab", aa).await;
    let granted = app.consent(aa, "M1", "org-lab", "grant").await;
    let first = app
        .post_bundle_ok(
            "lab",
            &key,
            &crate::bundle(aa, "M1", "p1", &[("obs-1", "2024-01-01T00:00:00Z", 5.0)]),
        )
        .await;
    let id = app.patient_id(aa, "M1", Some(&first)).await;
    let token = app.token("org-lab", &["nurse"]);
    assert_eq!(
        app.get(
            &format!("/v1/patients/{id}/records"),
            &token,
            Some(&granted)
        )
        .await
        .status(),
        StatusCode::OK
    );

    let mut latencies = Vec::new();
    for i in 0..20 {
        let obs_id = format!("obs-next-{i}");
        let sent = Instant::now();
        app.post_bundle_ok(
            "lab",
            &key,
            &crate::bundle(aa, "M1", "p1", &[(&obs_id, "2024-01-02T00:00:00Z", 6.0)]),
        )
        .await;
        let acked = Instant::now();
        loop {
            let body: Value = app
                .get(
                    &format!("/v1/patients/{id}/records?type=Observation"),
                    &token,
                    None,
                )
                .await
                .json()
                .await
                .unwrap();
            if body["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == obs_id.as_str())
            {
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(5),
                "record not visible 5 s after its ingest response"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push((acked.elapsed(), sent.elapsed()));
    }
    latencies.sort();
    eprintln!(
        "ingest response → visible: median {:?}, max {:?} (request start → visible, median {:?})",
        latencies[latencies.len() / 2].0,
        latencies.last().unwrap().0,
        latencies[latencies.len() / 2].1
    );
}
