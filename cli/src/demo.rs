//! `hiectl demo`: registers the demo sources, loads the demo data set (ours and, when present, the
//! Synthea samples), records consents, then prints tokens and curl examples with real patient ids.
//! It speaks to the services only through the public API (API.md), like any source or user would.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::demo_data::{self, MERCY, MERCY_AA, NORTHSIDE, NORTHSIDE_AA};
use crate::token::{self, User};

const SYNTHEA: &str = "synthea-hospital";
const SYNTHEA_AA: &str = "http://hospital.smarthealthit.org";
const TTL: Duration = Duration::from_secs(12 * 3600);
/// How long to keep asking the query API for data the ingest already acknowledged; each ask
/// itself waits up to 5 s server-side (X-Min-Position).
const CATCH_UP: Duration = Duration::from_secs(90);

/// The bootstrap admin hiectl signs as: `HIE_BOOTSTRAP_ADMIN`, the one admin the services honour
/// without an account (so it must be the same for both), else `hie-admin`.
pub fn bootstrap_admin() -> &'static User<'static> {
    static ADMIN: OnceLock<User<'static>> = OnceLock::new();
    ADMIN.get_or_init(|| {
        let sub = platform::env_or("HIE_BOOTSTRAP_ADMIN", "hie-admin");
        // Read once per process; leaked so the user can be as 'static as the other demo users.
        let email = format!("{sub}@hie.example");
        User {
            sub: Box::leak(sub.into_boxed_str()),
            email: Box::leak(email.into_boxed_str()),
            org: "org-hie",
            roles: &["admin"],
        }
    })
}
const PHYSICIAN: User = User {
    sub: "dr-rivera",
    email: "dr.rivera@mercy.example",
    org: "org-mercy",
    roles: &["physician"],
};
const NURSE: User = User {
    sub: "nurse-chen",
    email: "nurse.chen@valley.example",
    org: "org-valley-clinic",
    roles: &["nurse"],
};
const PRIVACY: User = User {
    sub: "privacy-mercy",
    email: "privacy@mercy.example",
    org: "org-mercy",
    roles: &["privacy_officer"],
};

/// Every demo user; each gets an account, since tokens are honoured for active accounts only.
pub fn demo_users() -> [&'static User<'static>; 4] {
    [bootstrap_admin(), &PHYSICIAN, &NURSE, &PRIVACY]
}

/// Create or update the accounts of `users` at the query API, as the bootstrap admin
/// ([`bootstrap_admin`]: `HIE_BOOTSTRAP_ADMIN`, which `deploy/local/up` passes to the services too).
pub async fn ensure_accounts(secret: &str, query: &str, users: &[&User<'_>]) -> Result<()> {
    let admin = token::mint(secret, bootstrap_admin(), TTL)?;
    let client = Client::builder().timeout(Duration::from_secs(30)).build()?;
    for user in users {
        let r = client
            .put(format!("{query}/v1/users/{}", user.sub))
            .bearer_auth(&admin)
            .json(&json!({"email": user.email, "organization_id": user.org, "roles": user.roles}))
            .send()
            .await
            .with_context(|| format!("creating the account of {}", user.sub))?;
        if !r.status().is_success() {
            bail!(
                "creating the account of {}: {} {}",
                user.sub,
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Give the demo users who use the portal a temporary password each (`POST
/// /v1/users/{id}/temporary-password`) and print them with the portal's address: each is good
/// for one sign-in, which sets a password of the user's own. Every run issues new ones.
pub async fn print_portal_logins(secret: &str, query: &str) -> Result<()> {
    let admin = token::mint(secret, bootstrap_admin(), TTL)?;
    let client = Client::builder().timeout(Duration::from_secs(30)).build()?;
    println!("\nPortal: {query}/portal/   sign in with one of these (temporary passwords, one sign-in each):");
    for user in [&PHYSICIAN, &PRIVACY, &NURSE] {
        let r = client
            .post(format!("{query}/v1/users/{}/temporary-password", user.sub))
            .bearer_auth(&admin)
            .send()
            .await
            .with_context(|| format!("a temporary password for {}", user.sub))?;
        if r.status() != StatusCode::CREATED {
            bail!("a temporary password for {}: {}", user.sub, r.status());
        }
        let body: Value = r.json().await?;
        println!(
            "  username {:<14} temporary password {}   ({} at {})",
            user.sub,
            body["temporary_password"].as_str().unwrap_or_default(),
            user.roles.join(","),
            user.org
        );
    }
    Ok(())
}

/// Consents on our own people, identified by their mercy-hospital MRN. E gets none, so the
/// examples can show "no decision recorded".
const CONSENTS: [(char, &str, &str); 4] = [
    ('A', "org-mercy", "grant"),
    ('B', "*", "grant"),
    ('C', "*", "deny"),
    ('D', "*", "deny_except_emergency"),
];

pub struct Args {
    pub ingest: String,
    pub query: String,
    pub synthea_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

struct Source {
    id: &'static str,
    name: &'static str,
    org: &'static str,
    feed: &'static str,
    assigning_authority: &'static str,
    data_elements: Vec<String>,
}

/// A Synthea file we will POST unchanged.
struct SyntheaFile {
    name: String,
    body: Vec<u8>,
    /// MRNs under the synthea-hospital assigning authority (one per Patient in the bundle).
    mrns: Vec<String>,
    types: BTreeSet<String>,
}

pub async fn run(args: Args) -> Result<()> {
    let secret = token::secret_from_env()?;
    let admin = token::mint(&secret, bootstrap_admin(), TTL)?;
    let physician = token::mint(&secret, &PHYSICIAN, TTL)?;
    let ingest = args.ingest.trim_end_matches('/');
    let query = args.query.trim_end_matches('/');
    ensure_accounts(&secret, query, &demo_users()).await?;
    let client = Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;

    let synthea = match synthea_dir(args.synthea_dir)? {
        Some(dir) => load_synthea(&dir)?,
        None => {
            println!("No Synthea sample directory found; loading only the demo's own data.");
            Vec::new()
        }
    };

    // a. Sources, with their keys kept across runs (the key is only returned on creation).
    let state_dir = state_dir(args.state_dir);
    let mut keys = Keys::load(&state_dir)?;
    for source in sources(&synthea) {
        register(&client, ingest, &admin, &source, &mut keys).await?;
    }

    // b, c. Our own synthetic people, then the Synthea samples unchanged (shared
    // Organizations/Practitioners first, since the patient bundles refer to them).
    let mut uploads = Vec::new();
    for b in demo_data::bundles() {
        let what = format!("{} bundle for demo patient {}", b.source, b.label);
        uploads.push((b.source, what, serde_json::to_vec(&b.bundle)?));
    }
    for f in &synthea {
        uploads.push((
            SYNTHEA,
            format!("{SYNTHEA} file {}", f.name),
            f.body.clone(),
        ));
    }
    let mut last_position = String::new();
    let mut totals: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (source, what, body) in uploads {
        let (accepted, rejected, position) =
            post_fhir(&client, ingest, source, keys.get(source)?, body, &what).await?;
        let t = totals.entry(source).or_default();
        *t = (t.0 + 1, t.1 + accepted, t.2 + rejected);
        last_position = position;
    }
    for (source, (files, accepted, rejected)) in &totals {
        println!("{source}: {files} bundles, {accepted} resources accepted, {rejected} rejected");
    }

    // d. Consents.
    let mut consents = Vec::new();
    for (label, org, decision) in CONSENTS {
        let mrn = demo_data::person(label)
            .mercy_mrn
            .expect("consenting demo people have a mercy MRN");
        consents.push((MERCY_AA, mrn.to_owned(), org, decision));
    }
    for mrn in synthea.iter().flat_map(|f| &f.mrns) {
        consents.push((SYNTHEA_AA, mrn.clone(), "org-mercy", "grant"));
    }
    for (aa, mrn, org, decision) in &consents {
        let body = json!({
            "patient": {"assigning_authority": aa, "mrn": mrn},
            "organization_id": org,
            "decision": decision,
            "method": "written",
            "part2": false,
        });
        let req = client
            .post(format!("{ingest}/v1/consents"))
            .bearer_auth(&admin)
            .json(&body);
        let (_, resp) = send(req, "recording a consent").await?;
        last_position = position_of(&resp, "recording a consent")?;
    }
    println!("consents: {} recorded", consents.len());

    // e. Find the enterprise ids the examples need, reading our own writes.
    let mut people = Vec::new();
    for p in &demo_data::PEOPLE {
        let (aa, mrn) = match (p.mercy_mrn, p.northside_mrn) {
            (Some(m), _) => (MERCY_AA, m),
            (None, Some(n)) => (NORTHSIDE_AA, n),
            (None, None) => continue,
        };
        let found = find_patient(&client, query, &physician, &last_position, aa, mrn).await?;
        people.push((p, found));
    }
    // The master patient index links the people both sources know (B and D): wait for it.
    let mut links = Vec::new();
    for (p, found) in &people {
        let (Some(_), Some(northside)) = (p.mercy_mrn, p.northside_mrn) else {
            continue;
        };
        let mut linked = false;
        for _ in 0..20 {
            let other = find_patient(
                &client,
                query,
                &physician,
                &last_position,
                NORTHSIDE_AA,
                northside,
            )
            .await?;
            if other.id == found.id {
                linked = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        links.push((p.label, found.id.clone(), linked));
    }
    let synthea_patient = match synthea.iter().flat_map(|f| &f.mrns).next() {
        Some(mrn) => {
            Some(find_patient(&client, query, &physician, &last_position, SYNTHEA_AA, mrn).await?)
        }
        None => None,
    };

    let tokens = demo_tokens(&secret)?;
    print_summary(
        ingest,
        query,
        &state_dir,
        &people,
        synthea_patient.as_ref(),
        &tokens,
    );
    println!("\nMaster patient index (Mercy + Northside know the same person under two MRNs):");
    for (label, id, linked) in links {
        if linked {
            println!("  {label}  both identities → one patient {id} (search by either MRN)");
        } else {
            println!("  {label}  not linked yet (see GET /v1/identity/reviews as a data steward)");
        }
    }
    // The data is loaded whatever happens here: a portal that cannot issue a password is reported.
    if let Err(e) = print_portal_logins(&secret, query).await {
        eprintln!("portal sign-ins not printed: {e:#}");
    }
    Ok(())
}

fn sources(synthea: &[SyntheaFile]) -> Vec<Source> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    let mut out = vec![
        Source {
            id: MERCY,
            name: "Mercy General Hospital",
            org: "org-mercy",
            feed: "realtime",
            assigning_authority: MERCY_AA,
            data_elements: strings(&[
                "Patient",
                "Encounter",
                "Condition",
                "MedicationRequest",
                "AllergyIntolerance",
            ]),
        },
        Source {
            id: NORTHSIDE,
            name: "Northside Reference Lab",
            org: "org-northside",
            feed: "batch",
            assigning_authority: NORTHSIDE_AA,
            data_elements: strings(&["Patient", "Observation", "DiagnosticReport"]),
        },
    ];
    if !synthea.is_empty() {
        let types: BTreeSet<String> = synthea.iter().flat_map(|f| f.types.clone()).collect();
        out.push(Source {
            id: SYNTHEA,
            name: "Synthea Sample Hospital",
            org: "org-synthea",
            feed: "batch",
            assigning_authority: SYNTHEA_AA,
            data_elements: types.into_iter().collect(),
        });
    }
    out
}

async fn register(
    client: &Client,
    ingest: &str,
    admin: &str,
    s: &Source,
    keys: &mut Keys,
) -> Result<()> {
    let body = json!({
        "name": s.name,
        "organization_id": s.org,
        "feed": s.feed,
        "assigning_authority": s.assigning_authority,
        "data_elements": s.data_elements,
        "part2": false,
    });
    let req = client
        .put(format!("{ingest}/v1/sources/{}", s.id))
        .bearer_auth(admin)
        .json(&body);
    let what = format!("registering source {}", s.id);
    let (status, resp) = send(req, &what).await?;
    match resp.get("api_key").and_then(Value::as_str) {
        Some(key) => {
            // Saved at once: the ingest shows a key only once.
            keys.insert(s.id, key)?;
            println!("source {}: registered, API key saved", s.id);
        }
        None if status == StatusCode::OK => {
            keys.get(s.id).with_context(|| {
                format!(
                    "source {} already existed, but its API key is not in {}; \
                     run `deploy/local/down --wipe` (or delete the source) and try again",
                    s.id,
                    keys.path.display()
                )
            })?;
            println!("source {}: already registered, reusing its saved key", s.id);
        }
        None => bail!("{what}: HTTP {status} without an api_key"),
    }
    Ok(())
}

/// POSTs one FHIR bundle; returns (accepted, rejected, position).
async fn post_fhir(
    client: &Client,
    ingest: &str,
    source: &str,
    key: &str,
    body: Vec<u8>,
    what: &str,
) -> Result<(usize, usize, String)> {
    let req = client
        .post(format!("{ingest}/v1/sources/{source}/fhir"))
        .bearer_auth(key)
        .header(CONTENT_TYPE, "application/fhir+json")
        .body(body);
    let (_, resp) = send(req, what).await?;
    let accepted = resp
        .get("accepted")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("{what}: response has no `accepted` count: {resp}"))?;
    let rejected = resp
        .get("rejected")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for r in rejected.iter().take(5) {
        println!(
            "  {what}: entry {} rejected: {}",
            r.get("index").unwrap_or(&Value::Null),
            r.get("error").and_then(Value::as_str).unwrap_or("?")
        );
    }
    if rejected.len() > 5 {
        println!("  {what}: ... {} more rejected", rejected.len() - 5);
    }
    Ok((accepted as usize, rejected.len(), position_of(&resp, what)?))
}

fn position_of(resp: &Value, what: &str) -> Result<String> {
    resp.get("position")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{what}: response has no `position`: {resp}"))
}

/// Sends and insists on a 2xx JSON answer; anything else is an error that says what was tried.
async fn send(req: RequestBuilder, what: &str) -> Result<(StatusCode, Value)> {
    let resp = req
        .send()
        .await
        .with_context(|| format!("{what}: request failed (is the service running?)"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("{what}: reading the response"))?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", clip(&text));
    }
    let body = serde_json::from_str(&text).with_context(|| {
        format!(
            "{what}: HTTP {status} but the body is not JSON: {}",
            clip(&text)
        )
    })?;
    Ok((status, body))
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(500) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A patient as the query API lists it.
struct Found {
    id: String,
    consent: String,
    identifier: String,
}

/// Looks a patient up by identifier, waiting (X-Min-Position) until the views include every
/// write the demo made; retries while the query API answers 503 `not_caught_up`.
async fn find_patient(
    client: &Client,
    query: &str,
    token: &str,
    position: &str,
    system: &str,
    value: &str,
) -> Result<Found> {
    let identifier = format!("{system}|{value}");
    let url = format!("{query}/v1/patients?identifier={}", url_encode(&identifier));
    let what = format!("looking up patient {identifier}");
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let resp = client
            .get(&url)
            .bearer_auth(token)
            .header("X-Min-Position", position)
            .send()
            .await
            .with_context(|| format!("{what}: request failed (is query-api running?)"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let retry = match status {
            StatusCode::SERVICE_UNAVAILABLE => true,
            s if s.is_success() => {
                let body: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{what}: body is not JSON: {}", clip(&text)))?;
                if let Some(p) = body["patients"].as_array().and_then(|a| a.first()) {
                    let id = match &p["id"] {
                        Value::String(s) => s.clone(),
                        Value::Null => bail!("{what}: patient without an id: {p}"),
                        other => other.to_string(),
                    };
                    return Ok(Found {
                        id,
                        consent: p["consent"].as_str().unwrap_or("?").to_owned(),
                        identifier,
                    });
                }
                true // not linked yet
            }
            _ => bail!("{what}: HTTP {status}: {}", clip(&text)),
        };
        if retry && Instant::now() > deadline {
            bail!(
                "{what}: not visible in the query API after {}s (last answer HTTP {status}: {}); \
                 check the projector log",
                CATCH_UP.as_secs(),
                clip(&text)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub use platform::url_component as url_encode;

fn synthea_dir(explicit: Option<PathBuf>) -> Result<Option<PathBuf>> {
    if let Some(dir) = explicit {
        if !dir.is_dir() {
            bail!("--synthea-dir {} is not a directory", dir.display());
        }
        return Ok(Some(dir));
    }
    // The project's shared sample data sits beside the repository: <repo>/../shared/data/synthea.
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/synthea");
    Ok(default.is_dir().then_some(default))
}

fn load_synthea(dir: &Path) -> Result<Vec<SyntheaFile>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
            continue; // not JSON: not a bundle either
        };
        if doc["resourceType"] != "Bundle" {
            continue;
        }
        let resources = doc["entry"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|e| &e["resource"]);
        let mut types = BTreeSet::new();
        let mut mrns = Vec::new();
        for r in resources {
            if let Some(t) = r["resourceType"].as_str() {
                types.insert(t.to_owned());
            }
            if r["resourceType"] == "Patient" {
                let ids = r["identifier"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                mrns.extend(
                    ids.iter()
                        .filter(|i| i["system"] == SYNTHEA_AA)
                        .filter_map(|i| i["value"].as_str().map(str::to_owned)),
                );
            }
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        files.push(SyntheaFile {
            name,
            body,
            mrns,
            types,
        });
    }
    // Bundles without patients (shared Organizations, Practitioners) first, then by name.
    files.sort_by(|a, b| (!a.mrns.is_empty(), &a.name).cmp(&(!b.mrns.is_empty(), &b.name)));
    Ok(files)
}

fn state_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("HIE_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".local"))
}

/// Source API keys the demo received, in `<state dir>/demo-keys.json` (mode 600).
struct Keys {
    path: PathBuf,
    keys: BTreeMap<String, String>,
}

impl Keys {
    fn load(state_dir: &Path) -> Result<Keys> {
        let path = state_dir.join("demo-keys.json");
        let keys = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a JSON object of keys", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Keys { path, keys })
    }

    fn get(&self, source: &str) -> Result<&str> {
        self.keys
            .get(source)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no API key for source {source} in {}", self.path.display()))
    }

    fn insert(&mut self, source: &str, key: &str) -> Result<()> {
        self.keys.insert(source.to_owned(), key.to_owned());
        self.save()
    }

    /// Writes a temporary file and renames it, so a crash never leaves a half-written key file.
    fn save(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(&self.keys)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}

/// The demo users' tokens, each with the shell variable the examples use.
pub fn demo_tokens(secret: &str) -> Result<Vec<(&'static str, &'static User<'static>, String)>> {
    [
        ("TOKEN", &PHYSICIAN),
        ("NURSE_TOKEN", &NURSE),
        ("ADMIN_TOKEN", bootstrap_admin()),
        ("PRIVACY_TOKEN", &PRIVACY),
    ]
    .into_iter()
    .map(|(var, user)| Ok((var, user, token::mint(secret, user, TTL)?)))
    .collect()
}

pub fn print_tokens(tokens: &[(&str, &User, String)]) {
    println!("\nTokens (valid 12 h); paste into your shell:");
    for (var, user, token) in tokens {
        println!(
            "  export {var}='{token}'   # {} {} {}",
            user.email,
            user.roles.join(","),
            user.org
        );
    }
}

fn print_summary(
    ingest: &str,
    query: &str,
    state_dir: &Path,
    people: &[(&demo_data::Person, Found)],
    synthea_patient: Option<&Found>,
    tokens: &[(&str, &User, String)],
) {
    let by_label = |l: char| &people.iter().find(|(p, _)| p.label == l).expect("fixed").1;
    let (a, b, c, d, e) = (
        by_label('A'),
        by_label('B'),
        by_label('C'),
        by_label('D'),
        by_label('E'),
    );
    // A search must name someone: a family name with a given name (or birth date).
    let searched = demo_data::person('A');
    let (family, given) = (url_encode(searched.family), url_encode(searched.given));

    println!("\nDemo patients (synthetic):");
    for (p, f) in people {
        println!(
            "  {}  {:<20} id {:<38} consent {:<22} {}",
            p.label,
            format!("{} {}", p.given, p.family),
            f.id,
            f.consent,
            f.identifier
        );
    }
    if let Some(s) = synthea_patient {
        println!(
            "  Synthea patient: id {} consent {} {}",
            s.id, s.consent, s.identifier
        );
    }

    println!("\nURLs:\n  query API  {query}\n  ingest     {ingest}");
    println!(
        "  source API keys: {}",
        state_dir.join("demo-keys.json").display()
    );

    print_tokens(tokens);

    // (what it shows, whose token, path); an empty path is a comment line only.
    let mut examples = vec![
        (
            "demographic search, allowed without consent",
            "TOKEN",
            format!("/v1/patients?family={family}&given={given}"),
        ),
        (
            "records of a patient who granted consent to org-mercy",
            "TOKEN",
            format!("/v1/patients/{}/records", a.id),
        ),
        (
            "",
            "TOKEN",
            format!("/v1/patients/{}/records?type=AllergyIntolerance", a.id),
        ),
    ];
    if let Some(s) = synthea_patient {
        examples.push((
            "a Synthea patient who granted consent to org-mercy",
            "TOKEN",
            format!("/v1/patients/{}/records?type=Condition", s.id),
        ));
    }
    examples.extend([
        (
            "no consent recorded: 403 consent_required, break_glass_allowed true",
            "TOKEN",
            format!("/v1/patients/{}/records", e.id),
        ),
        (
            "consent denied: 403 consent_denied, no break-the-glass",
            "TOKEN",
            format!("/v1/patients/{}/records", c.id),
        ),
        (
            "a nurse at another organization: patient B granted consent to all participants",
            "NURSE_TOKEN",
            format!("/v1/patients/{}/records", b.id),
        ),
        ("directory of sources", "TOKEN", "/v1/sources".to_owned()),
    ]);
    let curl = "curl -s -w '\\nHTTP %{http_code}\\n'";
    println!("\nTry (dr.rivera, physician at org-mercy, is $TOKEN):");
    for (what, token, path) in &examples {
        if !what.is_empty() {
            println!("  # {what}");
        }
        println!("  {curl} -H \"Authorization: Bearer ${token}\" '{query}{path}'");
    }
    println!("  # patient D denied except in an emergency: break the glass, read, then see the access log");
    println!(
        "  {curl} -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n    \
         -d '{{\"reason\": \"unconscious in the ED\", \"attest\": true}}' '{query}/v1/patients/{}/break-glass'",
        d.id
    );
    println!(
        "  {curl} -H \"Authorization: Bearer $TOKEN\" '{query}/v1/patients/{}/records'",
        d.id
    );
    println!(
        "  {curl} -H \"Authorization: Bearer $PRIVACY_TOKEN\" '{query}/v1/patients/{}/access-log'",
        d.id
    );
    println!("\nMint other tokens (creating the account) with: target/debug/hiectl token --sub <id> --email <e> --org <org> --roles physician --register http://127.0.0.1:8080");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_identifier_queries() {
        assert_eq!(
            url_encode("urn:oid:2.16.840.1.113883.3.7001|MGH-100001"),
            "urn%3Aoid%3A2.16.840.1.113883.3.7001%7CMGH-100001"
        );
        assert_eq!(
            url_encode("http://hospital.smarthealthit.org|a b"),
            "http%3A%2F%2Fhospital.smarthealthit.org%7Ca%20b"
        );
    }

    #[test]
    fn keys_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!("hiectl-keys-{}", std::process::id()));
        let mut keys = Keys::load(&dir).unwrap();
        keys.insert("mercy-hospital", "k1").unwrap();
        let again = Keys::load(&dir).unwrap();
        assert_eq!(again.get("mercy-hospital").unwrap(), "k1");
        assert!(again.get("northside-lab").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
