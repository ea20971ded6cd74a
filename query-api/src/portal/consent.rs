//! The consent form: an organization's staff record a patient's decision, as `POST /v1/consents`
//! at ingest would (the same event, `ConsentRecorded` on `hie.consents`, and the same rule: for
//! the user's own organization or for all participants; the HIE operator's admins for any). The
//! decision is recorded under one of the patient's source identities: consent follows the person
//! across the identities the master patient index links.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use schemas::{now_micros, ConsentRecorded, PatientIdentity};
use serde::Deserialize;
use serde_json::Value;
use time::{Date, OffsetDateTime};

use super::session::{SignedIn, Visit};
use super::{api_error, csrf, csrf_refused, page, page_with};
use crate::http::records::known_patient;
use crate::http::{ApiError, AppState};

const DECISIONS: [(&str, &str); 4] = [
    (
        "grant",
        "Grant: the organization's care team may see the patient's data",
    ),
    (
        "deny_except_emergency",
        "Deny, except in an emergency (Break-the-Glass stays possible)",
    ),
    ("deny", "Deny, even in an emergency"),
    (
        "revoke",
        "Withdraw the earlier decision (back to no decision)",
    ),
];
const METHODS: [(&str, &str); 3] = [
    ("written", "Written"),
    ("verbal", "Verbal"),
    ("electronic", "Electronic"),
];

fn form(visit: &Visit, patient: &str, org: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action={ "/portal/patients/" (patient) "/consent" } {
            (csrf(visit))
            fieldset {
                legend { "Decision" }
                @for (i, (value, text)) in DECISIONS.iter().enumerate() {
                    p.check { input id={ "decision-" (value) } type="radio" name="decision" value=(value) required checked[i == 0]; label for={ "decision-" (value) } { (text) } }
                }
            }
            fieldset {
                legend { "Applies to" }
                p.check { input #scope-org type="radio" name="scope" value="org" checked; label for="scope-org" { "This organization (" (org) ")" } }
                p.check { input #scope-all type="radio" name="scope" value="all"; label for="scope-all" { "All participants of the HIE" } }
            }
            fieldset {
                legend { "How the patient gave it" }
                @for (i, (value, text)) in METHODS.iter().enumerate() {
                    p.check { input id={ "method-" (value) } type="radio" name="method" value=(value) required checked[i == 0]; label for={ "method-" (value) } { (text) } }
                }
            }
            p.check { input #part2 type="checkbox" name="part2" value="yes"; label for="part2" { "Covers 42 CFR Part 2 (substance use treatment) data" } }
            p { label for="effective" { "Effective from (optional)" } input #effective name="effective" type="date"; }
            p { label for="expires" { "Expires on (optional)" } input #expires name="expires" type="date"; }
            p { button type="submit" { "Record consent" } " " a href={ "/portal/patients/" (patient) } { "Cancel" } }
        }
    }
}

pub async fn consent_page(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match known_patient(&state, &id).await {
        Ok(p) => page(
            &visit,
            "Record a consent decision",
            form(&visit, &p.to_string(), &user.org, None),
        ),
        Err(e) => api_error(&visit, e),
    }
}

#[derive(Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    part2: Option<String>,
    #[serde(default)]
    effective: String,
    #[serde(default)]
    expires: String,
}

/// A date from the form as microseconds since the epoch (midnight UTC), if given.
fn day(s: &str) -> Result<Option<i64>, ()> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let parts: Vec<&str> = s.trim().split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(());
    };
    let month = time::Month::try_from(m.parse::<u8>().map_err(|_| ())?).map_err(|_| ())?;
    let date = Date::from_calendar_date(
        y.parse().map_err(|_| ())?,
        month,
        d.parse().map_err(|_| ())?,
    )
    .map_err(|_| ())?;
    let at: OffsetDateTime = date.midnight().assume_utc();
    Ok(Some((at.unix_timestamp_nanos() / 1000) as i64))
}

/// The source identity a decision is recorded under: the first that is not a Part 2 program's.
fn identity_of(identifiers: &Value) -> Option<PatientIdentity> {
    let list = identifiers.as_array()?;
    let pick = list
        .iter()
        .find(|i| i["part2"] != Value::Bool(true))
        .or(list.first())?;
    Some(PatientIdentity {
        assigning_authority: pick["system"].as_str()?.to_string(),
        mrn: pick["value"].as_str()?.to_string(),
    })
}

pub async fn record_consent(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<ConsentForm>,
) -> Response {
    if !visit.csrf_ok(&f.csrf) {
        return csrf_refused(&visit);
    }
    let invalid = |message: &str| {
        page_with(
            &visit,
            StatusCode::BAD_REQUEST,
            "Record a consent decision",
            form(&visit, &id, &user.org, Some(message)),
        )
    };
    if !DECISIONS.iter().any(|(d, _)| *d == f.decision)
        || !METHODS.iter().any(|(m, _)| *m == f.method)
    {
        return invalid("Choose a decision and how the patient gave it.");
    }
    let (Ok(effective_at), Ok(expires_at)) = (day(&f.effective), day(&f.expires)) else {
        return invalid("Dates are year-month-day.");
    };
    if let (Some(from), Some(to)) = (effective_at, expires_at) {
        if to <= from {
            return invalid("The expiry must be after the date it takes effect.");
        }
    }
    let organization = if f.scope == "all" {
        "*".to_string()
    } else {
        user.org.clone()
    };
    let recorded = async {
        let patient = known_patient(&state, &id).await?;
        let row = crate::db::patient_demographics(&state.pool, patient).await?.ok_or(ApiError::NotFound)?;
        let identity = identity_of(&row.identifiers).ok_or(ApiError::NotFound)?;
        let event = ConsentRecorded {
            event_id: uuid::Uuid::new_v4().to_string(),
            recorded_at: now_micros(),
            patient: identity,
            organization_id: organization.clone(),
            decision: f.decision.clone(),
            effective_at,
            expires_at,
            method: f.method.clone(),
            part2: f.part2.is_some(),
            recorded_by: format!("user:{}", user.id),
        };
        let position = state.auditor.consent(&event).await?;
        // The page that follows shows the decision: wait until the views hold it.
        crate::http::position::wait_for(&state, &position).await?;
        tracing::info!(decision = %event.decision, organization = %event.organization_id, "consent recorded in the portal");
        Ok::<_, ApiError>(())
    }
    .await;
    match recorded {
        Ok(()) => visit.redirect(&format!("/portal/patients/{id}")),
        Err(e) => api_error(&visit, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_days_and_identities_avoid_part2_programs() {
        assert_eq!(day(""), Ok(None));
        assert_eq!(day("1970-01-02"), Ok(Some(86_400_000_000)));
        assert!(day("02/01/1970").is_err());
        let ids = json!([{"system": "urn:program", "value": "P", "part2": true}, {"system": "urn:clinic", "value": "C", "part2": false}]);
        assert_eq!(identity_of(&ids).unwrap().mrn, "C");
    }
}
