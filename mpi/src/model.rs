//! The Fellegi–Sunter model: for each field and level, m (the chance of that level when both
//! identities are one person) and u (when they are two), and λ, the share of candidate pairs that
//! are one person. A pair's score is the log₂ odds that it is one person: log₂(λ/(1−λ)) plus
//! log₂(m/u) of each field's level. u is estimated from random pairs (almost all two people), m
//! and λ by expectation–maximisation over the candidate pairs blocking finds, as Splink does.

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

/// The model estimated by `bench` on its generated corpus (`bench/run`, stage "mpi"): what the
/// matcher uses until it has seen enough identities of its own to estimate one.
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

    /// u from random pairs' comparisons; m and λ by EM over the candidate pairs' comparisons,
    /// given as pattern counts (`Comparison::code` → how many pairs).
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
