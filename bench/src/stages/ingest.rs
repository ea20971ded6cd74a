//! Ingest throughput: NDJSON batches from concurrent clients, vs a bare rdkafka producer sending
//! the same key/Avro bytes to the same broker.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use schemas::Position;

use super::{wait_projected, Bench};
use crate::load::{self, Api};
use crate::report::{Report, Row};
use crate::{baseline, say, stack};

pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()> {
    let s = b.sizes.clone();
    r.describe(format!(
        "**ingest**: {reqs} measured requests (after 2 warm-up requests) of {batch} FHIR NDJSON lines\n\
         \x20 ({ppr} patients, each a Patient line and its Observations) from {clients} concurrent clients;\n\
         \x20 records/s = records accepted (202, so acknowledged by the broker) ÷ wall time. Baseline: the\n\
         \x20 records ingest wrote are read back from `hie.records` and the same key/Avro bytes are sent by\n\
         \x20 a bare rdkafka `FutureProducer` with the project's producer settings (idempotent,\n\
         \x20 `acks=all`, `linger.ms=2`), {clients} concurrent senders of {batch} messages each awaiting all\n\
         \x20 acknowledgements, to another topic of the same broker, from a separate process.",
        reqs = s.ingest_requests,
        batch = s.batch,
        ppr = s.patients_per_request,
        clients = s.clients,
    ));
    say(format!(
        "ingest: {} requests x {} NDJSON records, {} clients",
        s.ingest_requests, s.batch, s.clients
    ));
    let (records, secs) = throughput(&b.api, &s, &mut b.written).await?;
    let messages =
        baseline::read_back(&b.brokers, schemas::topics::RECORDS.name, &b.written).await?;
    let file = stack::scratch_dir().join("records.bin");
    baseline::write_messages(&file, &messages)?;
    b.sample_payloads = messages.iter().take(1000).map(|m| m.1.clone()).collect();
    let bare_producer = baseline::run_child(&[
        "bare-produce".into(),
        "--brokers".into(),
        b.brokers.clone(),
        "--input".into(),
        file.display().to_string(),
        "--clients".into(),
        s.clients.to_string(),
        "--batch".into(),
        s.batch.to_string(),
    ])
    .await?;
    let input_mib = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    b.peaks.bare_producer = Some((bare_producer.peak_kib, input_mib));
    r.push(Row::higher(
        "ingest",
        format!(
            "records/s, NDJSON {} per request, {} clients",
            s.batch, s.clients
        ),
        records as f64 / secs,
        "bare rdkafka producer, same Avro bytes, same broker",
        bare_producer.per_sec(),
        "",
    ));

    // The live projector catches up on the backlog before anything else is measured.
    say("waiting for the projector to apply the ingest backlog");
    let caught_up = Instant::now();
    let (applied, _) = wait_projected(&b.services.projector, &b.db, &b.written).await?;
    r.note(format!(
        "The live projector applied the ingest backlog ({applied} events) {:.1} s after the last 202.",
        caught_up.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Post the NDJSON batches from `clients` concurrent clients; returns records accepted and seconds.
async fn throughput(
    api: &Arc<Api>,
    sizes: &crate::Sizes,
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
