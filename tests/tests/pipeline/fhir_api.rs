//! The FHIR R4 API for EHRs (`/fhir`): a real Synthea patient read through it, under the same
//! consent, Break-the-Glass and audit rules as `/v1/patients/{id}/records`; errors as
//! `OperationOutcome`; shapes checked by an independent FHIR implementation (fhir.resources).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hie_tests::{synthea_dir, synthea_patient_bundles, TestApp};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

const SYNTHEA_AA: &str = "http://hospital.smarthealthit.org";
const READER: &str = "org-reader";

fn mrn_and_family(bundle: &Value) -> (String, String) {
    let patient = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .unwrap();
    let mrn = patient["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["system"] == SYNTHEA_AA)
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let family = patient["name"][0]["family"].as_str().unwrap().to_string();
    (mrn, family)
}

/// Status and body of a FHIR answer, which must be `application/fhir+json`.
async fn fhir(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/fhir+json"),
        "{status}: content type {content_type:?}"
    );
    (status, r.json().await.unwrap())
}

/// The error code and break-the-glass flag an OperationOutcome carries.
fn outcome(body: &Value) -> (&str, Option<bool>) {
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let issue = &body["issue"][0];
    assert_eq!(issue["severity"], "error");
    assert_eq!(
        issue["details"]["coding"][0]["system"],
        "urn:hie:query-api:error"
    );
    let allowed = issue["extension"]
        .as_array()
        .and_then(|x| {
            x.iter()
                .find(|e| e["url"] == "urn:hie:fhir:StructureDefinition:break-glass-allowed")
        })
        .and_then(|e| e["valueBoolean"].as_bool());
    (
        issue["details"]["coding"][0]["code"].as_str().unwrap(),
        allowed,
    )
}

/// `type/id` of every resource of a Bundle's entries, checking the searchset shape on the way.
fn bundle_ids(bundle: &Value) -> BTreeSet<String> {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(bundle["total"], entries.len());
    entries
        .iter()
        .map(|e| {
            let r = &e["resource"];
            let key = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            assert_eq!(e["search"]["mode"], "match");
            assert!(
                e["fullUrl"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/fhir/{key}")),
                "{}",
                e["fullUrl"]
            );
            key
        })
        .collect()
}

fn record_ids(records: &Value) -> BTreeSet<String> {
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// Run tests/check_fhir.py (fhir.resources) over resources we served.
fn check_with_fhir_resources(resources: &[(&str, &Value)]) {
    let dir = std::env::temp_dir().join(format!("hie-fhir-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<_> = resources
        .iter()
        .map(|(name, r)| {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, r.to_string()).unwrap();
            path
        })
        .collect();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("check_fhir.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&files)
        .output()
        .expect("python3 (tests/prereqs.sh installs fhir.resources)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "fhir.resources rejected what we served: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        resources.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_metadata_and_errors_are_fhir() {
    let app = TestApp::spawn().await;

    // The conformance endpoint needs no token.
    let r = app
        .http
        .get(format!("{}/fhir/metadata", app.query))
        .send()
        .await
        .unwrap();
    let (status, metadata) = fhir(r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metadata["resourceType"], "CapabilityStatement");
    assert_eq!(metadata["fhirVersion"], "4.0.1");
    let resources = metadata["rest"][0]["resource"].as_array().unwrap();
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    assert_eq!(patient["operation"][0]["name"], "everything");
    let observation = resources
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap();
    assert!(observation["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "patient"));
    // _format=json and Accept: application/json are JSON too; XML only is a 406.
    let r = app
        .http
        .get(format!("{}/fhir/metadata?_format=json", app.query))
        .header("accept", "application/fhir+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .http
        .get(format!("{}/fhir/metadata", app.query))
        .header("accept", "application/fhir+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(fhir(r).await.0, StatusCode::NOT_ACCEPTABLE);

    // Everything else needs a token: 401 OperationOutcome.
    let some_id = uuid::Uuid::new_v4();
    for path in [
        format!("/fhir/Patient/{some_id}"),
        format!("/fhir/Observation?patient={some_id}"),
        format!("/fhir/Patient/{some_id}/$everything"),
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.query))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("www-authenticate"));
        let (status, body) = fhir(r).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(outcome(&body).0, "unauthorized");
        assert_eq!(body["issue"][0]["code"], "login");
    }

    let token = app.token(READER, &["physician"]);
    // Unknown patient: 404; unknown or unsupported type: 400 not-supported; unknown route: 404.
    let (status, body) = fhir(
        app.get(&format!("/fhir/Patient/{some_id}"), &token, None)
            .await,
    )
    .await;
    assert_eq!(
        (status, outcome(&body).0),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = fhir(
        app.get(&format!("/fhir/Condition?patient={some_id}"), &token, None)
            .await,
    )
    .await;
    assert_eq!(
        (status, outcome(&body).0),
        (StatusCode::NOT_FOUND, "not_found")
    );
    for path in [
        format!("/fhir/Foo?patient={some_id}"),
        format!("/fhir/Organization?patient={some_id}"),
        format!("/fhir/Patient/{some_id}/$validate"),
    ] {
        let (status, body) = fhir(app.get(&path, &token, None).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["issue"][0]["code"], "not-supported", "{path}");
    }
    let (status, body) = fhir(app.get("/fhir/Observation", &token, None).await).await;
    assert_eq!(
        (status, body["issue"][0]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("required"))
    );
    for path in ["/fhir/Observation/o1", "/fhir", "/fhir/a/b/c/d"] {
        let (status, body) = fhir(app.get(path, &token, None).await).await;
        assert_eq!(
            (status, outcome(&body).0),
            (StatusCode::NOT_FOUND, "unknown_route"),
            "{path}"
        );
    }
    let r = app
        .post_query("/fhir/Patient", &token, &json!({"resourceType": "Patient"}))
        .await;
    assert_eq!(fhir(r).await.0, StatusCode::METHOD_NOT_ALLOWED);
    // A bad X-Min-Position is refused as on /v1, as an OperationOutcome.
    let (status, body) = fhir(
        app.get(&format!("/fhir/Patient/{some_id}"), &token, Some("garbage"))
            .await,
    )
    .await;
    assert_eq!(
        (status, outcome(&body).0),
        (StatusCode::BAD_REQUEST, "invalid_position")
    );
    // The /v1 routes keep their JSON errors.
    let r = app
        .get(&format!("/v1/patients/{some_id}/records"), &token, None)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");

    check_with_fhir_resources(&[("metadata", &metadata), ("outcome", &body)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_reads_of_a_synthea_patient_follow_consent_and_are_audited() {
    let app = TestApp::spawn().await;
    let key = app
        .register_source("synthea", "org-synthea", SYNTHEA_AA)
        .await;
    for name in [
        "hospitalInformation1603148702656.json",
        "practitionerInformation1603148702656.json",
    ] {
        let bundle: Value =
            serde_json::from_slice(&std::fs::read(synthea_dir().join(name)).unwrap()).unwrap();
        app.post_bundle_ok("synthea", &key, &bundle).await;
    }
    let file = &synthea_patient_bundles()[0];
    let bundle: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let (mrn, family) = mrn_and_family(&bundle);
    let pos = app.post_bundle_ok("synthea", &key, &bundle).await;
    let id = app.patient_id(SYNTHEA_AA, &mrn, Some(&pos)).await;
    let dr = app.user_token("dr-fhir", READER, &["physician"]);

    // Patient read: demographics, no consent needed.
    let (status, patient) = fhir(
        app.get(&format!("/fhir/Patient/{id}"), &dr, Some(&pos))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patient["resourceType"], "Patient");
    assert_eq!(patient["id"], id.as_str());
    assert_eq!(patient["name"][0]["family"], family.as_str());
    assert!(patient["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["system"] == SYNTHEA_AA && i["value"] == mrn.as_str()));
    // And found by a Patient search on its identifier.
    let (status, found) = fhir(
        app.get(
            &format!(
                "/fhir/Patient?identifier={}",
                hie_tests::urlencode(&format!("{SYNTHEA_AA}|{mrn}"))
            ),
            &dr,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        bundle_ids(&found),
        BTreeSet::from([format!("Patient/{id}")])
    );

    // No consent: clinical reads are refused like /v1, with the same code.
    let observations = format!("/fhir/Observation?patient={id}");
    let everything = format!("/fhir/Patient/{id}/$everything?_count=1000");
    for path in [&observations, &everything] {
        let (status, body) = fhir(app.get(path, &dr, Some(&pos)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["issue"][0]["code"], "forbidden");
        assert_eq!(outcome(&body), ("consent_required", Some(true)));
        assert!(body.get("entry").is_none());
        assert!(
            !body.to_string().contains(&family),
            "no PHI in an OperationOutcome"
        );
    }
    let (_, refusal) = fhir(app.get(&observations, &dr, None).await).await;

    // After Break-the-Glass: served.
    let r = app
        .post_query(
            &format!("/v1/patients/{id}/break-glass"),
            &dr,
            &json!({"reason": "unconscious in the ED", "attest": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, btg) = fhir(
        app.get(
            &format!("/fhir/Observation?subject=Patient/{id}"),
            &dr,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bundle_ids(&btg).len(), 16);

    // Under a grant: the same Observations as /v1, and $everything = the Patient + all records.
    let granted = app.consent(SYNTHEA_AA, &mrn, READER, "grant").await;
    let nurse = app.user_token("rn-fhir", READER, &["nurse"]);
    let v1: Value = app
        .get(
            &format!("/v1/patients/{id}/records?type=Observation"),
            &nurse,
            Some(&granted),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1["basis"], "consent");
    let (status, obs) = fhir(
        app.get(
            &format!("/fhir/Observation?patient=Patient/{id}"),
            &nurse,
            Some(&granted),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bundle_ids(&obs), record_ids(&v1["records"]));
    assert_eq!(obs["entry"][0]["resource"], v1["records"][0]);

    let all: Value = app
        .get(&format!("/v1/patients/{id}/records"), &nurse, None)
        .await
        .json()
        .await
        .unwrap();
    let mut timings = Vec::new();
    let mut ever = Value::Null;
    for _ in 0..5 {
        let started = Instant::now();
        let r = app.get(&everything, &nurse, None).await;
        let (status, body) = fhir(r).await;
        timings.push(started.elapsed());
        assert_eq!(status, StatusCode::OK);
        ever = body;
    }
    timings.sort();
    let records = all["records"].as_array().unwrap().len();
    assert_eq!(records, bundle["entry"].as_array().unwrap().len() - 4); // less the shared data
    assert_eq!(ever["total"], records + 1);
    assert_eq!(ever["entry"][0]["resource"], patient);
    let mut expected = record_ids(&all["records"]);
    expected.insert(format!("Patient/{id}"));
    assert_eq!(bundle_ids(&ever), expected);
    eprintln!(
        "$everything of a Synthea patient ({} resources, {} bytes): median {:?}, max {:?}",
        records + 1,
        ever.to_string().len(),
        timings[timings.len() / 2],
        timings[timings.len() - 1]
    );

    // Denied: refused, and no Break-the-Glass can open it.
    let denied = app.consent(SYNTHEA_AA, &mrn, READER, "deny").await;
    let (status, body) = fhir(app.get(&everything, &nurse, Some(&denied)).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(outcome(&body), ("consent_denied", Some(false)));

    // Every FHIR clinical read, served or refused, is in the access log.
    let admin = app.admin();
    let mut entries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let body: Value = app
            .get(&format!("/v1/patients/{id}/access-log"), &admin, None)
            .await
            .json()
            .await
            .unwrap();
        entries = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("fhir:")))
            .map(|e| {
                (
                    e["user"].as_str().unwrap().to_string(),
                    e["action"].as_str().unwrap().to_string(),
                    e["basis"].as_str().unwrap().to_string(),
                    e["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>();
        // The last read's refusal is the last event: once it is in, all are.
        if entries.iter().any(|e| e.3 == "refused:consent_denied") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let has = |user: &str, action: &str, basis: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e == &(user.into(), action.into(), basis.into(), outcome.into()))
    };
    assert!(
        has(
            "dr-fhir",
            "fhir:Observation?patient",
            "none",
            "refused:consent_required"
        ),
        "{entries:?}"
    );
    assert!(has(
        "dr-fhir",
        "fhir:Patient/$everything",
        "none",
        "refused:consent_required"
    ));
    assert!(has(
        "dr-fhir",
        "fhir:Observation?patient",
        "break_glass",
        "allowed"
    ));
    assert!(has(
        "rn-fhir",
        "fhir:Observation?patient",
        "consent",
        "allowed"
    ));
    assert!(has(
        "rn-fhir",
        "fhir:Patient/$everything",
        "consent",
        "allowed"
    ));
    assert!(has(
        "rn-fhir",
        "fhir:Patient/$everything",
        "none",
        "refused:consent_denied"
    ));
    // 1 demographic search (audited, basis search), 3 refusals, 1 BTG read, 1 search + 5
    // $everything under consent, 1 denial.
    assert!(has("dr-fhir", "fhir:Patient?search", "search", "shown"));
    assert_eq!(entries.len(), 12, "{entries:?}");

    check_with_fhir_resources(&[
        ("patient", &patient),
        ("patient-search", &found),
        ("observations", &obs),
        ("everything", &ever),
        ("refusal", &refusal),
    ]);
}

/// Fail closed as on /v1: no durable audit event, no data — a 503 OperationOutcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_no_audit_no_data() {
    const AA: &str = "urn:oid:2.16.840.1.113883.3.78";
    let mut app = TestApp::spawn().await;
    let key = app.register_source("hosp", "org-hosp", AA).await;
    let p = app
        .post_bundle_ok(
            "hosp",
            &key,
            &crate::bundle(AA, "F1", "p", &[("o", "2024-01-01T00:00:00Z", 1.0)]),
        )
        .await;
    let c = app.consent(AA, "F1", READER, "grant").await;
    let id = app.patient_id(AA, "F1", Some(&p)).await;
    let token = app.token(READER, &["physician"]);
    let observations = format!("/fhir/Observation?patient={id}");
    let (status, body) = fhir(app.get(&observations, &token, Some(&c)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        bundle_ids(&body),
        BTreeSet::from(["Observation/o".to_string()])
    );

    app.broker.kill();
    for path in [observations, format!("/fhir/Patient/{id}/$everything")] {
        let (status, body) = fhir(app.get(&path, &token, None).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(outcome(&body).0, "audit_unavailable");
        assert_eq!(body["issue"][0]["code"], "transient");
        assert!(body.get("entry").is_none());
    }
}
