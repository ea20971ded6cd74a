use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde_json::json;

pub fn router(pool: Pool) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(platform::http::metrics))
        .layer(axum::middleware::from_fn(platform::http::observe))
        .with_state(pool)
}

/// 200 when PostgreSQL answers, 503 otherwise.
async fn healthz(State(pool): State<Pool>) -> (StatusCode, Json<serde_json::Value>) {
    let db = tokio::time::timeout(Duration::from_secs(2), async {
        pool.get().await.ok()?.query_one("SELECT 1", &[]).await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let status = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": db})))
}
