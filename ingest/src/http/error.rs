use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use platform::http::{error_body, error_with};

use crate::publish::PublishError;

/// Every way an ingest request can fail, mapped once to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{1}")]
    Forbidden(&'static str, String),
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("transaction rejected")]
    TransactionRejected(serde_json::Value),
    #[error("the event log is unavailable; nothing was accepted, retry later")]
    Unavailable(#[from] PublishError),
    #[error("not ready: {0}")]
    NotReady(&'static str),
}

impl ApiError {
    pub fn from_body(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest("unreadable_body", rejection.body_text())
        }
    }

    pub fn from_json(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(0),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType("send application/json".into())
            }
            // serde's message names the field and the position, never a value from the body.
            _ => ApiError::BadRequest("invalid_body", rejection.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApiError::Unauthorized(_) => {
                error_body(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            ApiError::Forbidden(code, _) => error_body(StatusCode::FORBIDDEN, code, message),
            ApiError::BadRequest(code, _) => error_body(StatusCode::BAD_REQUEST, code, message),
            ApiError::UnsupportedMediaType(_) => error_body(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            ),
            ApiError::TooLarge(_) => {
                error_body(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
            }
            ApiError::TransactionRejected(rejected) => {
                let mut extra = serde_json::Map::new();
                extra.insert("rejected".into(), rejected);
                extra.insert("accepted".into(), 0.into());
                error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "transaction_rejected",
                    "a transaction Bundle is all-or-nothing: nothing was published",
                    extra,
                )
            }
            ApiError::Unavailable(PublishError::Overloaded { .. }) => {
                let mut r = error_body(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Unavailable(e) => {
                tracing::error!(error = %e, "publish failed");
                let mut r = error_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_unavailable",
                    message,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
            ApiError::NotReady(_) => {
                error_body(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
            }
        }
    }
}
