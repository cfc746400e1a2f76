//! Who or what made a grant. A leaf: the store names origins in its rows without
//! depending on the rest of `grants`.

use std::fmt;

/// What made a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// Lower-case name as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            OriginKind::Door => "door",
            OriginKind::Spa => "spa",
            OriginKind::Api => "api",
            OriginKind::Cli => "cli",
            OriginKind::Adopted => "adopted",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<OriginKind> {
        OriginKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who or what made a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The kind of origin.
    pub kind: OriginKind,
    /// Door name, SPA stanza/user, or API token name.
    pub detail: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.detail)
    }
}
