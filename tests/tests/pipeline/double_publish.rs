//! A retried produce may write a record twice (issue 21). Proof that it changes nothing: a
//! realistic stream goes through one stack; every event of every topic is then copied, in order,
//! twice (each right after itself, as a retry writes it) onto a second broker, a fresh projector
//! builds views from that doubled log in a second database, and the two databases are compared
//! table by table: views, access log, Break-the-Glass, dead letters and the MPI's decisions.

use std::collections::BTreeMap;
use std::time::Duration;

use hie_tests::{synthea_patient_bundles, Broker, TestApp, TestDb};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::hl7_mllp::{fixture, Mllp, MERCY_AA};
use crate::log_identity::{caught_up, ends, Ends, Projector};

const SYNTHEA_AA: &str = "http://hospital.smarthealthit.org";

/// Tables left out of the comparison, and why: each is about the log's positions or this
/// database's surroundings, not about what the events say.
const TABLES_NOT_COMPARED: &[&str] = &[
    // refinery's own bookkeeping.
    "refinery_schema_history",
    // Next offset and events applied per partition: positions, doubled by construction (checked
    // below to be exactly twice the single log's ends).
    "projection_offsets",
    // The broker's cluster id: another broker, another id, by construction.
    "log_cluster",
    // Keyed by log position (topic, partition, offset); asserted empty on both sides instead.
    "quarantine",
    // The query API's credential store: not derived from the log (the second database has no
    // query API).
    "portal_credentials",
    "portal_resets",
    // The claim-check store ingest writes beside the log (resources over 256 KiB): not derived
    // from the log; the doubled log's events name the same blobs.
    "blobs",
];

/// Columns left out, and why: positions in the log, or the time the projector wrote the row.
/// Columns whose default is `now()` are left out as well (the time of the write).
const COLUMNS_NOT_COMPARED: &[(&str, &str)] = &[
    // The consent's position on its partition: doubled offsets in the doubled log. Its order
    // among the patient's consents (what the query API uses) is what the other columns and the
    // event ids show.
    ("consents", "log_offset"),
    // Set to now() by the projector when it writes demographics or links.
    ("patients", "updated_at"),
];

/// One record as the broker holds it.
struct Copied {
    partition: i32,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Every record of `topic` on `brokers`, per partition, in order.
async fn read_topic(brokers: &str, topic: &str, partitions: i32) -> Vec<Copied> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = platform::kafka::client_config(&brokers)
            .set("group.id", format!("copy-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut done = vec![false; partitions as usize];
        let mut out = Vec::new();
        while !done.iter().all(|d| *d) {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(m)) => out.push(Copied {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    timestamp: m.timestamp().to_millis(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(KafkaError::PartitionEOF(p))) => done[p as usize] = true,
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => panic!("reading {topic}: no answer in 10 s"),
            }
        }
        out
    })
    .await
    .unwrap()
}

/// Copies every topic of `from` onto `to`, each record written twice, right after itself, to the
/// same partition with the same key, payload, timestamp and headers.
async fn copy_doubled(from: &str, to: &str) {
    copy_doubled_except(from, to, &[]).await
}

/// `copy_doubled` of every topic but those in `except` (created empty on `to`).
async fn copy_doubled_except(from: &str, to: &str, except: &[&str]) {
    let layout: BTreeMap<String, i32> = ends(from)
        .await
        .keys()
        // The project's topics (a broker's internal ones, if it lists any, are its own).
        .filter(|(t, _)| t.starts_with("hie."))
        .fold(BTreeMap::new(), |mut m, (t, p)| {
            let n = m.entry(t.clone()).or_insert(0);
            *n = (*n).max(p + 1);
            m
        });
    let specs: Vec<&'static schemas::topics::TopicSpec> = layout
        .iter()
        .map(|(name, partitions)| {
            &*Box::leak(Box::new(schemas::topics::TopicSpec {
                name: Box::leak(name.clone().into_boxed_str()),
                partitions: *partitions,
            }))
        })
        .collect();
    platform::kafka::ensure_topics(to, &specs).await.unwrap();
    let producer: FutureProducer = platform::kafka::client_config(to)
        .set("acks", "all")
        .create()
        .unwrap();
    for (topic, partitions) in layout.iter().filter(|(t, _)| !except.contains(&t.as_str())) {
        for record in read_topic(from, topic, *partitions).await {
            for _ in 0..2 {
                let mut headers = OwnedHeaders::new();
                for (key, value) in &record.headers {
                    headers = headers.insert(Header {
                        key,
                        value: value.as_deref(),
                    });
                }
                let mut out = FutureRecord::<[u8], [u8]>::to(topic)
                    .partition(record.partition)
                    .headers(headers);
                if let Some(k) = &record.key {
                    out = out.key(k);
                }
                if let Some(p) = &record.payload {
                    out = out.payload(p);
                }
                if let Some(ts) = record.timestamp {
                    out = out.timestamp(ts);
                }
                // One at a time: each copy is acknowledged before the next is sent, so the
                // order on the partition is the original order, every record twice in a row.
                producer
                    .send(out, Duration::from_secs(10))
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
        }
    }
}

/// Every compared table's rows, as JSON text without the columns not compared, sorted: a
/// multiset, so a doubled row is a difference.
async fn snapshot(db: &tokio_postgres::Client) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = db
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND NOT (table_name = ANY($1))
             ORDER BY 1",
            &[&TABLES_NOT_COMPARED],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = BTreeMap::new();
    for table in tables {
        let mut skip: Vec<String> = db
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1 AND column_default ILIKE '%now()%'",
                &[&table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        skip.extend(
            COLUMNS_NOT_COMPARED
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, c)| c.to_string()),
        );
        let mut rows: Vec<String> = db
            .query(
                &format!("SELECT (to_jsonb(t) - $1::text[])::text FROM {table} t"),
                &[&skip],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// What differs between two snapshots, table by table (empty: identical).
fn differences(
    single: &BTreeMap<String, Vec<String>>,
    doubled: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for table in single.keys().chain(doubled.keys()) {
        let (a, b) = (
            single.get(table).cloned().unwrap_or_default(),
            doubled.get(table).cloned().unwrap_or_default(),
        );
        if a == b {
            continue;
        }
        let only_a: Vec<_> = a.iter().filter(|r| !b.contains(r)).take(3).collect();
        let only_b: Vec<_> = b.iter().filter(|r| !a.contains(r)).take(3).collect();
        out.push(format!(
            "{table}: {} rows vs {}; only in the single: {only_a:?}; only in the doubled: {only_b:?}",
            a.len(),
            b.len()
        ));
    }
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_published_twice_leaves_the_views_as_once() {
    // 1. One stack, a realistic stream: a Synthea Bundle, consents, HL7 v2 ADT and ORU over
    //    MLLP with an A40 merge, a rejected body (a dead letter), audited reads and a
    //    Break-the-Glass.
    let app = TestApp::spawn().await;
    let synthea = app
        .register_source("synthea", "org-synthea", SYNTHEA_AA)
        .await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    let file = synthea_patient_bundles().into_iter().next().unwrap();
    let raw = std::fs::read(&file).unwrap();
    let bundle: Value = serde_json::from_slice(&raw).unwrap();
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
    app.consent(SYNTHEA_AA, &mrn, "org-reader", "grant").await;
    app.consent(MERCY_AA, "MG12345", "org-mercy", "grant").await;
    app.consent(MERCY_AA, "MG67890", "org-mercy", "deny").await;
    let r = app
        .post_fhir("synthea", &synthea, "application/fhir+json", raw)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let synthea_position = r.json::<Value>().await.unwrap()["position"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post_fhir("synthea", &synthea, "application/fhir+json", "{not json")
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());

    let mut conn = Mllp::connect(&app).await;
    let second = fixture("mercy_adt_a04.hl7")
        .replace("MG12345", "MG67890")
        .replace("V1001", "V-MG67890")
        .replacen("|MG0001|", "|MG0101|", 1);
    for message in [
        fixture("mercy_adt_a04.hl7"),
        second,
        fixture("mercy_adt_a08.hl7"),
        fixture("mercy_oru_r01.hl7"),
        fixture("mercy_adt_a40.hl7"),
    ] {
        let ack = conn.send(&message).await;
        assert_eq!(ack.code(), "AA", "{}", ack.0);
    }

    let reader = app.token("org-reader", &["physician"]);
    let synthea_id = app
        .patient_id(SYNTHEA_AA, &mrn, Some(&synthea_position))
        .await;
    crate::hl7_mllp::records_when(&app, &reader, &synthea_id, |r| !r.is_empty()).await;
    let mercy = app.token("org-mercy", &["physician"]);
    let mercy_id = crate::hl7_mllp::patient_id_when_known(&app, MERCY_AA, "MG12345").await;
    app.get(&format!("/v1/patients/{mercy_id}/records"), &mercy, None)
        .await;
    let doctor = app.user_token("dr-ed", "org-ed", &["physician"]);
    let r = app
        .post_query(
            &format!("/v1/patients/{synthea_id}/break-glass"),
            &doctor,
            &json!({"reason": "unconscious in the ED", "attest": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.get(&format!("/v1/patients/{synthea_id}/records"), &doctor, None)
        .await;

    let single_db = app.db.client().await;
    caught_up(&single_db, &app.broker.address()).await;
    let single_ends = ends(&app.broker.address()).await;

    // 2. The same log, every record twice, onto another broker; a fresh projector (the matcher
    //    off, as for a rebuild: the decisions are in the copied hie.identity) into another
    //    database.
    let doubled_broker = Broker::start();
    copy_doubled(&app.broker.address(), &doubled_broker.address()).await;
    let doubled_ends = ends(&doubled_broker.address()).await;
    for (key, end) in &single_ends {
        assert_eq!(
            doubled_ends.get(key),
            Some(&(end * 2)),
            "{key:?} not doubled"
        );
    }
    let doubled_db = TestDb::create().await;
    let projector = Projector::start(&doubled_broker.address(), &doubled_db.url(), false).await;
    let doubled = doubled_db.client().await;
    // It answers once its migrations have run and it has checked the log.
    projector
        .healthz_when(Duration::from_secs(30), |_, _| true)
        .await;
    caught_up(&doubled, &doubled_broker.address()).await;
    projector
        .healthz_when(Duration::from_secs(10), |s, _| s == StatusCode::OK)
        .await;

    // 3. Table by table, the same.
    let a = snapshot(&single_db).await;
    let b = snapshot(&doubled).await;
    for (table, min) in [
        ("records", 80),
        ("patients", 3),
        ("consents", 3),
        ("access_log", 3),
        ("break_glass", 1),
        ("dead_letters", 1),
        ("identity_decisions", 3),
        ("patient_links", 1),
        ("sources", 2),
        ("log_identity", 5),
    ] {
        let rows = a.get(table).map_or(0, Vec::len);
        assert!(
            rows >= min,
            "{table}: {rows} rows, expected the stream to make {min}+"
        );
    }
    let diff = differences(&a, &b);
    assert!(diff.is_empty(), "views differ:\n{}", diff.join("\n"));
    for db in [&single_db, &doubled] {
        let quarantined: i64 = db
            .query_one("SELECT count(*) FROM quarantine", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(quarantined, 0);
    }
    let applied: i64 = doubled
        .query_one("SELECT sum(applied)::bigint FROM projection_offsets", &[])
        .await
        .unwrap()
        .get(0);
    let logged: i64 = doubled_ends
        .iter()
        .filter(|((t, _), _)| schemas::topics::ALL.iter().any(|s| s.name == t))
        .map(|(_, e)| e)
        .sum();
    assert_eq!(applied, logged, "every doubled record was read and applied");
    eprintln!(
        "single log {} records, doubled {}: {} tables, {} rows compared, identical: {:?}",
        single_ends.values().sum::<i64>(),
        doubled_ends.values().sum::<i64>(),
        a.len(),
        a.values().map(Vec::len).sum::<usize>(),
        a.iter()
            .map(|(t, rows)| (t.as_str(), rows.len()))
            .collect::<Vec<_>>()
    );

    // 4. The comparison notices a doubled row, and a row the projector would add for a
    //    duplicate it did not recognise.
    let mut with_doubled_row = b.clone();
    let first = with_doubled_row["access_log"][0].clone();
    with_doubled_row.get_mut("access_log").unwrap().push(first);
    assert!(!differences(&a, &with_doubled_row).is_empty());
    doubled
        .execute(
            "INSERT INTO identity_decisions SELECT event_id || '-again', decided_at, action, identity_id, other_id,
                 decided_by, decider_role, score, comparison FROM identity_decisions LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let diff = differences(&a, &snapshot(&doubled).await);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(diff[0].starts_with("identity_decisions"), "{diff:?}");
    projector.stop().await;
}

/// What the MPI made of the identities, in terms that do not depend on which of two identities
/// was decided first (the matcher reads several partitions, in fetch order when it is behind):
/// the people (each a set of identities), the reviews (unordered pairs with their status), and
/// how many decisions of each action there were.
async fn people(db: &tokio_postgres::Client) -> (Vec<Vec<String>>, Vec<String>, Vec<String>) {
    let people: Vec<Vec<String>> = db
        .query(
            "SELECT array_agg(assigning_authority || '|' || mrn ORDER BY assigning_authority, mrn)
             FROM patients GROUP BY COALESCE(merged_into, patient_id) ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let reviews: Vec<String> = db
        .query(
            "SELECT LEAST(a.mrn, b.mrn) || '~' || GREATEST(a.mrn, b.mrn) || ' ' || r.status
             FROM identity_reviews r JOIN patients a ON a.patient_id = r.identity_id
             JOIN patients b ON b.patient_id = r.candidate_id ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let decisions: Vec<String> = db
        .query(
            "SELECT action || ' ' || count(*) FROM identity_decisions GROUP BY action ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (people, reviews, decisions)
}

/// The MPI's matcher reads hie.records too: given every Patient twice (the doubled log without
/// hie.identity, a fresh projector deciding everything again), it makes the same people, the
/// same reviews and as many decisions of each kind as the stack that saw each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matcher_given_every_patient_twice_decides_as_once() {
    use crate::identity::{bundle, patient, ssn, AA_A, AA_B};
    let app = TestApp::spawn().await;
    let key_a = app.register_source("hosp-a", "org-a", AA_A).await;
    let key_b = app.register_source("clinic-b", "org-b", AA_B).await;
    let obs = json!({"resourceType": "Observation", "id": "o", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}});
    let person = |aa: &str, mrn: &str, p: Value| bundle(patient(aa, mrn, p), obs.clone());
    // One person at both sources (a link), twins at one address with one of them at both (a link,
    // and two people), namesakes who may have moved (a review).
    let household = |given: &str, ssn_value: &str| {
        json!({"name": [{"family": "Okafor", "given": [given]}],
            "gender": "female", "birthDate": "2001-09-12",
            "address": [{"line": ["40 Elm Avenue"], "postalCode": "02139"}],
            "telecom": [{"system": "phone", "value": "617-555-0199"}],
            "identifier": ssn(ssn_value)})
    };
    let vasquez = |street: &str, postal: &str, phone: &str| {
        json!({"name": [{"family": "Vasquez", "given": ["Teodora"]}],
            "gender": "female", "birthDate": "1950-02-20",
            "address": [{"line": [street], "postalCode": postal}],
            "telecom": [{"system": "phone", "value": phone}]})
    };
    let stream = [
        (
            "hosp-a",
            &key_a,
            person(
                AA_A,
                "A-100",
                json!({
            "name": [{"use": "official", "family": "Kowalczyk", "given": ["Jonathan", "Q"]}],
            "gender": "male", "birthDate": "1979-04-07",
            "address": [{"line": ["12 Linden Street"], "city": "Worcester", "postalCode": "01609"}],
            "telecom": [{"system": "phone", "value": "508-555-0142"}],
            "identifier": ssn("123-45-6789")}),
            ),
        ),
        (
            "clinic-b",
            &key_b,
            person(
                AA_B,
                "B-7",
                json!({
            "name": [{"family": "KOWALCZYK", "given": ["JON"]}],
            "gender": "male", "birthDate": "1979-07-04",
            "address": [{"line": ["12 Linden St."], "postalCode": "01609-2280"}],
            "telecom": [{"system": "phone", "value": "(508) 555 0142"}]}),
            ),
        ),
        (
            "hosp-a",
            &key_a,
            person(AA_A, "A-1", household("Adaeze", "222-33-4444")),
        ),
        (
            "clinic-b",
            &key_b,
            person(AA_B, "B-1", household("Chiamaka", "222-33-4445")),
        ),
        (
            "clinic-b",
            &key_b,
            person(AA_B, "B-2", household("ADAEZE", "222-33-4444")),
        ),
        (
            "hosp-a",
            &key_a,
            person(AA_A, "A-5", vasquez("3 Oak Road", "01001", "413-555-0100")),
        ),
        (
            "clinic-b",
            &key_b,
            person(
                AA_B,
                "B-5",
                vasquez("77 Pine Lane", "02760", "413-555-0999"),
            ),
        ),
    ];
    for (source, key, body) in &stream {
        app.post_bundle_ok(source, key, body).await;
    }
    let single_db = app.db.client().await;
    caught_up(&single_db, &app.broker.address()).await;
    let single = people(&single_db).await;
    assert_eq!(single.0.len(), 5, "people: {:?}", single.0);
    assert!(!single.1.is_empty(), "no review: {single:?}");

    let doubled_broker = Broker::start();
    copy_doubled_except(
        &app.broker.address(),
        &doubled_broker.address(),
        &["hie.identity"],
    )
    .await;
    let doubled_db = TestDb::create().await;
    let projector = Projector::start(&doubled_broker.address(), &doubled_db.url(), true).await;
    projector
        .healthz_when(Duration::from_secs(30), |_, _| true)
        .await;
    let doubled = doubled_db.client().await;
    caught_up(&doubled, &doubled_broker.address()).await;
    let twice = people(&doubled).await;
    let decided = |ends: Ends| ends.get(&("hie.identity".to_string(), 0)).copied();
    eprintln!(
        "single: {single:?}\ndoubled: {twice:?}\nhie.identity events: {:?} once, {:?} from the doubled records",
        decided(ends(&app.broker.address()).await),
        decided(ends(&doubled_broker.address()).await)
    );
    assert_eq!(twice, single);
    projector.stop().await;
}
