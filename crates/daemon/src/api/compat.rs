//! Compatibility endpoint for clients of the classic port-knock REST API:
//! `/api/portknock` (and `/api/portkock`, the original's misspelling).
//!
//! - `POST {"action":"allow","ip":"192.0.2.2","port":22}` opens tcp/PORT for IP for
//!   `[api] default_duration`; `"deny"` revokes the active grant for it.
//!   Answer: `{"result":"OK"}`, or `{"result":"NG","message":"..."}` with a 4xx/5xx status.
//! - `GET ?items=50&page=1`: records, newest first.
//! - `GET /{id}`: one record.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use portcullis_proto::Service;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::grants::{parse_address, parse_port, rfc3339};
use super::{blocking, AppState, Caller};
use crate::grants::{RevokeError, RevokeTarget};
use crate::store::{Filter, GrantRecord, GrantState};

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Open.
    Allow,
    /// Close.
    Deny,
}

/// A compat request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockRequest {
    /// `allow` or `deny`.
    pub action: Action,
    /// Address.
    #[schema(example = "192.0.2.2")]
    pub ip: String,
    /// TCP port, 1-65535.
    #[schema(example = 22)]
    pub port: i64,
}

/// `{"result":"OK"}` or `{"result":"NG","message":...}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockResult {
    /// `OK` or `NG`.
    pub result: String,
    /// Why not, when `NG`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a request pointed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Destination {
    /// Always `allow` (records are grants).
    pub action: Action,
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
}

/// A record in the compat shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockItem {
    /// Record id.
    pub id: i64,
    /// RFC 3339.
    pub requested_at: String,
    /// RFC 3339: when it ends or ended.
    pub expired_at: String,
    /// The request.
    pub destination: Destination,
    /// `OK` if the firewall applied it, `NG` if not.
    pub result: String,
    /// `active`, `expired`, `revoked` or `failed`.
    pub state: String,
}

/// A page of records.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockList {
    /// `OK`.
    pub result: String,
    /// Records, newest first.
    pub items: Vec<KnockItem>,
    /// Page (1-based).
    pub page: u64,
    /// Page size.
    pub items_per_page: u64,
    /// Records in total.
    pub total: u64,
}

/// One record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockOne {
    /// `OK`.
    pub result: String,
    /// The record.
    pub item: KnockItem,
}

/// Paging.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KnockQuery {
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub items: Option<u64>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    pub page: Option<u64>,
}

fn item(r: &GrantRecord) -> KnockItem {
    KnockItem {
        id: r.id,
        requested_at: rfc3339(r.requested_at),
        expired_at: rfc3339(r.expires_at),
        destination: Destination { action: Action::Allow, ip: r.address.to_string(), port: r.service.port },
        result: if r.state == GrantState::Failed { "NG".into() } else { "OK".into() },
        state: r.state.as_str().into(),
    }
}

fn ok() -> Json<KnockResult> {
    Json(KnockResult { result: "OK".into(), message: None })
}

/// Allow or deny.
#[utoipa::path(
    post, path = "/api/portknock", tag = "compat",
    request_body = KnockRequest,
    responses(
        (status = 200, description = "Done", body = KnockResult),
        (status = 400, description = "Malformed JSON", body = KnockResult),
        (status = 401, description = "Missing or bad token", body = KnockResult),
        (status = 404, description = "deny: no active grant", body = KnockResult),
        (status = 413, description = "Body too large", body = KnockResult),
        (status = 415, description = "Not application/json", body = KnockResult),
        (status = 422, description = "Invalid ip or port", body = KnockResult),
        (status = 502, description = "The firewall refused", body = KnockResult),
        (status = 503, description = "The store is unavailable", body = KnockResult),
    )
)]
pub async fn knock(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<KnockRequest>,
) -> Result<Json<KnockResult>, ApiError> {
    let addr = parse_address(&req.ip)?;
    let service = Service::tcp(parse_port(req.port)?);
    match req.action {
        Action::Allow => {
            let origin = super::grants::origin(&caller, &headers);
            let d = state.default_duration;
            state.granter.grant_recorded(origin.clone(), addr, &[service], d).await?;
            tracing::info!("{addr}: api: {origin}: opened {service} ({}s) via /api/portknock", d.as_secs());
            Ok(ok())
        }
        Action::Deny => match state.granter.revoke(RevokeTarget::Key(addr, service), &caller.0).await {
            Ok(_) => Ok(ok()),
            Err(RevokeError::NotFound) => {
                Err(ApiError::not_found(format!("no active grant for {addr} {service}")))
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Records, newest first.
#[utoipa::path(
    get, path = "/api/portknock", tag = "compat",
    params(KnockQuery),
    responses(
        (status = 200, description = "A page", body = KnockList),
        (status = 400, description = "Bad paging", body = KnockResult),
        (status = 401, description = "Missing or bad token", body = KnockResult),
        (status = 503, description = "The store is unavailable", body = KnockResult),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<KnockQuery>,
) -> Result<Json<KnockList>, ApiError> {
    let per_page = q.items.unwrap_or(50);
    let page = q.page.unwrap_or(1);
    if per_page == 0 || per_page > super::grants::MAX_PER_PAGE || page == 0 || page > 1_000_000_000 {
        return Err(ApiError::bad_request("items must be 1..1000 and page 1 or more"));
    }
    let store = state.granter.store()?.clone();
    let f = Filter { page, per_page, ..Filter::default() };
    let (items, total) = blocking(move || store.list(&f)).await??;
    Ok(Json(KnockList {
        result: "OK".into(),
        items: items.iter().map(item).collect(),
        page,
        items_per_page: per_page,
        total,
    }))
}

/// One record.
#[utoipa::path(
    get, path = "/api/portknock/{id}", tag = "compat",
    params(("id" = i64, Path, description = "Record id")),
    responses(
        (status = 200, description = "The record", body = KnockOne),
        (status = 400, description = "Bad id", body = KnockResult),
        (status = 401, description = "Missing or bad token", body = KnockResult),
        (status = 404, description = "No such record", body = KnockResult),
        (status = 503, description = "The store is unavailable", body = KnockResult),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<KnockOne>, ApiError> {
    let store = state.granter.store()?.clone();
    match blocking(move || store.get(id)).await?? {
        Some(r) => Ok(Json(KnockOne { result: "OK".into(), item: item(&r) })),
        None => Err(ApiError::not_found(format!("no record {id}"))),
    }
}

/// Status for a compat error body (the same statuses as native errors).
pub fn is_compat_path(path: &str) -> bool {
    path == "/api/portknock"
        || path == "/api/portkock"
        || path.starts_with("/api/portknock/")
        || path.starts_with("/api/portkock/")
}

/// The compat error body.
pub fn ng(status: StatusCode, message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, Json(KnockResult { result: "NG".into(), message: Some(message) })).into_response()
}
