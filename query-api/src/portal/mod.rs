//! The clinician portal (API.md "Portal"): server-rendered HTML (`maud`) under `/portal/`, served
//! by the query API. Every clinical read goes through `http::records::read_records` and every
//! search through `/v1/patients`' own handler, so the portal is audited exactly like the API. No
//! PHI in any URL: searches are POSTed, patients are addressed by their opaque enterprise id.

mod admin;
pub use admin::temporary_password_api;
mod auth;
mod consent;
pub mod credentials;
mod mail;
mod oversight;
mod patients;
pub mod session;

use std::path::PathBuf;
use std::time::Duration;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use platform::auth::Role;
use schemas::{now_micros, CredentialRecorded};

use crate::http::{ApiError, AppState};
pub use credentials::Store;
use session::{Sessions, Visit};

/// The portal's settings (`QUERY_PORTAL_*`, `QUERY_SMTP_URL`, `QUERY_MAIL_FROM`).
#[derive(Clone, Debug)]
pub struct PortalConfig {
    /// Idle time after which a session ends (HIPAA automatic logoff): 15 minutes.
    pub idle_timeout: Duration,
    /// Where e-mail goes when no SMTP server is configured.
    pub outbox: PathBuf,
    /// `smtp://` or `smtps://` URL (credentials in it are never printed).
    pub smtp_url: Option<platform::Secret<String>>,
    pub mail_from: String,
    /// The portal's address as users reach it, for links in e-mail (`http://127.0.0.1:8080/portal/`).
    pub public_url: String,
    /// The credential store's database when the query API reads a replica
    /// (`QUERY_PORTAL_DATABASE_URL`: it must be writable); else `DATABASE_URL`.
    pub database_url: Option<platform::Secret<String>>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            idle_timeout: Duration::from_secs(15 * 60),
            outbox: PathBuf::from("outbox"),
            smtp_url: None,
            mail_from: "HIE portal <portal@hie.example>".into(),
            public_url: "http://127.0.0.1:8080/portal/".into(),
            database_url: None,
        }
    }
}

#[derive(Clone)]
pub struct Portal {
    pub config: PortalConfig,
    pub sessions: Sessions,
    pub store: Store,
    mailer: mail::Mailer,
    auditor: crate::audit::Auditor,
}

impl Portal {
    pub fn new(
        config: PortalConfig,
        pool: deadpool_postgres::Pool,
        auditor: crate::audit::Auditor,
    ) -> Result<Portal, mail::MailError> {
        let mailer = mail::Mailer::new(
            config.smtp_url.as_ref().map(|s| s.expose().as_str()),
            config.outbox.clone(),
        )?;
        Ok(Portal {
            config,
            sessions: Sessions::default(),
            store: Store::new(pool),
            mailer,
            auditor,
        })
    }

    /// Record a credential event (`hie.credentials`); returns once durable.
    pub async fn record(
        &self,
        user_id: &str,
        action: &str,
        by: &str,
        detail: &str,
    ) -> Result<(), crate::audit::AuditError> {
        let event = CredentialRecorded {
            event_id: uuid::Uuid::new_v4().to_string(),
            at: now_micros(),
            user_id: user_id.to_string(),
            action: action.to_string(),
            by: by.to_string(),
            detail: detail.to_string(),
        };
        self.auditor.credential(&event).await.map(|_| ())
    }

    /// Record an event without waiting (a session found timed out: nothing is served by it).
    pub fn record_later(&self, user_id: &str, action: &str, by: &str, detail: &str) {
        let (portal, user_id, action, by, detail) = (
            self.clone(),
            user_id.to_string(),
            action.to_string(),
            by.to_string(),
            detail.to_string(),
        );
        tokio::spawn(async move {
            if let Err(e) = portal.record(&user_id, &action, &by, &detail).await {
                tracing::warn!(error = %e, action, "credential event not recorded");
            }
        });
    }

    pub async fn mail(&self, to: &str, subject: &str, body: String) -> Result<(), mail::MailError> {
        self.mailer
            .send(&self.config.mail_from, to, subject, body)
            .await
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(auth::home))
        .route("/portal/", get(auth::home))
        .route("/portal/static/portal.css", get(css))
        .route("/portal/static/portal.js", get(js))
        .route(
            "/portal/sign-in",
            get(auth::sign_in_page).post(auth::sign_in),
        )
        .route(
            "/portal/set-password",
            get(auth::set_password_page).post(auth::set_password),
        )
        .route(
            "/portal/forgot-password",
            get(auth::forgot_page).post(auth::forgot),
        )
        .route(
            "/portal/reset/{token}",
            get(auth::reset_page).post(auth::reset),
        )
        .route("/portal/sign-out", post(auth::sign_out))
        .route("/portal/account", get(auth::account))
        .route(
            "/portal/patients",
            get(patients::search_page).post(patients::search),
        )
        .route("/portal/patients/{id}", get(patients::patient))
        .route("/portal/patients/{id}/live", get(patients::live))
        .route("/portal/patients/{id}/section", get(patients::section))
        .route(
            "/portal/patients/{id}/records/{kind}/{key}",
            get(patients::record_popup),
        )
        .route(
            "/portal/patients/{id}/break-glass",
            get(patients::break_glass_page).post(patients::break_glass),
        )
        .route(
            "/portal/patients/{id}/access-log",
            get(oversight::access_log),
        )
        .route(
            "/portal/patients/{id}/consent",
            get(consent::consent_page).post(consent::record_consent),
        )
        .route(
            "/portal/reports/break-glass",
            get(oversight::break_glass_report),
        )
        .route("/portal/directory", get(oversight::directory))
        .route(
            "/portal/admin/accounts",
            get(admin::accounts).post(admin::save_account),
        )
        .route(
            "/portal/admin/accounts/{id}/temporary-password",
            post(admin::temporary_password_form),
        )
        .route("/portal/{*rest}", get(not_found))
}

async fn css() -> Response {
    asset("text/css", include_str!("static/portal.css"))
}

async fn js() -> Response {
    asset("text/javascript", include_str!("static/portal.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "max-age=300")],
        body,
    )
        .into_response()
}

async fn not_found(visit: Visit) -> Response {
    error_page(&visit, StatusCode::NOT_FOUND, "This page does not exist.")
}

/// A whole page: the navigation for the signed-in user's roles, the title, the content. Pages are
/// never cached (they hold PHI) and may not be framed.
pub fn page(visit: &Visit, title: &str, body: Markup) -> Response {
    page_with(visit, StatusCode::OK, title, body)
}

pub fn page_with(visit: &Visit, status: StatusCode, title: &str, body: Markup) -> Response {
    let idle = visit.user.as_ref().map(|_| visit.idle.as_secs());
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · HIE portal" }
                link rel="stylesheet" href="/portal/static/portal.css";
                script src="/portal/static/portal.js" defer {}
            }
            body data-idle-seconds=[idle] {
                a.skip href="#main" { "Skip to content" }
                header {
                    p.brand { "HIE clinician portal" }
                    @if let Some(user) = &visit.user {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/portal/patients" { "Patient search" } }
                                li { a href="/portal/directory" { "Directory" } }
                                @if user.has(Role::PrivacyOfficer) || user.has(Role::Admin) {
                                    li { a href="/portal/reports/break-glass" { "Break-the-Glass report" } }
                                }
                                @if user.has(Role::Admin) {
                                    li { a href="/portal/admin/accounts" { "Accounts" } }
                                }
                                li { a href="/portal/account" { "My account" } }
                                li {
                                    form method="post" action="/portal/sign-out" {
                                        (csrf(visit))
                                        button type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
                footer { p { "Every access to patient data is recorded." } }
            }
        }
    };
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, "no-store".parse().expect("header"));
    headers.insert("x-frame-options", "DENY".parse().expect("header"));
    // A reset link's token is in its path: never send it on.
    headers.insert("referrer-policy", "no-referrer".parse().expect("header"));
    headers.insert(
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
            .parse()
            .expect("header"),
    );
    visit.finish(response)
}

/// The hidden CSRF field every form carries.
pub fn csrf(visit: &Visit) -> Markup {
    html! { input type="hidden" name="csrf" value=(visit.csrf); }
}

/// An error page: what went wrong in fixed words (never PHI), and a reference (the request's
/// trace id) and the time to quote to support; the same reference is in the log.
pub fn error_page(visit: &Visit, status: StatusCode, message: &str) -> Response {
    let span = tracing::Span::current();
    let reference = platform::telemetry::traceparent(&span)
        .and_then(|t| platform::telemetry::trace_id_of(&t))
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let now = time::OffsetDateTime::now_utc();
    let at = now
        .replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    tracing::warn!(status = status.as_u16(), reference = %reference, message, "portal error page");
    let title = if status.is_server_error() {
        "Something went wrong"
    } else {
        "This cannot be done"
    };
    page_with(
        visit,
        status,
        title,
        html! {
            p.error role="alert" { (message) }
            dl.reference {
                dt { "Reference" } dd #reference { (reference) }
                dt { "Time" } dd #time { (at) }
            }
            p { "Quote the reference and the time to support." }
            p { a href="/portal/" { "Back to the portal" } }
        },
    )
}

/// Render an API error as a page, in the API's own fixed words.
pub fn api_error(visit: &Visit, e: ApiError) -> Response {
    let (status, _) = e.status_and_code();
    let message = match &e {
        ApiError::Forbidden(_, m, _) => m.to_string(),
        ApiError::BadRequest(_, m) => m.clone(),
        ApiError::NotFound => "No such patient.".into(),
        ApiError::Conflict(_, m) => m.to_string(),
        ApiError::Unauthorized(_) => "Please sign in again.".into(),
        _ => {
            "The service is unavailable at the moment; nothing was shown. Try again shortly.".into()
        }
    };
    error_page(visit, status, &message)
}

/// The refusal of a form whose CSRF token does not match the session's.
pub fn csrf_refused(visit: &Visit) -> Response {
    error_page(
        visit,
        StatusCode::FORBIDDEN,
        "This form was not sent from this portal's own page, or it has expired. Nothing was done: open the page again and resend it.",
    )
}
