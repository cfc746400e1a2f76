//! The one expiry scheduler: an in-memory index of every grant the firewall holds, by
//! key and by deadline, and the thread that wakes at the next deadline. It is armed when
//! the firewall applies a grant, before and whatever the store does with its record.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::clock::Clock;
use super::Granter;

/// A grant's key: one hole (its source, an address or a prefix, and its service).
pub use crate::firewall::Key;

/// Longest sleep between checks, so a clock step (NTP) is noticed within a second.
const MAX_SLEEP_MS: i64 = 1000;

/// One live grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// When it ends (Unix ms), following the latest refresh.
    pub expires_at: i64,
    /// When this activation began (Unix ms): the record's `effective_at`. A refresh
    /// keeps it; a new activation of the same key after a close gets a new one.
    pub opened_at: i64,
}

/// Live grants by key and by deadline. Pure: no clock, no I/O.
#[derive(Debug, Default)]
pub struct Table {
    by_key: HashMap<Key, Entry>,
    queue: BTreeSet<(i64, Key)>,
}

impl Table {
    /// A grant applied at `now` until `expires_at`: a new activation, or a refresh of
    /// the live one. Returns whether it is now the earliest deadline.
    pub fn open(&mut self, key: Key, expires_at: i64, now: i64) -> bool {
        let opened_at = match self.remove(key) {
            Some(e) => e.opened_at,
            None => now,
        };
        self.insert(key, Entry { expires_at, opened_at });
        self.queue.first() == Some(&(expires_at, key))
    }

    /// Track `entry` for `key` (replacing any).
    pub fn insert(&mut self, key: Key, entry: Entry) {
        self.remove(key);
        self.by_key.insert(key, entry);
        self.queue.insert((entry.expires_at, key));
    }

    /// Stop tracking `key`.
    pub fn remove(&mut self, key: Key) -> Option<Entry> {
        let e = self.by_key.remove(&key)?;
        self.queue.remove(&(e.expires_at, key));
        Some(e)
    }

    /// The live grant for `key`.
    pub fn get(&self, key: Key) -> Option<Entry> {
        self.by_key.get(&key).copied()
    }

    /// Every live grant, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.by_key.iter()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<i64> {
        self.queue.first().map(|&(t, _)| t)
    }

    /// Remove and return every grant due at `now`.
    pub fn take_due(&mut self, now: i64) -> Vec<(Key, Entry)> {
        let keys: Vec<Key> = self.queue.iter().take_while(|&&(t, _)| t <= now).map(|&(_, k)| k).collect();
        keys.into_iter().filter_map(|k| self.remove(k).map(|e| (k, e))).collect()
    }

    /// Live grants tracked.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The table behind its lock, and the scheduler thread's wake-up. Lock order: the
/// firewall driver first, then the table.
#[derive(Default)]
pub struct Scheduler {
    table: Mutex<Table>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Scheduler {
    /// Lock the table.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Have the thread look at the deadlines again.
    pub fn wake(&self) {
        self.wake.notify_all();
    }

    /// Ask the thread to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _guard = self.lock();
        self.wake();
    }

    /// Sleep until the next deadline (at most a second) or a wake-up.
    fn wait(&self, clock: &dyn Clock) {
        let t = self.lock();
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        let wait = t.next().map_or(MAX_SLEEP_MS, |at| (at - clock.now_ms()).clamp(0, MAX_SLEEP_MS));
        if wait > 0 {
            let ms = u64::try_from(wait).unwrap_or(0);
            let _ = self.wake.wait_timeout(t, Duration::from_millis(ms));
        }
    }
}

/// Start the scheduler thread for `granter`. It ends when asked to or when the granter
/// is gone.
pub fn spawn(
    granter: Weak<Granter>,
    sched: Arc<Scheduler>,
    clock: Arc<dyn Clock>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("expiry".into()).spawn(move || loop {
        sched.wait(clock.as_ref());
        if sched.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(g) = granter.upgrade() else { return };
        g.expire_due();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, port: u16) -> Key {
        (crate::firewall::Prefix::host([192, 0, 2, last].into()), portcullis_proto::Service::tcp(port))
    }

    #[test]
    fn refresh_moves_the_deadline_and_keeps_the_activation() {
        let mut t = Table::default();
        assert!(t.open(key(2, 22), 30_000, 0));
        assert!(!t.open(key(3, 22), 40_000, 0), "not the earliest");
        assert!(!t.open(key(2, 22), 50_000, 10_000), "refreshed past the other");
        assert_eq!(t.get(key(2, 22)), Some(Entry { expires_at: 50_000, opened_at: 0 }));
        assert_eq!(t.next(), Some(40_000));
        assert!(t.take_due(39_999).is_empty());
        assert_eq!(t.take_due(40_000), vec![(key(3, 22), Entry { expires_at: 40_000, opened_at: 0 })]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_due(i64::MAX).len(), 1);
        assert!(t.is_empty() && t.next().is_none());
        // A new activation after a close starts afresh.
        t.open(key(2, 22), 90_000, 60_000);
        assert_eq!(t.get(key(2, 22)).unwrap().opened_at, 60_000);
    }
}
