//! Signing in and out, temporary passwords, "Forgot password", and "My account".

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::credentials::{self, decoy_hash};
use super::session::{cookie, SignedIn, Visit};
use super::{csrf, csrf_refused, error_page, page, page_with};
use crate::http::AppState;

pub async fn home(visit: Visit) -> Response {
    match (&visit.user, visit.must_set_password) {
        (Some(_), true) => visit.redirect("/portal/set-password"),
        (Some(_), false) => visit.redirect("/portal/patients"),
        (None, _) if visit.timed_out => visit.redirect("/portal/sign-in?ended=idle"),
        (None, _) => visit.redirect("/portal/sign-in"),
    }
}

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    ended: Option<String>,
}

fn sign_in_form(visit: &Visit, notice: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        @if let Some(n) = notice { p.notice role="status" { (n) } }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action="/portal/sign-in" {
            (csrf(visit))
            p { label for="username" { "Username" } input #username name="username" type="text" autocomplete="username" required; }
            p { label for="password" { "Password" } input #password name="password" type="password" autocomplete="current-password" required; }
            p { button type="submit" { "Sign in" } }
        }
        p { a href="/portal/forgot-password" { "Forgot password" } }
    }
}

pub async fn sign_in_page(visit: Visit, Query(q): Query<SignInQuery>) -> Response {
    let idle = format!(
        "You were signed out after {} without activity. Please sign in again.",
        visit.idle_words()
    );
    let notice = match q.ended.as_deref() {
        Some("idle") => Some(idle.as_str()),
        Some("out") => Some("You have signed out."),
        Some("password") => Some("Your password is set. Please sign in with it."),
        _ if visit.timed_out => Some(idle.as_str()),
        _ => None,
    };
    page(&visit, "Sign in", sign_in_form(&visit, notice, None))
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

const WRONG: &str = "The username or password is not correct.";

pub async fn sign_in(
    State(state): State<AppState>,
    visit: Visit,
    Form(form): Form<SignInForm>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    let portal = &state.portal;
    let username = form.username.trim().to_string();
    let refuse = |status: StatusCode, message: &str| {
        page_with(
            &visit,
            status,
            "Sign in",
            sign_in_form(&visit, None, Some(message)),
        )
    };
    let account = state.accounts.get(&username).filter(|a| a.active);
    let credential = match &account {
        Some(_) => match portal.store.get(&username).await {
            Ok(c) => c,
            Err(e) => return unavailable(&visit, e),
        },
        None => None,
    };
    let Some(credential) = credential else {
        // Unknown, disabled or without a password: as slow as a real check, and as vague.
        let _ = credentials::verify(form.password, vec![decoy_hash()]).await;
        if let Err(e) = portal
            .record(
                "(unknown)",
                "sign_in_failed",
                "(unknown)",
                "no such active account with a password",
            )
            .await
        {
            return unavailable(&visit, e);
        }
        return refuse(StatusCode::UNAUTHORIZED, WRONG);
    };
    let now = SystemTime::now();
    if let Some(until) = credential.locked_until.filter(|u| *u > now) {
        let wait = until.duration_since(now).unwrap_or_default().as_secs() + 1;
        if let Err(e) = portal
            .record(&username, "sign_in_failed", &username, "locked")
            .await
        {
            return unavailable(&visit, e);
        }
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed sign-ins: this account is locked for {wait} more seconds."),
        );
    }
    let matches = credentials::verify(form.password, vec![credential.hash.clone()]).await;
    let expired = credential.temporary && credential.expires_at.is_some_and(|e| e <= now);
    if !matches || expired {
        let (failures, delay) = match portal.store.failed(&username).await {
            Ok(f) => f,
            Err(e) => return unavailable(&visit, e),
        };
        let detail = format!("failures={failures} locked_seconds={}", delay.as_secs());
        if let Err(e) = portal
            .record(&username, "sign_in_failed", &username, &detail)
            .await
        {
            return unavailable(&visit, e);
        }
        if !delay.is_zero() {
            let _ = portal.record(&username, "locked", &username, &detail).await;
        }
        let message = if matches && expired {
            "This temporary password has expired: ask your administrator for a new one."
        } else {
            WRONG
        };
        return refuse(StatusCode::UNAUTHORIZED, message);
    }
    let detail = if credential.temporary {
        "temporary password"
    } else {
        "password"
    };
    if let Err(e) = portal
        .record(&username, "signed_in", &username, detail)
        .await
    {
        return unavailable(&visit, e);
    }
    if let Err(e) = portal.store.succeeded(&username).await {
        return unavailable(&visit, e);
    }
    let (sid, _) = portal
        .sessions
        .sign_in(&visit.sid, &username, credential.temporary);
    let to = if credential.temporary {
        "/portal/set-password"
    } else {
        "/portal/patients"
    };
    let mut response = super::session::see_other(to);
    response.headers_mut().append(
        axum::http::header::SET_COOKIE,
        cookie(&sid, state.config.tls.is_some()),
    );
    response
}

fn unavailable(visit: &Visit, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "portal sign-in dependency failed");
    error_page(
        visit,
        StatusCode::SERVICE_UNAVAILABLE,
        "Signing in is unavailable at the moment. Try again shortly.",
    )
}

fn new_password_form(visit: &Visit, action: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        p { "Choose a password of at least 12 characters that does not contain your username or e-mail address and is not one of your previous passwords." }
        form method="post" action=(action) {
            (csrf(visit))
            p { label for="new-password" { "New password" } input #new-password name="new_password" type="password" autocomplete="new-password" required minlength="12"; }
            p { label for="confirm-password" { "Confirm new password" } input #confirm-password name="confirm_password" type="password" autocomplete="new-password" required minlength="12"; }
            p { button type="submit" { "Set password" } }
        }
    }
}

pub async fn set_password_page(visit: Visit) -> Response {
    if visit.user.is_none() {
        return visit.redirect("/portal/sign-in");
    }
    page(
        &visit,
        "Set a new password",
        new_password_form(&visit, "/portal/set-password", None),
    )
}

#[derive(Deserialize)]
pub struct NewPasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

/// Check and store a new password for `user_id`; `Err` is the message to show.
async fn change_password(
    state: &AppState,
    user_id: &str,
    form: &NewPasswordForm,
) -> Result<(), String> {
    if form.new_password != form.confirm_password {
        return Err("The two passwords are not the same.".into());
    }
    let email = state
        .accounts
        .get(user_id)
        .map(|a| a.email)
        .unwrap_or_default();
    credentials::policy(&form.new_password, user_id, &email).map_err(str::to_string)?;
    let unavailable =
        |_| "Setting a password is unavailable at the moment. Try again shortly.".to_string();
    let current = state.portal.store.get(user_id).await.map_err(unavailable)?;
    if let Some(c) = current {
        let mut old = c.previous;
        if !c.temporary {
            old.push(c.hash);
        }
        if credentials::verify(form.new_password.clone(), old).await {
            return Err("The new password must not be one of your previous passwords.".into());
        }
    }
    let hash = credentials::hash(form.new_password.clone())
        .await
        .map_err(unavailable)?;
    state
        .portal
        .record(user_id, "password_set", user_id, "by the user")
        .await
        .map_err(|_| {
            "Setting a password is unavailable at the moment. Try again shortly.".to_string()
        })?;
    state
        .portal
        .store
        .set(user_id, &hash, false, None)
        .await
        .map_err(unavailable)?;
    Ok(())
}

pub async fn set_password(
    State(state): State<AppState>,
    visit: Visit,
    Form(form): Form<NewPasswordForm>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    let Some(user) = visit.user.clone() else {
        return visit.redirect("/portal/sign-in");
    };
    match change_password(&state, &user.id, &form).await {
        Ok(()) => {
            state.portal.sessions.password_set(&visit.sid);
            visit.redirect("/portal/patients")
        }
        Err(message) => page_with(
            &visit,
            StatusCode::BAD_REQUEST,
            "Set a new password",
            new_password_form(&visit, "/portal/set-password", Some(&message)),
        ),
    }
}

fn forgot_form(visit: &Visit) -> Markup {
    html! {
        p { "Enter your username: a link to choose a new password will be sent to your account's e-mail address. The link works once, within an hour." }
        form method="post" action="/portal/forgot-password" {
            (csrf(visit))
            p { label for="username" { "Username" } input #username name="username" type="text" autocomplete="username" required; }
            p { button type="submit" { "Send reset link" } }
        }
        p { a href="/portal/sign-in" { "Back to sign in" } }
    }
}

pub async fn forgot_page(visit: Visit) -> Response {
    page(&visit, "Forgot password", forgot_form(&visit))
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
}

pub async fn forgot(
    State(state): State<AppState>,
    visit: Visit,
    Form(form): Form<ForgotForm>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    let username = form.username.trim();
    // The same answer whether or not the account exists.
    if let Some(account) = state.accounts.get(username).filter(|a| a.active) {
        let portal = &state.portal;
        let sent = async {
            portal
                .record(username, "reset_requested", username, "link e-mailed")
                .await
                .map_err(|e| e.to_string())?;
            let token = portal
                .store
                .new_reset(username)
                .await
                .map_err(|e| e.to_string())?;
            let link = format!("{}reset/{token}", portal.config.public_url);
            let body = format!(
                "A new password was asked for the HIE portal account {username}.\n\nChoose it here (the link works once, within an hour):\n{link}\n\nIf you did not ask for this, ignore this message and tell your administrator.\n"
            );
            portal
                .mail(&account.email, "HIE portal: choose a new password", body)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = sent.await {
            return unavailable(&visit, e);
        }
    }
    page(
        &visit,
        "Forgot password",
        html! {
            p.notice role="status" { "If this account exists, a link to choose a new password has been sent to its e-mail address." }
            p { a href="/portal/sign-in" { "Back to sign in" } }
        },
    )
}

pub async fn reset_page(
    State(state): State<AppState>,
    visit: Visit,
    Path(token): Path<String>,
) -> Response {
    match state.portal.store.reset_user(&token).await {
        Ok(Some(_)) => page(&visit, "Choose a new password", new_password_form(&visit, &format!("/portal/reset/{token}"), None)),
        Ok(None) => error_page(&visit, StatusCode::NOT_FOUND, "This link has expired or was already used. Ask for a new one with \"Forgot password\"."),
        Err(e) => unavailable(&visit, e),
    }
}

pub async fn reset(
    State(state): State<AppState>,
    visit: Visit,
    Path(token): Path<String>,
    Form(form): Form<NewPasswordForm>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    let user_id = match state.portal.store.reset_user(&token).await {
        Ok(Some(u)) => u,
        Ok(None) => return error_page(&visit, StatusCode::NOT_FOUND, "This link has expired or was already used. Ask for a new one with \"Forgot password\"."),
        Err(e) => return unavailable(&visit, e),
    };
    if let Err(message) = change_password(&state, &user_id, &form).await {
        return page_with(
            &visit,
            StatusCode::BAD_REQUEST,
            "Choose a new password",
            new_password_form(&visit, &format!("/portal/reset/{token}"), Some(&message)),
        );
    }
    match state.portal.store.use_reset(&token).await {
        Ok(_) => {
            let _ = state
                .portal
                .record(&user_id, "reset_used", &user_id, "password set")
                .await;
            visit.redirect("/portal/sign-in?ended=password")
        }
        Err(e) => unavailable(&visit, e),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    visit: Visit,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if !visit.csrf_ok(&form.csrf) {
        return csrf_refused(&visit);
    }
    if let Some(user) = &visit.user {
        state
            .portal
            .record_later(&user.id, "signed_out", &user.id, "by the user");
    }
    state.portal.sessions.end(&visit.sid);
    super::session::see_other("/portal/sign-in?ended=out")
}

pub async fn account(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
) -> Response {
    let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
    let operator = state.accounts.is_operator(&user);
    page(
        &visit,
        "My account",
        html! {
            dl.account {
                dt { "Username" } dd { (user.id) }
                dt { "E-mail" } dd { (user.email) }
                dt { "Organization" } dd { (user.org) @if operator { " (the HIE operator)" } }
                dt { "Roles" } dd { (roles.join(", ")) }
            }
            p { "Your session ends after " (visit.idle_words()) " without activity. To change your password, sign out and use \"Forgot password\"." }
        },
    )
}
