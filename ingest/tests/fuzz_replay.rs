//! The fuzz targets (`../fuzz`, cargo-fuzz on nightly) on stable, in a few seconds: every seed
//! and every crashing input found so far (`fuzz/regressions/<target>/`, kept as regression
//! cases), then random inputs from a fixed seed, mutated from the seeds and from scratch.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_seed_and_regression_case_runs_clean() {
    let mut seen = 0;
    for (name, run) in ingest::fuzzing::TARGETS {
        let cases = inputs(name);
        assert!(!cases.is_empty(), "no seeds for fuzz target {name}");
        for (path, data) in cases {
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 12);
}

/// Seeded random inputs: a seed with bytes flipped, inserted and cut, or plain random bytes.
#[test]
fn seeded_random_inputs_run_clean() {
    for (name, run) in ingest::fuzzing::TARGETS {
        let seeds: Vec<Vec<u8>> = inputs(name).into_iter().map(|(_, d)| d).collect();
        let config = Config {
            cases: 2_000,
            failure_persistence: None,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
        let mut runner = TestRunner::new_with_rng(config, rng);
        let pick = 0..seeds.len();
        let edits = prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 0..16);
        let random = prop::collection::vec(any::<u8>(), 0..512);
        let strategy = (pick, edits, random);
        runner
            .run(&strategy, |(i, edits, random)| {
                let mut data = if edits.is_empty() {
                    random
                } else {
                    seeds[i].clone()
                };
                for (at, byte, kind) in edits {
                    let at = at as usize % (data.len() + 1);
                    match kind {
                        0 if at < data.len() => data[at] = byte,
                        1 => data.insert(at, byte),
                        2 if at < data.len() => {
                            data.remove(at);
                        }
                        _ => data.truncate(at),
                    }
                }
                run(&data);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("fuzz target {name}: {e}"));
    }
}
