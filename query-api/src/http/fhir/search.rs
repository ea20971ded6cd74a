//! The search parameters served (and only those: any other is refused, never ignored): per
//! resource type, how a value matches a record. Token parameters (`code`, `category`, `status`)
//! take `code`, `system|code`, `|code` or `system|`, commas meaning "or"; date parameters
//! (`date`, `_lastUpdated`) take `eq`/`ne`/`gt`/`lt`/`ge`/`le` and a FHIR date or dateTime at any
//! precision. Repeating a parameter means "and".

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// The parameters of `GET /fhir/{type}?patient=` besides `patient`/`subject`, `_count`,
/// `_cursor`, `_lastUpdated` and `_format`: (type, parameter, FHIR type, what it matches).
pub const TYPE_PARAMS: &[(&str, &str, &str, &str)] = &[
    ("Observation", "code", "token", "Observation.code"),
    ("Observation", "category", "token", "Observation.category"),
    (
        "Observation",
        "date",
        "date",
        "Observation.effective[x] (dateTime, instant or Period)",
    ),
    ("Condition", "code", "token", "Condition.code"),
    ("Condition", "category", "token", "Condition.category"),
    (
        "Condition",
        "clinical-status",
        "token",
        "Condition.clinicalStatus",
    ),
    (
        "MedicationRequest",
        "code",
        "token",
        "MedicationRequest.medicationCodeableConcept",
    ),
    (
        "MedicationRequest",
        "status",
        "token",
        "MedicationRequest.status",
    ),
    ("Encounter", "date", "date", "Encounter.period"),
    ("Encounter", "status", "token", "Encounter.status"),
];

/// Parameters every patient-scoped search takes: (name, FHIR type, documentation).
pub const COMMON_PARAMS: &[(&str, &str, &str)] = &[
    (
        "patient",
        "reference",
        "the patient: an enterprise id or Patient/<id>; required",
    ),
    (
        "subject",
        "reference",
        "the same as patient, as Patient/<id>",
    ),
    (
        "_lastUpdated",
        "date",
        "when the HIE received the record's current version",
    ),
];

/// A filter one parameter sets.
#[derive(Debug, Clone)]
pub enum Filter {
    /// A CodeableConcept (or array of them) at `element` holds one of these codings.
    Codes {
        element: &'static str,
        any_of: Vec<Token>,
    },
    /// A code element (`status`) equals one of these.
    Code {
        element: &'static str,
        any_of: Vec<String>,
    },
    /// The record's date element (`Observation.effective[x]`, `Encounter.period`) matches one.
    Date {
        element: DateElement,
        any_of: Vec<DateParam>,
    },
    /// When the HIE received the record: one of these.
    Received(Vec<DateParam>),
}

#[derive(Debug, Clone, Copy)]
pub enum DateElement {
    Effective,
    Period,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `None`: any system; `Some("")`: no system.
    pub system: Option<String>,
    /// `None`: any code of the system.
    pub code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// A date search value: the range `[lo, hi)` (microseconds since the epoch) its precision
/// covers, and how a record's range must relate to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateParam {
    pub prefix: Prefix,
    pub lo: i64,
    pub hi: i64,
}

/// Why a search is refused: a parameter not served, or a value that does not parse. Names the
/// parameter, never its value.
#[derive(Debug, PartialEq, Eq)]
pub enum SearchError {
    Unsupported(String),
    Invalid(String),
}

/// The filter `name=value` sets on a search of `resource_type`, if it is a parameter served.
pub fn filter(resource_type: &str, name: &str, value: &str) -> Result<Filter, SearchError> {
    let kind = TYPE_PARAMS
        .iter()
        .find(|(t, n, _, _)| *t == resource_type && *n == name)
        .map(|(_, _, kind, _)| *kind);
    let invalid = || SearchError::Invalid(name.to_string());
    match (name, kind) {
        ("_lastUpdated", _) => Ok(Filter::Received(dates(value).ok_or_else(invalid)?)),
        ("date", Some(_)) => Ok(Filter::Date {
            element: if resource_type == "Encounter" {
                DateElement::Period
            } else {
                DateElement::Effective
            },
            any_of: dates(value).ok_or_else(invalid)?,
        }),
        ("status", Some(_)) => Ok(Filter::Code {
            element: "status",
            any_of: value.split(',').map(|v| v.trim().to_string()).collect(),
        }),
        (_, Some("token")) => Ok(Filter::Codes {
            element: match (resource_type, name) {
                ("MedicationRequest", "code") => "medicationCodeableConcept",
                (_, "category") => "category",
                (_, "clinical-status") => "clinicalStatus",
                _ => "code",
            },
            any_of: value.split(',').map(token).collect(),
        }),
        _ => Err(SearchError::Unsupported(name.to_string())),
    }
}

fn token(v: &str) -> Token {
    match v.split_once('|') {
        Some((system, code)) => Token {
            system: Some(system.to_string()),
            code: (!code.is_empty()).then(|| code.to_string()),
        },
        None => Token {
            system: None,
            code: Some(v.to_string()),
        },
    }
}

fn dates(value: &str) -> Option<Vec<DateParam>> {
    value.split(',').map(date_param).collect()
}

fn date_param(v: &str) -> Option<DateParam> {
    let prefixes = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
    ];
    let (prefix, rest) = prefixes
        .iter()
        .find_map(|(p, prefix)| v.strip_prefix(p).map(|rest| (*prefix, rest)))
        .unwrap_or((Prefix::Eq, v));
    let (lo, hi) = range(rest.trim())?;
    Some(DateParam { prefix, lo, hi })
}

/// The range `[lo, hi)` in microseconds a FHIR date, dateTime or instant covers at its
/// precision (a day: that day, UTC when no offset is given).
pub fn range(s: &str) -> Option<(i64, i64)> {
    let micros = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1000) as i64;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if s.contains('T') {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            let width = if s.contains('.') { 1 } else { 1_000_000 };
            return Some((micros(t), micros(t) + width));
        }
        // Minutes only, or no offset: FHIR search allows both; the zone is UTC.
        let (date, time) = s.split_once('T')?;
        let (hm, zone) = match time.find(['Z', '+', '-']) {
            Some(i) => time.split_at(i),
            None => (time, "Z"),
        };
        let with_seconds = if hm.len() == 5 {
            format!("{hm}:00")
        } else {
            hm.to_string()
        };
        let t = OffsetDateTime::parse(&format!("{date}T{with_seconds}{zone}"), &Rfc3339).ok()?;
        let width = if hm.len() == 5 { 60_000_000 } else { 1_000_000 };
        return Some((micros(t), micros(t) + width));
    }
    let parts: Vec<&str> = s.split('-').collect();
    let day = |y: i32, m: u8, d: u8| -> Option<i64> {
        let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
        Some(micros(
            PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc(),
        ))
    };
    match parts.as_slice() {
        [y] if digits(y, 4) => {
            let y: i32 = y.parse().ok()?;
            Some((day(y, 1, 1)?, day(y + 1, 1, 1)?))
        }
        [y, m] if digits(y, 4) && digits(m, 2) => {
            let (y, m): (i32, u8) = (y.parse().ok()?, m.parse().ok()?);
            let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some((day(y, m, 1)?, day(next.0, next.1, 1)?))
        }
        [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2) => {
            let lo = day(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
            Some((lo, lo + 86_400_000_000))
        }
        _ => None,
    }
}

impl DateParam {
    /// FHIR's date matching of a record's range `[lo, hi)` against this value's (`eq`: within
    /// it; `gt`/`lt`: reaching beyond it).
    fn matches(&self, (lo, hi): (i64, i64)) -> bool {
        let eq = lo >= self.lo && hi <= self.hi;
        match self.prefix {
            Prefix::Eq => eq,
            Prefix::Ne => !eq,
            Prefix::Gt => hi > self.hi,
            Prefix::Lt => lo < self.lo,
            // On or after: the record's range reaches into [lo, ∞); on or before: into (-∞, hi).
            Prefix::Ge => hi > self.lo,
            Prefix::Le => lo < self.hi,
        }
    }
}

impl Filter {
    /// Whether the record `resource`, received at `received` (µs), passes this filter.
    pub fn matches(&self, resource: &Value, received: i64) -> bool {
        match self {
            Filter::Codes { element, any_of } => {
                let concepts: Vec<&Value> = match &resource[element] {
                    Value::Array(list) => list.iter().collect(),
                    Value::Null => Vec::new(),
                    one => vec![one],
                };
                concepts.iter().any(|concept| {
                    concept["coding"].as_array().is_some_and(|codings| {
                        codings.iter().any(|c| any_of.iter().any(|t| t.matches(c)))
                    })
                })
            }
            Filter::Code { element, any_of } => resource[element]
                .as_str()
                .is_some_and(|v| any_of.iter().any(|a| a == v)),
            Filter::Date { element, any_of } => {
                date_of(resource, *element).is_some_and(|r| any_of.iter().any(|d| d.matches(r)))
            }
            Filter::Received(any_of) => any_of.iter().any(|d| d.matches((received, received + 1))),
        }
    }
}

impl Token {
    fn matches(&self, coding: &Value) -> bool {
        let system = coding["system"].as_str();
        let code = coding["code"].as_str();
        let system_ok = match &self.system {
            None => true,
            Some(s) if s.is_empty() => system.is_none(),
            Some(s) => system == Some(s.as_str()),
        };
        system_ok && self.code.as_deref().is_none_or(|c| code == Some(c))
    }
}

fn date_of(resource: &Value, element: DateElement) -> Option<(i64, i64)> {
    let period = |p: &Value| -> Option<(i64, i64)> {
        let lo = match p["start"].as_str() {
            Some(s) => range(s)?.0,
            None => i64::MIN,
        };
        let hi = match p["end"].as_str() {
            Some(s) => range(s)?.1,
            None => i64::MAX,
        };
        (p.is_object() && (lo, hi) != (i64::MIN, i64::MAX)).then_some((lo, hi))
    };
    match element {
        DateElement::Period => period(&resource["period"]),
        DateElement::Effective => match (
            resource["effectiveDateTime"].as_str(),
            resource["effectiveInstant"].as_str(),
        ) {
            (Some(s), _) | (None, Some(s)) => range(s),
            (None, None) => period(&resource["effectivePeriod"]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obs() -> Value {
        json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
            "effectiveDateTime": "2020-03-04T10:11:12+00:00",
        })
    }

    fn m(name: &str, value: &str) -> bool {
        filter("Observation", name, value)
            .unwrap()
            .matches(&obs(), 0)
    }

    #[test]
    fn tokens_match_codings() {
        assert!(m("code", "8302-2"));
        assert!(m("code", "http://loinc.org|8302-2"));
        assert!(m("code", "http://loinc.org|"));
        assert!(m("code", "x,http://loinc.org|8302-2"));
        assert!(!m("code", "|8302-2"));
        assert!(!m("code", "http://snomed.info/sct|8302-2"));
        assert!(m("category", "vital-signs"));
        assert!(!m("category", "laboratory"));
    }

    #[test]
    fn dates_match_at_their_precision() {
        assert!(m("date", "2020"));
        assert!(m("date", "2020-03"));
        assert!(m("date", "eq2020-03-04"));
        assert!(!m("date", "2020-03-05"));
        assert!(m("date", "ge2020-03-04"));
        assert!(m("date", "gt2020-03-03") && m("date", "le2020-03-04"));
        assert!(!m("date", "ge2020-03-05") && !m("date", "lt2020-03-04"));
        assert!(!m("date", "gt2020-03-04"));
        assert!(m("date", "lt2020-03-05"));
        assert!(m("date", "le2020-03-04T10:11:12Z"));
        assert!(m("date", "ne2021"));
        assert!(m("date", "2020-03-04T10:11"));
        assert!(filter("Observation", "date", "yesterday").is_err());
        assert_eq!(
            filter("Observation", "value-quantity", "1").unwrap_err(),
            SearchError::Unsupported("value-quantity".into())
        );
        assert!(filter("Encounter", "code", "x").is_err());
        let enc =
            json!({"period": {"start": "2019-12-31T23:00:00Z", "end": "2020-01-01T01:00:00Z"}});
        let f = |v| filter("Encounter", "date", v).unwrap().matches(&enc, 0);
        assert!(f("ge2020-01-01") && f("lt2020-01-01") && !f("2020-01-01") && f("ne2019"));
    }

    #[test]
    fn last_updated_is_the_received_time() {
        let (lo, _) = range("2024-05-01").unwrap();
        let f = filter("Condition", "_lastUpdated", "ge2024-05-01").unwrap();
        assert!(f.matches(&json!({}), lo));
        assert!(!f.matches(&json!({}), lo - 1));
    }
}
