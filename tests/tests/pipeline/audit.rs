//! The audit trail under concurrent reads: each read is answered only once its own access event is
//! durable, and no event is lost or written twice when many reads publish at the same time.

use std::collections::HashMap;
use std::time::Duration;

use hie_tests::TestApp;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::StatusCode;
use schemas::AccessRecorded;

const AA: &str = "urn:oid:2.16.840.1.113883.3.77";
const READER: &str = "org-reader";

/// The access events of record reads on `hie.access` for `patient`, read from the topic until `expected` are
/// there (then a further second, for any event written twice).
async fn access_events(app: &TestApp, patient: &str, expected: usize) -> Vec<AccessRecorded> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", app.broker.address())
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..schemas::topics::ACCESS.partitions {
        tpl.add_partition_offset(schemas::topics::ACCESS.name, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    loop {
        let patience = if out.len() < expected {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(1)
        };
        match tokio::time::timeout(patience, consumer.recv()).await {
            Ok(m) => {
                let e = schemas::decode::<AccessRecorded>(m.unwrap().payload().unwrap()).unwrap();
                // The reads' events (the search that found the patient has its own).
                if e.patient_id == patient && e.action == "records" {
                    out.push(e);
                }
            }
            Err(_) => return out,
        }
    }
}

/// 64 reads at once by 8 users: every one is answered 200 and has exactly one access event on the
/// log — none lost to a group that was cut short, none written twice — each naming its reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_each_have_their_own_durable_access_event() {
    let app = TestApp::spawn().await;
    let key = app.register_source("hosp", "org-hosp", AA).await;
    let p = app
        .post_bundle_ok(
            "hosp",
            &key,
            &crate::bundle(AA, "G1", "p", &[("o", "2024-01-01T00:00:00Z", 1.0)]),
        )
        .await;
    let c = app.consent(AA, "G1", READER, "grant").await;
    let id = app.patient_id(AA, "G1", Some(&p)).await;
    let tokens: Vec<(String, String)> = (0..8)
        .map(|u| {
            let sub = format!("reader-{u}");
            let token = app.user_token(&sub, READER, &["physician"]);
            (sub, token)
        })
        .collect();
    // The views include the consent before the burst, so every read is allowed.
    let first = app
        .get(
            &format!("/v1/patients/{id}/records"),
            &tokens[0].1,
            Some(&c),
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);

    let http = reqwest::Client::new();
    let url = format!("{}/v1/patients/{id}/records", app.query);
    let mut reads = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (http, url) = (http.clone(), url.clone());
        let token = tokens[i % tokens.len()].1.clone();
        reads.spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = reads.join_all().await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    let events = access_events(&app, &id, 65).await;
    assert_eq!(events.len(), 65, "one access event per read");
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        assert_eq!(e.outcome, "allowed");
        assert_eq!(e.organization_id, READER);
        *per_user.entry(e.user_id.as_str()).or_default() += 1;
    }
    for (i, (sub, _)) in tokens.iter().enumerate() {
        let reads = 64 / tokens.len() + usize::from(i == 0);
        assert_eq!(per_user.get(sub.as_str()), Some(&reads), "{sub}");
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 65, "an event written twice");
}
