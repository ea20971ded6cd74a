//! `POST /v1/consents`: a patient's consent decision, captured by a source or a user.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use schemas::{now_micros, topics, ConsentRecorded, PatientIdentity};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{sources::user, ApiError, AppState};

#[derive(Debug, Deserialize)]
pub struct ConsentRequest {
    patient: PatientRef,
    organization_id: String,
    decision: Decision,
    effective_at: Option<String>,
    expires_at: Option<String>,
    method: Method,
    #[serde(default)]
    part2: bool,
}

#[derive(Debug, Deserialize)]
struct PatientRef {
    assigning_authority: String,
    mrn: String,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Grant,
    Deny,
    DenyExceptEmergency,
    Revoke,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Grant => "grant",
            Decision::Deny => "deny",
            Decision::DenyExceptEmergency => "deny_except_emergency",
            Decision::Revoke => "revoke",
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Method {
    Written,
    Verbal,
    Electronic,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Written => "written",
            Method::Verbal => "verbal",
            Method::Electronic => "electronic",
        }
    }
}

fn instant(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
                .map_err(|_| {
                    ApiError::BadRequest(
                        "invalid_body",
                        format!("{field} must be an RFC 3339 instant"),
                    )
                })
        })
        .transpose()
}

pub async fn post_consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ConsentRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A source records consent with its API key, a user with a token.
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let bearer =
        platform::auth::bearer(auth).ok_or(ApiError::Unauthorized("missing credentials"))?;
    let (recorded_by, caller_org, for_any_org) = match state.registry.by_key(bearer) {
        Some(source) => (
            format!("source:{}", source.source_id),
            source.organization_id,
            false,
        ),
        None => {
            let u = user(&state, &headers).await?;
            // Only the HIE operator's admins record for other organizations.
            let operator = state.accounts.is_operator(&u);
            (format!("user:{}", u.id), u.org.clone(), operator)
        }
    };
    let Json(req) = body.map_err(ApiError::from_json)?;
    super::refuse_control_characters(&[
        ("organization_id", &req.organization_id),
        (
            "patient.assigning_authority",
            &req.patient.assigning_authority,
        ),
        ("patient.mrn", &req.patient.mrn),
    ])?;
    let org = req.organization_id.trim().to_string();
    if org.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_body",
            "organization_id must not be empty".into(),
        ));
    }
    // Consent for one organization is that organization's to record; `*` (all participants)
    // comes from the HIE's own form, which any participant may collect.
    if !(for_any_org || org == "*" || org == caller_org) {
        return Err(ApiError::Forbidden(
            "organization_mismatch",
            "a consent for another organization can only be recorded by that organization".into(),
        ));
    }
    if req.patient.assigning_authority.trim().is_empty() || req.patient.mrn.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_body",
            "patient.assigning_authority and patient.mrn are required".into(),
        ));
    }
    let effective_at = instant("effective_at", req.effective_at.as_deref())?;
    let expires_at = instant("expires_at", req.expires_at.as_deref())?;
    if let (Some(from), Some(to)) = (effective_at, expires_at) {
        if to <= from {
            return Err(ApiError::BadRequest(
                "invalid_body",
                "expires_at must be after effective_at".into(),
            ));
        }
    }
    let event = ConsentRecorded {
        event_id: uuid::Uuid::new_v4().to_string(),
        recorded_at: now_micros(),
        patient: PatientIdentity {
            assigning_authority: req.patient.assigning_authority.trim().to_string(),
            mrn: req.patient.mrn.trim().to_string(),
        },
        organization_id: org,
        decision: req.decision.as_str().to_string(),
        effective_at,
        expires_at,
        method: req.method.as_str().to_string(),
        part2: req.part2,
        recorded_by,
    };
    let position = state
        .publisher
        .publish(topics::CONSENTS.name, &event.patient.key(), &event)
        .await?;
    tracing::info!(decision = %event.decision, organization = %event.organization_id, "consent recorded");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"position": position.encode()})),
    ))
}
