//! `/v1/health`, `/v1/version`, and the error body of every `/v1` failure.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The error body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ErrorBody {
    /// Machine-readable code: `unauthorized`, `not_found`, `method_not_allowed`,
    /// `bad_request`, `invalid`, `unsupported_media_type`, `payload_too_large`,
    /// `conflict`, `firewall_error`, `store_unavailable`, `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// Health of the daemon's parts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the store is unavailable or the firewall does not
    /// match the grant records (see `firewall_status`).
    pub status: String,
    /// Firewall driver.
    pub firewall: String,
    /// Whether the firewall closes grants by itself.
    pub kernel_expiry: bool,
    /// `ok` or the store's error.
    pub store: String,
    /// `ok`, or why the firewall does not match the grant records (someone removed or
    /// changed the ruleset; it stays so until a check after the repair passes).
    #[serde(default = "ok")]
    pub firewall_status: String,
    /// How often the daemon reinstalled a ruleset removed or changed by someone else.
    #[serde(default)]
    pub firewall_restores: u64,
    /// Fleet mode only: this node's link to the fleet database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetHealth>,
}

/// This node's link to the fleet database.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FleetHealth {
    /// This node's name in the fleet.
    pub node: String,
    /// `ok`, or why the node has no connection to the fleet database (it keeps
    /// enforcing what it holds; fleet-scoped SPA follows `on_db_down`).
    pub status: String,
    /// Last fleet grant from another node: milliseconds from its recording to its
    /// application here.
    pub lag_ms: i64,
    /// Grants and revocations of this node waiting for the database.
    pub queued: u64,
    /// Grants dropped from a full queue (they stayed local).
    pub dropped: u64,
    /// The database's clock minus this node's, milliseconds.
    pub clock_skew_ms: i64,
}

fn ok() -> String {
    "ok".into()
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
