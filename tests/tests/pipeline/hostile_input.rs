//! Hostile input at ingest's door (issue 12, API.md "Limits and hostile input"): control
//! characters FHIR and HL7 forbid are refused per entry or with `AR`, an unregistered MLLP sender
//! reaches nothing but the dead letters, and every limit a stranger could push (MLLP frame size,
//! idle time and connections, HL7 parser caps, HTTP time and concurrency, NDJSON body memory,
//! metric labels) holds through the real services.

use std::time::{Duration, Instant};

use hie_tests::{Services, Stack, TestApp};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::StatusCode;
use schemas::{RecordReceived, RecordRejected};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hl7_mllp::{fixture, Mllp, MERCY_AA};

const AA: &str = "urn:oid:2.16.840.1.113883.3.4242";

/// Every message on `topic` up to its end now (all partitions), as raw payloads.
fn topic_payloads(app: &TestApp, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", app.broker.address())
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut out = Vec::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < deadline, "{topic}/{p} not read to its end");
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            out.push(m.payload().unwrap_or_default().to_vec());
            if m.offset() + 1 >= high {
                break;
            }
        }
    }
    out
}

fn records(app: &TestApp) -> Vec<RecordReceived> {
    topic_payloads(app, schemas::topics::RECORDS.name)
        .iter()
        .filter(|p| schemas::is::<RecordReceived>(p))
        .map(|p| schemas::decode::<RecordReceived>(p).unwrap())
        .collect()
}

fn dead_letters(app: &TestApp) -> Vec<RecordRejected> {
    topic_payloads(app, schemas::topics::DEAD_LETTERS.name)
        .iter()
        .filter(|p| schemas::is::<RecordRejected>(p))
        .map(|p| schemas::decode::<RecordRejected>(p).unwrap())
        .collect()
}

/// MSA-1 and ERR-3's code of an ACK.
fn ack_codes(ack: &str) -> (String, String) {
    let field = |seg: &str, n: usize| {
        ack.split('\r')
            .find(|s| s.starts_with(seg))
            .and_then(|s| s.split('|').nth(n))
            .unwrap_or("")
            .to_string()
    };
    let err = field("ERR", 3);
    (
        field("MSA", 1),
        err.split('^').next().unwrap_or("").to_string(),
    )
}

/// The mercy ORU with its control id and MRN replaced, so its records are told apart.
fn oru(control_id: &str, mrn: &str, facility: &str) -> String {
    fixture("mercy_oru_r01.hl7")
        .replace("|MG0003|", &format!("|{control_id}|"))
        .replace("MG12345", mrn)
        .replace("|MERCY-GENERAL|", &format!("|{facility}|"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_unregistered_senders_are_refused_at_the_door() {
    let app = TestApp::spawn().await;
    let key = app.register_source("ctl-src", "org-ctl", AA).await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;

    // FHIR: U+0000 (and any C0 but tab, CR, LF) rejects that entry only, naming the element.
    let mut bundle = crate::bundle(
        AA,
        "CTL-1",
        "p-ctl",
        &[
            ("o-good", "2024-01-01T00:00:00Z", 1.0),
            ("o-nul", "2024-01-01T00:00:00Z", 2.0),
        ],
    );
    bundle["entry"][2]["resource"]["note"] = json!([{"text": "secret\u{0}value"}]);
    bundle["entry"][1]["resource"]["note"] = json!([{"text": "tab\tand\r\nnewlines are fine"}]);
    let r = app
        .post_fhir("ctl-src", &key, "application/fhir+json", bundle.to_string())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"][0]["index"], 2);
    let error = body["rejected"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("Observation.note[0].text holds a control character"),
        "{error}"
    );
    assert!(!error.contains("secret"));
    let position = body["position"].as_str().unwrap().to_string();

    // NDJSON: the same, one line.
    let ndjson = format!(
        "{}\n{}\n",
        json!({"resourceType": "Organization", "id": "org-ok", "name": "fine"}),
        json!({"resourceType": "Organization", "id": "org-bad", "name": "bell\u{7}"})
    );
    let r = app
        .post_fhir("ctl-src", &key, "application/fhir+ndjson", ndjson)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["rejected"][0]["index"], 1);

    // HL7 over MLLP from a registered source: a NUL in OBX-5 is AR (102), a NUL spelled as an
    // escape sequence too; nothing of either is published.
    let mut mllp = Mllp::connect(&app).await;
    let nul = oru("NUL-1", "NUL111", "MERCY-GENERAL").replace("||182|", "||18\u{0}2|");
    let ack = mllp.send(&nul).await;
    assert_eq!(ack_codes(&ack.0), ("AR".into(), "102".into()), "{}", ack.0);
    assert!(!ack.0.contains('\u{0}'));
    let escaped = oru("NUL-2", "NUL222", "MERCY-GENERAL").replace("||182|", "||18\\X00\\2|");
    let ack = mllp.send(&escaped).await;
    assert_eq!(ack_codes(&ack.0), ("AR".into(), "102".into()), "{}", ack.0);

    // The message: the NUL ORU^R01 from a facility nobody registered. AR (204), and it is
    // still dead-lettered, with its bytes, under no source.
    let stranger = oru("NUL-3", "NUL333", "NOBODY-REGISTERED").replace("||182|", "||18\u{0}2|");
    let ack = mllp.send(&stranger).await;
    assert_eq!(ack_codes(&ack.0), ("AR".into(), "204".into()), "{}", ack.0);

    // A clean message on the same connection still goes through.
    let ack = mllp.send(&oru("OK-1", "OK111", "MERCY-GENERAL")).await;
    assert_eq!(ack_codes(&ack.0).0, "AA", "{}", ack.0);

    // The ACKs came after the broker: what is on the log now is all there will be.
    let published = records(&app);
    assert!(published.iter().any(|r| r.message_id == "OK-1"));
    for r in &published {
        assert!(
            !["NUL-1", "NUL-2", "NUL-3"].contains(&r.message_id.as_str()),
            "a refused message reached the records topic"
        );
        assert!(!r.resource_json.contains("\\u0000") && !r.resource_json.contains('\u{0}'));
    }
    let letters = dead_letters(&app);
    for id in ["NUL-1", "NUL-2", "NUL-3"] {
        let letter = letters
            .iter()
            .find(|l| l.message_id == id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered"));
        assert_eq!(letter.channel, "hl7v2_mllp");
        let expected_source = (id != "NUL-3").then(|| "MERCY-GENERAL".to_string());
        assert_eq!(letter.source_id, expected_source, "{id}");
    }
    let stranger_letter = letters.iter().find(|l| l.message_id == "NUL-3").unwrap();
    assert!(
        stranger_letter.payload.contains(&0u8),
        "the raw bytes, NUL included"
    );
    assert!(letters
        .iter()
        .any(|l| l.index == Some(2) && l.source_id.as_deref() == Some("ctl-src")));

    // The views keep moving past all of it: the accepted observation is readable.
    let token = app.token("org-ctl", &["physician"]);
    app.consent(AA, "CTL-1", "org-ctl", "grant").await;
    let id = app.patient_id(AA, "CTL-1", Some(&position)).await;
    let fresh = app
        .post_bundle_ok(
            "ctl-src",
            &key,
            &crate::bundle(
                AA,
                "CTL-1",
                "p-ctl",
                &[("o-late", "2024-01-02T00:00:00Z", 3.0)],
            ),
        )
        .await;
    let r = app
        .get(&format!("/v1/patients/{id}/records"), &token, Some(&fresh))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the views did not catch up");
    let body: Value = r.json().await.unwrap();
    let ids: Vec<&str> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"o-good") && ids.contains(&"o-late"),
        "{ids:?}"
    );
    assert!(!ids.contains(&"o-nul"));
}

/// Connect, send nothing, and see whether the server closes: `Some(elapsed)` if it did.
async fn closed_within(addr: std::net::SocketAddr, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(start.elapsed()),
        Ok(Ok(_)) => panic!("the server sent something unasked"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_limits_on_frames_connections_idle_time_and_parser_caps() {
    let app = TestApp::spawn_with(Services {
        ingest_limits: ingest::config::Limits {
            mllp_max_frame_bytes: 64 * 1024,
            mllp_idle: Duration::from_secs(2),
            mllp_max_connections: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;

    // Connections: three are served; a fourth is closed at once; when one goes, one comes.
    let mut held = Vec::new();
    for i in 0..3 {
        let mut c = Mllp::connect(&app).await;
        let ack = c
            .send(&oru(&format!("C-{i}"), "CONN1", "MERCY-GENERAL"))
            .await;
        assert_eq!(ack_codes(&ack.0).0, "AA", "{}", ack.0);
        held.push(c);
    }
    assert!(
        closed_within(app.mllp, Duration::from_millis(1500))
            .await
            .is_some(),
        "a fourth connection was served"
    );
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Mllp::connect(&app).await;
    let ack = c.send(&oru("C-3", "CONN1", "MERCY-GENERAL")).await;
    assert_eq!(ack_codes(&ack.0).0, "AA", "{}", ack.0);
    drop(c);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A frame over the limit: AR with the limit named, dead-lettered without its content, and
    // the connection goes on with the next frame.
    let mut c = Mllp::connect(&app).await;
    let big = oru("BIG-1", "BIG1", "MERCY-GENERAL")
        .replace("Repeat if clinically indicated.", &"x".repeat(100 * 1024));
    let ack = c.send(&big).await;
    assert_eq!(ack_codes(&ack.0).0, "AR", "{}", ack.0);
    assert!(ack.0.contains("INGEST_MLLP_MAX_FRAME_BYTES"), "{}", ack.0);
    assert!(
        ack.0.contains("|BIG-1|"),
        "the AR answers the message: {}",
        ack.0
    );
    let ack = c.send(&oru("AFTER-BIG", "BIG1", "MERCY-GENERAL")).await;
    assert_eq!(ack_codes(&ack.0).0, "AA", "{}", ack.0);

    // Parser caps: more fields, repetitions or segments than the caps is AR, not a panic.
    let wide = format!(
        "{}\rZZZ{}",
        oru("WIDE-1", "CAP1", "MERCY-GENERAL").trim_end(),
        "|".repeat(1001)
    );
    let ack = c.send(&wide).await;
    assert_eq!(ack_codes(&ack.0), ("AR".into(), "100".into()), "{}", ack.0);
    let reps = format!(
        "{}\rZZZ|{}",
        oru("REPS-1", "CAP1", "MERCY-GENERAL").trim_end(),
        "~".repeat(1000)
    );
    let ack = c.send(&reps).await;
    assert_eq!(ack_codes(&ack.0).0, "AR", "{}", ack.0);
    let letters = dead_letters(&app);
    let big_letter = letters.iter().find(|l| l.message_id == "BIG-1").unwrap();
    assert!(big_letter.payload.is_empty());
    assert_eq!(big_letter.source_id.as_deref(), Some("MERCY-GENERAL"));
    assert!(records(&app).iter().all(|r| r.message_id != "BIG-1"));

    // Idle: a connection that sends nothing is closed after INGEST_MLLP_IDLE_SECONDS.
    let closed = closed_within(app.mllp, Duration::from_secs(6)).await;
    let closed = closed.expect("an idle connection was kept open");
    assert!(closed >= Duration::from_millis(1500), "{closed:?}");

    let metrics = app
        .http
        .get(format!("{}/metrics", app.ingest))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for limit in ["connections", "frame_bytes", "idle"] {
        assert!(
            metrics.contains(&format!(
                "hie_ingest_mllp_refusals_total{{limit=\"{limit}\"}}"
            )),
            "{limit} not counted"
        );
    }
}

/// A raw HTTP/1.1 request whose body stops after its first bytes; the connection stays open.
async fn stalled_request(base: &str, source: &str, key: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/sources/{source}/fhir HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/fhir+ndjson\r\nContent-Length: 100000\r\n\r\n{{\"resourceType\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The status line's code of what the server answered on `s`, within `within`.
async fn status_of(s: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_bounded_in_time_and_number() {
    let app = TestApp::spawn_with(Services {
        ingest_limits: ingest::config::Limits {
            http_request_timeout: Duration::from_secs(3),
            http_max_concurrent_requests: 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let key = app.register_source("slow-src", "org-slow", AA).await;

    // Two requests whose bodies never finish hold the two slots: a third is 503 at once, while
    // /healthz and /metrics stay outside the limit.
    let started = Instant::now();
    let mut a = stalled_request(&app.ingest, "slow-src", &key).await;
    let mut b = stalled_request(&app.ingest, "slow-src", &key).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = app
        .post_fhir(
            "slow-src",
            &key,
            "application/fhir+json",
            crate::bundle(AA, "S1", "p", &[]).to_string(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "overloaded");
    let health = app
        .http
        .get(format!("{}/healthz", app.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Neither stalled request is kept past the timeout: 408.
    assert_eq!(status_of(&mut a, Duration::from_secs(6)).await, Some(408));
    assert_eq!(status_of(&mut b, Duration::from_secs(2)).await, Some(408));
    assert!(started.elapsed() >= Duration::from_millis(2500));

    // The slots are free again.
    let r = app
        .post_fhir(
            "slow-src",
            &key,
            "application/fhir+json",
            crate::bundle(AA, "S1", "p", &[]).to_string(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_never_carry_what_a_sender_wrote() {
    let app = TestApp::spawn().await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    let key = app.register_source("lbl-src", "org-lbl", AA).await;

    // An invented HTTP method, an unregistered source in a path, an unregistered MSH-4, and a
    // payload full of would-be label values.
    let r = app
        .http
        .request(
            reqwest::Method::from_bytes(b"PROBEMETHOD").unwrap(),
            format!("{}/v1/consents", app.ingest),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let r = app
        .post_fhir("probe-source-id", &key, "application/fhir+json", "{}")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let mut mllp = Mllp::connect(&app).await;
    let ack = mllp.send(&oru("L-1", "LBL1", "PROBE-FACILITY")).await;
    assert_eq!(ack_codes(&ack.0).0, "AR");
    let ack = mllp.send("MSH|^~\\&|A|PROBE-BROKEN\rgarbage").await;
    assert_ne!(ack_codes(&ack.0).0, "AA");
    let ack = mllp.send(&oru("L-2", "LBL1", "MERCY-GENERAL")).await;
    assert_eq!(ack_codes(&ack.0).0, "AA");
    let mut bundle = crate::bundle(AA, "LBL-1", "p", &[]);
    bundle["entry"][0]["resource"]["meta"] = json!({"source": "probe-meta-source"});
    bundle["id"] = json!("probe-bundle-id");
    let r = app
        .post_fhir("lbl-src", &key, "application/fhir+json", bundle.to_string())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let metrics = app
        .http
        .get(format!("{}/metrics", app.ingest))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for probe in [
        "PROBEMETHOD",
        "probe-source-id",
        "PROBE-FACILITY",
        "PROBE-BROKEN",
        "probe-meta-source",
        "probe-bundle-id",
    ] {
        assert!(!metrics.contains(probe), "{probe} became a label");
    }
    // Every label value is from a closed set.
    let allowed_sources = ["MERCY-GENERAL", "lbl-src", "unknown"];
    let allowed_channels = ["fhir_bundle", "fhir_ndjson", "hl7v2_mllp", "drop_folder"];
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
    {
        let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
        for pair in labels.split("\",") {
            let (name, value) = pair.split_once("=\"").unwrap();
            let value = value.trim_end_matches('"');
            let ok = match name {
                "source" => allowed_sources.contains(&value),
                "channel" => allowed_channels.contains(&value),
                "method" => [
                    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
                    "other",
                ]
                .contains(&value),
                "route" => value == "unmatched" || value.starts_with('/'),
                "status" => value.parse::<u16>().is_ok(),
                "topic" => value.starts_with("hie."),
                _ => true,
            };
            assert!(ok, "label {name}={value:?} in {line}");
        }
    }
}

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_ndjson_body_is_published_in_chunks_in_flat_memory() {
    let stack = Stack::start(&[]).await;
    let key = stack.register_source("bulk-src", "org-bulk", AA).await;
    let limit = 64 * 1024 * 1024;

    // One patient, then ~2 KiB observations up to (just under) the 64 MiB body limit.
    let mut body = json!({"resourceType": "Patient", "id": "bulk-p",
        "identifier": [{"system": AA, "value": "BULK-1"}]})
    .to_string();
    body.push('\n');
    let note = "n".repeat(1800);
    let mut lines = 0usize;
    loop {
        let line = json!({"resourceType": "Observation", "id": format!("bulk-o{lines}"),
            "status": "final", "code": {"text": "bulk"}, "subject": {"reference": "Patient/bulk-p"},
            "valueQuantity": {"value": lines}, "note": [{"text": note}]})
        .to_string();
        if body.len() + line.len() + 1 > limit {
            break;
        }
        body.push_str(&line);
        body.push('\n');
        lines += 1;
    }
    let size = body.len();
    assert!(size > limit - 4096 && size <= limit);

    let pid = stack.pid("ingest");
    let before = peak_rss_kib(pid);
    let started = Instant::now();
    let r = stack
        .http
        .post(format!("{}/v1/sources/bulk-src/fhir", stack.ingest))
        .bearer_auth(&key)
        .header("content-type", "application/fhir+ndjson")
        .body(body)
        .timeout(Duration::from_secs(280))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["accepted"], lines + 1);
    assert_eq!(answer["rejected"], json!([]));
    let peak = peak_rss_kib(pid);
    eprintln!(
        "64 MiB NDJSON: {size} bytes, {} records in {:.1} s; ingest peak RSS {} MiB before, {} MiB after",
        lines + 1,
        started.elapsed().as_secs_f64(),
        before / 1024,
        peak / 1024
    );
    // Whole-body parsing held the body, its lines and their JSON trees at once (several times
    // 64 MiB); in chunks, ingest stays within a fraction of the body's size above its start.
    assert!(
        peak < before + 48 * 1024,
        "ingest's peak RSS grew from {before} KiB to {peak} KiB"
    );

    // Over the limit with a declared length: 413 before anything is read.
    let r = stack
        .http
        .post(format!("{}/v1/sources/bulk-src/fhir", stack.ingest))
        .bearer_auth(&key)
        .header("content-type", "application/fhir+ndjson")
        .body(vec![b'\n'; limit + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// A consent or a registration naming a NUL is refused at the door (400 naming the field): a
/// consent the views cannot store would withhold the patient's data until an operator acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_and_registrations_with_control_characters_are_refused() {
    let app = TestApp::spawn().await;
    let consent = |mrn: &str| {
        serde_json::json!({
            "patient": {"assigning_authority": "urn:oid:1.2.3.4242", "mrn": mrn},
            "organization_id": "*", "decision": "deny", "method": "written"
        })
    };
    let r = app
        .http
        .post(format!("{}/v1/consents", app.ingest))
        .bearer_auth(app.admin())
        .json(&consent("C\u{0}1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("patient.mrn"),
        "{body}"
    );
    let r = app
        .http
        .put(format!("{}/v1/sources/nul-src", app.ingest))
        .bearer_auth(app.admin())
        .json(
            &serde_json::json!({"name": "Bad\u{7}Name", "organization_id": "org-x",
                                   "feed": "batch", "assigning_authority": "urn:oid:1.2"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    // The same consent without the NUL is taken.
    let r = app
        .http
        .post(format!("{}/v1/consents", app.ingest))
        .bearer_auth(app.admin())
        .json(&consent("C1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
}
