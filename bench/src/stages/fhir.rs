//! The FHIR API as an EHR uses it (issue 16): every page of a paged `$everything`, and an
//! `Observation?patient=&code=` search, at N concurrent clients, each beside the bare axum +
//! tokio-postgres handler reading the same patients' rows (no authentication, consent, audit,
//! filtering or paging).

use anyhow::{bail, Result};
use serde_json::Value;

use super::queries::{push_rows, side_by_side};
use super::Bench;
use crate::load;
use crate::report::Report;
use crate::say;

/// Patients given many records for this stage, and their Observations each.
const PATIENTS: usize = 10;
const OBSERVATIONS: usize = 200;
/// The page size of the paged `$everything`.
const PAGE: usize = 50;

pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()> {
    let s = b.sizes.clone();
    let mrns: Vec<String> = (0..PATIENTS).map(|i| format!("f{i:05}")).collect();
    say(format!(
        "fhir: {PATIENTS} patients with {OBSERVATIONS} Observations each"
    ));
    let (_, p) = b
        .api
        .post_ndjson(load::ndjson("fhir", &mrns, PATIENTS * (OBSERVATIONS + 1)))
        .await?;
    b.written.merge(&p);
    for m in &mrns {
        let p = b.api.grant(m).await?;
        b.written.merge(&p);
    }
    let per_patient = b.api.records(&mrns[0], "", &b.written).await?;
    r.describe(format!(
        "**fhir**: {qc} closed-loop clients for {qs} s (after 1 s of warm-up) over {PATIENTS} patients\n\
         \x20 with ~{per_patient} records each, with the reader's token (the same audited read path an EHR\n\
         \x20 client's token takes): every page of `GET /fhir/Patient/{{id}}/$everything?_count={PAGE}`\n\
         \x20 (the page URLs a first walk followed), and `GET /fhir/Observation?patient={{id}}&code=http://loinc.org|8867-4`\n\
         \x20 (every Observation matches: one page of 100 of ~{OBSERVATIONS}); beside the bare handler\n\
         \x20 reading all of the patient's rows (resp. its Observations) with no authentication, consent,\n\
         \x20 audit, filtering or paging: a bare answer carries ~4 times the rows of a `$everything` page,\n\
         \x20 and all the Observations the search pages.",
        qc = s.query_clients,
        qs = s.query_secs,
    ));
    let bare_base = b.bare_server().await?.base_url();

    // The pages of each patient's $everything, as a client walks them by their next links.
    let mut pages = Vec::new();
    for m in &mrns {
        let mut url = Some(format!(
            "{}/fhir/Patient/{}/$everything?_count={PAGE}",
            b.api.query,
            load::patient_id(m)
        ));
        while let Some(u) = url {
            let body: Value = b
                .http
                .get(&u)
                .bearer_auth(&b.api.reader)
                .send()
                .await?
                .json()
                .await?;
            if body["resourceType"] != "Bundle" {
                bail!("$everything answered {}", body["resourceType"]);
            }
            pages.push(u);
            url = body["link"]
                .as_array()
                .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
                .and_then(|l| l["url"].as_str())
                .map(str::to_string);
        }
    }
    say(format!(
        "fhir: paged $everything, {} page URLs of {PAGE}: {} clients, {} s",
        pages.len(),
        s.query_clients,
        s.query_secs
    ));
    let bare_all: Vec<String> = mrns
        .iter()
        .map(|m| format!("{bare_base}/records/{}", load::patient_id(m)))
        .collect();
    let (hie, bare) = side_by_side(b, pages.clone(), bare_all).await;
    let what = |m: &str| {
        format!(
            "{m}, GET /fhir/Patient/{{id}}/$everything?_count={PAGE}: {} page URLs ({PATIENTS} patients, ~{per_patient} records each), {} clients",
            pages.len(),
            s.query_clients
        )
    };
    push_rows(
        r,
        "fhir $everything",
        what,
        "bare handler, all the patient's rows, unpaged",
        &hie,
        &bare,
    );

    say(format!(
        "fhir: Observation?patient=&code=: {} clients, {} s",
        s.query_clients, s.query_secs
    ));
    let searches: Vec<String> = mrns
        .iter()
        .map(|m| {
            format!(
                "{}/fhir/Observation?patient={}&code=http://loinc.org%7C8867-4",
                b.api.query,
                load::patient_id(m)
            )
        })
        .collect();
    let bare_obs: Vec<String> = mrns
        .iter()
        .map(|m| {
            format!(
                "{bare_base}/records/{}?type=Observation",
                load::patient_id(m)
            )
        })
        .collect();
    let (hie, bare) = side_by_side(b, searches, bare_obs).await;
    let what = |m: &str| {
        format!(
            "{m}, GET /fhir/Observation?patient={{id}}&code=… (first page of 100 of ~{OBSERVATIONS}), {} clients",
            s.query_clients
        )
    };
    push_rows(
        r,
        "fhir Observation search",
        what,
        "bare handler, the patient's Observations, unfiltered",
        &hie,
        &bare,
    );
    Ok(())
}
