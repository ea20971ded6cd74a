//! ADT^A40 over MLLP: the prior patient's history moves to the survivor, search finds one
//! patient, later messages for the prior follow, and the merged view is never more visible than
//! the stricter of the two patients' consents.

use std::time::{Duration, Instant};

use hie_tests::{urlencode, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

use crate::hl7_mllp::{fixture, of_type, patient_id_when_known, records_when, Mllp, MERCY_AA};

/// Mercy's fixture re-addressed to another patient (MRN, visit) and message id.
fn for_mrn(name: &str, mrn: &str, control_id: &str) -> String {
    let text = fixture(name)
        .replace("MG12345", mrn)
        .replace("V1001", &format!("V-{mrn}"));
    let old = text.split('|').nth(9).unwrap().to_string();
    text.replacen(&format!("|{old}|"), &format!("|{control_id}|"), 1)
}

async fn search(app: &TestApp, query: &str) -> Vec<String> {
    let token = app.token("org-any", &["front_desk"]);
    let body: Value = app
        .get(&format!("/v1/patients?{query}"), &token, None)
        .await
        .json()
        .await
        .unwrap();
    body["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a40_moves_the_prior_patients_history_to_the_survivor() {
    let app = TestApp::spawn().await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    app.consent(MERCY_AA, "MG12345", "org-mercy", "grant").await;
    let token = app.token("org-mercy", &["physician"]);

    let mut conn = Mllp::connect(&app).await;
    for message in [
        fixture("mercy_adt_a04.hl7"),
        for_mrn("mercy_adt_a04.hl7", "MG67890", "MG0101"),
        for_mrn("mercy_oru_r01.hl7", "MG67890", "MG0103"),
    ] {
        let ack = conn.send(&message).await;
        assert_eq!(ack.code(), "AA", "{}", ack.0);
    }
    let survivor = patient_id_when_known(&app, MERCY_AA, "MG12345").await;
    let prior = patient_id_when_known(&app, MERCY_AA, "MG67890").await;
    assert_ne!(survivor, prior);
    records_when(&app, &token, &survivor, |r| r.len() == 2).await;

    let ack = conn.send(&fixture("mercy_adt_a40.hl7")).await;
    assert_eq!(ack.code(), "AA", "{}", ack.0);
    let merged_at = Instant::now();

    // Search: the prior's MRN finds the survivor; the prior is no separate patient any more.
    let by_prior_mrn = format!("identifier={}", urlencode(&format!("{MERCY_AA}|MG67890")));
    loop {
        if search(&app, &by_prior_mrn).await == vec![survivor.clone()] {
            break;
        }
        assert!(
            merged_at.elapsed() < Duration::from_secs(5),
            "merge not projected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "merge visible in search {:?} after its ACK",
        merged_at.elapsed()
    );
    assert_eq!(
        search(&app, "family=O%27Neil&birth_date=1980-02-03").await,
        vec![survivor.clone()]
    );

    // Consent: the prior patient never consented, so the merged record stays closed (fail
    // closed: never more visible than the stricter of the two) until the prior's is recorded.
    let r = app
        .get(&format!("/v1/patients/{survivor}/records"), &token, None)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "consent_required", "{body}");
    let position = app.consent(MERCY_AA, "MG67890", "org-mercy", "grant").await;
    let r = app
        .get(
            &format!("/v1/patients/{survivor}/records"),
            &token,
            Some(&position),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // The survivor's records: its own Patient (updated by the A40's PID) and Encounter, and the
    // prior's Patient, Encounter, report and six results.
    let (records, _) = records_when(&app, &token, &survivor, |r| r.len() == 11).await;
    assert_eq!(of_type(&records, "Observation").len(), 6);
    assert_eq!(of_type(&records, "DiagnosticReport").len(), 1);
    assert_eq!(of_type(&records, "Patient").len(), 2);
    assert!(of_type(&records, "Patient")
        .iter()
        .any(|p| p["name"][0]["family"] == "O'Neil-Hart"));

    // The prior id stands for the survivor; a late message for the prior MRN follows it.
    let late = for_mrn("mercy_oru_r01.hl7", "MG67890", "MG0104").replace("FIL-5501", "FIL-7777");
    let ack = conn.send(&late).await;
    assert_eq!(ack.code(), "AA", "{}", ack.0);
    let (records, _) = records_when(&app, &token, &prior, |r| r.len() == 18).await;
    assert_eq!(of_type(&records, "Observation").len(), 12);
    assert_eq!(search(&app, &by_prior_mrn).await, vec![survivor.clone()]);

    // A deny for either identity closes the merged record again.
    let position = app.consent(MERCY_AA, "MG67890", "org-mercy", "deny").await;
    let r = app
        .get(
            &format!("/v1/patients/{survivor}/records"),
            &token,
            Some(&position),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "consent_denied", "{body}");
}
