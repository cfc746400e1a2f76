//! The store thread: the only writer.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{db, sql_err, Closed, Closing, Counters, GrantRecord, NewGrants, StoreError};
use crate::grants::clock::{self, Clock};

type Reply<T> = oneshot::Sender<T>;

/// A request to the store thread.
pub(super) enum Cmd {
    /// Record grants; reply with the rows (API) or not (capture thread).
    Record(NewGrants, Option<Reply<Result<Vec<GrantRecord>, StoreError>>>),
    /// Close active rows; reply with what each found (revoke) or not (expiry).
    Close(Vec<Closing>, Option<Reply<Result<Vec<Closed>, StoreError>>>),
    /// Reply once every earlier command is done.
    Sync(Reply<()>),
    /// Apply retention to the end; reply with the rows deleted.
    Prune(Reply<usize>),
    /// Stop the thread.
    Stop,
}

impl Cmd {
    /// For the log line of a dropped command.
    pub(super) fn describe(&self) -> String {
        match self {
            Cmd::Record(g, _) => format!("grant record ({} for {})", g.origin, g.addr),
            Cmd::Close(c, _) => format!("{} close(s)", c.len()),
            Cmd::Sync(_) => "sync".into(),
            Cmd::Prune(_) => "prune".into(),
            Cmd::Stop => "stop".into(),
        }
    }
}

pub(super) struct Worker {
    conn: Connection,
    rx: Receiver<Cmd>,
    counters: Arc<Counters>,
    clock: Arc<dyn Clock>,
    /// When an error was last logged (Unix ms).
    last_error_log: Option<i64>,
    retention: Option<Retention>,
}

/// Closed rows older than `keep` are deleted, [`PRUNE_BATCH`] rows per statement, with
/// queued commands served between batches.
struct Retention {
    keep_ms: i64,
    /// Time between runs.
    every_ms: i64,
    /// When the next batch is due (Unix ms).
    next: i64,
}

/// Rows deleted per statement: a short write, so grant records never wait long.
pub(super) const PRUNE_BATCH: usize = 1000;

impl Worker {
    pub(super) fn new(
        conn: Connection,
        rx: Receiver<Cmd>,
        counters: Arc<Counters>,
        clock: Arc<dyn Clock>,
        retention: Option<Duration>,
    ) -> Worker {
        let retention = retention.map(|keep| {
            // Often enough that the table never holds much more than `keep` worth.
            let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
            Retention { keep_ms: clock::ms(keep), every_ms: clock::ms(every), next: clock.now_ms() }
        });
        Worker { conn, rx, counters, clock, last_error_log: None, retention }
    }

    /// The next command, or `None` when a retention batch is due first (or the
    /// channel is closed: `Err`).
    fn next(&mut self) -> Result<Option<Cmd>, ()> {
        let Some(r) = &self.retention else { return self.rx.recv().map(Some).map_err(|_| ()) };
        let wait = (r.next - self.clock.now_ms()).max(0);
        // Real time waits at most a second, so an injected clock is looked at again soon.
        let wait = Duration::from_millis(u64::try_from(wait.min(1000)).unwrap_or(0));
        match self.rx.recv_timeout(wait) {
            Ok(c) => Ok(Some(c)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
        }
    }

    /// One retention batch if due; schedules the next.
    fn prune_due(&mut self) {
        let now = self.clock.now_ms();
        let Some(r) = &self.retention else { return };
        if now < r.next {
            return;
        }
        let (keep, every) = (r.keep_ms, r.every_ms);
        let n = self.prune_batch(now.saturating_sub(keep));
        if let Some(r) = &mut self.retention {
            // A full batch: more may be waiting; go on once queued commands are served.
            r.next = if n == PRUNE_BATCH { now } else { now.saturating_add(every) };
        }
    }

    fn prune_batch(&mut self, before: i64) -> usize {
        match db::prune(&self.conn, before, PRUNE_BATCH) {
            Ok(n) => {
                self.counters.pruned.fetch_add(n as u64, Ordering::Relaxed);
                n
            }
            Err(e) => {
                self.db_error("deleting old records", &e);
                0
            }
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let cmd = match self.next() {
                Ok(Some(c)) => c,
                Ok(None) => {
                    self.prune_due();
                    continue;
                }
                Err(()) => return,
            };
            if matches!(cmd, Cmd::Stop) {
                // Finish what is queued, then go.
                while let Ok(c) = self.rx.try_recv() {
                    self.handle(c);
                }
                return;
            }
            self.handle(cmd);
            self.prune_due();
        }
    }

    fn db_error(&mut self, what: &str, e: &rusqlite::Error) {
        let n = self.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.clock.now_ms();
        if self.last_error_log.is_none_or(|t| now - t >= 1000) {
            self.last_error_log = Some(now);
            tracing::error!(
                "store: {what} FAILED and was rolled back: {e} ({n} store errors so far; \
                 the firewall is unaffected, records are missing)"
            );
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Record(g, reply) => {
                let r = db::record(&mut self.conn, &g).map_err(|e| {
                    self.db_error(&format!("recording {} for {}", g.origin, g.addr), &e);
                    sql_err(e)
                });
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Cmd::Close(closes, reply) => {
                let r = db::close(&mut self.conn, &closes).map_err(|e| {
                    self.db_error(&format!("closing {} grant(s)", closes.len()), &e);
                    sql_err(e)
                });
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Cmd::Sync(reply) => {
                let _ = reply.send(());
            }
            Cmd::Prune(reply) => {
                let mut total = 0;
                if let Some(keep) = self.retention.as_ref().map(|r| r.keep_ms) {
                    let before = self.clock.now_ms().saturating_sub(keep);
                    loop {
                        let n = self.prune_batch(before);
                        total += n;
                        if n < PRUNE_BATCH {
                            break;
                        }
                    }
                }
                let _ = reply.send(total);
            }
            Cmd::Stop => {}
        }
    }
}
