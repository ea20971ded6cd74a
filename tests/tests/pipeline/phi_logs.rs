//! No PHI in logs: run the real binaries through a whole scenario, capture everything they log,
//! and look for the test patient's name, birth date and MRN.

use hie_tests::{urlencode, Stack};
use reqwest::StatusCode;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.6161";
const FAMILY: &str = "Quixotezyx";
const GIVEN: &str = "Wilhelminaqv";
const BIRTH_DATE: &str = "1937-07-19";
const MRN: &str = "MRN-PHI-774411";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_scenario_logs_no_phi() {
    let mut stack = Stack::start(&[]).await;
    let http = stack.http.clone();
    let (ingest, query) = (stack.ingest.clone(), stack.query.clone());

    let admin = stack.admin();
    let key = stack.register_source("phi-src", "org-src", AA).await;

    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "urn:uuid:pp", "resource": {"resourceType": "Patient", "id": "pp",
            "identifier": [{"system": AA, "value": MRN}], "name": [{"family": FAMILY, "given": [GIVEN]}], "birthDate": BIRTH_DATE}},
        {"fullUrl": "urn:uuid:oo", "resource": {"resourceType": "Observation", "id": "oo", "status": "final",
            "code": {"text": "glucose"}, "subject": {"reference": "urn:uuid:pp"}, "valueQuantity": {"value": 99}}},
        {"resource": {"resourceType": "Observation", "id": "bad", "subject": {"reference": "urn:uuid:pp"}, "note": [{"text": FAMILY}]}},
        {"resource": {"resourceType": "Patient", "id": "nobody", "identifier": [{"system": "other", "value": MRN}], "name": [{"family": FAMILY}]}}
    ]});
    let r = http
        .post(format!("{ingest}/v1/sources/phi-src/fhir"))
        .bearer_auth(&key)
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rejected"].as_array().unwrap().len(), 2);
    for rejection in body["rejected"].as_array().unwrap() {
        let e = rejection["error"].as_str().unwrap();
        assert!(
            !e.contains(MRN) && !e.contains(FAMILY),
            "an error message carries PHI: {e}"
        );
    }
    let position = body["position"].as_str().unwrap().to_string();
    // Malformed input: the error must not echo it.
    let r = http
        .post(format!("{ingest}/v1/sources/phi-src/fhir"))
        .bearer_auth(&key)
        .header("content-type", "application/fhir+json")
        .body(format!(
            "{{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"id\":\"{MRN}\" {FAMILY}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!r.text().await.unwrap().contains(FAMILY));

    let clinician = stack.user_token("dr", "org-reader", &["physician"]).await;
    let search = format!(
        "{query}/v1/patients?family={FAMILY}&birth_date={BIRTH_DATE}&identifier={}",
        urlencode(&format!("{AA}|{MRN}"))
    );
    let found: Value = http
        .get(&search)
        .bearer_auth(&clinician)
        .header("x-min-position", &position)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = found["patients"][0]["id"].as_str().unwrap().to_string();
    let r = http
        .get(format!("{query}/v1/patients/{id}/records"))
        .bearer_auth(&clinician)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("{query}/v1/patients/{id}/break-glass"))
        .bearer_auth(&clinician)
        .json(&json!({"reason": format!("{GIVEN} {FAMILY} collapsed"), "attest": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .get(format!("{query}/v1/patients/{id}/records"))
        .bearer_auth(&clinician)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let consent = http
        .post(format!("{ingest}/v1/consents"))
        .bearer_auth(&key)
        .json(&json!({"patient": {"assigning_authority": AA, "mrn": MRN}, "organization_id": "*", "decision": "grant", "method": "written"}))
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), StatusCode::ACCEPTED);
    let p = consent.json::<Value>().await.unwrap()["position"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http
        .get(format!("{query}/v1/patients/{id}/records"))
        .bearer_auth(&clinician)
        .header("x-min-position", p)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("{query}/v1/patients/{id}/access-log"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    stack.stop();

    let mut scanned = 0;
    for name in hie_tests::SERVICES {
        let text = stack.log(name);
        assert!(
            !text.is_empty(),
            "{name} logged nothing: the scan would prove nothing"
        );
        for phi in [FAMILY, GIVEN, BIRTH_DATE, MRN] {
            assert!(
                !text.contains(phi),
                "{name}'s log contains PHI ({} chars of it)",
                phi.len()
            );
        }
        scanned += text.lines().count();
    }
    eprintln!("scanned {scanned} log lines of 3 processes: no name, birth date or MRN");
}
