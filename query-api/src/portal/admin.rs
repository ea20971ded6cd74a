//! Accounts for administrators: list, create or change (roles, e-mail, disable) through `PUT
//! /v1/users/{id}`' own handler, and temporary passwords (`POST /v1/users/{id}/temporary-password`,
//! also the API route's handler).

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use platform::auth::{Role, User};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::credentials;
use super::session::{SignedIn, Visit};
use super::{api_error, csrf, csrf_refused, page_with};
use crate::http::caller::Caller;
use crate::http::{ApiError, AppState};

/// Issue a temporary password for `user_id` as `admin`: event first, then the hash; e-mailed to
/// the account. Returns the password (shown once) and when it expires.
pub async fn issue_temporary(
    state: &AppState,
    admin: &User,
    user_id: &str,
) -> Result<(String, String), ApiError> {
    if !admin.has(Role::Admin) {
        return Err(ApiError::Forbidden(
            "admin_required",
            "only an admin manages accounts",
            None,
        ));
    }
    let account = state.accounts.get(user_id).ok_or(ApiError::NotFound)?;
    if !state.accounts.manages(admin, &account.organization_id) {
        return Err(ApiError::Forbidden(
            "other_organization",
            "an admin manages the accounts of their own organization only",
            None,
        ));
    }
    let password = credentials::temporary_password();
    let hash = credentials::hash(password.clone())
        .await
        .map_err(|_| ApiError::NotReady)?;
    let expires = SystemTime::now() + credentials::TEMPORARY_TTL;
    state
        .portal
        .record(user_id, "temporary_password_issued", &admin.id, "")
        .await?;
    state
        .portal
        .store
        .set(user_id, &hash, true, Some(expires))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "credential store");
            ApiError::NotReady
        })?;
    let expires_at = OffsetDateTime::from(expires)
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::from(expires))
        .format(&Rfc3339)
        .unwrap_or_default();
    let body = format!(
        "An administrator issued a temporary password for your HIE portal account {user_id}:\n\n    {password}\n\nIt works for one sign-in, until {expires_at}, at {}; you will then choose your own password.\n",
        state.portal.config.public_url
    );
    if let Err(e) = state
        .portal
        .mail(&account.email, "HIE portal: your temporary password", body)
        .await
    {
        // The administrator has the password on screen; the e-mail is a convenience.
        tracing::warn!(error = %e, "temporary password not e-mailed");
    }
    tracing::info!(user = %user_id, "temporary password issued");
    Ok((password, expires_at))
}

/// `POST /v1/users/{id}/temporary-password` (admin) → 201 `{"temporary_password", "expires_at"}`.
pub async fn temporary_password_api(
    State(state): State<AppState>,
    Caller(admin): Caller,
    Path(user_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (password, expires_at) = issue_temporary(&state, &admin, &user_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"temporary_password": password, "expires_at": expires_at})),
    ))
}

#[derive(Deserialize, Default, Clone)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    organization_id: String,
    /// Checkboxes, one field per role ticked.
    #[serde(default)]
    role: Vec<String>,
    #[serde(default)]
    active: Option<String>,
}

async fn accounts_page(
    state: &AppState,
    visit: &Visit,
    admin: &User,
    notice: Option<Markup>,
    error: Option<&str>,
    form: &AccountForm,
    status: StatusCode,
) -> Response {
    if !admin.has(Role::Admin) {
        return api_error(
            visit,
            ApiError::Forbidden("admin_required", "only an admin manages accounts", None),
        );
    }
    let params = serde_json::from_value(json!({})).expect("no parameters");
    let listed =
        crate::http::users::list_users(State(state.clone()), Caller(admin.clone()), Query(params))
            .await;
    let Json(body) = match listed {
        Ok(b) => b,
        Err(e) => return api_error(visit, e),
    };
    let users = body["users"].as_array().cloned().unwrap_or_default();
    let org = if form.organization_id.is_empty() {
        admin.org.clone()
    } else {
        form.organization_id.clone()
    };
    page_with(
        visit,
        status,
        "Accounts",
        html! {
            @if let Some(n) = notice { div.notice role="status" { (n) } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            section aria-labelledby="accounts-heading" {
                h2 #accounts-heading { "Accounts" }
                table {
                    thead { tr { th scope="col" { "Username" } th scope="col" { "E-mail" } th scope="col" { "Organization" } th scope="col" { "Roles" } th scope="col" { "Status" } th scope="col" { "Temporary password" } } }
                    tbody {
                        @for u in &users {
                            @let id = u["id"].as_str().unwrap_or_default();
                            @let roles: Vec<&str> = u["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                            tr {
                                td { (id) } td { (u["email"].as_str().unwrap_or_default()) } td { (u["organization_id"].as_str().unwrap_or_default()) }
                                td { (roles.join(", ")) }
                                td { @if u["active"] == true { "active" } @else { "disabled" } }
                                td {
                                    form method="post" action={ "/portal/admin/accounts/" (id) "/temporary-password" } {
                                        (csrf(visit))
                                        button type="submit" aria-label={ "Issue temporary password for " (id) } { "Issue temporary password" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="edit-heading" {
                h2 #edit-heading { "Create or change an account" }
                p { "An existing username changes that account. Untick \"Active\" to disable it: its sessions end at once." }
                form method="post" action="/portal/admin/accounts" {
                    (csrf(visit))
                    p { label for="username" { "Username" } input #username name="username" type="text" required value=(form.username); }
                    p { label for="email" { "E-mail" } input #email name="email" type="email" required value=(form.email); }
                    p { label for="organization_id" { "Organization" } input #organization_id name="organization_id" type="text" required value=(org); }
                    fieldset {
                        legend { "Roles" }
                        @for r in Role::ALL {
                            span.role {
                                input id={ "role-" (r.as_str()) } type="checkbox" name="role" value=(r.as_str()) checked[form.role.iter().any(|x| x == r.as_str())];
                                label for={ "role-" (r.as_str()) } { (r.as_str().replace('_', " ")) }
                            }
                        }
                    }
                    p.check { input #active type="checkbox" name="active" value="yes" checked[form.active.is_some() || form.username.is_empty()]; label for="active" { "Active" } }
                    p { button type="submit" { "Save account" } }
                }
            }
        },
    )
}

pub async fn accounts(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
) -> Response {
    accounts_page(
        &state,
        &visit,
        &user,
        None,
        None,
        &AccountForm::default(),
        StatusCode::OK,
    )
    .await
}

pub async fn save_account(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    // Repeated `role` fields: read the pairs by hand (serde_urlencoded has no sequences).
    let mut f = AccountForm::default();
    for (k, v) in form {
        match k.as_str() {
            "csrf" => f.csrf = v,
            "username" => f.username = v.trim().to_string(),
            "email" => f.email = v.trim().to_string(),
            "organization_id" => f.organization_id = v.trim().to_string(),
            "role" => f.role.push(v),
            "active" => f.active = Some(v),
            _ => {}
        }
    }
    if !visit.csrf_ok(&f.csrf) {
        return csrf_refused(&visit);
    }
    if f.role.is_empty() {
        return accounts_page(
            &state,
            &visit,
            &user,
            None,
            Some("Tick at least one role."),
            &f,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let req = serde_json::from_value(json!({
        "email": f.email, "organization_id": f.organization_id, "roles": f.role, "active": f.active.is_some(),
    }));
    let Ok(req) = req else {
        return accounts_page(
            &state,
            &visit,
            &user,
            None,
            Some("Unknown role."),
            &f,
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let saved = crate::http::users::put_user(
        State(state.clone()),
        Caller(user.clone()),
        Path(f.username.clone()),
        Ok(Json(req)),
    )
    .await;
    match saved {
        Ok((status, _)) => {
            let what = if status == StatusCode::CREATED {
                "created"
            } else {
                "saved"
            };
            let notice = html! { p { "Account " (f.username) " " (what) "." } };
            accounts_page(
                &state,
                &visit,
                &user,
                Some(notice),
                None,
                &AccountForm::default(),
                StatusCode::OK,
            )
            .await
        }
        Err(ApiError::Conflict(_, _)) => {
            let message = "This e-mail address is already used by another account: each account needs its own address (a shared or taken address is refused).";
            accounts_page(
                &state,
                &visit,
                &user,
                None,
                Some(message),
                &f,
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(ApiError::BadRequest(_, m)) => {
            accounts_page(
                &state,
                &visit,
                &user,
                None,
                Some(&m),
                &f,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(e) => api_error(&visit, e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn temporary_password_form(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(user_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    match issue_temporary(&state, &user, &user_id).await {
        Ok((password, expires_at)) => {
            let notice = html! {
                p { "Temporary password for " (user_id) ": " strong #temporary-password { (password) } }
                p { "It works for one sign-in until " (expires_at) " and has been e-mailed to the account's address. It is not shown again." }
            };
            accounts_page(&state, &visit, &user, Some(notice), None, &AccountForm::default(), StatusCode::OK).await
        }
        Err(e) => api_error(&visit, e),
    }
    .into_response()
}
