use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use schemas::Position;

use super::{ApiError, AppState};

/// Read-your-writes: with `X-Min-Position: <token>`, the request waits until the views include
/// that position, at most the configured timeout, then answers 503 `not_caught_up`.
pub struct CaughtUp;

impl FromRequestParts<AppState> for CaughtUp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get("x-min-position") else {
            return Ok(CaughtUp);
        };
        let token = raw.to_str().map_err(|_| bad())?;
        let position = Position::decode(token).map_err(|_| bad())?;
        wait_for(state, &position).await?;
        Ok(CaughtUp)
    }
}

/// Wait until the views include `position`, at most the configured timeout.
pub async fn wait_for(state: &AppState, position: &Position) -> Result<(), ApiError> {
    {
        if position.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + state.config.min_position_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if crate::db::includes(&state.pool, position).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ApiError::NotCaughtUp);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }
}

fn bad() -> ApiError {
    ApiError::BadRequest(
        "invalid_position",
        "X-Min-Position is not a position token from an ingest response".into(),
    )
}
