//! `hiectl dead-letters`: list what ingest rejected, show a payload to fix it, re-submit it.

mod resubmit;
mod store;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

pub use store::connect;
use store::{Filter, Letter};

#[derive(Subcommand)]
pub enum Command {
    /// A table of dead letters (never their payloads), oldest first.
    List {
        #[command(flatten)]
        select: Select,
        /// open: not re-submitted yet; resubmitted: ingest took a re-submission.
        #[arg(long, value_enum, default_value_t = Status::Open)]
        status: Status,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Print a dead letter's raw payload (PHI: to your terminal or a file, to fix it).
    Show {
        id: String,
        /// Write the payload to this file (mode 600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        db: Db,
    },
    /// Re-submit dead letters through ingest (FHIR over HTTP, HL7 v2 over MLLP), validated again
    /// like new input; prints one line per letter and exits non-zero if any was not accepted.
    Resubmit {
        /// Dead letter ids (`list` shows them).
        ids: Vec<String>,
        /// Every open dead letter matching --source/--channel/--reason-contains, instead of ids.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        select: Select,
        /// Send this file instead of the dead-lettered payload (one id only).
        #[arg(long)]
        payload: Option<PathBuf>,
        /// Re-submit letters already re-submitted.
        #[arg(long)]
        force: bool,
        /// Print what would be sent where, send nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8081")]
        ingest: String,
        #[arg(long, env = "INGEST_MLLP_ADDR", default_value = "127.0.0.1:2575")]
        mllp: String,
        /// The source API key for FHIR letters (any source).
        #[arg(long, env = "HIE_SOURCE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// A JSON object of source id → API key [default: $HIE_DATA_DIR/demo-keys.json, else
        /// ./.local/demo-keys.json, when present].
        #[arg(long)]
        api_keys: Option<PathBuf>,
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// Who re-submits, recorded in the event [default: $USER].
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Args)]
pub struct Select {
    /// Only this source's letters (also letters of a then-unregistered source naming it in MSH-4).
    #[arg(long)]
    source: Option<String>,
    #[arg(long, value_enum)]
    channel: Option<Channel>,
    /// Only letters whose reason contains this text (case-insensitive).
    #[arg(long)]
    reason_contains: Option<String>,
}

#[derive(Args)]
pub struct Db {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Status {
    Open,
    Resubmitted,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Channel {
    Http,
    Mllp,
    File,
}

impl Channel {
    fn recorded(self) -> Vec<String> {
        let names: &[&str] = match self {
            Channel::Http => &["fhir_bundle", "fhir_ndjson"],
            Channel::Mllp => &["hl7v2_mllp"],
            Channel::File => &["drop_folder"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}

impl Select {
    fn filter(&self, status: Status) -> Filter {
        Filter {
            source: self.source.clone(),
            channels: self.channel.map(Channel::recorded),
            status: match status {
                Status::Open => Some("open".into()),
                Status::Resubmitted => Some("resubmitted".into()),
                Status::All => None,
            },
            reason_contains: self.reason_contains.clone(),
            limit: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.source.is_none() && self.channel.is_none() && self.reason_contains.is_none()
    }
}

pub async fn run(command: Command) -> Result<bool> {
    match command {
        Command::List {
            select,
            status,
            limit,
            json,
            db,
        } => {
            let db = store::connect(&db.database_url).await?;
            let mut filter = select.filter(status);
            filter.limit = Some(limit);
            let letters = store::select(&db, &filter).await?;
            print_list(&letters, json)?;
            Ok(true)
        }
        Command::Show { id, out, db } => {
            let db = store::connect(&db.database_url).await?;
            let letter = store::by_ids(&db, std::slice::from_ref(&id))
                .await?
                .pop()
                .flatten()
                .ok_or_else(|| anyhow!("no dead letter {id}"))?;
            match out {
                Some(path) => write_private(&path, &letter.payload)?,
                None => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&letter.payload)?;
                    if !letter.payload.ends_with(b"\n") {
                        stdout.write_all(b"\n")?;
                    }
                }
            }
            Ok(true)
        }
        Command::Resubmit {
            ids,
            all,
            select,
            payload,
            force,
            dry_run,
            ingest,
            mllp,
            api_key,
            api_keys,
            kafka_brokers,
            by,
            db,
        } => {
            let db = store::connect(&db.database_url).await?;
            let letters = selection(&db, ids, all, &select, force).await?;
            let edited = match &payload {
                Some(path) if letters.len() == 1 => Some(
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                ),
                Some(_) => bail!("--payload replaces the payload of exactly one dead letter"),
                None => None,
            };
            if dry_run {
                for l in &letters {
                    let p = edited.as_deref().unwrap_or(&l.payload);
                    println!(
                        "{}\twould go via {}\tsource {}\t{} bytes{}",
                        l.id,
                        resubmit::via(p),
                        l.source.as_deref().unwrap_or("-"),
                        p.len(),
                        if edited.is_some() { " (edited)" } else { "" }
                    );
                }
                eprintln!(
                    "dry run: {} dead letter(s) selected, none sent",
                    letters.len()
                );
                return Ok(true);
            }
            let target = resubmit::Target {
                ingest: ingest.trim_end_matches('/').to_string(),
                mllp,
                api_keys: load_keys(api_key, api_keys)?,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()?,
                producer: platform::kafka::producer(&kafka_brokers, Duration::from_secs(10))?,
                operator: by
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "unknown".into()),
            };
            resubmit_all(&target, &letters, edited.as_deref()).await
        }
    }
}

/// The letters a `resubmit` is about: by id, or every open one matching the filters.
async fn selection(
    db: &tokio_postgres::Client,
    ids: Vec<String>,
    all: bool,
    select: &Select,
    force: bool,
) -> Result<Vec<Letter>> {
    let letters = match (ids.is_empty(), all) {
        (false, false) => {
            if !select.is_empty() {
                bail!("give dead letter ids or --all with filters, not both");
            }
            let mut seen = HashSet::new();
            let ids: Vec<String> = ids.into_iter().filter(|i| seen.insert(i.clone())).collect();
            let found = store::by_ids(db, &ids).await?;
            let mut letters = Vec::new();
            for (id, letter) in ids.iter().zip(found) {
                let letter = letter.ok_or_else(|| anyhow!("no dead letter {id}"))?;
                if letter.status != "open" && !force {
                    bail!(
                        "dead letter {id} was already re-submitted ({}); --force to send it again",
                        letter.resubmit_outcome.as_deref().unwrap_or("resubmitted")
                    );
                }
                letters.push(letter);
            }
            letters
        }
        (true, true) => {
            let status = if force { Status::All } else { Status::Open };
            store::select(db, &select.filter(status)).await?
        }
        (true, false) => bail!("name dead letter ids, or select with --all [--source S] [--channel C] [--reason-contains X]"),
        (false, true) => bail!("give dead letter ids or --all, not both"),
    };
    if letters.is_empty() {
        eprintln!("no dead letters selected");
    }
    Ok(letters)
}

/// Re-submit one after another (order kept: a Patient before the records that reference it),
/// printing a line per letter as it goes. True when every one was accepted.
async fn resubmit_all(
    target: &resubmit::Target,
    letters: &[Letter],
    edited: Option<&[u8]>,
) -> Result<bool> {
    let started = Instant::now();
    let mut mllp = None;
    let (mut accepted, mut rejected, mut failed) = (0, 0, 0);
    for (n, letter) in letters.iter().enumerate() {
        let payload = edited.unwrap_or(&letter.payload);
        let outcome = target
            .resubmit(&mut mllp, letter, payload, edited.is_some())
            .await;
        let line = match &outcome {
            resubmit::Outcome::Accepted { position } => {
                accepted += 1;
                match position {
                    Some(p) => format!("accepted\tposition {p}"),
                    None => "accepted".to_string(),
                }
            }
            resubmit::Outcome::Rejected { reason } => {
                rejected += 1;
                format!("rejected again\t{reason}")
            }
            resubmit::Outcome::Failed { error } => {
                failed += 1;
                format!("failed\t{error}")
            }
        };
        println!("[{}/{}] {}\t{line}", n + 1, letters.len(), letter.id);
    }
    eprintln!(
        "{} re-submitted in {:.2} s: {accepted} accepted, {rejected} rejected again, {failed} failed",
        letters.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(rejected == 0 && failed == 0)
}

fn load_keys(api_key: Option<String>, file: Option<PathBuf>) -> Result<BTreeMap<String, String>> {
    let default = || {
        let dir = std::env::var_os("HIE_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".local"));
        let path = dir.join("demo-keys.json");
        path.exists().then_some(path)
    };
    let mut keys: BTreeMap<String, String> = match file.or_else(default) {
        Some(path) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a JSON object of source → key", path.display())
            })?
        }
        None => BTreeMap::new(),
    };
    if let Some(key) = api_key {
        keys.insert("*".into(), key);
    }
    Ok(keys)
}

fn print_list(letters: &[Letter], json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for l in letters {
            writeln!(out, "{}", serde_json::to_string(l)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<20}  {:<20}  {:<11}  {:>8}  {:<11}  reason",
        "id", "rejected_at", "source", "channel", "bytes", "status"
    )?;
    for l in letters {
        let source = match (&l.source, l.source_unregistered) {
            (Some(s), true) => format!("{s} (unreg.)"),
            (Some(s), false) => s.clone(),
            (None, _) => "-".into(),
        };
        writeln!(
            out,
            "{:<36}  {:<20}  {:<20}  {:<11}  {:>8}  {:<11}  {}",
            l.id, l.rejected_at, source, l.channel, l.payload_bytes, l.status, l.reason
        )?;
    }
    Ok(())
}

/// A payload holds PHI: the file is readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
