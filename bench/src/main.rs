//! The benchmark harness (`bench/run`; not part of `tests/run`). It starts its own stack the way the
//! integration tests do — a broker (hie-log) on a free port, a fresh PostgreSQL database — with the
//! release binaries of ingest, projector and query-api as processes, measures each stage beside a
//! bare baseline run on the same machine in the same run, prints a table and writes it, with the
//! machine and the command, to docs/benchmarks.md.

mod baseline;
mod load;
mod report;
mod stack;
mod stages;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::report::Report;
use crate::stages::{Bench, Stage};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Benchmark the HIE pipeline against bare baselines (use bench/run, which builds the release binaries first)"
)]
struct Cli {
    #[command(subcommand)]
    child: Option<ChildCmd>,
    /// Run every measurement (what a run without a subcommand does anyway).
    #[arg(long)]
    all: bool,
    /// Small sizes, for trying the harness out (about a minute).
    #[arg(long)]
    quick: bool,
    /// Only these stages (comma-separated; the stages they need data from are not run for them).
    /// A run of some stages writes no report unless --out names one.
    #[arg(long, value_enum, value_delimiter = ',')]
    stages: Vec<Stage>,
    /// Where the report goes, relative to the workspace; `-` for nowhere. Default:
    /// docs/benchmarks.md, or nowhere with --quick.
    #[arg(long)]
    out: Option<String>,
    #[command(flatten)]
    sizes: Sizes,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Sizes {
    /// Ingest: measured NDJSON requests.
    #[arg(long, default_value_t = 120)]
    ingest_requests: usize,
    /// Ingest: records (lines) per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Ingest: patients per request (each with its Patient line and Observations).
    #[arg(long, default_value_t = 10)]
    patients_per_request: usize,
    /// Ingest: concurrent clients (and the bare producer's concurrent senders).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Freshness: fixed request rates, requests/s.
    #[arg(long, value_delimiter = ',', default_value = "5,20,50")]
    rates: Vec<u32>,
    /// Freshness: seconds at each rate.
    #[arg(long, default_value_t = 8)]
    fresh_secs: u64,
    /// Freshness: records per request.
    #[arg(long, default_value_t = 10)]
    fresh_records: usize,
    /// Query: patients (each with a consent for the reader's organization).
    #[arg(long, default_value_t = 50)]
    patients: usize,
    /// Query: concurrent clients.
    #[arg(long, default_value_t = 32)]
    query_clients: usize,
    /// Query: seconds per measurement (after a 1 s warm-up that is not counted).
    #[arg(long, default_value_t = 8)]
    query_secs: u64,
    /// Query: what is read, each measured on its own: `all` (all of a patient's records) or a
    /// resource type (`Patient`: one row).
    #[arg(long, value_delimiter = ',', default_value = "all,Patient")]
    query_types: Vec<String>,
    /// MPI: people in the quality corpus (each at 2–4 sources).
    #[arg(long, default_value_t = 100_000)]
    mpi_people: usize,
    /// MPI: identities already known when matching speed is measured.
    #[arg(long, default_value_t = 1_000_000)]
    mpi_known: usize,
    /// MPI: people sent by two sources, for link → visible.
    #[arg(long, default_value_t = 200)]
    mpi_links: usize,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)]
enum ChildCmd {
    /// (child) the bare rdkafka producer baseline
    #[command(hide = true)]
    BareProduce {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        batch: usize,
    },
    /// (child) the bare PostgreSQL COPY baseline
    #[command(hide = true)]
    BareCopy {
        #[arg(long)]
        db: String,
    },
    /// (child) the bare axum + tokio-postgres server
    #[command(hide = true)]
    BareServer {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        db: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.child {
        Some(ChildCmd::BareProduce {
            brokers,
            input,
            clients,
            batch,
        }) => rt.block_on(baseline::bare_produce(&brokers, &input, clients, batch)),
        Some(ChildCmd::BareCopy { db }) => rt.block_on(baseline::bare_copy(&db)),
        Some(ChildCmd::BareServer { addr, db }) => {
            rt.block_on(baseline::bare_server(&addr, &db, 16))
        }
        None => {
            let mut sizes = cli.sizes.clone();
            if cli.quick {
                sizes.ingest_requests = 8;
                sizes.rates = vec![5, 20];
                sizes.fresh_secs = 3;
                sizes.patients = 10;
                sizes.query_secs = 3;
                sizes.mpi_people = 5_000;
                sizes.mpi_known = 20_000;
                sizes.mpi_links = 20;
            }
            let partial = !cli.stages.is_empty();
            let stages = if partial {
                cli.stages.clone()
            } else {
                Stage::ALL.to_vec()
            };
            let report = rt.block_on(run_all(&sizes, &stages))?;
            let md = report.markdown(&command_line());
            println!("\n{}", report.table());
            let out = cli.out.unwrap_or_else(|| {
                if cli.quick || partial {
                    "-"
                } else {
                    "docs/benchmarks.md"
                }
                .to_string()
            });
            if out != "-" {
                let path = workspace().join(&out);
                let md = md + &kept_sections(&path);
                std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

/// What follows `KEPT` in the file being replaced: figures measured by other means (the soak,
/// tests/tests/soak.rs) that a bench run must not erase.
fn kept_sections(path: &std::path::Path) -> String {
    const KEPT: &str = "<!-- kept by bench/run: measured by other means -->";
    let old = std::fs::read_to_string(path).unwrap_or_default();
    old.find(KEPT)
        .map(|i| format!("\n{}", &old[i..]))
        .unwrap_or_default()
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The command as a person would type it again.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prefix = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| "bench/run".into());
    if args.is_empty() {
        prefix
    } else {
        format!("{prefix} {}", args.join(" "))
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Starts the stack and runs `stages` in the order of [`Stage::ALL`].
async fn run_all(sizes: &Sizes, stages: &[Stage]) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report::new();
    let mut bench = Bench::start(sizes).await?;
    for stage in Stage::ALL.into_iter().filter(|s| stages.contains(s)) {
        stage
            .run(&mut bench, &mut report)
            .await
            .with_context(|| format!("stage {stage:?}"))?;
    }
    report.finish(started.elapsed()).await?;
    Ok(report)
}
