//! The stack under test: the release binaries of the three services as real processes (so each has
//! its own peak memory), against a broker (hie-log) and a fresh PostgreSQL database started the way the
//! integration tests start them (`hie_tests::Broker`, `hie_tests::TestDb`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the harness keeps its logs and scratch files.
pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(dir.join("logs"));
    dir
}

/// A binary built beside this one (`target/release/<name>`; `bench/run` builds them).
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("path of the bench binary")?;
    let path = exe
        .parent()
        .context("bench binary has no directory")?
        .join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run the harness with bench/run, which builds the release binaries first",
            path.display()
        );
    }
    Ok(path)
}

/// A child process killed when dropped; its peak memory is read from /proc while it runs.
pub struct Proc {
    pub name: String,
    pub addr: String,
    child: Child,
    pub started: Instant,
}

impl Proc {
    pub fn spawn(name: &str, binary: &Path, addr: &str, env: &[(&str, String)]) -> Result<Proc> {
        Self::spawn_args(name, binary, &[], addr, env)
    }

    pub fn spawn_args(
        name: &str,
        binary: &Path,
        args: &[&str],
        addr: &str,
        env: &[(&str, String)],
    ) -> Result<Proc> {
        let log = scratch_dir().join("logs").join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Proc {
            name: name.to_string(),
            addr: addr.to_string(),
            child,
            started: Instant::now(),
        })
    }

    /// `VmHWM`: the most resident memory the process has had so far, in KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        peak_kib_of(self.child.id())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn wait_healthy(&mut self, http: &reqwest::Client, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.base_url());
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}); see {}",
                    self.name,
                    scratch_dir()
                        .join("logs")
                        .join(format!("{}.log", self.name))
                        .display()
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not become healthy at {url}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn peak_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn own_peak_kib() -> Option<u64> {
    peak_kib_of(std::process::id())
}

/// The pid of the broker (hie-log) listening on `port` (found by its command line).
pub fn broker_pid(port: u16) -> Option<u32> {
    let needle = format!("tcp://127.0.0.1:{port}");
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("hie-log") && cmdline.contains(&needle)).then_some(pid)
    })
}

pub fn local_addr() -> String {
    format!("127.0.0.1:{}", hie_tests::free_port())
}

/// The three services, started from their release binaries.
pub struct Services {
    pub ingest: Proc,
    pub projector: Proc,
    pub query: Proc,
}

pub const FETCH_WAIT_MS: u64 = 10;

/// A projector process; `matcher` says whether it may run the MPI's matcher (a projector
/// rebuilding views into another database must not: leadership is per database, and the live
/// one already decides). Claim-checked resources are read from `blob_store`'s database (the
/// live one's, also for a rebuild elsewhere).
pub fn projector(
    name: &str,
    brokers: &str,
    database_url: &str,
    blob_store: &str,
    matcher: bool,
) -> Result<Proc> {
    let addr = local_addr();
    Proc::spawn(
        name,
        &sibling_binary("projector")?,
        &addr,
        &[
            ("KAFKA_BROKERS", brokers.to_string()),
            ("DATABASE_URL", database_url.to_string()),
            ("HIE_BLOB_STORE", blob_store.to_string()),
            ("PROJECTOR_HTTP_ADDR", addr.clone()),
            ("PROJECTOR_INSTANCE", "0/1".into()),
            ("PROJECTOR_GROUP_ID", format!("bench-{name}")),
            ("PROJECTOR_FETCH_WAIT_MS", FETCH_WAIT_MS.to_string()),
            ("PROJECTOR_MATCHER", matcher.to_string()),
        ],
    )
}

impl Services {
    pub async fn start(
        http: &reqwest::Client,
        brokers: &str,
        database_url: &str,
        secret: &str,
    ) -> Result<Services> {
        let ingest_addr = local_addr();
        let mut ingest = Proc::spawn(
            "ingest",
            &sibling_binary("ingest")?,
            &ingest_addr,
            &[
                ("KAFKA_BROKERS", brokers.to_string()),
                // The blob store of the claim-check path: the bench's database.
                ("DATABASE_URL", database_url.to_string()),
                ("HIE_JWT_SECRET", secret.to_string()),
                ("INGEST_HTTP_ADDR", ingest_addr.clone()),
                ("HIE_BOOTSTRAP_ADMIN", crate::load::ADMIN_SUB.to_string()),
                // No MLLP listener on the fixed default port: it may be taken.
                ("INGEST_MLLP_ADDR", "off".into()),
            ],
        )?;
        let mut projector = projector("projector", brokers, database_url, database_url, true)?;
        // The query API needs the views, which the projector creates when it starts.
        ingest.wait_healthy(http, Duration::from_secs(60)).await?;
        projector
            .wait_healthy(http, Duration::from_secs(60))
            .await?;
        let query_addr = local_addr();
        let mut query = Proc::spawn(
            "query-api",
            &sibling_binary("query-api")?,
            &query_addr,
            &[
                ("KAFKA_BROKERS", brokers.to_string()),
                ("DATABASE_URL", database_url.to_string()),
                ("HIE_JWT_SECRET", secret.to_string()),
                ("QUERY_HTTP_ADDR", query_addr.clone()),
                // The admin token's user: honoured without an account, to create the reader's.
                ("HIE_BOOTSTRAP_ADMIN", crate::load::ADMIN_SUB.to_string()),
            ],
        )?;
        query.wait_healthy(http, Duration::from_secs(60)).await?;
        Ok(Services {
            ingest,
            projector,
            query,
        })
    }
}
