//! What the harness sends: FHIR NDJSON batches, consents, and timed HTTP load; and the statistics
//! it reports.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use platform::auth::{sign_hs256, Claims};
use schemas::{PatientIdentity, Position};
use serde_json::{json, Value};

pub const AUTHORITY: &str = "urn:oid:2.16.840.1.113883.3.9999.1";
pub const SOURCE: &str = "bench-lab";
pub const SOURCE_ORG: &str = "org-bench-lab";
pub const READER_ORG: &str = "org-bench-reader";

/// The user id of `token(_, "org-hie", ..)`, the bootstrap admin of the benchmark's query API.
pub const ADMIN_SUB: &str = "bench-org-hie";

pub fn token(secret: &str, org: &str, roles: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    let claims = Claims {
        sub: format!("bench-{org}"),
        email: format!("bench@{org}.example"),
        org: org.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        exp,
        iat: None,
    };
    sign_hs256(&claims, secret.as_bytes())
}

pub fn patient_id(mrn: &str) -> uuid::Uuid {
    PatientIdentity {
        assigning_authority: AUTHORITY.into(),
        mrn: mrn.into(),
    }
    .patient_id()
}

fn patient(mrn: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": mrn,
        "identifier": [{"system": AUTHORITY, "value": mrn}],
        "name": [{"family": "Benchmark", "given": [format!("P{mrn}")]}],
        "gender": "unknown", "birthDate": "1970-01-01"
    })
}

fn observation(id: &str, mrn: &str, n: usize) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                 "text": "Heart rate"},
        "subject": {"reference": format!("Patient/{mrn}")},
        "effectiveDateTime": "2026-01-01T08:00:00Z",
        "valueQuantity": {"value": 60 + (n % 40), "unit": "beats/minute",
                          "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

/// One NDJSON request body: each patient's Patient resource (NDJSON references must resolve within
/// the request) followed by its Observations; `records` lines in all.
pub fn ndjson(tag: &str, mrns: &[String], records: usize) -> String {
    let per_patient = (records / mrns.len().max(1)).max(1);
    let mut out = String::new();
    for mrn in mrns {
        out.push_str(&patient(mrn).to_string());
        out.push('\n');
        for k in 1..per_patient {
            out.push_str(&observation(&format!("{tag}-{mrn}-{k}"), mrn, k).to_string());
            out.push('\n');
        }
    }
    out
}

pub struct Api {
    pub http: reqwest::Client,
    pub ingest: String,
    pub query: String,
    pub admin: String,
    pub reader: String,
    pub source_key: String,
}

impl Api {
    pub async fn register_source(
        http: &reqwest::Client,
        ingest: &str,
        admin: &str,
    ) -> Result<String> {
        let r = http
            .put(format!("{ingest}/v1/sources/{SOURCE}"))
            .bearer_auth(admin)
            .json(&json!({
                "name": "Benchmark lab", "organization_id": SOURCE_ORG, "feed": "batch",
                "assigning_authority": AUTHORITY, "data_elements": ["Patient", "Observation"], "part2": false
            }))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        match body["api_key"].as_str() {
            Some(k) => Ok(k.to_string()),
            None => bail!("registering the source: {status} {body}"),
        }
    }

    /// POST an NDJSON body; returns the number accepted and the position.
    pub async fn post_ndjson(&self, body: String) -> Result<(usize, Position)> {
        let r = self
            .http
            .post(format!("{}/v1/sources/{SOURCE}/fhir", self.ingest))
            .bearer_auth(&self.source_key)
            .header("content-type", "application/fhir+ndjson")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if status != reqwest::StatusCode::ACCEPTED || body["rejected"] != json!([]) {
            bail!("ingest answered {status}: {}", truncate(&body.to_string()));
        }
        let accepted = body["accepted"].as_u64().context("accepted")? as usize;
        let position = Position::decode(body["position"].as_str().context("position")?)
            .map_err(|_| anyhow::anyhow!("bad position token"))?;
        Ok((accepted, position))
    }

    pub async fn grant(&self, mrn: &str) -> Result<Position> {
        let r = self
            .http
            .post(format!("{}/v1/consents", self.ingest))
            .bearer_auth(&self.admin)
            .json(&json!({
                "patient": {"assigning_authority": AUTHORITY, "mrn": mrn},
                "organization_id": READER_ORG, "decision": "grant", "method": "written", "part2": false
            }))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if status != reqwest::StatusCode::ACCEPTED {
            bail!("consent answered {status}: {body}");
        }
        Position::decode(body["position"].as_str().context("position")?)
            .map_err(|_| anyhow::anyhow!("bad position token"))
    }

    /// GET a patient's records as the reader, waiting for `position`; returns how many.
    pub async fn records(&self, mrn: &str, query: &str, position: &Position) -> Result<usize> {
        let r = self
            .http
            .get(format!(
                "{}/v1/patients/{}/records{query}",
                self.query,
                patient_id(mrn)
            ))
            .bearer_auth(&self.reader)
            .header("x-min-position", position.encode())
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if status != reqwest::StatusCode::OK {
            bail!("records answered {status}: {}", truncate(&body.to_string()));
        }
        Ok(body["records"].as_array().map(Vec::len).unwrap_or(0))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Latencies of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
    pub fn p50_ms(&self) -> f64 {
        self.percentile(50.0).as_secs_f64() * 1e3
    }
    pub fn p99_ms(&self) -> f64 {
        self.percentile(99.0).as_secs_f64() * 1e3
    }
}

/// Closed-loop HTTP load: `clients` tasks each GET the next URL as soon as the previous answer
/// was read, for `secs`.
pub struct HttpLoad {
    pub requests: usize,
    pub errors: usize,
    pub secs: f64,
    pub latencies: Latencies,
}

impl HttpLoad {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

pub async fn http_load(
    http: &reqwest::Client,
    urls: Arc<Vec<String>>,
    bearer: Option<String>,
    clients: usize,
    duration: Duration,
) -> HttpLoad {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, urls, next, bearer) = (http.clone(), urls.clone(), next.clone(), bearer.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let url = &urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()];
                let t = Instant::now();
                let mut req = http.get(url);
                if let Some(b) = &bearer {
                    req = req.bearer_auth(b);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    },
                    _ => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(Ok((lat, e))) = tasks.join_next().await {
        all.extend(lat);
        errors += e;
    }
    HttpLoad {
        requests: all.len(),
        errors,
        secs: started.elapsed().as_secs_f64(),
        latencies: Latencies(all),
    }
}
