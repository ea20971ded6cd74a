//! `GET /v1/patients/{id}/consents`: every consent decision recorded for the patient (and the
//! patients merged into it), with which is in force now: what support needs when "a grant was
//! recorded but I can't see the data". Audited: a Part 2 consent says where the patient is treated.

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::Json;
use platform::auth::Role;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::caller::Caller;
use super::position::CaughtUp;
use super::records::known_patient;
use super::{ApiError, AppState};
use crate::audit::Access;
use crate::consent::{governing, Decision};
use crate::db;

/// For a privacy officer or an admin of an organization holding the patient's data, or an admin
/// of the HIE operator (as the access log).
pub async fn history(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let patient = known_patient(&state, &id).await?;
    let role = user.role_for(|r| matches!(r, Role::PrivacyOfficer | Role::Admin));
    let permitted = super::access_log::oversees(&state, &user, patient).await?;
    let access = |outcome: &str, returned: usize| Access {
        user: &user,
        role: role.unwrap_or_else(|| user.primary_role()),
        patient,
        action: "consents".into(),
        basis: if permitted { "privacy_office" } else { "none" },
        outcome: outcome.into(),
        returned,
        withheld: 0,
    };
    if !permitted {
        state
            .auditor
            .access(access("refused:not_permitted", 0))
            .await?;
        return Err(super::access_log::NOT_PERMITTED);
    }
    let entries = db::consent_history(&state.pool, patient).await?;
    let now = SystemTime::now();
    let rows: Vec<_> = entries.iter().map(|e| e.row.clone()).collect();
    let stamp =
        |t: Option<SystemTime>| t.and_then(|t| OffsetDateTime::from(t).format(&Rfc3339).ok());
    let body: Vec<Value> = entries
        .iter()
        .map(|e| {
            let r = &e.row;
            let governs = governing(&rows, r.member, &r.organization_id, now)
                .is_some_and(|g| g.seq == r.seq && g.member == r.member);
            let in_force = governs
                && Decision::parse(&r.decision).is_some()
                && r.expires_at.is_none_or(|t| t > now);
            json!({
                "organization_id": r.organization_id,
                "decision": r.decision,
                "effective_at": stamp(r.effective_at),
                "expires_at": stamp(r.expires_at),
                "part2": r.part2,
                "method": e.method,
                "recorded_by": e.recorded_by,
                "recorded_at": stamp(Some(e.recorded_at)),
                "in_force": in_force,
                // A decision recorded for a patient since merged into this one (ADT^A40).
                "merged_patient": (r.member != patient).then(|| r.member.to_string()),
            })
        })
        .collect();
    let unresolved = db::consent_unresolved(&state.pool, patient).await?;
    state.auditor.access(access("allowed", body.len())).await?;
    Ok(Json(json!({"consents": body, "unresolved": unresolved})))
}
