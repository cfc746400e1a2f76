//! Closing grants early (revoke) and on time (expiry): firewall first, then the record,
//! both under the driver lock (see "Ordering" in the module doc).

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use portcullis_proto::addr::canonical;
use portcullis_proto::Service;

use super::Granter;
use crate::firewall::Prefix;
use crate::store::{CloseTarget, Closed, Closing, GrantRecord, GrantState, StoreError};

/// Retry a refused expiry this much later.
const RETRY_MS: i64 = 1000;

/// Why a revoke did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// No such record / no active grant for that key.
    #[error("no such grant")]
    NotFound,
    /// It is no longer active.
    #[error("grant is {}, not active", .0.as_str())]
    NotActive(GrantState),
    /// The firewall refused the revoke; the record stays active.
    #[error("firewall: {0}")]
    Firewall(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeTarget {
    /// A record by id.
    Id(i64),
    /// The active single-address grant for `(address, service)` (a prefix grant is
    /// revoked by its record id).
    Key(IpAddr, Service),
}

impl Granter {
    /// Revoke an active grant: remove it from the firewall and the scheduler, then mark
    /// its record revoked by `by`. Of concurrent revokes of one grant exactly one
    /// succeeds; the others see [`RevokeError::NotActive`].
    pub async fn revoke(&self, target: RevokeTarget, by: &str) -> Result<GrantRecord, RevokeError> {
        let store = self.store()?;
        // For an id: its key, and the activation it names.
        let (key, close, activation) = match target {
            RevokeTarget::Id(id) => {
                let reader = std::sync::Arc::clone(store);
                let row = tokio::task::spawn_blocking(move || reader.get(id))
                    .await
                    .map_err(|_| StoreError::Busy)??
                    .ok_or(RevokeError::NotFound)?;
                if row.state != GrantState::Active {
                    return Err(RevokeError::NotActive(row.state));
                }
                (row.key(), CloseTarget::Id(id), row.effective_at)
            }
            RevokeTarget::Key(a, s) => {
                let key = (Prefix::host(canonical(a)), s);
                (key, CloseTarget::Key(key.0, key.1), None)
            }
        };
        let rx = {
            let mut d = self.firewall.lock();
            let mut t = self.sched.lock();
            // The row belongs to the live activation unless it began before it (a row is
            // written at the activation's start, or later if its first record was lost).
            let live = t.get(key).is_some_and(|e| activation.is_none_or(|at| at >= e.opened_at));
            if live {
                d.revoke(&[key]).map_err(|e| RevokeError::Firewall(e.to_string()))?;
            }
            // Not live: the firewall no longer holds this activation (it expired, or a
            // newer one took its place); the store tells a stale row from "not active",
            // in channel order.
            let closing = Closing {
                target: close,
                state: GrantState::Revoked,
                by: Some(by.into()),
                at: self.clock.now_ms(),
            };
            let rx = store.close(vec![closing])?;
            // Only once the close is on its way: otherwise expiry still closes the record.
            if live {
                t.remove(key);
                self.admission_closed(key);
            }
            rx
        };
        let found = rx.await.unwrap_or(Err(StoreError::Busy))?;
        match found.into_iter().next() {
            Some(Closed::Done(r)) => {
                tracing::info!("{}: revoked {} (grant #{}) by {by}", r.source().short(), r.service, r.id);
                Ok(r)
            }
            Some(Closed::NotActive(r)) => Err(RevokeError::NotActive(r.state)),
            Some(Closed::NotFound) | None => Err(RevokeError::NotFound),
        }
    }

    /// Close every grant due now: in the firewall if it does not close them itself,
    /// then in the store. A refused firewall close is retried a second later. Returns
    /// how many closed. The scheduler thread calls this; tests may too.
    pub fn expire_due(&self) -> usize {
        let now = self.clock.now_ms();
        let mut d = self.firewall.lock();
        let mut t = self.sched.lock();
        let due = t.take_due(now);
        if due.is_empty() {
            return 0;
        }
        if !self.firewall.kernel_expiry() {
            let keys: Vec<_> = due.iter().map(|&(k, _)| k).collect();
            if let Err(e) = d.revoke(&keys) {
                tracing::error!("expiry: firewall refused to close {} grant(s): {e}; retrying", keys.len());
                for (k, mut e) in due {
                    e.expires_at = now + RETRY_MS;
                    t.insert(k, e);
                }
                return 0;
            }
            self.counters.daemon_expired.fetch_add(due.len() as u64, Ordering::Relaxed);
        }
        drop(t);
        if let Ok(store) = &self.store {
            store.close_nowait(
                due.iter()
                    .map(|&((a, s), e)| Closing {
                        target: CloseTarget::Key(a, s),
                        state: GrantState::Expired,
                        by: None,
                        at: e.expires_at,
                    })
                    .collect(),
            );
        }
        drop(d);
        if !self.firewall.kernel_expiry() {
            for ((a, s), _) in &due {
                tracing::info!("{}: closed {s} (expired) via {}", a.short(), self.firewall.name());
            }
        }
        due.len()
    }
}
