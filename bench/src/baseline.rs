//! The baselines: what the same machine does with the bare tools, no pipeline code in the way.
//! The bare producer, the bare COPY and the bare query server each run as a child process of the
//! harness (`bench bare-…`), like the services, so their peak memory is theirs alone.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::topics::TopicSpec;
use schemas::Position;
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

use crate::load::Latencies;

/// What a child baseline prints on its last stdout line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildResult {
    pub count: u64,
    pub secs: f64,
    pub peak_kib: u64,
}

impl ChildResult {
    pub fn per_sec(&self) -> f64 {
        self.count as f64 / self.secs
    }
}

/// Run `bench <args>` as a child and parse its result line.
pub async fn run_child(args: &[String]) -> Result<ChildResult> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    if !out.status.success() {
        bail!("bench {} failed: {}", args[0], out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("child printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

pub fn print_result(r: &ChildResult) {
    println!("{}", serde_json::to_string(r).expect("serializes"));
}

fn consumer(brokers: &str) -> Result<StreamConsumer> {
    Ok(platform::kafka::client_config(brokers)
        .set(
            "group.id",
            format!("bench-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", crate::stack::FETCH_WAIT_MS.to_string())
        .create()?)
}

/// Every message of `topic` up to the offsets in `ends` (taken from produce results, as a Tansu broker's
/// ListOffsets can report a partition's end too low), as (key, payload).
pub async fn read_back(
    brokers: &str,
    topic: &str,
    ends: &Position,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = consumer(brokers)?;
    let mut tpl = TopicPartitionList::new();
    let mut want: HashMap<i32, i64> = HashMap::new();
    for (t, p, o) in ends.entries().filter(|(t, _, _)| *t == topic) {
        tpl.add_partition_offset(t, p, Offset::Beginning)?;
        want.insert(p, o);
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !want.is_empty() {
        let m = tokio::time::timeout_at(deadline.into(), c.recv())
            .await
            .context("reading the records topic back timed out")??;
        if want
            .get(&m.partition())
            .is_some_and(|end| m.offset() <= *end)
        {
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
            if want[&m.partition()] == m.offset() {
                want.remove(&m.partition());
            }
        }
    }
    Ok(out)
}

pub fn write_messages(path: &Path, messages: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (k, v) in messages {
        f.write_all(&(k.len() as u32).to_le_bytes())?;
        f.write_all(k)?;
        f.write_all(&(v.len() as u32).to_le_bytes())?;
        f.write_all(v)?;
    }
    f.flush()?;
    Ok(())
}

fn read_messages(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut raw = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut raw)?;
    let mut out = Vec::new();
    let mut at = 0;
    let take = |at: &mut usize| -> Result<Vec<u8>> {
        let len = u32::from_le_bytes(raw.get(*at..*at + 4).context("truncated")?.try_into()?);
        let v = raw
            .get(*at + 4..*at + 4 + len as usize)
            .context("truncated")?
            .to_vec();
        *at += 4 + len as usize;
        Ok(v)
    };
    while at < raw.len() {
        let k = take(&mut at)?;
        let v = take(&mut at)?;
        out.push((k, v));
    }
    Ok(out)
}

pub const BARE_TOPIC: TopicSpec = TopicSpec {
    name: "bench.bare",
    partitions: 3,
};
pub const FRESH_TOPIC: TopicSpec = TopicSpec {
    name: "bench.fresh",
    partitions: 3,
};

/// Child: send the messages in `input` with the project's producer settings (idempotent,
/// acks=all, linger 2 ms), `clients` concurrent senders each sending `batch` messages and waiting
/// for all their acknowledgements, as ingest does for one request.
pub async fn bare_produce(brokers: &str, input: &Path, clients: usize, batch: usize) -> Result<()> {
    let messages = Arc::new(read_messages(input)?);
    platform::kafka::ensure_topics(brokers, &[&BARE_TOPIC]).await?;
    let producer = platform::kafka::producer(brokers, Duration::from_secs(10))?;
    // Warm up (metadata, idempotent producer id) as ingest was by its first requests.
    send_all(&producer, &messages[..messages.len().min(100)]).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (producer, messages, next) = (producer.clone(), messages.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= messages.len() {
                    return Ok::<_, anyhow::Error>(());
                }
                let to = (from + batch).min(messages.len());
                send_all(&producer, &messages[from..to]).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    print_result(&ChildResult {
        count: messages.len() as u64,
        secs: started.elapsed().as_secs_f64(),
        peak_kib: crate::stack::own_peak_kib().unwrap_or(0),
    });
    Ok(())
}

async fn send_all(producer: &FutureProducer, messages: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    let sends = messages.iter().map(|(k, v)| {
        producer.send(
            FutureRecord::to(BARE_TOPIC.name).key(k).payload(v),
            Timeout::Never,
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Child: copy the replayed `records` rows out of `database_url`, then time a bare
/// `COPY … FROM STDIN (FORMAT binary)` of them into a table like `records` (same columns, primary
/// key and index).
pub async fn bare_copy(database_url: &str) -> Result<()> {
    let (client, conn) = tokio_postgres::connect(database_url, NoTls).await?;
    tokio::spawn(conn);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM records", &[])
        .await?
        .get(0);
    let mut data = Vec::new();
    let out = client
        .copy_out("COPY (SELECT * FROM records) TO STDOUT (FORMAT binary)")
        .await?;
    futures::pin_mut!(out);
    while let Some(chunk) = out.next().await {
        data.extend_from_slice(&chunk?);
    }
    client
        .batch_execute(
            "DROP TABLE IF EXISTS bench_records_copy;
             CREATE TABLE bench_records_copy (LIKE records INCLUDING ALL);",
        )
        .await?;
    let started = Instant::now();
    let sink = client
        .copy_in("COPY bench_records_copy FROM STDIN (FORMAT binary)")
        .await?;
    futures::pin_mut!(sink);
    for chunk in data.chunks(256 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    let copied = sink.as_mut().finish().await?;
    let secs = started.elapsed().as_secs_f64();
    if copied != rows as u64 {
        bail!("copied {copied} rows of {rows}");
    }
    client
        .batch_execute("DROP TABLE bench_records_copy")
        .await?;
    print_result(&ChildResult {
        count: copied,
        secs,
        peak_kib: crate::stack::own_peak_kib().unwrap_or(0),
    });
    Ok(())
}

/// Child: a bare axum + tokio-postgres server answering `GET /records/{patient}[?type=]` with the
/// same SQL and JSON shape as the query API's records read, without authentication, consent or
/// audit. Runs until killed.
pub async fn bare_server(addr: &str, database_url: &str, connections: usize) -> Result<()> {
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::Json;
    #[derive(Deserialize)]
    struct Params {
        #[serde(rename = "type")]
        resource_type: Option<String>,
    }
    /// Each request takes a connection to itself, as a pool does (no pipelining behind another
    /// request's large result).
    struct Pool {
        give: tokio::sync::mpsc::Sender<tokio_postgres::Client>,
        take: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<tokio_postgres::Client>>,
    }
    async fn records(
        State(pool): State<Arc<Pool>>,
        Path(id): Path<uuid::Uuid>,
        Query(p): Query<Params>,
    ) -> Result<Json<serde_json::Value>, StatusCode> {
        let client = pool
            .take
            .lock()
            .await
            .recv()
            .await
            .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
        let rows = client
            .query(
                "SELECT resource FROM records WHERE patient_id = $1 AND ($2::text IS NULL OR resource_type = $2)
                 ORDER BY resource_type, received_at, resource_id",
                &[&id, &p.resource_type],
            )
            .await;
        let _ = pool.give.send(client).await;
        let rows = rows.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        let records: Vec<serde_json::Value> = rows.iter().map(|r| r.get(0)).collect();
        Ok(Json(
            serde_json::json!({"records": records, "basis": "consent"}),
        ))
    }
    let (give, take) = tokio::sync::mpsc::channel(connections);
    for _ in 0..connections {
        let (client, conn) = tokio_postgres::connect(database_url, NoTls).await?;
        tokio::spawn(conn);
        give.send(client).await?;
    }
    let pool = Arc::new(Pool {
        give,
        take: tokio::sync::Mutex::new(take),
    });
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/records/{id}", axum::routing::get(records))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The broker's own floor for freshness: at `rate` groups a second, a bare producer sends
/// `group` messages with one key (one patient) and a bare consumer, fetching like the projector
/// (`fetch.wait.max.ms` the same), sees them; each figure is from the last acknowledgement of a
/// group to the consumer having seen the whole group.
pub async fn freshness_floor(
    brokers: &str,
    payloads: &[Vec<u8>],
    rate: u32,
    secs: u64,
    group: usize,
) -> Result<Latencies> {
    let c = consumer(brokers)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..FRESH_TOPIC.partitions {
        tpl.add_partition_offset(FRESH_TOPIC.name, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let seen: Arc<Mutex<HashMap<(i32, i64), Instant>>> = Arc::default();
    let seen_w = seen.clone();
    let reader = tokio::spawn(async move {
        loop {
            if let Ok(m) = c.recv().await {
                seen_w
                    .lock()
                    .expect("not poisoned")
                    .insert((m.partition(), m.offset()), Instant::now());
            }
        }
    });
    let producer = platform::kafka::producer(brokers, Duration::from_secs(10))?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut sends = tokio::task::JoinSet::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let key = format!("fresh-{}", n % 50);
        let batch: Vec<Vec<u8>> = (0..group)
            .map(|i| payloads[(n * group + i) % payloads.len()].clone())
            .collect();
        let producer = producer.clone();
        n += 1;
        sends.spawn(async move {
            let acks = batch.iter().map(|v| {
                producer.send(
                    FutureRecord::to(FRESH_TOPIC.name).key(&key).payload(v),
                    Timeout::Never,
                )
            });
            let mut offsets = Vec::new();
            for r in futures::future::join_all(acks).await {
                let d = r.map_err(|(e, _)| e)?;
                offsets.push((d.partition, d.offset));
            }
            Ok::<_, anyhow::Error>((Instant::now(), offsets))
        });
    }
    let mut groups = Vec::new();
    while let Some(r) = sends.join_next().await {
        groups.push(r??);
    }
    // Let the consumer finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lat = Vec::new();
    for (acked, offsets) in groups {
        loop {
            let last_seen = {
                let seen = seen.lock().expect("not poisoned");
                offsets
                    .iter()
                    .map(|o| seen.get(o).copied())
                    .collect::<Option<Vec<_>>>()
                    .and_then(|v| v.into_iter().max())
            };
            match last_seen {
                Some(t) => {
                    lat.push(t.saturating_duration_since(acked));
                    break;
                }
                None if Instant::now() > deadline => bail!("the bare consumer missed messages"),
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    reader.abort();
    Ok(Latencies(lat))
}
