use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use super::AppState;

/// 200 when PostgreSQL answers and holds the views, the broker answered its last probe (every
/// 2 s: no read is served without its audit event on the broker) and the account registry has
/// caught up with the log; 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let db = crate::db::ping(&state.pool).await;
    let broker = state.broker.answers();
    let accounts = state.accounts.is_caught_up();
    let status = if db && broker && accounts {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"database": db, "broker": broker, "accounts": accounts})),
    )
}
