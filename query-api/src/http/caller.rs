use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use platform::auth::User;

use super::{ApiError, AppState};
use platform::accounts::AccountError;

/// The verified user making the request; extracting it answers 401 for anyone else.
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let user = state
            .verifier
            .verify_header(header)
            .map_err(|_| ApiError::Unauthorized("missing or invalid token"))?;
        let patience = std::time::Duration::from_secs(2);
        match state.accounts.admit_current(&user, patience).await {
            Ok(()) => Ok(Caller(user)),
            Err(AccountError::NotHonoured) => Err(ApiError::Unauthorized(
                "no active account matches this token",
            )),
            Err(AccountError::Loading) => Err(ApiError::NotReady),
        }
    }
}
