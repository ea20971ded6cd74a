//! `GET /v1/patients/{id}/records`: clinical data, only under a consent that covers the caller's
//! organization.

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::caller::Caller;
use super::position::CaughtUp;
use super::{ApiError, AppState};
use crate::consent::{break_glass_possible, decision_for, Decision};
use crate::db;

#[derive(Debug, Deserialize)]
pub struct RecordParams {
    #[serde(rename = "type")]
    resource_type: Option<String>,
}

fn valid_type(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphabetic())
}

pub async fn records(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Path(id): Path<String>,
    Query(params): Query<RecordParams>,
) -> Result<Json<Value>, ApiError> {
    let patient = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let resource_type = params.resource_type.filter(|t| !t.is_empty());
    if resource_type.as_deref().is_some_and(|t| !valid_type(t)) {
        return Err(ApiError::BadRequest(
            "invalid_type",
            "type must be a FHIR resource type".into(),
        ));
    }
    if !db::patient_exists(&state.pool, patient).await? {
        return Err(ApiError::NotFound);
    }
    let consents = db::consents(&state.pool, &[patient], &user.org).await?;
    let in_force = decision_for(
        consents.get(&patient).map(Vec::as_slice).unwrap_or(&[]),
        &user.org,
        SystemTime::now(),
    );
    let break_glass_allowed = break_glass_possible(in_force) && user.may_break_glass();
    match in_force.map(|f| f.decision) {
        Some(Decision::Grant) => {}
        Some(Decision::Deny) => {
            return Err(ApiError::Forbidden(
                "consent_denied",
                "the patient has denied access to this organization",
                Some(false),
            ))
        }
        None | Some(Decision::DenyExceptEmergency) => {
            return Err(ApiError::Forbidden(
                "consent_required",
                "the patient has not granted this organization access",
                Some(break_glass_allowed),
            ))
        }
    }
    let covers_part2 = in_force.is_some_and(|f| f.covers_part2);
    let records = db::records(&state.pool, patient, resource_type.as_deref(), covers_part2).await?;
    tracing::info!(records = records.len(), organization = %user.org, "records served under consent");
    Ok(Json(json!({"records": records, "basis": "consent"})))
}
