use hie_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.77";

async fn records_status(app: &TestApp, id: &str, org: &str, position: &str) -> (StatusCode, Value) {
    let token = app.token(org, &["physician"]);
    let r = app
        .get(
            &format!("/v1/patients/{id}/records"),
            &token,
            Some(position),
        )
        .await;
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_the_consent_decision() {
    let app = TestApp::spawn().await;
    let key = app.register_source("mercy", "org-mercy", AA).await;
    let pos = app
        .post_bundle_ok(
            "mercy",
            &key,
            &crate::bundle(AA, "C1", "p", &[("o1", "2024-01-01T00:00:00Z", 1.0)]),
        )
        .await;
    let id = app.patient_id(AA, "C1", Some(&pos)).await;

    // No decision: consent required, BTG possible for a physician.
    let (status, body) = records_status(&app, &id, "org-a", &pos).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "consent_required");
    assert_eq!(body["break_glass_allowed"], true);
    assert!(body.get("records").is_none());

    // Grant for org-a only.
    let p = app.consent(AA, "C1", "org-a", "grant").await;
    let (status, body) = records_status(&app, &id, "org-a", &p).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["basis"], "consent");
    assert_eq!(body["records"].as_array().unwrap().len(), 2);
    assert_eq!(
        records_status(&app, &id, "org-b", &p).await.0,
        StatusCode::FORBIDDEN
    );

    // deny_except_emergency for everyone: org-a keeps its specific grant, org-b may break the glass.
    let p = app.consent(AA, "C1", "*", "deny_except_emergency").await;
    assert_eq!(
        records_status(&app, &id, "org-a", &p).await.0,
        StatusCode::OK
    );
    let (status, body) = records_status(&app, &id, "org-b", &p).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("consent_required"))
    );
    assert_eq!(body["break_glass_allowed"], true);

    // deny for org-b specifically: denied, and never BTG.
    let p = app.consent(AA, "C1", "org-b", "deny").await;
    let (status, body) = records_status(&app, &id, "org-b", &p).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("consent_denied"))
    );
    assert_eq!(body["break_glass_allowed"], false);

    // Revoking org-a's grant hides the data on the very next read carrying the revocation.
    let p = app.consent(AA, "C1", "org-a", "revoke").await;
    let (status, body) = records_status(&app, &id, "org-a", &p).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("consent_required"))
    );

    // The search shows each organization its own status, without clinical data.
    let search: Value = app
        .get(
            &format!(
                "/v1/patients?identifier={}",
                hie_tests::urlencode(&format!("{AA}|C1"))
            ),
            &app.token("org-b", &["nurse"]),
            Some(&p),
        )
        .await
        .json()
        .await
        .unwrap();
    let patient = &search["patients"][0];
    assert_eq!(patient["consent"], "deny");
    assert_eq!(patient["break_glass_allowed"], false);
    assert_eq!(patient["name"], "Alex Testpatient");
    assert_eq!(patient["birth_date"], "1980-02-03");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_future_consents_do_not_grant() {
    let app = TestApp::spawn().await;
    let key = app.register_source("mercy", "org-mercy", AA).await;
    let pos = app
        .post_bundle_ok("mercy", &key, &crate::bundle(AA, "C2", "p", &[]))
        .await;
    let id = app.patient_id(AA, "C2", Some(&pos)).await;
    let p = app
        .consent_with(json!({"patient": {"assigning_authority": AA, "mrn": "C2"}, "organization_id": "org-a",
            "decision": "grant", "method": "electronic", "effective_at": "2020-01-01T00:00:00Z", "expires_at": "2021-01-01T00:00:00Z"}))
        .await;
    assert_eq!(
        records_status(&app, &id, "org-a", &p).await.0,
        StatusCode::FORBIDDEN
    );
    let p = app
        .consent_with(
            json!({"patient": {"assigning_authority": AA, "mrn": "C2"}, "organization_id": "org-a",
            "decision": "grant", "method": "verbal", "effective_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        records_status(&app, &id, "org-a", &p).await.0,
        StatusCode::FORBIDDEN
    );
    let p = app
        .consent_with(
            json!({"patient": {"assigning_authority": AA, "mrn": "C2"}, "organization_id": "org-a",
            "decision": "grant", "method": "written", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        records_status(&app, &id, "org-a", &p).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_valid_token() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(format!("{}/v1/patients?family=x", app.query))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.get("/v1/patients?family=x", "not-a-jwt", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    // A token for another secret is refused too.
    let forged = platform::auth::sign_hs256(
        &platform::auth::Claims {
            sub: "x".into(),
            email: "x@x".into(),
            org: "o".into(),
            roles: vec!["admin".into()],
            exp: u64::MAX / 2,
            iat: None,
        },
        b"wrong-secret",
    );
    assert_eq!(
        app.get("/v1/patients?family=x", &forged, None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Each organization's decisions are kept: one effective next week leaves today's in force, and
/// the patient's organizations' privacy officers read the whole history (audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_history_is_kept_and_evaluated_at_read_time() {
    let app = TestApp::spawn().await;
    let key = app.register_source("hist", "org-h", AA).await;
    let pos = app
        .post_bundle_ok(
            "hist",
            &key,
            &crate::bundle(AA, "H9", "h9", &[("h9-o", "2024-01-01T00:00:00Z", 1.0)]),
        )
        .await;
    let id = app.patient_id(AA, "H9", Some(&pos)).await;
    app.consent(AA, "H9", "org-a", "grant").await;
    // A decision that takes effect later (far enough that the test never reaches it).
    let next_week = "2099-01-01T00:00:00Z";
    let p = app
        .consent_with(json!({
            "patient": {"assigning_authority": AA, "mrn": "H9"},
            "organization_id": "org-a", "decision": "deny", "method": "written", "part2": false,
            "effective_at": next_week
        }))
        .await;
    // Today's grant is still in force.
    let (status, _) = records_status(&app, &id, "org-a", &p).await;
    assert_eq!(status, StatusCode::OK);

    // The history, for the privacy officer of an organization holding the patient's data.
    let officer = app.token("org-h", &["privacy_officer"]);
    let r = app
        .get(&format!("/v1/patients/{id}/consents"), &officer, Some(&p))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let consents = body["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 2, "{body}");
    assert_eq!(
        (
            consents[0]["decision"].as_str(),
            consents[0]["in_force"].as_bool()
        ),
        (Some("grant"), Some(true))
    );
    assert_eq!(
        (
            consents[1]["decision"].as_str(),
            consents[1]["in_force"].as_bool()
        ),
        (Some("deny"), Some(false))
    );
    assert_eq!(consents[1]["method"], "written");
    assert!(consents[1]["effective_at"].as_str().is_some());
    assert!(consents[0]["recorded_by"].as_str().is_some());
    assert_eq!(body["unresolved"], 0);

    // Not for a privacy officer of an organization without the patient's data, nor a physician.
    for token in [
        app.token("org-z", &["privacy_officer"]),
        app.token("org-h", &["physician"]),
    ] {
        let r = app
            .get(&format!("/v1/patients/{id}/consents"), &token, None)
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    // The read is in the access log.
    let log: Value = app
        .get(&format!("/v1/patients/{id}/access-log"), &officer, None)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["role"] == "privacy_officer" && e["action"] == "consents"),
        "{log}"
    );
}
