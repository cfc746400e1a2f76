//! Who or what made a grant. A leaf: the store names origins in its rows without
//! depending on the rest of `grants`.

use std::fmt;

pub use portcullis_api::OriginKind;

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
