//! The stages of a run, one module each, run in the order of [`Stage::ALL`]. Each measures the
//! pipeline beside a bare baseline run in the same run on the same machine, pushes its rows and
//! says in `docs/benchmarks.md` what it ran ([`Report::describe`]).
//!
//! Adding a stage: a module here with `pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()>`,
//! a variant of [`Stage`] and its arm in [`Stage::run`]. What several stages need (the stack, the
//! consented patients, a baseline's peak memory) lives in [`Bench`].

pub mod fhir;
pub mod freshness;
pub mod ingest;
pub mod memory;
pub mod mpi;
pub mod queries;
pub mod replay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use schemas::Position;

use crate::load::{self, Api};
use crate::report::Report;
use crate::stack::{self, Proc, Services};
use crate::{say, Sizes};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Ingest throughput vs a bare producer sending the same Avro bytes.
    Ingest,
    /// Freshness (ingest 202 → readable) at fixed rates vs the broker's produce → consume floor.
    Freshness,
    /// Audited reads vs a bare axum + tokio-postgres handler.
    Queries,
    /// Projector replay from offset 0 vs a bare COPY of the same rows.
    Replay,
    /// The FHIR API as EHRs use it: every page of a paged `$everything`, and
    /// `Observation?patient=&code=`, vs the bare handler (after the replay, which its records
    /// would otherwise grow).
    Fhir,
    /// The master patient index: matching quality on the generated corpus vs the exact
    /// name + birth date rule, and identities matched per second with a million known.
    Mpi,
    /// Peak memory of each process vs its baseline's (last: it reads the whole run's peaks).
    Memory,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Ingest,
        Stage::Freshness,
        Stage::Queries,
        Stage::Replay,
        Stage::Fhir,
        Stage::Mpi,
        Stage::Memory,
    ];

    pub async fn run(self, b: &mut Bench, r: &mut Report) -> Result<()> {
        match self {
            Stage::Ingest => ingest::run(b, r).await,
            Stage::Freshness => freshness::run(b, r).await,
            Stage::Queries => queries::run(b, r).await,
            Stage::Replay => replay::run(b, r).await,
            Stage::Fhir => fhir::run(b, r).await,
            Stage::Mpi => mpi::run(b, r).await,
            Stage::Memory => memory::run(b, r).await,
        }
    }
}

/// Peak memory (KiB) of baseline processes that are gone by the memory stage, recorded by the
/// stage that ran them.
#[derive(Default)]
pub struct Peaks {
    /// The bare producer, and the MiB of input it holds.
    pub bare_producer: Option<(u64, f64)>,
    pub bare_copy: Option<u64>,
    pub projector_replay: Option<u64>,
}

/// The stack under test and what the stages share.
pub struct Bench {
    pub sizes: Sizes,
    pub http: reqwest::Client,
    pub broker: hie_tests::Broker,
    pub brokers: String,
    pub db: hie_tests::TestDb,
    pub services: Services,
    pub api: Arc<Api>,
    /// Everything written so far: a stage reading the views waits until they include it.
    pub written: Position,
    pub peaks: Peaks,
    /// Up to 1,000 Avro payloads ingest wrote to `hie.records` (the freshness floor sends them).
    pub sample_payloads: Vec<Vec<u8>>,
    /// Patients with a consent for the reader's organization ([`Bench::consented_patients`]).
    consented: Vec<String>,
    /// The bare axum + tokio-postgres server ([`Bench::bare_server`]).
    bare_server: Option<Proc>,
}

impl Bench {
    /// Starts the broker (hie-log), a fresh database and the release binaries; registers the source and the
    /// reader's account.
    pub async fn start(sizes: &Sizes) -> Result<Bench> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(128)
            .timeout(Duration::from_secs(30))
            .build()?;
        say("starting the broker (hie-log), a fresh database and the release binaries");
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
        Ok(Bench {
            sizes: sizes.clone(),
            http,
            broker,
            brokers,
            db,
            services,
            api,
            written: Position::new(),
            peaks: Peaks::default(),
            sample_payloads: Vec::new(),
            consented: Vec::new(),
            bare_server: None,
        })
    }

    /// `sizes.patients` patients (MRNs) with a consent for the reader's organization, written
    /// by the first stage that asks and readable when this returns.
    pub async fn consented_patients(&mut self) -> Result<Vec<String>> {
        if self.consented.is_empty() {
            say(format!(
                "preparing {} consented patients",
                self.sizes.patients
            ));
            let mrns: Vec<String> = (0..self.sizes.patients)
                .map(|i| format!("q{i:05}"))
                .collect();
            let (_, p) = self
                .api
                .post_ndjson(load::ndjson("prep", &mrns, mrns.len()))
                .await?;
            self.written.merge(&p);
            for chunk in mrns.chunks(8) {
                let grants = chunk.iter().map(|m| self.api.grant(m));
                for p in futures::future::try_join_all(grants).await? {
                    self.written.merge(&p);
                }
            }
            self.api.records(&mrns[0], "", &self.written).await?;
            self.consented = mrns;
        }
        Ok(self.consented.clone())
    }
}

impl Bench {
    /// The bare axum + tokio-postgres server over the same database (a separate process, started
    /// by the first stage that asks and kept to the end of the run for its peak memory).
    pub async fn bare_server(&mut self) -> Result<&Proc> {
        if self.bare_server.is_none() {
            let addr = stack::local_addr();
            let mut server = Proc::spawn_args(
                "bare-server",
                &std::env::current_exe()?,
                &["bare-server", "--addr", &addr, "--db", &self.db.url()],
                &addr,
                &[],
            )?;
            server
                .wait_healthy(&self.http, Duration::from_secs(20))
                .await?;
            self.bare_server = Some(server);
        }
        Ok(self.bare_server.as_ref().expect("started above"))
    }

    /// The bare server's peak memory so far, when a stage started it.
    pub fn bare_server_peak_kib(&self) -> Option<u64> {
        self.bare_server.as_ref().and_then(Proc::peak_kib)
    }
}

/// Wait until the projector writing to `db` has applied everything in `written`; returns the
/// events applied and the seconds since the projector was started.
pub async fn wait_projected(
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
            bail!("the projector did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
