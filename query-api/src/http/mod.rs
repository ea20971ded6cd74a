//! The query API's HTTP routes (API.md, "Query API"), one file per resource.

pub(crate) mod access_log;
pub(crate) mod break_glass;
pub(crate) mod caller;
mod clients;
mod consents;
mod error;
mod fhir;
mod health;
mod identity;
mod oauth;
pub(crate) mod patients;
pub(crate) mod position;
pub(crate) mod records;
mod smart;
pub(crate) mod sources;
pub(crate) mod users;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;
use deadpool_postgres::Pool;
use platform::auth::Verifier;

pub use error::ApiError;

use crate::Config;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub verifier: Verifier,
    pub auditor: crate::audit::Auditor,
    pub accounts: platform::accounts::Accounts,
    pub broker: platform::broker_watch::BrokerWatch,
    /// EHR clients (`hie.clients`) and the access tokens issued to them (SMART Backend Services).
    pub clients: platform::clients::Clients,
    pub access_tokens: platform::clients::AccessTokens,
    pub portal: crate::portal::Portal,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(platform::http::metrics))
        .route("/v1/patients", get(patients::search))
        .route("/v1/patients/{id}/records", get(records::records))
        .route(
            "/v1/patients/{id}/break-glass",
            post(break_glass::break_glass),
        )
        .route("/v1/patients/{id}/access-log", get(access_log::access_log))
        .route("/v1/patients/{id}/consents", get(consents::history))
        .route(
            "/v1/reports/break-glass",
            get(access_log::break_glass_report),
        )
        .route("/v1/sources", get(sources::directory))
        .route("/v1/identity/reviews", get(identity::reviews))
        .route("/v1/identity/decisions", post(identity::decide))
        .route("/v1/identity/unlink", post(identity::unlink))
        .route("/v1/users", get(users::list_users))
        .route("/v1/users/{id}", put(users::put_user))
        .route("/v1/clients/{id}", put(clients::put_client))
        .route(
            "/.well-known/smart-configuration",
            get(oauth::smart_configuration),
        )
        .route("/oauth/token", post(oauth::token))
        .route(
            "/v1/users/{id}/temporary-password",
            post(crate::portal::temporary_password_api),
        )
        .merge(crate::portal::routes())
        .merge(fhir::routes())
        .layer(axum::middleware::from_fn(platform::http::observe))
        .with_state(state)
}
