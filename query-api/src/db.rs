//! Every SQL statement the query API runs, all parameterised. The views are the projector's.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use schemas::Position;
use serde_json::Value;
use uuid::Uuid;

use crate::consent::ConsentRow;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

#[derive(Debug, Default)]
pub struct PatientSearch {
    pub family: Option<String>,
    pub given: Option<String>,
    pub birth_date: Option<String>,
    /// `(system, value)`; an empty system matches any.
    pub identifier: Option<(String, String)>,
}

pub struct PatientRow {
    pub id: Uuid,
    pub name: Option<String>,
    pub family: Option<String>,
    pub given: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub identifiers: Value,
}

/// `LIKE` prefix pattern for user input, with its wildcards escaped.
fn prefix_pattern(s: &str) -> String {
    let escaped = s
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}%")
}

/// Patients matching `q`, at most `limit`, each with whether it matched only through identifiers
/// of 42 CFR Part 2 programs (which a caller without Part 2 consent must not learn).
pub async fn search_patients(
    pool: &Pool,
    q: &PatientSearch,
    limit: i64,
) -> Result<Vec<(PatientRow, bool)>, DbError> {
    let client = pool.get().await?;
    let family = q.family.as_deref().map(prefix_pattern);
    let given = q.given.as_deref().map(prefix_pattern);
    let (system, value) = match &q.identifier {
        Some((s, v)) => (Some(s.as_str()), Some(v.as_str())),
        None => (None, None),
    };
    let rows = client
        .query(
            &client.prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS},
                    $5::text IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM patient_identifiers i
                        WHERE i.patient_id = p.patient_id AND i.value = $5 AND ($4::text = '' OR i.system = $4)
                          AND NOT {PART2_IDENTIFIER})
             FROM patients p
             -- One entry per enterprise patient, found by the demographics of any identity linked
             -- into it (a maiden name at one source, a married name at another) and by any of
             -- their identifiers.
             WHERE p.patient_id IN (
                 SELECT COALESCE(m.merged_into, m.patient_id) FROM patients m
                 WHERE ($1::text IS NULL OR lower(m.family) LIKE $1)
                   AND ($2::text IS NULL OR lower(m.given) LIKE $2)
                   AND ($3::text IS NULL OR m.birth_date = $3)
                   AND ($5::text IS NULL OR EXISTS (
                         SELECT 1 FROM patient_identifiers i
                         WHERE i.patient_id = COALESCE(m.merged_into, m.patient_id) AND i.value = $5
                           AND ($4::text = '' OR i.system = $4))))
             ORDER BY p.family NULLS LAST, p.given NULLS LAST, p.patient_id
             LIMIT $6"
            )).await?,
            &[&family, &given, &q.birth_date, &system, &value, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (patient_row(r), r.get(7))).collect())
}

/// Whether identifier `i` is a 42 CFR Part 2 program's: its system is the assigning authority of
/// Part 2 sources only. An authority a program shares with its hospital (one MRN domain) names
/// the hospital's patient, which says nothing of the program.
macro_rules! part2_identifier {
    () => {
        "(EXISTS (SELECT 1 FROM sources s WHERE s.assigning_authority = i.system)
          AND NOT EXISTS (SELECT 1 FROM sources s WHERE s.assigning_authority = i.system AND NOT s.part2))"
    };
}
const PART2_IDENTIFIER: &str = part2_identifier!();

/// What a demographic read shows of a patient (`PatientRow`), in this order. Each identifier says
/// whether it is a Part 2 program's (`part2`): `http::patients::visible_identifiers` drops those
/// for a caller without Part 2 consent.
const PATIENT_COLUMNS: &str = concat!(
    "p.patient_id, p.display_name, p.family, p.given, p.birth_date, p.sex,
    COALESCE((SELECT json_agg(json_build_object('system', i.system, 'value', i.value, 'part2', ",
    part2_identifier!(),
    ") ORDER BY i.system, i.value)
              -- Every linked identity's, once (two sources may send the same identifier).
              FROM (SELECT DISTINCT d.system, d.value FROM patient_identifiers d
                    -- Searchable, but a Social Security number is not shown.
                    WHERE d.patient_id = p.patient_id AND d.system <> 'http://hl7.org/fhir/sid/us-ssn') i), '[]'::json)"
);

fn patient_row(r: &tokio_postgres::Row) -> PatientRow {
    PatientRow {
        id: r.get(0),
        name: r.get(1),
        family: r.get(2),
        given: r.get(3),
        birth_date: r.get(4),
        sex: r.get(5),
        identifiers: r.get(6),
    }
}

/// One patient's demographics, by enterprise id (a survivor's, see `patient`).
pub async fn patient_demographics(pool: &Pool, id: Uuid) -> Result<Option<PatientRow>, DbError> {
    let client = pool.get().await?;
    let sql = format!("SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.patient_id = $1");
    Ok(client
        .query_opt(&client.prepare_cached(&sql).await?, &[&id])
        .await?
        .as_ref()
        .map(patient_row))
}

/// The enterprise patient an id stands for: itself, or the survivor it was merged into (ADT^A40);
/// `None` when the views do not know it.
pub async fn patient(pool: &Pool, id: Uuid) -> Result<Option<Uuid>, DbError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt(
            &client
                .prepare_cached(
                    "SELECT COALESCE(merged_into, patient_id) FROM patients WHERE patient_id = $1",
                )
                .await?,
            &[&id],
        )
        .await?
        .map(|r| r.get(0)))
}

/// The consent rows that can apply to `org`'s users, for each patient: its own and those of the
/// patients merged into it, at least one row per linked patient (`consent::ConsentRow::member`).
pub async fn consents(
    pool: &Pool,
    patients: &[Uuid],
    org: &str,
) -> Result<HashMap<Uuid, Vec<ConsentRow>>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &client.prepare_cached("WITH members AS (
                 SELECT p AS patient_id, p AS member FROM unnest($1::uuid[]) AS p
                 UNION SELECT survivor_id, prior_id FROM patient_links WHERE survivor_id = ANY($1))
             SELECT m.patient_id, m.member, COALESCE(c.organization_id, ''), COALESCE(c.decision, ''),
                    c.effective_at, c.expires_at, COALESCE(c.part2, false), COALESCE(c.log_offset, -1),
                    EXISTS (SELECT 1 FROM quarantine q WHERE q.withholds AND q.status = 'open'
                                AND (q.patient_id = m.member OR q.patient_id IS NULL)),
                    c.recorded_at, p.linked_at
             FROM members m
             LEFT JOIN patients p ON p.patient_id = m.member AND p.merged_into IS NOT NULL
             LEFT JOIN consents c ON c.patient_id = m.member AND c.organization_id IN ($2, '*')").await?,
            &[&patients, &org],
        )
        .await?;
    let mut out: HashMap<Uuid, Vec<ConsentRow>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(ConsentRow {
            member: r.get(1),
            organization_id: r.get(2),
            decision: r.get(3),
            effective_at: r.get(4),
            expires_at: r.get(5),
            part2: r.get(6),
            seq: r.get(7),
            withheld: r.get(8),
            recorded_at: r.get(9),
            linked_at: r.get(10),
        });
    }
    Ok(out)
}

/// One recorded consent decision, for the history a privacy officer reads.
pub struct ConsentEntry {
    pub row: ConsentRow,
    pub method: String,
    pub recorded_by: String,
    pub recorded_at: std::time::SystemTime,
}

/// Every decision recorded for `patient` and the patients merged into it, oldest first.
pub async fn consent_history(pool: &Pool, patient: Uuid) -> Result<Vec<ConsentEntry>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "WITH members AS (SELECT $1::uuid AS member
                                      UNION SELECT prior_id FROM patient_links WHERE survivor_id = $1)
                     SELECT c.patient_id, c.organization_id, c.decision, c.effective_at, c.expires_at, c.part2,
                            c.log_offset, c.method, c.recorded_by, c.recorded_at
                     FROM consents c JOIN members m ON c.patient_id = m.member
                     ORDER BY c.recorded_at, c.log_offset",
                )
                .await?,
            &[&patient],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ConsentEntry {
            row: ConsentRow {
                member: r.get(0),
                organization_id: r.get(1),
                decision: r.get(2),
                effective_at: r.get(3),
                expires_at: r.get(4),
                part2: r.get(5),
                seq: r.get(6),
                withheld: false,
                recorded_at: Some(r.get(9)),
                linked_at: None,
            },
            method: r.get(7),
            recorded_by: r.get(8),
            recorded_at: r.get(9),
        })
        .collect())
}

/// How many consent events for the patient (or for an unknown patient) the projector set aside:
/// while any is open, the patient's clinical data is withheld.
pub async fn consent_unresolved(pool: &Pool, patient: Uuid) -> Result<i64, DbError> {
    let client = pool.get().await?;
    Ok(client
        .query_one(
            &client
                .prepare_cached(
                    "WITH members AS (SELECT $1::uuid AS member
                                      UNION SELECT prior_id FROM patient_links WHERE survivor_id = $1)
                     SELECT count(*) FROM quarantine q
                     WHERE q.withholds AND q.status = 'open'
                       AND (q.patient_id IS NULL OR q.patient_id IN (SELECT member FROM members))",
                )
                .await?,
            &[&patient],
        )
        .await?
        .get(0))
}

/// One current record with where and when the HIE got it (for FHIR paging and `_lastUpdated`).
pub struct RecordRow {
    pub resource: Value,
    pub part2: bool,
    pub source_id: String,
    /// When the HIE received this version, in microseconds since the epoch.
    pub received_micros: i64,
}

/// A patient's current records, each with whether it is 42 CFR Part 2 data, its source and
/// received time.
pub async fn records(
    pool: &Pool,
    patient: Uuid,
    resource_type: Option<&str>,
) -> Result<Vec<RecordRow>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "SELECT resource, sensitivity = 'part2', source_id,
                            (EXTRACT(EPOCH FROM received_at) * 1000000)::bigint
                     FROM records
             WHERE patient_id = $1 AND ($2::text IS NULL OR resource_type = $2)
             ORDER BY resource_type, received_at, resource_id",
                )
                .await?,
            &[&patient, &resource_type],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RecordRow {
            resource: r.get(0),
            part2: r.get(1),
            source_id: r.get(2),
            received_micros: r.get(3),
        })
        .collect())
}

/// Whether `user` holds an unexpired Break-the-Glass grant for `patient`.
pub async fn active_break_glass(
    pool: &Pool,
    patient: Uuid,
    user_id: &str,
) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &client.prepare_cached("SELECT 1 FROM break_glass WHERE patient_id = $1 AND user_id = $2 AND expires_at > now() LIMIT 1").await?,
            &[&patient, &user_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Whether `org` is a source organization of any of the patient's records.
pub async fn organization_holds(pool: &Pool, patient: Uuid, org: &str) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &client
                .prepare_cached(
                    "SELECT 1 FROM records WHERE patient_id = $1 AND organization_id = $2 LIMIT 1",
                )
                .await?,
            &[&patient, &org],
        )
        .await?;
    Ok(row.is_some())
}

const TIMESTAMP: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";

pub async fn access_log(pool: &Pool, patient: Uuid) -> Result<Vec<Value>, DbError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT json_build_object('at', to_char(at AT TIME ZONE 'UTC', {TIMESTAMP}), 'user', user_id, 'email', user_email,
                'organization', organization_id, 'role', role, 'action', action, 'basis', basis, 'outcome', outcome,
                'returned', returned, 'withheld', withheld)
         FROM access_log
         WHERE patient_id = $1 OR patient_id IN (SELECT prior_id FROM patient_links WHERE survivor_id = $1)
         ORDER BY at, event_id"
    );
    let rows = client
        .query(&client.prepare_cached(&sql).await?, &[&patient])
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
}

/// Break-the-Glass grants since `since`, for one organization or (`None`) all.
pub async fn break_glass_report(
    pool: &Pool,
    org: Option<&str>,
    since: std::time::SystemTime,
) -> Result<Vec<Value>, DbError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT json_build_object('at', to_char(at AT TIME ZONE 'UTC', {TIMESTAMP}), 'user', user_id, 'email', user_email,
                'organization', organization_id, 'role', role, 'patient_id', patient_id, 'reason', reason,
                'expires_at', to_char(expires_at AT TIME ZONE 'UTC', {TIMESTAMP}))
         FROM break_glass WHERE ($1::text IS NULL OR organization_id = $1) AND at >= $2 ORDER BY at, event_id"
    );
    let rows = client
        .query(&client.prepare_cached(&sql).await?, &[&org, &since])
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
}

pub async fn sources(pool: &Pool) -> Result<Vec<Value>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &client.prepare_cached("SELECT json_build_object('id', source_id, 'name', name, 'organization_id', organization_id,
                    'feed', feed, 'data_elements', data_elements, 'part2', part2,
                    'last_received_at', to_char(last_received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))
             FROM sources ORDER BY source_id").await?,
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
}

/// True once the views include every offset of `position`.
pub async fn includes(pool: &Pool, position: &Position) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let topics: Vec<&str> = position.entries().map(|(t, _, _)| t).collect();
    let rows = client
        .query(
            &client.prepare_cached("SELECT topic, partition, next_offset FROM projection_offsets WHERE topic = ANY($1)").await?,
            &[&topics],
        )
        .await?;
    let next: HashMap<(String, i32), i64> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok(position
        .entries()
        .all(|(t, p, o)| next.get(&(t.to_string(), p)).is_some_and(|n| *n > o)))
}

/// The database answers and the projector has created the views.
pub async fn ping(pool: &Pool) -> bool {
    let Ok(client) = pool.get().await else {
        return false;
    };
    // Not prepared: a health check is not worth a cached statement on every connection.
    client
        .query_one("SELECT to_regclass('public.records') IS NOT NULL", &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
}

/// The enterprise patient a source identity belongs to, if the views know the identity.
pub async fn identity_patient(
    pool: &Pool,
    identity: &schemas::PatientIdentity,
) -> Result<Option<Uuid>, DbError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt(
            &client
                .prepare_cached(
                    "SELECT COALESCE(merged_into, patient_id) FROM patients WHERE patient_id = $1",
                )
                .await?,
            &[&identity.patient_id()],
        )
        .await?
        .map(|r| r.get(0)))
}

/// The open possible matches, oldest first, each with both identities' demographics (as the
/// views show them and as the matcher compared them) and the evidence. Never clinical data.
pub async fn identity_reviews(pool: &Pool, limit: i64) -> Result<Vec<Value>, DbError> {
    let client = pool.get().await?;
    let side = |alias: &str| {
        format!(
            "json_build_object('assigning_authority', {a}.assigning_authority, 'mrn', {a}.mrn,
                'enterprise_id', COALESCE({a}.merged_into, {a}.patient_id), 'name', {a}.display_name,
                'family', {a}.family, 'given', {a}.given, 'birth_date', {a}.birth_date, 'sex', {a}.sex,
                'compared', {a}.match_features)",
            a = alias
        )
    };
    let sql = format!(
        "SELECT json_build_object('id', r.event_id || '/' || r.candidate_id, 'opened_at', r.opened_at,
                'score', r.score, 'evidence', r.comparison, 'model', r.model,
                'identity', {}, 'candidate', {})
         FROM identity_reviews r
         JOIN patients a ON a.patient_id = r.identity_id
         JOIN patients b ON b.patient_id = r.candidate_id
         WHERE r.status = 'open'
         ORDER BY r.opened_at, r.event_id, r.candidate_id
         LIMIT $1",
        side("a"),
        side("b")
    );
    Ok(client
        .query(&client.prepare_cached(&sql).await?, &[&limit])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
