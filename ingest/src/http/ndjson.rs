//! FHIR NDJSON bodies, streamed: read line by line and published in chunks of at most `CHUNK`
//! lines or `CHUNK_BYTES` bytes, each acknowledged before the next is read, so ingest's memory
//! stays flat whatever the body's size (up to `INGEST_MAX_BODY_BYTES`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use schemas::{PatientIdentity, Position, SourceRegistered};
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio_util::io::StreamReader;

use super::{ApiError, AppState};
use crate::dropfolder::lines::{Line, Lines};
use crate::fhir::{self, Entry, Rejection, SourceContext};
use crate::intake::{self, Provenance};

/// Lines published at once.
const CHUNK: usize = 500;
/// Bytes of lines published at once (a chunk of large documents is cut sooner).
const CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Rejections listed in the answer; all are dead-lettered, the count says how many there were.
const LISTED_REJECTIONS: usize = 10_000;

pub struct Ndjson<'a> {
    pub state: &'a AppState,
    pub source: &'a SourceRegistered,
    pub channel: &'a str,
    pub received_at: i64,
}

/// Why a body was refused part way (what was published before stays published).
pub enum Refused {
    TooLarge,
    Unreadable(String),
    Api(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Api(e)
    }
}

struct Progress<'a> {
    from: Provenance<'a>,
    ctx: SourceContext,
    patients: HashMap<String, PatientIdentity>,
    entries: Vec<Entry>,
    unreadable: Vec<Rejection>,
    bytes: usize,
    accepted: usize,
    rejected: Vec<Value>,
    rejected_count: usize,
    position: Position,
}

impl Ndjson<'_> {
    /// Read, normalize and publish `body`; the 202 answer once every chunk is durable.
    pub async fn ingest(&self, body: Body) -> Result<(StatusCode, Json<Value>), Refused> {
        let limit = self.state.config.max_body_bytes;
        let over = Arc::new(AtomicBool::new(false));
        let mut read = 0usize;
        let flag = over.clone();
        let stream = body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            read += chunk.len();
            if read > limit {
                flag.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("body over the limit"));
            }
            Ok(chunk)
        });
        let mut lines = Lines::new(
            BufReader::with_capacity(256 * 1024, StreamReader::new(stream)),
            false,
            limit,
        );
        let message_id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        let mut p = Progress {
            from: Provenance {
                source: self.source,
                channel: self.channel,
                message_id: &message_id,
                received_at: self.received_at,
            },
            ctx: SourceContext {
                source_id: self.source.source_id.clone(),
                assigning_authority: self.source.assigning_authority.clone(),
            },
            patients: HashMap::new(),
            entries: Vec::new(),
            unreadable: Vec::new(),
            bytes: 0,
            accepted: 0,
            rejected: Vec::new(),
            rejected_count: 0,
            position: Position::new(),
        };
        loop {
            let line = match lines.next().await {
                Ok(line) => line,
                Err(_) if over.load(Ordering::Relaxed) => return Err(Refused::TooLarge),
                Err(e) => return Err(Refused::Unreadable(e.to_string())),
            };
            // 0-based, blank lines counted: the index a whole-body parse gives.
            let index = lines.number.saturating_sub(1);
            match line {
                None => break,
                Some(Line::Text(bytes)) => match String::from_utf8(bytes) {
                    Ok(text) if text.trim().is_empty() => {}
                    Ok(text) => {
                        let text = text.strip_suffix('\r').unwrap_or(&text);
                        p.bytes += text.len();
                        p.entries.push(fhir::ndjson_entry(index, text));
                    }
                    Err(e) => p.unreadable.push(Rejection {
                        index,
                        error: "line is not UTF-8".into(),
                        raw: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                        too_large: false,
                    }),
                },
                Some(Line::TooLong) => p.unreadable.push(Rejection {
                    index,
                    error: format!("line exceeds the limit of {limit} bytes"),
                    raw: String::new(),
                    too_large: true,
                }),
            }
            if p.entries.len() + p.unreadable.len() >= CHUNK || p.bytes >= CHUNK_BYTES {
                self.publish(&mut p).await?;
            }
        }
        self.publish(&mut p).await?;
        let mut answer = json!({
            "accepted": p.accepted,
            "rejected": p.rejected,
            "position": p.position.encode(),
        });
        if p.rejected_count > LISTED_REJECTIONS {
            answer["rejected_count"] = p.rejected_count.into();
        }
        Ok((StatusCode::ACCEPTED, Json(answer)))
    }

    async fn publish(&self, p: &mut Progress<'_>) -> Result<(), ApiError> {
        if p.entries.is_empty() && p.unreadable.is_empty() {
            return Ok(());
        }
        // Patients of earlier chunks resolve later references, as in one whole body.
        let n = fhir::normalize_with(std::mem::take(&mut p.entries), &p.ctx, &mut p.patients);
        let mut rejections = n.rejections;
        rejections.append(&mut p.unreadable);
        rejections.sort_by_key(|r| r.index);
        p.bytes = 0;
        let accepted = n.records.len();
        let position =
            intake::publish(&self.state.publisher, &p.from, n.records, &rejections).await?;
        p.position.merge(&position);
        p.accepted += accepted;
        p.rejected_count += rejections.len();
        for r in &rejections {
            if p.rejected.len() < LISTED_REJECTIONS {
                p.rejected.push(r.result());
            }
        }
        Ok(())
    }
}
