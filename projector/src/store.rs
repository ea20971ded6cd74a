//! The views in PostgreSQL: every SQL statement of the projector, and applying one batch of
//! events together with the offsets it advances, in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Pool, Transaction};
use schemas::{
    topics, AccessRecorded, BreakGlassRecorded, ConsentRecorded, DeadLetterResubmitted,
    PatientIdentity, PatientMerged, RecordReceived, RecordRejected, SourceRegistered,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One consumed message, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
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
}

/// What a batch changed, for metrics and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub events: usize,
    pub skipped_already_applied: usize,
    pub undecodable: usize,
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

fn at(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// Apply `batch` and advance the offsets, all or nothing. Messages below the stored offset of
/// their partition were applied before (a redelivery after a crash) and are skipped.
pub async fn apply_batch(pool: &Pool, batch: &[Envelope]) -> Result<Applied, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
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
        next.insert(key, row.map(|r| r.get(0)).unwrap_or(0));
    }

    let mut applied = Applied::default();
    let mut known_patients = KnownPatients::default();
    let mut last_received: HashMap<String, i64> = HashMap::new();
    let mut queued: Vec<Upsert> = Vec::new();
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
        let outcome = match e.topic.as_str() {
            t if t == topics::RECORDS.name && schemas::is::<PatientMerged>(&e.payload) => {
                flush(&tx, &mut queued).await?;
                async { apply_merge(&tx, &decoded(&e.payload)?, &mut known_patients).await }.await
            }
            t if t == topics::RECORDS.name => match decoded::<RecordReceived>(&e.payload) {
                Ok(r) => {
                    let latest = last_received
                        .entry(r.source_id.clone())
                        .or_insert(r.received_at);
                    *latest = (*latest).max(r.received_at);
                    applied.newest_received_at =
                        applied.newest_received_at.max(Some(r.received_at));
                    match Upsert::prepare(&tx, r, &mut known_patients).await {
                        // A Patient's outcome decides its demographics: written at once.
                        Ok(u) if u.r.resource_type == "Patient" => {
                            flush(&tx, &mut queued).await?;
                            u.write_patient(&tx).await.map_err(EventError::Db)
                        }
                        Ok(u) => {
                            queued.push(u);
                            Ok(())
                        }
                        Err(err) => Err(err),
                    }
                }
                Err(err) => Err(err),
            },
            t if t == topics::CONSENTS.name => {
                async { Ok(apply_consent(&tx, &decoded(&e.payload)?).await?) }.await
            }
            t if t == topics::SOURCES.name => {
                async { Ok(apply_source(&tx, &decoded(&e.payload)?).await?) }.await
            }
            t if t == topics::ACCESS.name => {
                async { apply_access(&tx, &decoded(&e.payload)?).await }.await
            }
            t if t == topics::BREAK_GLASS.name => {
                async { apply_break_glass(&tx, &decoded(&e.payload)?).await }.await
            }
            t if t == topics::DEAD_LETTERS.name
                && schemas::is::<DeadLetterResubmitted>(&e.payload) =>
            {
                async { Ok(apply_resubmitted(&tx, &decoded(&e.payload)?).await?) }.await
            }
            t if t == topics::DEAD_LETTERS.name => {
                async { Ok(apply_dead_letter(&tx, &decoded(&e.payload)?).await?) }.await
            }
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => applied.events += 1,
            Err(EventError::Db(err)) => return Err(err.into()),
            Err(EventError::Decode(error)) => {
                applied.undecodable += 1;
                tracing::error!(topic = %e.topic, partition = e.partition, offset = e.offset, "undecodable event kept in projection_errors");
                tx.execute(
                    &tx.prepare_cached("INSERT INTO projection_errors (topic, partition, \"offset\", error) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING").await?,
                    &[&e.topic, &e.partition, &e.offset, &error],
                )
                .await?;
            }
        }
    }

    flush(&tx, &mut queued).await?;
    for (source_id, micros) in &last_received {
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

/// A bad event is recorded and passed over; a database error aborts the batch, to be retried.
enum EventError {
    Decode(String),
    Db(tokio_postgres::Error),
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
                          content_sha256, resource, sensitivity, channel, received_at, message_id, event_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
     ON CONFLICT (source_id, resource_type, resource_id) DO UPDATE SET
         patient_id = EXCLUDED.patient_id, organization_id = EXCLUDED.organization_id,
         version = EXCLUDED.version, content_sha256 = EXCLUDED.content_sha256,
         resource = EXCLUDED.resource, sensitivity = EXCLUDED.sensitivity, channel = EXCLUDED.channel,
         received_at = EXCLUDED.received_at, message_id = EXCLUDED.message_id, event_id = EXCLUDED.event_id
     -- A newer version replaces; an older one or an identical duplicate changes nothing.
     WHERE records.version < EXCLUDED.version AND records.content_sha256 <> EXCLUDED.content_sha256
     RETURNING 1";

impl Upsert {
    async fn prepare(
        tx: &Transaction<'_>,
        r: RecordReceived,
        known_patients: &mut KnownPatients,
    ) -> Result<Upsert, EventError> {
        let resource: Value = serde_json::from_str(&r.resource_json)
            .map_err(|_| EventError::Decode("resource_json is not JSON".into()))?;
        let patient_id = match &r.patient {
            Some(identity) => Some(known_patients.resolve(tx, identity).await?),
            None => None,
        };
        let digest = Sha256::digest(r.resource_json.as_bytes()).to_vec();
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
                ],
            )
            .await?
            .is_some())
    }

    /// A Patient's demographics follow its newest version, unless it was merged away (the
    /// survivor's own Patient keeps deciding them then).
    async fn write_patient(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let statement = tx.prepare_cached(UPSERT_RECORD).await?;
        if self.write(tx, &statement).await? {
            if let Some(identity) = &self.r.patient {
                if self.patient_id == Some(identity.patient_id()) {
                    update_demographics(tx, identity, &self.resource).await?;
                }
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
                "SELECT COALESCE((SELECT survivor_id FROM patient_links WHERE prior_id = $1), $1)",
            )
            .await?,
            &[&own],
        )
        .await?
        .get(0);
    tx.execute(
        &tx.prepare_cached("INSERT INTO patient_identifiers (patient_id, system, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").await?,
        &[&id, &identity.assigning_authority, &identity.mrn],
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
    // Merges are serialized across projector instances, so a chain (A into B, B into C) applied
    // on two partitions at once still ends flat.
    tx.execute(
        &tx.prepare_cached("SELECT pg_advisory_xact_lock(7311002)")
            .await?,
        &[],
    )
    .await?;
    known_patients.0.clear();
    let prior = m.prior.patient_id();
    ensure_patient(tx, &m.prior).await?;
    let survivor = ensure_patient(tx, &m.survivor).await?;
    if survivor == prior {
        // Merging a patient into itself (or into one already merged into it) changes nothing.
        tracing::warn!(source = %m.source_id, "merge into the same patient ignored");
        return Ok(());
    }
    // Whatever still belongs to the prior (or to patients merged into it earlier).
    let moved_from: Vec<uuid::Uuid> = tx
        .query(
            &tx.prepare_cached(
                "SELECT $1::uuid UNION SELECT prior_id FROM patient_links WHERE survivor_id = $1",
            )
            .await?,
            &[&prior],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute(
        &tx.prepare_cached("UPDATE records SET patient_id = $2 WHERE patient_id = ANY($1)")
            .await?,
        &[&moved_from, &survivor],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("INSERT INTO patient_identifiers (patient_id, system, value)
         SELECT $2, system, value FROM patient_identifiers WHERE patient_id = ANY($1) ON CONFLICT DO NOTHING").await?,
        &[&moved_from, &survivor],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("DELETE FROM patient_identifiers WHERE patient_id = ANY($1)")
            .await?,
        &[&moved_from],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached(
            "UPDATE patients SET merged_into = $2, updated_at = now() WHERE patient_id = ANY($1)",
        )
        .await?,
        &[&moved_from, &survivor],
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
        &[&prior, &survivor, &m.source_id, &at(m.merged_at), &m.event_id],
    )
    .await?;
    Ok(())
}

async fn update_demographics(
    tx: &Transaction<'_>,
    identity: &PatientIdentity,
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
    // The Patient's identifiers replace the previous ones, except the local identities that name
    // this patient: its own and those of the patients merged into it.
    tx.execute(
        &tx.prepare_cached("DELETE FROM patient_identifiers i WHERE i.patient_id = $1 AND NOT (i.system = $2 AND i.value = $3)
           AND NOT EXISTS (SELECT 1 FROM patient_links l JOIN patients p ON p.patient_id = l.prior_id
                           WHERE l.survivor_id = $1 AND p.assigning_authority = i.system AND p.mrn = i.value)").await?,
        &[&id, &identity.assigning_authority, &identity.mrn],
    )
    .await?;
    for (system, value) in &d.identifiers {
        tx.execute(
            &tx.prepare_cached("INSERT INTO patient_identifiers (patient_id, system, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").await?,
            &[&id, system, value],
        )
        .await?;
    }
    Ok(())
}

async fn apply_consent(
    tx: &Transaction<'_>,
    c: &ConsentRecorded,
) -> Result<(), tokio_postgres::Error> {
    // Events of one patient share a partition, so the last one applied is the latest decision.
    tx.execute(
        &tx.prepare_cached("INSERT INTO consents (patient_id, organization_id, decision, effective_at, expires_at, part2, method,
                               recorded_at, recorded_by, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (patient_id, organization_id) DO UPDATE SET
             decision = EXCLUDED.decision, effective_at = EXCLUDED.effective_at, expires_at = EXCLUDED.expires_at,
             part2 = EXCLUDED.part2, method = EXCLUDED.method, recorded_at = EXCLUDED.recorded_at,
             recorded_by = EXCLUDED.recorded_by, event_id = EXCLUDED.event_id").await?,
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
/// bad event, kept in `projection_errors`.
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
