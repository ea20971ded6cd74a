//! `PUT /v1/sources/{source_id}`: an administrator of the HIE operator registers or updates a
//! source (a source's key publishes records for its organization: not for a participant's admin).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use platform::accounts::AccountError;
use platform::auth::{Role, User};
use schemas::{now_micros, topics, SourceRegistered};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::sources::{key_digest, new_api_key};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    name: String,
    organization_id: String,
    feed: Feed,
    assigning_authority: String,
    #[serde(default)]
    data_elements: Vec<String>,
    #[serde(default)]
    part2: bool,
    /// SHA-256 of the certificate the source's MLLP connections present over TLS (hex, colons
    /// allowed): its pin.
    #[serde(default)]
    mllp_client_certificate_sha256: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Feed {
    Realtime,
    Batch,
    Both,
}

impl Feed {
    fn as_str(self) -> &'static str {
        match self {
            Feed::Realtime => "realtime",
            Feed::Batch => "batch",
            Feed::Both => "both",
        }
    }
}

/// The caller of a user-facing route: a valid token of an active account that matches it.
pub async fn user(state: &AppState, headers: &HeaderMap) -> Result<User, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = state
        .verifier
        .verify_header(auth)
        .map_err(|_| ApiError::Unauthorized("missing or invalid token"))?;
    state
        .accounts
        .admit_current(&user, ACCOUNT_PATIENCE)
        .await
        .map_err(|e| match e {
            AccountError::NotHonoured => {
                ApiError::Unauthorized("no active account matches this token")
            }
            AccountError::Loading => ApiError::NotReady("the account registry is still loading"),
        })?;
    Ok(user)
}

/// How long a token of an unknown account waits for the account registry to catch up.
const ACCOUNT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

fn valid_source_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub async fn put_source(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SourceRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = user(&state, &headers).await?;
    if !caller.has(Role::Admin) {
        return Err(ApiError::Forbidden(
            "admin_required",
            "only an admin may register sources".into(),
        ));
    }
    if !state.accounts.is_operator(&caller) {
        return Err(ApiError::Forbidden(
            "operator_required",
            "only an admin of the HIE operator may register sources".into(),
        ));
    }
    let Json(req) = body.map_err(ApiError::from_json)?;
    if !valid_source_id(&source_id) {
        return Err(ApiError::BadRequest(
            "invalid_source_id",
            "source ids are 1-64 of [A-Za-z0-9._-]".into(),
        ));
    }
    super::refuse_control_characters(&[
        ("name", &req.name),
        ("organization_id", &req.organization_id),
        ("assigning_authority", &req.assigning_authority),
    ])?;
    for (i, element) in req.data_elements.iter().enumerate() {
        super::refuse_control_characters(&[(&format!("data_elements[{i}]"), element)])?;
    }
    for (field, value) in [
        ("name", &req.name),
        ("organization_id", &req.organization_id),
        ("assigning_authority", &req.assigning_authority),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::BadRequest(
                "invalid_body",
                format!("{field} must not be empty"),
            ));
        }
    }
    let pin = match req.mllp_client_certificate_sha256.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(platform::tls::normalize_fingerprint(raw).ok_or_else(|| {
            ApiError::BadRequest(
                "invalid_body",
                "mllp_client_certificate_sha256 must be a SHA-256 in hex (64 digits, colons allowed)"
                    .into(),
            )
        })?),
    };
    if !state.registry.is_caught_up() {
        return Err(ApiError::NotReady("the source registry is still loading"));
    }

    let existing = state.registry.get(&source_id);
    let new_key = existing.is_none().then(new_api_key);
    let api_key_sha256 = match (&existing, &new_key) {
        (Some(s), _) => s.api_key_sha256.clone(),
        (None, Some(key)) => key_digest(key),
        (None, None) => unreachable!("a new source always gets a key"),
    };
    let event = SourceRegistered {
        event_id: uuid::Uuid::new_v4().to_string(),
        registered_at: now_micros(),
        source_id: source_id.clone(),
        name: req.name.trim().to_string(),
        organization_id: req.organization_id.trim().to_string(),
        feed: req.feed.as_str().to_string(),
        assigning_authority: req.assigning_authority.trim().to_string(),
        data_elements: req.data_elements,
        part2: req.part2,
        api_key_sha256,
        mllp_client_certificate_sha256: pin,
    };
    let position = state
        .publisher
        .publish(topics::SOURCES.name, &source_id, &event)
        .await?;
    state.registry.apply(event);
    tracing::info!(source = %source_id, created = new_key.is_some(), "source registered");
    Ok(match new_key {
        Some(key) => (
            StatusCode::CREATED,
            Json(json!({"id": source_id, "api_key": key, "position": position.encode()})),
        ),
        None => (
            StatusCode::OK,
            Json(json!({"id": source_id, "position": position.encode()})),
        ),
    })
}
