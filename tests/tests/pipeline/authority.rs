//! Authority (issue 12, point 6): an admin manages only their own organization, the HIE operator's
//! admins every one; tokens are checked as the contract says (key strength, `nbf`, `iss`/`aud`,
//! the account's email); demographic search needs real criteria, is capped, audited, and keeps
//! Part 2 programs' identifiers to those with Part 2 consent.

use std::time::Duration;

use hie_tests::{urlencode, Broker, TestApp, TestDb, BOOTSTRAP_ADMIN, OPERATOR_ORG, SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.606";
const PROGRAM_AA: &str = "urn:oid:2.16.840.1.113883.3.607";

async fn put_user(app: &TestApp, token: &str, id: &str, org: &str) -> (StatusCode, Value) {
    let r = app
        .http
        .put(format!("{}/v1/users/{id}", app.query))
        .bearer_auth(token)
        .json(&json!({"email": format!("{id}@{org}.example"), "organization_id": org, "roles": ["nurse"]}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_json(
    app: &TestApp,
    path: &str,
    token: &str,
    position: Option<&str>,
) -> (StatusCode, Value) {
    let r = app.get(path, token, position).await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn user_ids(body: &Value) -> Vec<&str> {
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_only_their_own_organization_and_the_operator_all() {
    let app = TestApp::spawn().await;
    let key = app.register_source("hosp-a", "org-a", AA).await;
    let p = app
        .post_bundle_ok("hosp-a", &key, &crate::bundle(AA, "AU1", "p", &[]))
        .await;
    let patient = app.patient_id(AA, "AU1", Some(&p)).await;

    let admin_a = app.user_token("admin-a", "org-a", &["admin"]);
    let admin_b = app.user_token("admin-b", "org-b", &["admin"]);
    let operator = app.user_token("admin-hie", OPERATOR_ORG, &["admin"]);
    app.ensure_account("nurse-b", "org-b", &["nurse"]);

    // Accounts: their own organization only; never another's, nor taking one over.
    assert_eq!(
        put_user(&app, &admin_a, "nurse-a", "org-a").await.0,
        StatusCode::CREATED
    );
    let (status, body) = put_user(&app, &admin_a, "nurse-x", "org-b").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("other_organization"))
    );
    assert_eq!(
        put_user(&app, &admin_a, "nurse-b", "org-a").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put_user(&app, &admin_a, "admin-hie", "org-a").await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = get_json(&app, "/v1/users", &admin_a, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user_ids(&body), vec!["admin-a", "nurse-a"]);
    assert_eq!(
        get_json(&app, "/v1/users?organization_id=org-b", &admin_a, None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // The operator's admins, and the bootstrap admin whatever organization its token names.
    assert_eq!(
        put_user(&app, &operator, "nurse-c", "org-b").await.0,
        StatusCode::CREATED
    );
    let boot = hie_tests::sign_token(SECRET, BOOTSTRAP_ADMIN, "org-a", &["admin"]);
    assert_eq!(
        put_user(&app, &boot, "nurse-d", "org-b").await.0,
        StatusCode::CREATED
    );
    let (_, body) = get_json(&app, "/v1/users?organization_id=org-b", &operator, None).await;
    assert_eq!(
        user_ids(&body),
        vec!["admin-b", "nurse-b", "nurse-c", "nurse-d"]
    );
    let (_, body) = get_json(&app, "/v1/users", &operator, None).await;
    assert!(user_ids(&body).len() >= 8, "{body}");

    // Sources: registered by the operator only.
    let source = json!({"name": "n", "organization_id": "org-a", "feed": "batch", "assigning_authority": "urn:a2"});
    let put_source = |token: String| {
        let req = app
            .http
            .put(format!("{}/v1/sources/lab-a", app.ingest))
            .bearer_auth(token)
            .json(&source);
        async move { req.send().await.unwrap() }
    };
    let r = put_source(admin_a.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "operator_required"
    );
    assert_eq!(
        put_source(operator.clone()).await.status(),
        StatusCode::CREATED
    );

    // Consent for another organization: the operator's admins only.
    let consent = |token: String, org: &str| {
        let req = app
            .http
            .post(format!("{}/v1/consents", app.ingest))
            .bearer_auth(token)
            .json(&json!({"patient": {"assigning_authority": AA, "mrn": "AU1"}, "organization_id": org,
                "decision": "deny", "method": "written"}));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        consent(admin_a.clone(), "org-b").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        consent(admin_a.clone(), "org-a").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        consent(operator.clone(), "org-c").await,
        StatusCode::ACCEPTED
    );

    // Access logs: an admin of an organization holding the patient's data, or the operator's.
    let log = format!("/v1/patients/{patient}/access-log");
    assert_eq!(get_json(&app, &log, &admin_a, None).await.0, StatusCode::OK);
    let (status, body) = get_json(&app, &log, &admin_b, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_permitted"))
    );
    assert_eq!(
        get_json(&app, &log, &operator, None).await.0,
        StatusCode::OK
    );

    // Reports: an organization's admin sees their own organization's Break-the-Glass grants.
    let doctor_b = app.user_token("dr-b", "org-b", &["physician"]);
    let r = app
        .post_query(
            &format!("/v1/patients/{patient}/break-glass"),
            &doctor_b,
            &json!({"reason": "unconscious in the ED", "attest": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let btg = r.json::<Value>().await.unwrap()["position"]
        .as_str()
        .unwrap()
        .to_string();
    let report = "/v1/reports/break-glass";
    let orgs = |body: &Value| -> Vec<String> {
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["organization"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = get_json(&app, report, &admin_a, Some(&btg)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(orgs(&body), Vec::<String>::new());
    let (_, body) = get_json(&app, report, &admin_b, Some(&btg)).await;
    assert_eq!(orgs(&body), vec!["org-b"]);
    let (_, body) = get_json(&app, report, &operator, Some(&btg)).await;
    assert_eq!(orgs(&body), vec!["org-b"]);
}

fn claims(sub: &str, org: &str, email: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"sub": sub, "email": email, "org": org, "roles": ["nurse"], "exp": now + 600})
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_must_carry_the_accounts_email_and_be_in_force() {
    let app = TestApp::spawn().await;
    app.ensure_account("nurse-e", "org-e", &["nurse"]);
    let sources = "/v1/sources";
    let status = |c: Value| {
        let token = platform::auth::sign_hs256(&c, SECRET.as_bytes());
        let app = &app;
        async move { app.get(sources, &token, None).await.status() }
    };
    assert_eq!(
        status(claims("nurse-e", "org-e", "nurse-e@org-e.example")).await,
        StatusCode::OK
    );
    // The address compares case-insensitively, like the account registry's.
    assert_eq!(
        status(claims("nurse-e", "org-e", "Nurse-E@Org-E.example")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(claims("nurse-e", "org-e", "someone-else@org-e.example")).await,
        StatusCode::UNAUTHORIZED
    );
    let mut early = claims("nurse-e", "org-e", "nurse-e@org-e.example");
    early["nbf"] = (now() + 600).into();
    assert_eq!(status(early.clone()).await, StatusCode::UNAUTHORIZED);
    early["nbf"] = (now() - 5).into();
    assert_eq!(status(early).await, StatusCode::OK);
    // Ingest honours the same rule.
    let consent = json!({"patient": {"assigning_authority": AA, "mrn": "E1"}, "organization_id": "org-e",
        "decision": "grant", "method": "verbal"});
    for (email, expected) in [
        ("someone-else@org-e.example", StatusCode::UNAUTHORIZED),
        ("nurse-e@org-e.example", StatusCode::ACCEPTED),
    ] {
        let token =
            platform::auth::sign_hs256(&claims("nurse-e", "org-e", email), SECRET.as_bytes());
        let r = app
            .http
            .post(format!("{}/v1/consents", app.ingest))
            .bearer_auth(token)
            .json(&consent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "{email}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hs256_secret_under_32_bytes_refuses_to_start() {
    let broker = Broker::start();
    let db = TestDb::create().await;
    let weak =
        || platform::auth::JwtKey::Hs256(platform::Secret::new("integration-test-secret".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = query_api::Config {
        http_addr: listener.local_addr().unwrap(),
        database_url: db.url(),
        jwt: weak(),
        min_position_timeout: Duration::from_secs(5),
        kafka_brokers: broker.address(),
        audit_timeout: Duration::from_secs(3),
        break_glass_ttl: Duration::from_secs(3600),
        bootstrap_admin: Some(BOOTSTRAP_ADMIN.into()),
        operator_org: OPERATOR_ORG.into(),
        tls: None,
        portal: Default::default(),
    };
    let ran = tokio::time::timeout(
        Duration::from_secs(30),
        query_api::run(config, listener, std::future::pending()),
    )
    .await;
    let err = ran
        .expect("query-api served with a 23-byte HS256 secret")
        .unwrap_err();
    assert!(err.to_string().contains("32"), "{err}");

    // The binaries, from their environment: both exit at once, saying why.
    for service in ["ingest", "query-api"] {
        let log =
            std::env::temp_dir().join(format!("hie-weak-secret-{}.log", uuid::Uuid::new_v4()));
        let mut child = std::process::Command::new(hie_tests::workspace_binary(service))
            .env("HIE_JWT_SECRET", "integration-test-secret")
            .env("KAFKA_BROKERS", broker.address())
            .env("DATABASE_URL", db.url())
            .env("INGEST_HTTP_ADDR", "127.0.0.1:0")
            .env("INGEST_MLLP_ADDR", "off")
            .env("QUERY_HTTP_ADDR", "127.0.0.1:0")
            .env_remove("HIE_JWT_PUBLIC_KEY_FILE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{service} kept running with a 23-byte HS256 secret");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        assert!(!status.success(), "{service}");
        assert!(
            stderr.contains("HIE_JWT_SECRET is 23 bytes"),
            "{service}: {stderr}"
        );
    }
}

/// RSA key pair for this run only (openssl, as `platform/tests/rs256.rs`).
fn rsa_key_pair() -> (Vec<u8>, String) {
    let dir = std::env::temp_dir().join(format!("hie-authority-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("k.pem"), dir.join("k.pub"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}");
    };
    run(&["genrsa", "-out", private.to_str().unwrap(), "2048"]);
    run(&[
        "rsa",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let pair = (
        std::fs::read(&private).unwrap(),
        std::fs::read_to_string(&public).unwrap(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_need_the_configured_issuer_and_audience() {
    let app = TestApp::spawn().await;
    let (private, public) = rsa_key_pair();
    let (issuer, audience) = ("https://idp.hie.example", "hie-query-api");
    // A second query API on the same broker and views, verifying RS256.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = query_api::Config {
        http_addr: listener.local_addr().unwrap(),
        database_url: app.db.url(),
        jwt: platform::auth::JwtKey::Rs256 {
            public_key_pem: public,
            issuer: issuer.into(),
            audience: audience.into(),
        },
        min_position_timeout: Duration::from_secs(5),
        kafka_brokers: app.broker.address(),
        audit_timeout: Duration::from_secs(3),
        break_glass_ttl: Duration::from_secs(3600),
        bootstrap_admin: Some(BOOTSTRAP_ADMIN.into()),
        operator_org: OPERATOR_ORG.into(),
        tls: None,
        portal: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(query_api::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let status = |iss: Option<&str>, aud: Option<&str>, nbf: Option<u64>| {
        let mut c = json!({"sub": BOOTSTRAP_ADMIN, "email": "boot@hie.example", "org": OPERATOR_ORG,
            "roles": ["admin"], "exp": now() + 600});
        if let Some(iss) = iss {
            c["iss"] = iss.into();
        }
        if let Some(aud) = aud {
            c["aud"] = aud.into();
        }
        if let Some(nbf) = nbf {
            c["nbf"] = nbf.into();
        }
        let token = platform::auth::sign_rs256(&c, &private).unwrap();
        let (http, url) = (app.http.clone(), format!("{base}/v1/users"));
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut ok = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        ok = match status(Some(issuer), Some(audience), None).await {
            s if s.is_success() => s,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        break;
    }
    assert_eq!(ok, StatusCode::OK);
    for (iss, aud, nbf, case) in [
        (None, Some(audience), None, "no iss"),
        (Some(issuer), None, None, "no aud"),
        (
            Some("https://other-idp.example"),
            Some(audience),
            None,
            "another issuer",
        ),
        (
            Some(issuer),
            Some("another-service"),
            None,
            "another audience",
        ),
        (
            Some(issuer),
            Some(audience),
            Some(now() + 600),
            "not yet valid",
        ),
    ] {
        assert_eq!(
            status(iss, aud, nbf).await,
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
    }
    // An HS256 token with the harness's secret is no RS256 token.
    let hs = app.admin();
    let r = app
        .http
        .get(format!("{base}/v1/users"))
        .bearer_auth(hs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let _ = stop.send(());
    let _ = server.await;
}

/// One Patient of `source` under `aa` per line, all named Alex Manyfold.
fn patients_ndjson(aa: &str, mrns: impl Iterator<Item = String>) -> String {
    mrns.map(|mrn| {
        json!({"resourceType": "Patient", "id": format!("p-{mrn}"), "identifier": [{"system": aa, "value": mrn}],
               "name": [{"family": "Manyfold", "given": ["Alex"]}], "birthDate": "1970-01-01"})
        .to_string()
            + "\n"
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demographic_search_needs_criteria_is_capped_audited_and_keeps_part2_identifiers() {
    let app = TestApp::spawn().await;
    let clinic = app.register_source("clinic", "org-clinic", AA).await;
    app.register_source_with("program", "org-clinic", PROGRAM_AA, true)
        .await;

    // 51 namesakes, and one patient whose clinic registration also lists the Part 2 program's
    // chart number.
    let r = app
        .post_fhir(
            "clinic",
            &clinic,
            "application/fhir+ndjson",
            patients_ndjson(AA, (0..51).map(|i| format!("MF{i}"))),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [{
        "fullUrl": "urn:uuid:s1",
        "resource": {"resourceType": "Patient", "id": "s1",
            "identifier": [{"system": AA, "value": "S1"}, {"system": PROGRAM_AA, "value": "P1"}],
            "name": [{"family": "Quill", "given": ["Sam"]}], "birthDate": "1990-05-06"},
        "request": {"method": "POST", "url": "Patient"}}]});
    let p = app.post_bundle_ok("clinic", &clinic, &bundle).await;

    let clerk = app.user_token("clerk", "org-reader", &["front_desk"]);
    let search = |query: String| {
        let (app, clerk, p) = (&app, clerk.clone(), p.clone());
        async move { get_json(app, &format!("/v1/patients?{query}"), &clerk, Some(&p)).await }
    };

    // Real criteria: an identifier, or a family name of 2+ characters with a given name or a
    // birth date.
    for loose in [
        "family=Manyfold",
        "given=Alex",
        "family=M&given=Alex",
        "birth_date=1970-01-01",
        "given=Alex&birth_date=1970-01-01",
    ] {
        let (status, body) = search(loose.into()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("search_criteria_required")),
            "{loose}"
        );
    }
    let r = app
        .get("/fhir/Patient?family=Manyfold", &clerk, Some(&p))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Capped: 50 of the 51 namesakes, and the answer says there were more.
    let (status, body) = search("family=Ma&given=Alex".into()).await;
    assert_eq!(status, StatusCode::OK);
    let shown = body["patients"].as_array().unwrap();
    assert_eq!((shown.len(), &body["truncated"]), (50, &json!(true)));
    let (_, body) = search("family=Manyfold&birth_date=1970-01-01".into()).await;
    assert_eq!(body["patients"].as_array().unwrap().len(), 50);

    // Part 2: the program's identifier is neither shown nor searchable without Part 2 consent.
    let by_clinic = format!("identifier={}", urlencode(&format!("{AA}|S1")));
    let by_program = format!("identifier={}", urlencode(&format!("{PROGRAM_AA}|P1")));
    let (_, body) = search(by_clinic.clone()).await;
    let sam = body["patients"][0].clone();
    assert_eq!(
        sam["identifiers"],
        json!([{"system": AA, "value": "S1"}]),
        "{body}"
    );
    let (status, body) = search(by_program.clone()).await;
    assert_eq!((status, &body["patients"]), (StatusCode::OK, &json!([])));
    let (_, body) = search("family=Quill&given=Sam".into()).await;
    assert_eq!(
        body["patients"][0]["identifiers"],
        json!([{"system": AA, "value": "S1"}])
    );
    let id = sam["id"].as_str().unwrap().to_string();
    let fhir: Value = app
        .get(&format!("/fhir/Patient/{id}"), &clerk, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fhir["identifier"], json!([{"system": AA, "value": "S1"}]));
    // A plain grant does not cover Part 2; one that does shows the program's identifier.
    let c = app.consent(AA, "S1", "org-reader", "grant").await;
    let (_, body) = get_json(
        &app,
        &format!("/v1/patients?{by_program}"),
        &clerk,
        Some(&c),
    )
    .await;
    assert_eq!(body["patients"], json!([]));
    let c = app
        .consent_with(json!({"patient": {"assigning_authority": AA, "mrn": "S1"}, "organization_id": "org-reader",
            "decision": "grant", "method": "written", "part2": true}))
        .await;
    let (_, body) = get_json(
        &app,
        &format!("/v1/patients?{by_program}"),
        &clerk,
        Some(&c),
    )
    .await;
    assert_eq!(
        body["patients"][0]["identifiers"],
        json!([{"system": AA, "value": "S1"}, {"system": PROGRAM_AA, "value": "P1"}])
    );

    // Audited: each search that showed Sam is in Sam's access log, basis `search`, before the
    // answer (so the log holds them once the projector has applied the topic).
    let mut searches = Vec::new();
    for _ in 0..100 {
        let (_, log) = get_json(
            &app,
            &format!("/v1/patients/{id}/access-log"),
            &app.admin(),
            None,
        )
        .await;
        searches = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["basis"] == "search")
            .cloned()
            .collect();
        if searches.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // By the clinic's MRN, by name, and by the program's identifier under Part 2 consent.
    assert_eq!(searches.len(), 3, "{searches:?}");
    for e in &searches {
        assert_eq!(
            (&e["user"], &e["organization"], &e["role"]),
            (&json!("clerk"), &json!("org-reader"), &json!("front_desk"))
        );
    }
}

/// Replays of `topic` the query API at `base` has swapped in (its `/metrics`).
async fn replays(http: &reqwest::Client, base: &str, topic: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("hie_topic_follower_replays_total{{topic=\"{topic}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The accounts registry replays `hie.accounts` after its broker comes back: an account enabled
/// early in the log and disabled at its end is never honoured while that replay runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_stays_refused_while_the_registry_replays_after_a_reconnect() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let mut broker = Broker::start_persistent();
    let db = TestDb::create().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = query_api::Config {
        http_addr: listener.local_addr().unwrap(),
        database_url: db.url(),
        jwt: platform::auth::JwtKey::Hs256(platform::Secret::new(SECRET.into())),
        min_position_timeout: Duration::from_secs(5),
        kafka_brokers: broker.address(),
        audit_timeout: Duration::from_secs(3),
        break_glass_ttl: Duration::from_secs(3600),
        bootstrap_admin: Some(BOOTSTRAP_ADMIN.into()),
        operator_org: OPERATOR_ORG.into(),
        tls: None,
        portal: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(query_api::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let boot = hie_tests::sign_token(SECRET, BOOTSTRAP_ADMIN, OPERATOR_ORG, &["admin"]);
    let put = |active: bool| {
        let req = http
            .put(format!("{base}/v1/users/watcher"))
            .bearer_auth(&boot)
            .json(
                &json!({"email": "watcher@org-x.example", "organization_id": "org-x",
                "roles": ["admin"], "active": active}),
            );
        async move { req.send().await.map(|r| r.status()) }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !put(true).await.is_ok_and(|s| s.is_success()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "query API never ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watcher = hie_tests::sign_token(SECRET, "watcher", "org-x", &["admin"]);
    let users = format!("{base}/v1/users");
    let status = || {
        let req = http.get(&users).bearer_auth(&watcher);
        async move { req.send().await.map(|r| r.status()) }
    };
    // Honoured once the registry has replayed the topic (503 until then).
    while status().await.ok() != Some(StatusCode::OK) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the account never honoured"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Between the account's "active" and its "disabled", enough of the log that a replay takes
    // a while: 20,000 other accounts, produced straight to the topic.
    let producer: FutureProducer =
        platform::kafka::producer(&broker.address(), Duration::from_secs(30)).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..20_000 {
        let event = schemas::AccountRecorded {
            event_id: uuid::Uuid::new_v4().to_string(),
            at: schemas::now_micros(),
            user_id: format!("filler-{i}"),
            email: format!("filler-{i}@org-y.example"),
            organization_id: "org-y".into(),
            roles: vec!["nurse".into()],
            active: true,
            recorded_by: "test".into(),
        };
        let (key, payload) = (event.user_id.clone(), schemas::encode(&event).unwrap());
        let record = FutureRecord::to(schemas::topics::ACCOUNTS.name)
            .key(&key)
            .payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    assert_eq!(put(false).await.unwrap(), StatusCode::OK);
    // Refused: 503 while the registry is still reading up to the disabling event, then 401.
    let settle = tokio::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match status().await.unwrap() {
            StatusCode::SERVICE_UNAVAILABLE if tokio::time::Instant::now() < settle => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other,
        }
    };
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    let before = replays(&http, &base, "hie.accounts").await;
    assert!(before >= 1);

    // The broker goes away and comes back with the same log: the follower reconnects and
    // replays it from the start. Not once, while it does, is the disabled account honoured.
    broker.restart();
    let (mut asked, mut honoured) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = status().await {
            asked += 1;
            if s == StatusCode::OK {
                honoured += 1;
            }
        }
        if replays(&http, &base, "hie.accounts").await > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the accounts follower never replayed after the broker restart"
        );
    }
    eprintln!("{asked} requests during the reconnect and replay, {honoured} honoured");
    assert_eq!(
        honoured, 0,
        "a disabled account was honoured during the replay"
    );
    assert_eq!(status().await.unwrap(), StatusCode::UNAUTHORIZED);
    let _ = stop.send(());
    let _ = server.await;
}
