//! Patient search (POSTed: no PHI in URLs), the patient page with records by kind, pop-up windows
//! for lab results and documents, Break-the-Glass, and live updates (server-sent events).

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use maud::{html, Markup};
use platform::auth::{Role, User};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::session::{SignedIn, Visit};
use super::{api_error, csrf, csrf_refused, error_page, page, page_with};
use crate::consent::{break_glass_possible, decision_for, Decision, InForce};
use crate::http::caller::Caller;
use crate::http::position::CaughtUp;
use crate::http::records::{known_patient, read_records, Served};
use crate::http::{ApiError, AppState};

fn search_form(visit: &Visit, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action="/portal/patients" {
            (csrf(visit))
            p.hint { "Give an identifier, or a family name (2+ characters) with a given name or a birth date." }
            div.fields {
                p { label for="family" { "Family name" } input #family name="family" type="text" autocomplete="off"; }
                p { label for="given" { "Given name" } input #given name="given" type="text" autocomplete="off"; }
                p { label for="birth_date" { "Birth date" } input #birth_date name="birth_date" type="date"; }
                p { label for="identifier" { "Identifier" } input #identifier name="identifier" type="text" autocomplete="off" aria-describedby="identifier-hint"; }
            }
            p #identifier-hint .hint { "An MRN, or system|value." }
            p { button type="submit" { "Search" } }
        }
    }
}

pub async fn search_page(SignedIn { visit, .. }: SignedIn) -> Response {
    page(&visit, "Patient search", search_form(&visit, None))
}

#[derive(Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    family: String,
    #[serde(default)]
    given: String,
    #[serde(default)]
    birth_date: String,
    #[serde(default)]
    identifier: String,
}

pub fn consent_label(in_force: Option<&str>) -> &'static str {
    match in_force {
        Some("grant") => "Consent given",
        Some("deny") => "Consent denied (even in an emergency)",
        Some("deny_except_emergency") => "Consent denied except in an emergency",
        Some("unresolved") => "Consent being resolved",
        _ => "No consent decision",
    }
}

pub async fn search(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Form(form): Form<SearchForm>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    // `/v1/patients`' own handler: the same criteria, cap, Part 2 rule and audit.
    let params = serde_json::from_value(json!({
        "family": form.family, "given": form.given, "birth_date": form.birth_date, "identifier": form.identifier,
    }))
    .expect("search parameters are strings");
    let found =
        crate::http::patients::search(State(state.clone()), Caller(user), CaughtUp, Query(params))
            .await;
    let Json(body) = match found {
        Ok(b) => b,
        Err(ApiError::BadRequest(_, message)) => {
            return page_with(
                &visit,
                StatusCode::BAD_REQUEST,
                "Patient search",
                search_form(&visit, Some(&message)),
            )
        }
        Err(e) => return api_error(&visit, e),
    };
    let patients = body["patients"].as_array().cloned().unwrap_or_default();
    page(
        &visit,
        "Patient search",
        html! {
            (search_form(&visit, None))
            section aria-labelledby="results-heading" {
                h2 #results-heading { "Results" }
                @if patients.is_empty() {
                    p role="status" { "No patient matches." }
                } @else {
                    p role="status" { (patients.len()) " patient(s) found." @if body["truncated"] == true { " Only the first 50 are shown: narrow the search." } }
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Birth date" } th scope="col" { "Sex" } th scope="col" { "Consent" } } }
                        tbody {
                            @for p in &patients {
                                tr {
                                    td { a href={ "/portal/patients/" (p["id"].as_str().unwrap_or_default()) } { (p["name"].as_str().unwrap_or("(no name)")) } }
                                    td { (p["birth_date"].as_str().unwrap_or("")) }
                                    td { (p["sex"].as_str().unwrap_or("")) }
                                    td { (consent_label(p["consent"].as_str())) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The kinds records are shown by, in order: a heading and the FHIR types it gathers.
const KINDS: [(&str, &[&str]); 8] = [
    ("Encounters", &["Encounter"]),
    ("Labs", &["Observation", "DiagnosticReport"]),
    ("Conditions", &["Condition"]),
    ("Medications", &["MedicationRequest", "MedicationStatement"]),
    ("Allergies", &["AllergyIntolerance"]),
    ("Immunizations", &["Immunization"]),
    ("Procedures", &["Procedure"]),
    ("Documents", &["DocumentReference"]),
];

/// An opaque key for one record in a URL: the source's resource ids may say more than they should.
fn record_key(r: &Value) -> String {
    let id = format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap_or_default(),
        r["id"].as_str().unwrap_or_default()
    );
    hex(&Sha256::digest(id.as_bytes())[..12])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_of(c: &Value) -> Option<String> {
    c["text"].as_str().map(str::to_string).or_else(|| {
        c["coding"].as_array()?.iter().find_map(|k| {
            k["display"]
                .as_str()
                .or(k["code"].as_str())
                .map(str::to_string)
        })
    })
}

fn describe(r: &Value) -> String {
    [
        "code",
        "medicationCodeableConcept",
        "vaccineCode",
        "type",
        "class",
    ]
    .iter()
    .find_map(|k| {
        if r[*k].is_array() {
            r[*k].as_array()?.first().and_then(text_of)
        } else {
            text_of(&r[*k])
        }
    })
    .or_else(|| r["description"].as_str().map(str::to_string))
    .or_else(|| r["class"]["code"].as_str().map(str::to_string))
    .unwrap_or_else(|| r["resourceType"].as_str().unwrap_or("Record").to_string())
}

fn when(r: &Value) -> String {
    [
        &r["effectiveDateTime"],
        &r["period"]["start"],
        &r["onsetDateTime"],
        &r["authoredOn"],
        &r["recordedDate"],
        &r["occurrenceDateTime"],
        &r["performedDateTime"],
        &r["performedPeriod"]["start"],
        &r["date"],
        &r["issued"],
        &r["effectivePeriod"]["start"],
        &r["meta"]["lastUpdated"],
    ]
    .iter()
    .find_map(|v| v.as_str())
    .map(|s| s.chars().take(10).collect())
    .unwrap_or_default()
}

fn status(r: &Value) -> String {
    r["status"]
        .as_str()
        .map(str::to_string)
        .or_else(|| text_of(&r["clinicalStatus"]))
        .unwrap_or_default()
}

fn value_of(r: &Value) -> Option<String> {
    let q = &r["valueQuantity"];
    if let Some(v) = q["value"].as_f64() {
        return Some(
            format!(
                "{v} {}",
                q["unit"].as_str().or(q["code"].as_str()).unwrap_or("")
            )
            .trim()
            .to_string(),
        );
    }
    r["valueString"]
        .as_str()
        .map(str::to_string)
        .or_else(|| text_of(&r["valueCodeableConcept"]))
}

/// The records section of a patient page (also what a live update replaces).
fn records_section(patient: Uuid, served: &Served) -> Markup {
    // Newest first within each kind.
    let of_kind = |types: &[&str]| -> Vec<&Value> {
        let mut rows: Vec<&Value> = served
            .records
            .iter()
            .filter(|r| types.contains(&r["resourceType"].as_str().unwrap_or_default()))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(when(r)));
        rows
    };
    // The sources' own Patient records are the demographics above.
    let mut known: Vec<&str> = KINDS.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    known.push("Patient");
    let other: Vec<&Value> = served
        .records
        .iter()
        .filter(|r| !known.contains(&r["resourceType"].as_str().unwrap_or_default()))
        .collect();
    html! {
        @if served.basis == "break_glass" {
            p.btg role="note" { strong { "Seen by Break-the-Glass." } " This emergency access is recorded and reported to your organization's privacy officer." }
        }
        p.count { (served.records.len()) " record(s)." }
        nav aria-label="Record kinds" {
            ul.kinds { @for (kind, _) in KINDS { li { a href={ "#kind-" (kind.to_lowercase()) } { (kind) } } } }
        }
        @for (kind, types) in KINDS {
            @let rows = of_kind(types);
            section aria-labelledby={ "kind-" (kind.to_lowercase()) } {
                h2 #{ "kind-" (kind.to_lowercase()) } { (kind) " (" (rows.len()) ")" }
                @if rows.is_empty() { p { "None." } } @else {
                    table {
                        thead { tr { th scope="col" { "Date" } th scope="col" { "Description" } th scope="col" { "Status" } @if kind == "Labs" { th scope="col" { "Value" } } @if kind == "Labs" || kind == "Documents" { th scope="col" { "Details" } } } }
                        tbody {
                            @for r in rows {
                                tr {
                                    td { (when(r)) }
                                    td { (describe(r)) }
                                    td { (status(r)) }
                                    @if kind == "Labs" { td { (value_of(r).unwrap_or_default()) } }
                                    @if kind == "Labs" || kind == "Documents" {
                                        td {
                                            a data-popup href={ "/portal/patients/" (patient) "/records/" (r["resourceType"].as_str().unwrap_or_default()) "/" (record_key(r)) } target="hie-record" {
                                                @if kind == "Documents" { "Open document: " } @else { "View result: " } (describe(r))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !other.is_empty() {
            section aria-labelledby="kind-other" {
                h2 #kind-other { "Other (" (other.len()) ")" }
                ul { @for r in other { li { (r["resourceType"].as_str().unwrap_or_default()) ": " (describe(r)) " " (when(r)) } } }
            }
        }
    }
}

/// Why clinical data is not shown, in words a clinician can act on.
fn withheld_section(patient: Uuid, code: &str, message: &str, break_glass_allowed: bool) -> Markup {
    let why = match code {
        "consent_required" => "The patient has not given your organization consent to see their clinical data.",
        "consent_denied" => "The patient has denied your organization access to their clinical data, even in an emergency: Break-the-Glass is not possible.",
        "consent_unresolved" => "A consent decision for this patient could not be applied yet; nothing is shown until it is (the HIE's operators have been alerted).",
        "role_not_permitted" => "Your role does not see clinical data.",
        _ => message,
    };
    html! {
        div.withheld {
            h2 { "Clinical data withheld" }
            p { (why) }
            @if break_glass_allowed {
                p { "In an emergency, an eligible clinician may break the glass: the access is recorded, limited in time and reported to your organization's privacy officer." }
                p { a.button href={ "/portal/patients/" (patient) "/break-glass" } { "Break the Glass" } }
            }
        }
    }
}

/// The consent in force for the user's organization, as the search shows it.
async fn consent_in_force(
    state: &AppState,
    patient: Uuid,
    user: &User,
) -> Result<Option<InForce>, ApiError> {
    let consents = crate::db::consents(&state.pool, &[patient], &user.org).await?;
    Ok(decision_for(
        consents.get(&patient).map(Vec::as_slice).unwrap_or(&[]),
        &user.org,
        SystemTime::now(),
    ))
}

/// What changes the records section: the consent in force and the records' content. Read
/// without audit and never shown: only to know when to make an (audited) read again.
async fn fingerprint(state: &AppState, patient: Uuid, user: &User) -> Result<String, ApiError> {
    let in_force = consent_in_force(state, patient, user).await?;
    let records = crate::db::records(&state.pool, patient, None).await?;
    let mut h = Sha256::new();
    h.update(format!(
        "{:?}|",
        in_force.map(|f| (f.decision.as_str(), f.covers_part2))
    ));
    let glass = crate::db::active_break_glass(&state.pool, patient, &user.id).await?;
    h.update([glass as u8]);
    for r in records {
        h.update(r.resource.to_string());
        h.update([r.part2 as u8]);
    }
    Ok(hex(&h.finalize()[..12]))
}

/// The records part of the page: the records (an audited read), or why they are withheld.
async fn clinical(
    state: &AppState,
    user: &User,
    patient: Uuid,
    action: &str,
) -> Result<Markup, ApiError> {
    if user.role_for(Role::reads_clinical_data).is_none() {
        return Ok(withheld_section(patient, "role_not_permitted", "", false));
    }
    match read_records(state, user, patient, None, action.to_string()).await {
        Ok(served) => Ok(records_section(patient, &served)),
        Err(ApiError::Forbidden(code, message, allowed)) => Ok(withheld_section(
            patient,
            code,
            message,
            allowed == Some(true),
        )),
        Err(e) => Err(e),
    }
}

pub async fn patient(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let patient = known_patient(&state, &id).await?;
        let demographics = crate::db::patient_demographics(&state.pool, patient)
            .await?
            .ok_or(ApiError::NotFound)?;
        // Demographics shown are recorded like a search's.
        state
            .auditor
            .access(crate::audit::Access {
                user: &user,
                role: user.primary_role(),
                patient,
                action: "portal:patient".into(),
                basis: "search",
                outcome: "shown".into(),
                returned: 1,
                withheld: 0,
            })
            .await?;
        let in_force = consent_in_force(&state, patient, &user).await?;
        let fp = fingerprint(&state, patient, &user).await?;
        let records = clinical(&state, &user, patient, "portal:records").await?;
        Ok::<_, ApiError>((patient, demographics, in_force, fp, records))
    }
    .await;
    let (patient, d, in_force, fp, records) = match result {
        Ok(r) => r,
        Err(e) => return api_error(&visit, e),
    };
    let oversees = user.has(Role::PrivacyOfficer) || user.has(Role::Admin);
    let name = d.name.clone().unwrap_or_else(|| "(no name)".into());
    page(
        &visit,
        &name,
        html! {
            dl.demographics {
                dt { "Birth date" } dd { (d.birth_date.as_deref().unwrap_or("")) }
                dt { "Sex" } dd { (d.sex.as_deref().unwrap_or("")) }
                dt { "Consent for " (user.org) } dd #consent-status { (consent_label(in_force.map(|f| f.decision.as_str()))) }
                @if break_glass_possible(in_force) && user.may_break_glass() && in_force.map(|f| f.decision) != Some(Decision::Grant) {
                    dt { "Break-the-Glass" } dd { "possible for your role" }
                }
            }
            p.actions {
                a href={ "/portal/patients/" (patient) "/consent" } { "Record consent" }
                @if oversees { " · " a href={ "/portal/patients/" (patient) "/access-log" } { "Access log" } }
            }
            section #records aria-live="polite" aria-label="Clinical records" data-live={ "/portal/patients/" (patient) "/live?since=" (fp) } data-section={ "/portal/patients/" (patient) "/section" } {
                (records)
            }
        },
    )
}

#[derive(Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    since: String,
}

/// Server-sent events for an open patient page: when the patient's records, consent or the
/// user's Break-the-Glass change, a `changed` event; the page then fetches the records section
/// (`section`: an audited read, made only by a page that is still open). The stream does not keep
/// the session alive; it ends with the session.
pub async fn live(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let patient = match known_patient(&state, &id).await {
        Ok(p) => p,
        Err(e) => return api_error(&visit, e),
    };
    let start = (state, user, visit.sid.clone(), q.since, false);
    let stream = futures::stream::unfold(
        start,
        move |(state, user, sid, mut seen, ended)| async move {
            if ended {
                return None;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !state
                    .portal
                    .sessions
                    .alive(&sid, &user.id, state.portal.config.idle_timeout)
                {
                    let event = Event::default().event("ended").data("signed out");
                    return Some((Ok::<_, Infallible>(event), (state, user, sid, seen, true)));
                }
                let Ok(now) = fingerprint(&state, patient, &user).await else {
                    continue;
                };
                if now == seen {
                    continue;
                }
                seen = now;
                let event = Event::default().event("changed").data(seen.clone());
                return Some((Ok(event), (state, user, sid, seen, false)));
            }
        },
    );
    visit.finish(
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

/// The records section alone, fetched by an open patient page when its stream says something
/// changed: an audited read (`portal:live`). Background: it does not count as activity.
pub async fn section(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let read = async {
        let patient = known_patient(&state, &id).await?;
        clinical(&state, &user, patient, "portal:live").await
    }
    .await;
    match read {
        Ok(section) => visit
            .finish(([(axum::http::header::CACHE_CONTROL, "no-store")], section).into_response()),
        Err(e) => api_error(&visit, e),
    }
}

/// One lab result or document, for its pop-up window: an audited read of that kind of record.
pub async fn record_popup(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path((id, kind, key)): Path<(String, String, String)>,
) -> Response {
    if !["Observation", "DiagnosticReport", "DocumentReference"].contains(&kind.as_str()) {
        return error_page(&visit, StatusCode::NOT_FOUND, "This page does not exist.");
    }
    let served = async {
        let patient = known_patient(&state, &id).await?;
        read_records(
            &state,
            &user,
            patient,
            Some(&kind),
            format!("portal:{kind}"),
        )
        .await
    }
    .await;
    let served = match served {
        Ok(s) => s,
        Err(e) => return api_error(&visit, e),
    };
    let Some(r) = served.records.iter().find(|r| record_key(r) == key) else {
        return error_page(
            &visit,
            StatusCode::NOT_FOUND,
            "This record is no longer available.",
        );
    };
    let title = describe(r);
    let body = html! {
        @if served.basis == "break_glass" { p.btg role="note" { strong { "Seen by Break-the-Glass." } } }
        dl.record {
            dt { "Kind" } dd { (kind) }
            dt { "Date" } dd { (when(r)) }
            dt { "Status" } dd { (status(r)) }
            @if let Some(v) = value_of(r) { dt { "Value" } dd #value { (v) } }
            @if let Some(range) = r["referenceRange"].as_array().and_then(|a| a.first()) {
                dt { "Reference range" }
                dd { (range["low"]["value"].as_f64().map(|v| v.to_string()).unwrap_or_default()) " – " (range["high"]["value"].as_f64().map(|v| v.to_string()).unwrap_or_default()) " " (range["high"]["unit"].as_str().unwrap_or("")) }
            }
            @if let Some(i) = r["interpretation"].as_array().and_then(|a| a.first()).and_then(text_of) { dt { "Interpretation" } dd { (i) } }
            @if let Some(c) = r["conclusion"].as_str() { dt { "Conclusion" } dd { (c) } }
            @if let Some(d) = r["description"].as_str() { dt { "Description" } dd { (d) } }
        }
        @for content in r["content"].as_array().into_iter().flatten() {
            @let a = &content["attachment"];
            section aria-label="Document content" {
                h2 { (a["title"].as_str().unwrap_or("Attachment")) }
                p { (a["contentType"].as_str().unwrap_or("unknown type")) }
                @match attachment_text(a) {
                    Some(text) => pre.document { (text) },
                    None => p { "This attachment cannot be shown here." },
                }
            }
        }
        p { button type="button" data-close { "Close window" } }
    };
    page(&visit, &title, body)
}

fn attachment_text(a: &Value) -> Option<String> {
    let ct = a["contentType"].as_str().unwrap_or_default();
    if !(ct.starts_with("text/") || ct.contains("json") || ct.contains("xml")) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a["data"].as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn attest_form(visit: &Visit, patient: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        section.terms aria-labelledby="terms-heading" {
            h2 #terms-heading { "Terms" }
            p { "Break-the-Glass gives you access to this patient's clinical data without their consent, for an emergency only, for a limited time (24 hours at most), and never to 42 CFR Part 2 (substance use treatment) data." }
            p { "Your name, organization, role, the time and your reason are recorded and reported to your organization's privacy officer. Misuse is a breach of the participation agreement and of the law." }
        }
        form method="post" action={ "/portal/patients/" (patient) "/break-glass" } {
            (csrf(visit))
            p { label for="reason" { "Reason" } textarea #reason name="reason" rows="3" required {} }
            p.check {
                input #attest type="checkbox" name="attest" value="yes" required;
                label for="attest" { "I attest that this is an emergency and that I need this patient's data to treat them." }
            }
            p { button type="submit" { "Confirm" } " " a href={ "/portal/patients/" (patient) } { "Cancel" } }
        }
    }
}

pub async fn break_glass_page(
    State(state): State<AppState>,
    SignedIn { visit, .. }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match known_patient(&state, &id).await {
        Ok(p) => page(
            &visit,
            "Break the Glass",
            attest_form(&visit, &p.to_string(), None),
        ),
        Err(e) => api_error(&visit, e),
    }
}

#[derive(Deserialize)]
pub struct AttestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    attest: Option<String>,
}

pub async fn break_glass(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<AttestForm>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    let attest = form.attest.as_deref() == Some("yes");
    if !attest || form.reason.trim().is_empty() {
        return page_with(
            &visit,
            StatusCode::BAD_REQUEST,
            "Break the Glass",
            attest_form(
                &visit,
                &id,
                Some("Give a reason and tick the attestation to break the glass."),
            ),
        );
    }
    // `POST /v1/patients/{id}/break-glass`' own handler: the same rules and events.
    let req = serde_json::from_value(json!({"reason": form.reason, "attest": true}))
        .expect("a break-glass request");
    match crate::http::break_glass::break_glass(
        State(state.clone()),
        Caller(user),
        Path(id.clone()),
        Ok(Json(req)),
    )
    .await
    {
        Ok(_) => visit.redirect(&format!("/portal/patients/{id}")),
        Err(e) => api_error(&visit, e),
    }
}
