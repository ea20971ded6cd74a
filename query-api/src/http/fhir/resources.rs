//! The FHIR R4 resources the API builds itself — `OperationOutcome`, searchset `Bundle`, the
//! enterprise `Patient`, the `CapabilityStatement` — as plain JSON. Pure functions.

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::db::PatientRow;

pub const FHIR_VERSION: &str = "4.0.1";

/// The system of the codes in `OperationOutcome.issue.details.coding`: the same error codes as
/// the `/v1` JSON bodies (`consent_required`, `consent_denied`, `role_not_permitted`, ...).
pub const ERROR_CODE_SYSTEM: &str = "urn:hie:query-api:error";

/// Extension on an `OperationOutcome.issue` of a consent refusal: whether the caller may break
/// the glass (`valueBoolean`), as `break_glass_allowed` in the `/v1` body.
pub const BREAK_GLASS_ALLOWED_URL: &str = "urn:hie:fhir:StructureDefinition:break-glass-allowed";

/// Resource types searchable by patient: those ingest requires to reference one.
pub use schemas::resource_types::PATIENT_SCOPED;

/// Search parameters of `GET /fhir/Patient?...` (demographics, as `/v1/patients`).
pub const PATIENT_SEARCH_PARAMS: &[(&str, &str, &str)] = &[
    ("_id", "token", "the enterprise patient id"),
    (
        "identifier",
        "token",
        "system|value, or a value under any system",
    ),
    ("family", "string", "family name, prefix, case-insensitive"),
    ("given", "string", "given name, prefix, case-insensitive"),
    ("birthdate", "date", "exact date YYYY-MM-DD"),
];

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// An error of the FHIR API: one issue, `code` from FHIR's IssueType, `detail` our error code.
/// Never carries PHI: `diagnostics` are fixed messages.
pub fn operation_outcome(
    issue_type: &str,
    detail: &str,
    diagnostics: &str,
    break_glass_allowed: Option<bool>,
) -> Value {
    let mut issue = json!({
        "severity": "error",
        "code": issue_type,
        "details": {
            "coding": [{"system": ERROR_CODE_SYSTEM, "code": detail}],
            "text": detail,
        },
        "diagnostics": diagnostics,
    });
    if let Some(allowed) = break_glass_allowed {
        issue["extension"] = json!([{"url": BREAK_GLASS_ALLOWED_URL, "valueBoolean": allowed}]);
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

/// A `searchset` Bundle of `resources` (one page), every one a match; `links` the `self` (the
/// search as performed: only the parameters applied), `first`, `next` and `previous` links;
/// `total` the matches across every page.
pub fn searchset(
    base: &str,
    links: &[(&str, String)],
    resources: Vec<Value>,
    total: usize,
) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let full_url = match (r["resourceType"].as_str(), r["id"].as_str()) {
                (Some(t), Some(id)) => Value::String(format!("{base}/{t}/{id}")),
                _ => Value::Null,
            };
            let mut entry = Map::new();
            if !full_url.is_null() {
                entry.insert("fullUrl".into(), full_url);
            }
            entry.insert("resource".into(), r);
            entry.insert("search".into(), json!({"mode": "match"}));
            Value::Object(entry)
        })
        .collect();
    let links: Vec<Value> = links
        .iter()
        .map(|(relation, url)| json!({"relation": relation, "url": url}))
        .collect();
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": now()},
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    })
}

/// The enterprise patient as a FHIR Patient: the demographics `/v1/patients` shows (the latest
/// Patient any source sent), its id the enterprise id, every identifier but a Social Security
/// number.
pub fn patient(row: &PatientRow) -> Value {
    let mut p = Map::new();
    p.insert("resourceType".into(), "Patient".into());
    p.insert("id".into(), row.id.to_string().into());
    let identifiers: Vec<Value> = row
        .identifiers
        .as_array()
        .map(|ids| {
            ids.iter()
                .map(|i| json!({"system": i["system"], "value": i["value"]}))
                .collect()
        })
        .unwrap_or_default();
    if !identifiers.is_empty() {
        p.insert("identifier".into(), identifiers.into());
    }
    let mut name = Map::new();
    name.insert("use".into(), "official".into());
    if let Some(text) = &row.name {
        name.insert("text".into(), text.clone().into());
    }
    if let Some(family) = &row.family {
        name.insert("family".into(), family.clone().into());
    }
    if let Some(given) = &row.given {
        name.insert("given".into(), json!([given]));
    }
    if name.len() > 1 {
        p.insert("name".into(), json!([name]));
    }
    // Only FHIR's AdministrativeGender codes: anything else would make the resource invalid.
    if let Some(sex) = row
        .sex
        .as_deref()
        .filter(|s| ["male", "female", "other", "unknown"].contains(s))
    {
        p.insert("gender".into(), sex.into());
    }
    if let Some(birth_date) = row.birth_date.as_deref().filter(|d| fhir_date(d)) {
        p.insert("birthDate".into(), birth_date.into());
    }
    Value::Object(p)
}

/// FHIR's `date`: YYYY, YYYY-MM or YYYY-MM-DD.
fn fhir_date(d: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = d.split('-').collect();
    match parts.as_slice() {
        [y] => digits(y, 4),
        [y, m] => digits(y, 4) && digits(m, 2),
        [y, m, day] => digits(y, 4) && digits(m, 2) && digits(day, 2),
        _ => false,
    }
}

/// `GET /fhir/metadata`: what this server does, for clients to discover: exactly the
/// interactions and search parameters served (any other parameter is refused).
pub fn capability_statement(base: &str) -> Value {
    let param = |name: &str, kind: &str, doc: &str| json!({"name": name, "type": kind, "documentation": doc});
    let paging = [
        param(
            "_count",
            "number",
            "entries per page: default 100, at most 1000 (0: the total only)",
        ),
        param(
            "_cursor",
            "string",
            "the page a next/previous link names (opaque)",
        ),
    ];
    let mut patient_params: Vec<Value> = PATIENT_SEARCH_PARAMS
        .iter()
        .map(|(name, kind, doc)| param(name, kind, doc))
        .collect();
    patient_params.extend(paging.iter().cloned());
    let mut resources = vec![json!({
        "type": "Patient",
        "profile": "http://hl7.org/fhir/StructureDefinition/Patient",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": patient_params,
        "operation": [{
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
            "documentation": "the patient and every record the caller may read, under the same consent rules; paged (_count, _cursor); no other parameter"
        }],
    })];
    resources.extend(PATIENT_SCOPED.iter().map(|t| {
        let mut params: Vec<Value> = super::search::COMMON_PARAMS
            .iter()
            .map(|(name, kind, doc)| param(name, kind, doc))
            .collect();
        params.extend(
            super::search::TYPE_PARAMS
                .iter()
                .filter(|(rt, _, _, _)| rt == t)
                .map(|(_, name, kind, doc)| param(name, kind, doc)),
        );
        params.extend(paging.iter().cloned());
        json!({
            "type": t,
            "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
            "interaction": [{"code": "search-type"}],
            "searchParam": params,
        })
    }));
    let origin = base.strip_suffix("/fhir").unwrap_or(base);
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now(),
        "publisher": "HIE pipeline",
        "kind": "instance",
        "software": {"name": "hie query-api", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "Health information exchange: records under the patient's consent or an attested Break-the-Glass; every read audited",
            "url": base,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Consent refusals are 403 OperationOutcomes whose issue.details.coding (system urn:hie:query-api:error) carries consent_required or consent_denied and whose extension urn:hie:fhir:StructureDefinition:break-glass-allowed tells whether Break-the-Glass (POST /v1/patients/{id}/break-glass, users only) is possible. A search parameter not listed here is refused (400 unsupported_parameter). Searchsets are paged over a snapshot taken at the first page: records received later show in the next search. X-Min-Position waits for an ingest position.",
            "security": {
                "cors": false,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "token", "valueUri": format!("{origin}/oauth/token")}],
                }],
                "description": "EHR clients: SMART Backend Services (client_credentials with a private_key_jwt assertion, RS384 or ES384; system scopes; see .well-known/smart-configuration). Users: Authorization: Bearer <JWT> of an active account (claims sub, email, org, roles). Only this CapabilityStatement and the SMART configuration are served without a token",
            },
            "resource": resources,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_carries_the_code_and_break_glass() {
        let o = operation_outcome("forbidden", "consent_required", "no consent", Some(true));
        assert_eq!(o["resourceType"], "OperationOutcome");
        let issue = &o["issue"][0];
        assert_eq!(issue["code"], "forbidden");
        assert_eq!(issue["details"]["coding"][0]["code"], "consent_required");
        assert_eq!(issue["extension"][0]["url"], BREAK_GLASS_ALLOWED_URL);
        assert_eq!(issue["extension"][0]["valueBoolean"], true);
        let plain = operation_outcome("not-found", "not_found", "no such patient", None);
        assert!(plain["issue"][0].get("extension").is_none());
    }

    #[test]
    fn searchset_entries_are_matches_with_full_urls() {
        let b = searchset(
            "http://h/fhir",
            &[("self", "http://h/fhir/Observation?patient=1".into())],
            vec![json!({"resourceType": "Observation", "id": "o1"})],
            1,
        );
        assert_eq!(b["type"], "searchset");
        assert_eq!(b["total"], 1);
        assert_eq!(b["entry"][0]["fullUrl"], "http://h/fhir/Observation/o1");
        assert_eq!(b["entry"][0]["search"]["mode"], "match");
    }

    #[test]
    fn patient_keeps_only_valid_fhir_values() {
        let row = PatientRow {
            id: uuid::Uuid::nil(),
            name: Some("Alex Doe".into()),
            family: Some("Doe".into()),
            given: Some("Alex".into()),
            birth_date: Some("1980-2-3".into()),
            sex: Some("M".into()),
            identifiers: json!([{"system": "urn:x", "value": "1"}]),
        };
        let p = patient(&row);
        assert_eq!(p["name"][0]["given"][0], "Alex");
        assert_eq!(p["identifier"][0]["value"], "1");
        assert!(p.get("gender").is_none());
        assert!(p.get("birthDate").is_none());
        assert!(fhir_date("1980-02-03") && fhir_date("1980") && !fhir_date("80-02-03"));
    }
}
