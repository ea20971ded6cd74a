//! `POST /v1/sources/{source_id}/fhir`: Bundles and NDJSON from a source.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use schemas::{now_micros, SourceRegistered};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::fhir::{self, BundleKind, SourceContext};
use crate::intake::{self, Provenance};

pub async fn post_fhir(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let source = authenticate_source(&state, &source_id, &headers)?;
    let body = body.map_err(|r| ApiError::from_body(r, state.config.max_body_bytes))?;
    let parsed = match media_type(&headers).as_deref() {
        Some("application/fhir+json" | "application/json") | None => fhir::parse_bundle(&body),
        Some("application/fhir+ndjson" | "application/ndjson" | "application/x-ndjson") => fhir::parse_ndjson(&body),
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {other} is not accepted: send application/fhir+json or application/fhir+ndjson"
            )))
        }
    }
    .map_err(|e| ApiError::BadRequest("malformed_body", e.to_string()))?;

    let received_at = now_micros();
    let channel = if parsed.kind == BundleKind::Ndjson {
        "fhir_ndjson"
    } else {
        "fhir_bundle"
    };
    let message_id = parsed
        .message_id
        .clone()
        .unwrap_or_else(|| format!("urn:uuid:{}", uuid::Uuid::new_v4()));
    let ctx = SourceContext {
        source_id: source.source_id.clone(),
        assigning_authority: source.assigning_authority.clone(),
    };
    let normalized = fhir::normalize(parsed.entries, &ctx);

    let from = Provenance {
        source: &source,
        channel,
        message_id: &message_id,
        received_at,
    };
    let rejected_json: Vec<Value> = normalized
        .rejections
        .iter()
        .map(|r| json!({"index": r.index, "error": r.error}))
        .collect();

    if parsed.kind == BundleKind::Transaction && !normalized.rejections.is_empty() {
        intake::publish(&state.publisher, &from, Vec::new(), &normalized.rejections).await?;
        return Err(ApiError::TransactionRejected(Value::Array(rejected_json)));
    }

    let accepted = normalized.records.len();
    let position = intake::publish(
        &state.publisher,
        &from,
        normalized.records,
        &normalized.rejections,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": accepted,
            "rejected": rejected_json,
            "position": position.encode(),
        })),
    ))
}

fn authenticate_source(
    state: &AppState,
    source_id: &str,
    headers: &HeaderMap,
) -> Result<SourceRegistered, ApiError> {
    if !state.registry.is_caught_up() {
        return Err(ApiError::NotReady("the source registry is still loading"));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let key =
        platform::auth::bearer(auth).ok_or(ApiError::Unauthorized("missing source API key"))?;
    state
        .registry
        .authenticate(source_id, key)
        .ok_or(ApiError::Unauthorized("unknown source or wrong API key"))
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}
