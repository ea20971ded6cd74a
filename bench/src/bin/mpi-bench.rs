//! The MPI's figures on their own (the full harness runs them as its `mpi` stage):
//!   mpi-bench quality [PEOPLE] [LINK] [REVIEW] · mpi-bench speed [KNOWN] · mpi-bench train [PEOPLE]

use bench::mpi_quality;
use mpi::Thresholds;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let f = |i: usize, d: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    match args.get(1).map(String::as_str) {
        Some("diagnose") => {
            let d = Thresholds::default();
            let t = Thresholds {
                link: f(3, d.link),
                review: f(4, d.review),
            };
            for (why, n) in mpi_quality::diagnose(n(2, 20_000), 42, t)
                .into_iter()
                .take(40)
            {
                println!("{n:6}  {why}");
            }
        }
        Some("train") => println!(
            "{}",
            mpi_quality::train(n(2, 100_000), n(3, 1) as u64).to_json()
        ),
        Some("speed") => {
            let s = mpi_quality::speed(n(2, 1_000_000), 50_000, 7);
            println!(
                "known {} matched {} → {:.0} identities/s, {:.1} comparisons each, matcher memory {:.1} MiB (loaded in {:.1} s)",
                s.known, s.matched, s.per_second, s.comparisons_per_identity,
                s.memory_bytes as f64 / 1048576.0, s.load_seconds
            );
        }
        _ => {
            let d = Thresholds::default();
            let t = Thresholds {
                link: f(3, d.link),
                review: f(4, d.review),
            };
            let q = mpi_quality::quality(n(2, 100_000), 42, t);
            println!(
                "{} people, {} records: precision {:.5} recall {:.5} F1 {:.5} (true pairs {}, predicted {}, correct {}); links {} reviews {}; {:.1} s; model: {}",
                q.people, q.records, q.quality.precision, q.quality.recall, q.quality.f1,
                q.quality.true_pairs, q.quality.predicted_pairs, q.quality.correct_pairs,
                q.links, q.reviews, q.seconds, q.model
            );
        }
    }
}
