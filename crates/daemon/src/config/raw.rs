//! The native TOML file as serde reads it, before any meaning is checked. Every value
//! keeps its span so validation can name the line; unknown keys are refused here.
//!
//! Values a user may write in more than one shape (a duration as seconds or text, a
//! knock as a number or text, a command as a line or an argv) end in an `Other` variant
//! holding whatever was written, so validation can say what is accepted instead of
//! serde's "did not match any variant".

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default, rename = "door")]
    pub doors: Vec<Spanned<RawDoor>>,
    pub spa: Option<Spanned<RawSpa>>,
    pub api: Option<Spanned<RawApi>>,
    pub fleet: Option<Spanned<crate::fleet::config::RawFleet>>,
    pub store: Option<Spanned<RawStore>>,
}

/// `[daemon]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    pub state_dir: Option<Spanned<String>>,
    pub log: Option<Spanned<String>>,
    pub max_tracked: Option<Spanned<i64>>,
    pub backend: Option<Spanned<String>>,
    pub max_grants: Option<Spanned<i64>>,
    pub log_file: Option<Spanned<String>>,
    pub pid_file: Option<Spanned<String>>,
    pub command_time_limit: Option<Spanned<RawDuration>>,
    pub never_gate: Option<Spanned<Vec<Spanned<String>>>>,
    pub opens_per_prefix: Option<Spanned<RawRate>>,
    pub prefix_v4: Option<Spanned<i64>>,
    pub prefix_v6: Option<Spanned<i64>>,
    pub flush_at_start: Option<bool>,
    pub flush_at_exit: Option<bool>,
    pub syslog_identity: Option<Spanned<String>>,
    pub syslog_facility: Option<Spanned<String>>,
    pub verbose: Option<bool>,
    pub mode: Option<Spanned<String>>,
    pub gate_forward: Option<Spanned<bool>>,
    pub iptables_chain: Option<Spanned<String>>,
    pub iptables_jump: Option<Spanned<i64>>,
    pub accept_table: Option<Spanned<String>>,
    pub nat: Option<Spanned<bool>>,
}

/// One `[[door]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDoor {
    pub name: Spanned<String>,
    pub sequence: Option<Spanned<Vec<Spanned<RawKnock>>>>,
    pub seq_timeout: Option<Spanned<RawDuration>>,
    pub tcp_flags: Option<Spanned<String>>,
    pub open: Option<Spanned<Vec<Spanned<String>>>>,
    pub open_for: Option<Spanned<RawDuration>>,
    pub target: Option<Spanned<String>>,
    pub start_command: Option<Spanned<RawCommand>>,
    pub start_command_6: Option<Spanned<RawCommand>>,
    pub stop_command: Option<Spanned<RawCommand>>,
    pub stop_command_6: Option<Spanned<RawCommand>>,
    pub cmd_timeout: Option<Spanned<RawDuration>>,
    pub one_time_sequences: Option<Spanned<String>>,
    pub opens_per_second: Option<Spanned<i64>>,
    pub max_live_grants: Option<Spanned<i64>>,
    pub rotating: Option<Spanned<RawRotating>>,
    pub grant_prefix_v4: Option<Spanned<i64>>,
    pub grant_prefix_v6: Option<Spanned<i64>>,
    pub scope: Option<Spanned<String>>,
}

/// A command: a shell line or an argv.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
    Other(toml::Value),
}

/// A knock: a port number, or `"PORT[:tcp|udp]"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawKnock {
    Port(i64),
    Text(String),
    Other(toml::Value),
}

/// A duration: whole seconds, or text like `"500ms"`, `"5m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Seconds(i64),
    Text(String),
    Other(toml::Value),
}

/// A rate as written: a number (per second) or `"N/s"`, `"N/min"`, `"N/h"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawRate {
    PerSecond(i64),
    Text(String),
    Other(toml::Value),
}

/// `[store]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub retention: Option<Spanned<RawDuration>>,
}

/// `rotating = { algorithm, secret_file, range, count, step, protocols }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotating {
    pub algorithm: Spanned<String>,
    pub secret_file: Spanned<String>,
    pub range: Spanned<String>,
    pub count: Spanned<i64>,
    pub step: Option<Spanned<RawDuration>>,
    pub protocols: Option<Spanned<String>>,
}

/// `[spa]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpa {
    pub ports: Option<Spanned<Vec<Spanned<i64>>>>,
    pub max_age: Option<Spanned<i64>>,
    pub protect: Option<Spanned<Vec<Spanned<String>>>>,
    pub server_key_file: Option<Spanned<String>>,
    pub access_conf: Option<Spanned<String>>,
    pub access_conf_scope: Option<Spanned<String>>,
    pub source_prefix_v4: Option<Spanned<i64>>,
    pub source_prefix_v6: Option<Spanned<i64>>,
    pub udp_server_port: Option<Spanned<i64>>,
    pub aging: Option<bool>,
    pub persist_replay: Option<bool>,
    pub import_digest_file: Option<Spanned<String>>,
    pub forwarding: Option<bool>,
    pub local_nat: Option<bool>,
    #[serde(default)]
    pub user: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub fwknop: Vec<Spanned<RawStanza>>,
}

/// `[[spa.user]]`: a native-format user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub name: Spanned<String>,
    pub key: Spanned<String>,
    pub open: Spanned<Vec<Spanned<String>>>,
    pub max_open_for: Option<Spanned<i64>>,
    pub scope: Option<Spanned<String>>,
    pub allow_addresses: Option<Vec<Spanned<String>>>,
    pub grant_prefix_v4: Option<Spanned<i64>>,
    pub grant_prefix_v6: Option<Spanned<i64>>,
}

/// `[[spa.fwknop]]`: an inline fwknop stanza (access.conf keys, lower case).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStanza {
    pub name: Spanned<String>,
    pub source: Option<Vec<Spanned<String>>>,
    pub key: Option<Spanned<String>>,
    pub key_base64: Option<Spanned<String>>,
    pub hmac_key: Option<Spanned<String>>,
    pub hmac_key_base64: Option<Spanned<String>>,
    pub hmac_digest_type: Option<Spanned<String>>,
    pub encryption_mode: Option<Spanned<String>>,
    pub open_ports: Option<Vec<Spanned<String>>>,
    pub restrict_ports: Option<Vec<Spanned<String>>>,
    pub fw_access_timeout: Option<Spanned<i64>>,
    pub max_fw_timeout: Option<Spanned<i64>>,
    pub require_username: Option<Spanned<String>>,
    pub require_source_address: Option<bool>,
    pub access_expire_epoch: Option<Spanned<i64>>,
    pub destination: Option<Vec<Spanned<String>>>,
    pub cmd_cycle_open: Option<Spanned<RawCommand>>,
    pub cmd_cycle_close: Option<Spanned<RawCommand>>,
    pub cmd_cycle_timer: Option<Spanned<i64>>,
    pub force_nat: Option<Spanned<String>>,
    pub force_snat: Option<Spanned<String>>,
    pub forward_all: Option<bool>,
    pub disable_dnat: Option<bool>,
    pub scope: Option<Spanned<String>>,
}

/// `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub socket: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub tokens_file: Option<Spanned<String>>,
    pub max_duration: Option<Spanned<i64>>,
    pub default_duration: Option<Spanned<i64>>,
}
