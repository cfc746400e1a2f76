//! Grants opened since start, by origin: a counter that only grows (unlike the store's
//! records, which expire and are pruned), for `portcullis_grants_created_total`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::origin::{Origin, OriginKind};

/// Counts by (origin kind, door). The door is the door name for knocks, the SPA
/// user or stanza for SPA, and empty otherwise (API token names stay out of metrics).
/// Names come from the config, so the number of series is bounded by it.
#[derive(Debug, Default)]
pub struct Created(Mutex<BTreeMap<(&'static str, String), u64>>);

impl Created {
    /// One more grant by `origin`.
    pub fn add(&self, origin: &Origin) {
        let door = match origin.kind {
            OriginKind::Door | OriginKind::Spa => origin.detail.clone(),
            _ => String::new(),
        };
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry((origin.kind.as_str(), door)).or_insert(0) +=
            1;
    }

    /// Every (origin kind, door, count) so far, sorted.
    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((k, d), n)| (*k, d.clone(), *n))
            .collect()
    }
}
