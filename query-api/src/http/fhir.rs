//! FHIR R4 for EHRs (API.md, "Query API", "EHR clients"): `GET /fhir/metadata`, `GET
//! /fhir/Patient/{id}`, `GET /fhir/Patient?identifier=...`, `GET /fhir/{type}?patient={id}&...`
//! (the parameters of `search`), `GET /fhir/Patient/{id}/$everything`, every searchset paged
//! (`paging`). Callers are users (JWT) or EHR clients (SMART Backend Services access tokens,
//! limited to their scopes). Clinical reads take the same path as `/v1/patients/{id}/records`
//! (`records::read_records_where`: consent, Break-the-Glass, Part 2, audit); demographics need no
//! consent, as `/v1/patients`. Every error under `/fhir` is an `OperationOutcome`; a search
//! parameter not served is refused, never ignored.

mod paging;
mod resources;
mod search;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use platform::auth::User;
use serde_json::Value;

use super::caller::FhirActor;
use super::patients::{covers_part2, find, identifier, non_empty, visible_identifiers};
use super::position::CaughtUp;
use super::records::{known_patient, read_records_where};
use super::smart::Scopes;
use super::{ApiError, AppState};
use crate::db::{self, PatientSearch};
use paging::{Cursor, Item, Key, Page};
use resources::{capability_statement, operation_outcome, patient, searchset, PATIENT_SCOPED};
use search::{Filter, SearchError};

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// The routes under `/fhir`; anything else there is a 404 `OperationOutcome`.
pub fn routes() -> Router<AppState> {
    let fhir = Router::new()
        .route("/metadata", get(metadata).fallback(method_not_allowed))
        .route(
            "/.well-known/smart-configuration",
            get(super::oauth::smart_configuration).fallback(method_not_allowed),
        )
        .route(
            "/Patient",
            get(search_patients).fallback(method_not_allowed),
        )
        .route(
            "/Patient/{id}",
            get(read_patient).fallback(method_not_allowed),
        )
        // `{operation}`, not a literal `$everything`: clients may percent-encode the `$`.
        .route(
            "/Patient/{id}/{operation}",
            get(patient_operation).fallback(method_not_allowed),
        )
        .route("/{type}", get(search_type).fallback(method_not_allowed))
        .fallback(unknown);
    Router::new().nest("/fhir", fhir)
}

/// An error under `/fhir`: an `OperationOutcome` with the status the `/v1` routes would give.
#[derive(Debug)]
pub enum FhirError {
    Api(ApiError),
    /// 400 `not-supported`: a resource type, parameter or operation this server does not serve.
    NotSupported(&'static str),
    /// 400 `required`/`invalid`: a search without its patient, or with conflicting ones.
    BadSearch(&'static str, &'static str),
    /// 400 `not-supported`: a search parameter this server does not serve (its name).
    UnsupportedParameter(String),
    /// 400 `invalid`: a search parameter's value does not parse (its name).
    InvalidParameter(String),
    /// 403 `forbidden`: the client's access token has no scope for this.
    InsufficientScope,
    /// 406: the client accepts only a format other than JSON.
    NotAcceptable,
    /// 404 for a path under `/fhir` that is no FHIR interaction here.
    UnknownRoute,
    MethodNotAllowed,
}

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> Self {
        FhirError::Api(e)
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let (status, outcome) = match &self {
            FhirError::Api(e) => {
                let (status, code) = e.status_and_code();
                let issue_type = match status {
                    StatusCode::UNAUTHORIZED => "login",
                    StatusCode::FORBIDDEN => "forbidden",
                    StatusCode::NOT_FOUND => "not-found",
                    StatusCode::CONFLICT => "conflict",
                    StatusCode::BAD_REQUEST => "invalid",
                    _ => "transient",
                };
                (
                    status,
                    operation_outcome(issue_type, code, &e.to_string(), e.break_glass_allowed()),
                )
            }
            FhirError::NotSupported(what) => (
                StatusCode::BAD_REQUEST,
                operation_outcome("not-supported", "not_supported", what, None),
            ),
            FhirError::BadSearch(issue_type, what) => (
                StatusCode::BAD_REQUEST,
                operation_outcome(issue_type, "invalid_search", what, None),
            ),
            FhirError::UnsupportedParameter(name) => (
                StatusCode::BAD_REQUEST,
                operation_outcome(
                    "not-supported",
                    "unsupported_parameter",
                    &format!(
                        "search parameter '{}' is not supported here; see GET /fhir/metadata",
                        printable(name)
                    ),
                    None,
                ),
            ),
            FhirError::InvalidParameter(name) => (
                StatusCode::BAD_REQUEST,
                operation_outcome(
                    "invalid",
                    "invalid_parameter",
                    &format!("the value of '{}' does not parse", printable(name)),
                    None,
                ),
            ),
            FhirError::InsufficientScope => (
                StatusCode::FORBIDDEN,
                operation_outcome(
                    "forbidden",
                    "insufficient_scope",
                    "the access token's scopes do not cover this",
                    None,
                ),
            ),
            FhirError::NotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                operation_outcome(
                    "not-supported",
                    "not_acceptable",
                    "this server answers in JSON only (application/fhir+json)",
                    None,
                ),
            ),
            FhirError::UnknownRoute => (
                StatusCode::NOT_FOUND,
                operation_outcome(
                    "not-found",
                    "unknown_route",
                    "no such FHIR interaction; see GET /fhir/metadata",
                    None,
                ),
            ),
            FhirError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                operation_outcome(
                    "not-supported",
                    "method_not_allowed",
                    "this FHIR API is read-only: GET only",
                    None,
                ),
            ),
        };
        let mut response = fhir_json(status, &outcome);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A parameter name as a message may quote it: printable ASCII, at most 64 characters.
fn printable(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

impl From<SearchError> for FhirError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Unsupported(name) => FhirError::UnsupportedParameter(name),
            SearchError::Invalid(name) => FhirError::InvalidParameter(name),
        }
    }
}

fn fhir_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body.to_string(),
    )
        .into_response()
}

/// The caller (`FhirActor`: a user, or an EHR client with its scopes), its refusals as
/// `OperationOutcome`s.
struct FhirCaller(User, Option<Scopes>);

impl FromRequestParts<AppState> for FhirCaller {
    type Rejection = FhirError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, FhirError> {
        let FhirActor { user, scopes } = FhirActor::from_request_parts(parts, state).await?;
        Ok(FhirCaller(user, scopes))
    }
}

impl FhirCaller {
    /// 403 unless the caller is a user, or a client whose scopes pass `allowed`.
    fn require(&self, allowed: impl Fn(&Scopes) -> bool) -> Result<(), FhirError> {
        match &self.1 {
            Some(scopes) if !allowed(scopes) => Err(FhirError::InsufficientScope),
            _ => Ok(()),
        }
    }
}

/// `X-Min-Position` (`CaughtUp`), its refusals as `OperationOutcome`s.
struct FhirCaughtUp;

impl FromRequestParts<AppState> for FhirCaughtUp {
    type Rejection = FhirError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, FhirError> {
        CaughtUp::from_request_parts(parts, state).await?;
        Ok(FhirCaughtUp)
    }
}

/// Content negotiation: `_format` (json, application/json, application/fhir+json) wins over
/// `Accept`; either asking only for something else (XML) is a 406. Also gives the base URL.
struct Fhir {
    base: String,
}

impl FromRequestParts<AppState> for Fhir {
    type Rejection = FhirError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, FhirError> {
        let format = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(q)| q.into_iter().find(|(k, _)| k == "_format"))
            .map(|(_, v)| v);
        let acceptable = match format {
            Some(f) => json_media(&f) || f == "json",
            None => parts
                .headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|accept| {
                    accept.split(',').any(|range| {
                        let media = range.split(';').next().unwrap_or("").trim();
                        media.is_empty() || json_media(media)
                    })
                }),
        };
        if !acceptable {
            return Err(FhirError::NotAcceptable);
        }
        Ok(Fhir {
            base: base_url(&parts.headers),
        })
    }
}

fn json_media(media: &str) -> bool {
    matches!(
        media.to_ascii_lowercase().as_str(),
        "*/*"
            | "application/*"
            | "application/json"
            | "application/fhir+json"
            | "application/json+fhir"
    )
}

/// The absolute base of `fullUrl`s: the host the client addressed (a proxy's
/// `X-Forwarded-Proto` honoured), so references resolve from where the client stands.
fn base_url(headers: &HeaderMap) -> String {
    format!("{}/fhir", origin(headers))
}

/// `scheme://host` of the request, as the client addressed it.
pub(super) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let proto = match headers
        .get("x-forwarded-proto")
        .and_then(|p| p.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{proto}://{host}")
}

/// `GET /fhir/metadata`: the CapabilityStatement, served without a token.
async fn metadata(fhir: Fhir) -> Result<Response, FhirError> {
    Ok(fhir_json(StatusCode::OK, &capability_statement(&fhir.base)))
}

/// `GET /fhir/Patient/{id}`: demographics, without consent (as `/v1/patients`); an id merged away
/// stands for the survivor, whose Patient (with the survivor's id) is answered.
async fn read_patient(
    _: Fhir,
    State(state): State<AppState>,
    caller: FhirCaller,
    _: FhirCaughtUp,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    caller.require(|s| s.may_read("Patient"))?;
    let id = known_patient(&state, &id).await?;
    let row = demographics(&state, &caller.0, id).await?;
    Ok(fhir_json(StatusCode::OK, &patient(&row)))
}

/// One patient's demographics as `user` may see them: a Part 2 program's identifiers only under
/// a consent covering Part 2.
async fn demographics(
    state: &AppState,
    user: &platform::auth::User,
    id: uuid::Uuid,
) -> Result<db::PatientRow, ApiError> {
    let mut row = db::patient_demographics(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let consents = db::consents(&state.pool, &[id], &user.org).await?;
    let in_force = crate::consent::decision_for(
        consents.get(&id).map(Vec::as_slice).unwrap_or(&[]),
        &user.org,
        std::time::SystemTime::now(),
    );
    row.identifiers = visible_identifiers(&row.identifiers, covers_part2(in_force));
    Ok(row)
}

/// `_count` and `_cursor` of a search: how long a page, and which (`None`: the first).
struct PageParams {
    count: usize,
    cursor: Option<Cursor>,
}

impl PageParams {
    /// Takes `_count`/`_cursor` (and `_format`, handled by `Fhir`); `Ok(false)` for any other.
    fn take(&mut self, name: &str, value: &str) -> Result<bool, FhirError> {
        match name {
            "_count" => {
                self.count = value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| FhirError::InvalidParameter(name.into()))?
                    .min(paging::MAX_COUNT);
            }
            "_cursor" => {
                self.cursor =
                    Some(Cursor::decode(value).ok_or(FhirError::InvalidParameter(name.into()))?);
            }
            "_format" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn new() -> Self {
        PageParams {
            count: paging::DEFAULT_COUNT,
            cursor: None,
        }
    }

    fn cursor(&self) -> Cursor {
        self.cursor
            .clone()
            .unwrap_or_else(|| Cursor::first(schemas::now_micros()))
    }
}

/// The searchset of one page: `self`, `first`, `next`, `previous` links over `search_url`
/// (the search as applied, without paging parameters).
fn paged_searchset(base: &str, search_url: &str, params: &PageParams, page: Page) -> Value {
    let sep = if search_url.contains('?') { '&' } else { '?' };
    let url = |cursor: Option<&Cursor>| match cursor {
        Some(c) => format!(
            "{search_url}{sep}_count={}&_cursor={}",
            params.count,
            c.encode()
        ),
        None => format!("{search_url}{sep}_count={}", params.count),
    };
    let mut links = vec![("self", url(params.cursor.as_ref())), ("first", url(None))];
    if let Some(next) = &page.next {
        links.push(("next", url(Some(next))));
    }
    if let Some(previous) = &page.previous {
        links.push(("previous", url(Some(previous))));
    }
    searchset(base, &links, page.resources, page.total)
}

/// `GET /fhir/Patient?...`: demographic search, as `/v1/patients` (no consent needed).
async fn search_patients(
    fhir: Fhir,
    State(state): State<AppState>,
    caller: FhirCaller,
    _: FhirCaughtUp,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, FhirError> {
    caller.require(|s| s.may_search("Patient"))?;
    let user = &caller.0;
    let Ok(Query(params)) = params else {
        return Err(FhirError::BadSearch(
            "invalid",
            "the query string is malformed",
        ));
    };
    let mut paging = PageParams::new();
    for (name, value) in &params {
        let served = resources::PATIENT_SEARCH_PARAMS
            .iter()
            .any(|(n, _, _)| n == name);
        if !served && !paging.take(name, value)? {
            return Err(FhirError::UnsupportedParameter(name.clone()));
        }
    }
    let first = |name: &str| {
        non_empty(
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
        )
    };
    let mut applied = Vec::new();
    let rows = if let Some(id) = first("_id") {
        applied.push(format!("_id={}", encode(&id)));
        match known_patient(&state, &id).await {
            Ok(patient) => vec![demographics(&state, user, patient).await?],
            Err(ApiError::NotFound) => Vec::new(),
            Err(e) => return Err(e.into()),
        }
    } else {
        let search = PatientSearch {
            family: first("family"),
            given: first("given"),
            birth_date: first("birthdate"),
            identifier: first("identifier").map(identifier),
        };
        for (name, value) in [
            ("family", &search.family),
            ("given", &search.given),
            ("birthdate", &search.birth_date),
        ] {
            if let Some(v) = value {
                applied.push(format!("{name}={}", encode(v)));
            }
        }
        if let Some((system, value)) = &search.identifier {
            let token = if system.is_empty() {
                value.clone()
            } else {
                format!("{system}|{value}")
            };
            applied.push(format!("identifier={}", encode(&token)));
        }
        if applied.is_empty() {
            return Err(FhirError::BadSearch(
                "required",
                "give at least one of _id, identifier, family, given, birthdate",
            ));
        }
        // The same rules as `/v1/patients`: real criteria, capped, audited, Part 2 hidden.
        find(&state, user, &search, "fhir:Patient?search")
            .await?
            .0
            .into_iter()
            .map(|shown| shown.row)
            .collect()
    };
    let search_url = format!("{}/Patient?{}", fhir.base, applied.join("&"));
    let items = rows
        .iter()
        .map(|row| Item {
            key: Key {
                received: 0,
                resource_type: "Patient".into(),
                source: String::new(),
                id: row.id.to_string(),
            },
            resource: patient(row),
        })
        .collect();
    let cursor = paging.cursor();
    let page = paging::page(items, paging.count, &cursor);
    Ok(fhir_json(
        StatusCode::OK,
        &paged_searchset(&fhir.base, &search_url, &paging, page),
    ))
}

/// A record as a page item: sorted by when the HIE received it, then type, source and id.
fn item(row: db::RecordRow) -> Item {
    Item {
        key: Key {
            received: row.received_micros,
            resource_type: row.resource["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            source: row.source_id,
            id: row.resource["id"].as_str().unwrap_or_default().to_string(),
        },
        resource: row.resource,
    }
}

/// `GET /fhir/{type}?patient={id}&...` (or `subject=Patient/{id}`): the patient's records of
/// one type that match every filter (`search`), one page of them, through the same consent path
/// as `/v1/.../records?type=`.
async fn search_type(
    fhir: Fhir,
    State(state): State<AppState>,
    caller: FhirCaller,
    _: FhirCaughtUp,
    Path(resource_type): Path<String>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, FhirError> {
    if !PATIENT_SCOPED.contains(&resource_type.as_str()) {
        return Err(FhirError::NotSupported(
            "this resource type is not served here; see GET /fhir/metadata",
        ));
    }
    caller.require(|s| s.may_search(&resource_type))?;
    let Ok(Query(params)) = params else {
        return Err(FhirError::BadSearch(
            "invalid",
            "the query string is malformed",
        ));
    };
    let id = patient_param(&params)?;
    let mut paging = PageParams::new();
    let mut filters: Vec<Filter> = Vec::new();
    let mut applied = Vec::new();
    for (name, value) in &params {
        if PATIENT_PARAMS.contains(&name.as_str()) || paging.take(name, value)? {
            continue;
        }
        filters.push(search::filter(&resource_type, name, value)?);
        applied.push(format!("{name}={}", encode(value)));
    }
    let patient = known_patient(&state, &id).await?;
    let action = format!("fhir:{resource_type}?patient");
    let cursor = paging.cursor();
    // The page's resources travel in `Served` (what the audit event counted), its links here.
    let (served, mut page) = read_records_where(
        &state,
        &caller.0,
        patient,
        Some(&resource_type),
        action,
        |rows| {
            let matches = rows
                .into_iter()
                .filter(|r| {
                    filters
                        .iter()
                        .all(|f| f.matches(&r.resource, r.received_micros))
                })
                .map(item)
                .collect();
            let mut page = paging::page(matches, paging.count, &cursor);
            (std::mem::take(&mut page.resources), page)
        },
    )
    .await?;
    page.resources = served.records;
    let mut search_url = format!("{}/{resource_type}?patient={patient}", fhir.base);
    for a in &applied {
        search_url.push('&');
        search_url.push_str(a);
    }
    Ok(fhir_json(
        StatusCode::OK,
        &paged_searchset(&fhir.base, &search_url, &paging, page),
    ))
}

/// The names a search's patient goes by.
const PATIENT_PARAMS: [&str; 4] = ["patient", "patient:Patient", "subject", "subject:Patient"];
/// The patient of a type search: `patient=<id>`, `patient=Patient/<id>`, `subject=Patient/<id>`
/// (an absolute `.../Patient/<id>` too). One patient, however many times it is named.
fn patient_param(params: &[(String, String)]) -> Result<String, FhirError> {
    let mut ids = Vec::new();
    for (name, value) in params {
        let value = value.trim();
        let id = match name.as_str() {
            "patient" | "patient:Patient" => {
                value.rsplit_once("Patient/").map_or(value, |(_, id)| id)
            }
            "subject" | "subject:Patient" => match value.rsplit_once("Patient/") {
                Some((_, id)) => id,
                None if name == "subject:Patient" => value,
                None => {
                    return Err(FhirError::NotSupported(
                        "subject must reference a Patient (subject=Patient/<id>)",
                    ))
                }
            },
            _ => continue,
        };
        if id.is_empty() {
            return Err(FhirError::BadSearch(
                "invalid",
                "an empty patient reference",
            ));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    match ids.as_slice() {
        [id] => Ok(id.to_string()),
        [] => Err(FhirError::BadSearch(
            "required",
            "a search needs its patient: patient=<id> or subject=Patient/<id>",
        )),
        _ => Err(FhirError::BadSearch(
            "invalid",
            "a search covers one patient only",
        )),
    }
}

/// `GET /fhir/Patient/{id}/$everything`: the enterprise Patient, then every record the caller may
/// read (a client: of the types its scopes allow), paged, through the same consent path as
/// `/v1/patients/{id}/records`.
async fn patient_operation(
    fhir: Fhir,
    State(state): State<AppState>,
    caller: FhirCaller,
    _: FhirCaughtUp,
    Path((id, operation)): Path<(String, String)>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, FhirError> {
    if operation != "$everything" {
        return Err(FhirError::NotSupported(
            "the only operation on a Patient is $everything",
        ));
    }
    let Ok(Query(params)) = params else {
        return Err(FhirError::BadSearch(
            "invalid",
            "the query string is malformed",
        ));
    };
    let mut paging = PageParams::new();
    for (name, value) in &params {
        if !paging.take(name, value)? {
            return Err(FhirError::UnsupportedParameter(name.clone()));
        }
    }
    let may_read = |t: &str| caller.1.as_ref().is_none_or(|s| s.may_read(t));
    if caller.1.as_ref().is_some_and(Scopes::is_empty) {
        return Err(FhirError::InsufficientScope);
    }
    let patient_id = known_patient(&state, &id).await?;
    let row = demographics(&state, &caller.0, patient_id).await?;
    let cursor = paging.cursor();
    let (served, mut page) = read_records_where(
        &state,
        &caller.0,
        patient_id,
        None,
        "fhir:Patient/$everything".into(),
        |rows| {
            let mut items: Vec<Item> = rows
                .into_iter()
                .filter(|r| may_read(r.resource["resourceType"].as_str().unwrap_or_default()))
                .map(item)
                .collect();
            if may_read("Patient") {
                // The enterprise Patient sorts first: on the first page.
                items.push(Item {
                    key: Key {
                        received: i64::MIN,
                        resource_type: "Patient".into(),
                        source: String::new(),
                        id: patient_id.to_string(),
                    },
                    resource: patient(&row),
                });
            }
            let mut page = paging::page(items, paging.count, &cursor);
            (std::mem::take(&mut page.resources), page)
        },
    )
    .await?;
    page.resources = served.records;
    let search_url = format!("{}/Patient/{patient_id}/$everything", fhir.base);
    Ok(fhir_json(
        StatusCode::OK,
        &paged_searchset(&fhir.base, &search_url, &paging, page),
    ))
}

async fn unknown() -> FhirError {
    FhirError::UnknownRoute
}

async fn method_not_allowed() -> FhirError {
    FhirError::MethodNotAllowed
}

/// Percent-encode a search value for the Bundle's self link.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'|' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_patient_of_a_search_in_every_spelling() {
        for p in [
            params(&[("patient", "abc")]),
            params(&[("patient", "Patient/abc")]),
            params(&[("subject", "Patient/abc")]),
            params(&[("subject", "http://h/fhir/Patient/abc"), ("patient", "abc")]),
            params(&[("_count", "10"), ("subject:Patient", "abc")]),
        ] {
            assert_eq!(patient_param(&p).unwrap(), "abc");
        }
        assert!(matches!(
            patient_param(&params(&[("code", "x")])),
            Err(FhirError::BadSearch("required", _))
        ));
        assert!(matches!(
            patient_param(&params(&[("patient", "a"), ("subject", "Patient/b")])),
            Err(FhirError::BadSearch("invalid", _))
        ));
        assert!(matches!(
            patient_param(&params(&[("subject", "Group/g")])),
            Err(FhirError::NotSupported(_))
        ));
    }

    #[test]
    fn routes_do_not_conflict() {
        let _ = routes();
    }

    #[test]
    fn base_url_follows_the_host_header() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("ehr.example:8080"));
        assert_eq!(base_url(&h), "http://ehr.example:8080/fhir");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(base_url(&h), "https://ehr.example:8080/fhir");
        h.insert(HOST, HeaderValue::from_static("bad/host"));
        assert_eq!(base_url(&h), "https://localhost/fhir");
    }
}
