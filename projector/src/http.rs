use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde_json::json;

use crate::health::Health;

pub fn router(pool: Pool, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(platform::http::metrics))
        .layer(axum::middleware::from_fn(platform::http::observe))
        .with_state((pool, health))
}

/// 200 when PostgreSQL answers and the views keep up with the log; 503 otherwise: the log is not
/// the one the views were built from (`another_log`, `offsets_beyond_end`, `another_cluster`), a
/// gap in the log, or events waiting longer than `PROJECTOR_STALL_SECONDS` with none applied
/// (`stalled`); `partitions` names each partition concerned with its next and end offsets.
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
    let (projection, partitions) = match problem {
        Some(p) => (p.reason, p.details),
        None => ("ok", vec![]),
    };
    (
        status,
        Json(json!({"database": db, "projection": projection, "partitions": partitions})),
    )
}
