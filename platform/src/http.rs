//! The JSON error body every service answers with, the `/metrics` handler, and the middleware
//! that traces and measures every request.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{
    register_histogram_vec, register_int_counter_vec, Encoder, HistogramVec, IntCounterVec,
    TextEncoder,
};
use tracing::Instrument;

use crate::telemetry::{continue_trace, traceparent, TRACEPARENT};

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

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "hie_http_requests_total",
        "HTTP requests answered, by route template (never a path with ids in it), method and status",
        &["route", "method", "status"]
    )
    .expect("metric registers once")
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "hie_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template and method",
        &["route", "method"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

/// The method as a metric label: the standard ones, else `other` (a client may send any token
/// as a method; labels come from closed sets only).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Middleware for every route (`Router::layer(axum::middleware::from_fn(platform::http::observe))`):
/// a span that continues the caller's W3C trace (or starts one), its `traceparent` on the
/// response, one access-log line, and the per-route request and latency metrics.
pub async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method()).to_owned();
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        trace_id = tracing::field::Empty
    );
    let parent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    continue_trace(&span, parent);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    REQUESTS
        .with_label_values(&[&route, &method, &status.to_string()])
        .inc();
    LATENCY
        .with_label_values(&[&route, &method])
        .observe(took.as_secs_f64());
    if let Some(value) = traceparent(&span).and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    span.in_scope(|| tracing::info!(status, ms = took.as_secs_f64() * 1e3, "request"));
    response
}
