//! `POST /v1/sources/{source_id}/fhir`: Bundles and NDJSON from a source.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use schemas::{now_micros, topics, SourceRegistered};
use serde_json::{json, Value};

use super::ndjson::{Ndjson, Refused};
use super::{ApiError, AppState};
use crate::fhir::{self, BundleKind, SourceContext};
use crate::intake::{self, Provenance};

pub async fn post_fhir(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let headers = request.headers();
    let source = authenticate_source(&state, &source_id, headers)?;
    // Before anything of the body is read or published: a refused request publishes nothing
    // (an NDJSON body is published chunk by chunk).
    if let Err(e) = state.publisher.admit() {
        // Read the body first (and drop it): an answer before it would reset the sender's upload,
        // which it could not tell from a failure.
        let _ = axum::body::to_bytes(request.into_body(), state.config.max_body_bytes).await;
        return Err(ApiError::Unavailable(e));
    }
    let received_at = now_micros();
    let media = media_type(headers);
    let channel = match media.as_deref() {
        Some("application/fhir+ndjson" | "application/ndjson" | "application/x-ndjson") => {
            "fhir_ndjson"
        }
        _ => "fhir_bundle",
    };
    if channel == "fhir_ndjson" {
        return post_ndjson(&state, &source, received_at, request).await;
    }
    // A Bundle is one JSON document: read whole, within the body limit.
    let body = match Bytes::from_request(request, &state).await {
        Ok(body) => body,
        Err(rejection) => {
            let refused = ApiError::from_body(rejection, state.config.max_body_bytes);
            return Err(
                dead_letter_body(&state, &source, channel, received_at, refused, b"").await,
            );
        }
    };
    let parsed = match media.as_deref() {
        Some("application/fhir+json" | "application/json") | None => fhir::parse_bundle(&body),
        Some(other) => {
            let refused = ApiError::UnsupportedMediaType(format!(
                "content type {other} is not accepted: send application/fhir+json or application/fhir+ndjson"
            ));
            return Err(
                dead_letter_body(&state, &source, channel, received_at, refused, &body).await,
            );
        }
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let refused = ApiError::BadRequest("malformed_body", e.to_string());
            return Err(
                dead_letter_body(&state, &source, channel, received_at, refused, &body).await,
            );
        }
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
    let rejected_json: Vec<Value> = normalized.rejections.iter().map(|r| r.result()).collect();

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

/// NDJSON, streamed in chunks (`ndjson.rs`). A declared length over the limit is refused before
/// anything is read; a body without one that passes the limit is refused there (413), the lines
/// before it having been published.
async fn post_ndjson(
    state: &AppState,
    source: &SourceRegistered,
    received_at: i64,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let channel = "fhir_ndjson";
    let limit = state.config.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let refused = if declared.is_some_and(|n| n > limit as u64) {
        ApiError::TooLarge(limit)
    } else {
        let ndjson = Ndjson {
            state,
            source,
            channel,
            received_at,
        };
        match ndjson.ingest(request.into_body()).await {
            Ok(answer) => return Ok(answer),
            Err(Refused::Api(e)) => return Err(e),
            Err(Refused::TooLarge) => ApiError::TooLarge(limit),
            Err(Refused::Unreadable(e)) => ApiError::BadRequest("unreadable_body", e),
        }
    };
    Err(dead_letter_body(state, source, channel, received_at, refused, b"").await)
}

/// A body refused as a whole (unreadable, malformed, too large, of an unknown type) from an
/// authenticated source is dead-lettered with what was read of it, so it can be found and
/// re-submitted after a fix. If even the dead letter cannot be made durable, the source is told
/// to retry (503) rather than that its input was looked at.
async fn dead_letter_body(
    state: &AppState,
    source: &SourceRegistered,
    channel: &str,
    received_at: i64,
    refused: ApiError,
    raw: &[u8],
) -> ApiError {
    let letter = intake::dead_letter(
        Some(&source.source_id),
        channel,
        &format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        None,
        &refused.to_string(),
        raw,
        received_at,
    );
    match state
        .publisher
        .publish(topics::DEAD_LETTERS.name, &letter.key(), &letter)
        .await
    {
        Ok(_) => {
            crate::metrics::rejected(&source.source_id, channel, 1);
            refused
        }
        Err(e) => ApiError::Unavailable(e),
    }
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
