use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::caller::Caller;
use super::position::CaughtUp;
use super::{ApiError, AppState};

/// `GET /v1/sources`: the directory of sources, for any signed-in user.
pub async fn directory(
    State(state): State<AppState>,
    _caller: Caller,
    _: CaughtUp,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"sources": crate::db::sources(&state.pool).await?}),
    ))
}
