use serde_json::Value;

/// One resource as it arrived, with where it was in its message.
#[derive(Debug)]
pub struct Entry {
    pub index: usize,
    pub full_url: Option<String>,
    /// The resource, or why this entry could not even be read as one.
    pub resource: Result<Value, String>,
    /// The entry as received, for the dead-letter topic.
    pub raw: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Batch,
    Transaction,
    Collection,
    Ndjson,
}

#[derive(Debug)]
pub struct Parsed {
    pub kind: BundleKind,
    /// `Bundle.id`, when the sender gave one.
    pub message_id: Option<String>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body is not a FHIR Bundle (resourceType must be \"Bundle\")")]
    NotABundle,
    #[error("Bundle.type {0:?} is not accepted: send batch, transaction or collection")]
    BundleType(String),
    #[error("Bundle.entry must be an array")]
    Entries,
    #[error("body is not UTF-8")]
    Utf8,
}

pub fn parse_bundle(body: &[u8]) -> Result<Parsed, ParseError> {
    let mut bundle: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::Json(json_error(&e)))?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ParseError::NotABundle);
    }
    let kind = match bundle.get("type").and_then(Value::as_str) {
        Some("batch") => BundleKind::Batch,
        Some("transaction") => BundleKind::Transaction,
        Some("collection") => BundleKind::Collection,
        Some(other) => return Err(ParseError::BundleType(other.to_string())),
        None => return Err(ParseError::BundleType(String::new())),
    };
    // Provenance only: an id FHIR would not allow (control characters included) is not kept.
    let message_id = bundle
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .map(str::to_string);
    let entries = match bundle.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ParseError::Entries),
    };
    let entries = entries
        .into_iter()
        .enumerate()
        .map(|(index, mut entry)| {
            let raw = entry.to_string();
            let full_url = entry
                .get("fullUrl")
                .and_then(Value::as_str)
                .map(str::to_string);
            let resource = match entry.get_mut("resource").map(Value::take) {
                Some(r @ Value::Object(_)) => Ok(r),
                Some(_) => Err("entry.resource is not a JSON object".to_string()),
                None => Err("entry has no resource".to_string()),
            };
            Entry {
                index,
                full_url,
                resource,
                raw,
            }
        })
        .collect();
    Ok(Parsed {
        kind,
        message_id,
        entries,
    })
}

/// FHIR Bulk Data NDJSON: one resource per line. A line that is not JSON is that line's
/// rejection, not the request's.
pub fn parse_ndjson(body: &[u8]) -> Result<Parsed, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError::Utf8)?;
    let entries = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| ndjson_entry(index, line))
        .collect();
    Ok(Parsed {
        kind: BundleKind::Ndjson,
        message_id: None,
        entries,
    })
}

/// One NDJSON line as an entry (the drop folder streams files line by line).
pub fn ndjson_entry(index: usize, line: &str) -> Entry {
    let resource = match serde_json::from_str::<Value>(line) {
        Ok(r @ Value::Object(_)) => Ok(r),
        Ok(_) => Err("line is not a JSON object".to_string()),
        Err(e) => Err(format!("line is not valid JSON: {}", json_error(&e))),
    };
    Entry {
        index,
        full_url: None,
        resource,
        raw: line.to_string(),
    }
}

/// serde_json's message names the position, never the content: safe to return.
fn json_error(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_shapes() {
        assert!(matches!(parse_bundle(b"{"), Err(ParseError::Json(_))));
        assert_eq!(
            parse_bundle(br#"{"resourceType":"Patient"}"#).unwrap_err(),
            ParseError::NotABundle
        );
        assert!(matches!(
            parse_bundle(br#"{"resourceType":"Bundle","type":"searchset"}"#),
            Err(ParseError::BundleType(_))
        ));
        let p = parse_bundle(br#"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient"}},{"fullUrl":"x"}]}"#).unwrap();
        assert_eq!(p.entries.len(), 2);
        assert!(p.entries[0].resource.is_ok());
        assert!(p.entries[1].resource.is_err());
    }

    #[test]
    fn a_bundle_id_fhir_forbids_is_not_kept() {
        let id = |body: &[u8]| parse_bundle(body).unwrap().message_id;
        assert_eq!(
            id(br#"{"resourceType":"Bundle","type":"batch","id":"b-1.2"}"#).as_deref(),
            Some("b-1.2")
        );
        assert_eq!(
            id(br#"{"resourceType":"Bundle","type":"batch","id":"b\u00001"}"#),
            None
        );
    }

    #[test]
    fn ndjson_bad_line_is_only_that_line() {
        let p = parse_ndjson(b"{\"resourceType\":\"Patient\"}\n\nnot json\n[1]\n").unwrap();
        let idx: Vec<_> = p
            .entries
            .iter()
            .map(|e| (e.index, e.resource.is_ok()))
            .collect();
        assert_eq!(idx, vec![(0, true), (2, false), (3, false)]);
    }
}
