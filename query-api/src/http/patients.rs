//! `GET /v1/patients`: demographic search, allowed without consent; shows the consent status.

use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::position::CaughtUp;
use super::{ApiError, AppState};
use crate::consent::{break_glass_possible, decision_for};
use crate::db::{self, PatientSearch};

const MAX_RESULTS: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    family: Option<String>,
    given: Option<String>,
    birth_date: Option<String>,
    identifier: Option<String>,
}

pub(super) fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub async fn search(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Query(params): Query<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    let search = PatientSearch {
        family: non_empty(params.family),
        given: non_empty(params.given),
        birth_date: non_empty(params.birth_date),
        // `system|value`, or a bare value matching any system.
        identifier: non_empty(params.identifier).map(|i| match i.split_once('|') {
            Some((system, value)) => (system.to_string(), value.to_string()),
            None => (String::new(), i),
        }),
    };
    if search.family.is_none()
        && search.given.is_none()
        && search.birth_date.is_none()
        && search.identifier.is_none()
    {
        return Err(ApiError::BadRequest(
            "search_parameter_required",
            "give at least one of family, given, birth_date, identifier".into(),
        ));
    }
    let rows = db::search_patients(&state.pool, &search, MAX_RESULTS).await?;
    let ids: Vec<_> = rows.iter().map(|r| r.id).collect();
    let consents = db::consents(&state.pool, &ids, &user.org).await?;
    let now = SystemTime::now();
    let patients: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let in_force = decision_for(
                consents.get(&r.id).map(Vec::as_slice).unwrap_or(&[]),
                &user.org,
                now,
            );
            json!({
                "id": r.id,
                "name": r.name,
                "birth_date": r.birth_date,
                "sex": r.sex,
                "identifiers": r.identifiers,
                "consent": in_force.map(|f| f.decision.as_str()).unwrap_or("none"),
                "break_glass_allowed": break_glass_possible(in_force) && user.may_break_glass(),
            })
        })
        .collect();
    Ok(Json(json!({"patients": patients})))
}
