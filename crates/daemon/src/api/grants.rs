//! Native endpoints: `/v1/grants`, `/v1/health`, `/v1/version`.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use portcullis_api::grants::{MAX_PAGE, MAX_PER_PAGE, MAX_PORTS};
use portcullis_api::{
    CreateGrant, Created, ErrorBody, GrantPage, GrantView, Health, ListQuery, Protocol, RevokeQuery, Scope,
    Version, CLI_USER_AGENT_PREFIX,
};
use portcullis_proto::{Proto, Service};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{blocking, view, AppState, Caller};
use crate::grants::{Origin, OriginKind, RevokeTarget};
use crate::store::Filter;
use portcullis_proto::addr::canonical as fold;

/// Parse and check an address a grant may be for.
pub fn parse_address(s: &str) -> Result<IpAddr, ApiError> {
    let ip: IpAddr =
        s.trim().parse().map_err(|_| ApiError::invalid(format!("{:?} is not an IP address", trunc(s))))?;
    let ip = fold(ip);
    let bad = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    if bad {
        return Err(ApiError::invalid(format!(
            "{ip} cannot be granted (unspecified, multicast or broadcast)"
        )));
    }
    Ok(ip)
}

/// A port from JSON (signed, so that 0, negatives and > 65535 get our message).
pub fn parse_port(p: i64) -> Result<u16, ApiError> {
    u16::try_from(p)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ApiError::invalid(format!("port {p} is not in 1..65535")))
}

/// Clip untrusted text for messages.
pub fn trunc(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Duration from the request, defaulted and capped; warnings say when capped.
pub fn duration(
    state: &AppState,
    secs: Option<i64>,
    warnings: &mut Vec<String>,
) -> Result<Duration, ApiError> {
    let max = state.max_duration;
    match secs {
        None => Ok(state.default_duration),
        Some(s) if s < 1 => Err(ApiError::invalid(format!("duration {s} must be at least 1 second"))),
        Some(s) => {
            let d = Duration::from_secs(u64::try_from(s).unwrap_or(u64::MAX));
            if d > max {
                warnings.push(format!("duration {s}s capped at max_duration {}s", max.as_secs()));
                Ok(max)
            } else {
                Ok(d)
            }
        }
    }
}

/// The origin of an API request: `cli` if the portcullis CLI says so, else `api`.
pub fn origin(caller: &Caller, headers: &HeaderMap) -> Origin {
    let cli = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with(CLI_USER_AGENT_PREFIX));
    Origin { kind: if cli { OriginKind::Cli } else { OriginKind::Api }, detail: caller.0.clone() }
}

/// Warn about services the firewall does not protect (the grant changes nothing).
pub fn unprotected_warnings(state: &AppState, services: &[Service], warnings: &mut Vec<String>) {
    for s in services {
        if !state.granter.protected().contains(s) {
            warnings.push(format!(
                "{s} is not protected by portcullis: this grant is recorded but changes nothing in the firewall"
            ));
        }
    }
}

/// Open ports for an address. With `"scope": "fleet"` the grant is also applied on every
/// node of the fleet, with the time left.
#[utoipa::path(
    post, path = "/v1/grants", tag = "grants",
    request_body = CreateGrant,
    responses(
        (status = 201, description = "Granted and recorded", body = Created),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid address, port or duration; scope fleet without [fleet]", body = ErrorBody),
        (status = 502, description = "The firewall refused", body = ErrorBody),
        (status = 503, description = "The store is unavailable or busy", body = ErrorBody),
    )
)]
pub async fn create_grant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateGrant>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let addr = parse_address(&req.address)?;
    if req.ports.is_empty() || req.ports.len() > MAX_PORTS {
        return Err(ApiError::invalid(format!("ports must list 1 to {MAX_PORTS} ports")));
    }
    let proto: Proto = req.protocol.unwrap_or(Protocol::Tcp).into();
    let mut services = Vec::with_capacity(req.ports.len());
    for &p in &req.ports {
        let s = Service { proto, port: parse_port(p)? };
        if !services.contains(&s) {
            services.push(s);
        }
    }
    let fleet_scoped = req.scope == Some(Scope::Fleet);
    if fleet_scoped {
        super::fleet::check_create()?;
    }
    let mut warnings = Vec::new();
    let d = duration(&state, req.duration, &mut warnings)?;
    unprotected_warnings(&state, &services, &mut warnings);
    let origin = origin(&caller, &headers);
    let rows = state.granter.grant_recorded(origin.clone(), addr, &services, d).await?;
    if fleet_scoped {
        super::fleet::share(addr, &services, d, &origin, &mut warnings);
    }
    let what = services.iter().map(Service::to_string).collect::<Vec<_>>().join(",");
    tracing::info!(
        "{addr}: api: {origin}: opened {what} ({}s) via {}",
        d.as_secs(),
        state.granter.driver_name()
    );
    let now = state.granter.clock().now_ms();
    Ok((StatusCode::CREATED, Json(Created { grants: view::grants(&rows, now), warnings })))
}

/// Parse a list query into a store filter.
pub fn filter(q: &ListQuery) -> Result<Filter, ApiError> {
    let page = q.page.unwrap_or(1);
    if page == 0 || page > MAX_PAGE {
        return Err(ApiError::bad_request("page must be 1 or more"));
    }
    let per_page = q.per_page.unwrap_or(100);
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::bad_request(format!("per_page must be 1..{MAX_PER_PAGE}")));
    }
    let address =
        match &q.address {
            None => None,
            Some(a) => Some(fold(a.trim().parse::<IpAddr>().map_err(|_| {
                ApiError::bad_request(format!("address {:?} is not an IP address", trunc(a)))
            })?)),
        };
    let (origin_kind, origin_detail) = match &q.origin {
        None => (None, None),
        Some(o) => {
            let (k, d) = match o.split_once(':') {
                Some((k, d)) => (k, Some(d.to_string())),
                None => (o.as_str(), None),
            };
            let kind = OriginKind::parse(k).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "origin {:?}: kind must be door, spa, api, cli or adopted",
                    trunc(o)
                ))
            })?;
            (Some(kind), d)
        }
    };
    Ok(Filter { state: q.state, address, origin_kind, origin_detail, page, per_page })
}

/// List grant records, newest first.
#[utoipa::path(
    get, path = "/v1/grants", tag = "grants",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of records", body = GrantPage),
        (status = 400, description = "Bad filter or paging", body = ErrorBody),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
        (status = 422, description = "scope=fleet without [fleet]", body = ErrorBody),
        (status = 503, description = "The store (or the fleet database) is unavailable", body = ErrorBody),
    )
)]
pub async fn list_grants(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<GrantPage>, ApiError> {
    let f = filter(&q)?;
    if q.scope == Some(Scope::Fleet) {
        return Ok(Json(super::fleet::list(&q, f.address, f.page, f.per_page).await?));
    }
    let store = state.granter.store()?.clone();
    let (page, per_page) = (f.page, f.per_page);
    let (items, total) = blocking(move || store.list(&f)).await??;
    Ok(Json(GrantPage { items: view::grants(&items, state.granter.clock().now_ms()), page, per_page, total }))
}

/// One grant record.
#[utoipa::path(
    get, path = "/v1/grants/{id}", tag = "grants",
    params(("id" = i64, Path, description = "Record id")),
    responses(
        (status = 200, description = "The record", body = GrantView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
pub async fn get_grant(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<GrantView>, ApiError> {
    let store = state.granter.store()?.clone();
    match blocking(move || store.get(id)).await?? {
        Some(r) => Ok(Json(view::grant(&r, state.granter.clock().now_ms()))),
        None => Err(ApiError::not_found(format!("no grant {id}"))),
    }
}

/// Revoke an active grant: closes it in the firewall at once. Of concurrent revokes of
/// the same grant exactly one succeeds; the others get 409.
#[utoipa::path(
    delete, path = "/v1/grants/{id}", tag = "grants",
    params(("id" = i64, Path, description = "Record id (a fleet grant's id with scope=fleet)"), RevokeQuery),
    responses(
        (status = 200, description = "Revoked; the record as it is now", body = GrantView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
        (status = 409, description = "Not active (expired, revoked or failed)", body = ErrorBody),
        (status = 422, description = "scope=fleet without [fleet]", body = ErrorBody),
        (status = 502, description = "The firewall refused", body = ErrorBody),
        (status = 503, description = "The store (or the fleet database) is unavailable", body = ErrorBody),
    )
)]
pub async fn revoke_grant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(rq): ApiQuery<RevokeQuery>,
) -> Result<Json<GrantView>, ApiError> {
    if rq.scope == Some(Scope::Fleet) {
        return Ok(Json(super::fleet::revoke(id).await?));
    }
    let r = state.granter.revoke(RevokeTarget::Id(id), &caller.0).await?;
    crate::fleet::node::revoke_everywhere(r.address, r.service);
    Ok(Json(view::grant(&r, state.granter.clock().now_ms())))
}

/// Health of firewall and store.
#[utoipa::path(
    get, path = "/v1/health", tag = "meta",
    responses(
        (status = 200, description = "Health", body = Health),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
    )
)]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let store = match state.granter.store() {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let fw = state.granter.firewall_state();
    let firewall_status = fw.problem().unwrap_or_else(|| "ok".into());
    let fleet = super::fleet::health();
    let healthy = store == "ok" && firewall_status == "ok" && fleet.as_ref().is_none_or(|f| f.status == "ok");
    Json(Health {
        status: if healthy { "ok".into() } else { "degraded".into() },
        firewall: state.granter.driver_name().into(),
        kernel_expiry: state.granter.kernel_expiry(),
        store,
        firewall_status,
        firewall_restores: fw.restores.load(std::sync::atomic::Ordering::Relaxed),
        fleet,
    })
}

/// Daemon and API version.
#[utoipa::path(
    get, path = "/v1/version", tag = "meta",
    responses(
        (status = 200, description = "Version", body = Version),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
    )
)]
pub async fn version() -> Json<Version> {
    Json(Version {
        name: "portcullisd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api: portcullis_api::API_VERSION.into(),
        schema_version: crate::store::db::SCHEMA_VERSION as u32,
    })
}
