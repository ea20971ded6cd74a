use hie_tests::{Services, TestApp};
use reqwest::StatusCode;
use schemas::Position;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.55";

/// Kill -9 the projector repeatedly while records stream in; after a restart the views hold
/// every record exactly once, at its latest version, and the offsets match the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_killed_mid_stream_loses_and_doubles_nothing() {
    let app = TestApp::spawn_with(Services {
        projector_in_process: false,
        ..Default::default()
    })
    .await;
    let key = app.register_source("feed", "org-f", AA).await;
    let mut projector = app.spawn_projector_process();
    let db = app.db.client().await;
    let mut kills = 0;

    const PATIENTS: usize = 40;
    const VERSIONS: usize = 5;
    const OBS_PER_PATIENT: usize = 10;
    let mut position = Position::new();
    for version in 0..VERSIONS {
        for p in 0..PATIENTS {
            let mrn = format!("K{p}");
            let updated = format!("2024-01-01T00:00:{:02}Z", version);
            let obs: Vec<(String, String, f64)> = (0..OBS_PER_PATIENT)
                .map(|o| (format!("k{p}-{o}"), updated.clone(), version as f64))
                .collect();
            let obs_ref: Vec<(&str, &str, f64)> = obs
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
                .collect();
            let token = app
                .post_bundle_ok(
                    "feed",
                    &key,
                    &crate::bundle(AA, &mrn, &format!("kp{p}"), &obs_ref),
                )
                .await;
            position.merge(&Position::decode(&token).unwrap());
            if p % 13 == 0 {
                // Kill it hard once it is applying events, and bring it back.
                let before = applied(&db).await;
                for _ in 0..200 {
                    if applied(&db).await > before {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                kills += 1;
                projector.kill().unwrap();
                projector.wait().unwrap();
                projector = app.spawn_projector_process();
            }
        }
    }
    let consent = app.consent(AA, "K0", "*", "grant").await;
    position.merge(&Position::decode(&consent).unwrap());

    // Wait for the whole stream through the public read-your-writes header.
    let token = app.token("org-f", &["physician"]);
    let mut caught_up = false;
    for _ in 0..12 {
        let r = app
            .get(
                "/v1/patients?family=Testpatient&given=Alex",
                &token,
                Some(&position.encode()),
            )
            .await;
        if r.status() == StatusCode::OK {
            caught_up = true;
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(caught_up, "views never caught up after the restarts");
    projector.kill().unwrap();
    projector.wait().unwrap();

    eprintln!(
        "projector killed {kills} times mid-stream, final applied events {}",
        applied(&db).await
    );
    let rows = db
        .query("SELECT resource_type, count(*), min(version), max(version) FROM records GROUP BY resource_type ORDER BY 1", &[])
        .await
        .unwrap();
    let summary: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        summary,
        vec![
            (
                "Observation".to_string(),
                (PATIENTS * OBS_PER_PATIENT) as i64
            ),
            ("Patient".to_string(), PATIENTS as i64)
        ]
    );
    // Every observation is at its last version.
    let stale: i64 = db
        .query_one("SELECT count(*) FROM records WHERE resource_type = 'Observation' AND (resource->'valueQuantity'->>'value')::float <> $1", &[&((VERSIONS - 1) as f64)])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stale, 0);
    // The stored offsets are exactly one past the last message of each partition the stream used.
    for (topic, partition, last) in position.entries() {
        let next: i64 = db
            .query_one(
                "SELECT next_offset FROM projection_offsets WHERE topic = $1 AND partition = $2",
                &[&topic, &partition],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            next > last,
            "{topic}/{partition}: next {next} <= last written {last}"
        );
    }
    // Nothing applied twice: each partition applied exactly as many events as it holds.
    let doubled: i64 = db
        .query_one(
            "SELECT count(*) FROM projection_offsets WHERE applied <> next_offset",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(doubled, 0);
    let undecodable: i64 = db
        .query_one("SELECT count(*) FROM quarantine", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(undecodable, 0);
    let patient = app.patient_id(AA, "K0", None).await;
    let body: Value = app
        .get(
            &format!("/v1/patients/{patient}/records?type=Observation"),
            &token,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["records"].as_array().unwrap().len(),
        OBS_PER_PATIENT,
        "{}",
        json!(body["error"])
    );
}

async fn applied(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT COALESCE(sum(applied), 0)::bigint FROM projection_offsets",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}
