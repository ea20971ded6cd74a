//! `hiectl quarantine`: the events the projector set aside because it could not apply them
//! (undecodable, or refused by PostgreSQL), and asking it to apply them again once the cause is
//! fixed. Re-applying is an event (`QuarantineReapplyRequested` on `hie.deadletter`): the
//! projector makes the attempt in log order, so replaying the log repeats it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use schemas::{now_micros, topics, QuarantineReapplyRequested};
use tokio_postgres::Client;

use crate::dead_letters::{connect, Db};

#[derive(Subcommand)]
pub enum Command {
    /// A table of quarantined events (never their payloads), oldest first.
    List {
        #[arg(long, value_enum, default_value_t = Status::Open)]
        status: Status,
        /// Only events of this topic (e.g. hie.consents).
        #[arg(long)]
        topic: Option<String>,
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Ask the projector to apply quarantined events again, then wait for its verdict; exits
    /// non-zero if any is still refused.
    Reapply {
        /// Events as topic/partition/offset (`list` shows them).
        events: Vec<String>,
        /// Every open entry (of --topic, when given) instead of a list.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// Who asks, recorded in the event [default: $USER].
        #[arg(long)]
        by: Option<String>,
        /// Seconds to wait for the projector's verdicts.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Status {
    Open,
    Reapplied,
    All,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Entry {
    topic: String,
    partition: i32,
    offset: i64,
    event_type: String,
    status: String,
    attempts: i32,
    withholds: bool,
    quarantined_at: String,
    error: String,
}

impl Entry {
    fn id(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

const COLUMNS: &str = "topic, partition, \"offset\", event_type, status, attempts, withholds,
    to_char(quarantined_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), error";

fn entry(r: &tokio_postgres::Row) -> Entry {
    Entry {
        topic: r.get(0),
        partition: r.get(1),
        offset: r.get(2),
        event_type: r.get(3),
        status: r.get(4),
        attempts: r.get(5),
        withholds: r.get(6),
        quarantined_at: r.get(7),
        error: r.get(8),
    }
}

async fn select(db: &Client, status: Option<&str>, topic: Option<&str>) -> Result<Vec<Entry>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM quarantine WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR topic = $2) ORDER BY quarantined_at, topic, partition, \"offset\""
    );
    let rows = db
        .query(&sql, &[&status, &topic])
        .await
        .context("reading quarantine")?;
    Ok(rows.iter().map(entry).collect())
}

async fn by_id(db: &Client, topic: &str, partition: i32, offset: i64) -> Result<Option<Entry>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM quarantine WHERE topic = $1 AND partition = $2 AND \"offset\" = $3"
    );
    let row = db
        .query_opt(&sql, &[&topic, &partition, &offset])
        .await
        .context("reading quarantine")?;
    Ok(row.as_ref().map(entry))
}

/// `topic/partition/offset`; the topic name itself has no `/`.
fn parse_id(raw: &str) -> Result<(String, i32, i64)> {
    let mut parts = raw.rsplitn(3, '/');
    let (Some(offset), Some(partition), Some(topic)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("{raw:?} is not topic/partition/offset");
    };
    Ok((
        topic.to_string(),
        partition
            .parse()
            .with_context(|| format!("{raw:?}: partition"))?,
        offset.parse().with_context(|| format!("{raw:?}: offset"))?,
    ))
}

pub async fn run(command: Command) -> Result<bool> {
    match command {
        Command::List {
            status,
            topic,
            json,
            db,
        } => {
            let db = connect(&db.database_url).await?;
            let entries = select(&db, status.recorded(), topic.as_deref()).await?;
            if json {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!("EVENT\tTYPE\tSTATUS\tATTEMPTS\tWITHHOLDS\tQUARANTINED_AT\tERROR");
                for e in &entries {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        e.id(),
                        e.event_type,
                        e.status,
                        e.attempts,
                        if e.withholds { "patient" } else { "-" },
                        e.quarantined_at,
                        e.error
                    );
                }
                eprintln!("{} event(s)", entries.len());
            }
            Ok(true)
        }
        Command::Reapply {
            events,
            all,
            topic,
            kafka_brokers,
            by,
            wait,
            db,
        } => {
            let db = connect(&db.database_url).await?;
            let chosen: Vec<Entry> = match (all, events.is_empty()) {
                (true, true) => select(&db, Some("open"), topic.as_deref()).await?,
                (false, false) => {
                    let mut chosen = Vec::new();
                    for raw in &events {
                        let (t, p, o) = parse_id(raw)?;
                        match by_id(&db, &t, p, o).await? {
                            Some(e) if e.status == "open" => chosen.push(e),
                            Some(_) => bail!("{raw} is already resolved"),
                            None => bail!("{raw} is not in quarantine"),
                        }
                    }
                    chosen
                }
                _ => bail!("name events (topic/partition/offset) or --all, not both"),
            };
            if chosen.is_empty() {
                println!("nothing to re-apply");
                return Ok(true);
            }
            let producer = platform::kafka::producer(&kafka_brokers, Duration::from_secs(10))?;
            let operator = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            for e in &chosen {
                let event = QuarantineReapplyRequested {
                    event_id: uuid::Uuid::new_v4().to_string(),
                    requested_at: now_micros(),
                    topic: e.topic.clone(),
                    partition: e.partition,
                    offset: e.offset,
                    requested_by: operator.clone(),
                };
                platform::kafka::publish(
                    &producer,
                    topics::DEAD_LETTERS.name,
                    &event.key(),
                    &event,
                )
                .await
                .with_context(|| format!("publishing the request for {}", e.id()))?;
            }
            println!(
                "{} request(s) published; waiting for the projector",
                chosen.len()
            );
            verdicts(&db, &chosen, Duration::from_secs(wait)).await
        }
    }
}

/// Waits until the projector has made each attempt (resolved, or one more attempt recorded),
/// printing a line per event. True when every one was applied.
async fn verdicts(db: &Client, asked: &[Entry], wait: Duration) -> Result<bool> {
    let deadline = Instant::now() + wait;
    let mut pending: Vec<&Entry> = asked.iter().collect();
    let mut all_applied = true;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for e in pending {
            let now = by_id(db, &e.topic, e.partition, e.offset).await?;
            match now {
                Some(n) if n.status != "open" => println!("{}\tre-applied", e.id()),
                Some(n) if n.attempts > e.attempts => {
                    all_applied = false;
                    println!("{}\tstill refused\t{}", e.id(), n.error);
                }
                _ => still.push(e),
            }
        }
        pending = still;
        if !pending.is_empty() {
            if Instant::now() >= deadline {
                for e in &pending {
                    println!("{}\tno verdict yet (is the projector running?)", e.id());
                }
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(all_applied)
}

impl Status {
    fn recorded(self) -> Option<&'static str> {
        match self {
            Status::Open => Some("open"),
            Status::Reapplied => Some("reapplied"),
            Status::All => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_topic_partition_offset() {
        assert_eq!(
            parse_id("hie.consents/2/17").unwrap(),
            ("hie.consents".to_string(), 2, 17)
        );
        assert!(parse_id("hie.consents/x/17").is_err());
        assert!(parse_id("17").is_err());
    }
}
