//! `GET /v1/patients/{id}/access-log` and `GET /v1/reports/break-glass`: what a privacy officer
//! sees.

use axum::extract::{Path, Query, State};
use axum::Json;
use platform::auth::Role;
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::caller::Caller;
use super::position::CaughtUp;
use super::records::known_patient;
use super::{ApiError, AppState};
use crate::db;

/// For a privacy officer or an admin of an organization holding the patient's data, or an admin
/// of the HIE operator.
pub async fn access_log(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let patient = known_patient(&state, &id).await?;
    if !oversees(&state, &user, patient).await? {
        return Err(NOT_PERMITTED);
    }
    Ok(Json(
        json!({"entries": db::access_log(&state.pool, patient).await?}),
    ))
}

/// Whether `user` oversees `patient`'s privacy: a privacy officer or an admin of an organization
/// holding the patient's data, or an admin of the HIE operator. Shared by the access log and the
/// consent history.
pub(super) async fn oversees(
    state: &AppState,
    user: &platform::auth::User,
    patient: uuid::Uuid,
) -> Result<bool, ApiError> {
    Ok(state.accounts.is_operator(user)
        || ((user.has(Role::PrivacyOfficer) || user.has(Role::Admin))
            && db::organization_holds(&state.pool, patient, &user.org).await?))
}

pub(super) const NOT_PERMITTED: ApiError = ApiError::Forbidden(
    "not_permitted",
    "only a privacy officer or an admin of an organization holding this patient's data",
    None,
);

#[derive(Debug, Deserialize)]
pub struct ReportParams {
    since: Option<String>,
}

/// Break-the-Glass grants by the caller's organization (the HIE operator's admins see every
/// organization's).
pub async fn break_glass_report(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Query(params): Query<ReportParams>,
) -> Result<Json<Value>, ApiError> {
    if !(user.has(Role::PrivacyOfficer) || user.has(Role::Admin)) {
        return Err(ApiError::Forbidden(
            "not_permitted",
            "only a privacy officer or an admin",
            None,
        ));
    }
    let since = match params.since.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|_| {
                ApiError::BadRequest("invalid_since", "since must be an RFC 3339 instant".into())
            })?
            .into(),
        None => std::time::UNIX_EPOCH,
    };
    let org = (!state.accounts.is_operator(&user)).then_some(user.org.as_str());
    Ok(Json(
        json!({"entries": db::break_glass_report(&state.pool, org, since).await?}),
    ))
}
