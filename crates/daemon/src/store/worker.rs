//! The store thread: the only writer.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{db, sql_err, Closed, Closing, Counters, GrantRecord, NewGrants, StoreError};
use crate::grants::clock::Clock;

type Reply<T> = oneshot::Sender<T>;

/// A request to the store thread.
pub(super) enum Cmd {
    /// Record grants; reply with the rows (API) or not (capture thread).
    Record(NewGrants, Option<Reply<Result<Vec<GrantRecord>, StoreError>>>),
    /// Close active rows; reply with what each found (revoke) or not (expiry).
    Close(Vec<Closing>, Option<Reply<Result<Vec<Closed>, StoreError>>>),
    /// Reply once every earlier command is done.
    Sync(Reply<()>),
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
}

impl Worker {
    pub(super) fn new(
        conn: Connection,
        rx: Receiver<Cmd>,
        counters: Arc<Counters>,
        clock: Arc<dyn Clock>,
    ) -> Worker {
        Worker { conn, rx, counters, clock, last_error_log: None }
    }

    pub(super) fn run(mut self) {
        while let Ok(cmd) = self.rx.recv() {
            if matches!(cmd, Cmd::Stop) {
                // Finish what is queued, then go.
                while let Ok(c) = self.rx.try_recv() {
                    self.handle(c);
                }
                return;
            }
            self.handle(cmd);
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
            Cmd::Stop => {}
        }
    }
}
