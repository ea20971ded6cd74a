use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use platform::auth::{Role, User};

use super::smart::Scopes;
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

/// A caller of the FHIR API: a user (as `Caller`), or an EHR client with an access token from
/// `POST /oauth/token` (SMART Backend Services), acting as a `system` user of its organization
/// (the client id as its user id) within the scopes granted.
pub struct FhirActor {
    pub user: User,
    /// `None` for a user: their roles decide.
    pub scopes: Option<Scopes>,
}

impl FromRequestParts<AppState> for FhirActor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(claims) =
            platform::auth::bearer(header).and_then(|t| state.access_tokens.verify(t))
        else {
            let Caller(user) = Caller::from_request_parts(parts, state).await?;
            return Ok(FhirActor { user, scopes: None });
        };
        if !state.clients.is_caught_up() {
            return Err(ApiError::NotReady);
        }
        // The registry is asked on every request: a client disabled, moved to another
        // organization or narrowed since the token was issued is refused at once.
        let scopes = Scopes::parse(&claims.scope);
        let honoured = state.clients.get(&claims.sub).is_some_and(|c| {
            c.active
                && c.organization_id == claims.org
                && scopes.within(&Scopes::parse(&c.scopes.join(" ")))
        });
        if !honoured {
            return Err(ApiError::Unauthorized(
                "this client is disabled or its registration changed; ask for a new token",
            ));
        }
        Ok(FhirActor {
            user: User {
                id: claims.sub,
                email: String::new(),
                org: claims.org,
                roles: vec![Role::System],
            },
            scopes: Some(scopes),
        })
    }
}
