//! Replay cache for accepted SPA requests, persisted so a restart does not reopen
//! the window.
//!
//! Keys are the canonical value of the *decrypted* request (not the wire text, which
//! is malleable), each stored with the last Unix second in which its packet can still
//! be accepted ([`Window::last_accepted`]) and live through that second
//! ([`replay_entry_live`]): the time check and the cache share one rule, so there is
//! no second at the edge of the window in which a replay passes both. Only packets
//! that passed authentication reach the cache, so its growth is bounded by what key
//! holders send; it is capped all the same, and when full of live entries it refuses
//! (fails closed) rather than forgetting one that could then be replayed.
//!
//! Persistence: one line per entry, `<hex key> <last accepted unix second>`, appended with `write`
//! before the grant is made, so a daemon crash cannot lose an entry. The file is
//! fsynced by [`ReplayCache::sync`] (called from housekeeping, about once a second)
//! rather than per packet, which would cost milliseconds on the grant path; the gap
//! only matters for a power loss inside that second. At start the file is compacted
//! to its live entries.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use portcullis_proto::spa::window::replay_entry_live;
#[cfg(doc)]
use portcullis_proto::spa::window::Window;

/// Most live entries kept. Each is ~100 bytes in memory and ~75 on disk.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Seen before, within its validity.
    Replayed,
    /// The cache is full of live entries: refuse rather than forget one.
    Full,
}

/// In-memory set of seen keys, backed by an append-only file.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashMap<[u8; 32], u64>,
    capacity: usize,
    path: Option<PathBuf>,
    file: Option<File>,
    dirty: bool,
    lines_on_disk: usize,
}

impl ReplayCache {
    /// An in-memory cache (tests, or no state dir).
    pub fn in_memory(capacity: usize) -> ReplayCache {
        ReplayCache { seen: HashMap::new(), capacity, path: None, file: None, dirty: false, lines_on_disk: 0 }
    }

    /// Load `path` (keeping entries still live at `now`), compact it, and open it
    /// for appending. A missing file is an empty cache; malformed lines are skipped.
    pub fn open(path: &Path, capacity: usize, now: u64) -> io::Result<ReplayCache> {
        let mut seen = HashMap::new();
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines().take(capacity.saturating_mul(4)) {
                    let line = line?;
                    if let Some((k, exp)) = parse_line(&line) {
                        if replay_entry_live(exp, now) && seen.len() < capacity {
                            seen.insert(k, exp);
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut c = ReplayCache {
            seen,
            capacity,
            path: Some(path.to_owned()),
            file: None,
            dirty: false,
            lines_on_disk: 0,
        };
        c.compact()?;
        Ok(c)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Whether `key` is held and still live at `now`.
    pub fn contains(&self, key: &[u8; 32], now: u64) -> bool {
        self.seen.get(key).is_some_and(|&exp| replay_entry_live(exp, now))
    }

    /// Admit `key` (whose packet is accepted up to and including the Unix second
    /// `last_accepted`) unless it is held and live. Persists it first.
    pub fn admit(&mut self, key: [u8; 32], last_accepted: u64, now: u64) -> Result<(), Refusal> {
        if let Some(&exp) = self.seen.get(&key) {
            if replay_entry_live(exp, now) {
                return Err(Refusal::Replayed);
            }
        }
        if self.seen.len() >= self.capacity {
            self.purge(now);
            if self.seen.len() >= self.capacity {
                return Err(Refusal::Full);
            }
        }
        self.seen.insert(key, last_accepted);
        if let Some(f) = self.file.as_mut() {
            let line = format!("{} {last_accepted}\n", hex(&key));
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::error!("replay cache: cannot append to {}: {e}", self.display());
            }
            self.dirty = true;
            self.lines_on_disk += 1;
        }
        Ok(())
    }

    /// Drop entries no longer live; rewrite the file when it has grown well past the live set.
    pub fn purge(&mut self, now: u64) {
        self.seen.retain(|_, &mut exp| replay_entry_live(exp, now));
        if self.path.is_some() && self.lines_on_disk > 1024 && self.lines_on_disk > 2 * self.seen.len() {
            if let Err(e) = self.compact() {
                tracing::error!("replay cache: cannot compact {}: {e}", self.display());
            }
        }
    }

    /// fsync pending appends (called about once a second).
    pub fn sync(&mut self) {
        if self.dirty {
            if let Some(f) = &self.file {
                if let Err(e) = f.sync_data() {
                    tracing::error!("replay cache: fsync {}: {e}", self.display());
                }
            }
            self.dirty = false;
        }
    }

    /// Rewrite the file with exactly the live entries (tmp + fsync + rename), then
    /// reopen it for appending.
    fn compact(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let tmp = path.with_extension("tmp");
        {
            let mut f = crate::fsperm::create_new(&tmp)?;
            let mut buf = String::with_capacity(self.seen.len() * 76);
            for (k, exp) in &self.seen {
                buf.push_str(&hex(k));
                buf.push(' ');
                buf.push_str(&exp.to_string());
                buf.push('\n');
            }
            f.write_all(buf.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        self.lines_on_disk = self.seen.len();
        self.dirty = false;
        Ok(())
    }

    fn display(&self) -> String {
        self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }
}

fn hex(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_line(line: &str) -> Option<([u8; 32], u64)> {
    let (h, exp) = line.split_once(' ')?;
    if h.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((k, exp.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_replays_through_the_last_accepted_second() {
        let mut c = ReplayCache::in_memory(10);
        assert_eq!(c.admit([1; 32], 100, 50), Ok(()));
        assert_eq!(c.admit([1; 32], 100, 99), Err(Refusal::Replayed));
        assert_eq!(c.admit([1; 32], 100, 100), Err(Refusal::Replayed), "the last second is covered");
        assert_eq!(c.admit([1; 32], 200, 101), Ok(()), "dead entries may be reused");
    }

    #[test]
    fn purge_keeps_entries_through_their_last_second() {
        let mut c = ReplayCache::in_memory(10);
        c.admit([1; 32], 100, 0).unwrap();
        c.purge(100);
        assert_eq!(c.len(), 1);
        c.purge(101);
        assert!(c.is_empty());
    }

    #[test]
    fn fails_closed_when_full_of_live_entries() {
        let mut c = ReplayCache::in_memory(2);
        c.admit([1; 32], 100, 0).unwrap();
        c.admit([2; 32], 100, 0).unwrap();
        assert_eq!(c.admit([3; 32], 100, 0), Err(Refusal::Full));
        assert_eq!(c.admit([3; 32], 200, 100), Err(Refusal::Full), "still live in their last second");
        assert_eq!(c.admit([3; 32], 200, 101), Ok(()), "dead entries make room");
    }

    #[test]
    fn an_entry_restored_in_its_last_second_still_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("replay");
        ReplayCache::open(&p, 100, 0).unwrap().admit([9; 32], 500, 0).unwrap();
        let mut c = ReplayCache::open(&p, 100, 500).unwrap();
        assert_eq!(c.admit([9; 32], 500, 500), Err(Refusal::Replayed));
        let mut c = ReplayCache::open(&p, 100, 501).unwrap();
        assert!(c.is_empty(), "dropped once the window refuses by itself");
        assert_eq!(c.admit([9; 32], 500, 501), Ok(()));
    }

    #[test]
    fn survives_a_restart_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("replay");
        {
            let mut c = ReplayCache::open(&p, 100, 0).unwrap();
            c.admit([7; 32], 1000, 0).unwrap();
            c.admit([8; 32], 10, 0).unwrap();
            // No sync: a crash after write() must not lose the entry.
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"garbage line\nzz 5\n")
            .unwrap();
        let mut c = ReplayCache::open(&p, 100, 500).unwrap();
        assert_eq!(c.len(), 1, "expired and malformed lines dropped");
        assert_eq!(c.admit([7; 32], 1000, 500), Err(Refusal::Replayed));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted: {text}");
    }
}
