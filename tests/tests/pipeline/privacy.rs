//! The privacy rules as tables, through the HTTP API: every role × consent decision × Part 2
//! coverage × Break-the-Glass state, and every route × role.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hie_tests::TestApp;
use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.4242";
const READER: &str = "org-reader";

/// Consent situations, and the decision each leaves in force for the reader's organization.
const DECISIONS: [(&str, Option<&str>); 8] = [
    ("none", None),
    ("grant", Some("grant")),
    ("deny", Some("deny")),
    ("dee", Some("deny_except_emergency")),
    ("revoked", None),
    ("expired", None),
    ("future", None),
    ("specific-over-all", Some("deny")),
];

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Btg {
    None,
    Active,
    Expired,
}

async fn record_consents(app: &TestApp, scenario: &str, mrn: &str, part2: bool) {
    let consent = |org: &str, decision: &str, extra: Value| {
        let mut body = json!({"patient": {"assigning_authority": AA, "mrn": mrn}, "organization_id": org,
            "decision": decision, "method": "written", "part2": part2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let bodies = match scenario {
        "none" => vec![],
        "grant" => vec![consent(READER, "grant", json!({}))],
        "deny" => vec![consent(READER, "deny", json!({}))],
        "dee" => vec![consent(READER, "deny_except_emergency", json!({}))],
        "revoked" => vec![
            consent(READER, "grant", json!({})),
            consent(READER, "revoke", json!({})),
        ],
        "expired" => vec![consent(
            READER,
            "grant",
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
        )],
        "future" => vec![consent(
            READER,
            "grant",
            json!({"effective_at": "2999-01-01T00:00:00Z"}),
        )],
        "specific-over-all" => vec![
            consent("*", "grant", json!({})),
            consent(READER, "deny", json!({})),
        ],
        other => panic!("{other}"),
    };
    for b in bodies {
        app.consent_with(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_table_every_role_decision_part2_and_break_glass_state() {
    let app = TestApp::spawn().await;
    let hosp = app
        .register_source_with("hosp", "org-hosp", AA, false)
        .await;
    let sud = app
        .register_source_with("hosp-sud", "org-hosp", AA, true)
        .await;

    // One patient per (decision, consent covers Part 2): an Observation from the hospital and a
    // Condition from its Part 2 program.
    let mut patients = Vec::new();
    let mut last = String::new();
    for (scenario, _) in DECISIONS {
        for covers_part2 in [false, true] {
            let mrn = format!("{scenario}-{covers_part2}");
            app.post_bundle_ok(
                "hosp",
                &hosp,
                &crate::bundle(
                    AA,
                    &mrn,
                    &format!("p-{mrn}"),
                    &[(&format!("o-{mrn}"), "2024-01-01T00:00:00Z", 1.0)],
                ),
            )
            .await;
            let ndjson = format!(
                "{}\n{}\n",
                json!({"resourceType": "Patient", "id": format!("s-{mrn}"), "identifier": [{"system": AA, "value": mrn}]}),
                json!({"resourceType": "Condition", "id": format!("c-{mrn}"), "subject": {"reference": format!("Patient/s-{mrn}")}})
            );
            let r = app
                .post_fhir("hosp-sud", &sud, "application/fhir+ndjson", ndjson)
                .await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            last = r.json::<Value>().await.unwrap()["position"]
                .as_str()
                .unwrap()
                .to_string();
            record_consents(&app, scenario, &mrn, covers_part2).await;
            patients.push((scenario, covers_part2, mrn));
        }
    }
    let mut ids = BTreeMap::new();
    for (_, _, mrn) in &patients {
        ids.insert(mrn.clone(), app.patient_id(AA, mrn, Some(&last)).await);
    }

    // Break the glass: `Active` users for 24 h, `Expired` users for one second.
    let mut btg_granted = HashMap::new();
    for role in Role::ALL {
        for btg in [Btg::Active, Btg::Expired] {
            let token = app.user_token(&format!("{role}-{btg:?}"), READER, &[role.as_str()]);
            for (scenario, covers_part2, mrn) in &patients {
                let mut body = json!({"reason": "unconscious patient in the ED", "attest": true});
                if btg == Btg::Expired {
                    body["duration_seconds"] = 1.into();
                }
                let r = app
                    .post_query(
                        &format!("/v1/patients/{}/break-glass", ids[mrn]),
                        &token,
                        &body,
                    )
                    .await;
                let decision = DECISIONS.iter().find(|d| d.0 == *scenario).unwrap().1;
                let (status, error) = if !role.may_break_glass() {
                    (StatusCode::FORBIDDEN, Some("role_not_eligible"))
                } else if decision == Some("deny") {
                    (StatusCode::FORBIDDEN, Some("consent_denied"))
                } else {
                    (StatusCode::CREATED, None)
                };
                let got_status = r.status();
                let got: Value = r.json().await.unwrap();
                assert_eq!(
                    (got_status, got["error"].as_str()),
                    (status, error),
                    "BTG {role} {scenario} part2={covers_part2}"
                );
                btg_granted.insert((role, btg, mrn.clone()), status == StatusCode::CREATED);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut combinations = 0;
    for role in Role::ALL {
        for btg in [Btg::None, Btg::Active, Btg::Expired] {
            let token = app.user_token(&format!("{role}-{btg:?}"), READER, &[role.as_str()]);
            for (scenario, covers_part2, mrn) in &patients {
                combinations += 1;
                let decision = DECISIONS.iter().find(|d| d.0 == *scenario).unwrap().1;
                let r = app
                    .get(&format!("/v1/patients/{}/records", ids[mrn]), &token, None)
                    .await;
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                let case = format!("{role} btg={btg:?} {scenario} part2={covers_part2}: {body}");
                let has_btg = btg == Btg::Active && btg_granted[&(role, btg, mrn.clone())];
                if !role.reads_clinical_data() {
                    assert_eq!(
                        (status, body["error"].as_str()),
                        (StatusCode::FORBIDDEN, Some("role_not_permitted")),
                        "{case}"
                    );
                    continue;
                }
                match decision {
                    Some("grant") => {
                        assert_eq!(status, StatusCode::OK, "{case}");
                        assert_eq!(body["basis"], "consent", "{case}");
                        let types = types(&body);
                        let expected = if *covers_part2 {
                            vec!["Condition", "Observation", "Patient", "Patient"]
                        } else {
                            vec!["Observation", "Patient"]
                        };
                        assert_eq!(types, expected, "{case}");
                    }
                    Some("deny") => {
                        assert_eq!(
                            (status, body["error"].as_str()),
                            (StatusCode::FORBIDDEN, Some("consent_denied")),
                            "{case}"
                        );
                        assert_eq!(body["break_glass_allowed"], false, "{case}");
                    }
                    _ if has_btg => {
                        assert_eq!(status, StatusCode::OK, "{case}");
                        assert_eq!(body["basis"], "break_glass", "{case}");
                        // Emergency access never reaches Part 2 data.
                        assert_eq!(types(&body), vec!["Observation", "Patient"], "{case}");
                    }
                    _ => {
                        assert_eq!(
                            (status, body["error"].as_str()),
                            (StatusCode::FORBIDDEN, Some("consent_required")),
                            "{case}"
                        );
                        assert_eq!(
                            body["break_glass_allowed"],
                            role.may_break_glass(),
                            "{case}"
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "decision table: {combinations} read combinations and {} break-the-glass requests",
        btg_granted.len()
    );
    assert_eq!(combinations, Role::ALL.len() * 3 * 16);

    // Every read and every break-the-glass request left an access-log entry.
    let admin = app.admin();
    let id = &ids["dee-false"];
    let roles = Role::ALL.len();
    let expected = roles * 3 + roles * 2 * 2; // reads + (BTG request + its grant entry or refusal)
    let (mut entries, mut searches) = (0, 0);
    for _ in 0..100 {
        let body: Value = app
            .get(&format!("/v1/patients/{id}/access-log"), &admin, None)
            .await
            .json()
            .await
            .unwrap();
        let all = body["entries"].as_array().unwrap();
        searches = all.iter().filter(|e| e["basis"] == "search").count();
        entries = all.len() - searches;
        if entries >= expected - roles * 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Eligible roles' BTG requests leave one entry each (the grant); ineligible ones a refusal.
    assert_eq!(entries, roles * 3 + roles * 2, "access log of one patient");
    // And the one search (by identifier) that showed this patient.
    assert_eq!(searches, 1, "searches that showed the patient");

    // The privacy officer's report lists the grants of the organization.
    let officer = app.user_token("po", READER, &["privacy_officer"]);
    let report: Value = app
        .get(
            "/v1/reports/break-glass?since=2020-01-01T00:00:00Z",
            &officer,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let granted = btg_granted.values().filter(|g| **g).count();
    assert_eq!(report["entries"].as_array().unwrap().len(), granted);
    let other = app.user_token("po2", "org-elsewhere", &["privacy_officer"]);
    let report: Value = app
        .get("/v1/reports/break-glass", &other, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["entries"], json!([]));
}

fn types(body: &Value) -> Vec<&str> {
    let mut t: Vec<&str> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resourceType"].as_str().unwrap())
        .collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_anonymous_callers_and_the_wrong_roles() {
    let app = TestApp::spawn().await;
    let key = app.register_source("hosp", "org-hosp", AA).await;
    let p = app
        .post_bundle_ok("hosp", &key, &crate::bundle(AA, "M1", "p", &[]))
        .await;
    let id = app.patient_id(AA, "M1", Some(&p)).await;

    let routes: Vec<(&str, String, &str)> = vec![
        (
            "GET",
            format!("{}/v1/patients?family=Testpatient&given=Alex", app.query),
            "all",
        ),
        (
            "GET",
            format!("{}/v1/patients/{id}/records", app.query),
            "clinical",
        ),
        (
            "POST",
            format!("{}/v1/patients/{id}/break-glass", app.query),
            "btg",
        ),
        (
            "GET",
            format!("{}/v1/patients/{id}/access-log", app.query),
            "privacy",
        ),
        (
            "GET",
            format!("{}/v1/reports/break-glass", app.query),
            "privacy",
        ),
        ("GET", format!("{}/v1/sources", app.query), "all"),
        (
            "PUT",
            format!("{}/v1/sources/new-source", app.ingest),
            "operator",
        ),
        ("POST", format!("{}/v1/consents", app.ingest), "all"),
        ("GET", format!("{}/v1/users", app.query), "admin"),
        ("PUT", format!("{}/v1/users/new-user", app.query), "admin"),
    ];
    for (method, url, _) in &routes {
        let r = app
            .http
            .request(method.parse().unwrap(), url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {url} without a token"
        );
    }
    let mut checked = 0;
    for role in Role::ALL {
        // The privacy officer's organization holds this patient's data.
        let token = app.user_token(&format!("m-{role}"), "org-hosp", &[role.as_str()]);
        for (method, url, who) in &routes {
            let body = match (
                *method,
                url.contains("/v1/consents"),
                url.contains("break-glass") && *method == "POST",
            ) {
                (_, true, _) => {
                    json!({"patient": {"assigning_authority": AA, "mrn": "other-patient"}, "organization_id": "org-hosp", "decision": "grant", "method": "written"})
                }
                (_, _, true) => json!({"reason": "emergency", "attest": true}),
                ("PUT", _, _) if url.contains("/v1/users/") => {
                    json!({"email": "new@o.example", "organization_id": "org-hosp", "roles": ["nurse"]})
                }
                ("PUT", _, _) => {
                    json!({"name": "n", "organization_id": "o", "feed": "batch", "assigning_authority": "a"})
                }
                _ => json!({}),
            };
            let r = app
                .http
                .request(method.parse().unwrap(), url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let allowed = match *who {
                "all" => true,
                "clinical" => false, // no consent yet: 403 for everyone, checked by the decision table
                "btg" => role.may_break_glass(),
                "privacy" => matches!(role, Role::PrivacyOfficer | Role::Admin),
                "admin" => role == Role::Admin,
                // Only the HIE operator's admins: none of a participant organization's roles.
                "operator" => false,
                _ => unreachable!(),
            };
            let status = r.status();
            if allowed {
                assert!(status.is_success(), "{role} {method} {url}: {status}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role} {method} {url}");
                let body: Value = r.json().await.unwrap();
                assert!(
                    body["error"].is_string(),
                    "{role} {method} {url}: 403 without an error code"
                );
            }
            checked += 1;
        }
    }
    eprintln!(
        "endpoint matrix: {} routes x {} roles = {checked} checks",
        routes.len(),
        Role::ALL.len()
    );
}

/// Fail closed: when the audit event cannot be made durable, the data is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_audit_no_data() {
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
    let r = app
        .get(&format!("/v1/patients/{id}/records"), &token, Some(&c))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    app.broker.kill();
    let r = app
        .get(&format!("/v1/patients/{id}/records"), &token, None)
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "audit_unavailable");
    assert!(body.get("records").is_none());
}

/// Accounts: a token is honoured only for an active account whose organization and roles match;
/// disabling an account stops its tokens at once; an email belongs to one account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_need_a_matching_active_account() {
    let app = TestApp::spawn().await;
    let key = app.register_source("hosp", "org-hosp", AA).await;
    let p = app
        .post_bundle_ok("hosp", &key, &crate::bundle(AA, "A1", "p", &[]))
        .await;
    let c = app.consent(AA, "A1", READER, "grant").await;
    let id = app.patient_id(AA, "A1", Some(&p)).await;
    let records = format!("/v1/patients/{id}/records");

    let token = app.user_token("dr-a", READER, &["physician"]);
    assert_eq!(
        app.get(&records, &token, Some(&c)).await.status(),
        StatusCode::OK
    );
    // Ingest honours the same accounts: a consent captured by this user right after the account
    // was created through the query API.
    let consent = json!({"patient": {"assigning_authority": AA, "mrn": "A1"}, "organization_id": READER,
        "decision": "grant", "method": "verbal"});
    let post_consent = |t: String| {
        let (http, url, body) = (
            app.http.clone(),
            format!("{}/v1/consents", app.ingest),
            consent.clone(),
        );
        async move {
            http.post(url)
                .bearer_auth(t)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post_consent(token.clone()).await, StatusCode::ACCEPTED);
    let stranger = app.unregistered_token("stranger", READER, &["physician"]);
    assert_eq!(post_consent(stranger).await, StatusCode::UNAUTHORIZED);

    // Same user, another organization or a role the account does not hold: refused.
    for t in [
        app.unregistered_token("dr-a", "org-other", &["physician"]),
        app.unregistered_token("dr-a", READER, &["physician", "admin"]),
        app.unregistered_token("nobody", READER, &["physician"]),
    ] {
        let r = app.get(&records, &t, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    // Disabled: the very next request is refused.
    let disable = json!({"email": "dr-a@org-reader.example", "organization_id": READER, "roles": ["physician"], "active": false});
    assert_eq!(app.put_user_blocking("dr-a", &disable), StatusCode::OK);
    assert_eq!(
        app.get(&records, &token, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(post_consent(token.clone()).await, StatusCode::UNAUTHORIZED);

    // One account per email, whatever its case; only admins manage accounts.
    let same_email =
        json!({"email": "DR-A@Org-Reader.Example", "organization_id": READER, "roles": ["nurse"]});
    assert_eq!(
        app.put_user_blocking("dr-b", &same_email),
        StatusCode::CONFLICT
    );
    let nurse = app.user_token("nurse-a", READER, &["nurse"]);
    let r = app
        .http
        .put(format!("{}/v1/users/x", app.query))
        .bearer_auth(&nurse)
        .json(&same_email)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let list: Value = app
        .get("/v1/users?organization_id=org-reader", &app.admin(), None)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["dr-a", "nurse-a"]);
    assert_eq!(list["users"][0]["active"], false);
}
