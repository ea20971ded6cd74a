//! `GET /v1/patients`: demographic search, allowed without consent; shows the consent status.
//! A search must name someone (`criteria`), shows at most `MAX_RESULTS` patients, never shows a
//! Part 2 program's identifiers (nor finds a patient by one) without Part 2 consent, and records
//! every patient it shows in the access log (basis `search`) before answering.

use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::Json;
use platform::auth::User;
use serde::Deserialize;
use serde_json::{json, Value};

use super::caller::Caller;
use super::position::CaughtUp;
use super::{ApiError, AppState};
use crate::audit::Access;
use crate::consent::{break_glass_possible, decision_for, Decision, InForce};
use crate::db::{self, PatientRow, PatientSearch};

/// The most patients one search shows: enough to pick from, too few to page through a registry.
pub(super) const MAX_RESULTS: usize = 50;

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    family: Option<String>,
    given: Option<String>,
    birth_date: Option<String>,
    identifier: Option<String>,
}

pub(super) fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `system|value`, or a bare value matching any system.
pub(super) fn identifier(i: String) -> (String, String) {
    match i.split_once('|') {
        Some((system, value)) => (system.to_string(), value.to_string()),
        None => (String::new(), i),
    }
}

/// Whether a search names a person: an identifier, or a family name of at least two characters
/// with a given name or a birth date. Anything looser lists strangers.
pub(super) fn criteria(search: &PatientSearch) -> Result<(), ApiError> {
    let family_ok = search
        .family
        .as_deref()
        .is_some_and(|f| f.chars().count() >= 2);
    let identified = search
        .identifier
        .as_ref()
        .is_some_and(|(_, value)| !value.trim().is_empty());
    if identified || (family_ok && (search.given.is_some() || search.birth_date.is_some())) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "search_criteria_required",
            "give an identifier, or a family name (2+ characters) with a given name or a birth date"
                .into(),
        ))
    }
}

/// A patient a search shows, with the consent in force for the caller's organization.
pub(super) struct Shown {
    pub row: PatientRow,
    pub in_force: Option<InForce>,
}

/// Whether the caller's organization holds a consent covering Part 2 data.
pub(super) fn covers_part2(in_force: Option<InForce>) -> bool {
    in_force.is_some_and(|f| f.decision == Decision::Grant && f.covers_part2)
}

/// The identifiers a caller may see (`db::PATIENT_COLUMNS` marks Part 2 programs' ones), without
/// the marks.
pub(super) fn visible_identifiers(identifiers: &Value, covers_part2: bool) -> Value {
    let shown = identifiers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| covers_part2 || i["part2"] != Value::Bool(true))
        .map(|i| json!({"system": i["system"], "value": i["value"]}))
        .collect();
    Value::Array(shown)
}

/// Run a demographic search for `user` and audit what it shows (`action` names the interface).
/// Returns the patients shown and whether there were more than `MAX_RESULTS`.
pub(super) async fn find(
    state: &AppState,
    user: &User,
    search: &PatientSearch,
    action: &str,
) -> Result<(Vec<Shown>, bool), ApiError> {
    criteria(search)?;
    let mut rows = db::search_patients(&state.pool, search, MAX_RESULTS as i64 + 1).await?;
    let truncated = rows.len() > MAX_RESULTS;
    rows.truncate(MAX_RESULTS);
    let ids: Vec<_> = rows.iter().map(|(r, _)| r.id).collect();
    let consents = db::consents(&state.pool, &ids, &user.org).await?;
    let now = SystemTime::now();
    let shown: Vec<Shown> = rows
        .into_iter()
        .filter_map(|(mut row, part2_match)| {
            let in_force = decision_for(
                consents.get(&row.id).map(Vec::as_slice).unwrap_or(&[]),
                &user.org,
                now,
            );
            let part2 = covers_part2(in_force);
            // Found only by a Part 2 program's identifier: that the patient is known to the
            // program is itself Part 2 information.
            if part2_match && !part2 {
                return None;
            }
            row.identifiers = visible_identifiers(&row.identifiers, part2);
            Some(Shown { row, in_force })
        })
        .collect();
    state
        .auditor
        .accesses(
            shown
                .iter()
                .map(|s| Access {
                    user,
                    role: user.primary_role(),
                    patient: s.row.id,
                    action: action.to_string(),
                    basis: "search",
                    outcome: "shown".into(),
                    returned: 1,
                    withheld: 0,
                })
                .collect(),
        )
        .await?;
    Ok((shown, truncated))
}

pub async fn search(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Query(params): Query<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    let search = PatientSearch {
        family: non_empty(params.family),
        given: non_empty(params.given),
        birth_date: non_empty(params.birth_date),
        identifier: non_empty(params.identifier).map(identifier),
    };
    let (shown, truncated) = find(&state, &user, &search, "search").await?;
    let patients: Vec<Value> = shown
        .into_iter()
        .map(|Shown { row: r, in_force }| {
            json!({
                "id": r.id,
                "name": r.name,
                "birth_date": r.birth_date,
                "sex": r.sex,
                "identifiers": r.identifiers,
                "consent": in_force.map(|f| f.decision.as_str()).unwrap_or("none"),
                "break_glass_allowed": break_glass_possible(in_force) && user.may_break_glass(),
            })
        })
        .collect();
    Ok(Json(json!({"patients": patients, "truncated": truncated})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(family: Option<&str>, given: Option<&str>, birth: Option<&str>) -> PatientSearch {
        PatientSearch {
            family: family.map(String::from),
            given: given.map(String::from),
            birth_date: birth.map(String::from),
            identifier: None,
        }
    }

    #[test]
    fn a_search_must_name_someone() {
        let ok = |s: &PatientSearch| criteria(s).is_ok();
        assert!(ok(&search(Some("Li"), Some("A"), None)));
        assert!(ok(&search(Some("Li"), None, Some("1980-02-03"))));
        assert!(!ok(&search(Some("Smith"), None, None)), "family alone");
        assert!(!ok(&search(Some("S"), Some("Alex"), None)), "one letter");
        assert!(!ok(&search(None, Some("Alex"), Some("1980-02-03"))));
        assert!(!ok(&search(None, None, None)));
        let mut by_id = search(None, None, None);
        by_id.identifier = Some(identifier("urn:mrn|M1".into()));
        assert!(ok(&by_id));
        by_id.identifier = Some(identifier("urn:mrn| ".into()));
        assert!(!ok(&by_id), "a system without a value");
    }

    #[test]
    fn part2_identifiers_show_only_under_a_consent_covering_them() {
        let ids = json!([{"system": "urn:clinic", "value": "1", "part2": false},
                         {"system": "urn:program", "value": "2", "part2": true}]);
        assert_eq!(
            visible_identifiers(&ids, false),
            json!([{"system": "urn:clinic", "value": "1"}])
        );
        assert_eq!(
            visible_identifiers(&ids, true),
            json!([{"system": "urn:clinic", "value": "1"}, {"system": "urn:program", "value": "2"}])
        );
        let grant = |part2| {
            Some(InForce {
                decision: Decision::Grant,
                covers_part2: part2,
            })
        };
        assert!(covers_part2(grant(true)));
        assert!(!covers_part2(grant(false)));
        assert!(!covers_part2(Some(InForce {
            decision: Decision::Deny,
            covers_part2: true
        })));
        assert!(!covers_part2(None));
    }
}
