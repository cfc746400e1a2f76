//! `[fleet]`: which database, which node this is, what fleet-scoped SPA does when the
//! database cannot be reached.
//!
//! The URL (with its password) lives in its own file, not in the config: the file
//! must be owned by root (or the daemon's user) and not readable by group or others.
//! It is read when the fleet starts, not when the config is checked.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::FleetError;

/// `[fleet]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    database_url_file: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
    nodes: Option<Spanned<Vec<Spanned<String>>>>,
    on_db_down: Option<Spanned<String>>,
}

/// What fleet-scoped SPA does when the database does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDbDown {
    /// Refuse the request (fail closed; the default).
    Refuse,
    /// Accept it with this node's replay cache only, and log loudly.
    Local,
}

/// Validated `[fleet]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Root-only file holding the PostgreSQL URL.
    pub database_url_file: PathBuf,
    /// This gateway's name in the fleet.
    pub node: String,
    /// Every member's name (this node included); rows naming anything else are refused.
    /// Empty: any well-formed name is accepted.
    pub nodes: Vec<String>,
    /// Policy when the database is unreachable.
    pub on_db_down: OnDbDown,
}

impl FleetConfig {
    /// Whether rows from `node` may be acted on.
    pub fn knows(&self, node: &str) -> bool {
        valid_node(node) && (self.nodes.is_empty() || self.nodes.iter().any(|n| n == node))
    }
}

/// Longest node name.
pub const MAX_NODE: usize = 64;

/// A node name: 1..=64 of `[A-Za-z0-9._-]`.
pub fn valid_node(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NODE
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

type Refusal = (Option<std::ops::Range<usize>>, String);

/// Validate; a relative URL file path is relative to `dir`.
pub fn validate(raw: RawFleet, dir: &Path) -> Result<FleetConfig, Refusal> {
    let database_url_file = match raw.database_url_file {
        None => return Err((None, "[fleet] needs database_url_file (a root-only file with the URL)".into())),
        Some(f) if f.get_ref().is_empty() => {
            return Err((Some(f.span()), "fleet database_url_file is empty".into()))
        }
        Some(f) => dir.join(f.into_inner()),
    };
    let node = match raw.node {
        None => return Err((None, "[fleet] needs node (this gateway's name)".into())),
        Some(n) if !valid_node(n.get_ref()) => {
            return Err((
                Some(n.span()),
                format!("fleet node {:?}: use 1-64 of A-Z a-z 0-9 . _ -", n.get_ref()),
            ))
        }
        Some(n) => n.into_inner(),
    };
    let mut nodes = Vec::new();
    if let Some(list) = raw.nodes {
        for n in list.into_inner() {
            if !valid_node(n.get_ref()) {
                return Err((Some(n.span()), format!("fleet nodes: {:?} is not a node name", n.get_ref())));
            }
            nodes.push(n.into_inner());
        }
        if !nodes.contains(&node) {
            return Err((None, format!("fleet nodes does not list this node {node:?}")));
        }
    }
    let on_db_down = match raw.on_db_down {
        None => OnDbDown::Refuse,
        Some(p) => match p.get_ref().as_str() {
            "refuse" => OnDbDown::Refuse,
            "local" => OnDbDown::Local,
            other => {
                return Err((
                    Some(p.span()),
                    format!("fleet on_db_down {other:?}: use \"refuse\" or \"local\""),
                ))
            }
        },
    };
    Ok(FleetConfig { database_url_file, node, nodes, on_db_down })
}

/// Longest URL file accepted.
const MAX_URL: u64 = 4096;

/// Read the URL file: a regular file owned by root or by us, no group/other access,
/// holding one `postgres://` / `postgresql://` URL or `key=value` settings.
pub fn read_url(path: &Path) -> Result<String, FleetError> {
    let bad = |reason: String| FleetError::UrlFile { path: path.to_owned(), reason };
    let text = crate::fsperm::read_secret(path, MAX_URL).map_err(bad)?;
    let url = text.trim();
    if url.is_empty() {
        return Err(bad("empty".into()));
    }
    if url.contains('\n') {
        return Err(bad("more than one line".into()));
    }
    Ok(url.to_owned())
}

/// `scope = "local" | "fleet"` of a door, SPA user or fwknop stanza: whether it is
/// fleet-scoped (absent: local).
pub fn scope(s: Option<Spanned<String>>) -> Result<bool, Refusal> {
    match s {
        None => Ok(false),
        Some(s) => match s.get_ref().as_str() {
            "local" => Ok(false),
            "fleet" => Ok(true),
            _ => Err((Some(s.span()), "scope must be \"local\" or \"fleet\"".into())),
        },
    }
}
