//! The fleet-wide replay cache: an SPA request accepted on any node is refused on every
//! node until it expires. The decision is one `INSERT ... ON CONFLICT DO NOTHING` on the
//! request's digest, so two nodes receiving the same packet at once grant at most once.
//!
//! The capture thread never talks to the database itself: a [`FleetReplay`] worker
//! thread holds the connection and the caller waits at most a bound (200 ms by
//! default) for its answer; no answer is [`Claim::Down`], which the caller resolves by
//! `on_db_down`.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use postgres::Client;

pub use super::db::connect;

use super::db::Database;
use super::FleetError;

/// Default longest wait for the database on the SPA path.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(200);

/// The database's answer for one request digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First sight anywhere in the fleet: grant.
    First,
    /// Another node (or this one) already accepted it within its window.
    Replayed,
    /// No answer in time (database down, slow, or worker gone).
    Down,
}

/// Claim `digest` until `expires_at` (unix seconds) for `node`, atomically.
pub fn claim(
    client: &mut Client,
    node: &str,
    digest: &[u8; 32],
    expires_at: i64,
    now: i64,
) -> Result<Claim, FleetError> {
    // An expired claim of the same digest (request replayed after its window, which the
    // gate refuses as stale anyway) is taken over rather than blocking forever.
    let n = client.execute(
        "INSERT INTO fleet_replay (digest, expires_at, node, seen_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (digest) DO UPDATE SET expires_at = EXCLUDED.expires_at, node = EXCLUDED.node,
             seen_at = EXCLUDED.seen_at
         WHERE fleet_replay.expires_at <= EXCLUDED.seen_at",
        &[&&digest[..], &expires_at, &node, &now],
    )?;
    Ok(if n == 1 { Claim::First } else { Claim::Replayed })
}

/// Drop claims that expired before `now` (unix seconds).
pub fn purge(client: &mut Client, now: i64) -> Result<u64, FleetError> {
    Ok(client.execute("DELETE FROM fleet_replay WHERE expires_at <= $1", &[&now])?)
}

type Request = ([u8; 32], i64, SyncSender<Claim>);

/// A worker thread owning a connection for replay claims.
pub struct FleetReplay {
    tx: SyncSender<Request>,
    wait: Duration,
    _worker: Arc<std::thread::JoinHandle<()>>,
}

impl FleetReplay {
    /// Start the worker for `node` on `url`. It (re)connects by itself; while it has no
    /// connection every claim answers [`Claim::Down`] at once.
    pub fn spawn(url: String, node: String, wait: Duration) -> Result<FleetReplay, FleetError> {
        let database = Database::open(&url)
            .map_err(|reason| FleetError::UrlFile { path: "(given URL)".into(), reason })?;
        FleetReplay::spawn_on(Arc::new(database), node, wait)
    }

    /// [`FleetReplay::spawn`] on a database already read.
    pub fn spawn_on(
        database: Arc<Database>,
        node: String,
        wait: Duration,
    ) -> Result<FleetReplay, FleetError> {
        let (tx, rx) = mpsc::sync_channel::<Request>(64);
        let worker = std::thread::Builder::new()
            .name("fleet-replay".into())
            .spawn(move || worker(&database, &node, &rx))
            .map_err(|_| FleetError::Timeout)?;
        Ok(FleetReplay { tx, wait, _worker: Arc::new(worker) })
    }

    /// Claim `digest` until `expires_at` (unix seconds), waiting at most the bound.
    pub fn claim(&self, digest: [u8; 32], expires_at: u64) -> Claim {
        let (reply, answer) = mpsc::sync_channel(1);
        let expires = i64::try_from(expires_at).unwrap_or(i64::MAX);
        if self.tx.try_send((digest, expires, reply)).is_err() {
            return Claim::Down;
        }
        answer.recv_timeout(self.wait).unwrap_or(Claim::Down)
    }
}

fn worker(database: &Database, node: &str, rx: &Receiver<Request>) {
    let mut client: Option<Client> = None;
    while let Ok((digest, expires, reply)) = rx.recv() {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = database.connect();
        }
        let answer = match client.as_mut() {
            None => Claim::Down,
            Some(c) => match claim(c, node, &digest, expires, super::unix_ms() / 1000) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!("fleet replay: {e}");
                    client = None;
                    Claim::Down
                }
            },
        };
        // The caller may have given up waiting; the claim stands all the same.
        let _ = reply.try_send(answer);
    }
}
