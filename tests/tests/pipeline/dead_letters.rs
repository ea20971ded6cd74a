//! `hiectl dead-letters`: the real binary lists what ingest rejected, and re-submits it through
//! ingest's public interfaces after a fix, against a real broker and PostgreSQL.

use std::time::{Duration, Instant};

use hie_tests::{workspace_binary, TestApp};
use serde_json::{json, Value};

use crate::hl7_mllp::{fixture, of_type, patient_id_when_known, records_when, Mllp, MERCY_AA};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn hiectl(app: &TestApp, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(workspace_binary("hiectl"))
        .arg("dead-letters")
        .args(args)
        .env("DATABASE_URL", app.db.url())
        .env("KAFKA_BROKERS", app.broker.address())
        .env("INGEST_URL", &app.ingest)
        .env("INGEST_MLLP_ADDR", app.mllp.to_string())
        .env_remove("HIE_SOURCE_API_KEY")
        .env("HIE_DATA_DIR", &app.drop_dir) // no demo-keys.json there
        .output()
        .await
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `list --json` until `ready` holds (the projector applies the topic within moments).
async fn list_when(app: &TestApp, args: &[&str], ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        let run = hiectl(app, &all).await;
        assert!(run.ok, "{}", run.stderr);
        let letters: Vec<Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if ready(&letters) {
            return letters;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "dead letters never matched: {letters:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_from_an_unregistered_source_is_resubmitted_after_registration() {
    let app = TestApp::spawn().await;
    let mut conn = Mllp::connect(&app).await;
    let ack = conn.send(&fixture("mercy_adt_a04.hl7")).await;
    assert_eq!(ack.code(), "AR", "{}", ack.0);

    let letters = list_when(&app, &["--source", "MERCY-GENERAL"], |l| l.len() == 1).await;
    let letter = &letters[0];
    assert_eq!(letter["channel"], "hl7v2_mllp");
    assert_eq!(letter["status"], "open");
    assert_eq!(letter["source_unregistered"], true);
    assert!(letter["reason"]
        .as_str()
        .unwrap()
        .contains("not a registered source"));
    assert!(
        letter.get("payload").is_none(),
        "list never prints payloads"
    );
    let id = letter["id"].as_str().unwrap().to_string();
    let table = hiectl(&app, &["list", "--channel", "mllp"]).await;
    assert!(
        table.stdout.contains(&id) && !table.stdout.contains("O'Neil"),
        "{}",
        table.stdout
    );
    let shown = hiectl(&app, &["show", &id]).await;
    assert!(
        shown.ok && shown.stdout.starts_with("MSH|"),
        "{}",
        shown.stderr
    );

    // Re-submitting before the fix: ingest refuses it again and dead-letters it anew; exit 1.
    let again = hiectl(&app, &["resubmit", &id]).await;
    assert!(!again.ok, "{}", again.stdout);
    assert!(again.stdout.contains("rejected again"), "{}", again.stdout);
    let letters = list_when(&app, &["--source", "MERCY-GENERAL"], |l| {
        l.len() == 1 && l[0]["id"] != id.as_str()
    })
    .await;
    let id = letters[0]["id"].as_str().unwrap().to_string();

    // The fix: register the source. The dry run sends nothing.
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;
    app.consent(MERCY_AA, "MG12345", "org-mercy", "grant").await;
    let dry = hiectl(
        &app,
        &[
            "resubmit",
            "--all",
            "--source",
            "MERCY-GENERAL",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        dry.ok && dry.stdout.contains(&id) && dry.stdout.contains("hl7v2_mllp"),
        "{}",
        dry.stdout
    );
    let run = hiectl(&app, &["resubmit", "--all", "--source", "MERCY-GENERAL"]).await;
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{id}\taccepted")),
        "{}",
        run.stdout
    );

    let token = app.token("org-mercy", &["physician"]);
    let patient = patient_id_when_known(&app, MERCY_AA, "MG12345").await;
    let (records, _) = records_when(&app, &token, &patient, |r| r.len() == 2).await;
    assert_eq!(
        of_type(&records, "Patient")[0]["meta"]["source"],
        "urn:hie:source:MERCY-GENERAL"
    );

    // Open no longer shows it; resubmitted does, with ingest's verdict; twice needs --force.
    list_when(&app, &["--source", "MERCY-GENERAL"], |l| l.is_empty()).await;
    let done = list_when(&app, &["--status", "resubmitted"], |l| {
        l.iter().any(|x| x["id"] == id.as_str())
    })
    .await;
    let done = done.iter().find(|x| x["id"] == id.as_str()).unwrap();
    assert_eq!(done["resubmit_outcome"], "accepted");
    let twice = hiectl(&app, &["resubmit", &id]).await;
    assert!(
        !twice.ok && twice.stderr.contains("already re-submitted"),
        "{}",
        twice.stderr
    );
    let forced = hiectl(&app, &["resubmit", &id, "--force"]).await;
    assert!(forced.ok, "{}", forced.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_fhir_payload_is_resubmitted_and_readable() {
    const AA: &str = "urn:oid:2.16.840.1.113883.3.77";
    let app = TestApp::spawn().await;
    let key = app.register_source("clinic", "org-clinic", AA).await;
    let bad = json!({"resourceType": "Patient", "id": "p-77", "name": [{"family": "Deadletter"}]});
    let r = app
        .post_fhir(
            "clinic",
            &key,
            "application/fhir+ndjson",
            format!("{bad}\n"),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 0, "{body}");

    let letters = list_when(&app, &["--source", "clinic", "--channel", "http"], |l| {
        l.len() == 1
    })
    .await;
    let id = letters[0]["id"].as_str().unwrap().to_string();
    let file = app.drop_dir.join("fixed.json");
    let shown = hiectl(&app, &["show", &id, "--out", file.to_str().unwrap()]).await;
    assert!(shown.ok, "{}", shown.stderr);
    let mut fixed: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(fixed, bad);
    fixed["identifier"] = json!([{"system": AA, "value": "M-77"}]);
    std::fs::write(&file, fixed.to_string()).unwrap();

    // Without the source's key nothing reaches ingest: failed, still open, exit 1.
    let nokey = hiectl(
        &app,
        &["resubmit", &id, "--payload", file.to_str().unwrap()],
    )
    .await;
    assert!(
        !nokey.ok && nokey.stdout.contains("failed\tno API key"),
        "{}",
        nokey.stdout
    );
    let run = hiectl(
        &app,
        &[
            "resubmit",
            &id,
            "--payload",
            file.to_str().unwrap(),
            "--api-key",
            &key,
        ],
    )
    .await;
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("accepted\tposition p"),
        "{}",
        run.stdout
    );

    app.consent(AA, "M-77", "org-clinic", "grant").await;
    let token = app.token("org-clinic", &["physician"]);
    let patient = patient_id_when_known(&app, AA, "M-77").await;
    let (records, _) = records_when(&app, &token, &patient, |r| r.len() == 1).await;
    assert_eq!(records[0]["name"][0]["family"], "Deadletter");
    list_when(&app, &["--source", "clinic"], |l| l.is_empty()).await;
}

/// A body refused as a whole (400) is a dead letter too; re-submitted still broken it is rejected
/// again (a new open letter), fixed it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_is_dead_lettered_whole_and_resubmitted_after_a_fix() {
    const AA: &str = "urn:oid:2.16.840.1.113883.3.78";
    let app = TestApp::spawn().await;
    let key = app.register_source("clinic", "org-clinic", AA).await;
    let good = crate::bundle(AA, "M-78", "p-78", &[("o-78", "2026-01-01T00:00:00Z", 7.0)]);
    let text = good.to_string();
    let truncated = &text[..text.len() - 20];
    let r = app
        .post_fhir(
            "clinic",
            &key,
            "application/fhir+json",
            truncated.to_string(),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);

    let letters = list_when(&app, &["--source", "clinic"], |l| l.len() == 1).await;
    let id = letters[0]["id"].as_str().unwrap().to_string();
    let file = app.drop_dir.join("whole.json");
    let shown = hiectl(&app, &["show", &id, "--out", file.to_str().unwrap()]).await;
    assert!(shown.ok, "{}", shown.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), truncated);

    // Still wrong (a Bundle type ingest does not take): rejected again, exit 1, a new letter.
    std::fs::write(
        &file,
        r#"{"resourceType":"Bundle","type":"searchset","entry":[]}"#,
    )
    .unwrap();
    let again = hiectl(
        &app,
        &[
            "resubmit",
            &id,
            "--payload",
            file.to_str().unwrap(),
            "--api-key",
            &key,
        ],
    )
    .await;
    assert!(
        !again.ok && again.stdout.contains("rejected again\tBundle.type"),
        "{}",
        again.stdout
    );
    let open = list_when(&app, &["--source", "clinic"], |l| {
        l.len() == 1 && l[0]["id"].as_str() != Some(id.as_str())
    })
    .await;
    let second = open[0]["id"].as_str().unwrap().to_string();

    std::fs::write(&file, &text).unwrap();
    let run = hiectl(
        &app,
        &[
            "resubmit",
            &second,
            "--payload",
            file.to_str().unwrap(),
            "--api-key",
            &key,
        ],
    )
    .await;
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    app.consent(AA, "M-78", "org-clinic", "grant").await;
    let token = app.token("org-clinic", &["physician"]);
    let patient = patient_id_when_known(&app, AA, "M-78").await;
    records_when(&app, &token, &patient, |r| r.len() == 2).await;
    list_when(&app, &["--source", "clinic"], |l| l.is_empty()).await;
}

/// Many letters selected by filter: one progress line each, a summary with the time taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_dead_letters_are_resubmitted_by_filter_with_progress() {
    const N: usize = 100;
    let app = TestApp::spawn().await;
    let mut conn = Mllp::connect(&app).await;
    for i in 0..N {
        let message = fixture("mercy_adt_a04.hl7")
            .replace("MG12345", &format!("BULK{i}"))
            .replace("|MG0001|", &format!("|BULK{i}|"));
        assert_eq!(conn.send(&message).await.code(), "AR");
    }
    list_when(
        &app,
        &["--source", "MERCY-GENERAL", "--limit", "1000"],
        |l| l.len() == N,
    )
    .await;
    app.register_source("MERCY-GENERAL", "org-mercy", MERCY_AA)
        .await;

    let run = hiectl(
        &app,
        &[
            "resubmit",
            "--all",
            "--source",
            "MERCY-GENERAL",
            "--reason-contains",
            "NOT A REGISTERED",
        ],
    )
    .await;
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), N);
    assert!(lines[0].starts_with(&format!("[1/{N}] ")), "{}", lines[0]);
    assert!(lines.iter().all(|l| l.ends_with("\taccepted")));
    eprintln!("{}", run.stderr.trim());
    assert!(run
        .stderr
        .contains(&format!("{N} accepted, 0 rejected again, 0 failed")));
    patient_id_when_known(&app, MERCY_AA, &format!("BULK{}", N - 1)).await;
    list_when(&app, &["--source", "MERCY-GENERAL"], |l| l.is_empty()).await;
}
