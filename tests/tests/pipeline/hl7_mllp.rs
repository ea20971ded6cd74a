//! HL7 v2 over MLLP through a real TCP socket: ACKs, the records they stand for, and rejections.

use std::time::{Duration, Instant};

use hie_tests::{urlencode, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub(crate) const MERCY_AA: &str = "urn:oid:2.16.840.1.113883.3.1001";

pub(crate) fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/hl7/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One MLLP connection: send a framed message, read the framed ACK.
pub(crate) struct Mllp {
    stream: BufReader<TcpStream>,
}

impl Mllp {
    pub(crate) async fn connect(app: &TestApp) -> Mllp {
        Self::connect_to(app.mllp).await
    }

    async fn connect_to(addr: std::net::SocketAddr) -> Mllp {
        Mllp {
            stream: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    pub(crate) async fn send(&mut self, message: &str) -> Ack {
        let mut framed = vec![0x0b];
        framed.extend_from_slice(message.as_bytes());
        framed.extend_from_slice(&[0x1c, 0x0d]);
        self.stream.get_mut().write_all(&framed).await.unwrap();
        let mut ack = Vec::new();
        let read = async {
            loop {
                let b = self.stream.read_u8().await.unwrap();
                ack.push(b);
                if ack.ends_with(&[0x1c, 0x0d]) {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), read)
            .await
            .expect("no ACK");
        assert_eq!(ack[0], 0x0b, "ACK is not framed");
        Ack(String::from_utf8(ack[1..ack.len() - 2].to_vec()).unwrap())
    }
}

pub(crate) struct Ack(pub(crate) String);

impl Ack {
    fn segment(&self, name: &str) -> Vec<&str> {
        self.0
            .split('\r')
            .find(|s| s.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {}", self.0))
            .split('|')
            .collect()
    }

    /// MSA-1.
    pub(crate) fn code(&self) -> &str {
        self.segment("MSA")[1]
    }

    /// MSA-2: the acknowledged message's MSH-10.
    fn control_id(&self) -> &str {
        self.segment("MSA")[2]
    }

    fn has_err(&self) -> bool {
        self.0.split('\r').any(|s| s.starts_with("ERR|"))
    }
}

/// The patient's records, polling until `ready` holds (at most 5 s); returns how long it took.
pub(crate) async fn records_when(
    app: &TestApp,
    token: &str,
    id: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, Duration) {
    let start = Instant::now();
    loop {
        let r = app
            .get(&format!("/v1/patients/{id}/records"), token, None)
            .await;
        if r.status() == StatusCode::OK {
            let body: Value = r.json().await.unwrap();
            let records = body["records"].as_array().cloned().unwrap_or_default();
            if ready(&records) {
                return (records, start.elapsed());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "records did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn patient_id_when_known(app: &TestApp, system: &str, value: &str) -> String {
    let token = app.token("org-any", &["front_desk"]);
    let path = format!(
        "/v1/patients?identifier={}",
        urlencode(&format!("{system}|{value}"))
    );
    for _ in 0..250 {
        let body: Value = app.get(&path, &token, None).await.json().await.unwrap();
        if let Some(id) = body["patients"][0]["id"].as_str() {
            return id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("patient never appeared");
}

pub(crate) fn of_type<'r>(records: &'r [Value], t: &str) -> Vec<&'r Value> {
    records.iter().filter(|r| r["resourceType"] == t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_a04_a08_and_oru_over_mllp_are_readable_after_the_ack() {
    let app = TestApp::spawn().await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    app.consent(MERCY_AA, "MG12345", "org-mercy", "grant").await;
    let token = app.token("org-mercy", &["physician"]);

    let mut conn = Mllp::connect(&app).await;
    let ack = conn.send(&fixture("mercy_adt_a04.hl7")).await;
    assert_eq!(
        (ack.code(), ack.control_id()),
        ("AA", "MG0001"),
        "{}",
        ack.0
    );
    assert!(!ack.has_err());
    let id = patient_id_when_known(&app, MERCY_AA, "MG12345").await;
    let (records, _) = records_when(&app, &token, &id, |r| r.len() == 2).await;
    assert_eq!(
        of_type(&records, "Patient")[0]["name"][0]["family"],
        "O'Neil"
    );
    assert_eq!(of_type(&records, "Encounter")[0]["status"], "arrived");

    // The A08 updates the same Patient and Encounter; the ORU adds a report and its results.
    let ack = conn.send(&fixture("mercy_adt_a08.hl7")).await;
    assert_eq!((ack.code(), ack.control_id()), ("AA", "MG0002"));
    let ack = conn.send(&fixture("mercy_oru_r01.hl7")).await;
    assert_eq!((ack.code(), ack.control_id()), ("AA", "MG0003"));
    let (records, waited) = records_when(&app, &token, &id, |r| {
        r.len() == 9
            && of_type(r, "Encounter")
                .first()
                .is_some_and(|e| e["status"] == "finished")
    })
    .await;
    eprintln!("ORU readable {waited:?} after its ACK");
    assert!(waited < Duration::from_secs(1), "took {waited:?}");
    let patient = of_type(&records, "Patient")[0];
    assert_eq!(patient["name"][0]["family"], "O'Neil-Hart");
    assert_eq!(patient["address"][0]["city"], "Albany");
    assert_eq!(patient["meta"]["source"], "urn:hie:source:MERCY-GENERAL");
    let report = of_type(&records, "DiagnosticReport")[0];
    assert_eq!(report["result"].as_array().unwrap().len(), 6);
    let observations = of_type(&records, "Observation");
    assert_eq!(observations.len(), 6);
    assert!(observations
        .iter()
        .any(|o| o["valueQuantity"]["value"] == 182.0
            && o["interpretation"][0]["coding"][0]["code"] == "H"));

    // An older message arriving late (the A04 again) changes nothing; provenance is kept.
    let ack = conn.send(&fixture("mercy_adt_a04.hl7")).await;
    assert_eq!(ack.code(), "AA");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (records, _) = records_when(&app, &token, &id, |r| r.len() == 9).await;
    assert_eq!(
        of_type(&records, "Patient")[0]["name"][0]["family"],
        "O'Neil-Hart"
    );
    let db = app.db.client().await;
    let rows = db
        .query("SELECT DISTINCT channel, message_id FROM records WHERE source_id = 'MERCY-GENERAL' ORDER BY 2", &[])
        .await
        .unwrap();
    let provenance: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        provenance,
        vec![
            ("hl7v2_mllp".into(), "MG0002".into()),
            ("hl7v2_mllp".into(), "MG0003".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_separators_over_mllp() {
    let app = TestApp::spawn().await;
    app.register_source("RIVERSIDE", "org-river", "RIVERSIDE")
        .await;
    app.consent("RIVERSIDE", "RC-0042", "org-river", "grant")
        .await;
    let mut conn = Mllp::connect(&app).await;
    let ack = conn.send(&fixture("riverside_adt_a01.hl7")).await;
    assert_eq!((ack.code(), ack.control_id()), ("AA", "R-1"), "{}", ack.0);
    let id = patient_id_when_known(&app, "RIVERSIDE", "RC-0042").await;
    let token = app.token("org-river", &["physician"]);
    let (records, _) = records_when(&app, &token, &id, |r| r.len() == 2).await;
    assert_eq!(of_type(&records, "Encounter")[0]["class"]["code"], "IMP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_get_ae_or_ar_with_err_and_are_dead_lettered() {
    let app = TestApp::spawn().await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    let a08 = fixture("mercy_adt_a08.hl7");
    let mut conn = Mllp::connect(&app).await;

    let unknown = a08.replace("MERCY-GENERAL^", "NOBODY^");
    let ack = conn.send(&unknown).await;
    assert_eq!((ack.code(), ack.control_id()), ("AR", "MG0002"));
    assert!(ack.has_err());

    let ack = conn.send("this is not HL7").await;
    assert_eq!(ack.code(), "AR");
    assert!(ack.has_err());

    // A merge without its MRG segment (the prior patient) is an error in the content.
    let merge = a08.replace("ADT^A08^ADT_A01|MG0002", "ADT^A40^ADT_A39|MG0040");
    let ack = conn.send(&merge).await;
    assert_eq!((ack.code(), ack.control_id()), ("AE", "MG0040"));
    assert!(ack.0.contains("merge"), "{}", ack.0);

    let no_mrn = a08.replace(
        "MG12345^^^MERCY&2.16.840.1.113883.3.1001&ISO^MR",
        "X1^^^ELSEWHERE^PI",
    );
    let ack = conn.send(&no_mrn).await;
    assert_eq!(ack.code(), "AE");
    assert!(ack.segment("ERR").len() > 3);
    assert!(
        !ack.0.contains("X1"),
        "the ACK must not echo PHI: {}",
        ack.0
    );

    // The same connection still takes good messages.
    assert_eq!(conn.send(&a08).await.code(), "AA");
    // MSH-10 is unique only per source and day: another message reusing it is still taken.
    let same_control_id = a08.replace("MG12345^", "MG99999^");
    assert_eq!(conn.send(&same_control_id).await.code(), "AA");
    patient_id_when_known(&app, MERCY_AA, "MG99999").await;

    let db = app.db.client().await;
    let mut rows = Vec::new();
    for _ in 0..250 {
        rows = db
            .query("SELECT source_id, message_id, reason, payload FROM dead_letters WHERE channel = 'hl7v2_mllp' ORDER BY rejected_at", &[])
            .await
            .unwrap();
        if rows.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 4);
    let sources: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        sources,
        vec![
            None,
            None,
            Some("MERCY-GENERAL".into()),
            Some("MERCY-GENERAL".into())
        ]
    );
    let merge_row = &rows[2];
    assert_eq!(merge_row.get::<_, String>(1), "MG0040");
    assert!(merge_row.get::<_, String>(2).contains("merge"));
    assert_eq!(merge_row.get::<_, Vec<u8>>(3), merge.as_bytes());
}

/// Many connections at once, many messages each; prints the sustained rate. For a longer run:
/// `HIE_MLLP_PER_CONNECTION=1000 cargo nextest run -p hie-tests --no-capture -E 'test(many_connections)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_many_messages() {
    const CONNECTIONS: usize = 8;
    let per_connection: usize = std::env::var("HIE_MLLP_PER_CONNECTION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let app = TestApp::spawn().await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    let template = fixture("mercy_adt_a08.hl7");
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let template = template.clone();
            let addr = app.mllp;
            tokio::spawn(async move {
                let mut conn = Mllp::connect_to(addr).await;
                for i in 0..per_connection {
                    let message = template
                        .replace("MG12345^", &format!("LOAD-{c}-{i}^"))
                        .replace("|MG0002|", &format!("|L{c}-{i}|"));
                    let ack = conn.send(&message).await;
                    assert_eq!(ack.code(), "AA", "{}", ack.0);
                    assert_eq!(ack.control_id(), format!("L{c}-{i}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let total = CONNECTIONS * per_connection;
    eprintln!(
        "MLLP: {total} messages on {CONNECTIONS} connections in {elapsed:?}: {:.0} messages/s",
        total as f64 / elapsed.as_secs_f64()
    );
    let db = app.db.client().await;
    for _ in 0..500 + total / 4 {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM records WHERE resource_type = 'Patient'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == total as i64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not every acknowledged message reached the views");
}
