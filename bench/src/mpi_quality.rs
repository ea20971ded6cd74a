//! The master patient index measured on the generated corpus (`mpi_corpus`): quality (pairwise
//! precision, recall, F1 against the truth) of the online matcher exactly as the projector runs
//! it — one identity at a time, starting from the shipped model and estimating its own by EM as
//! it grows — and speed (identities matched per second with a million already known).

use std::time::Instant;

use mpi::{Decision, Features, Matcher, Model, Thresholds};

use crate::mpi_corpus::{pair_quality, records, CorpusConfig, PairQuality};

pub struct Quality {
    pub people: usize,
    pub records: usize,
    pub quality: PairQuality,
    pub links: usize,
    pub reviews: usize,
    pub seconds: f64,
    pub model: String,
    pub thresholds: Thresholds,
}

/// Each record's identity and features, with its person (the truth).
fn corpus(people: usize, seed: u64) -> Vec<(String, String, Features, u32)> {
    records(&CorpusConfig { people, seed })
        .map(|r| {
            (
                r.assigning_authority,
                r.mrn,
                Features::from_patient(&r.patient),
                r.person,
            )
        })
        .collect()
}

pub fn quality(people: usize, seed: u64, thresholds: Thresholds) -> Quality {
    let corpus = corpus(people, seed);
    let started = Instant::now();
    let mut m = Matcher::new(Model::default(), thresholds);
    let (mut links, mut reviews) = (0, 0);
    for (authority, mrn, features, _) in &corpus {
        match m.observe(authority, mrn, features) {
            Decision::Link(_) => links += 1,
            Decision::Review(_) => reviews += 1,
            _ => {}
        }
        if std::env::var_os("MPI_NO_LEARN").is_none() {
            m.learn();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let truth: Vec<u32> = corpus.iter().map(|c| c.3).collect();
    let predicted: Vec<u64> = m.people().into_iter().map(u64::from).collect();
    Quality {
        people,
        records: corpus.len(),
        quality: pair_quality(&truth, &predicted),
        links,
        reviews,
        seconds,
        model: m.model().trained_on.clone(),
        thresholds,
    }
}

/// A model estimated by EM on a corpus, unsupervised (the truth is not looked at): what
/// `mpi/model/default.json` holds.
pub fn train(people: usize, seed: u64) -> Model {
    let mut m = Matcher::new(Model::default(), Thresholds::default());
    for (authority, mrn, features, _) in corpus(people, seed) {
        m.remember(&authority, &mrn, &features);
    }
    m.estimate(50_000, 1_000_000, seed)
}

pub struct Speed {
    pub known: usize,
    pub matched: usize,
    pub per_second: f64,
    pub comparisons_per_identity: f64,
    pub memory_bytes: usize,
    pub load_seconds: f64,
}

/// Loads `known` identities, then matches `matched` more one at a time.
pub fn speed(known: usize, matched: usize, seed: u64) -> Speed {
    // Three records a person, roughly.
    let people = (known + matched) / 3 + 1000;
    let mut m = Matcher::new(Model::default(), Thresholds::default());
    let started = Instant::now();
    let mut stream = records(&CorpusConfig { people, seed }).map(|r| {
        (
            r.assigning_authority,
            r.mrn,
            Features::from_patient(&r.patient),
        )
    });
    for (authority, mrn, features) in stream.by_ref().take(known) {
        m.remember(&authority, &mrn, &features);
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let batch: Vec<_> = stream.take(matched).collect();
    let before = m.comparisons();
    let started = Instant::now();
    for (authority, mrn, features) in &batch {
        std::hint::black_box(m.observe(authority, mrn, features));
    }
    let seconds = started.elapsed().as_secs_f64();
    Speed {
        known: m.identities() - batch.len(),
        matched: batch.len(),
        per_second: batch.len() as f64 / seconds,
        comparisons_per_identity: (m.comparisons() - before) as f64 / batch.len() as f64,
        memory_bytes: m.memory_bytes(),
        load_seconds,
    }
}

fn differences(c: &mpi::Candidate) -> String {
    let d: Vec<String> = c
        .comparison
        .named()
        .iter()
        .filter(|(_, l)| !matches!(*l, "exact" | "same" | "same_street"))
        .map(|(f, l)| format!("{f}={l}"))
        .collect();
    format!("{:.1} bits; {}", c.score, d.join(","))
}

/// Why true matches were missed, counted per record whose person was already known.
pub fn diagnose(people: usize, seed: u64, thresholds: Thresholds) -> Vec<(String, usize)> {
    use std::collections::HashMap;
    let corpus = corpus(people, seed);
    let mut m = Matcher::new(Model::default(), thresholds);
    let mut person_of: HashMap<(String, String), u32> = HashMap::new();
    let mut given_of: HashMap<(String, String), Option<String>> = HashMap::new();
    let mut seen_people: std::collections::HashSet<u32> = Default::default();
    let mut why: HashMap<String, usize> = HashMap::new();
    for (authority, mrn, features, person) in &corpus {
        let known_before = seen_people.contains(person);
        let candidates = m.explain(authority, features);
        let decision = m.observe(authority, mrn, features);
        m.learn();
        person_of.insert((authority.clone(), mrn.clone()), *person);
        given_of.insert((authority.clone(), mrn.clone()), features.given.clone());
        seen_people.insert(*person);
        if !known_before {
            if let Decision::Link(c) = &decision {
                *why.entry(format!("WRONG link of a new person: {}", differences(c)))
                    .or_default() += 1;
            }
            continue;
        }
        let truth = |c: &mpi::Candidate| person_of.get(&c.identity) == Some(person);
        let outcome = match &decision {
            Decision::Link(c) if truth(c) => continue,
            Decision::Link(c) => format!("WRONG link to another person: {}", differences(c)),
            _ => {
                let true_ones: Vec<&mpi::Candidate> =
                    candidates.iter().filter(|c| truth(c)).collect();
                match true_ones.iter().max_by(|a, b| a.score.total_cmp(&b.score)) {
                    None => "true match not among candidates (blocking)".into(),
                    Some(c) if c.comparison.twins() => {
                        format!(
                            "twins veto: {:?} vs {:?}",
                            features.given,
                            given_of.get(&c.identity).cloned().flatten()
                        )
                    }
                    Some(c) if c.score < thresholds.link => format!(
                        "below link: {}",
                        c.comparison
                            .named()
                            .iter()
                            .filter(|(_, l)| !matches!(*l, "exact" | "same" | "same_street"))
                            .map(|(f, l)| format!("{f}={l}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    Some(_) => "above link but not linked (same source or contested)".into(),
                }
            }
        };
        *why.entry(outcome).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = why.into_iter().collect();
    v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    v
}

/// The rule many MPIs start with, as the baseline: one person when family name, given name and
/// birth date are equal (folded), each record taken as it comes.
pub fn deterministic_baseline(people: usize, seed: u64) -> (PairQuality, f64) {
    use std::collections::HashMap;
    let corpus = corpus(people, seed);
    let started = Instant::now();
    type Key = (Option<String>, Option<String>, Option<String>);
    let mut clusters: HashMap<Key, u64> = HashMap::new();
    let predicted: Vec<u64> = corpus
        .iter()
        .enumerate()
        .map(|(i, (_, _, f, _))| {
            let key = (f.family.clone(), f.given.clone(), f.birth_date.clone());
            if key.0.is_none() || key.2.is_none() {
                return i as u64 + (1 << 40);
            }
            *clusters.entry(key).or_insert(i as u64)
        })
        .collect();
    let per_second = corpus.len() as f64 / started.elapsed().as_secs_f64();
    let truth: Vec<u32> = corpus.iter().map(|c| c.3).collect();
    (pair_quality(&truth, &predicted), per_second)
}
