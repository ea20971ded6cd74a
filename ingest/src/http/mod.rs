//! Ingest's HTTP API (API.md, "Ingest"): one file per route group.

mod consents;
mod error;
mod fhir;
mod health;
mod ndjson;
mod sources;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use platform::auth::Verifier;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;

use crate::publish::Publisher;
use crate::sources::Registry;
use crate::Config;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub publisher: Publisher,
    pub registry: Registry,
    pub verifier: Verifier,
    pub accounts: platform::accounts::Accounts,
    pub broker: platform::broker_watch::BrokerWatch,
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let limits = &state.config.limits;
    // One limit shared by every write route (a layer per route would count each apart); over
    // it, 503 at once rather than a queue. `/healthz` and `/metrics` stay outside it.
    let writes = Router::new()
        .route("/v1/sources/{source_id}", put(sources::put_source))
        .route("/v1/sources/{source_id}/fhir", post(fhir::post_fhir))
        .route("/v1/consents", post(consents::post_consent))
        .layer(DefaultBodyLimit::max(limit))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(
                    limits.http_max_concurrent_requests,
                )),
        );
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(platform::http::metrics))
        .merge(writes)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.http_request_timeout,
        ))
        .layer(axum::middleware::from_fn(platform::http::observe))
        .with_state(state)
}

async fn overloaded(_: tower::BoxError) -> Response {
    let mut response = platform::http::error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in progress (INGEST_HTTP_MAX_CONCURRENT_REQUESTS): retry later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A consent or a source registration is refused whole (400) when a field holds a control
/// character FHIR forbids: stored, it would be refused by the views (and a consent set aside
/// withholds its patient's data). The error names the field, never the value.
pub(crate) fn refuse_control_characters(fields: &[(&str, &str)]) -> Result<(), ApiError> {
    match fields
        .iter()
        .find(|(_, value)| value.chars().any(crate::fhir::control::forbidden))
    {
        Some((field, _)) => Err(ApiError::BadRequest(
            "invalid_body",
            format!("{field} holds a control character (U+0000-U+001F other than tab, CR, LF)"),
        )),
        None => Ok(()),
    }
}
