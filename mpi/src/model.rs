//! The Fellegi–Sunter model: for each field and level, m (the chance of that level when both
//! identities are one person) and u (when they are two), and λ, the chance that two identities
//! taken at random are one person. A pair's score is the log₂ odds that it is one person:
//! log₂(λ/(1−λ)) plus log₂(m/u) of each field's level. Estimated as Splink does
//! (`estimate_in_sessions`): u from random pairs, m by expectation–maximisation in blocked
//! sessions, λ from the pairs sharing an SSN.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::compare::{Comparison, FIELDS, LEVELS, MAX_LEVELS};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// `m[field][level]`.
    pub m: Vec<Vec<f64>>,
    /// `u[field][level]`.
    pub u: Vec<Vec<f64>>,
    /// Share of candidate pairs that are one person.
    pub lambda: f64,
    /// What it was estimated from, for events and the benchmark: e.g. "em: 120000 identities,
    /// 1843211 candidate pairs, 500000 random pairs, 23 iterations".
    pub trained_on: String,
    #[serde(skip)]
    weights: Vec<[f64; MAX_LEVELS]>,
    #[serde(skip)]
    prior: f64,
}

/// The model estimated, without looking at the truth, on a generated corpus of 30,000 people
/// (`target/release/mpi-bench train 30000`, seed 1): what the matcher uses until it has seen
/// enough identities of its own to estimate one.
const DEFAULT_MODEL: &str = include_str!("../model/default.json");

impl Default for Model {
    fn default() -> Self {
        Model::from_json(DEFAULT_MODEL).expect("mpi/model/default.json is a model")
    }
}

/// The chances EM starts from: agreement likely for one person, unlikely for two. Only the
/// starting point; the estimate moves away from it.
fn starting_point() -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let m = LEVELS
        .iter()
        .map(|levels| {
            let n = levels.len();
            (0..n)
                .map(|l| if l == 0 { 0.9 } else { 0.1 / (n - 1) as f64 })
                .collect()
        })
        .collect();
    let u = LEVELS
        .iter()
        .map(|levels| {
            let n = levels.len();
            (0..n)
                .map(|l| {
                    if l == n - 1 {
                        0.9
                    } else {
                        0.1 / (n - 1) as f64
                    }
                })
                .collect()
        })
        .collect();
    (m, u)
}

impl Model {
    pub fn from_json(s: &str) -> Result<Model, serde_json::Error> {
        let mut m: Model = serde_json::from_str(s)?;
        m.prepare();
        Ok(m)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model serializes")
    }

    fn prepare(&mut self) {
        self.weights = self
            .m
            .iter()
            .zip(&self.u)
            .map(|(m, u)| {
                let mut w = [0.0; MAX_LEVELS];
                for (l, (m, u)) in m.iter().zip(u).enumerate() {
                    w[l] = (m / u).log2();
                }
                w
            })
            .collect();
        self.prior = (self.lambda / (1.0 - self.lambda)).log2();
    }

    /// Whether the estimate is one EM may be trusted with: λ below 60 %, and
    /// for every field agreement is evidence for and disagreement evidence against. EM can
    /// settle in another optimum (calling most candidates matches, say); such a model is not
    /// used.
    pub fn plausible(&self) -> bool {
        (1e-9..0.6).contains(&self.lambda)
            && self
                .weights
                .iter()
                .zip(LEVELS.iter())
                .all(|(w, levels)| w[0] > 0.0 && w[levels.len() - 1] < 0.0)
    }

    /// log₂ odds that the pair is one person.
    pub fn score(&self, c: &Comparison) -> f64 {
        let mut s = self.prior;
        for (f, level) in c.0.iter().enumerate() {
            if let Some(l) = level {
                s += self.weights[f][*l as usize];
            }
        }
        s
    }

    /// log₂(m/u) of one field's level.
    pub fn weight(&self, field: usize, level: u8) -> f64 {
        self.weights[field][level as usize]
    }

    /// EM over one set of pairs' comparisons, given as pattern counts (`Comparison::code` → how
    /// many pairs): m, u and λ within that set, u starting from the random pairs' shares. One
    /// session of `estimate_in_sessions`.
    pub fn estimate(
        random: &HashMap<u32, u64>,
        candidates: &HashMap<u32, u64>,
        described: impl Into<String>,
    ) -> Model {
        let (mut m, start_u) = starting_point();
        // Random pairs give u's starting point; EM then estimates u too, among the candidate
        // pairs: the pairs the matcher scores are the ones blocking finds, and two people who
        // share a birth date or a surname's sound agree more often than two taken at random.
        let mut u = level_shares(random).unwrap_or(start_u);
        let patterns: Vec<(Comparison, f64)> = candidates
            .iter()
            .map(|(code, n)| (Comparison::from_code(*code), *n as f64))
            .collect();
        let total: f64 = patterns.iter().map(|(_, n)| n).sum();
        let mut lambda = 0.1;
        let mut iterations = 0;
        for _ in 0..500 {
            iterations += 1;
            let mut matched = vec![vec![0.0; MAX_LEVELS]; FIELDS.len()];
            let mut unmatched = vec![vec![0.0; MAX_LEVELS]; FIELDS.len()];
            let mut matches = 0.0;
            for (c, n) in &patterns {
                let (mut pm, mut pu) = (lambda, 1.0 - lambda);
                for (f, level) in c.0.iter().enumerate() {
                    if let Some(l) = level {
                        pm *= m[f][*l as usize];
                        pu *= u[f][*l as usize];
                    }
                }
                let p = pm / (pm + pu);
                matches += p * n;
                for (f, level) in c.0.iter().enumerate() {
                    if let Some(l) = level {
                        matched[f][*l as usize] += p * n;
                        unmatched[f][*l as usize] += (1.0 - p) * n;
                    }
                }
            }
            let new_lambda = (matches / total.max(1.0)).clamp(1e-6, 1.0 - 1e-6);
            let mut change = (new_lambda - lambda).abs();
            lambda = new_lambda;
            for (f, levels) in LEVELS.iter().enumerate() {
                for (estimate, counts) in [(&mut m, &matched), (&mut u, &unmatched)] {
                    let sum: f64 = counts[f][..levels.len()].iter().sum();
                    for l in 0..levels.len() {
                        // Never exactly 0: a level EM saw in no pair stays possible, unlikely.
                        let v = ((counts[f][l] + 0.5) / (sum + 0.5 * levels.len() as f64))
                            .clamp(1e-6, 1.0);
                        change = change.max((v - estimate[f][l]).abs());
                        estimate[f][l] = v;
                    }
                }
            }
            if change < 1e-7 {
                break;
            }
        }
        let mut model = Model {
            m,
            u,
            lambda,
            trained_on: format!("{}, {iterations} EM iterations", described.into()),
            weights: Vec::new(),
            prior: 0.0,
        };
        model.prepare();
        model
    }
}

/// What the population prior is estimated from (`Model::estimate_in_sessions`).
pub struct Population {
    pub identities: usize,
    /// Identities whose candidate pairs were counted.
    pub sampled: f64,
    /// Share of identities with an SSN.
    pub with_ssn: f64,
}

/// The patterns of the pairs `keep` selects, with `masked` fields set missing (the fields a
/// session selected on say nothing about m there).
fn session(
    candidates: &HashMap<u32, u64>,
    keep: impl Fn(&Comparison) -> bool,
    masked: &[usize],
) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    for (code, n) in candidates {
        let mut c = Comparison::from_code(*code);
        if !keep(&c) {
            continue;
        }
        for f in masked {
            c.0[*f] = None;
        }
        *out.entry(c.code()).or_default() += n;
    }
    out
}

impl Model {
    /// Splink's way: u from random pairs (the population), m by EM in sessions, each over the
    /// candidate pairs that agree on some fields, estimating m of the others — the pairs with
    /// one SSN give m of every other field; those with one family name and birth date give m of
    /// the SSN. λ, the chance that two identities taken at random are one person, from how many
    /// share an SSN (scaled by how many carry one). Scores are then log₂ odds in the population,
    /// and term frequencies adjust exact names on the same scale.
    pub fn estimate_in_sessions(
        random: &HashMap<u32, u64>,
        candidates: &HashMap<u32, u64>,
        population: Population,
        described: impl Into<String>,
    ) -> Model {
        use crate::compare::{BIRTH, FAMILY, SSN};
        let (start_m, start_u) = starting_point();
        let u = level_shares(random).unwrap_or(start_u);
        let by_ssn = session(candidates, |c| c.0[SSN] == Some(0), &[SSN]);
        let by_name_and_birth = session(
            candidates,
            |c| c.0[FAMILY] == Some(0) && c.0[BIRTH] == Some(0),
            &[FAMILY, BIRTH],
        );
        let first = Model::estimate(random, &by_ssn, "");
        let second = Model::estimate(random, &by_name_and_birth, "");
        let mut m = first.m.clone();
        m[SSN] = second.m[SSN].clone();
        for (f, levels) in m.iter_mut().enumerate() {
            if levels.iter().all(|v| *v <= 0.0) {
                *levels = start_m[f].clone();
            }
        }
        let same_ssn: u64 = by_ssn.values().sum();
        let matches =
            same_ssn as f64 * first.lambda / (population.with_ssn * population.with_ssn).max(1e-3);
        let per_identity = matches / population.sampled.max(1.0);
        let lambda = (per_identity / population.identities.max(2) as f64).clamp(1e-9, 0.5);
        let mut model = Model {
            m,
            u,
            lambda,
            trained_on: format!(
                "{}; EM in 2 sessions: {} pairs sharing an SSN, {} sharing family name and birth date",
                described.into(),
                same_ssn,
                by_name_and_birth.values().sum::<u64>()
            ),
            weights: Vec::new(),
            prior: 0.0,
        };
        model.prepare();
        model
    }
}

/// Each field's level shares among the given comparisons (a field missing in a pair is not
/// counted), with add-one smoothing; `None` without comparisons.
fn level_shares(patterns: &HashMap<u32, u64>) -> Option<Vec<Vec<f64>>> {
    if patterns.is_empty() {
        return None;
    }
    let mut counts = vec![vec![0.0; MAX_LEVELS]; FIELDS.len()];
    for (code, n) in patterns {
        for (f, level) in Comparison::from_code(*code).0.iter().enumerate() {
            if let Some(l) = level {
                counts[f][*l as usize] += *n as f64;
            }
        }
    }
    Some(
        LEVELS
            .iter()
            .enumerate()
            .map(|(f, levels)| {
                let sum: f64 = counts[f][..levels.len()].iter().sum();
                (0..levels.len())
                    .map(|l| (counts[f][l] + 1.0) / (sum + levels.len() as f64))
                    .collect()
            })
            .collect(),
    )
}
