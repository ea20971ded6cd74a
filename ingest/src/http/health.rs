use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use super::AppState;

/// 200 when the broker answered its last probe (every 2 s, `platform::broker_watch`) and the
/// source and account registries have caught up, 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let broker = state.broker.answers();
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
