//! Audited reads of a patient's records at N concurrent clients, vs a bare axum + tokio-postgres
//! handler running the same SQL with no authentication, consent or audit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::Bench;
use crate::load::{self, HttpLoad};
use crate::report::{Report, Row};
use crate::say;

pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()> {
    let s = b.sizes.clone();
    let mrns = b.consented_patients().await?;
    r.describe(format!(
        "**query**: {qc} closed-loop clients for {qs} s (after 1 s of warm-up) against the query API (all it\n\
         \x20 does per read: JWT, patient and consent checks, and the audit event it makes durable on the\n\
         \x20 broker before answering) and against a bare axum + tokio-postgres server (16 connections, same\n\
         \x20 records SQL and JSON shape, no authentication, consent or audit), run as a separate process,\n\
         \x20 over the same {pat} patients, once for each of: {types} (`all`: all of a patient's records;\n\
         \x20 `Patient`: one row).",
        qc = s.query_clients,
        qs = s.query_secs,
        pat = s.patients,
        types = s.query_types.join(", "),
    ));
    let bare_base = b.bare_server().await?.base_url();
    for t in &s.query_types {
        let (label, query) = match t.as_str() {
            "all" => ("all records".to_string(), String::new()),
            t => (format!("?type={t}"), format!("?type={t}")),
        };
        let query = query.as_str();
        let per_patient = b.api.records(&mrns[0], query, &b.written).await?;
        let hie_urls: Vec<String> = mrns
            .iter()
            .map(|m| {
                format!(
                    "{}/v1/patients/{}/records{query}",
                    b.api.query,
                    load::patient_id(m)
                )
            })
            .collect();
        let bare_urls: Vec<String> = mrns
            .iter()
            .map(|m| format!("{bare_base}/records/{}{query}", load::patient_id(m)))
            .collect();
        say(format!(
            "queries ({label}, ~{per_patient} records each): {} clients, {} s each",
            s.query_clients, s.query_secs
        ));
        let (hie, bare) = side_by_side(b, hie_urls, bare_urls).await;
        let what = |m: &str| {
            format!(
                "{m}, GET /v1/patients/{{id}}/records{query} ({label}, ~{per_patient} rows), {} clients",
                s.query_clients
            )
        };
        push_rows(
            r,
            "query",
            what,
            "bare axum + tokio-postgres handler, same SQL",
            &hie,
            &bare,
        );
    }
    Ok(())
}

/// `query_clients` closed-loop clients for `query_secs` over the pipeline's URLs (with the
/// reader's token), then over the bare server's, each after 1 s of warm-up that is not counted.
pub async fn side_by_side(
    b: &Bench,
    hie_urls: Vec<String>,
    bare_urls: Vec<String>,
) -> (HttpLoad, HttpLoad) {
    let clients = b.sizes.query_clients;
    let (hie_urls, bare_urls) = (Arc::new(hie_urls), Arc::new(bare_urls));
    let reader = Some(b.api.reader.clone());
    let warm = Duration::from_secs(1);
    let measured = Duration::from_secs(b.sizes.query_secs);
    load::http_load(&b.http, hie_urls.clone(), reader.clone(), clients, warm).await;
    load::http_load(&b.http, bare_urls.clone(), None, clients, warm).await;
    let hie = load::http_load(&b.http, hie_urls, reader, clients, measured).await;
    let bare = load::http_load(&b.http, bare_urls, None, clients, measured).await;
    if hie.errors > 0 || bare.errors > 0 {
        say(format!(
            "query errors: pipeline {}, bare {}",
            hie.errors, bare.errors
        ));
    }
    (hie, bare)
}

/// The p50, p99 and throughput rows of one side-by-side load; `what(unit)` names the measure.
pub fn push_rows(
    r: &mut Report,
    stage: &str,
    what: impl Fn(&str) -> String,
    baseline: &str,
    hie: &HttpLoad,
    bare: &HttpLoad,
) {
    r.push(Row::lower(
        &format!("{stage} p50"),
        what("ms"),
        hie.latencies.p50_ms(),
        baseline,
        bare.latencies.p50_ms(),
        "",
    ));
    r.push(Row::lower(
        &format!("{stage} p99"),
        what("ms"),
        hie.latencies.p99_ms(),
        baseline,
        bare.latencies.p99_ms(),
        "",
    ));
    r.push(Row::higher(
        &format!("{stage} throughput"),
        what("requests/s"),
        hie.rps(),
        baseline,
        bare.rps(),
        &format!("errors: {} vs {}", hie.errors, bare.errors),
    ));
}
