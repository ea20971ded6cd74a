//! The data steward's side of the master patient index (API.md, "Patient identity"): the review
//! queue of possible matches, link / not-a-match decisions and unlinks. Every decision is an
//! `IdentityDecided` event naming the steward, durable before the answer: it is its own audit
//! record. Stewards see demographics and the matcher's evidence, never clinical data.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::{Role, User};
use schemas::{now_micros, IdentityAction, IdentityDecided, PatientIdentity};
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::position::CaughtUp;
use super::{ApiError, AppState};
use crate::audit::Access;
use crate::db;

const NOT_A_STEWARD: ApiError = ApiError::Forbidden(
    "role_not_permitted",
    "identity decisions are for data stewards",
    None,
);

fn steward(user: &User) -> Result<Role, ApiError> {
    user.role_for(|r| r == Role::DataSteward)
        .ok_or(NOT_A_STEWARD)
}

#[derive(Deserialize)]
pub struct ReviewQuery {
    limit: Option<i64>,
}

/// `GET /v1/identity/reviews[?limit=]`: open possible matches, oldest first (at most 500).
pub async fn reviews(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Query(q): Query<ReviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let role = steward(&user)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let reviews = db::identity_reviews(&state.pool, limit).await?;
    // Demographics shown are reads like a search's: each enterprise patient shown is in the
    // access log (basis `identity_review`) before the answer.
    let mut shown: Vec<uuid::Uuid> = reviews
        .iter()
        .flat_map(|r| {
            [
                &r["identity"]["enterprise_id"],
                &r["candidate"]["enterprise_id"],
            ]
        })
        .filter_map(|id| id.as_str().and_then(|s| s.parse().ok()))
        .collect();
    shown.sort();
    shown.dedup();
    state
        .auditor
        .accesses(
            shown
                .into_iter()
                .map(|patient| Access {
                    user: &user,
                    role,
                    patient,
                    action: "identity:reviews".into(),
                    basis: "identity_review",
                    outcome: "shown".into(),
                    returned: 1,
                    withheld: 0,
                })
                .collect(),
        )
        .await?;
    Ok(Json(json!({ "reviews": reviews })))
}

#[derive(Deserialize)]
pub struct DecisionRequest {
    identities: Vec<PatientIdentity>,
    decision: String,
}

/// `POST /v1/identity/decisions`: two identities are one person (`link`) or two
/// (`not_a_match`).
pub async fn decide(
    State(state): State<AppState>,
    Caller(user): Caller,
    body: Result<Json<DecisionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role = steward(&user)?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest("invalid_body", e.body_text()))?;
    let action = match req.decision.as_str() {
        "link" => IdentityAction::Link,
        "not_a_match" => IdentityAction::NotAMatch,
        _ => {
            return Err(ApiError::BadRequest(
                "invalid_decision",
                "decision must be link or not_a_match".into(),
            ))
        }
    };
    let [first, second] = <[PatientIdentity; 2]>::try_from(req.identities).map_err(|_| {
        ApiError::BadRequest(
            "invalid_identities",
            "identities must name exactly two source identities".into(),
        )
    })?;
    if first == second {
        return Err(ApiError::BadRequest(
            "invalid_identities",
            "the two identities are the same".into(),
        ));
    }
    for identity in [&first, &second] {
        known(&state, identity).await?;
    }
    record(&state, &user, role, action, second, Some(first)).await
}

#[derive(Deserialize)]
pub struct UnlinkRequest {
    identity: PatientIdentity,
}

/// `POST /v1/identity/unlink`: the identity leaves its enterprise patient, with its records.
pub async fn unlink(
    State(state): State<AppState>,
    Caller(user): Caller,
    body: Result<Json<UnlinkRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role = steward(&user)?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest("invalid_body", e.body_text()))?;
    known(&state, &req.identity).await?;
    record(
        &state,
        &user,
        role,
        IdentityAction::Unlink,
        req.identity,
        None,
    )
    .await
}

async fn known(state: &AppState, identity: &PatientIdentity) -> Result<(), ApiError> {
    if identity.assigning_authority.is_empty() || identity.mrn.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_identities",
            "an identity needs assigning_authority and mrn".into(),
        ));
    }
    db::identity_patient(&state.pool, identity)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound)
}

async fn record(
    state: &AppState,
    user: &User,
    role: Role,
    action: IdentityAction,
    identity: PatientIdentity,
    other: Option<PatientIdentity>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let event = IdentityDecided {
        event_id: uuid::Uuid::new_v4().to_string(),
        decided_at: now_micros(),
        action,
        identity,
        other,
        decided_by: user.id.clone(),
        decider_role: role.as_str().into(),
        score: None,
        candidates: Vec::new(),
        features: None,
        model: None,
        source_partition: None,
        source_offset: None,
    };
    let position = state.auditor.identity(&event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": event.event_id, "position": position.encode() })),
    ))
}
