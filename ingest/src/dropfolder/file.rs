//! One claimed file, from `processing/` to `done/` (or `failed/`).

use std::collections::HashMap;
use std::path::Path;

use schemas::{now_micros, PatientIdentity, Position, SourceRegistered};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::watch;
use tracing::Instrument;

use super::lines::{Line, Lines};
use super::receipt::{self, Receipt};
use super::{DropFolder, CHANNEL, CHUNK};
use crate::fhir::{self, Entry, Record, Rejection, SourceContext};
use crate::hl7;
use crate::intake::{self, Provenance};
use crate::publish::PublishError;

#[derive(Debug, thiserror::Error)]
enum FileError {
    /// The file as a whole cannot be taken: it goes to `failed/`.
    #[error("{0}")]
    Rejected(String),
    /// Not the file's fault (broker, disk): it stays in `processing/` and is retried.
    #[error("the event log is unavailable: {0}")]
    Publish(#[from] PublishError),
    #[error("reading or writing the drop folder: {0}")]
    Io(#[from] std::io::Error),
    #[error("shutting down")]
    Interrupted,
}

pub async fn process(
    df: &DropFolder,
    source_id: &str,
    path: &Path,
    shutdown: &watch::Receiver<bool>,
) {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let base = df.root.join(source_id);
    let mut receipt = Receipt {
        file: name.clone(),
        ..Receipt::default()
    };
    // One trace per file: every chunk's records carry it to the projector.
    let span = tracing::info_span!(
        "drop_file",
        source = source_id,
        trace_id = tracing::field::Empty
    );
    platform::telemetry::continue_trace(&span, None);
    let outcome = ingest(df, source_id, path, &mut receipt, shutdown)
        .instrument(span)
        .await;
    let stage = match outcome {
        Ok(()) => "done",
        Err(FileError::Rejected(reason)) => {
            receipt.error = Some(reason);
            "failed"
        }
        Err(e) => {
            tracing::warn!(source = source_id, error = %e, "drop file left in processing/ to retry");
            return;
        }
    };
    if let Err(e) = finish(df, &base, path, stage, receipt).await {
        tracing::error!(source = source_id, error = %e, "drop file processed but not moved out of processing/");
    }
}

async fn ingest(
    df: &DropFolder,
    source_id: &str,
    path: &Path,
    receipt: &mut Receipt,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), FileError> {
    let source = df.registry.get(source_id).ok_or_else(|| {
        FileError::Rejected("the folder's name is not a registered source id".into())
    })?;
    receipt.sha256 = receipt::sha256(path).await?;
    if let Some(earlier) = receipt::ingested_as(&df.root, &receipt.sha256).await {
        receipt.duplicate_of = Some(earlier);
        tracing::info!(
            source = source_id,
            "drop file is a duplicate; nothing ingested"
        );
        return Ok(());
    }
    let errors_path = errors_path(path);
    let _ = tokio::fs::remove_file(&errors_path).await;
    let mut batch = Batch {
        df,
        source: &source,
        ctx: SourceContext {
            source_id: source.source_id.clone(),
            assigning_authority: source.assigning_authority.clone(),
        },
        file: &receipt.file,
        received_at: now_micros(),
        records: Vec::new(),
        rejections: Vec::new(),
        errors: None,
        errors_path: &errors_path,
        receipt_counts: Counts::default(),
        shutdown,
    };
    let name = receipt.file.to_ascii_lowercase();
    let file = tokio::fs::File::open(path).await?;
    if name.ends_with(".ndjson") {
        ndjson(&mut batch, file).await?;
    } else if name.ends_with(".json") {
        bundle(&mut batch, file).await?;
    } else if name.ends_with(".hl7") {
        hl7_batch(&mut batch, file).await?;
    } else {
        return Err(FileError::Rejected(
            "unsupported file type: drop .ndjson, .json or .hl7 files".into(),
        ));
    }
    batch.flush().await?;
    if let Some(mut w) = batch.errors.take() {
        w.flush().await?;
    }
    let counts = batch.receipt_counts;
    receipt.accepted = counts.accepted;
    receipt.rejected = counts.rejected;
    receipt.first_position = counts.first.map(|p| p.encode());
    receipt.last_position = counts.last.map(|p| p.encode());
    tracing::info!(
        source = source_id,
        accepted = counts.accepted,
        rejected = counts.rejected,
        "drop file ingested"
    );
    Ok(())
}

/// Receipt, errors and the file itself into `done/` or `failed/`; then the sha256 index.
async fn finish(
    df: &DropFolder,
    base: &Path,
    path: &Path,
    stage: &str,
    mut receipt: Receipt,
) -> std::io::Result<()> {
    let dir = base.join(stage);
    tokio::fs::create_dir_all(&dir).await?;
    let final_name = receipt::free_name(&dir, &receipt.file).await;
    receipt.file = final_name.clone();
    let errors = errors_path(path);
    if tokio::fs::metadata(&errors).await.is_ok() {
        tokio::fs::rename(&errors, dir.join(format!("{final_name}.errors.ndjson"))).await?;
    }
    let body = serde_json::to_vec_pretty(&receipt).map_err(std::io::Error::other)?;
    receipt::write_atomically(&dir.join(format!("{final_name}.receipt.json")), &body).await?;
    tokio::fs::rename(path, dir.join(&final_name)).await?;
    if stage == "done" && receipt.duplicate_of.is_none() {
        receipt::mark_ingested(&df.root, &receipt.sha256, &final_name).await?;
    }
    Ok(())
}

fn errors_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".errors.ndjson");
    path.with_file_name(name)
}

#[derive(Default)]
struct Counts {
    accepted: usize,
    rejected: usize,
    first: Option<Position>,
    last: Option<Position>,
}

/// Records and rejections waiting to be published, at most about `CHUNK` at a time.
struct Batch<'a> {
    df: &'a DropFolder,
    source: &'a SourceRegistered,
    ctx: SourceContext,
    file: &'a str,
    received_at: i64,
    records: Vec<Record>,
    rejections: Vec<Rejection>,
    errors: Option<BufWriter<tokio::fs::File>>,
    errors_path: &'a Path,
    receipt_counts: Counts,
    shutdown: &'a watch::Receiver<bool>,
}

impl Batch<'_> {
    async fn add(
        &mut self,
        records: Vec<Record>,
        rejections: Vec<Rejection>,
    ) -> Result<(), FileError> {
        for r in &rejections {
            self.write_error(r).await?;
        }
        self.records.extend(records);
        self.rejections.extend(rejections);
        if self.records.len() + self.rejections.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn write_error(&mut self, r: &Rejection) -> Result<(), FileError> {
        if self.errors.is_none() {
            let file = tokio::fs::File::create(self.errors_path).await?;
            self.errors = Some(BufWriter::new(file));
        }
        // `{"line", "error"}`, and `"status": 413` for a line refused for its size.
        let mut row = r.result();
        if let Some(line) = row.as_object_mut().and_then(|o| o.remove("index")) {
            row["line"] = line;
        }
        let mut row = row.to_string();
        row.push('\n');
        if let Some(w) = self.errors.as_mut() {
            w.write_all(row.as_bytes()).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), FileError> {
        if self.records.is_empty() && self.rejections.is_empty() {
            return Ok(());
        }
        if *self.shutdown.borrow() {
            return Err(FileError::Interrupted);
        }
        let from = Provenance {
            source: self.source,
            channel: CHANNEL,
            message_id: self.file,
            received_at: self.received_at,
        };
        let records = std::mem::take(&mut self.records);
        let accepted = records.len();
        let rejections = std::mem::take(&mut self.rejections);
        // A file waits while the views are behind (no one is waiting on its answer); it is not
        // refused, which would leave it in processing/ until the next start.
        while self.df.publisher.admit().is_err() {
            if *self.shutdown.borrow() {
                return Err(FileError::Interrupted);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let position = intake::publish(&self.df.publisher, &from, records, &rejections).await?;
        let counts = &mut self.receipt_counts;
        counts.accepted += accepted;
        counts.rejected += rejections.len();
        if accepted > 0 {
            counts.first.get_or_insert_with(|| position.clone());
            // Every partition the file wrote, at its highest offset: a read that waits for it
            // sees the whole file, not only the last chunk's partitions.
            counts
                .last
                .get_or_insert_with(Position::new)
                .merge(&position);
        }
        Ok(())
    }
}

fn rejection(line: usize, error: impl Into<String>, raw: String) -> Rejection {
    Rejection {
        index: line,
        error: error.into(),
        raw,
        too_large: false,
    }
}

/// FHIR NDJSON, one resource a line; Patients seen earlier in the file resolve later references.
async fn ndjson(batch: &mut Batch<'_>, file: tokio::fs::File) -> Result<(), FileError> {
    let max = batch.df.max_line_bytes;
    let mut lines = Lines::new(BufReader::with_capacity(256 * 1024, file), false, max);
    let mut patients: HashMap<String, PatientIdentity> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::with_capacity(CHUNK);
    let mut unreadable = Vec::new();
    loop {
        let line = lines.next().await?;
        let number = lines.number;
        match line {
            None => break,
            Some(Line::Text(bytes)) => match String::from_utf8(bytes) {
                Ok(text) if text.trim().is_empty() => {}
                Ok(text) => entries.push(fhir::ndjson_entry(number, &text)),
                Err(_) => unreadable.push(rejection(number, "line is not UTF-8", String::new())),
            },
            Some(Line::TooLong) => unreadable.push(Rejection {
                too_large: true,
                ..rejection(
                    number,
                    format!("line exceeds the limit of {max} bytes"),
                    String::new(),
                )
            }),
        }
        if entries.len() + unreadable.len() >= CHUNK {
            normalize_chunk(batch, &mut entries, &mut unreadable, &mut patients).await?;
        }
    }
    normalize_chunk(batch, &mut entries, &mut unreadable, &mut patients).await
}

async fn normalize_chunk(
    batch: &mut Batch<'_>,
    entries: &mut Vec<Entry>,
    unreadable: &mut Vec<Rejection>,
    patients: &mut HashMap<String, PatientIdentity>,
) -> Result<(), FileError> {
    let n = fhir::normalize_with(std::mem::take(entries), &batch.ctx, patients);
    let mut rejections = n.rejections;
    rejections.append(unreadable);
    rejections.sort_by_key(|r| r.index);
    batch.add(n.records, rejections).await
}

/// A FHIR Bundle, read whole (Bundles are bounded by the same limit as a line); its entries are
/// taken as a batch, the errors file naming each rejected entry's index.
async fn bundle(batch: &mut Batch<'_>, mut file: tokio::fs::File) -> Result<(), FileError> {
    use tokio::io::AsyncReadExt;
    let max = batch.df.max_line_bytes;
    let mut body = Vec::new();
    (&mut file)
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .await?;
    if body.len() > max {
        return Err(FileError::Rejected(format!(
            "Bundle file exceeds the limit of {max} bytes: drop NDJSON instead"
        )));
    }
    let parsed = fhir::parse_bundle(&body).map_err(|e| FileError::Rejected(e.to_string()))?;
    drop(body);
    let n = fhir::normalize(parsed.entries, &batch.ctx);
    let mut records = n.records.into_iter();
    batch.add(Vec::new(), n.rejections).await?;
    loop {
        let chunk: Vec<Record> = records.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            return Ok(());
        }
        batch.add(chunk, Vec::new()).await?;
    }
}

/// HL7 v2 messages one after another, with or without FHS/BHS batch envelopes. A message that
/// cannot be taken is that message's rejection (by the line its MSH is on), never the file's.
async fn hl7_batch(batch: &mut Batch<'_>, file: tokio::fs::File) -> Result<(), FileError> {
    let max = batch.df.max_line_bytes;
    let mut lines = Lines::new(BufReader::with_capacity(256 * 1024, file), true, max);
    let mut message = String::new();
    let mut starts_at = 0;
    let mut oversized = false;
    loop {
        let line = lines.next().await?;
        let number = lines.number;
        let text = match line {
            None => None,
            Some(Line::TooLong) => {
                oversized = true;
                continue;
            }
            Some(Line::Text(bytes)) => Some(match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => e.into_bytes().iter().map(|b| *b as char).collect(),
            }),
        };
        let boundary = match &text {
            None => true,
            Some(t) => ["MSH", "FHS", "BHS", "BTS", "FTS"]
                .iter()
                .any(|s| t.starts_with(s)),
        };
        if boundary && (!message.is_empty() || oversized) {
            hl7_message(batch, &message, starts_at, oversized).await?;
            message.clear();
            oversized = false;
        }
        let Some(text) = text else { return Ok(()) };
        if text.trim().is_empty()
            || ["FHS", "BHS", "BTS", "FTS"]
                .iter()
                .any(|s| text.starts_with(s))
        {
            continue;
        }
        if text.starts_with("MSH") {
            starts_at = number;
        }
        if message.len() + text.len() + 1 > max {
            oversized = true;
            message.clear();
        } else if !oversized {
            message.push_str(&text);
            message.push('\r');
        }
    }
}

async fn hl7_message(
    batch: &mut Batch<'_>,
    text: &str,
    line: usize,
    oversized: bool,
) -> Result<(), FileError> {
    if oversized {
        let error = format!(
            "HL7 message exceeds the limit of {} bytes",
            batch.df.max_line_bytes
        );
        return batch
            .add(Vec::new(), vec![rejection(line, error, String::new())])
            .await;
    }
    let mapped = hl7::Message::parse(text)
        .map_err(|e| format!("unreadable HL7 v2 message: {e}"))
        .and_then(|msg| {
            let header = hl7::Header::read(&msg).map_err(|e| e.to_string())?;
            hl7::to_records(&msg, &header, &batch.ctx).map_err(|e| e.to_string())
        });
    match mapped {
        Ok(records) => batch.add(records, Vec::new()).await,
        Err(error) => {
            batch
                .add(Vec::new(), vec![rejection(line, error, text.to_string())])
                .await
        }
    }
}
