//! The `dead_letters` view (the projector's), read-only: every SQL statement of the CLI.

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

/// Which dead letters a command is about.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub source: Option<String>,
    /// Channels as recorded (`fhir_bundle`, `hl7v2_mllp`, ...).
    pub channels: Option<Vec<String>>,
    /// `open`, `resubmitted`, or `None` for all.
    pub status: Option<String>,
    pub reason_contains: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Letter {
    pub id: String,
    pub rejected_at: String,
    /// The source as recorded, or (when ingest did not know it) the MSH-4 an HL7 payload names.
    pub source: Option<String>,
    /// The source was not registered when it came: `source` is what the payload claims.
    pub source_unregistered: bool,
    pub channel: String,
    pub message_id: String,
    pub index: Option<i64>,
    pub reason: String,
    pub payload_bytes: i64,
    pub status: String,
    pub resubmitted_at: Option<String>,
    pub resubmit_outcome: Option<String>,
    /// Exactly the bytes received.
    #[serde(skip)]
    pub payload: Vec<u8>,
}

pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL)")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

const COLUMNS: &str = "event_id, to_char(rejected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), source_id,
    channel, message_id, item_index, reason, octet_length(payload)::bigint, status,
    to_char(resubmitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), resubmit_outcome, payload";

fn letter(r: &tokio_postgres::Row) -> Letter {
    let recorded: Option<String> = r.get(2);
    let payload: Vec<u8> = r.get(11);
    let claimed = recorded
        .is_none()
        .then(|| msh4(&String::from_utf8_lossy(&payload)))
        .flatten();
    Letter {
        id: r.get(0),
        rejected_at: r.get(1),
        source_unregistered: claimed.is_some(),
        source: recorded.or(claimed),
        channel: r.get(3),
        message_id: r.get(4),
        index: r.get(5),
        reason: r.get(6),
        payload_bytes: r.get(7),
        status: r.get(8),
        resubmitted_at: r.get(9),
        resubmit_outcome: r.get(10),
        payload,
    }
}

/// Dead letters matching `f`, oldest first. The source filter also matches letters of a source
/// that was not registered yet, by the MSH-4 of their HL7 payload.
pub async fn select(db: &Client, f: &Filter) -> Result<Vec<Letter>> {
    let like = f.reason_contains.as_ref().map(|s| {
        format!(
            "%{}%",
            s.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text[] IS NULL OR channel = ANY($2))
           AND ($3::text IS NULL OR reason ILIKE $3)
           AND ($4::text IS NULL OR source_id = $4 OR (source_id IS NULL AND substring(payload FROM 1 FOR 3) = 'MSH'::bytea))
         ORDER BY rejected_at, event_id"
    );
    let rows = db
        .query(&sql, &[&f.status, &f.channels, &like, &f.source])
        .await
        .context("reading dead_letters")?;
    let mut letters: Vec<Letter> = rows.iter().map(letter).collect();
    if let Some(source) = &f.source {
        letters.retain(|l| l.source.as_deref() == Some(source.as_str()));
    }
    if let Some(limit) = f.limit {
        letters.truncate(limit.max(0) as usize);
    }
    Ok(letters)
}

pub async fn by_ids(db: &Client, ids: &[String]) -> Result<Vec<Option<Letter>>> {
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE event_id = ANY($1)");
    let rows = db
        .query(&sql, &[&ids])
        .await
        .context("reading dead_letters")?;
    let found: Vec<Letter> = rows.iter().map(letter).collect();
    Ok(ids
        .iter()
        .map(|id| found.iter().find(|l| &l.id == id).cloned())
        .collect())
}

/// MSH-4 (first component) of an HL7 v2 message, when the text is one.
pub fn msh4(payload: &str) -> Option<String> {
    let msh = payload.split(['\r', '\n']).next()?;
    if !msh.starts_with("MSH") || msh.len() < 8 {
        return None;
    }
    let field_sep = msh[3..].chars().next()?;
    let component_sep = msh[3 + field_sep.len_utf8()..].chars().next()?;
    let value = msh
        .split(field_sep)
        .nth(3)?
        .split(component_sep)
        .next()?
        .trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::msh4;

    #[test]
    fn msh4_reads_the_sending_facility() {
        assert_eq!(
            msh4("MSH|^~\\&|EPIC|MERCY^1.2^ISO|HIE|HIE|2024||ADT^A04|1|P|2.5\rPID|||1").as_deref(),
            Some("MERCY")
        );
        assert_eq!(msh4("MSH#$*!%#APP#LAB#X").as_deref(), Some("LAB"));
        assert_eq!(msh4("{\"resourceType\":\"Patient\"}"), None);
        assert_eq!(msh4("MSH|^~\\&|A||"), None);
    }
}
