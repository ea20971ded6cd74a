//! Ingest pushes back when the views fall behind (issue 21): while the projector's consumer group
//! is more than `INGEST_MAX_VIEWS_LAG` events behind on `hie.records`, a write is refused with 503
//! `overloaded` and `Retry-After` (MLLP: `AR` 207, "resend later"), nothing of it is published,
//! and the same write is taken once the views have caught up. The projector is not run here: its
//! group's commits are made by hand, as it makes them after each batch.

use std::time::{Duration, Instant};

use hie_tests::{Services, TestApp};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::StatusCode;
use schemas::topics::RECORDS;

use crate::hl7_mllp::{fixture, Mllp, MERCY_AA};

fn group_client(app: &TestApp) -> BaseConsumer {
    platform::kafka::client_config(&app.broker.address())
        .set("group.id", "hie-projector")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn ends(c: &BaseConsumer) -> Vec<i64> {
    (0..RECORDS.partitions)
        .map(|p| {
            c.fetch_watermarks(RECORDS.name, p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .collect()
}

/// Commit `offsets` for the projector's group, as the projector does after a batch.
fn commit(c: &BaseConsumer, offsets: &[i64]) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(RECORDS.name, p as i32, Offset::Offset(*o))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

/// POST `bundle` every 100 ms until it is answered `want` (within 10 s); `meanwhile` is the only
/// other answer allowed on the way.
async fn post_until(
    app: &TestApp,
    key: &str,
    bundle: &serde_json::Value,
    want: StatusCode,
    meanwhile: StatusCode,
) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .post_fhir(
                "MERCY-GENERAL",
                key,
                "application/fhir+json",
                bundle.to_string(),
            )
            .await;
        if r.status() == want {
            return r;
        }
        assert_eq!(r.status(), meanwhile);
        assert!(Instant::now() < deadline, "not answered {want} within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn writes_are_refused_with_retry_after_while_the_views_lag_and_taken_after() {
    let app = TestApp::spawn_with(Services {
        projector_in_process: false,
        max_views_lag: 100,
        ..Default::default()
    })
    .await;
    let key = app
        .register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    let group = group_client(&app);
    commit(&group, &vec![0; RECORDS.partitions as usize]);
    // 150 records on the log, none applied: the views are 150 events behind.
    let observations: Vec<(String, String, f64)> = (0..149)
        .map(|i| {
            (
                format!("obs-{i}"),
                "2026-01-01T00:00:00Z".to_string(),
                i as f64,
            )
        })
        .collect();
    let obs: Vec<(&str, &str, f64)> = observations
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
        .collect();
    let first = crate::bundle(MERCY_AA, "ADM-1", "adm-1", &obs);
    app.post_bundle_ok("MERCY-GENERAL", &key, &first).await;

    // Within a second or so ingest sees the lag and refuses the next write whole.
    let second = crate::bundle(
        MERCY_AA,
        "ADM-2",
        "adm-2",
        &[("o2", "2026-01-01T00:00:00Z", 1.0)],
    );
    let refused = post_until(
        &app,
        &key,
        &second,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    let before = ends(&group);
    let mut mllp = Mllp::connect(&app).await;
    let ack = mllp.send(&fixture("mercy_adt_a08.hl7")).await;
    assert_eq!(ack.code(), "AR", "{}", ack.0);
    assert!(ack.0.contains("207"), "{}", ack.0);
    assert_eq!(ends(&group), before, "a refused write published nothing");

    // The views catch up: the same write is taken.
    commit(&group, &before);
    post_until(
        &app,
        &key,
        &second,
        StatusCode::ACCEPTED,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(mllp.send(&fixture("mercy_adt_a08.hl7")).await.code(), "AA");
}
