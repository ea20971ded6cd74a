//! `PUT /v1/users/{id}` and `GET /v1/users`: the account registry, for administrators: each of
//! their own organization's accounts, the HIE operator's admins every organization's. Changes
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
use super::patients::non_empty;
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

/// 403 unless `admin` administers `organization`.
fn require_manages(
    state: &AppState,
    admin: &platform::auth::User,
    organization: &str,
) -> Result<(), ApiError> {
    if state.accounts.manages(admin, organization) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "other_organization",
            "an admin manages the accounts of their own organization only",
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
    let organization = req.organization_id.trim();
    // Both the account's new organization and, for an existing account, its current one: an
    // admin can neither place an account elsewhere nor take over another organization's.
    require_manages(&state, &admin, organization)?;
    let existing = state.accounts.get(&user_id);
    if let Some(account) = &existing {
        require_manages(&state, &admin, &account.organization_id)?;
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
    let created = existing.is_none();
    let event = AccountRecorded {
        event_id: uuid::Uuid::new_v4().to_string(),
        at: now_micros(),
        user_id: user_id.clone(),
        email,
        organization_id: organization.to_string(),
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
    // An organization's admin lists their own organization; the operator's any or all.
    let organization = match non_empty(params.organization_id) {
        Some(org) => {
            require_manages(&state, &admin, &org)?;
            Some(org)
        }
        None if state.accounts.is_operator(&admin) => None,
        None => Some(admin.org.clone()),
    };
    let users: Vec<Value> = state
        .accounts
        .list(organization.as_deref())
        .into_iter()
        .map(|a| json!({"id": a.user_id, "email": a.email, "organization_id": a.organization_id, "roles": a.roles, "active": a.active}))
        .collect();
    Ok(Json(json!({"users": users})))
}
