//! `GET /v1/patients/{id}/records`: clinical data, under a consent for the caller's organization
//! or the caller's own Break-the-Glass grant. Every outcome is audited before it is answered.

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::Json;
use platform::auth::{Role, User};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::caller::Caller;
use super::position::CaughtUp;
use super::{ApiError, AppState};
use crate::audit::Access;
use crate::consent::{break_glass_possible, decision_for, Decision};
use crate::db;

#[derive(Debug, Deserialize)]
pub struct RecordParams {
    #[serde(rename = "type")]
    resource_type: Option<String>,
}

fn valid_type(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphabetic())
}

/// The patient's enterprise id, if the path holds one the views know. The id of a patient merged
/// into another (ADT^A40) stands for the survivor: its records, consents and audit are the
/// survivor's.
pub async fn known_patient(state: &AppState, id: &str) -> Result<Uuid, ApiError> {
    let patient = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    db::patient(&state.pool, patient)
        .await?
        .ok_or(ApiError::NotFound)
}

/// What a clinical read serves once consent (or Break-the-Glass) allowed it and its audit event
/// is durable: the records the caller may see (Part 2 data only under a consent covering it).
pub struct Served {
    pub records: Vec<Value>,
    pub basis: &'static str,
}

pub async fn records(
    State(state): State<AppState>,
    Caller(user): Caller,
    _: CaughtUp,
    Path(id): Path<String>,
    Query(params): Query<RecordParams>,
) -> Result<Json<Value>, ApiError> {
    let resource_type = params.resource_type.filter(|t| !t.is_empty());
    if resource_type.as_deref().is_some_and(|t| !valid_type(t)) {
        return Err(ApiError::BadRequest(
            "invalid_type",
            "type must be a FHIR resource type".into(),
        ));
    }
    let patient = known_patient(&state, &id).await?;
    let action = match &resource_type {
        Some(t) => format!("records?type={t}"),
        None => "records".to_string(),
    };
    let served = read_records(&state, &user, patient, resource_type.as_deref(), action).await?;
    Ok(Json(
        json!({"records": served.records, "basis": served.basis}),
    ))
}

/// The one path every clinical read takes (`/v1/patients/{id}/records` and the FHIR API): the
/// caller's role, the consent in force for their organization, their own Break-the-Glass, Part 2
/// filtering, and the audit event, published before anything is answered — refusals included.
/// `action` names the read in the access log.
pub async fn read_records(
    state: &AppState,
    user: &User,
    patient: Uuid,
    resource_type: Option<&str>,
    action: String,
) -> Result<Served, ApiError> {
    let (served, ()) = read_records_where(state, user, patient, resource_type, action, |rows| {
        (rows.into_iter().map(|r| r.resource).collect(), ())
    })
    .await?;
    Ok(served)
}

/// `read_records`, serving what `select` picks of the records the caller may see (a FHIR
/// search's matches, one page of them): the audit event counts what is served. `select` also
/// returns what the caller needs of the rest (a page's links).
pub async fn read_records_where<T>(
    state: &AppState,
    user: &User,
    patient: Uuid,
    resource_type: Option<&str>,
    action: String,
    select: impl FnOnce(Vec<db::RecordRow>) -> (Vec<Value>, T),
) -> Result<(Served, T), ApiError> {
    let refuse = |role: Role,
                  code: &'static str,
                  message: &'static str,
                  break_glass_allowed: Option<bool>| {
        let action = action.clone();
        async move {
            state
                .auditor
                .access(Access {
                    user,
                    role,
                    patient,
                    action,
                    basis: "none",
                    outcome: format!("refused:{code}"),
                    returned: 0,
                    withheld: 0,
                })
                .await?;
            Err::<(Served, T), _>(ApiError::Forbidden(code, message, break_glass_allowed))
        }
    };
    let Some(role) = user.role_for(Role::reads_clinical_data) else {
        return refuse(
            user.primary_role(),
            "role_not_permitted",
            "this role does not see clinical data",
            None,
        )
        .await;
    };
    let consents = db::consents(&state.pool, &[patient], &user.org).await?;
    let in_force = decision_for(
        consents.get(&patient).map(Vec::as_slice).unwrap_or(&[]),
        &user.org,
        SystemTime::now(),
    );
    let (basis, covers_part2) = match in_force.map(|f| f.decision) {
        Some(Decision::Grant) => ("consent", in_force.is_some_and(|f| f.covers_part2)),
        Some(Decision::Deny) => {
            return refuse(
                role,
                "consent_denied",
                "the patient has denied access to this organization",
                Some(false),
            )
            .await
        }
        Some(Decision::Unresolved) => {
            return refuse(
                role,
                "consent_unresolved",
                "a consent decision for this patient could not be applied yet; the HIE's operators have been alerted",
                Some(false),
            )
            .await
        }
        None | Some(Decision::DenyExceptEmergency) => {
            // An EHR client (role `system`) never breaks the glass, whatever grant a user of
            // the same id may hold.
            if role != Role::System && db::active_break_glass(&state.pool, patient, &user.id).await? {
                // Emergency access never extends to Part 2 data: that needs the patient's consent.
                ("break_glass", false)
            } else {
                let allowed = break_glass_possible(in_force) && user.may_break_glass();
                return refuse(
                    role,
                    "consent_required",
                    "the patient has not granted this organization access",
                    Some(allowed),
                )
                .await;
            }
        }
    };

    let all = db::records(&state.pool, patient, resource_type).await?;
    let total = all.len();
    let visible: Vec<db::RecordRow> = all
        .into_iter()
        .filter(|r| covers_part2 || !r.part2)
        .collect();
    let withheld = total - visible.len();
    let (records, extra) = select(visible);
    state
        .auditor
        .access(Access {
            user,
            role,
            patient,
            action,
            basis,
            outcome: "allowed".into(),
            returned: records.len(),
            withheld,
        })
        .await?;
    tracing::info!(records = records.len(), withheld, basis, organization = %user.org, "records served");
    Ok((Served { records, basis }, extra))
}
