//! `PUT /v1/users/{id}` and `GET /v1/users`: the account registry, for administrators. Changes
//! are events first (`hie.accounts`), applied here as soon as the broker has them.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Role;
use schemas::{now_micros, AccountRecorded};
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    email: String,
    organization_id: String,
    roles: Vec<Role>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !e.chars().any(char::is_whitespace)
        && e.len() <= 254
}

fn require_admin(user: &platform::auth::User) -> Result<(), ApiError> {
    if user.has(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "admin_required",
            "only an admin manages accounts",
            None,
        ))
    }
}

pub async fn put_user(
    State(state): State<AppState>,
    Caller(admin): Caller,
    Path(user_id): Path<String>,
    body: Result<Json<AccountRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&admin)?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest("invalid_body", e.body_text()))?;
    let email = req.email.trim().to_string();
    if user_id.is_empty() || user_id.len() > 128 {
        return Err(ApiError::BadRequest(
            "invalid_user_id",
            "user ids are 1-128 characters".into(),
        ));
    }
    if !valid_email(&email) {
        return Err(ApiError::BadRequest(
            "invalid_email",
            "email is not an address".into(),
        ));
    }
    if req.organization_id.trim().is_empty() || req.roles.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_body",
            "organization_id and at least one role are required".into(),
        ));
    }
    if state
        .accounts
        .email_holder(&email)
        .is_some_and(|holder| holder != user_id)
    {
        return Err(ApiError::Conflict(
            "email_taken",
            "another account already uses this email address",
        ));
    }
    let created = state.accounts.get(&user_id).is_none();
    let event = AccountRecorded {
        event_id: uuid::Uuid::new_v4().to_string(),
        at: now_micros(),
        user_id: user_id.clone(),
        email,
        organization_id: req.organization_id.trim().to_string(),
        roles: req.roles.iter().map(|r| r.to_string()).collect(),
        active: req.active,
        recorded_by: admin.id.clone(),
    };
    let position = state.auditor.account(&event).await?;
    state.accounts.apply(event);
    tracing::info!(user = %user_id, created, "account recorded");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"id": user_id, "position": position.encode()})),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    organization_id: Option<String>,
}

pub async fn list_users(
    State(state): State<AppState>,
    Caller(admin): Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&admin)?;
    let users: Vec<Value> = state
        .accounts
        .list(params.organization_id.as_deref())
        .into_iter()
        .map(|a| json!({"id": a.user_id, "email": a.email, "organization_id": a.organization_id, "roles": a.roles, "active": a.active}))
        .collect();
    Ok(Json(json!({"users": users})))
}
