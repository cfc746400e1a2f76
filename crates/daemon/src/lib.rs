//! portcullisd internals.
//!
//! # Layout
//! - [`actions`]: knockd/fwknop-style commands: substitution without a shell, runner, pending stops.
//! - [`config`]: native TOML, knockd.conf and fwknopd.conf (+ access.conf), raw → validated,
//!   errors with file and line.
//! - [`capture`]: AF_PACKET + BPF socket, local address view kept current by rtnetlink, the
//!   fwknopd-style UDP server socket.
//! - [`firewall`]: the driver trait, its shared lock, and backends (nftables and iptables+ipset
//!   over netlink, none); gate or accept mode, NAT grants, change monitor and verify.
//! - [`kernel`]: kernel-only rulesets (no daemon) generated from a config.
//! - [`daemon`]: the capture loop and the knock [`daemon::engine::Engine`].
//! - [`args`]: the command line (shared with the man page and completion generator).
//! - [`cmd`]: `check`, `demo`, `gate`, `generate`, `teardown`.
//! - [`notify`]: systemd readiness and watchdog notifications (`sd_notify` protocol).
//! - [`lab`]: throwaway network namespaces for the demo, tests and benchmarks.
//! - [`spa`]: the SPA gate (fwknop and native formats) and its persisted replay cache.
//! - [`stats`]: the capture thread's counters (read by metrics).
//! - [`log`]: stderr / syslog / journald set-up.
//! - [`grants`]: the grant lifecycle for every origin (grant, refresh, revoke, the one
//!   expiry scheduler, reconciliation, open admission, firewall self-repair); [`store`]: SQLite grant records and queries
//!   only; [`api`]: the local REST API.
//! - [`statedir`]: the state directory, private and locked; [`fsperm`]: checks and
//!   creation of secret, trusted and private files.

pub mod actions;
pub mod api;
pub mod args;
pub mod capture;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod firewall;
pub mod fleet;
pub mod fsperm;
pub mod grants;
pub mod kernel;
pub mod lab;
pub mod log;
pub mod notify;
pub mod privsep;
pub mod spa;
pub mod statedir;
pub mod stats;
pub mod store;
