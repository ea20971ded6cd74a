//! Ingest's HTTP API (API.md, "Ingest"): one file per route group.

mod consents;
mod error;
mod fhir;
mod health;
mod sources;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use platform::auth::Verifier;

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
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(platform::http::metrics))
        .route("/v1/sources/{source_id}", put(sources::put_source))
        .route("/v1/sources/{source_id}/fhir", post(fhir::post_fhir))
        .route("/v1/consents", post(consents::post_consent))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(platform::http::observe))
        .with_state(state)
}
