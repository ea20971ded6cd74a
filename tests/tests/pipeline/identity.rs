//! The master patient index end to end: one person sent by two sources with the differences real
//! feeds have reads as one patient with both sources' records; twins at one address stay apart;
//! a data steward's unlink splits them back; consent follows the person.

use std::time::{Duration, Instant};

use hie_tests::{urlencode, TestApp};
use reqwest::StatusCode;
use schemas::PatientIdentity;
use serde_json::{json, Value};

pub(crate) const AA_A: &str = "urn:oid:2.16.840.1.113883.19.1";
pub(crate) const AA_B: &str = "urn:oid:2.16.840.1.113883.19.2";

pub(crate) fn patient(aa: &str, mrn: &str, p: Value) -> Value {
    let mut r = json!({
        "resourceType": "Patient",
        "id": format!("p-{mrn}"),
        "identifier": [{"system": aa, "value": mrn}],
    });
    for (k, v) in p.as_object().unwrap() {
        if k == "identifier" {
            r["identifier"]
                .as_array_mut()
                .unwrap()
                .extend(v.as_array().unwrap().iter().cloned());
        } else {
            r[k] = v.clone();
        }
    }
    r
}

pub(crate) fn bundle(patient: Value, other: Value) -> Value {
    let id = patient["id"].as_str().unwrap().to_string();
    let mut other = other;
    other["subject"] = json!({"reference": format!("urn:uuid:{id}")});
    json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": format!("urn:uuid:{id}"), "resource": patient},
        {"fullUrl": format!("urn:uuid:{id}-x"), "resource": other},
    ]})
}

pub(crate) fn ssn(v: &str) -> Value {
    json!([{"system": "http://hl7.org/fhir/sid/us-ssn", "value": v}])
}

/// The enterprise id `identifier` finds now, if any.
async fn enterprise(app: &TestApp, aa: &str, mrn: &str) -> Option<(String, Value)> {
    let token = app.token("org-any", &["front_desk"]);
    let q = format!(
        "/v1/patients?identifier={}",
        urlencode(&format!("{aa}|{mrn}"))
    );
    let body: Value = app.get(&q, &token, None).await.json().await.unwrap();
    let p = body["patients"].as_array()?.first()?.clone();
    Some((p["id"].as_str()?.to_string(), p))
}

/// Waits (at most 10 s) until `check` holds of what `identifier` finds.
async fn until<F: Fn(&Option<(String, Value)>) -> bool>(
    app: &TestApp,
    aa: &str,
    mrn: &str,
    what: &str,
    check: F,
) -> Option<(String, Value)> {
    let started = Instant::now();
    loop {
        let found = enterprise(app, aa, mrn).await;
        if check(&found) {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn record_types(app: &TestApp, token: &str, id: &str) -> (StatusCode, Vec<String>) {
    let r = app
        .get(&format!("/v1/patients/{id}/records"), token, None)
        .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    let mut types: Vec<String> = body["records"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["resourceType"] != "Patient")
                .map(|r| r["resourceType"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    types.sort();
    (status, types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_at_two_sources_is_one_patient_until_a_steward_unlinks() {
    let app = TestApp::spawn().await;
    let key_a = app.register_source("hosp-a", "org-a", AA_A).await;
    let key_b = app.register_source("clinic-b", "org-b", AA_B).await;

    // Hospital A: the full record. Clinic B: a nickname, upper case, day and month swapped, the
    // street abbreviated, the phone formatted otherwise, no SSN.
    let a = patient(
        AA_A,
        "A-100",
        json!({
            "name": [{"use": "official", "family": "Kowalczyk", "given": ["Jonathan", "Q"]}],
            "gender": "male", "birthDate": "1979-04-07",
            "address": [{"line": ["12 Linden Street"], "city": "Worcester", "postalCode": "01609"}],
            "telecom": [{"system": "phone", "value": "508-555-0142"}],
            "identifier": ssn("123-45-6789"),
        }),
    );
    let b = patient(
        AA_B,
        "B-7",
        json!({
            "name": [{"family": "KOWALCZYK", "given": ["JON"]}],
            "gender": "male", "birthDate": "1979-07-04",
            "address": [{"line": ["12 Linden St."], "postalCode": "01609-2280"}],
            "telecom": [{"system": "phone", "value": "(508) 555 0142"}],
        }),
    );
    let observation = json!({"resourceType": "Observation", "id": "obs-1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}});
    let condition = json!({"resourceType": "Condition", "id": "cond-1",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}});
    app.post_bundle_ok("hosp-a", &key_a, &bundle(a, observation))
        .await;
    let (a_id, _) = until(&app, AA_A, "A-100", "hospital A's patient", |f| f.is_some())
        .await
        .unwrap();
    app.post_bundle_ok("clinic-b", &key_b, &bundle(b, condition))
        .await;
    let sent = Instant::now();

    // B's identity is linked into A's enterprise patient: found under A's id, both identifiers.
    let (found, p) = until(&app, AA_B, "B-7", "the link", |f| {
        f.as_ref().is_some_and(|(id, _)| *id == a_id)
    })
    .await
    .unwrap();
    eprintln!(
        "linked and visible {:?} after clinic B's 202",
        sent.elapsed()
    );
    assert_eq!(found, a_id);
    let identifiers = p["identifiers"].to_string();
    assert!(
        identifiers.contains("A-100") && identifiers.contains("B-7"),
        "{p}"
    );
    // One entry per person in a search by name.
    let token = app.token("org-any", &["front_desk"]);
    let body: Value = app
        .get("/v1/patients?family=kowalczyk&given=jon", &token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["patients"].as_array().unwrap().len(), 1, "{body}");

    // Consent follows the person: a grant recorded under clinic B's identity after the link
    // opens both sources' records.
    let reader = app.token("org-r", &["physician"]);
    let position = app.consent(AA_B, "B-7", "org-r", "grant").await;
    let r = app
        .get(
            &format!("/v1/patients/{a_id}/records"),
            &reader,
            Some(&position),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        record_types(&app, &reader, &a_id).await,
        (
            StatusCode::OK,
            vec!["Condition".into(), "Observation".into()]
        )
    );
    // The id clinic B's identity had on its own still answers, for the person it became.
    let b_own = PatientIdentity {
        assigning_authority: AA_B.into(),
        mrn: "B-7".into(),
    }
    .patient_id()
    .to_string();
    assert_eq!(
        record_types(&app, &reader, &b_own).await,
        (
            StatusCode::OK,
            vec!["Condition".into(), "Observation".into()]
        )
    );

    // Stewards: the review queue and decisions are theirs alone; clinical data never is.
    let steward = app.token("org-hie", &["data_steward"]);
    let r = app.get("/v1/identity/reviews", &steward, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.get("/v1/identity/reviews", &reader, None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/v1/patients/{a_id}/records"), &steward, None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let unlink = json!({"identity": {"assigning_authority": AA_B, "mrn": "B-7"}});
    assert_eq!(
        app.post_query("/v1/identity/unlink", &reader, &unlink)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // The unlink splits them back, each with its own records.
    let r = app
        .post_query("/v1/identity/unlink", &steward, &unlink)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let unlinked = Instant::now();
    until(&app, AA_B, "B-7", "the unlink", |f| {
        f.as_ref().is_some_and(|(id, _)| *id == b_own)
    })
    .await;
    eprintln!("unlink visible {:?} after its 202", unlinked.elapsed());
    app.consent(AA_A, "A-100", "org-r", "grant").await;
    let position = app.consent(AA_B, "B-7", "org-r", "grant").await;
    app.get(
        &format!("/v1/patients/{a_id}/records"),
        &reader,
        Some(&position),
    )
    .await;
    assert_eq!(
        record_types(&app, &reader, &a_id).await,
        (StatusCode::OK, vec!["Observation".into()])
    );
    assert_eq!(
        record_types(&app, &reader, &b_own).await,
        (StatusCode::OK, vec!["Condition".into()])
    );

    // A steward's link joins them again.
    let link = json!({"identities": [
        {"assigning_authority": AA_A, "mrn": "A-100"},
        {"assigning_authority": AA_B, "mrn": "B-7"}], "decision": "link"});
    let r = app
        .post_query("/v1/identity/decisions", &steward, &link)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    until(&app, AA_B, "B-7", "the steward's link", |f| {
        f.as_ref().is_some_and(|(id, _)| *id == a_id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_at_one_address_stay_two_patients() {
    let app = TestApp::spawn().await;
    let key_a = app.register_source("hosp-a", "org-a", AA_A).await;
    let key_b = app.register_source("clinic-b", "org-b", AA_B).await;
    let household = |aa: &str, mrn: &str, given: &str, ssn_value: &str| {
        patient(
            aa,
            mrn,
            json!({
                "name": [{"family": "Okafor", "given": [given]}],
                "gender": "female", "birthDate": "2001-09-12",
                "address": [{"line": ["40 Elm Avenue"], "postalCode": "02139"}],
                "telecom": [{"system": "phone", "value": "617-555-0199"}],
                "identifier": ssn(ssn_value),
            }),
        )
    };
    let note = json!({"resourceType": "Observation", "id": "o", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}});
    app.post_bundle_ok(
        "hosp-a",
        &key_a,
        &bundle(
            household(AA_A, "A-1", "Adaeze", "222-33-4444"),
            note.clone(),
        ),
    )
    .await;
    app.post_bundle_ok(
        "clinic-b",
        &key_b,
        &bundle(
            household(AA_B, "B-1", "Chiamaka", "222-33-4445"),
            note.clone(),
        ),
    )
    .await;
    // And Adaeze again at the clinic, as "ADAEZE": her, not her sister.
    app.post_bundle_ok(
        "clinic-b",
        &key_b,
        &bundle(household(AA_B, "B-2", "ADAEZE", "222-33-4444"), note),
    )
    .await;
    let (adaeze, _) = until(&app, AA_A, "A-1", "Adaeze", |f| f.is_some())
        .await
        .unwrap();
    until(&app, AA_B, "B-2", "Adaeze at the clinic", |f| {
        f.as_ref().is_some_and(|(id, _)| *id == adaeze)
    })
    .await;
    let (chiamaka, _) = until(&app, AA_B, "B-1", "Chiamaka", |f| f.is_some())
        .await
        .unwrap();
    assert_ne!(chiamaka, adaeze, "twins linked");
    let token = app.token("org-any", &["front_desk"]);
    let body: Value = app
        .get(
            "/v1/patients?family=okafor&birth_date=2001-09-12",
            &token,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["patients"].as_array().unwrap().len(), 2, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_possible_match_waits_for_a_steward_and_widens_nothing() {
    let app = TestApp::spawn().await;
    let key_a = app.register_source("hosp-a", "org-a", AA_A).await;
    let key_b = app.register_source("clinic-b", "org-b", AA_B).await;
    // The same name and birth date, but another address and phone and no SSN: maybe a move,
    // maybe a namesake.
    let who = |aa: &str, mrn: &str, street: &str, postal: &str, phone: &str| {
        patient(
            aa,
            mrn,
            json!({
                "name": [{"family": "Vasquez", "given": ["Teodora"]}],
                "gender": "female", "birthDate": "1950-02-20",
                "address": [{"line": [street], "postalCode": postal}],
                "telecom": [{"system": "phone", "value": phone}],
            }),
        )
    };
    let obs = json!({"resourceType": "Observation", "id": "o", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}});
    app.post_bundle_ok(
        "hosp-a",
        &key_a,
        &bundle(
            who(AA_A, "A-5", "3 Oak Road", "01001", "413-555-0100"),
            obs.clone(),
        ),
    )
    .await;
    let (a_id, _) = until(&app, AA_A, "A-5", "A-5", |f| f.is_some())
        .await
        .unwrap();
    app.post_bundle_ok(
        "clinic-b",
        &key_b,
        &bundle(
            who(AA_B, "B-5", "77 Pine Lane", "02760", "413-555-0999"),
            obs,
        ),
    )
    .await;

    // It reaches the steward's queue with both sides and the evidence, and links nothing.
    let steward = app.token("org-hie", &["data_steward"]);
    let started = Instant::now();
    let review = loop {
        let body: Value = app
            .get("/v1/identity/reviews", &steward, None)
            .await
            .json()
            .await
            .unwrap();
        if let Some(r) = body["reviews"].as_array().and_then(|a| a.first()) {
            break r.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no review");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sides = [
        review["identity"]["mrn"].as_str().unwrap(),
        review["candidate"]["mrn"].as_str().unwrap(),
    ];
    assert!(sides.contains(&"A-5") && sides.contains(&"B-5"), "{review}");
    assert_eq!(review["evidence"]["birth_date"], "exact", "{review}");
    assert_eq!(review["evidence"]["address"], "different", "{review}");
    assert_eq!(review["identity"]["family"], "Vasquez", "{review}");
    let (b_id, _) = enterprise(&app, AA_B, "B-5").await.unwrap();
    assert_ne!(a_id, b_id, "a possible match is no link");

    // The steward's read of the queue is in the patients' access logs.
    let admin = app.admin();
    let started = Instant::now();
    loop {
        let body: Value = app
            .get(&format!("/v1/patients/{a_id}/access-log"), &admin, None)
            .await
            .json()
            .await
            .unwrap();
        if body["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["basis"] == "identity_review"))
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Not a match: the review closes, and they stay two.
    let decision = json!({"identities": [
        {"assigning_authority": AA_A, "mrn": "A-5"},
        {"assigning_authority": AA_B, "mrn": "B-5"}], "decision": "not_a_match"});
    let r = app
        .post_query("/v1/identity/decisions", &steward, &decision)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let position = r.json::<Value>().await.unwrap()["position"]
        .as_str()
        .unwrap()
        .to_string();
    let body: Value = app
        .get("/v1/identity/reviews", &steward, Some(&position))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["reviews"], json!([]), "{body}");
    assert_ne!(enterprise(&app, AA_B, "B-5").await.unwrap().0, a_id);
}
