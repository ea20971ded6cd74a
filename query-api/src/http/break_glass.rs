//! `POST /v1/patients/{id}/break-glass`: emergency access for one user and one patient, with an
//! attestation; never under `deny`; every grant and refusal is an event.

use std::time::{Duration, SystemTime};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Role;
use schemas::{now_micros, BreakGlassRecorded};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::caller::Caller;
use super::records::known_patient;
use super::{ApiError, AppState};
use crate::audit::Access;
use crate::consent::{decision_for, Decision};
use crate::db;

#[derive(Debug, Deserialize)]
pub struct BreakGlassRequest {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    attest: bool,
    /// A shorter grant than the configured one, when the user asks for it.
    duration_seconds: Option<u64>,
}

pub async fn break_glass(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    body: Result<Json<BreakGlassRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest("invalid_body", e.body_text()))?;
    if !req.attest || req.reason.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "attestation_required",
            "breaking the glass needs a reason and \"attest\": true".into(),
        ));
    }
    let patient = known_patient(&state, &id).await?;
    let refuse = |role: Role, code: &'static str, message: &'static str| {
        let (state, user) = (state.clone(), user.clone());
        async move {
            let access = Access {
                user: &user,
                role,
                patient,
                action: "break_glass".into(),
                basis: "none",
                outcome: format!("refused:{code}"),
                returned: 0,
                withheld: 0,
            };
            state.auditor.access(access).await?;
            Err::<(StatusCode, Json<Value>), _>(ApiError::Forbidden(code, message, Some(false)))
        }
    };
    let Some(role) = user.role_for(Role::may_break_glass) else {
        return refuse(
            user.primary_role(),
            "role_not_eligible",
            "this role may not break the glass",
        )
        .await;
    };
    let consents = db::consents(&state.pool, &[patient], &user.org).await?;
    let in_force = decision_for(
        consents.get(&patient).map(Vec::as_slice).unwrap_or(&[]),
        &user.org,
        SystemTime::now(),
    );
    match in_force.map(|f| f.decision) {
        Some(Decision::Deny) => {
            return refuse(
                role,
                "consent_denied",
                "the patient has denied access, even in an emergency",
            )
            .await
        }
        // The decision may be a deny: no emergency access until it is known.
        Some(Decision::Unresolved) => {
            return refuse(
                role,
                "consent_unresolved",
                "a consent decision for this patient could not be applied yet",
            )
            .await
        }
        _ => {}
    }

    let ttl = match req.duration_seconds {
        Some(s) => Duration::from_secs(s.clamp(1, state.config.break_glass_ttl.as_secs())),
        None => state.config.break_glass_ttl,
    };
    let at = now_micros();
    let expires_at = at + ttl.as_micros() as i64;
    let event = BreakGlassRecorded {
        event_id: uuid::Uuid::new_v4().to_string(),
        at,
        user_id: user.id.clone(),
        user_email: user.email.clone(),
        organization_id: user.org.clone(),
        role: role.to_string(),
        patient_id: patient.to_string(),
        reason: req.reason.trim().to_string(),
        expires_at,
    };
    let position = state.auditor.break_glass(&event).await?;
    let access = Access {
        user: &user,
        role,
        patient,
        action: "break_glass".into(),
        basis: "break_glass",
        outcome: "allowed".into(),
        returned: 0,
        withheld: 0,
    };
    state.auditor.access(access).await?;
    // The grant must work on the very next read: wait until the views hold it.
    super::position::wait_for(&state, &position).await?;
    tracing::warn!(organization = %user.org, role = %role, "break-the-glass access granted");
    let expires = OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_at) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(json!({"expires_at": expires, "position": position.encode()})),
    ))
}
