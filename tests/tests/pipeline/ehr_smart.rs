//! EHR clients over SMART Backend Services, proven from outside: an independent client
//! (`tests/ehr_client.py`: PyJWT for the assertion, fhirpy for FHIR, fhir.resources validating
//! every resource and Bundle) that knows only its client id, its private key and the base URL
//! gets a token and pages through a Synthea patient's data under consent; a revoked consent
//! refuses its next read. The token endpoint's refusals are OAuth errors; scopes, disabling and
//! unsupported parameters are enforced; pages stay stable while records arrive.

use std::collections::BTreeSet;
use std::process::Command;

use hie_tests::{synthea_dir, synthea_patient_bundles, urlencode, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SYNTHEA_AA: &str = "http://hospital.smarthealthit.org";
const EHR_ORG: &str = "org-ehr";

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ehr_client.py")
}

/// Run `tests/ehr_client.py` with `args`; its stdout (it must succeed).
fn ehr_client(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("python3 (tests/prereqs.sh installs fhirpy, PyJWT and fhir.resources)");
    assert!(
        out.status.success(),
        "ehr_client.py {:?} failed: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A client key pair made by the client's side: (key file, kid, public JWKS).
struct ClientKey {
    _dir: tempdir::Dir,
    pem: String,
    kid: String,
    jwks: Value,
    alg: &'static str,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn keygen(alg: &'static str) -> ClientKey {
    let dir = std::env::temp_dir().join(format!("hie-ehr-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let out: Value = serde_json::from_str(&ehr_client(&[
        "keygen",
        "--alg",
        alg,
        "--dir",
        dir.to_str().unwrap(),
    ]))
    .unwrap();
    ClientKey {
        pem: dir.join("private.pem").to_str().unwrap().to_string(),
        _dir: tempdir::Dir(dir),
        kid: out["kid"].as_str().unwrap().to_string(),
        jwks: out["jwks"].clone(),
        alg,
    }
}

async fn put_client(app: &TestApp, id: &str, token: &str, body: &Value) -> StatusCode {
    app.http
        .put(format!("{}/v1/clients/{id}", app.query))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// A Synthea patient ingested (with the shared hospital and practitioner data): (bundle, mrn,
/// position).
async fn synthea_patient(app: &TestApp, index: usize) -> (Value, String, String) {
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
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(&synthea_patient_bundles()[index]).unwrap()).unwrap();
    let mrn = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .and_then(|p| {
            p["identifier"]
                .as_array()?
                .iter()
                .find(|i| i["system"] == SYNTHEA_AA)
        })
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let pos = app.post_bundle_ok("synthea", &key, &bundle).await;
    (bundle, mrn, pos)
}

fn ids(records: &Value, resource_type: Option<&str>) -> BTreeSet<String> {
    records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| resource_type.is_none_or(|t| r["resourceType"] == t))
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// The access log entries of `user` for `patient`, once `done` holds for them (or 10 s).
async fn access_log(
    app: &TestApp,
    patient: &str,
    user: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body: Value = app
            .get(
                &format!("/v1/patients/{patient}/access-log"),
                &app.admin(),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        let entries: Vec<Value> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["user"] == user)
            .cloned()
            .collect();
        if done(&entries) || std::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The issue's "done when": only a client id, a private key and the base URL → a token → every
/// page of a patient's data under consent (checked by an independent validator) → the consent
/// is revoked → the next read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ehr_client_with_only_its_key_pages_through_a_patient_under_consent() {
    let app = TestApp::spawn().await;
    let (bundle, mrn, pos) = synthea_patient(&app, 0).await;
    let key = keygen("ES384");
    let registration =
        json!({"organization_id": EHR_ORG, "jwks": key.jwks, "scopes": ["system/*.rs"]});
    assert_eq!(
        put_client(&app, "ehr-es384", &app.admin(), &registration).await,
        StatusCode::CREATED
    );
    let granted = app.consent(SYNTHEA_AA, &mrn, EHR_ORG, "grant").await;
    let id = app.patient_id(SYNTHEA_AA, &mrn, Some(&granted)).await;
    // What a clinician of the same organization reads through /v1, to compare with.
    let nurse = app.user_token("rn-ehr", EHR_ORG, &["nurse"]);
    let v1: Value = app
        .get(&format!("/v1/patients/{id}/records"), &nurse, Some(&pos))
        .await
        .json()
        .await
        .unwrap();
    let records = &v1["records"];
    // The Observation code the patient's Observations carry most often.
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for r in records.as_array().unwrap() {
        if r["resourceType"] == "Observation" {
            let c = &r["code"]["coding"][0];
            let key = format!(
                "{}|{}",
                c["system"].as_str().unwrap(),
                c["code"].as_str().unwrap()
            );
            *codes.entry(key).or_default() += 1;
        }
    }
    let code = codes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(c, _)| c.clone())
        .unwrap();
    let coded: BTreeSet<String> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resourceType"] == "Observation"
                && r["code"]["coding"].as_array().unwrap().iter().any(|c| {
                    format!(
                        "{}|{}",
                        c["system"].as_str().unwrap_or_default(),
                        c["code"].as_str().unwrap_or_default()
                    ) == code
                })
        })
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();

    let count = 10;
    let out: Value = serde_json::from_str(&ehr_client(&[
        "run",
        "--base",
        &app.query,
        "--client-id",
        "ehr-es384",
        "--key",
        &key.pem,
        "--alg",
        key.alg,
        "--kid",
        &key.kid,
        "--identifier",
        &format!("{SYNTHEA_AA}|{mrn}"),
        "--count",
        &count.to_string(),
        "--code",
        &code,
    ]))
    .unwrap();
    assert_eq!(out["patient"], id.as_str());
    assert_eq!(out["scope"], "system/*.rs");

    // $everything, page by page: the Patient and every record, each once.
    let keys: Vec<String> = out["everything"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(unique.len(), keys.len(), "an entry shown twice");
    let mut expected = ids(records, None);
    expected.insert(format!("Patient/{id}"));
    assert_eq!(unique, expected);
    assert_eq!(keys[0], format!("Patient/{id}"));
    let total = expected.len();
    assert_eq!(
        records.as_array().unwrap().len(),
        bundle["entry"].as_array().unwrap().len() - 4
    );
    assert_eq!(out["everything"]["total"], total);
    assert_eq!(out["everything"]["pages"], total.div_ceil(count));
    // The Observation search, paged, and its code filter.
    let observations: BTreeSet<String> = out["observations"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("Observation/{}", i.as_str().unwrap()))
        .collect();
    assert_eq!(observations, ids(records, Some("Observation")));
    let got_coded: BTreeSet<String> = out["coded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert!(!coded.is_empty());
    assert_eq!(got_coded, coded);

    // The patient revokes consent: the client's next read (the first page's next link, with
    // the same token) is refused — and it may not break the glass.
    let revoked = app.consent(SYNTHEA_AA, &mrn, EHR_ORG, "revoke").await;
    let r = app
        .get(
            &format!("/v1/patients/{id}/records"),
            &nurse,
            Some(&revoked),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let next = out["everything"]["first_next"].as_str().unwrap();
    let token = out["token"].as_str().unwrap();
    let refused: Value = serde_json::from_str(&ehr_client(&[
        "get", "--base", &app.query, "--token", token, "--url", next,
    ]))
    .unwrap();
    assert_eq!(refused["status"], "forbidden", "{refused}");
    let issue = &refused["body"]["issue"][0];
    assert_eq!(issue["details"]["coding"][0]["code"], "consent_required");
    assert_eq!(issue["extension"][0]["valueBoolean"], false);

    // Audited with the client as the actor, role system, its organization.
    let entries = access_log(&app, &id, "ehr-es384", |e| {
        e.iter().any(|e| e["outcome"] == "refused:consent_required")
    })
    .await;
    assert!(entries
        .iter()
        .all(|e| e["role"] == "system" && e["organization"] == EHR_ORG));
    let everything_pages = entries
        .iter()
        .filter(|e| e["action"] == "fhir:Patient/$everything" && e["basis"] == "consent")
        .count();
    assert_eq!(everything_pages, total.div_ceil(count));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "fhir:Patient/$everything"
            && e["outcome"] == "refused:consent_required"));
    eprintln!(
        "EHR client: {total} resources of $everything in {} pages, {} Observations, {} with code {code}",
        out["everything"]["pages"],
        observations.len(),
        coded.len()
    );
}

/// Every refusal of the token endpoint is an OAuth error; a token reads only within its
/// scopes, never Break-the-Glass, never outside /fhir; disabling the client stops it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_and_the_fhir_api_refuse_what_a_client_may_not_do() {
    let app = TestApp::spawn().await;
    let (_, mrn, pos) = synthea_patient(&app, 1).await;
    let id = app.patient_id(SYNTHEA_AA, &mrn, Some(&pos)).await;
    let key = keygen("RS384");
    let client = "ehr-rs384";
    let registration = |active: bool| {
        json!({"organization_id": EHR_ORG, "jwks": key.jwks,
               "scopes": ["system/Observation.rs"], "active": active})
    };
    // Only the HIE operator's admins register clients; the registration is checked.
    let other_admin = app.user_token("admin-ehr", EHR_ORG, &["admin"]);
    assert_eq!(
        put_client(&app, client, &other_admin, &registration(true)).await,
        StatusCode::FORBIDDEN
    );
    for bad in [
        json!({"organization_id": EHR_ORG, "jwks": {"keys": []}, "scopes": ["system/*.rs"]}),
        json!({"organization_id": EHR_ORG, "jwks": key.jwks, "scopes": ["user/*.rs"]}),
        json!({"organization_id": "", "jwks": key.jwks, "scopes": ["system/*.rs"]}),
    ] {
        assert_eq!(
            put_client(&app, client, &app.admin(), &bad).await,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        put_client(&app, client, &app.admin(), &registration(true)).await,
        StatusCode::CREATED
    );

    let config: Value = app
        .http
        .get(format!("{}/.well-known/smart-configuration", app.query))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token_url = config["token_endpoint"].as_str().unwrap().to_string();
    assert_eq!(token_url, format!("{}/oauth/token", app.query));
    let assertion = |extra: &[&str]| {
        let mut args = vec![
            "assertion",
            "--key",
            &key.pem,
            "--alg",
            key.alg,
            "--kid",
            &key.kid,
            "--client-id",
            client,
            "--aud",
            &token_url,
        ];
        args.extend_from_slice(extra);
        ehr_client(&args).trim().to_string()
    };
    let post = |form: Form| {
        let http = app.http.clone();
        let url = token_url.clone();
        async move {
            let body: Vec<String> = form
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect();
            let r = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.join("&"))
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let form = |assertion: String, scope: &str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", assertion),
            ("scope", scope.to_string()),
        ]
    };

    // Granted what the registration covers of what is asked.
    let good = assertion(&[]);
    let (status, body) = post(form(
        good.clone(),
        "system/Observation.rs system/Condition.rs",
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "system/Observation.rs");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    let token = body["access_token"].as_str().unwrap().to_string();

    // Refusals, each a clear OAuth error.
    let other = keygen("RS384");
    let forged = ehr_client(&[
        "assertion",
        "--key",
        &other.pem,
        "--alg",
        "RS384",
        "--kid",
        &key.kid,
        "--client-id",
        client,
        "--aud",
        &token_url,
    ])
    .trim()
    .to_string();
    let stranger = ehr_client(&[
        "assertion",
        "--key",
        &key.pem,
        "--alg",
        "RS384",
        "--kid",
        &key.kid,
        "--client-id",
        "nobody",
        "--aud",
        &token_url,
    ])
    .trim()
    .to_string();
    let cases: Vec<(&str, Form, StatusCode, &str)> = vec![
        (
            "replayed jti",
            form(good, "system/Observation.rs"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "exp 10 minutes ahead",
            form(assertion(&["--exp-in", "600"]), "system/Observation.rs"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "expired",
            form(assertion(&["--exp-in", "-120"]), "system/Observation.rs"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "another audience",
            form(
                ehr_client(&[
                    "assertion",
                    "--key",
                    &key.pem,
                    "--alg",
                    "RS384",
                    "--kid",
                    &key.kid,
                    "--client-id",
                    client,
                    "--aud",
                    "https://elsewhere.example/token",
                ])
                .trim()
                .to_string(),
                "system/Observation.rs",
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "sub is not the client",
            form(assertion(&["--sub", "someone"]), "system/Observation.rs"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "signed by another key",
            form(forged, "system/Observation.rs"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "unknown client",
            form(stranger, "system/Observation.rs"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "a scope not allowed",
            form(assertion(&[]), "system/Encounter.rs"),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "no scope",
            form(assertion(&[]), ""),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "another grant type",
            {
                let mut f = form(assertion(&[]), "system/Observation.rs");
                f[0].1 = "password".into();
                f
            },
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "no assertion",
            {
                let mut f = form(String::new(), "system/Observation.rs");
                f.remove(2);
                f
            },
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (what, form, status, error) in cases {
        let (got, body) = post(form).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{what}: {body}"
        );
        assert!(body["error_description"].is_string(), "{what}");
    }

    // The token reads Observations only, as its organization: no consent here, so refused,
    // and Break-the-Glass is never offered to a client.
    let get = |path: String| fhir_get(&app, path, &token);
    let (status, body) = get(format!("/fhir/Observation?patient={id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["issue"][0]["details"]["coding"][0]["code"],
        "consent_required"
    );
    assert_eq!(body["issue"][0]["extension"][0]["valueBoolean"], false);
    for path in [
        format!("/fhir/Condition?patient={id}"),
        format!("/fhir/Patient/{id}"),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            body["issue"][0]["details"]["coding"][0]["code"], "insufficient_scope",
            "{path}"
        );
    }
    let (status, body) = get(format!("/fhir/Observation?patient={id}&value-quantity=5")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["issue"][0]["code"], "not-supported");
    assert_eq!(
        body["issue"][0]["details"]["coding"][0]["code"],
        "unsupported_parameter"
    );
    let r = app
        .get(&format!("/v1/patients/{id}/records"), &token, None)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a client token is for /fhir only"
    );
    let r = app
        .post_query(
            &format!("/v1/patients/{id}/break-glass"),
            &token,
            &json!({"reason": "r", "attest": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Under a grant it reads; disabled, the same token is refused at once, and no new one.
    let granted = app.consent(SYNTHEA_AA, &mrn, EHR_ORG, "grant").await;
    app.patient_id(SYNTHEA_AA, &mrn, Some(&granted)).await;
    let r = app
        .get(
            &format!("/fhir/Observation?patient={id}"),
            &token,
            Some(&granted),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // $everything shows only the types its scopes allow: Observations, not even the Patient.
    let (status, everything) = fhir_get(
        &app,
        format!("/fhir/Patient/{id}/$everything?_count=1000"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let types: BTreeSet<&str> = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(types, BTreeSet::from(["Observation"]));
    assert_eq!(
        put_client(&app, client, &app.admin(), &registration(false)).await,
        StatusCode::OK
    );
    let (status, body) = get(format!("/fhir/Observation?patient={id}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = post(form(assertion(&[]), "system/Observation.rs")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

/// Paging is stable while records arrive: a search started before new records came shows
/// exactly what it had at its first page, each once, with a constant total; the next search
/// shows the new ones. Filters match as FHIR defines them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_pages_are_stable_while_records_arrive_and_filters_match() {
    let app = TestApp::spawn().await;
    let (bundle, mrn, pos) = synthea_patient(&app, 0).await;
    let granted = app.consent(SYNTHEA_AA, &mrn, "org-reader", "grant").await;
    let id = app.patient_id(SYNTHEA_AA, &mrn, Some(&granted)).await;
    let nurse = app.user_token("rn-pages", "org-reader", &["nurse"]);
    let v1: Value = app
        .get(
            &format!("/v1/patients/{id}/records?type=Observation"),
            &nurse,
            Some(&pos),
        )
        .await
        .json()
        .await
        .unwrap();
    let before = ids(&v1["records"], None);

    let first = app
        .get(
            &format!("/fhir/Observation?patient={id}&_count=3"),
            &nurse,
            None,
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(first["total"], before.len());
    let first_served = first["meta"]["lastUpdated"].clone();
    // New Observations for the patient arrive while the client pages.
    let patient = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap()
        .clone();
    let mut entries = vec![patient.clone()];
    for n in 0..5 {
        entries.push(json!({"fullUrl": format!("urn:uuid:00000000-0000-4000-8000-00000000000{n}"),
            "resource": {"resourceType": "Observation", "id": format!("late-{n}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": patient["fullUrl"]},
            "effectiveDateTime": "2031-01-01T00:00:00Z"}}));
    }
    let key_body: Value = app
        .http
        .put(format!("{}/v1/sources/late-lab", app.ingest))
        .bearer_auth(app.admin())
        .json(
            &json!({"name": "Late lab", "organization_id": "org-lab", "feed": "realtime",
            "assigning_authority": SYNTHEA_AA, "data_elements": ["Observation"], "part2": false}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let late = app
        .post_bundle_ok(
            "late-lab",
            key_body["api_key"].as_str().unwrap(),
            &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        )
        .await;
    app.patient_id(SYNTHEA_AA, &mrn, Some(&late)).await;

    let mut seen = Vec::new();
    let mut page = first;
    loop {
        assert_eq!(page["total"], before.len(), "the total moved while paging");
        for e in page["entry"].as_array().unwrap() {
            seen.push(format!(
                "Observation/{}",
                e["resource"]["id"].as_str().unwrap()
            ));
        }
        let Some(next) = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        else {
            break;
        };
        let url = next["url"].as_str().unwrap().to_string();
        page = fhir_get(&app, url, &nurse).await.1;
    }
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen_set.len(), seen.len(), "an Observation shown twice");
    assert_eq!(seen_set, before);
    // A new search sees the late ones; _lastUpdated and date find exactly them.
    let (_, fresh) = fhir_get(
        &app,
        format!("/fhir/Observation?patient={id}&_count=1000"),
        &nurse,
    )
    .await;
    assert_eq!(fresh["total"], before.len() + 5);
    for query in [
        "date=ge2031-01-01",
        "date=2031",
        "code=http://loinc.org|8867-4&date=gt2030-12-31T23:59",
    ] {
        let (status, found) = fhir_get(
            &app,
            format!("/fhir/Observation?patient={id}&{query}"),
            &nurse,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{query}");
        let found: BTreeSet<String> = found["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            found,
            (0..5).map(|n| format!("late-{n}")).collect(),
            "{query}"
        );
    }
    // The first page was served after the first records were received and before the late ones.
    let between = first_served.as_str().unwrap();
    let (_, updated) = fhir_get(
        &app,
        format!(
            "/fhir/Observation?patient={id}&_lastUpdated=gt{}&_count=1000",
            urlencode(between)
        ),
        &nurse,
    )
    .await;
    let late_ids: BTreeSet<String> = updated["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(late_ids, (0..5).map(|n| format!("late-{n}")).collect());
    let (_, none) = fhir_get(
        &app,
        format!("/fhir/Observation?patient={id}&_lastUpdated=lt2000-01-01"),
        &nurse,
    )
    .await;
    assert_eq!(none["total"], 0);
    // Categories and Encounter dates, against the same records read through /v1.
    let (_, vitals) = fhir_get(
        &app,
        format!("/fhir/Observation?patient={id}&category=vital-signs&_count=1000"),
        &nurse,
    )
    .await;
    let expected_vitals = v1["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["category"].to_string().contains("\"vital-signs\""))
        .count();
    assert!(expected_vitals > 0);
    assert_eq!(vitals["total"], expected_vitals);
    let (status, bad) = fhir_get(
        &app,
        format!("/fhir/Encounter?patient={id}&date=yesterday"),
        &nurse,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad["issue"][0]["details"]["coding"][0]["code"],
        "invalid_parameter"
    );
}

/// A token request's form fields.
type Form = Vec<(&'static str, String)>;

/// GET a path or an absolute URL (a `next` link) of the query API: status and FHIR body.
async fn fhir_get(app: &TestApp, path_or_url: String, token: &str) -> (StatusCode, Value) {
    let url = if path_or_url.starts_with("http") {
        path_or_url
    } else {
        format!("{}{path_or_url}", app.query)
    };
    let r = app.http.get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/fhir+json"),
        "{content_type}"
    );
    (status, r.json().await.unwrap())
}
