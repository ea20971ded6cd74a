//! SMART Backend Services (SMART App Launch 2.x): `GET /.well-known/smart-configuration` (also
//! under `/fhir/`, where SMART clients look) and `POST /oauth/token`, the `client_credentials`
//! grant with a `private_key_jwt` assertion (RFC 7523). Refusals are OAuth errors (RFC 6749
//! §5.2): `invalid_request`, `invalid_client`, `invalid_scope`, `unsupported_grant_type`.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use platform::clients::{ClientAuthError, ACCESS_TOKEN_SECONDS};
use serde::Deserialize;
use serde_json::{json, Value};

use super::fhir::origin;
use super::smart::Scopes;
use super::AppState;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `GET /.well-known/smart-configuration`: what a backend client needs to get a token.
pub async fn smart_configuration(headers: HeaderMap) -> Json<Value> {
    let origin = origin(&headers);
    Json(json!({
        "issuer": origin,
        "token_endpoint": format!("{origin}/oauth/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.rs", "system/*.read"],
        "capabilities": ["client-confidential-asymmetric"],
        "code_challenge_methods_supported": [],
    }))
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
}

/// An OAuth error answer: `{"error", "error_description"}`, never cached.
struct OAuthError(StatusCode, &'static str, String);

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let OAuthError(status, error, description) = self;
        let mut response = (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
        response
            .headers_mut()
            .insert(CACHE_CONTROL, "no-store".parse().expect("a header value"));
        response
    }
}

fn bad(error: &'static str, description: &str) -> OAuthError {
    OAuthError(StatusCode::BAD_REQUEST, error, description.to_string())
}

/// `POST /oauth/token` (`application/x-www-form-urlencoded`).
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    match issue(&state, &headers, form) {
        Ok(body) => {
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, "no-store".parse().expect("a header value"));
            response
        }
        Err(e) => e.into_response(),
    }
}

fn issue(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Result<Value, OAuthError> {
    let Ok(Form(req)) = form else {
        return Err(bad(
            "invalid_request",
            "send an application/x-www-form-urlencoded body",
        ));
    };
    if req.grant_type.as_deref() != Some("client_credentials") {
        return Err(bad(
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        ));
    }
    if req.client_assertion_type.as_deref() != Some(JWT_BEARER) {
        return Err(bad(
            "invalid_request",
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
    }
    let Some(assertion) = req.client_assertion.filter(|a| !a.is_empty()) else {
        return Err(bad("invalid_request", "client_assertion is required"));
    };
    let requested = Scopes::parse(req.scope.as_deref().unwrap_or(""));
    if requested.is_empty() {
        return Err(bad(
            "invalid_scope",
            "scope must name system read scopes, e.g. system/*.rs or system/Observation.rs",
        ));
    }
    // The token endpoint's URL as the client addressed it, over either scheme (TLS may end at
    // a proxy that does not say so).
    let host_path = origin(headers)
        .split_once("://")
        .map(|(_, rest)| format!("{rest}/oauth/token"))
        .unwrap_or_default();
    let token_urls = [
        format!("https://{host_path}"),
        format!("http://{host_path}"),
    ];
    let client = state
        .clients
        .verify_assertion(&assertion, &token_urls)
        .map_err(|e| match e {
            ClientAuthError::Loading | ClientAuthError::Busy => OAuthError(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                e.to_string(),
            ),
            e => OAuthError(StatusCode::UNAUTHORIZED, "invalid_client", e.to_string()),
        })?;
    let granted = Scopes::grant(&requested, &Scopes::parse(&client.scopes.join(" ")));
    if granted.is_empty() {
        return Err(bad(
            "invalid_scope",
            "none of the scopes asked for is allowed to this client",
        ));
    }
    let scope = granted.to_string();
    let access_token = state.access_tokens.issue(&client, &scope);
    tracing::info!(client = %client.id, organization = %client.organization_id, scope = %scope, "access token issued");
    Ok(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "scope": scope,
    }))
}
