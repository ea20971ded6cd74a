//! The views in PostgreSQL: every SQL statement of the projector, and applying one batch of
//! events together with the offsets it advances, in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Pool, Transaction};
use platform::blobs::BlobStore;
use schemas::{
    topics, AccessRecorded, BreakGlassRecorded, ConsentRecorded, DeadLetterResubmitted,
    IdentityAction, IdentityDecided, PatientIdentity, PatientMerged, QuarantineReapplyRequested,
    RecordReceived, RecordRejected, SourceRegistered,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One consumed message, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("migrations: {0}")]
    Migrate(String),
    /// The blob store of claim-checked resources could not be asked: retried like the database.
    #[error(transparent)]
    Blobs(#[from] platform::blobs::BlobError),
}

/// What a batch changed, for metrics and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub events: usize,
    pub skipped_already_applied: usize,
    /// Events set aside in `quarantine` (undecodable, or refused by PostgreSQL).
    pub quarantined: usize,
    /// Latest `received_at` (micros) among the records applied.
    pub newest_received_at: Option<i64>,
}

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    // Serialize concurrent starts of several projectors.
    client
        .execute("SELECT pg_advisory_lock(7311001)", &[])
        .await?;
    let result = embedded::migrations::runner()
        .run_async(&mut **client)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()));
    client
        .execute("SELECT pg_advisory_unlock(7311001)", &[])
        .await?;
    result.map(|_| ())
}

/// The next offset to apply, per topic partition, as last committed.
pub async fn offsets(pool: &Pool) -> Result<HashMap<(String, i32), i64>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT topic, partition, next_offset FROM projection_offsets",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// What identifies one record of the log without keeping it: SHA-256 of its key (length-prefixed,
/// absent told apart from empty) and payload. Payloads carry event ids, so two logs' records at the
/// same offset differ.
pub fn fingerprint(key: Option<&[u8]>, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    match key {
        Some(k) => {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k);
        }
        None => h.update(u64::MAX.to_be_bytes()),
    }
    h.update(payload);
    h.finalize().into()
}

/// The first record the views applied from a partition (`log_identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRecord {
    pub offset: i64,
    pub fingerprint: Vec<u8>,
}

/// Every partition's first applied record, as recorded.
pub async fn log_identity(pool: &Pool) -> Result<HashMap<(String, i32), FirstRecord>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT topic, partition, first_offset, first_fingerprint FROM log_identity",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                FirstRecord {
                    offset: r.get(2),
                    fingerprint: r.get(3),
                },
            )
        })
        .collect())
}

/// Records `first` as the partition's first record unless one is recorded already (views built
/// before `log_identity` existed adopt the log's earliest record).
pub async fn record_first(
    pool: &Pool,
    topic: &str,
    partition: i32,
    first: &FirstRecord,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO log_identity (topic, partition, first_offset, first_fingerprint) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&topic, &partition, &first.offset, &first.fingerprint],
        )
        .await?;
    Ok(())
}

/// The cluster id the views' log came from: the one recorded, or `reported` (then recorded) when
/// none is. `None` when neither is known.
pub async fn log_cluster(
    pool: &Pool,
    reported: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let client = pool.get().await?;
    if let Some(id) = reported {
        client
            .execute(
                "INSERT INTO log_cluster (cluster_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&id],
            )
            .await?;
    }
    Ok(client
        .query_opt("SELECT cluster_id FROM log_cluster", &[])
        .await?
        .map(|r| r.get(0)))
}

fn at(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// Apply `batch` and advance the offsets, all or nothing. Messages below the stored offset of
/// their partition were applied before (a redelivery after a crash) and are skipped.
///
/// An event the views cannot take (undecodable, or a value or constraint PostgreSQL refuses) is
/// set aside in `quarantine` and the offsets move past it in the same transaction: one bad record
/// never stops the views. The batch is first applied whole (fast); only when PostgreSQL refuses
/// something in it is it applied again event by event, each in a savepoint, to find the culprit.
///
/// A claim-checked record (`RecordReceived::resource_blob`) is applied with its resource read
/// from `blobs`; one whose blob is not there is set aside like any event that cannot be applied.
pub async fn apply_batch(
    pool: &Pool,
    blobs: &dyn BlobStore,
    batch: &[Envelope],
) -> Result<Applied, StoreError> {
    match apply(pool, blobs, batch, Isolation::Batch).await {
        Err(StoreError::Postgres(e)) if is_event_fault(&e) => {
            tracing::warn!(
                sqlstate = sqlstate(&e),
                events = batch.len(),
                "PostgreSQL refused an event; applying the batch event by event"
            );
            apply(pool, blobs, batch, Isolation::PerEvent).await
        }
        other => other,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// One transaction, record writes pipelined: any refusal aborts the whole batch.
    Batch,
    /// Each event in its own savepoint, written at once: a refusal sets that event aside.
    PerEvent,
}

/// Refusals that belong to one event's content (SQLSTATE classes 22 data exception, 23
/// integrity constraint, 54 program limit, e.g. U+0000 in `text`/`jsonb` or an index row too
/// large), as opposed to the database being unreachable, overloaded or the code being wrong,
/// which are retried.
fn is_event_fault(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| matches!(&c.code()[..2], "22" | "23" | "54"))
}

fn sqlstate(e: &tokio_postgres::Error) -> &str {
    e.code().map(|c| c.code()).unwrap_or("none")
}

/// What an event's failure to apply is recorded as: PostgreSQL's SQLSTATE and primary message
/// (never its detail, which may quote values), or the decoder's error.
fn fault_text(e: &EventError) -> String {
    match e {
        EventError::Decode(msg) => format!("undecodable: {msg}"),
        EventError::Unresolved(msg) => format!("unresolved: {msg}"),
        EventError::Blobs(e) => e.to_string(),
        EventError::Db(db) => match db.as_db_error() {
            Some(d) => format!("postgres {}: {}", d.code().code(), d.message()),
            None => format!("postgres: {db}"),
        },
    }
}

async fn apply(
    pool: &Pool,
    blobs: &dyn BlobStore,
    batch: &[Envelope],
    isolation: Isolation,
) -> Result<Applied, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut fresh: Vec<(String, i32)> = Vec::new();
    let mut applied_per_partition: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for e in batch {
        let key = (e.topic.clone(), e.partition);
        if next.contains_key(&key) {
            continue;
        }
        let row = tx
            .query_opt(
                &tx.prepare_cached("SELECT next_offset FROM projection_offsets WHERE topic = $1 AND partition = $2 FOR UPDATE").await?,
                &[&e.topic, &e.partition],
            )
            .await?;
        if row.is_none() {
            fresh.push(key.clone());
        }
        next.insert(key, row.map(|r| r.get(0)).unwrap_or(0));
    }
    // A partition this database never applied from: its first record is where the views' log
    // starts, remembered to tell that log from another one later (`log_identity`).
    for (topic, partition) in &fresh {
        if let Some(first) = batch
            .iter()
            .find(|e| &e.topic == topic && e.partition == *partition)
        {
            tx.execute(
                &tx.prepare_cached("INSERT INTO log_identity (topic, partition, first_offset, first_fingerprint) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING").await?,
                &[topic, partition, &first.offset, &fingerprint(first.key.as_deref(), &first.payload).to_vec()],
            )
            .await?;
        }
    }

    let mut applied = Applied::default();
    let mut state = BatchState::new(blobs);
    for e in batch {
        let slot = next
            .get_mut(&(e.topic.clone(), e.partition))
            .expect("loaded above");
        if e.offset < *slot {
            applied.skipped_already_applied += 1;
            continue;
        }
        *slot = e.offset + 1;
        *applied_per_partition
            .entry((e.topic.clone(), e.partition))
            .or_default() += 1;
        let outcome = match isolation {
            Isolation::Batch => apply_event(&tx, e, &mut state, &mut applied).await,
            Isolation::PerEvent => {
                apply_in_savepoint(&tx, "event", e, &mut state, &mut applied).await?
            }
        };
        match outcome {
            Ok(()) => applied.events += 1,
            Err(EventError::Db(err)) if isolation == Isolation::Batch || !is_event_fault(&err) => {
                return Err(err.into())
            }
            Err(EventError::Blobs(err)) => return Err(err.into()),
            Err(fault) => {
                applied.quarantined += 1;
                quarantine(&tx, e, &fault).await?;
            }
        }
    }

    flush(&tx, &mut state.queued).await?;
    for (source_id, micros) in &state.last_received {
        tx.execute(
            &tx.prepare_cached("UPDATE sources SET last_received_at = GREATEST(COALESCE(last_received_at, $2), $2) WHERE source_id = $1").await?,
            &[source_id, &at(*micros)],
        )
        .await?;
    }
    for ((topic, partition), next_offset) in &next {
        let applied_here = applied_per_partition
            .get(&(topic.clone(), *partition))
            .copied()
            .unwrap_or(0);
        tx.execute(
            &tx.prepare_cached("INSERT INTO projection_offsets (topic, partition, next_offset, applied, updated_at) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset,
                 applied = projection_offsets.applied + EXCLUDED.applied, updated_at = now()").await?,
            &[topic, partition, next_offset, &applied_here],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// What one batch carries from event to event.
struct BatchState<'b> {
    known_patients: KnownPatients,
    /// Latest `received_at` per source, for the directory's `last_received_at`.
    last_received: HashMap<String, i64>,
    /// Record writes not yet sent (see `flush`).
    queued: Vec<Upsert>,
    /// Where claim-checked resources are read from.
    blobs: &'b dyn BlobStore,
    /// Bytes of claim-checked resources among `queued`: past `QUEUED_BLOB_BYTES` they are
    /// written at once, so a batch of events that are small on the log stays bounded in memory.
    queued_blob_bytes: i64,
}

/// Claim-checked resource bytes a batch holds in memory before writing them (four of 16 MiB).
const QUEUED_BLOB_BYTES: i64 = 64 * 1024 * 1024;

impl<'b> BatchState<'b> {
    fn new(blobs: &'b dyn BlobStore) -> Self {
        BatchState {
            known_patients: KnownPatients::default(),
            last_received: HashMap::new(),
            queued: Vec::new(),
            blobs,
            queued_blob_bytes: 0,
        }
    }

    /// Writes the queued records (`flush`).
    async fn flush(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        flush(tx, &mut self.queued).await?;
        self.queued_blob_bytes = 0;
        Ok(())
    }
}

/// Applies one event to the views (record writes may stay queued until the next `flush`).
async fn apply_event(
    tx: &Transaction<'_>,
    e: &Envelope,
    state: &mut BatchState<'_>,
    applied: &mut Applied,
) -> Result<(), EventError> {
    match e.topic.as_str() {
        t if t == topics::RECORDS.name && schemas::is::<PatientMerged>(&e.payload) => {
            state.flush(tx).await?;
            apply_merge(tx, &decoded(&e.payload)?, &mut state.known_patients).await
        }
        t if t == topics::RECORDS.name => {
            let r = decoded::<RecordReceived>(&e.payload)?;
            let latest = state
                .last_received
                .entry(r.source_id.clone())
                .or_insert(r.received_at);
            *latest = (*latest).max(r.received_at);
            applied.newest_received_at = applied.newest_received_at.max(Some(r.received_at));
            let u = Upsert::prepare(tx, r, &mut state.known_patients, state.blobs).await?;
            if u.r.resource_type == "Patient" {
                // A Patient's outcome decides its demographics: written at once.
                state.flush(tx).await?;
                u.write_patient(tx).await?;
            } else {
                let claim_checked = u.r.resource_blob.as_ref().map_or(0, |b| b.size);
                state.queued.push(u);
                state.queued_blob_bytes += claim_checked;
                if state.queued_blob_bytes > QUEUED_BLOB_BYTES {
                    state.flush(tx).await?;
                }
            }
            Ok(())
        }
        t if t == topics::CONSENTS.name => {
            Ok(apply_consent(tx, &decoded(&e.payload)?, e.offset).await?)
        }
        t if t == topics::SOURCES.name => Ok(apply_source(tx, &decoded(&e.payload)?).await?),
        t if t == topics::IDENTITY.name => {
            state.flush(tx).await?;
            apply_identity(tx, &decoded(&e.payload)?, &mut state.known_patients).await
        }
        t if t == topics::ACCESS.name => apply_access(tx, &decoded(&e.payload)?).await,
        t if t == topics::BREAK_GLASS.name => apply_break_glass(tx, &decoded(&e.payload)?).await,
        t if t == topics::DEAD_LETTERS.name && schemas::is::<DeadLetterResubmitted>(&e.payload) => {
            Ok(apply_resubmitted(tx, &decoded(&e.payload)?).await?)
        }
        t if t == topics::DEAD_LETTERS.name
            && schemas::is::<QuarantineReapplyRequested>(&e.payload) =>
        {
            state.flush(tx).await?;
            state.known_patients.0.clear();
            reapply(tx, &decoded(&e.payload)?, state.blobs).await
        }
        t if t == topics::DEAD_LETTERS.name => {
            Ok(apply_dead_letter(tx, &decoded(&e.payload)?).await?)
        }
        _ => Ok(()),
    }
}

/// Applies `e` and writes it at once, inside savepoint `name`: kept when it applies, rolled back
/// (with what the batch remembered of it) when it does not. The outer error is the savepoint's own.
async fn apply_in_savepoint(
    tx: &Transaction<'_>,
    name: &str,
    e: &Envelope,
    state: &mut BatchState<'_>,
    applied: &mut Applied,
) -> Result<Result<(), EventError>, tokio_postgres::Error> {
    tx.batch_execute(&format!("SAVEPOINT {name}")).await?;
    let mut outcome = apply_event(tx, e, state, applied).await;
    if outcome.is_ok() {
        outcome = state.flush(tx).await.map_err(EventError::Db);
    }
    if outcome.is_ok() {
        tx.batch_execute(&format!("RELEASE SAVEPOINT {name}"))
            .await?;
    } else {
        tx.batch_execute(&format!("ROLLBACK TO SAVEPOINT {name}"))
            .await?;
        // What the rolled-back event wrote is gone: so are the patients it resolved.
        state.queued.clear();
        state.queued_blob_bytes = 0;
        state.known_patients.0.clear();
    }
    Ok(outcome)
}

/// The event type a message claims by its writer schema, for the quarantine list.
fn event_type(topic: &str, payload: &[u8]) -> &'static str {
    fn named<E: schemas::Event>(payload: &[u8]) -> Option<&'static str> {
        schemas::is::<E>(payload).then_some(E::NAME)
    }
    let found = match topic {
        t if t == topics::RECORDS.name => {
            named::<RecordReceived>(payload).or_else(|| named::<PatientMerged>(payload))
        }
        t if t == topics::CONSENTS.name => named::<ConsentRecorded>(payload),
        t if t == topics::SOURCES.name => named::<SourceRegistered>(payload),
        t if t == topics::IDENTITY.name => named::<IdentityDecided>(payload),
        t if t == topics::ACCESS.name => named::<AccessRecorded>(payload),
        t if t == topics::BREAK_GLASS.name => named::<BreakGlassRecorded>(payload),
        t if t == topics::DEAD_LETTERS.name => named::<RecordRejected>(payload)
            .or_else(|| named::<DeadLetterResubmitted>(payload))
            .or_else(|| named::<QuarantineReapplyRequested>(payload)),
        _ => None,
    };
    found.unwrap_or("unknown")
}

/// The patient whose consent an event on `hie.consents` decides: from the event, or when it does
/// not decode, from its key (`assigning_authority|mrn`). `None` when neither tells: such an event
/// withholds every patient's clinical data until it is resolved (fail closed).
fn consent_patient(e: &Envelope) -> Option<uuid::Uuid> {
    if let Ok(c) = schemas::decode::<ConsentRecorded>(&e.payload) {
        return Some(c.patient.patient_id());
    }
    let key = std::str::from_utf8(e.key.as_deref()?).ok()?;
    let (assigning_authority, mrn) = key.split_once('|')?;
    Some(
        PatientIdentity {
            assigning_authority: assigning_authority.to_string(),
            mrn: mrn.to_string(),
        }
        .patient_id(),
    )
}

/// Sets `e` aside: where it is, what it claims to be, why it failed, and its bytes (for a later
/// re-apply). Logged by position and SQLSTATE only: never the payload or the error's text.
async fn quarantine(
    tx: &Transaction<'_>,
    e: &Envelope,
    fault: &EventError,
) -> Result<(), tokio_postgres::Error> {
    let event_type = event_type(&e.topic, &e.payload);
    let withholds = e.topic == topics::CONSENTS.name;
    let patient = withholds.then(|| consent_patient(e)).flatten();
    crate::metrics::quarantined(&e.topic, event_type);
    tracing::error!(
        topic = %e.topic,
        partition = e.partition,
        offset = e.offset,
        event_type,
        sqlstate = match fault {
            EventError::Db(db) => sqlstate(db),
            EventError::Decode(_) => "undecodable",
            EventError::Unresolved(_) | EventError::Blobs(_) => "claim_check_unresolved",
        },
        withholds,
        "event set aside in quarantine; the views go on"
    );
    tx.execute(
        &tx.prepare_cached("INSERT INTO quarantine (topic, partition, \"offset\", event_type, error, message_key, payload, patient_id, withholds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (topic, partition, \"offset\") DO UPDATE SET error = EXCLUDED.error, status = 'open',
                 attempts = quarantine.attempts + 1, quarantined_at = now()").await?,
        &[&e.topic, &e.partition, &e.offset, &event_type, &fault_text(fault), &e.key, &e.payload, &patient, &withholds],
    )
    .await?;
    Ok(())
}

/// An operator's request to apply a quarantined event again, now that its cause is fixed. The
/// attempt runs in a savepoint: it either applies and the entry is resolved, or the entry stays
/// open with the new error. Replaying the log repeats the same attempts in the same order.
async fn reapply(
    tx: &Transaction<'_>,
    r: &QuarantineReapplyRequested,
    blobs: &dyn BlobStore,
) -> Result<(), EventError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached("SELECT message_key, payload FROM quarantine WHERE topic = $1 AND partition = $2 AND \"offset\" = $3 AND status = 'open'").await?,
            &[&r.topic, &r.partition, &r.offset],
        )
        .await?;
    let Some(row) = row else {
        tracing::info!(topic = %r.topic, partition = r.partition, offset = r.offset, "re-apply of an event not in quarantine (or resolved): nothing to do");
        return Ok(());
    };
    let Some(payload) = row.get::<_, Option<Vec<u8>>>(1) else {
        tx.execute(
            &tx.prepare_cached("UPDATE quarantine SET attempts = attempts + 1, error = 'the payload was not kept (set aside before V4); replay the log' WHERE topic = $1 AND partition = $2 AND \"offset\" = $3").await?,
            &[&r.topic, &r.partition, &r.offset],
        ).await?;
        return Ok(());
    };
    let e = Envelope {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        key: row.get(0),
        payload,
    };
    let mut state = BatchState::new(blobs);
    let mut ignored = Applied::default();
    let outcome = Box::pin(apply_in_savepoint(
        tx,
        "reapply",
        &e,
        &mut state,
        &mut ignored,
    ))
    .await?;
    match outcome {
        Ok(()) => {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE quarantine SET status = 'reapplied', resolved_at = $4, resolved_by = $5
                     WHERE topic = $1 AND partition = $2 AND \"offset\" = $3",
                )
                .await?,
                &[
                    &r.topic,
                    &r.partition,
                    &r.offset,
                    &at(r.requested_at),
                    &r.requested_by,
                ],
            )
            .await?;
            crate::metrics::reapplied();
            tracing::info!(topic = %r.topic, partition = r.partition, offset = r.offset, "quarantined event re-applied");
        }
        Err(EventError::Db(db)) if !is_event_fault(&db) => return Err(EventError::Db(db)),
        Err(EventError::Blobs(e)) => return Err(EventError::Blobs(e)),
        Err(fault) => {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE quarantine SET attempts = attempts + 1, error = $4
                     WHERE topic = $1 AND partition = $2 AND \"offset\" = $3",
                )
                .await?,
                &[&r.topic, &r.partition, &r.offset, &fault_text(&fault)],
            )
            .await?;
            tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, "quarantined event still cannot be applied");
        }
    }
    Ok(())
}

/// A bad event is set aside; a database error aborts the batch, to be retried (or, when it is the
/// event's content PostgreSQL refuses, to be applied event by event).
enum EventError {
    Decode(String),
    /// A claim check whose blob is not in the store (or not the bytes it names): set aside until
    /// the blob is restored and the event re-applied.
    Unresolved(String),
    /// The blob store could not be asked: retried, like the database being down.
    Blobs(platform::blobs::BlobError),
    Db(tokio_postgres::Error),
}

impl From<crate::claim_check::Unresolved> for EventError {
    fn from(e: crate::claim_check::Unresolved) -> Self {
        match e {
            crate::claim_check::Unresolved::Store(e) => EventError::Blobs(e),
            missing @ crate::claim_check::Unresolved::Missing(_) => {
                EventError::Unresolved(missing.to_string())
            }
        }
    }
}

impl From<tokio_postgres::Error> for EventError {
    fn from(e: tokio_postgres::Error) -> Self {
        EventError::Db(e)
    }
}

fn decoded<E: schemas::Event>(payload: &[u8]) -> Result<E, EventError> {
    schemas::decode::<E>(payload).map_err(|e| EventError::Decode(e.to_string()))
}

/// The enterprise patient each local identity belongs to in this batch: its own id, or the
/// survivor it was merged into. Forgotten at every merge.
#[derive(Default)]
struct KnownPatients(HashMap<PatientIdentity, uuid::Uuid>);

impl KnownPatients {
    /// Before a merge, a link or an unlink: serializes them across projector instances (so a
    /// chain, A into B and B into C, applied on two partitions at once still ends flat) and
    /// forgets what this batch resolved.
    async fn regroup(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock(7311002)")
                .await?,
            &[],
        )
        .await?;
        self.0.clear();
        Ok(())
    }

    /// Creates the patient on first sight; returns the enterprise id its records belong to.
    async fn resolve(
        &mut self,
        tx: &Transaction<'_>,
        identity: &PatientIdentity,
    ) -> Result<uuid::Uuid, tokio_postgres::Error> {
        if let Some(id) = self.0.get(identity) {
            return Ok(*id);
        }
        let id = ensure_patient(tx, identity).await?;
        self.0.insert(identity.clone(), id);
        Ok(id)
    }
}

/// A record ready to be written: decoded, its patient resolved.
struct Upsert {
    r: RecordReceived,
    patient_id: Option<uuid::Uuid>,
    digest: Vec<u8>,
    resource: Value,
}

const UPSERT_RECORD: &str = "INSERT INTO records (source_id, resource_type, resource_id, patient_id, organization_id, version,
                          content_sha256, resource, sensitivity, channel, received_at, message_id, event_id, identity_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
     ON CONFLICT (source_id, resource_type, resource_id) DO UPDATE SET
         patient_id = EXCLUDED.patient_id, identity_id = EXCLUDED.identity_id, organization_id = EXCLUDED.organization_id,
         version = EXCLUDED.version, content_sha256 = EXCLUDED.content_sha256,
         resource = EXCLUDED.resource, sensitivity = EXCLUDED.sensitivity, channel = EXCLUDED.channel,
         received_at = EXCLUDED.received_at, message_id = EXCLUDED.message_id, event_id = EXCLUDED.event_id
     -- A newer version, or an equal one later in the log, replaces; an older one or an identical
     -- duplicate changes nothing.
     WHERE records.version <= EXCLUDED.version AND records.content_sha256 <> EXCLUDED.content_sha256
     RETURNING 1";

impl Upsert {
    async fn prepare(
        tx: &Transaction<'_>,
        r: RecordReceived,
        known_patients: &mut KnownPatients,
        blobs: &dyn BlobStore,
    ) -> Result<Upsert, EventError> {
        // The digest is of the resource's bytes whichever way they came: a claim-checked record
        // and the same content sent inline are identical duplicates.
        let (resource, digest) = {
            let json = crate::claim_check::resource_json(&r, blobs).await?;
            let resource: Value = serde_json::from_str(&json)
                .map_err(|_| EventError::Decode("resource_json is not JSON".into()))?;
            (resource, Sha256::digest(json.as_bytes()).to_vec())
        };
        let patient_id = match &r.patient {
            Some(identity) => Some(known_patients.resolve(tx, identity).await?),
            None => None,
        };
        Ok(Upsert {
            r,
            patient_id,
            digest,
            resource,
        })
    }

    /// Whether the view changed (a new record, or a newer version with other content).
    async fn write(
        &self,
        tx: &Transaction<'_>,
        statement: &tokio_postgres::Statement,
    ) -> Result<bool, tokio_postgres::Error> {
        let r = &self.r;
        Ok(tx
            .query_opt(
                statement,
                &[
                    &r.source_id,
                    &r.resource_type,
                    &r.resource_id,
                    &self.patient_id,
                    &r.organization_id,
                    &r.version,
                    &self.digest,
                    &self.resource,
                    &r.sensitivity,
                    &r.channel,
                    &at(r.received_at),
                    &r.message_id,
                    &r.event_id,
                    &r.patient.as_ref().map(PatientIdentity::patient_id),
                ],
            )
            .await?
            .is_some())
    }

    /// A Patient's demographics follow its newest version, on its own identity's row (the
    /// enterprise patient shows its root identity's; a steward's review shows each side's).
    async fn write_patient(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let statement = tx.prepare_cached(UPSERT_RECORD).await?;
        if self.write(tx, &statement).await? {
            if let (Some(identity), Some(enterprise)) = (&self.r.patient, self.patient_id) {
                update_demographics(tx, identity, enterprise, &self.resource).await?;
            }
        }
        Ok(())
    }
}

/// Writes the records queued since the last flush, pipelined on the transaction's connection:
/// sent without waiting for each answer, executed in order, so the outcome is the one of writing
/// them one by one. Statements run while records wait in the queue never touch `records`; the two
/// that do — a merge, and a Patient whose outcome decides demographics — flush first.
async fn flush(
    tx: &Transaction<'_>,
    queued: &mut Vec<Upsert>,
) -> Result<(), tokio_postgres::Error> {
    if queued.is_empty() {
        return Ok(());
    }
    let statement = tx.prepare_cached(UPSERT_RECORD).await?;
    futures::future::try_join_all(queued.iter().map(|u| u.write(tx, &statement))).await?;
    queued.clear();
    Ok(())
}

/// Creates the patient when new; returns the enterprise id its records belong to (the survivor
/// of a merge, when it was merged away).
async fn ensure_patient(
    tx: &Transaction<'_>,
    identity: &PatientIdentity,
) -> Result<uuid::Uuid, tokio_postgres::Error> {
    let own = identity.patient_id();
    tx.execute(
        &tx.prepare_cached("INSERT INTO patients (patient_id, assigning_authority, mrn) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").await?,
        &[&own, &identity.assigning_authority, &identity.mrn],
    )
    .await?;
    let id = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT COALESCE(merged_into, patient_id) FROM patients WHERE patient_id = $1",
            )
            .await?,
            &[&own],
        )
        .await?
        .get(0);
    tx.execute(
        &tx.prepare_cached("INSERT INTO patient_identifiers (patient_id, system, value, identity_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING").await?,
        &[&id, &identity.assigning_authority, &identity.mrn, &own],
    )
    .await?;
    Ok(id)
}

/// ADT^A40: the prior patient's records and identifiers move to the survivor, the prior is
/// marked merged (search skips it) and linked, so its later records follow too. Consents stay
/// where they were recorded: the query API applies the stricter of the linked patients'.
async fn apply_merge(
    tx: &Transaction<'_>,
    m: &PatientMerged,
    known_patients: &mut KnownPatients,
) -> Result<(), EventError> {
    known_patients.regroup(tx).await?;
    // Both sides' enterprise patients (an identity already linked moves with its person).
    let prior = ensure_patient(tx, &m.prior).await?;
    let survivor = ensure_patient(tx, &m.survivor).await?;
    if survivor == prior {
        // Merging a patient into itself (or into one already merged into it) changes nothing.
        tracing::warn!(source = %m.source_id, "merge into the same patient ignored");
        return Ok(());
    }
    join_people(tx, survivor, prior, m.merged_at, &m.event_id, &m.source_id).await?;
    Ok(())
}

/// Every identity of enterprise patient `prior` becomes `survivor`'s: records, identifiers and
/// the identities themselves (`merged_into`, and the flat `patient_links`). Serialized by the
/// caller (`KnownPatients::regroup`). Both are enterprise ids (roots).
async fn join_people(
    tx: &Transaction<'_>,
    survivor: uuid::Uuid,
    prior: uuid::Uuid,
    at_micros: i64,
    event_id: &str,
    decided_by: &str,
) -> Result<(), tokio_postgres::Error> {
    let moved_from: Vec<uuid::Uuid> = tx
        .query(
            &tx.prepare_cached(
                "SELECT patient_id FROM patients WHERE patient_id = $1 OR merged_into = $1",
            )
            .await?,
            &[&prior],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute(
        &tx.prepare_cached("UPDATE records SET patient_id = $2 WHERE patient_id = $1")
            .await?,
        &[&prior, &survivor],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("UPDATE patient_identifiers SET patient_id = $2 WHERE patient_id = $1")
            .await?,
        &[&prior, &survivor],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached(
            "UPDATE patients SET merged_into = $2, linked_at = $3, updated_at = now() WHERE patient_id = ANY($1)",
        )
        .await?,
        &[&moved_from, &survivor, &at(at_micros)],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("UPDATE patient_links SET survivor_id = $2 WHERE survivor_id = $1")
            .await?,
        &[&prior, &survivor],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("INSERT INTO patient_links (prior_id, survivor_id, source_id, merged_at, event_id) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (prior_id) DO UPDATE SET survivor_id = EXCLUDED.survivor_id, source_id = EXCLUDED.source_id,
             merged_at = EXCLUDED.merged_at, event_id = EXCLUDED.event_id").await?,
        &[&prior, &survivor, &decided_by, &at(at_micros), &event_id],
    )
    .await?;
    Ok(())
}

/// Takes identity `own` out of its enterprise patient, with its own records and identifiers.
/// When it was the patient's root, the next identity linked into it (the earliest) becomes the
/// root of the others.
async fn split_identity(
    tx: &Transaction<'_>,
    own: uuid::Uuid,
) -> Result<(), tokio_postgres::Error> {
    let root: Option<uuid::Uuid> = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT COALESCE(merged_into, patient_id) FROM patients WHERE patient_id = $1",
            )
            .await?,
            &[&own],
        )
        .await?
        .map(|r| r.get(0));
    let Some(root) = root else { return Ok(()) };
    if root != own {
        tx.execute(
            &tx.prepare_cached("UPDATE patients SET merged_into = NULL, linked_at = NULL, updated_at = now() WHERE patient_id = $1")
                .await?,
            &[&own],
        )
        .await?;
        tx.execute(
            &tx.prepare_cached("DELETE FROM patient_links WHERE prior_id = $1")
                .await?,
            &[&own],
        )
        .await?;
        for table in ["records", "patient_identifiers"] {
            tx.execute(
                &tx.prepare_cached(&format!(
                    "UPDATE {table} SET patient_id = $1 WHERE identity_id = $1"
                ))
                .await?,
                &[&own],
            )
            .await?;
        }
        return Ok(());
    }
    let next: Option<uuid::Uuid> = tx
        .query_opt(
            &tx.prepare_cached("SELECT patient_id FROM patients WHERE merged_into = $1 ORDER BY linked_at NULLS LAST, patient_id LIMIT 1")
                .await?,
            &[&own],
        )
        .await?
        .map(|r| r.get(0));
    let Some(next) = next else { return Ok(()) };
    tx.execute(
        &tx.prepare_cached("UPDATE patients SET merged_into = CASE WHEN patient_id = $2 THEN NULL ELSE $2 END, updated_at = now() WHERE merged_into = $1")
            .await?,
        &[&own, &next],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("DELETE FROM patient_links WHERE prior_id = $1")
            .await?,
        &[&next],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("UPDATE patient_links SET survivor_id = $2 WHERE survivor_id = $1")
            .await?,
        &[&own, &next],
    )
    .await?;
    for table in ["records", "patient_identifiers"] {
        tx.execute(
            &tx.prepare_cached(&format!(
                "UPDATE {table} SET patient_id = $2 WHERE patient_id = $1 AND identity_id IS DISTINCT FROM $1"
            ))
            .await?,
            &[&own, &next],
        )
        .await?;
    }
    Ok(())
}

/// A decision of the master patient index: links join two enterprise patients like a merge,
/// an unlink splits an identity back out, reviews wait for a data steward.
async fn apply_identity(
    tx: &Transaction<'_>,
    d: &IdentityDecided,
    known_patients: &mut KnownPatients,
) -> Result<(), EventError> {
    known_patients.regroup(tx).await?;
    let own = d.identity.patient_id();
    let root = ensure_patient(tx, &d.identity).await?;
    if let Some(f) = &d.features {
        let features = serde_json::to_value(f).map_err(|e| EventError::Decode(e.to_string()))?;
        tx.execute(
            &tx.prepare_cached("UPDATE patients SET match_features = $2 WHERE patient_id = $1")
                .await?,
            &[&own, &features],
        )
        .await?;
    }
    let other = match &d.other {
        Some(o) => Some((o.patient_id(), ensure_patient(tx, o).await?)),
        None => None,
    };
    let at_time = at(d.decided_at);
    let comparison = |c: &schemas::MatchCandidate| -> Value {
        c.comparison
            .iter()
            .map(|f| (f.field.clone(), Value::from(f.level.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    const PERSON: &str =
        "SELECT patient_id FROM patients WHERE COALESCE(merged_into, patient_id) = ";
    match (d.action, other) {
        (IdentityAction::Link, Some((_, other_root))) => {
            if other_root != root {
                join_people(
                    tx,
                    other_root,
                    root,
                    d.decided_at,
                    &d.event_id,
                    &d.decided_by,
                )
                .await?;
            }
            tx.execute(
                &tx.prepare_cached(&format!(
                    "UPDATE identity_reviews SET status = 'linked', decided_at = $2, decided_by = $3
                     WHERE status = 'open' AND identity_id IN ({PERSON}$1) AND candidate_id IN ({PERSON}$1)"
                ))
                .await?,
                &[&other_root, &at_time, &d.decided_by],
            )
            .await?;
        }
        (IdentityAction::NotAMatch, Some((other_own, _))) => {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE identity_reviews r SET status = 'not_a_match', decided_at = $3, decided_by = $4
                     WHERE status = 'open' AND ((r.identity_id = $1 AND r.candidate_id = $2) OR (r.identity_id = $2 AND r.candidate_id = $1))",
                )
                .await?,
                &[&own, &other_own, &at_time, &d.decided_by],
            )
            .await?;
        }
        (IdentityAction::Review, _) => {
            for c in &d.candidates {
                ensure_patient(tx, &c.identity).await?;
                tx.execute(
                    &tx.prepare_cached(
                        "INSERT INTO identity_reviews (event_id, identity_id, candidate_id, score, comparison, model, opened_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    )
                    .await?,
                    &[&d.event_id, &own, &c.identity.patient_id(), &c.score, &comparison(c), &d.model, &at_time],
                )
                .await?;
            }
        }
        (IdentityAction::Unlink, _) => split_identity(tx, own).await?,
        _ => {}
    }
    if d.action != IdentityAction::Updated {
        let action = serde_json::to_value(d.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO identity_decisions (event_id, decided_at, action, identity_id, other_id, decided_by, decider_role, score, comparison)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .await?,
            &[
                &d.event_id,
                &at_time,
                &action,
                &own,
                &d.other.as_ref().map(PatientIdentity::patient_id),
                &d.decided_by,
                &d.decider_role,
                &d.score,
                &d.candidates.first().map(comparison),
            ],
        )
        .await?;
    }
    Ok(())
}

async fn update_demographics(
    tx: &Transaction<'_>,
    identity: &PatientIdentity,
    enterprise: uuid::Uuid,
    patient: &Value,
) -> Result<(), tokio_postgres::Error> {
    let d = crate::demographics::Demographics::from_patient(patient);
    let id = identity.patient_id();
    tx.execute(
        &tx.prepare_cached("UPDATE patients SET family = $2, given = $3, display_name = $4, birth_date = $5, sex = $6, updated_at = now()
         WHERE patient_id = $1").await?,
        &[&id, &d.family, &d.given, &d.display_name, &d.birth_date, &d.sex],
    )
    .await?;
    // The Patient's identifiers replace the ones it sent before; its own local identity stays.
    tx.execute(
        &tx.prepare_cached("DELETE FROM patient_identifiers i WHERE i.identity_id = $1 AND NOT (i.system = $2 AND i.value = $3)").await?,
        &[&id, &identity.assigning_authority, &identity.mrn],
    )
    .await?;
    for (system, value) in &d.identifiers {
        tx.execute(
            &tx.prepare_cached("INSERT INTO patient_identifiers (patient_id, system, value, identity_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING").await?,
            &[&enterprise, system, value, &id],
        )
        .await?;
    }
    Ok(())
}

/// Every decision is kept, with its place in the log (`offset`: one patient's consents share a
/// partition): the query API chooses the one in force at read time, so a decision effective next
/// week does not erase today's, and a quarantined decision re-applied later takes its own place.
async fn apply_consent(
    tx: &Transaction<'_>,
    c: &ConsentRecorded,
    offset: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached("INSERT INTO consents (patient_id, organization_id, decision, effective_at, expires_at, part2, method,
                               recorded_at, recorded_by, event_id, log_offset)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (event_id) DO NOTHING").await?,
        &[
            &c.patient.patient_id(),
            &c.organization_id,
            &c.decision,
            &c.effective_at.map(at),
            &c.expires_at.map(at),
            &c.part2,
            &c.method,
            &at(c.recorded_at),
            &c.recorded_by,
            &c.event_id,
            &offset,
        ],
    )
    .await?;
    Ok(())
}

async fn apply_source(
    tx: &Transaction<'_>,
    s: &SourceRegistered,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached("INSERT INTO sources (source_id, name, organization_id, feed, assigning_authority, data_elements, part2, registered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (source_id) DO UPDATE SET
             name = EXCLUDED.name, organization_id = EXCLUDED.organization_id, feed = EXCLUDED.feed,
             assigning_authority = EXCLUDED.assigning_authority, data_elements = EXCLUDED.data_elements,
             part2 = EXCLUDED.part2, registered_at = EXCLUDED.registered_at").await?,
        &[
            &s.source_id,
            &s.name,
            &s.organization_id,
            &s.feed,
            &s.assigning_authority,
            &s.data_elements,
            &s.part2,
            &at(s.registered_at),
        ],
    )
    .await?;
    Ok(())
}

async fn apply_dead_letter(
    tx: &Transaction<'_>,
    d: &RecordRejected,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached("INSERT INTO dead_letters (event_id, rejected_at, source_id, channel, message_id, item_index, reason, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING").await?,
        &[
            &d.event_id,
            &at(d.rejected_at),
            &d.source_id,
            &d.channel,
            &d.message_id,
            &d.index,
            &d.reason,
            &d.payload,
        ],
    )
    .await?;
    Ok(())
}

async fn apply_resubmitted(
    tx: &Transaction<'_>,
    r: &DeadLetterResubmitted,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached("UPDATE dead_letters SET status = 'resubmitted', resubmitted_at = $2, resubmitted_position = $3,
             resubmit_outcome = $4, resubmit_reason = $5
         WHERE event_id = $1").await?,
        &[
            &r.dead_letter_id,
            &at(r.resubmitted_at),
            &r.position,
            &r.outcome,
            &r.reason,
        ],
    )
    .await?;
    Ok(())
}

/// Patient ids in privacy events are enterprise ids the query API resolved; a malformed one is a
/// bad event, set aside in `quarantine`.
fn patient_uuid(id: &str) -> Result<uuid::Uuid, EventError> {
    uuid::Uuid::parse_str(id).map_err(|_| EventError::Decode("patient_id is not a UUID".into()))
}

async fn apply_access(tx: &Transaction<'_>, a: &AccessRecorded) -> Result<(), EventError> {
    tx.execute(
        &tx.prepare_cached("INSERT INTO access_log (event_id, at, user_id, user_email, organization_id, role, patient_id, action, basis,
                                 outcome, returned, withheld)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING").await?,
        &[
            &a.event_id,
            &at(a.at),
            &a.user_id,
            &a.user_email,
            &a.organization_id,
            &a.role,
            &patient_uuid(&a.patient_id)?,
            &a.action,
            &a.basis,
            &a.outcome,
            &a.returned,
            &a.withheld,
        ],
    )
    .await?;
    Ok(())
}

async fn apply_break_glass(tx: &Transaction<'_>, b: &BreakGlassRecorded) -> Result<(), EventError> {
    tx.execute(
        &tx.prepare_cached("INSERT INTO break_glass (event_id, at, user_id, user_email, organization_id, role, patient_id, reason, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING").await?,
        &[
            &b.event_id,
            &at(b.at),
            &b.user_id,
            &b.user_email,
            &b.organization_id,
            &b.role,
            &patient_uuid(&b.patient_id)?,
            &b.reason,
            &at(b.expires_at),
        ],
    )
    .await?;
    Ok(())
}
