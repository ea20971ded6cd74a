use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde_json::json;

use crate::consume::Health;

pub fn router(pool: Pool, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(platform::http::metrics))
        .layer(axum::middleware::from_fn(platform::http::observe))
        .with_state((pool, health))
}

/// 200 when PostgreSQL answers and the views keep up with the log; 503 otherwise (events waiting
/// longer than `PROJECTOR_STALL_SECONDS` with none applied, or a gap in the log).
async fn healthz(
    State((pool, health)): State<(Pool, Health)>,
) -> (StatusCode, Json<serde_json::Value>) {
    let db = tokio::time::timeout(Duration::from_secs(2), async {
        pool.get().await.ok()?.query_one("SELECT 1", &[]).await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let problem = health.problem();
    let status = if db && problem.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"database": db, "projection": problem.unwrap_or("ok")})),
    )
}
