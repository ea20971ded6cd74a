//! Freshness: ingest 202 → readable through the query API at fixed request rates, vs the broker's
//! own floor (a bare producer's ack → a bare consumer) at the same rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use schemas::Position;

use super::Bench;
use crate::load::{self, Api, Latencies};
use crate::report::{Report, Row};
use crate::{baseline, say};

pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()> {
    let s = b.sizes.clone();
    let mrns = b.consented_patients().await?;
    r.describe(format!(
        "**freshness**: open loop at each rate for {fs} s; each request posts {fr} records of one of {pat}\n\
         \x20 consented patients, and as soon as it has the 202, reads `GET /v1/patients/{{id}}/records?type=Observation`\n\
         \x20 with the 202's position as `X-Min-Position` (the query API waits until the views include it);\n\
         \x20 the figure is 202 → 200. Baseline: the broker's own floor at the same rate, a bare producer's\n\
         \x20 acknowledgement of a group of {fr} messages → a bare consumer (same `fetch.wait.max.ms` as the\n\
         \x20 projector, {fw} ms) having seen all of them.",
        fs = s.fresh_secs,
        fr = s.fresh_records,
        pat = s.patients,
        fw = crate::stack::FETCH_WAIT_MS,
    ));
    platform::kafka::ensure_topics(&b.brokers, &[&baseline::FRESH_TOPIC]).await?;
    if b.sample_payloads.is_empty() {
        // The ingest stage did not run: the floor sends what the consented patients' records are.
        let messages =
            baseline::read_back(&b.brokers, schemas::topics::RECORDS.name, &b.written).await?;
        b.sample_payloads = messages.into_iter().take(1000).map(|m| m.1).collect();
    }
    for &rate in &s.rates {
        say(format!(
            "freshness at {rate} requests/s x {} records, {} s",
            s.fresh_records, s.fresh_secs
        ));
        let fresh = measure(&b.api, &mrns, rate, &s, &mut b.written).await?;
        let floor = baseline::freshness_floor(
            &b.brokers,
            &b.sample_payloads,
            rate,
            s.fresh_secs,
            s.fresh_records,
        )
        .await?;
        let what = format!(
            "ms at {rate} req/s x {} records (ingest 202 → readable)",
            s.fresh_records
        );
        let floor_what = "bare producer ack → bare consumer, same broker and fetch wait";
        r.push(Row::lower(
            "freshness p50",
            what.clone(),
            fresh.p50_ms(),
            floor_what,
            floor.p50_ms(),
            "",
        ));
        r.push(Row::lower(
            "freshness p99",
            what,
            fresh.p99_ms(),
            floor_what,
            floor.p99_ms(),
            "",
        ));
    }
    Ok(())
}

/// Open loop at `rate` requests/s: each request posts `fresh_records` records of one consented
/// patient, then reads that patient's records with the 202's position as `X-Min-Position`; the
/// figure is from the 202 to the 200 that includes the records.
async fn measure(
    api: &Arc<Api>,
    mrns: &[String],
    rate: u32,
    sizes: &crate::Sizes,
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
