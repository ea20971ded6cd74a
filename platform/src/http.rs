//! The JSON error body every service answers with, and the `/metrics` handler.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{Encoder, TextEncoder};

/// `{"error": "<code>", "message": "..."}` plus any extra fields. Messages never carry PHI.
pub fn error_body(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_with(status, code, message, serde_json::Map::new())
}

pub fn error_with(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), code.into());
    body.insert("message".into(), message.into().into());
    body.extend(extra);
    (status, Json(serde_json::Value::Object(body))).into_response()
}

/// Prometheus text format of the default registry.
pub async fn metrics() -> Response {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if encoder.encode(&prometheus::gather(), &mut buf).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        buf,
    )
        .into_response()
}
