//! The master patient index (issue #14): quality of the online matcher on the generated corpus
//! (pairwise precision, recall, F1 against its truth) beside the deterministic rule many MPIs
//! start with (family + given + birth date), and its speed with a million identities known.
//! Pure CPU in this process: the matcher as the projector runs it, without the broker.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::Bench;
use crate::load::{Latencies, AUTHORITY};
use crate::report::{Report, Row};
use bench::mpi_quality;

/// The second source of the link measurement.
const OTHER: &str = "bench-clinic";
const OTHER_AUTHORITY: &str = "urn:oid:2.16.840.1.113883.3.9999.2";

pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()> {
    let people = b.sizes.mpi_people;
    let known = b.sizes.mpi_known;
    r.describe(format!(
        "**mpi**: the generated corpus (`bench/src/mpi_corpus.rs`, seed 42) of {people} people at 2–4 of 8 sources, \
         each record matched one at a time by the online matcher from the shipped model (EM on another corpus, \
         seed 1) and re-estimating by EM as it grows, at its default thresholds; beside it the exact \
         family + given + birth date rule. Speed: {known} identities loaded, then 50,000 more matched one at a time."
    ));
    let (q, baseline) = tokio::task::spawn_blocking(move || {
        (
            mpi_quality::quality(people, 42, mpi::Thresholds::default()),
            mpi_quality::deterministic_baseline(people, 42),
        )
    })
    .await?;
    let rule = "exact family + given + birth date";
    let stage = "mpi";
    r.push(Row::higher(
        stage,
        "pairwise precision".into(),
        q.quality.precision,
        rule,
        baseline.0.precision,
        "goal ≥ 0.999",
    ));
    r.push(Row::higher(
        stage,
        "pairwise recall".into(),
        q.quality.recall,
        rule,
        baseline.0.recall,
        "goal ≥ 0.99",
    ));
    r.push(Row::higher(
        stage,
        "pairwise F1".into(),
        q.quality.f1,
        rule,
        baseline.0.f1,
        "",
    ));
    r.note(format!(
        "mpi: {} records; precision {:.5}, recall {:.5}, F1 {:.5} ({} of {} predicted pairs right, {} true pairs; the exact rule: {:.5}, {:.5}, {:.5}); {} links, {} possible matches left for review (not counted as links); thresholds link ≥ {} bits, review ≥ {} bits; model at the end: {}.",
        q.records,
        q.quality.precision,
        q.quality.recall,
        q.quality.f1,
        q.quality.correct_pairs,
        q.quality.predicted_pairs,
        q.quality.true_pairs,
        baseline.0.precision,
        baseline.0.recall,
        baseline.0.f1,
        q.links,
        q.reviews,
        q.thresholds.link,
        q.thresholds.review,
        q.model
    ));
    let s = tokio::task::spawn_blocking(move || mpi_quality::speed(known, 50_000, 7)).await?;
    r.push(Row::higher(
        stage,
        format!("identities matched/s, {} known", s.known),
        s.per_second,
        "exact-key rule (hash lookup)",
        baseline.1,
        "goal ≥ 5,000",
    ));
    r.note(format!(
        "mpi: {:.1} comparisons per identity; the matcher's memory with {} identities: {:.0} MiB (rows, people, blocking index, interned names; loaded in {:.0} s).",
        s.comparisons_per_identity,
        s.known + s.matched,
        s.memory_bytes as f64 / 1048576.0,
        s.load_seconds
    ));
    link_latency(b, r).await
}

/// Letters only (the matcher drops digits from names): a distinct family name per number.
fn letters(mut i: usize) -> String {
    let mut s = String::from("Zy");
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

fn patient(authority: &str, mrn: &str, i: usize) -> String {
    json!({"resourceType": "Patient", "id": mrn,
        "identifier": [{"system": authority, "value": mrn},
                       {"system": "http://hl7.org/fhir/sid/us-ssn", "value": format!("{:09}", 100_000_000 + i)}],
        "name": [{"family": letters(i), "given": ["Augustina"]}], "gender": "female",
        "birthDate": format!("19{:02}-{:02}-{:02}", 30 + i % 60, 1 + i % 12, 1 + i % 28),
        "telecom": [{"system": "phone", "value": format!("413555{:04}", i % 10_000)}]})
    .to_string()
}

/// Link → visible: one person sent by the bench's lab, then by a clinic; from the clinic's 202
/// until a search by the clinic's identifier finds the lab's enterprise patient (the matcher
/// decided, `hie.identity` carried it, the projector joined them), beside the time until the
/// clinic's identity is visible at all (the plain projection of its record).
async fn link_latency(b: &mut Bench, r: &mut Report) -> Result<()> {
    let api = b.api.clone();
    let http = &b.http;
    let reg = http
        .put(format!("{}/v1/sources/{OTHER}", api.ingest))
        .bearer_auth(&api.admin)
        .json(&json!({"name": "Benchmark clinic", "organization_id": "org-bench-clinic", "feed": "realtime",
            "assigning_authority": OTHER_AUTHORITY, "data_elements": ["Patient"], "part2": false}))
        .send()
        .await?;
    let other_key = match reg.json::<Value>().await?["api_key"].as_str() {
        Some(k) => k.to_string(),
        None => bail!("registering {OTHER}"),
    };
    let find = |authority: &'static str, mrn: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let url = format!(
                "{}/v1/patients?identifier={}",
                api.query,
                platform::url_component(&format!("{authority}|{mrn}"))
            );
            let body: Value = http
                .get(url)
                .bearer_auth(&api.reader)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(body["patients"][0]["id"].as_str().map(str::to_string))
        }
    };
    let n = b.sizes.mpi_links;
    let (mut visible, mut linked) = (Latencies::default(), Latencies::default());
    for i in 0..n {
        let mrn = format!("L{i:05}");
        let (_, position) = api.post_ndjson(patient(AUTHORITY, &mrn, i)).await?;
        b.written.merge(&position);
        // The lab's patient first, readable.
        let lab_id = loop {
            if let Some(id) = find(AUTHORITY, mrn.clone()).await? {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let sent = http
            .post(format!("{}/v1/sources/{OTHER}/fhir", api.ingest))
            .bearer_auth(&other_key)
            .header("content-type", "application/fhir+ndjson")
            .body(patient(OTHER_AUTHORITY, &format!("C{i:05}"), i))
            .send()
            .await?;
        anyhow::ensure!(
            sent.status().is_success(),
            "posting to {OTHER}: {}",
            sent.status()
        );
        let started = Instant::now();
        let mut seen = None;
        loop {
            match find(OTHER_AUTHORITY, format!("C{i:05}")).await? {
                Some(id) if id == lab_id => {
                    linked.0.push(started.elapsed());
                    visible.0.push(seen.unwrap_or(started.elapsed()));
                    break;
                }
                Some(_) if seen.is_none() => seen = Some(started.elapsed()),
                _ => {}
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("link {i} not visible after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    r.describe(format!(
        "**mpi link → visible**: {n} people, each sent by the lab then by a clinic (name, birth date, SSN, phone); \
         from the clinic's 202 until a search by its identifier finds the lab's enterprise patient, beside \
         the time until the clinic's record is visible at all (polled every 2 ms)."
    ));
    r.push(Row::lower(
        "mpi",
        "link visible p50 ms".into(),
        linked.p50_ms(),
        "the record itself visible",
        visible.p50_ms(),
        "",
    ));
    r.push(Row::lower(
        "mpi",
        "link visible p99 ms".into(),
        linked.p99_ms(),
        "the record itself visible",
        visible.p99_ms(),
        "goal ≤ 1,000",
    ));
    Ok(())
}
