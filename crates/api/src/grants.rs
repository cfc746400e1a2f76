//! `/v1/grants`: grant records as the API shows them, the create request, list pages and
//! filters, and the vocabulary the grant store shares ([`GrantState`], [`OriginKind`]).

use std::fmt;
use std::net::IpAddr;

use portcullis_proto::Proto;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::schema::{IpAddress, Port};

/// Largest page of a list.
pub const MAX_PER_PAGE: u64 = 1000;
/// Highest page number a list accepts.
pub const MAX_PAGE: u64 = 1_000_000_000;
/// Most ports in one create request.
pub const MAX_PORTS: usize = 64;

/// Transport protocol of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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

impl From<Proto> for Protocol {
    fn from(p: Proto) -> Protocol {
        match p {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Proto::from(*self).as_str())
    }
}

/// Where a grant applies: this node only, or every node of the fleet (`[fleet]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This node only (the default).
    #[default]
    Local,
    /// Every node of the fleet, each with the time left.
    Fleet,
}

/// A grant record's life cycle: `active` → `expired` | `revoked`; `failed` from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantState {
    /// In force (in the firewall, until `expires_at`).
    Active,
    /// Ran out.
    Expired,
    /// Closed early (API, CLI, or reconciliation).
    Revoked,
    /// The firewall refused it.
    Failed,
}

impl GrantState {
    /// Every state.
    pub const ALL: [GrantState; 4] =
        [GrantState::Active, GrantState::Expired, GrantState::Revoked, GrantState::Failed];

    /// Lower-case name, as stored and as on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
            GrantState::Failed => "failed",
        }
    }

    /// Parse a lower-case name.
    pub fn parse(s: &str) -> Option<GrantState> {
        GrantState::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for GrantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What made a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    /// A knock sequence (detail: the door name).
    Door,
    /// An SPA packet (detail: stanza / user).
    Spa,
    /// The REST API (detail: the token name).
    Api,
    /// The `portcullis grants` CLI through the API (detail: the token name).
    Cli,
    /// Found in the firewall at start, granted moments before a crash, with its record
    /// lost in flight: recorded at reconciliation instead of revoked.
    Adopted,
}

impl OriginKind {
    /// Every kind, in a fixed order.
    pub const ALL: [OriginKind; 5] =
        [OriginKind::Door, OriginKind::Spa, OriginKind::Api, OriginKind::Cli, OriginKind::Adopted];

    /// Lower-case name, as stored and as on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            OriginKind::Door => "door",
            OriginKind::Spa => "spa",
            OriginKind::Api => "api",
            OriginKind::Cli => "cli",
            OriginKind::Adopted => "adopted",
        }
    }

    /// Parse a lower-case name.
    pub fn parse(s: &str) -> Option<OriginKind> {
        OriginKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for OriginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What made a grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct OriginView {
    /// `door`, `spa`, `api`, `cli` or `adopted` (found in the firewall at start, see docs/api.md).
    pub kind: OriginKind,
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
    /// The address let in; for a prefix grant, the network address of `prefix_len`.
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    /// Set for a prefix grant (carrier-grade NAT): every address in
    /// `address/prefix_len` was let in. Absent for a single address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    /// Protocol.
    pub protocol: Protocol,
    /// Port.
    #[schema(value_type = Port)]
    pub port: u16,
    /// Life-cycle state.
    pub state: GrantState,
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
    /// Fleet grants only (`?scope=fleet`): the node that made it. The `id` is then
    /// the fleet's id, which `DELETE /v1/grants/{id}?scope=fleet` takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl GrantView {
    /// What was let in: the address, or `network/len` for a prefix grant.
    pub fn source(&self) -> String {
        match self.prefix_len {
            Some(len) => format!("{}/{len}", self.address),
            None => self.address.to_string(),
        }
    }
}

/// Create grants: open `ports` (all of one `protocol`) for `address`.
// Address and ports stay text and signed numbers so that the daemon, not the
// deserialiser, words the refusal of a bad one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// IPv4 or IPv6 address to let in.
    #[schema(value_type = IpAddress, example = "192.0.2.2")]
    pub address: String,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Ports to open, 1-65535, at most 64.
    #[schema(value_type = Vec<Port>, min_items = 1, max_items = 64, example = json!([22]))]
    pub ports: Vec<i64>,
    /// Seconds; default `[api] default_duration`; capped at `[api] max_duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, example = 60)]
    pub duration: Option<i64>,
    /// `local` (default): this node only; `fleet`: every node of the fleet too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
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

/// List filters and paging (the query string of `GET /v1/grants`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only records in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<GrantState>,
    /// Only records for this address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<IpAddress>, inline)]
    pub address: Option<String>,
    /// Only records from this origin: `door`, `spa`, `api`, `cli`, `adopted`, or `KIND:DETAIL` (e.g. `door:ssh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^(door|spa|api|cli|adopted)(:.*)?$")]
    pub origin: Option<String>,
    /// 1-based page (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1_000_000_000)]
    pub page: Option<u64>,
    /// Page size, 1-1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u64>,
    /// `local` (default): this node's records; `fleet`: the fleet's live grants, each
    /// with the node that made it (`state` other than `active` and `origin` do not apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// The query string of `DELETE /v1/grants/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// `local` (default): `id` is this node's record; `fleet`: `id` is a fleet grant's id
    /// (from `?scope=fleet`), closed on every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_on_the_wire_are_the_stored_names() {
        for s in GrantState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(GrantState::parse(s.as_str()), Some(s));
        }
        for k in OriginKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(OriginKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(GrantState::parse("Active"), None);
        assert_eq!(OriginKind::parse("door:ssh"), None);
    }

    #[test]
    fn a_view_reads_back_typed() {
        let v: GrantView = serde_json::from_value(serde_json::json!({
            "id": 7, "origin": {"kind": "door", "detail": "ssh"}, "address": "2001:db8::2",
            "protocol": "udp", "port": 51820, "state": "active",
            "requested_at": "2026-01-01T00:00:00.000Z", "effective_at": null,
            "expires_at": "2026-01-01T00:01:00.000Z", "remaining_seconds": 42, "duration_seconds": 60,
            "revoked_by": null, "closed_at": null, "driver": "nftables", "driver_result": "ok",
            "refresh_count": 0, "refreshed_at": null
        }))
        .unwrap();
        assert_eq!(
            (v.origin.kind, v.state, v.protocol, v.port),
            (OriginKind::Door, GrantState::Active, Protocol::Udp, 51820)
        );
        assert_eq!(v.address, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(serde_json::to_value(&v).unwrap()["address"], "2001:db8::2");
    }
}
