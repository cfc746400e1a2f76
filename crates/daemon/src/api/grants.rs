//! Native endpoints: `/v1/grants`, `/v1/health`, `/v1/version`.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use portcullis_proto::{Proto, Service};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::{blocking, AppState, Caller};
use crate::grants::{Origin, OriginKind, RevokeTarget};
use crate::store::{Filter, GrantRecord, GrantState};
use portcullis_proto::addr::canonical as fold;

/// Largest page.
pub const MAX_PER_PAGE: u64 = 1000;
/// Most ports in one create request.
pub const MAX_PORTS: usize = 64;

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl From<Protocol> for Proto {
    fn from(p: Protocol) -> Proto {
        match p {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
        }
    }
}

/// Grant life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    /// In force.
    Active,
    /// Ran out.
    Expired,
    /// Closed early.
    Revoked,
    /// The firewall refused it.
    Failed,
}

impl From<StateName> for GrantState {
    fn from(s: StateName) -> GrantState {
        match s {
            StateName::Active => GrantState::Active,
            StateName::Expired => GrantState::Expired,
            StateName::Revoked => GrantState::Revoked,
            StateName::Failed => GrantState::Failed,
        }
    }
}

impl From<GrantState> for StateName {
    fn from(s: GrantState) -> StateName {
        match s {
            GrantState::Active => StateName::Active,
            GrantState::Expired => StateName::Expired,
            GrantState::Revoked => StateName::Revoked,
            GrantState::Failed => StateName::Failed,
        }
    }
}

/// What made a grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct OriginView {
    /// `door`, `spa`, `api`, `cli` or `adopted` (found in the firewall at start, see docs/api.md).
    pub kind: String,
    /// Door name, SPA stanza/user, or API token name.
    pub detail: String,
}

/// A grant record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct GrantView {
    /// Record id.
    pub id: i64,
    /// What made it.
    pub origin: OriginView,
    /// The address let in.
    pub address: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Port.
    pub port: u16,
    /// Life-cycle state.
    pub state: StateName,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// When the firewall applied it (RFC 3339), null if it failed.
    pub effective_at: Option<String>,
    /// When it ends or ended (RFC 3339).
    pub expires_at: String,
    /// Seconds left (0 unless active).
    pub remaining_seconds: u64,
    /// Duration of the latest grant or refresh, seconds.
    pub duration_seconds: u64,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// When it stopped being active (RFC 3339).
    pub closed_at: Option<String>,
    /// The firewall driver.
    pub driver: String,
    /// `ok` or the driver's error.
    pub driver_result: String,
    /// How often a repeat grant refreshed it.
    pub refresh_count: i64,
    /// When it was last refreshed (RFC 3339).
    pub refreshed_at: Option<String>,
}

/// RFC 3339 (milliseconds, UTC) for Unix ms.
pub fn rfc3339(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

impl From<&GrantRecord> for GrantView {
    fn from(r: &GrantRecord) -> GrantView {
        let now = crate::grants::clock::unix_ms(SystemTime::now());
        let remaining = if r.state == GrantState::Active { (r.expires_at - now).max(0) / 1000 } else { 0 };
        GrantView {
            id: r.id,
            origin: OriginView { kind: r.origin.kind.as_str().into(), detail: r.origin.detail.clone() },
            address: r.address.to_string(),
            protocol: match r.service.proto {
                Proto::Tcp => Protocol::Tcp,
                Proto::Udp => Protocol::Udp,
            },
            port: r.service.port,
            state: r.state.into(),
            requested_at: rfc3339(r.requested_at),
            effective_at: r.effective_at.map(rfc3339),
            expires_at: rfc3339(r.expires_at),
            remaining_seconds: u64::try_from(remaining).unwrap_or(0),
            duration_seconds: u64::try_from(r.duration_ms / 1000).unwrap_or(0),
            revoked_by: r.revoked_by.clone(),
            closed_at: r.closed_at.map(rfc3339),
            driver: r.driver.clone(),
            driver_result: r.driver_result.clone(),
            refresh_count: r.refresh_count,
            refreshed_at: r.refreshed_at.map(rfc3339),
        }
    }
}

/// Create grants: open `ports` (all of one `protocol`) for `address`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// IPv4 or IPv6 address to let in.
    #[schema(example = "192.0.2.2")]
    pub address: String,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Ports to open, 1-65535, at most 64.
    #[schema(min_items = 1, max_items = 64, example = json!([22]))]
    pub ports: Vec<i64>,
    /// Seconds; default `[api] default_duration`; capped at `[api] max_duration`.
    #[schema(minimum = 1, example = 60)]
    pub duration: Option<i64>,
}

/// Result of a create.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Created {
    /// One record per port (a repeat of an active grant returns the refreshed record).
    pub grants: Vec<GrantView>,
    /// Things worth knowing: a capped duration, a port portcullis does not protect.
    pub warnings: Vec<String>,
}

/// A page of records.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantPage {
    /// Records, newest first.
    pub items: Vec<GrantView>,
    /// This page (1-based).
    pub page: u64,
    /// Page size.
    pub per_page: u64,
    /// Records matching the filter.
    pub total: u64,
}

/// List filters and paging.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only records in this state.
    pub state: Option<StateName>,
    /// Only records for this address.
    pub address: Option<String>,
    /// Only records from this origin: `door`, `spa`, `api`, `cli`, `adopted`, or `KIND:DETAIL` (e.g. `door:ssh`).
    pub origin: Option<String>,
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u64>,
}

/// Health of the daemon's parts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the store is unavailable.
    pub status: String,
    /// Firewall driver.
    pub firewall: String,
    /// Whether the firewall closes grants by itself.
    pub kernel_expiry: bool,
    /// `ok` or the store's error.
    pub store: String,
}

/// Version information.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Version {
    /// `portcullisd`.
    pub name: String,
    /// Daemon version.
    pub version: String,
    /// API version (`v1`).
    pub api: String,
    /// Grant store schema version.
    pub schema_version: u32,
}

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
        .is_some_and(|ua| ua.starts_with("portcullis-cli/"));
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

/// Open ports for an address.
#[utoipa::path(
    post, path = "/v1/grants", tag = "grants",
    request_body = CreateGrant,
    responses(
        (status = 201, description = "Granted and recorded", body = Created),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid address, port or duration", body = ErrorBody),
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
    let mut warnings = Vec::new();
    let d = duration(&state, req.duration, &mut warnings)?;
    unprotected_warnings(&state, &services, &mut warnings);
    let origin = origin(&caller, &headers);
    let rows = state.granter.grant_recorded(origin.clone(), addr, &services, d).await?;
    let what = services.iter().map(Service::to_string).collect::<Vec<_>>().join(",");
    tracing::info!(
        "{addr}: api: {origin}: opened {what} ({}s) via {}",
        d.as_secs(),
        state.granter.driver_name()
    );
    Ok((StatusCode::CREATED, Json(Created { grants: rows.iter().map(GrantView::from).collect(), warnings })))
}

/// Parse a list query into a store filter.
pub fn filter(q: &ListQuery) -> Result<Filter, ApiError> {
    let page = q.page.unwrap_or(1);
    if page == 0 || page > 1_000_000_000 {
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
    Ok(Filter { state: q.state.map(Into::into), address, origin_kind, origin_detail, page, per_page })
}

/// List grant records, newest first.
#[utoipa::path(
    get, path = "/v1/grants", tag = "grants",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of records", body = GrantPage),
        (status = 400, description = "Bad filter or paging", body = ErrorBody),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
pub async fn list_grants(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<GrantPage>, ApiError> {
    let f = filter(&q)?;
    let store = state.granter.store()?.clone();
    let (page, per_page) = (f.page, f.per_page);
    let (items, total) = blocking(move || store.list(&f)).await??;
    Ok(Json(GrantPage { items: items.iter().map(GrantView::from).collect(), page, per_page, total }))
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
        Some(r) => Ok(Json(GrantView::from(&r))),
        None => Err(ApiError::not_found(format!("no grant {id}"))),
    }
}

/// Revoke an active grant: closes it in the firewall at once. Of concurrent revokes of
/// the same grant exactly one succeeds; the others get 409.
#[utoipa::path(
    delete, path = "/v1/grants/{id}", tag = "grants",
    params(("id" = i64, Path, description = "Record id")),
    responses(
        (status = 200, description = "Revoked; the record as it is now", body = GrantView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "Missing or bad token", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
        (status = 409, description = "Not active (expired, revoked or failed)", body = ErrorBody),
        (status = 502, description = "The firewall refused", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    )
)]
pub async fn revoke_grant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<GrantView>, ApiError> {
    let r = state.granter.revoke(RevokeTarget::Id(id), &caller.0).await?;
    Ok(Json(GrantView::from(&r)))
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
    Json(Health {
        status: if store == "ok" { "ok".into() } else { "degraded".into() },
        firewall: state.granter.driver_name().into(),
        kernel_expiry: state.granter.kernel_expiry(),
        store,
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
        api: "v1".into(),
        schema_version: crate::store::db::SCHEMA_VERSION as u32,
    })
}
