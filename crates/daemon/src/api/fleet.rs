//! The fleet side of `/v1/grants` and `/v1/health` (`[fleet]` only): fleet-scoped
//! creates, the fleet's live grants with the node that made each, revoking one on every
//! node, and this node's link to the database.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use portcullis_api::{FleetHealth, GrantPage, GrantState, GrantView, ListQuery, OriginView};
use portcullis_proto::Service;

use super::error::ApiError;
use super::{blocking, view};
use crate::fleet::node::{current, Fleet, Outgoing};
use crate::fleet::shared::FleetGrant;
use crate::grants::{Origin, OriginKind};

/// The daemon's fleet, or why a fleet request cannot be served here.
fn fleet() -> Result<&'static Arc<Fleet>, ApiError> {
    current().ok_or_else(|| ApiError::invalid("scope fleet needs a [fleet] section in the daemon's config"))
}

fn unavailable(e: &crate::fleet::FleetError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "fleet_unavailable", format!("fleet: {e}"))
}

/// Refuse a fleet-scoped create early, before anything is granted locally.
pub fn check_create() -> Result<(), ApiError> {
    fleet().map(drop)
}

/// Share a grant made here with every node; a warning when the database is away.
pub fn share(addr: IpAddr, services: &[Service], d: Duration, origin: &Origin, warnings: &mut Vec<String>) {
    let Some(f) = current() else { return };
    f.share(Outgoing::new(addr, services, d, origin));
    if !f.status().connected.load(Ordering::Relaxed) {
        warnings.push(
            "the fleet database is unreachable: the grant holds here and is shared when it returns".into(),
        );
    }
}

/// The view of a fleet grant at `now` (fleet time).
pub fn grant_view(g: &FleetGrant, state: GrantState, now: i64, revoked_by: Option<String>) -> GrantView {
    let (kind, detail) = match g.origin.split_once(':') {
        Some((k, d)) => (OriginKind::parse(k), d.to_owned()),
        None => (None, g.origin.clone()),
    };
    let remaining = if state == GrantState::Active { g.expires_at.saturating_sub(now).max(0) } else { 0 };
    let closed = (state == GrantState::Revoked).then(|| view::rfc3339(now));
    GrantView {
        id: g.id,
        origin: OriginView { kind: kind.unwrap_or(OriginKind::Api), detail },
        address: g.addr,
        prefix_len: None,
        protocol: g.service.proto.into(),
        port: g.service.port,
        state,
        requested_at: view::rfc3339(g.created_at),
        effective_at: Some(view::rfc3339(g.created_at)),
        expires_at: view::rfc3339(g.expires_at),
        remaining_seconds: u64::try_from(remaining / 1000).unwrap_or(0),
        duration_seconds: u64::try_from(g.expires_at.saturating_sub(g.created_at) / 1000).unwrap_or(0),
        revoked_by,
        closed_at: closed,
        driver: "fleet".into(),
        driver_result: "ok".into(),
        refresh_count: 0,
        refreshed_at: None,
        node: Some(g.node.clone()),
    }
}

/// `GET /v1/grants?scope=fleet`: the live fleet grants, newest first, paged.
pub async fn list(
    q: &ListQuery,
    address: Option<IpAddr>,
    page: u64,
    per_page: u64,
) -> Result<GrantPage, ApiError> {
    if q.state.is_some_and(|s| s != GrantState::Active) {
        return Err(ApiError::bad_request("scope=fleet lists live grants only: state must be active"));
    }
    let origin = q.origin.clone();
    let f = fleet()?;
    let (all, now) = blocking(move || f.live_grants(address).map(|g| (g, f.clock().fleet_ms())))
        .await?
        .map_err(|e| unavailable(&e))?;
    let mut items: Vec<GrantView> = all
        .iter()
        .rev()
        .filter(|g| origin.as_deref().is_none_or(|o| g.origin == o || g.origin.split(':').next() == Some(o)))
        .map(|g| grant_view(g, GrantState::Active, now, None))
        .collect();
    let total = items.len() as u64;
    let skip = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    items = items.into_iter().skip(skip).take(usize::try_from(per_page).unwrap_or(usize::MAX)).collect();
    Ok(GrantPage { items, page, per_page, total })
}

/// `DELETE /v1/grants/{id}?scope=fleet`: close fleet grant `id` on every node.
pub async fn revoke(id: i64) -> Result<GrantView, ApiError> {
    let f = fleet()?;
    let done = blocking(move || f.revoke_id(id)).await?.map_err(|e| unavailable(&e))?;
    match done {
        Some(g) => {
            tracing::info!(
                "{}: fleet grant {id} ({}) from {} revoked on every node",
                g.addr,
                g.service,
                g.node
            );
            Ok(grant_view(&g, GrantState::Revoked, f.clock().fleet_ms(), Some(f.config().node.clone())))
        }
        None => Err(ApiError::not_found(format!("no live fleet grant {id}"))),
    }
}

/// This node's link to the fleet database, if it is in a fleet.
pub fn health() -> Option<FleetHealth> {
    let f = current()?;
    let s = f.status();
    let status = if s.connected.load(Ordering::Relaxed) {
        "ok".to_owned()
    } else {
        match s.problem() {
            p if p.is_empty() => "not connected".to_owned(),
            p => p,
        }
    };
    Some(FleetHealth {
        node: f.config().node.clone(),
        status,
        lag_ms: s.lag_ms.load(Ordering::Relaxed),
        queued: s.queued.load(Ordering::Relaxed),
        dropped: s.dropped.load(Ordering::Relaxed),
        clock_skew_ms: s.skew_ms.load(Ordering::Relaxed),
    })
}
