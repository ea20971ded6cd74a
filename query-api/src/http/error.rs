use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::http::error_with;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{1}")]
    Forbidden(&'static str, &'static str, Option<bool>),
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("no such patient")]
    NotFound,
    #[error("{1}")]
    Conflict(&'static str, &'static str),
    #[error("starting up: the account registry is still loading")]
    NotReady,
    #[error("the views have not caught up with the requested position yet; retry")]
    NotCaughtUp,
    #[error("the database is unavailable")]
    Database(#[from] DbError),
    #[error("the audit trail is unavailable: nothing is served until it is back")]
    AuditUnavailable(#[from] crate::audit::AuditError),
}

impl ApiError {
    /// The status and error code, the same at the JSON edge (`/v1`) and the FHIR edge (`/fhir`,
    /// where the code goes into the `OperationOutcome`). Logs the failures of dependencies once.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(code, _, _) => (StatusCode::FORBIDDEN, code),
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(code, _) => (StatusCode::CONFLICT, code),
            ApiError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::NotCaughtUp => (StatusCode::SERVICE_UNAVAILABLE, "not_caught_up"),
            ApiError::AuditUnavailable(e) => {
                tracing::error!(error = %e, "audit event not durable; request refused");
                (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
            }
            ApiError::Database(e) => {
                tracing::error!(error = %e, "database error");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        }
    }

    /// Whether the caller may break the glass, on a consent refusal.
    pub fn break_glass_allowed(&self) -> Option<bool> {
        match self {
            ApiError::Forbidden(_, _, allowed) => *allowed,
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut extra = serde_json::Map::new();
        if let Some(b) = self.break_glass_allowed() {
            extra.insert("break_glass_allowed".into(), b.into());
        }
        error_with(status, code, self.to_string(), extra)
    }
}
