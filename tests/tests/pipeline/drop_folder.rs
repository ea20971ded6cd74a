//! The drop folder: files renamed into `<DROP_DIR>/<source>/inbox/`, receipts, error lists,
//! re-drops, and files left in `processing/` by a crash.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hie_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

const AA: &str = "urn:oid:2.16.840.1.113883.3.4242";

/// Write `content` beside the inbox, then rename it in: the only way the contract allows.
fn drop_file(app: &TestApp, source: &str, name: &str, content: &[u8]) {
    let base = app.drop_dir.join(source);
    std::fs::create_dir_all(base.join("inbox")).unwrap();
    let tmp = base.join(format!(".{name}.partial"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, base.join("inbox").join(name)).unwrap();
}

async fn receipt(app: &TestApp, source: &str, stage: &str, name: &str, timeout: Duration) -> Value {
    let path = app
        .drop_dir
        .join(source)
        .join(stage)
        .join(format!("{name}.receipt.json"));
    let start = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            return serde_json::from_slice(&bytes).unwrap();
        }
        assert!(
            start.elapsed() < timeout,
            "no receipt at {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn patient_line(id: &str, mrn: &str) -> String {
    json!({"resourceType": "Patient", "id": id, "identifier": [{"system": AA, "value": mrn}],
           "name": [{"family": "Dropped", "given": ["Dana"]}]})
    .to_string()
}

fn observation_line(id: &str, patient: &str, value: f64) -> String {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
           "subject": {"reference": format!("Patient/{patient}")},
           "valueQuantity": {"value": value, "unit": "mg/dL"}})
    .to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    // The harness has no sha2; `sha256sum` is on every machine that runs these tests.
    let dir = std::env::temp_dir().join(format!("hie-sha-{}", uuid::Uuid::new_v4()));
    std::fs::write(&dir, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&dir);
    let mut s = String::new();
    write!(
        s,
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    )
    .unwrap();
    s
}

async fn observations(app: &TestApp, mrn: &str, position: &str) -> Vec<Value> {
    let id = app.patient_id(AA, mrn, Some(position)).await;
    let token = app.token("org-drop", &["physician"]);
    let r = app
        .get(
            &format!("/v1/patients/{id}/records?type=Observation"),
            &token,
            Some(position),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["records"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_file_is_ingested_with_a_receipt_and_its_bad_lines_listed() {
    let app = TestApp::spawn().await;
    app.register_source("lab", "org-drop", AA).await;
    app.consent(AA, "D1", "org-drop", "grant").await;
    let lines = [
        patient_line("p1", "D1"),
        observation_line("o1", "p1", 1.0),
        "not json".to_string(),
        String::new(),
        observation_line("o2", "nobody", 2.0),
        observation_line("o3", "p1", 3.0),
    ];
    let content = lines.join("\n") + "\n";
    drop_file(&app, "lab", "batch1.ndjson", content.as_bytes());

    let r = receipt(
        &app,
        "lab",
        "done",
        "batch1.ndjson",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r["file"], "batch1.ndjson");
    assert_eq!(r["accepted"], 3, "{r}");
    assert_eq!(r["rejected"], 2);
    assert_eq!(r["sha256"], sha256_hex(content.as_bytes()));
    assert!(r["first_position"].is_string() && r["last_position"].is_string());
    assert!(r.get("duplicate_of").is_none());
    let done = app.drop_dir.join("lab/done");
    assert!(done.join("batch1.ndjson").is_file());
    assert!(!app.drop_dir.join("lab/inbox/batch1.ndjson").exists());
    let errors: Vec<Value> = std::fs::read_to_string(done.join("batch1.ndjson.errors.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let error_lines: Vec<i64> = errors.iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(error_lines, vec![3, 5]);

    let position = r["last_position"].as_str().unwrap();
    let mut values: Vec<f64> = observations(&app, "D1", position)
        .await
        .iter()
        .map(|o| o["valueQuantity"]["value"].as_f64().unwrap())
        .collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![1.0, 3.0]);
    let db = app.db.client().await;
    let channels: Vec<String> = db
        .query(
            "SELECT DISTINCT channel FROM records WHERE source_id = 'lab'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(channels, vec!["drop_folder".to_string()]);

    // The same bytes dropped again, under another name: nothing ingested, and the receipt says so.
    drop_file(&app, "lab", "batch1-again.ndjson", content.as_bytes());
    let r = receipt(
        &app,
        "lab",
        "done",
        "batch1-again.ndjson",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r["accepted"], 0);
    assert_eq!(r["duplicate_of"], "batch1.ndjson");

    // Rejected lines are dead letters too, with the drop-folder channel.
    let mut dead = 0i64;
    for _ in 0..100 {
        dead = db
            .query_one(
                "SELECT count(*) FROM dead_letters WHERE channel = 'drop_folder'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if dead == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_batch_file_and_a_file_that_is_not_ours() {
    let app = TestApp::spawn().await;
    let mercy = "urn:oid:2.16.840.1.113883.3.1001";
    app.register_source("MERCY-GENERAL", "org-mercy", mercy)
        .await;
    let fixture = |n: &str| {
        std::fs::read_to_string(format!("{}/fixtures/hl7/{n}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let bad = fixture("mercy_adt_a08.hl7").replace("ADT^A08^ADT_A01", "ADT^A40^ADT_A39");
    let file = format!(
        "FHS|^~\\&|EPIC|MERCY-GENERAL\rBHS|^~\\&|EPIC|MERCY-GENERAL\r{}{}{}{}BTS|4\rFTS|1\r",
        fixture("mercy_adt_a04.hl7"),
        bad,
        fixture("mercy_adt_a08.hl7"),
        fixture("mercy_oru_r01.hl7")
    );
    drop_file(&app, "MERCY-GENERAL", "adt.hl7", file.as_bytes());
    let r = receipt(
        &app,
        "MERCY-GENERAL",
        "done",
        "adt.hl7",
        Duration::from_secs(10),
    )
    .await;
    // A04 and A08: Patient + Encounter each; ORU: a report and six results.
    assert_eq!(r["accepted"], 11, "{r}");
    assert_eq!(r["rejected"], 1);
    let errors = std::fs::read_to_string(
        app.drop_dir
            .join("MERCY-GENERAL/done/adt.hl7.errors.ndjson"),
    )
    .unwrap();
    assert!(errors.contains("merge"), "{errors}");

    // Unknown extension: the whole file fails, with the reason in its receipt.
    drop_file(&app, "MERCY-GENERAL", "notes.txt", b"hello");
    let r = receipt(
        &app,
        "MERCY-GENERAL",
        "failed",
        "notes.txt",
        Duration::from_secs(10),
    )
    .await;
    assert!(r["error"].as_str().unwrap().contains("unsupported"));
    assert!(app
        .drop_dir
        .join("MERCY-GENERAL/failed/notes.txt")
        .is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_json_file_and_a_malformed_one() {
    let app = TestApp::spawn().await;
    app.register_source("lab", "org-drop", AA).await;
    app.consent(AA, "D3", "org-drop", "grant").await;
    let bundle = crate::bundle(AA, "D3", "p3", &[("b1", "2024-03-01T10:00:00Z", 7.0)]);
    drop_file(&app, "lab", "bundle.json", bundle.to_string().as_bytes());
    let r = receipt(&app, "lab", "done", "bundle.json", Duration::from_secs(10)).await;
    assert_eq!(r["accepted"], 2, "{r}");
    let position = r["last_position"].as_str().unwrap();
    assert_eq!(observations(&app, "D3", position).await.len(), 1);

    drop_file(&app, "lab", "broken.json", b"{\"resourceType\": \"Bundle\"");
    let r = receipt(
        &app,
        "lab",
        "failed",
        "broken.json",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r["accepted"], 0);
    assert!(r["error"].as_str().unwrap().contains("JSON"), "{r}");
}

/// A file left in `processing/` (ingest was killed after claiming it, maybe after publishing
/// part of it) is finished on the next start; what was already published is not doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_interrupted_mid_way_is_finished_and_nothing_is_doubled() {
    let app = TestApp::spawn().await;
    app.register_source("lab", "org-drop", AA).await;
    app.consent(AA, "D2", "org-drop", "grant").await;
    let first_half: Vec<String> = std::iter::once(patient_line("p2", "D2"))
        .chain((0..600).map(|i| observation_line(&format!("a{i}"), "p2", i as f64)))
        .collect();
    // The first part went through before the "crash"...
    drop_file(
        &app,
        "lab",
        "part.ndjson",
        (first_half.join("\n") + "\n").as_bytes(),
    );
    receipt(&app, "lab", "done", "part.ndjson", Duration::from_secs(20)).await;
    let db = app.db.client().await;
    let before: Vec<(String, String)> = db
        .query(
            "SELECT resource_id, event_id FROM records WHERE source_id = 'lab' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    // ...and the whole file is found in processing/ at the next start.
    let whole: Vec<String> = first_half
        .iter()
        .cloned()
        .chain((600..900).map(|i| observation_line(&format!("a{i}"), "p2", i as f64)))
        .collect();
    let processing: PathBuf = app.drop_dir.join("lab/processing");
    std::fs::create_dir_all(&processing).unwrap();
    let tmp = app.drop_dir.join("lab/.whole.partial");
    std::fs::write(&tmp, whole.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp, processing.join("whole.ndjson")).unwrap();
    let r = receipt(&app, "lab", "done", "whole.ndjson", Duration::from_secs(20)).await;
    assert_eq!(r["accepted"], 901);
    assert!(!Path::new(&processing.join("whole.ndjson")).exists());

    let position = r["last_position"].as_str().unwrap();
    assert_eq!(observations(&app, "D2", position).await.len(), 900);
    let after: Vec<(String, String)> = db
        .query(
            "SELECT resource_id, event_id FROM records WHERE source_id = 'lab' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(after.len(), 901);
    // The records published before the crash are untouched by their second publication.
    for row in &before {
        assert!(after.contains(row), "{} changed", row.0);
    }
}

/// The real ingest binary on its own drop folder (HTTP on a free port, MLLP off).
fn ingest_process(app: &TestApp, drop_dir: &Path) -> std::process::Child {
    std::process::Command::new(hie_tests::workspace_binary("ingest"))
        .env("KAFKA_BROKERS", app.broker.address())
        .env("HIE_JWT_SECRET", "drop-test-secret-0123456789abcdef")
        .env(
            "INGEST_HTTP_ADDR",
            format!("127.0.0.1:{}", hie_tests::free_port()),
        )
        .env("INGEST_MLLP_ADDR", "off")
        .env("DROP_DIR", drop_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start the ingest binary")
}

/// The real ingest binary, SIGKILLed while it streams a file, then started again: the file is
/// finished, no line lost, none doubled in the views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_mid_file_finishes_it_after_a_restart() {
    const LINES: usize = 60_000;
    let app = TestApp::spawn().await;
    app.register_source("lab", "org-drop", AA).await;
    let drop_dir = std::env::temp_dir().join(format!("hie-drop-kill-{}", uuid::Uuid::new_v4()));
    let inbox = drop_dir.join("lab/inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let tmp = drop_dir.join("lab/.big.partial");
    std::fs::write(&tmp, large_ndjson(LINES)).unwrap();
    std::fs::rename(&tmp, inbox.join("big.ndjson")).unwrap();

    let start_ingest = || ingest_process(&app, &drop_dir);
    let db = app.db.client().await;
    let count = || async {
        db.query_one("SELECT count(*) FROM records WHERE source_id = 'lab'", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    let mut ingest = start_ingest();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count().await == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing from the file reached the views"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ingest.kill().unwrap(); // SIGKILL
    ingest.wait().unwrap();
    let at_kill = count().await;
    assert!(
        drop_dir.join("lab/processing/big.ndjson").is_file(),
        "the file was finished before the kill ({at_kill} records): make it larger"
    );
    eprintln!("killed ingest with {at_kill} of {LINES} records in the views");

    let mut ingest = start_ingest();
    let receipt_path = drop_dir.join("lab/done/big.ndjson.receipt.json");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !receipt_path.is_file() {
        assert!(
            Instant::now() < deadline,
            "the file was not finished after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ingest.kill().unwrap();
    ingest.wait().unwrap();
    let r: Value = serde_json::from_slice(&std::fs::read(&receipt_path).unwrap()).unwrap();
    assert_eq!(r["accepted"], LINES as i64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count().await < LINES as i64 {
        assert!(
            Instant::now() < deadline,
            "lines lost: {} of {LINES}",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count().await, LINES as i64);
    let patients: i64 = db
        .query_one("SELECT count(*) FROM patients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(patients, 10);
    let _ = std::fs::remove_dir_all(&drop_dir);
}

/// Throughput on a file big enough to need many chunks; prints records/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_streams_in_chunks() {
    const LINES: usize = 20_000;
    let app = TestApp::spawn().await;
    app.register_source("lab", "org-drop", AA).await;
    let content = large_ndjson(LINES);
    let start = Instant::now();
    drop_file(&app, "lab", "large.ndjson", content.as_bytes());
    let r = receipt(
        &app,
        "lab",
        "done",
        "large.ndjson",
        Duration::from_secs(120),
    )
    .await;
    let elapsed = start.elapsed();
    assert_eq!(r["accepted"], LINES as i64);
    eprintln!(
        "drop folder: {LINES} lines in {elapsed:?}: {:.0} records/s",
        LINES as f64 / elapsed.as_secs_f64()
    );
}

/// Ten patients, each followed by their observations.
fn large_ndjson(lines: usize) -> String {
    let mut out = String::with_capacity(lines * 200);
    for i in 0..lines {
        let patient = format!("lp{}", i / (lines / 10).max(1));
        if i % (lines / 10).max(1) == 0 {
            out.push_str(&patient_line(&patient, &format!("L{patient}")));
        } else {
            out.push_str(&observation_line(&format!("lo{i}"), &patient, i as f64));
        }
        out.push('\n');
    }
    out
}

/// Peak memory on a file of a million lines, of the ingest binary alone (its VmHWM before and
/// after): `tests/run --run-ignored only -E 'test(million)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "large: about a minute"]
async fn a_million_line_file_in_constant_memory() {
    use std::io::Write;
    const LINES: usize = 1_000_000;
    let app = TestApp::spawn().await;
    app.register_source("lab", "org-drop", AA).await;
    let drop_dir = std::env::temp_dir().join(format!("hie-drop-million-{}", uuid::Uuid::new_v4()));
    let base = drop_dir.join("lab");
    std::fs::create_dir_all(base.join("inbox")).unwrap();
    let tmp = base.join(".million.partial");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
        for i in 0..LINES {
            let patient = format!("mp{}", i / 1000);
            let line = if i % 1000 == 0 {
                patient_line(&patient, &format!("M{patient}"))
            } else {
                observation_line(&format!("mo{i}"), &patient, i as f64)
            };
            writeln!(w, "{line}").unwrap();
        }
    }
    let size = std::fs::metadata(&tmp).unwrap().len();
    let mut ingest = ingest_process(&app, &drop_dir);
    // Let it start (topics, registry) before the baseline is taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = peak_rss_kib(ingest.id());
    let start = Instant::now();
    std::fs::rename(&tmp, base.join("inbox/million.ndjson")).unwrap();
    let receipt_path = base.join("done/million.ndjson.receipt.json");
    while !receipt_path.is_file() {
        assert!(start.elapsed() < Duration::from_secs(3600), "not finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = start.elapsed();
    let rss_after = peak_rss_kib(ingest.id());
    ingest.kill().unwrap();
    ingest.wait().unwrap();
    let r: Value = serde_json::from_slice(&std::fs::read(&receipt_path).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&drop_dir);
    assert_eq!(r["accepted"], LINES as i64);
    let growth_mib = (rss_after - rss_before) as f64 / 1024.0;
    eprintln!(
        "drop folder: {LINES} lines ({} MiB) in {elapsed:?}: {:.0} records/s; ingest peak RSS {:.1} MiB -> {:.1} MiB",
        size / (1024 * 1024),
        LINES as f64 / elapsed.as_secs_f64(),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    assert!(
        growth_mib < 64.0,
        "ingest's peak RSS grew {growth_mib:.1} MiB"
    );
}

fn peak_rss_kib(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
