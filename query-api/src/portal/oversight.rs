//! For privacy officers: a patient's access log and the Break-the-Glass report; for everyone: the
//! directory of sources. Each through the API's own handler, with its rules.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use maud::html;
use serde_json::{json, Value};

use super::session::SignedIn;
use super::{api_error, page};
use crate::http::caller::Caller;
use crate::http::position::CaughtUp;
use crate::http::AppState;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

pub async fn access_log(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let name = async {
        let patient = crate::http::records::known_patient(&state, &id).await?;
        Ok::<_, crate::http::ApiError>(
            crate::db::patient_demographics(&state.pool, patient)
                .await?
                .and_then(|d| d.name),
        )
    };
    let log = crate::http::access_log::access_log(
        State(state.clone()),
        Caller(user),
        CaughtUp,
        Path(id.clone()),
    )
    .await;
    let Json(body) = match log {
        Ok(b) => b,
        Err(e) => return api_error(&visit, e),
    };
    let name = name.await.ok().flatten().unwrap_or_default();
    let entries = body["entries"].as_array().cloned().unwrap_or_default();
    page(
        &visit,
        "Access log",
        html! {
            p { "Who accessed " a href={ "/portal/patients/" (id) } { (name) } "'s data, when, and on what basis. " (entries.len()) " entries." }
            table {
                caption { "Accesses, oldest first" }
                thead { tr { th scope="col" { "Time (UTC)" } th scope="col" { "User" } th scope="col" { "Organization" } th scope="col" { "Role" } th scope="col" { "Action" } th scope="col" { "Basis" } th scope="col" { "Outcome" } } }
                tbody {
                    @for e in &entries {
                        tr class=[(s(e, "basis") == "break_glass").then_some("btg")] {
                            td { (s(e, "at")) } td { (s(e, "user")) } td { (s(e, "organization")) } td { (s(e, "role")) }
                            td { (s(e, "action")) } td { (s(e, "basis")) } td { (s(e, "outcome")) }
                        }
                    }
                }
            }
        },
    )
}

pub async fn break_glass_report(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
) -> Response {
    let params = serde_json::from_value(json!({})).expect("no parameters");
    let report = crate::http::access_log::break_glass_report(
        State(state),
        Caller(user),
        CaughtUp,
        Query(params),
    )
    .await;
    let Json(body) = match report {
        Ok(b) => b,
        Err(e) => return api_error(&visit, e),
    };
    let entries = body["entries"].as_array().cloned().unwrap_or_default();
    page(
        &visit,
        "Break-the-Glass report",
        html! {
            p { (entries.len()) " Break-the-Glass access(es) by your organization." }
            table {
                caption { "Break-the-Glass accesses, oldest first" }
                thead { tr { th scope="col" { "Time (UTC)" } th scope="col" { "User" } th scope="col" { "Organization" } th scope="col" { "Role" } th scope="col" { "Patient" } th scope="col" { "Reason" } th scope="col" { "Expires (UTC)" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { (s(e, "at")) } td { (s(e, "user")) } td { (s(e, "organization")) } td { (s(e, "role")) }
                            td { a href={ "/portal/patients/" (s(e, "patient_id")) "/access-log" } { "Access log" } }
                            td { (s(e, "reason")) } td { (s(e, "expires_at")) }
                        }
                    }
                }
            }
        },
    )
}

pub async fn directory(
    State(state): State<AppState>,
    SignedIn { visit, user }: SignedIn,
) -> Response {
    let sources = crate::http::sources::directory(State(state), Caller(user), CaughtUp).await;
    let Json(body) = match sources {
        Ok(b) => b,
        Err(e) => return api_error(&visit, e),
    };
    let sources = body["sources"].as_array().cloned().unwrap_or_default();
    page(
        &visit,
        "Directory",
        html! {
            p { "The sources that send data to the HIE, what they send and when each last sent data." }
            table {
                caption { "Sources" }
                thead { tr { th scope="col" { "Source" } th scope="col" { "Organization" } th scope="col" { "Feed" } th scope="col" { "Data elements" } th scope="col" { "Last sent data (UTC)" } } }
                tbody {
                    @for src in &sources {
                        @let elements: Vec<&str> = src["data_elements"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        tr {
                            td { (s(src, "name")) " (" (s(src, "id")) ")" }
                            td { (s(src, "organization_id")) }
                            td { (s(src, "feed")) }
                            td { (elements.join(", ")) }
                            td { (src["last_received_at"].as_str().unwrap_or("never")) }
                        }
                    }
                }
            }
        },
    )
}
