//! `/api/portknock`: the shapes of the classic port-knock REST API, kept for its clients.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::grants::GrantState;
use crate::schema::{IpAddress, LenientPort, Port};

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Open.
    Allow,
    /// Close.
    Deny,
}

/// `OK` or `NG` (no good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Outcome {
    /// Done.
    #[serde(rename = "OK")]
    Ok,
    /// Not done.
    #[serde(rename = "NG")]
    Ng,
}

/// A compat request. The daemon reads it as leniently as the original API did: keys
/// unquoted and in any case, strings single-quoted, trailing commas (see docs/api.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockRequest {
    /// `allow` or `deny`.
    pub action: Action,
    /// Address.
    #[schema(value_type = IpAddress, example = "192.0.2.2")]
    pub ip: String,
    /// TCP port, 1-65535 (a string of digits is read as a number).
    #[schema(value_type = LenientPort, example = 22)]
    pub port: i64,
}

/// `{"result":"OK"}` or `{"result":"NG","message":...}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockResult {
    /// `OK` or `NG`.
    pub result: Outcome,
    /// Why not, when `NG`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl KnockResult {
    /// `{"result":"OK"}`.
    pub fn ok() -> KnockResult {
        KnockResult { result: Outcome::Ok, message: None }
    }

    /// `{"result":"NG","message":...}`.
    pub fn ng(message: impl Into<String>) -> KnockResult {
        KnockResult { result: Outcome::Ng, message: Some(message.into()) }
    }
}

/// Where a request pointed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Destination {
    /// Always `allow` (records are grants).
    pub action: Action,
    /// Address.
    #[schema(value_type = IpAddress)]
    pub ip: IpAddr,
    /// Port.
    #[schema(value_type = Port)]
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
    pub result: Outcome,
    /// `active`, `expired`, `revoked` or `failed`.
    pub state: GrantState,
}

/// A page of records.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnockList {
    /// `OK`.
    pub result: Outcome,
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
    pub result: Outcome,
    /// The record.
    pub item: KnockItem,
}

/// Paging.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KnockQuery {
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub items: Option<u64>,
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 1_000_000_000)]
    pub page: Option<u64>,
}
