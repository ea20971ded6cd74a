use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rdkafka::producer::Producer;
use serde_json::json;

use super::AppState;

/// 200 when the broker answers and the source and account registries have caught up, 503
/// otherwise.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let producer = state.publisher.producer().clone();
    let broker = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok()
    })
    .await
    .unwrap_or(false);
    let registry = state.registry.is_caught_up();
    let accounts = state.accounts.is_caught_up();
    let status = if broker && registry && accounts {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"broker": broker, "source_registry": registry, "accounts": accounts})),
    )
}
