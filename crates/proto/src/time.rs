//! Time as data. The daemon reads a monotonic clock once per packet and passes the
//! value in, so the state machines never call a clock themselves and tests can step
//! time exactly.

use std::time::Duration;

/// Milliseconds on a monotonic clock whose origin the caller chooses.
///
/// Only differences between two `Millis` from the same clock are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + d`, saturating instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Millis {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(ms))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
