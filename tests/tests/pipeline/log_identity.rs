//! The views know their log (issue 21): a projector whose stored offsets point into another log —
//! topics deleted and re-created, or another broker behind the same database — refuses it
//! (`/healthz` 503 naming topic and partition, nothing applied) until an operator rebuilds the
//! views (`SELECT hie_forget_log()`); a partition whose events wait unapplied is named too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hie_tests::{Services, TestApp};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

const AA: &str = "urn:oid:2.16.840.1.113883.3.21";

/// A projector run in this process against any broker and database, stopped on demand.
pub(crate) struct Projector {
    pub(crate) url: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), String>>,
}

impl Projector {
    pub(crate) async fn start(brokers: &str, database_url: &str, matcher: bool) -> Projector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = projector::Config {
            http_addr: addr,
            kafka_brokers: brokers.to_string(),
            database_url: database_url.to_string(),
            group_id: "hie-projector".into(),
            instance: (0, 1),
            batch_max: 500,
            batch_wait: Duration::from_millis(5),
            fetch_wait: Duration::from_millis(10),
            stall: Duration::from_secs(5),
            matcher,
            blob_store: platform::blobs::BlobLocation::Postgres(database_url.to_string()),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            projector::run(config, listener, async move {
                let _ = rx.await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        Projector {
            url: format!("http://{addr}"),
            stop: Some(tx),
            done,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let outcome = tokio::time::timeout(Duration::from_secs(30), &mut self.done)
            .await
            .expect("projector did not stop");
        outcome.unwrap().unwrap();
    }

    /// `/healthz` once it answers, polling until `want` holds (at most `within`).
    pub(crate) async fn healthz_when(
        &self,
        within: Duration,
        want: impl Fn(StatusCode, &Value) -> bool,
    ) -> (StatusCode, Value) {
        let started = Instant::now();
        let http = reqwest::Client::new();
        let mut last = None;
        while started.elapsed() < within {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                let status = r.status();
                let body: Value = r.json().await.unwrap_or_default();
                if want(status, &body) {
                    return (status, body);
                }
                last = Some((status, body));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("projector /healthz never became what was wanted; last {last:?}");
    }

    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Each partition's end offset.
pub(crate) type Ends = BTreeMap<(String, i32), i64>;

/// Every partition's end on `brokers`, for every topic it holds.
pub(crate) async fn ends(brokers: &str) -> Ends {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = platform::kafka::client_config(&brokers)
            .set("group.id", "test-ends")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let mut out = BTreeMap::new();
        for topic in metadata.topics() {
            for p in topic.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic.name(), p.id(), Duration::from_secs(10))
                    .unwrap();
                out.insert((topic.name().to_string(), p.id()), high);
            }
        }
        out
    })
    .await
    .unwrap()
}

pub(crate) async fn stored_offsets(db: &tokio_postgres::Client) -> BTreeMap<(String, i32), i64> {
    db.query(
        "SELECT topic, partition, next_offset FROM projection_offsets",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
    .collect()
}

/// Waits until the views have applied every partition of the projector's topics to its end, and
/// the ends stay put for a second (the matcher's decisions come after the records they decide).
pub(crate) async fn caught_up(db: &tokio_postgres::Client, brokers: &str) {
    let started = Instant::now();
    let projected: Vec<&str> = schemas::topics::ALL.iter().map(|t| t.name).collect();
    let mut settled: Option<(Instant, Ends)> = None;
    loop {
        let ends: BTreeMap<_, _> = ends(brokers)
            .await
            .into_iter()
            .filter(|((t, _), _)| projected.contains(&t.as_str()))
            .collect();
        let stored = stored_offsets(db).await;
        let behind: Vec<_> = ends
            .iter()
            .filter(|(k, end)| stored.get(*k).copied().unwrap_or(0) < **end)
            .collect();
        if behind.is_empty() {
            match &settled {
                Some((at, was)) if *was == ends && at.elapsed() >= Duration::from_secs(1) => return,
                Some((_, was)) if *was == ends => {}
                _ => settled = Some((Instant::now(), ends.clone())),
            }
        } else {
            settled = None;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the views never caught up with the log: behind {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn partitions_named(body: &Value) -> Vec<(String, i64, String)> {
    body["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some((
                p["topic"].as_str()?.to_string(),
                p["partition"].as_i64()?,
                p["reason"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The failing scenario of issue 21: topics deleted by an operator and re-created (empty, then a
/// few new records) while the database keeps its offsets. The projector must not look healthy
/// while showing nothing new: it refuses, naming each partition, and applies nothing; after
/// `hie_forget_log()` it rebuilds the views from the log there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_deleted_and_recreated_are_refused_until_the_views_are_rebuilt() {
    let app = TestApp::spawn_with(Services {
        projector_in_process: false,
        ..Default::default()
    })
    .await;
    let brokers = app.broker.address();
    let db = app.db.client().await;
    let key = app.register_source("feed", "org-f", AA).await;
    let first = Projector::start(&brokers, &app.db.url(), false).await;
    for p in 0..12 {
        let obs: Vec<(String, String, f64)> = (0..4)
            .map(|o| {
                (
                    format!("o{p}-{o}"),
                    "2024-01-01T00:00:00Z".to_string(),
                    o as f64,
                )
            })
            .collect();
        let obs: Vec<(&str, &str, f64)> = obs
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
            .collect();
        app.post_bundle_ok(
            "feed",
            &key,
            &crate::bundle(AA, &format!("D{p}"), &format!("d{p}"), &obs),
        )
        .await;
    }
    caught_up(&db, &brokers).await;
    first.stop().await;
    let before = stored_offsets(&db).await;
    let records_before = count(&db, "records").await;
    assert_eq!(records_before, 12 * 5);
    let applied_records: Vec<i32> = (0..schemas::topics::RECORDS.partitions)
        .filter(|p| {
            before
                .get(&("hie.records".to_string(), *p))
                .copied()
                .unwrap_or(0)
                > 0
        })
        .collect();
    assert!(!applied_records.is_empty());

    // The operator deletes hie.records; the services re-create it, and a new record lands on it.
    let admin: AdminClient<DefaultClientContext> =
        platform::kafka::client_config(&brokers).create().unwrap();
    let deleted = admin
        .delete_topics(&["hie.records"], &AdminOptions::new())
        .await
        .unwrap();
    assert!(deleted.iter().all(|r| r.is_ok()), "{deleted:?}");
    let started = Instant::now();
    while ends(&brokers)
        .await
        .contains_key(&("hie.records".to_string(), 0))
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "hie.records never went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform::kafka::ensure_topics(&brokers, &[&schemas::topics::RECORDS])
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let r = app
            .post_fhir(
                "feed",
                &key,
                "application/fhir+json",
                crate::bundle(AA, "NEW1", "new1", &[]).to_string(),
            )
            .await;
        if r.status() == StatusCode::ACCEPTED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ingest never published to the re-created topic: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let new_ends = ends(&brokers).await;

    // The projector comes back: 503, every partition of hie.records it had applied from named.
    let second = Projector::start(&brokers, &app.db.url(), false).await;
    let (status, body) = second
        .healthz_when(Duration::from_secs(30), |s, _| {
            s == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    eprintln!("healthz after the topic was re-created: {body}");
    let reason = body["projection"].as_str().unwrap();
    assert!(
        ["another_log", "offsets_beyond_end"].contains(&reason),
        "{body}"
    );
    let named = partitions_named(&body);
    for p in &applied_records {
        assert!(
            named
                .iter()
                .any(|(t, q, _)| t == "hie.records" && *q == *p as i64),
            "hie.records/{p} not named: {body}"
        );
        let stored = before[&("hie.records".to_string(), *p)];
        let end = new_ends[&("hie.records".to_string(), *p)];
        assert!(
            end < stored,
            "partition {p}: new end {end}, stored {stored}"
        );
        if end == 0 {
            // Empty now: its last applied record is gone.
            assert!(
                named.contains(&(
                    "hie.records".to_string(),
                    *p as i64,
                    "offsets_beyond_end".into()
                )),
                "{body}"
            );
        }
    }
    // Each names where it stands: the stored next offset against the new end.
    for p in body["partitions"].as_array().unwrap() {
        let key = (
            "hie.records".to_string(),
            p["partition"].as_i64().unwrap() as i32,
        );
        assert_eq!(p["next_offset"], before[&key], "{body}");
        assert_eq!(p["end_offset"], new_ends[&key], "{body}");
    }
    // Nothing names another topic: those logs are still the views' own.
    assert!(named.iter().all(|(t, _, _)| t == "hie.records"), "{body}");
    // Nothing applied: offsets and views as they were, and it stays so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_offsets(&db).await, before);
    assert_eq!(count(&db, "records").await, records_before);
    second.stop().await;

    // The way out: empty the views, start again: they are rebuilt from this log.
    db.execute("SELECT hie_forget_log()", &[]).await.unwrap();
    let third = Projector::start(&brokers, &app.db.url(), false).await;
    third
        .healthz_when(Duration::from_secs(30), |s, _| s == StatusCode::OK)
        .await;
    caught_up(&db, &brokers).await;
    let mrns: Vec<String> = db
        .query("SELECT mrn FROM patients ORDER BY mrn", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(mrns, vec!["NEW1".to_string()]);
    assert_eq!(count(&db, "sources").await, 1);
    third.stop().await;
}

/// A second stack on the same database with a broker of its own: the projector refuses that log
/// (another cluster, and other first records) and applies nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_pointed_at_another_log_refuses_it() {
    let app = TestApp::spawn().await;
    let key = app.register_source("home", "org-h", AA).await;
    let pos = app
        .post_bundle_ok("home", &key, &crate::bundle(AA, "H1", "h1", &[]))
        .await;
    app.patient_id(AA, "H1", Some(&pos)).await;
    let db = app.db.client().await;
    caught_up(&db, &app.broker.address()).await;

    // Another stack, its own broker (and database, unused here), with data of its own.
    let other = TestApp::spawn().await;
    let other_key = other.register_source("elsewhere", "org-e", AA).await;
    other
        .post_bundle_ok("elsewhere", &other_key, &crate::bundle(AA, "E1", "e1", &[]))
        .await;
    let before = stored_offsets(&db).await;
    let sources_before: Vec<String> = db
        .query("SELECT source_id FROM sources ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    let stray = Projector::start(&other.broker.address(), &app.db.url(), false).await;
    let (_, body) = stray
        .healthz_when(Duration::from_secs(30), |s, _| {
            s == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    eprintln!("healthz against another broker: {body}");
    let reasons: Vec<&str> = body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"another_cluster") || reasons.contains(&"another_log"),
        "{body}"
    );
    // The sources topic's first record is another one: named by topic and partition.
    assert!(
        partitions_named(&body).contains(&("hie.sources".into(), 0, "another_log".into())),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_offsets(&db).await, before);
    let sources_after: Vec<String> = db
        .query("SELECT source_id FROM sources ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sources_after, sources_before);
    stray.stop().await;
    // The stack's own projector never noticed: its log is the views'.
    let r = app
        .http
        .get(format!("{}/healthz", app.projector.as_ref().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Events that wait unapplied on a partition (the views' database held by a lock): `/healthz`
/// names that partition as stalled, with its next and end offsets, the lag gauge shows how far
/// behind it is, and both recover once the views move again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_events_wait_is_named_and_its_lag_shown() {
    let app = TestApp::spawn_with(Services {
        projector_in_process: false,
        ..Default::default()
    })
    .await;
    let brokers = app.broker.address();
    let db = app.db.client().await;
    let key = app.register_source("lag", "org-l", AA).await;
    let projector = Projector::start(&brokers, &app.db.url(), false).await;
    app.post_bundle_ok("lag", &key, &crate::bundle(AA, "L0", "l0", &[]))
        .await;
    caught_up(&db, &brokers).await;
    projector
        .healthz_when(Duration::from_secs(10), |s, _| s == StatusCode::OK)
        .await;

    let mut holder = app.db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE projection_offsets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let obs: Vec<(String, String, f64)> = (0..7)
        .map(|o| {
            (
                format!("l-{o}"),
                "2024-01-01T00:00:00Z".to_string(),
                o as f64,
            )
        })
        .collect();
    let obs: Vec<(&str, &str, f64)> = obs
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
        .collect();
    let pos = app
        .post_bundle_ok("lag", &key, &crate::bundle(AA, "L0", "l0", &obs))
        .await;
    let (partition, last) = schemas::Position::decode(&pos)
        .unwrap()
        .entries()
        .into_iter()
        .find(|(t, _, _)| *t == "hie.records")
        .map(|(_, p, o)| (p, o))
        .unwrap();
    let waited = Instant::now();
    let (_, body) = projector
        .healthz_when(Duration::from_secs(30), |s, b| {
            s == StatusCode::SERVICE_UNAVAILABLE
                && partitions_named(b)
                    .iter()
                    .any(|(t, p, r)| t == "hie.records" && *p == partition as i64 && r == "stalled")
        })
        .await;
    eprintln!(
        "stalled after {:.1} s (stall limit 5 s): {body}",
        waited.elapsed().as_secs_f64()
    );
    assert_eq!(body["projection"], "stalled");
    let named = body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["topic"] == "hie.records" && p["partition"] == partition)
        .unwrap()
        .clone();
    assert_eq!(named["end_offset"], last + 1, "{body}");
    let next = named["next_offset"].as_i64().unwrap();
    assert_eq!(
        last + 1 - next,
        8,
        "1 Patient + 7 Observations wait: {body}"
    );
    let gauge = format!(
        "hie_projector_consumer_lag_messages{{partition=\"{partition}\",topic=\"hie.records\"}} 8"
    );
    assert!(projector.metrics().await.contains(&gauge), "no `{gauge}`");

    tx.rollback().await.unwrap();
    projector
        .healthz_when(Duration::from_secs(30), |s, _| s == StatusCode::OK)
        .await;
    let gauge = format!(
        "hie_projector_consumer_lag_messages{{partition=\"{partition}\",topic=\"hie.records\"}} 0"
    );
    let started = Instant::now();
    while !projector.metrics().await.contains(&gauge) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "lag never back to 0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    projector.stop().await;
}

/// Views built before `log_identity` existed (offsets stored, no first records): the projector
/// adopts the log's earliest records at its first start, stays healthy and goes on applying; the
/// records it adopted are the ones a fresh build records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_from_before_log_identity_adopt_the_log_they_were_built_from() {
    let app = TestApp::spawn_with(Services {
        projector_in_process: false,
        ..Default::default()
    })
    .await;
    let brokers = app.broker.address();
    let db = app.db.client().await;
    let key = app.register_source("old", "org-o", AA).await;
    let first = Projector::start(&brokers, &app.db.url(), false).await;
    app.post_bundle_ok("old", &key, &crate::bundle(AA, "V1", "v1", &[]))
        .await;
    caught_up(&db, &brokers).await;
    first.stop().await;
    let recorded = fingerprints(&db).await;
    assert!(!recorded.is_empty());
    // As before V6: offsets and views, no record of the log.
    db.batch_execute("DELETE FROM log_identity; DELETE FROM log_cluster")
        .await
        .unwrap();

    let again = Projector::start(&brokers, &app.db.url(), false).await;
    again
        .healthz_when(Duration::from_secs(30), |s, _| s == StatusCode::OK)
        .await;
    assert_eq!(fingerprints(&db).await, recorded);
    let clusters: i64 = db
        .query_one("SELECT count(*) FROM log_cluster", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(clusters, 1);
    let pos = app
        .post_bundle_ok("old", &key, &crate::bundle(AA, "V2", "v2", &[]))
        .await;
    app.patient_id(AA, "V2", Some(&pos)).await;
    again.stop().await;
}

type FirstRecords = Vec<(String, i32, i64, Vec<u8>)>;

async fn fingerprints(db: &tokio_postgres::Client) -> FirstRecords {
    db.query(
        "SELECT topic, partition, first_offset, first_fingerprint FROM log_identity ORDER BY 1, 2",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The same while the projector runs: the topic deleted and re-created under it is seen on the
/// watch's timer (its end below the next offset), not a minute later, and it stops applying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_replaced_under_a_running_projector_is_refused_at_once() {
    let app = TestApp::spawn_with(Services {
        projector_in_process: false,
        ..Default::default()
    })
    .await;
    let brokers = app.broker.address();
    let db = app.db.client().await;
    let key = app.register_source("live", "org-l", AA).await;
    let projector = Projector::start(&brokers, &app.db.url(), false).await;
    for p in 0..6 {
        app.post_bundle_ok(
            "live",
            &key,
            &crate::bundle(
                AA,
                &format!("R{p}"),
                &format!("r{p}"),
                &[("o", "2024-01-01T00:00:00Z", 1.0)],
            ),
        )
        .await;
    }
    caught_up(&db, &brokers).await;
    projector
        .healthz_when(Duration::from_secs(10), |s, _| s == StatusCode::OK)
        .await;
    let admin: AdminClient<DefaultClientContext> =
        platform::kafka::client_config(&brokers).create().unwrap();
    admin
        .delete_topics(&["hie.records"], &AdminOptions::new())
        .await
        .unwrap();
    let replaced = Instant::now();
    while ends(&brokers)
        .await
        .contains_key(&("hie.records".to_string(), 0))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform::kafka::ensure_topics(&brokers, &[&schemas::topics::RECORDS])
        .await
        .unwrap();
    let (_, body) = projector
        .healthz_when(Duration::from_secs(30), |s, b| {
            s == StatusCode::SERVICE_UNAVAILABLE
                && partitions_named(b).iter().any(|(t, _, r)| {
                    t == "hie.records" && (r == "offsets_beyond_end" || r == "another_log")
                })
        })
        .await;
    let seen = replaced.elapsed();
    eprintln!(
        "refused {:.1} s after the topic was deleted: {body}",
        seen.as_secs_f64()
    );
    assert!(seen < Duration::from_secs(30));
    let before = stored_offsets(&db).await;
    // A record on the new topic is not applied.
    let started = Instant::now();
    while app
        .post_fhir(
            "live",
            &key,
            "application/fhir+json",
            crate::bundle(AA, "R9", "r9", &[]).to_string(),
        )
        .await
        .status()
        != StatusCode::ACCEPTED
    {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_offsets(&db).await, before);
    let r9: i64 = db
        .query_one("SELECT count(*) FROM patients WHERE mrn = 'R9'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(r9, 0);
    projector.stop().await;
}
