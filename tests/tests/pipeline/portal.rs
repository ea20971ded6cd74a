//! The clinician portal (API.md "Portal") in a real browser: headless chromium driven over
//! WebDriver, by the names a person sees. Each screen is checked with axe-core (0 violations) and
//! kept as a screenshot under `target/portal-screens/`.

use std::time::{Duration, Instant};

use base64::Engine;
use hie_tests::browser::Browser;
use hie_tests::{Services, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const AA: &str = "urn:portal-hospital";
const ORG: &str = "org-portal";

fn bundle(mrn: &str) -> Value {
    let doc = base64::engine::general_purpose::STANDARD
        .encode("Discharge summary: recovered well, follow up in two weeks.");
    let subject = json!({"reference": "urn:uuid:p1"});
    let entry = |id: &str, resource: Value| json!({"fullUrl": format!("urn:uuid:{id}"), "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}});
    json!({"resourceType": "Bundle", "type": "batch", "entry": [
        entry("p1", json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": AA, "value": mrn}],
            "name": [{"family": "Portalpatient", "given": ["Alex"]}], "birthDate": "1970-04-05", "gender": "female"})),
        entry("enc1", json!({"resourceType": "Encounter", "id": "enc1", "status": "finished",
            "class": {"code": "EMER"}, "type": [{"text": "Emergency visit"}], "subject": subject, "period": {"start": "2026-11-01T10:00:00Z"}})),
        entry("obs1", json!({"resourceType": "Observation", "id": "obs1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
            "subject": subject, "effectiveDateTime": "2026-11-01T10:30:00Z",
            "valueQuantity": {"value": 5.5, "unit": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.9, "unit": "mmol/L"}, "high": {"value": 7.8, "unit": "mmol/L"}}]})),
        entry("cond1", json!({"resourceType": "Condition", "id": "cond1", "code": {"text": "Asthma"},
            "clinicalStatus": {"coding": [{"code": "active"}]}, "subject": subject, "onsetDateTime": "2019-03-01"})),
        entry("doc1", json!({"resourceType": "DocumentReference", "id": "doc1", "status": "current",
            "type": {"text": "Discharge summary"}, "subject": subject, "date": "2026-11-02T09:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "title": "Discharge summary", "data": doc}}]})),
    ]})
}

/// A later lab result for the same patient, for the live update.
fn later_result(mrn: &str) -> Value {
    json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1", "identifier": [{"system": AA, "value": mrn}],
            "name": [{"family": "Portalpatient", "given": ["Alex"]}], "birthDate": "1970-04-05", "gender": "female"},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:obs2", "resource": {"resourceType": "Observation", "id": "obs2", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
            "subject": {"reference": "urn:uuid:p1"}, "effectiveDateTime": "2026-11-03T08:00:00Z",
            "valueQuantity": {"value": 4.1, "unit": "mmol/L"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]})
}

/// Create an account through the admin API and give it a temporary password; returns it.
async fn account_with_temporary_password(
    app: &TestApp,
    id: &str,
    email: &str,
    org: &str,
    roles: &[&str],
) -> String {
    let r = app
        .http
        .put(format!("{}/v1/users/{id}", app.query))
        .bearer_auth(app.admin())
        .json(&json!({"email": email, "organization_id": org, "roles": roles}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = app
        .post_query(
            &format!("/v1/users/{id}/temporary-password"),
            &app.admin(),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert!(body["expires_at"].as_str().is_some(), "{body}");
    body["temporary_password"].as_str().unwrap().to_string()
}

async fn sign_in(b: &Browser, username: &str, password: &str) {
    b.goto("/portal/").await;
    b.fill("Username", username).await;
    b.fill("Password", password).await;
    b.click("Sign in").await;
}

/// Sign in with a temporary password and set `new` as the password.
async fn first_sign_in(b: &Browser, username: &str, temporary: &str, new: &str) {
    sign_in(b, username, temporary).await;
    assert_eq!(b.path().await, "/portal/set-password");
    b.fill("New password", new).await;
    b.fill("Confirm new password", new).await;
    b.click("Set password").await;
    assert_eq!(b.path().await, "/portal/patients");
}

async fn sign_out(b: &Browser) {
    b.click("Sign out").await;
    b.assert_text("You have signed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_and_a_privacy_officer_use_every_screen_of_the_portal_in_a_browser() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let key = app.register_source("portal-hospital", ORG, AA).await;
    let position = app
        .post_bundle_ok("portal-hospital", &key, &bundle("MRN-P1"))
        .await;
    let patient = app.patient_id(AA, "MRN-P1", Some(&position)).await;
    let dr_temp = account_with_temporary_password(
        &app,
        "dr-portal",
        "dr.portal@portal.example",
        ORG,
        &["physician"],
    )
    .await;
    let po_temp = account_with_temporary_password(
        &app,
        "po-portal",
        "privacy@portal.example",
        ORG,
        &["privacy_officer"],
    )
    .await;
    let admin_temp = account_with_temporary_password(
        &app,
        "admin-portal",
        "admin@portal.example",
        ORG,
        &["admin"],
    )
    .await;

    let b = Browser::start(&app.query, "walk").await;

    // Sign-in, a wrong password, then the temporary password and a new one.
    b.goto("/portal/").await;
    assert_eq!(b.path().await, "/portal/sign-in");
    assert!(b.has_control("Forgot password").await);
    b.screen("sign-in").await;
    sign_in(&b, "dr-portal", "not the password").await;
    b.assert_text("The username or password is not correct")
        .await;
    b.screen("sign-in-refused").await;
    sign_in(&b, "dr-portal", &dr_temp).await;
    assert_eq!(b.path().await, "/portal/set-password");
    b.screen("set-password").await;
    b.fill("New password", "short").await;
    b.fill("Confirm new password", "short").await;
    // The browser itself refuses a password under 12 characters (minlength): the server's
    // policy is checked with one that holds the username.
    b.client.execute("document.querySelectorAll('input[minlength]').forEach(function (i) { i.removeAttribute('minlength'); }); return true;", vec![]).await.unwrap();
    b.click("Set password").await;
    b.assert_text("at least 12 characters").await;
    b.fill("New password", "my dr-portal password").await;
    b.fill("Confirm new password", "my dr-portal password")
        .await;
    b.click("Set password").await;
    b.assert_text("must not contain your username").await;
    b.fill("New password", "Glass-Harbor-Quiet-42").await;
    b.fill("Confirm new password", "Glass-Harbor-Quiet-42")
        .await;
    b.click("Set password").await;
    assert_eq!(b.path().await, "/portal/patients");

    // Patient search, by POST: nothing of the patient in the URL.
    b.screen("patient-search").await;
    b.fill("Family name", "Portalpatient").await;
    b.fill("Given name", "Alex").await;
    b.click("Search").await;
    b.assert_text("1970-04-05").await;
    b.assert_text("No consent decision").await;
    assert!(
        !b.url().await.contains("Portalpatient"),
        "{}",
        b.url().await
    );
    b.screen("search-results").await;

    // The patient page says why the data is withheld and offers Break the Glass.
    b.click("Alex Portalpatient").await;
    assert_eq!(b.path().await, format!("/portal/patients/{patient}"));
    b.assert_text("has not given your organization consent")
        .await;
    b.screen("patient-withheld").await;
    b.click("Break the Glass").await;
    b.assert_text("Terms").await;
    b.screen("break-the-glass").await;
    b.fill("Reason", "Unconscious in the emergency department")
        .await;
    b.field("I attest").await.click().await.unwrap();
    b.click("Confirm").await;
    b.wait_text("Seen by Break-the-Glass", Duration::from_secs(10))
        .await;
    for kind in [
        "Encounters",
        "Labs",
        "Conditions",
        "Medications",
        "Allergies",
        "Immunizations",
        "Procedures",
        "Documents",
    ] {
        b.assert_text(kind).await;
    }
    b.assert_text("Asthma").await;
    b.assert_text("Emergency visit").await;
    b.screen("patient-records-btg").await;

    // A lab result and a document in pop-up windows.
    let main = b.client.window().await.unwrap();
    b.click_in_place("View result: Glucose").await;
    let popup = wait_for_second_window(&b, &main).await;
    b.client.switch_to_window(popup).await.unwrap();
    b.wait_text("5.5 mmol/L", Duration::from_secs(10)).await;
    b.assert_text("Reference range").await;
    b.screen("lab-result-popup").await;
    b.client.close_window().await.unwrap();
    b.client.switch_to_window(main.clone()).await.unwrap();
    b.click_in_place("Open document: Discharge summary").await;
    let popup = wait_for_second_window(&b, &main).await;
    b.client.switch_to_window(popup).await.unwrap();
    b.wait_text("recovered well", Duration::from_secs(10)).await;
    b.screen("document-popup").await;
    b.client.close_window().await.unwrap();
    b.client.switch_to_window(main).await.unwrap();

    // Live: a new result shows on the open page without a reload.
    b.client
        .execute("window.__notReloaded = true; return true;", vec![])
        .await
        .unwrap();
    assert!(!b.text().await.contains("Potassium"));
    app.post_bundle_ok("portal-hospital", &key, &later_result("MRN-P1"))
        .await;
    b.wait_text("Potassium", Duration::from_secs(30)).await;
    let same_page = b
        .client
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, json!(true), "the page was reloaded");
    b.screen("patient-live-update").await;

    // Directory and My account.
    b.click("Directory").await;
    b.assert_text("Source portal-hospital").await;
    b.assert_text("Observation").await;
    b.screen("directory").await;
    b.click("My account").await;
    b.assert_text("dr-portal").await;
    b.assert_text(ORG).await;
    b.assert_text("physician").await;
    b.screen("my-account").await;

    // An error page: a reference and the time, nothing else.
    b.goto("/portal/patients/00000000-0000-0000-0000-000000000000")
        .await;
    b.assert_text("Reference").await;
    b.assert_text("Time").await;
    b.screen("error-page").await;
    sign_out(&b).await;

    // The privacy officer: the patient's access log (the Break-the-Glass reads in it) and the report.
    first_sign_in(&b, "po-portal", &po_temp, "Ledger-Window-Calm-77").await;
    b.fill("Identifier", &format!("{AA}|MRN-P1")).await;
    b.click("Search").await;
    b.click("Alex Portalpatient").await;
    b.assert_text("Your role does not see clinical data").await;
    b.click("Access log").await;
    b.assert_text("break_glass").await;
    b.assert_text("dr-portal").await;
    b.assert_text("portal:records").await;
    // One live update, one audited read: made by the open page, not by a stream left behind.
    assert_eq!(b.text().await.matches("portal:live").count(), 1);
    b.screen("access-log").await;
    b.click("Break-the-Glass report").await;
    b.assert_text("Unconscious in the emergency department")
        .await;
    b.screen("break-the-glass-report").await;
    sign_out(&b).await;

    // The administrator: accounts, a taken e-mail refused, a temporary password issued.
    first_sign_in(&b, "admin-portal", &admin_temp, "Orchard-Lantern-Brisk-19").await;
    b.click("Accounts").await;
    b.assert_text("dr-portal").await;
    b.screen("accounts").await;
    b.fill("Username", "nurse-portal").await;
    b.fill("E-mail", "DR.PORTAL@portal.example").await;
    b.field("nurse").await.click().await.unwrap();
    b.click("Save account").await;
    b.assert_text("already used by another account").await;
    b.screen("accounts-email-taken").await;
    b.fill("E-mail", "nurse@portal.example").await;
    b.click("Save account").await;
    b.assert_text("Account nurse-portal created").await;
    let roles = b
        .client
        .find(fantoccini::Locator::XPath(
            "//tr[td[1][normalize-space(.)='nurse-portal']]/td[4]",
        ))
        .await
        .unwrap();
    assert_eq!(roles.text().await.unwrap(), "nurse");
    b.click("Issue temporary password for nurse-portal").await;
    b.assert_text("Temporary password for nurse-portal").await;
    b.screen("accounts-temporary-password").await;
    // Disabling: the same form, "Active" unticked.
    b.fill("Username", "nurse-portal").await;
    b.fill("E-mail", "nurse@portal.example").await;
    b.field("nurse").await.click().await.unwrap();
    b.field("Active").await.click().await.unwrap();
    b.click("Save account").await;
    b.assert_text("Account nurse-portal saved").await;
    let status = b
        .client
        .find(fantoccini::Locator::XPath(
            "//tr[td[1][normalize-space(.)='nurse-portal']]/td[5]",
        ))
        .await
        .unwrap();
    assert_eq!(status.text().await.unwrap(), "disabled");

    // The consent form: the organization's staff record the patient's decision.
    b.click("Patient search").await;
    b.fill("Identifier", "MRN-P1").await;
    b.click("Search").await;
    b.click("Alex Portalpatient").await;
    b.assert_text("No consent decision").await;
    b.click("Record consent").await;
    b.screen("consent-form").await;
    b.field("Grant").await.click().await.unwrap();
    b.field("Written").await.click().await.unwrap();
    b.click("Record consent").await;
    b.wait_text("Consent given", Duration::from_secs(10)).await;
    sign_out(&b).await;

    let runs = b.axe_runs.load(std::sync::atomic::Ordering::Relaxed);
    b.close().await;
    println!(
        "portal walk: {runs} screens checked by axe-core, 0 violations, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn wait_for_second_window(
    b: &Browser,
    main: &fantoccini::wd::WindowHandle,
) -> fantoccini::wd::WindowHandle {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let windows = b.client.windows().await.unwrap();
        if let Some(w) = windows.into_iter().find(|w| w != main) {
            return w;
        }
        assert!(Instant::now() < deadline, "no pop-up window opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_time_out_forged_forms_are_refused_and_passwords_reset_by_email() {
    let started = Instant::now();
    let mut services = Services::default();
    services.portal.idle_timeout = Duration::from_secs(8);
    let outbox = services.portal.outbox.clone();
    let app = TestApp::spawn_with(services).await;
    let temp = account_with_temporary_password(
        &app,
        "nurse-reset",
        "nurse.reset@portal.example",
        ORG,
        &["nurse"],
    )
    .await;
    let b = Browser::start(&app.query, "sessions").await;

    // The session cookie's flags.
    b.goto("/portal/").await;
    let cookies = b.client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "hie_portal")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");

    // A form whose CSRF token is not the session's is refused, and nothing is done.
    b.fill("Username", "nurse-reset").await;
    b.fill("Password", &temp).await;
    b.client
        .execute(
            "document.querySelector('input[name=csrf]').value = 'forged'; return true;",
            vec![],
        )
        .await
        .unwrap();
    b.click("Sign in").await;
    b.assert_text("not sent from this portal's own page").await;
    b.assert_text("Reference").await;
    b.screen("csrf-refused").await;

    // Forgot password: a single-use link by e-mail (the outbox).
    b.goto("/portal/sign-in").await;
    b.click("Forgot password").await;
    b.screen("forgot-password").await;
    b.fill("Username", "nurse-reset").await;
    b.click("Send reset link").await;
    b.assert_text("If this account exists").await;
    let link = reset_link(&outbox).await;
    assert!(
        link.starts_with(&format!("{}/portal/reset/", app.query)),
        "{link}"
    );
    b.client.goto(&link).await.unwrap();
    b.screen("choose-new-password").await;
    b.fill("New password", "Meadow-Copper-Sleet-58").await;
    b.fill("Confirm new password", "Meadow-Copper-Sleet-58")
        .await;
    b.click("Set password").await;
    b.assert_text("Your password is set").await;
    b.client.goto(&link).await.unwrap();
    b.assert_text("expired or was already used").await;

    // The new password signs in; the session ends after the idle timeout.
    sign_in(&b, "nurse-reset", "Meadow-Copper-Sleet-58").await;
    assert_eq!(b.path().await, "/portal/patients");
    // Left alone, the page itself goes to the sign-in screen once the session has ended.
    b.wait_text(
        "signed out after 8 seconds without activity",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(b.path().await, "/portal/sign-in");
    b.screen("timed-out").await;

    // Failures lock the account for a growing time, even for the right password.
    for _ in 0..3 {
        sign_in(&b, "nurse-reset", "wrong password!").await;
    }
    sign_in(&b, "nurse-reset", "Meadow-Copper-Sleet-58").await;
    b.assert_text("this account is locked").await;
    b.screen("locked").await;

    let runs = b.axe_runs.load(std::sync::atomic::Ordering::Relaxed);
    b.close().await;
    println!(
        "portal sessions: {runs} screens checked by axe-core, 0 violations, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The reset link in the newest e-mail of the outbox.
async fn reset_link(outbox: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Undo quoted-printable's soft line breaks, should the mail use it.
        let mails: Vec<String> = std::fs::read_dir(outbox)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|m| {
                m.replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=")
            })
            .collect();
        if let Some(link) = mails
            .iter()
            .flat_map(|m| m.lines())
            .find(|l| l.contains("/portal/reset/"))
        {
            return link.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no reset e-mail in {}",
            outbox.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_of_the_accounts_organization_issues_its_temporary_password() {
    let app = TestApp::spawn().await;
    app.ensure_account("clerk-a", "org-a", &["front_desk"]);
    let issue = |token: String, user: &'static str| {
        let app = &app;
        async move {
            app.post_query(
                &format!("/v1/users/{user}/temporary-password"),
                &token,
                &json!({}),
            )
            .await
            .status()
        }
    };
    let other_admin = app.token("org-b", &["admin"]);
    assert_eq!(issue(other_admin, "clerk-a").await, StatusCode::FORBIDDEN);
    let physician = app.token("org-a", &["physician"]);
    assert_eq!(issue(physician, "clerk-a").await, StatusCode::FORBIDDEN);
    let admin = app.token("org-a", &["admin"]);
    assert_eq!(
        issue(admin.clone(), "nobody-here").await,
        StatusCode::NOT_FOUND
    );
    let r = app
        .post_query("/v1/users/clerk-a/temporary-password", &admin, &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["temporary_password"].as_str().unwrap().len(), 16);
}

/// Every `CredentialRecorded` on `hie.credentials`, with its raw bytes, read until `expected`.
async fn credential_events(
    app: &TestApp,
    expected: usize,
) -> Vec<(schemas::CredentialRecorded, Vec<u8>)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", app.broker.address())
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(schemas::topics::CREDENTIALS.name, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while out.len() < expected {
        let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("credential event not on the topic")
            .unwrap();
        let bytes = m.payload().unwrap().to_vec();
        out.push((schemas::decode(&bytes).unwrap(), bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_lock_the_account_and_the_log_records_them_without_a_password_or_hash() {
    let app = TestApp::spawn().await;
    let temp = account_with_temporary_password(
        &app,
        "clerk-lock",
        "clerk@lock.example",
        ORG,
        &["front_desk"],
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A session and its CSRF token, as a browser gets them from the sign-in page.
    let page = http
        .get(format!("{}/portal/sign-in", app.query))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let attempt = |password: &str| {
        let form = format!(
            "csrf={}&username=clerk-lock&password={}",
            hie_tests::urlencode(&csrf),
            hie_tests::urlencode(password)
        );
        http.post(format!("{}/portal/sign-in", app.query))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    assert_eq!(
        attempt("wrong-1").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt("wrong-2").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt("wrong-3").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Locked now: the right password is refused too.
    assert_eq!(
        attempt(&temp).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // issued, 3 failures, locked, the refusal while locked.
    let events = credential_events(&app, 6).await;
    let actions: Vec<&str> = events.iter().map(|(e, _)| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "temporary_password_issued",
            "sign_in_failed",
            "sign_in_failed",
            "sign_in_failed",
            "locked",
            "sign_in_failed"
        ]
    );
    assert_eq!(events[3].0.detail, "failures=3 locked_seconds=15");
    assert_eq!(events[5].0.detail, "locked");
    for (e, bytes) in &events {
        assert_eq!(e.user_id, "clerk-lock");
        let raw = String::from_utf8_lossy(bytes);
        assert!(
            !raw.contains(&temp) && !raw.contains("argon2") && !raw.contains("wrong-"),
            "{e:?}"
        );
    }
}
