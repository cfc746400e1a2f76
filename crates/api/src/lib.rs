//! Wire types of the portcullis REST API, shared by the daemon (`portcullisd`, which
//! serves them and derives its OpenAPI document from them) and the client
//! (`portcullis grants`, which reads them back as typed values).
//!
//! - [`grants`]: the `/v1/grants` records, requests and pages, and the vocabulary the
//!   grant store uses too ([`GrantState`], [`OriginKind`]);
//! - [`meta`]: `/v1/health`, `/v1/version` and the error body every `/v1` failure has;
//! - [`compat`]: the classic `/api/portknock` shapes.
//!
//! No I/O and no behaviour beyond naming and parsing the vocabulary: the rules (what
//! may be granted, caps, paging) live in the daemon.

pub mod compat;
pub mod grants;
pub mod meta;
pub mod schema;

pub use grants::{
    CreateGrant, Created, GrantPage, GrantState, GrantView, ListQuery, OriginKind, OriginView, Protocol,
    RevokeQuery, Scope,
};
pub use meta::{ErrorBody, FleetHealth, Health, Version};

/// API version served under `/v1`.
pub const API_VERSION: &str = "v1";

/// User-agent prefix of the `portcullis` CLI: grants it makes are recorded with origin
/// `cli` instead of `api`.
pub const CLI_USER_AGENT_PREFIX: &str = "portcullis-cli/";
