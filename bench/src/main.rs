//! The benchmark harness (`bench/run`; not part of `tests/run`). It starts its own stack the way the
//! integration tests do — a Tansu broker on a free port, a fresh PostgreSQL database — with the
//! release binaries of ingest, projector and query-api as processes, measures each stage beside a
//! bare baseline run on the same machine in the same run, prints a table and writes it, with the
//! machine and the command, to docs/benchmarks.md.

mod baseline;
mod load;
mod report;
mod stack;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use schemas::Position;

use crate::load::{Api, Latencies};
use crate::report::{Report, Row};
use crate::stack::{Proc, Services};

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
            }
            let report = rt.block_on(run_all(&sizes))?;
            let md = report.markdown(&command_line());
            println!("\n{}", report.table());
            let out = cli
                .out
                .unwrap_or_else(|| if cli.quick { "-" } else { "docs/benchmarks.md" }.to_string());
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

async fn run_all(sizes: &Sizes) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report::new(sizes);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(30))
        .build()?;
    say("starting Tansu, a fresh database and the release binaries");
    let broker = hie_tests::Broker::start();
    let brokers = broker.address();
    let db = hie_tests::TestDb::create().await;
    let secret = format!("{}", uuid::Uuid::new_v4().simple());
    let services = Services::start(&http, &brokers, &db.url(), &secret).await?;
    let admin = load::token(&secret, "org-hie", &["admin"]);
    let source_key = Api::register_source(&http, &services.ingest.base_url(), &admin).await?;
    // The query API honours tokens of active accounts only: create the reader's.
    let reader_account = http
        .put(format!("{}/v1/users/bench-{}", services.query.base_url(), load::READER_ORG))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"email": format!("bench@{}.example", load::READER_ORG), "organization_id": load::READER_ORG, "roles": ["physician"]}))
        .send()
        .await?;
    anyhow::ensure!(
        reader_account.status().is_success(),
        "creating the reader's account: {}",
        reader_account.status()
    );
    let api = Arc::new(Api {
        http: http.clone(),
        ingest: services.ingest.base_url(),
        query: services.query.base_url(),
        reader: load::token(&secret, load::READER_ORG, &["physician"]),
        admin,
        source_key,
    });
    let mut written = Position::new();

    // 1. Ingest throughput vs a bare producer sending the same encoded bytes.
    say(format!(
        "ingest: {} requests x {} NDJSON records, {} clients",
        sizes.ingest_requests, sizes.batch, sizes.clients
    ));
    let (records, secs) = ingest_throughput(&api, sizes, &mut written).await?;
    let messages = baseline::read_back(&brokers, schemas::topics::RECORDS.name, &written).await?;
    let file = stack::scratch_dir().join("records.bin");
    baseline::write_messages(&file, &messages)?;
    let bare_producer = baseline::run_child(&[
        "bare-produce".into(),
        "--brokers".into(),
        brokers.clone(),
        "--input".into(),
        file.display().to_string(),
        "--clients".into(),
        sizes.clients.to_string(),
        "--batch".into(),
        sizes.batch.to_string(),
    ])
    .await?;
    report.push(Row::higher(
        "ingest",
        format!(
            "records/s, NDJSON {} per request, {} clients",
            sizes.batch, sizes.clients
        ),
        records as f64 / secs,
        "bare rdkafka producer, same Avro bytes, same broker",
        bare_producer.per_sec(),
        "",
    ));

    // The live projector catches up on the backlog before anything else is measured.
    say("waiting for the projector to apply the ingest backlog");
    let caught_up = Instant::now();
    let (applied, _) = wait_projected(&services.projector, &db, &written).await?;
    report.note(format!(
        "The live projector applied the ingest backlog ({applied} events) {:.1} s after the last 202.",
        caught_up.elapsed().as_secs_f64()
    ));

    // Patients with a consent for the reader's organization, for freshness and queries.
    say(format!("preparing {} consented patients", sizes.patients));
    let mrns: Vec<String> = (0..sizes.patients).map(|i| format!("q{i:05}")).collect();
    let (_, p) = api
        .post_ndjson(load::ndjson("prep", &mrns, mrns.len()))
        .await?;
    written.merge(&p);
    for chunk in mrns.chunks(8) {
        let grants = chunk.iter().map(|m| api.grant(m));
        for p in futures::future::try_join_all(grants).await? {
            written.merge(&p);
        }
    }
    api.records(&mrns[0], "", &written).await?;

    // 2. Freshness at fixed rates vs the broker's own produce → consume floor.
    platform::kafka::ensure_topics(&brokers, &[&baseline::FRESH_TOPIC]).await?;
    let payloads: Vec<Vec<u8>> = messages.iter().take(1000).map(|m| m.1.clone()).collect();
    for &rate in &sizes.rates {
        say(format!(
            "freshness at {rate} requests/s x {} records, {} s",
            sizes.fresh_records, sizes.fresh_secs
        ));
        let fresh = freshness(&api, &mrns, rate, sizes, &mut written).await?;
        let floor = baseline::freshness_floor(
            &brokers,
            &payloads,
            rate,
            sizes.fresh_secs,
            sizes.fresh_records,
        )
        .await?;
        let what = format!(
            "ms at {rate} req/s x {} records (ingest 202 → readable)",
            sizes.fresh_records
        );
        let floor_what = "bare producer ack → bare consumer, same broker and fetch wait";
        report.push(Row::lower(
            "freshness p50",
            what.clone(),
            fresh.p50_ms(),
            floor_what,
            floor.p50_ms(),
            "",
        ));
        report.push(Row::lower(
            "freshness p99",
            what,
            fresh.p99_ms(),
            floor_what,
            floor.p99_ms(),
            "",
        ));
    }

    // 3. Queries at N concurrent clients vs a bare axum + tokio-postgres handler.
    let bare_addr = stack::local_addr();
    let mut bare_server = Proc::spawn_args(
        "bare-server",
        &std::env::current_exe()?,
        &["bare-server", "--addr", &bare_addr, "--db", &db.url()],
        &bare_addr,
        &[],
    )?;
    bare_server
        .wait_healthy(&http, Duration::from_secs(20))
        .await?;
    for (label, query) in [("all records", ""), ("?type=Patient", "?type=Patient")] {
        let per_patient = api.records(&mrns[0], query, &written).await?;
        let hie_urls: Vec<String> = mrns
            .iter()
            .map(|m| {
                format!(
                    "{}/v1/patients/{}/records{query}",
                    api.query,
                    load::patient_id(m)
                )
            })
            .collect();
        let bare_urls: Vec<String> = mrns
            .iter()
            .map(|m| {
                format!(
                    "{}/records/{}{query}",
                    bare_server.base_url(),
                    load::patient_id(m)
                )
            })
            .collect();
        say(format!(
            "queries ({label}, ~{per_patient} records each): {} clients, {} s each",
            sizes.query_clients, sizes.query_secs
        ));
        let (hie_urls, bare_urls) = (Arc::new(hie_urls), Arc::new(bare_urls));
        let warm = Duration::from_secs(1);
        load::http_load(
            &http,
            hie_urls.clone(),
            Some(api.reader.clone()),
            sizes.query_clients,
            warm,
        )
        .await;
        load::http_load(&http, bare_urls.clone(), None, sizes.query_clients, warm).await;
        let hie = load::http_load(
            &http,
            hie_urls,
            Some(api.reader.clone()),
            sizes.query_clients,
            Duration::from_secs(sizes.query_secs),
        )
        .await;
        let bare = load::http_load(
            &http,
            bare_urls,
            None,
            sizes.query_clients,
            Duration::from_secs(sizes.query_secs),
        )
        .await;
        if hie.errors > 0 || bare.errors > 0 {
            say(format!(
                "query errors: pipeline {}, bare {}",
                hie.errors, bare.errors
            ));
        }
        let what = |m: &str| {
            format!(
                "{m}, GET /v1/patients/{{id}}/records{query} ({label}, ~{per_patient} rows), {} clients",
                sizes.query_clients
            )
        };
        let base = "bare axum + tokio-postgres handler, same SQL";
        report.push(Row::lower(
            "query p50",
            what("ms"),
            hie.latencies.p50_ms(),
            base,
            bare.latencies.p50_ms(),
            "",
        ));
        report.push(Row::lower(
            "query p99",
            what("ms"),
            hie.latencies.p99_ms(),
            base,
            bare.latencies.p99_ms(),
            "",
        ));
        report.push(Row::higher(
            "query throughput",
            what("requests/s"),
            hie.rps(),
            base,
            bare.rps(),
            &format!("errors: {} vs {}", hie.errors, bare.errors),
        ));
    }

    // 4. Replay: a new database and projector rebuild the views from the start of the topics.
    say("replay: a new projector and database rebuild the views from offset 0");
    let replay_db = hie_tests::TestDb::create().await;
    let replay = stack::projector("projector-replay", &brokers, &replay_db.url())?;
    let (events, replay_secs) = wait_projected(&replay, &replay_db, &written).await?;
    let replay_peak = replay.peak_kib().unwrap_or(0);
    drop(replay);
    let copy = baseline::run_child(&["bare-copy".into(), "--db".into(), replay_db.url()]).await?;
    report.push(Row::higher(
        "projector replay",
        format!("events/s, {events} events from offset 0 into empty views"),
        events as f64 / replay_secs,
        "bare COPY (binary) of the same records rows into a table like records",
        copy.per_sec(),
        &format!("{} rows copied", copy.count),
    ));

    // 5. Peak memory of each process.
    let mib = |kib: u64| kib as f64 / 1024.0;
    let input_mib = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    let copy_process = "bare COPY process (holds the rows it copies)".to_string();
    report.push(Row::lower(
        "peak memory",
        "MiB VmHWM, ingest".into(),
        mib(services.ingest.peak_kib().unwrap_or(0)),
        &format!("bare producer process (holds its {input_mib:.0} MiB of input)"),
        mib(bare_producer.peak_kib),
        "",
    ));
    report.push(Row::lower(
        "peak memory",
        "MiB VmHWM, projector (live)".into(),
        mib(services.projector.peak_kib().unwrap_or(0)),
        &copy_process,
        mib(copy.peak_kib),
        "",
    ));
    report.push(Row::lower(
        "peak memory",
        "MiB VmHWM, projector (replay)".into(),
        mib(replay_peak),
        &copy_process,
        mib(copy.peak_kib),
        "",
    ));
    report.push(Row::lower(
        "peak memory",
        "MiB VmHWM, query-api".into(),
        mib(services.query.peak_kib().unwrap_or(0)),
        "bare axum server process",
        mib(bare_server.peak_kib().unwrap_or(0)),
        "",
    ));
    if let Some(kib) = stack::tansu_pid(broker.port).and_then(stack::peak_kib_of) {
        report.note(format!(
            "Tansu broker (in-memory storage) peak memory: {:.0} MiB.",
            mib(kib)
        ));
    }
    report.finish(started.elapsed()).await?;
    drop(services);
    Ok(report)
}

/// Post the NDJSON batches from `clients` concurrent clients; returns records accepted and seconds.
async fn ingest_throughput(
    api: &Arc<Api>,
    sizes: &Sizes,
    written: &mut Position,
) -> Result<(usize, f64)> {
    let bodies: Vec<String> = (0..sizes.ingest_requests + 2)
        .map(|r| {
            let mrns: Vec<String> = (0..sizes.patients_per_request)
                .map(|j| format!("t{r:04}x{j:03}"))
                .collect();
            load::ndjson(&format!("o{r}"), &mrns, sizes.batch)
        })
        .collect();
    let mut bodies = bodies.into_iter();
    // Warm-up: connections, the producer's metadata.
    for body in bodies.by_ref().take(2) {
        let (_, p) = api.post_ndjson(body).await?;
        written.merge(&p);
    }
    let queue = Arc::new(std::sync::Mutex::new(bodies.collect::<Vec<_>>()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sizes.clients {
        let (api, queue) = (api.clone(), queue.clone());
        tasks.spawn(async move {
            let mut accepted = 0;
            let mut position = Position::new();
            loop {
                let Some(body) = queue.lock().expect("not poisoned").pop() else {
                    return Ok::<_, anyhow::Error>((accepted, position));
                };
                let (n, p) = api.post_ndjson(body).await?;
                accepted += n;
                position.merge(&p);
            }
        });
    }
    let mut records = 0;
    while let Some(r) = tasks.join_next().await {
        let (n, p) = r??;
        records += n;
        written.merge(&p);
    }
    Ok((records, started.elapsed().as_secs_f64()))
}

/// Open loop at `rate` requests/s: each request posts `fresh_records` records of one consented
/// patient, then reads that patient's records with the 202's position as `X-Min-Position`; the
/// figure is from the 202 to the 200 that includes the records.
async fn freshness(
    api: &Arc<Api>,
    mrns: &[String],
    rate: u32,
    sizes: &Sizes,
    written: &mut Position,
) -> Result<Latencies> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let end = Instant::now() + Duration::from_secs(sizes.fresh_secs);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let mrn = mrns[n % mrns.len()].clone();
        let body = load::ndjson(
            &format!("f{rate}n{n}"),
            std::slice::from_ref(&mrn),
            sizes.fresh_records,
        );
        let api = api.clone();
        n += 1;
        tasks.spawn(async move {
            let (_, position) = api.post_ndjson(body).await?;
            let acked = Instant::now();
            api.records(&mrn, "?type=Observation", &position).await?;
            Ok::<_, anyhow::Error>((acked.elapsed(), position))
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (d, p) = r??;
        lat.push(d);
        written.merge(&p);
    }
    Ok(Latencies(lat))
}

/// Wait until the projector writing to `db` has applied everything in `written`; returns the
/// events applied and the seconds since the projector was started.
async fn wait_projected(
    projector: &Proc,
    db: &hie_tests::TestDb,
    written: &Position,
) -> Result<(i64, f64)> {
    let client = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(rows) = client
            .query(
                "SELECT topic, partition, next_offset FROM projection_offsets",
                &[],
            )
            .await
        {
            let next: std::collections::HashMap<(String, i32), i64> = rows
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            let done = written
                .entries()
                .all(|(t, p, o)| next.get(&(t.to_string(), p)).is_some_and(|n| *n > o));
            if done {
                let secs = projector.started.elapsed().as_secs_f64();
                return Ok((next.values().sum(), secs));
            }
        }
        if Instant::now() > deadline {
            bail!("the replay projector did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
