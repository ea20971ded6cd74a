//! `PUT /v1/clients/{client_id}`: the registry of EHR clients (SMART Backend Services), for the
//! HIE operator's admins. A change is an event first (`hie.clients`), applied here as soon as
//! the broker has it; `"active": false` stops the client's tokens at once.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use schemas::{now_micros, topics, ClientRegistered};
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::smart::Scope;
use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRequest {
    organization_id: String,
    jwks: Value,
    scopes: Vec<String>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

pub async fn put_client(
    State(state): State<AppState>,
    Caller(admin): Caller,
    Path(client_id): Path<String>,
    body: Result<Json<ClientRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !state.accounts.is_operator(&admin) {
        return Err(ApiError::Forbidden(
            "operator_required",
            "only an admin of the HIE operator registers EHR clients",
            None,
        ));
    }
    let Json(req) = body.map_err(|e| ApiError::BadRequest("invalid_body", e.body_text()))?;
    if !valid_client_id(&client_id) {
        return Err(ApiError::BadRequest(
            "invalid_client_id",
            "client ids are 1-128 characters of A-Z a-z 0-9 - . _ ~".into(),
        ));
    }
    let organization = req.organization_id.trim();
    if organization.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_body",
            "organization_id is required".into(),
        ));
    }
    let jwks_json = req.jwks.to_string();
    platform::clients::parse_jwks(&jwks_json)
        .map_err(|e| ApiError::BadRequest("invalid_jwks", e.into()))?;
    if req.scopes.is_empty() || req.scopes.iter().any(|s| Scope::parse(s).is_none()) {
        return Err(ApiError::BadRequest(
            "invalid_scopes",
            "scopes: one or more SMART system read scopes, e.g. system/*.rs or system/Observation.rs".into(),
        ));
    }
    if !state.clients.is_caught_up() {
        return Err(ApiError::NotReady);
    }
    let created = state.clients.get(&client_id).is_none();
    let event = ClientRegistered {
        event_id: uuid::Uuid::new_v4().to_string(),
        at: now_micros(),
        client_id: client_id.clone(),
        organization_id: organization.to_string(),
        jwks_json,
        scopes: req.scopes,
        active: req.active,
        recorded_by: admin.id.clone(),
    };
    let position = platform::kafka::publish(
        state.auditor.producer(),
        topics::CLIENTS.name,
        &client_id,
        &event,
    )
    .await
    .map_err(|e| ApiError::AuditUnavailable(e.into()))?;
    state.clients.apply(event);
    tracing::info!(client = %client_id, created, active = req.active, "EHR client recorded");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"id": client_id, "position": position.encode()})),
    ))
}
