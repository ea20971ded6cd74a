use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::http::{error_body, error_with};

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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApiError::Unauthorized(_) => {
                error_body(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            ApiError::Forbidden(code, _, break_glass_allowed) => {
                let mut extra = serde_json::Map::new();
                if let Some(b) = break_glass_allowed {
                    extra.insert("break_glass_allowed".into(), b.into());
                }
                error_with(StatusCode::FORBIDDEN, code, message, extra)
            }
            ApiError::BadRequest(code, _) => error_body(StatusCode::BAD_REQUEST, code, message),
            ApiError::NotFound => error_body(StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Conflict(code, _) => error_body(StatusCode::CONFLICT, code, message),
            ApiError::NotReady => error_body(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message),
            ApiError::NotCaughtUp => {
                error_body(StatusCode::SERVICE_UNAVAILABLE, "not_caught_up", message)
            }
            ApiError::AuditUnavailable(e) => {
                tracing::error!(error = %e, "audit event not durable; request refused");
                error_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    message,
                )
            }
            ApiError::Database(e) => {
                tracing::error!(error = %e, "database error");
                error_body(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
        }
    }
}
