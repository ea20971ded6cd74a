//! The master patient index (issue #14): quality of the online matcher on the generated corpus
//! (pairwise precision, recall, F1 against its truth) beside the deterministic rule many MPIs
//! start with (family + given + birth date), and its speed with a million identities known.
//! Pure CPU in this process: the matcher as the projector runs it, without the broker.

use anyhow::Result;

use super::Bench;
use crate::report::{Report, Row};
use bench::mpi_quality;

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
        "mpi: {} records; {} links, {} possible matches left for review (not counted as links); thresholds link ≥ {} bits, review ≥ {} bits; model at the end: {}.",
        q.records, q.links, q.reviews, q.thresholds.link, q.thresholds.review, q.model
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
    Ok(())
}
