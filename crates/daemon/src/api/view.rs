//! Store records as the API shows them: the one place a [`GrantRecord`] becomes a wire
//! type, natively ([`grant`]) or in the compatibility shape ([`knock_item`]).

use std::time::{Duration, SystemTime};

use portcullis_api::compat::{Action, Destination, KnockItem, Outcome};
use portcullis_api::{GrantState, GrantView, OriginView};

use crate::store::GrantRecord;

/// RFC 3339 (milliseconds, UTC) for Unix ms.
pub fn rfc3339(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Whole seconds from ms, 0 for anything negative.
fn secs(ms: i64) -> u64 {
    u64::try_from(ms / 1000).unwrap_or(0)
}

/// The native view of `r` at `now_ms` (Unix ms; only `remaining_seconds` depends on it).
pub fn grant(r: &GrantRecord, now_ms: i64) -> GrantView {
    let remaining = if r.state == GrantState::Active { r.expires_at.saturating_sub(now_ms) } else { 0 };
    GrantView {
        id: r.id,
        origin: OriginView { kind: r.origin.kind, detail: r.origin.detail.clone() },
        address: r.address,
        prefix_len: (!r.source().is_host()).then_some(r.len),
        protocol: r.service.proto.into(),
        port: r.service.port,
        state: r.state,
        requested_at: rfc3339(r.requested_at),
        effective_at: r.effective_at.map(rfc3339),
        expires_at: rfc3339(r.expires_at),
        remaining_seconds: secs(remaining),
        duration_seconds: secs(r.duration_ms),
        revoked_by: r.revoked_by.clone(),
        closed_at: r.closed_at.map(rfc3339),
        driver: r.driver.clone(),
        driver_result: r.driver_result.clone(),
        refresh_count: r.refresh_count,
        refreshed_at: r.refreshed_at.map(rfc3339),
        node: None,
    }
}

/// Native views of `rows`, now.
pub fn grants(rows: &[GrantRecord], now: i64) -> Vec<GrantView> {
    rows.iter().map(|r| grant(r, now)).collect()
}

/// The compatibility view of `r`.
pub fn knock_item(r: &GrantRecord) -> KnockItem {
    KnockItem {
        id: r.id,
        requested_at: rfc3339(r.requested_at),
        expired_at: rfc3339(r.expires_at),
        destination: Destination { action: Action::Allow, ip: r.address, port: r.service.port },
        result: if r.state == GrantState::Failed { Outcome::Ng } else { Outcome::Ok },
        state: r.state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::{Origin, OriginKind};
    use portcullis_api::Protocol;
    use portcullis_proto::Service;

    fn record(state: GrantState) -> GrantRecord {
        GrantRecord {
            id: 3,
            origin: Origin { kind: OriginKind::Spa, detail: "alice".into() },
            address: "2001:db8::7".parse().unwrap(),
            len: 128,
            service: Service::udp(51820),
            requested_at: 1_000,
            effective_at: Some(1_010),
            expires_at: 61_010,
            duration_ms: 60_000,
            state,
            revoked_by: None,
            closed_at: None,
            driver: "none".into(),
            driver_result: "ok".into(),
            refresh_count: 0,
            refreshed_at: None,
        }
    }

    #[test]
    fn a_record_becomes_its_view() {
        let v = grant(&record(GrantState::Active), 20_000);
        assert_eq!((v.origin.kind, v.origin.detail.as_str()), (OriginKind::Spa, "alice"));
        assert_eq!((v.protocol, v.port, v.state), (Protocol::Udp, 51820, GrantState::Active));
        assert_eq!((v.remaining_seconds, v.duration_seconds), (41, 60));
        assert_eq!(v.requested_at, "1970-01-01T00:00:01.000Z");
        assert_eq!(v.effective_at.as_deref(), Some("1970-01-01T00:00:01.010Z"));
        // Past its expiry, or not active: nothing left.
        assert_eq!(grant(&record(GrantState::Active), 99_000).remaining_seconds, 0);
        assert_eq!(grant(&record(GrantState::Revoked), 20_000).remaining_seconds, 0);
        assert_eq!((v.prefix_len, v.source()), (None, "2001:db8::7".to_string()));
        assert!(serde_json::to_value(&v).unwrap().get("prefix_len").is_none(), "absent for one address");
    }

    #[test]
    fn a_prefix_grant_shows_its_prefix() {
        let mut r = record(GrantState::Active);
        (r.address, r.len) = ("2001:db8:0:7::".parse().unwrap(), 64);
        let v = grant(&r, 20_000);
        assert_eq!((v.prefix_len, v.source()), (Some(64), "2001:db8:0:7::/64".to_string()));
        assert_eq!(serde_json::to_value(&v).unwrap()["prefix_len"], 64);
    }

    #[test]
    fn a_record_becomes_its_compat_item() {
        let i = knock_item(&record(GrantState::Failed));
        assert_eq!((i.result, i.state, i.destination.port), (Outcome::Ng, GrantState::Failed, 51820));
        assert_eq!(knock_item(&record(GrantState::Expired)).result, Outcome::Ok);
        assert_eq!(i.expired_at, "1970-01-01T00:01:01.010Z");
    }
}
