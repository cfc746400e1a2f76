//! The grant store: every grant, whoever made it, as a row in an embedded SQLite
//! database (`state_dir/grants.db`). It records what [`crate::grants`] tells it and
//! answers queries; it decides nothing and never touches the firewall.
//!
//! # Threads
//!
//! One **store thread** owns the write connection and is the only writer. Writers send
//! it commands over a bounded channel, in the order they happened in the firewall (see
//! "Ordering" in [`crate::grants`]):
//!
//! - the capture thread and the expiry scheduler only ever `try_send` (never block on
//!   disk); when the channel is full the write is dropped, counted (`store_dropped`) and
//!   logged;
//! - the API sends and awaits a reply, so an API grant answers only once its row is
//!   committed, with the whole row.
//!
//! Reads (list, get, metrics) use a separate read-only connection; in WAL mode they never
//! wait for the writer.

pub mod db;
mod types;
mod worker;

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::grants::clock::{self, Clock};
pub use types::{
    CloseTarget, Closed, Closing, Counters, Filter, GrantRecord, GrantState, NewGrants, StoreError,
};
use worker::{Cmd, Worker};

/// Capacity of the store channel. At ~20 µs per row this is well under a second of work.
pub const CHANNEL_CAPACITY: usize = 4096;

/// Options for tests and benchmarks.
#[derive(Clone)]
pub struct Options {
    /// Cap the database size in pages (`PRAGMA max_page_count`): simulates a full disk.
    pub max_pages: Option<u32>,
    /// Channel capacity.
    pub capacity: usize,
    /// Start no writer thread (tests): writes wait in the channel, which refuses them
    /// once full (with capacity 0: always).
    pub paused: bool,
    /// Time for log rate limits and retention.
    pub clock: Arc<dyn Clock>,
    /// Delete closed records this long after they closed (`None`: keep them).
    pub retention: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_pages: None,
            capacity: CHANNEL_CAPACITY,
            paused: false,
            clock: clock::system(),
            retention: None,
        }
    }
}

/// Handle to the store: the channel to its thread, and a read connection.
pub struct Store {
    tx: SyncSender<Cmd>,
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The receiving end while paused, so the channel stays open.
    _paused: Mutex<Option<mpsc::Receiver<Cmd>>>,
    clock: Arc<dyn Clock>,
    /// When a dropped write was last logged (Unix ms).
    last_drop_log: Mutex<Option<i64>>,
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl Store {
    /// Open (creating and migrating) the database at `path` and start its thread.
    pub fn open(path: &Path, opts: Options) -> Result<Arc<Store>, StoreError> {
        let unavailable = |what: &str, e: &dyn fmt::Display| {
            StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
        };
        // Private whatever the umask: SQLite gives the -wal and -shm files the mode of
        // the database file.
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = std::path::PathBuf::from(p);
            if suffix.is_empty() || p.exists() {
                crate::fsperm::make_private(&p).map_err(|e| unavailable("securing", &e))?;
            }
        }
        let mut conn = Connection::open(path).map_err(|e| unavailable("opening", &e))?;
        db::configure(&conn).map_err(|e| unavailable("configuring", &e))?;
        db::migrate(&mut conn).map_err(|e| unavailable("migrating", &e))?;
        if let Some(n) = opts.max_pages {
            let _: i64 = conn
                .query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| r.get(0))
                .map_err(|e| unavailable("limiting", &e))?;
        }
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| unavailable("opening (read side)", &e))?;
        reader.busy_timeout(Duration::from_secs(5)).map_err(|e| unavailable("configuring", &e))?;
        let (tx, rx) = mpsc::sync_channel(opts.capacity);
        let counters = Arc::new(Counters::default());
        let (thread, paused) = if opts.paused {
            (None, Some(rx))
        } else {
            let worker =
                Worker::new(conn, rx, Arc::clone(&counters), Arc::clone(&opts.clock), opts.retention);
            let t = std::thread::Builder::new()
                .name("store".into())
                .spawn(move || worker.run())
                .map_err(|e| unavailable("starting the thread for", &e))?;
            (Some(t), None)
        };
        Ok(Arc::new(Store {
            tx,
            reader: Mutex::new(reader),
            counters,
            thread: Mutex::new(thread),
            _paused: Mutex::new(paused),
            clock: opts.clock,
            last_drop_log: Mutex::new(None),
        }))
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Send without waiting. Never blocks; a full channel drops the write, counts it and
    /// says so in the log (at most once a second).
    fn send_nowait(&self, cmd: Cmd) {
        let Err(e) = self.tx.try_send(cmd) else { return };
        let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.clock.now_ms();
        let mut last = self.last_drop_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| now - t >= 1000) {
            *last = Some(now);
            let (full, what) = match &e {
                TrySendError::Full(c) => (true, c.describe()),
                TrySendError::Disconnected(c) => (false, c.describe()),
            };
            tracing::error!(
                "store: {what} DROPPED: store thread {}; {n} dropped so far (the firewall is unaffected)",
                if full { "is behind" } else { "has stopped" }
            );
        }
    }

    /// Enqueue a record without waiting (capture thread, reconciliation).
    pub fn record_nowait(&self, g: NewGrants) {
        self.send_nowait(Cmd::Record(g, None));
    }

    /// Enqueue a record and get a receiver for its rows (the API's path).
    pub fn record(
        &self,
        g: NewGrants,
    ) -> Result<oneshot::Receiver<Result<Vec<GrantRecord>, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Cmd::Record(g, Some(reply))).map_err(|_| StoreError::Busy)?;
        Ok(rx)
    }

    /// Enqueue closes without waiting (expiry, reconciliation).
    pub fn close_nowait(&self, closes: Vec<Closing>) {
        if !closes.is_empty() {
            self.send_nowait(Cmd::Close(closes, None));
        }
    }

    /// Enqueue closes and get a receiver for what they found (revoke).
    pub fn close(
        &self,
        closes: Vec<Closing>,
    ) -> Result<oneshot::Receiver<Result<Vec<Closed>, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Cmd::Close(closes, Some(reply))).map_err(|_| StoreError::Busy)?;
        Ok(rx)
    }

    /// Wait until every command sent before is processed (blocking; tests, start-up).
    pub fn sync_blocking(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Sync(reply)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Apply retention now, to the end (blocking; tests): returns the rows deleted.
    pub fn prune_blocking(&self) -> usize {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Prune(reply)).is_ok() {
            return rx.blocking_recv().unwrap_or(0);
        }
        0
    }

    /// Like [`Store::sync_blocking`], for async callers.
    pub async fn sync(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.try_send(Cmd::Sync(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(sql_err)
    }

    /// One record (blocking).
    pub fn get(&self, id: i64) -> Result<Option<GrantRecord>, StoreError> {
        self.read(|c| db::get(c, id))
    }

    /// A page of records and the total (blocking).
    pub fn list(&self, f: &Filter) -> Result<(Vec<GrantRecord>, u64), StoreError> {
        self.read(|c| db::list(c, f))
    }

    /// Every active record (blocking).
    pub fn all_active(&self) -> Result<Vec<GrantRecord>, StoreError> {
        self.read(db::all_active)
    }

    /// Counts by (origin kind, state) (blocking).
    pub fn counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.read(db::counts)
    }

    /// Stop the thread after it has processed what is queued.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.tx.try_send(Cmd::Stop);
    }
}

#[cfg(test)]
mod tests;
