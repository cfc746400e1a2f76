//! The command driver: knockd-style start/stop commands run for a knocker, off the
//! capture thread.
//!
//! # Threads and bounds
//! - The capture thread only calls [`ActionsHandle::open`]: a mutex, a push onto a
//!   bounded request queue ([`MAX_REQUESTS`]) and a wake-up. It never waits for a
//!   command, a file or a disk.
//! - One scheduler thread turns requests into jobs and owns the pending-stops file
//!   ([`pending`]): a start runs only after its stop is durably recorded. It also
//!   dispatches stops when they fall due, including stops that fell due while the
//!   daemon was down (at start).
//! - [`WORKERS`] worker threads run jobs from a bounded queue ([`MAX_JOBS`]). Jobs for
//!   the same (door, address) run one at a time in order (a stop never overtakes its
//!   start); other jobs pass a hung one. Each command is killed after the configured
//!   time limit ([`exec`]).
//!
//! # Repeat knocks
//! knockd runs the start command again on every successful knock, stacking duplicate
//! rules that its single stop then leaves behind. We run the start once per grant: a
//! repeat knock while the stop for that (door, address) is still pending only moves the
//! stop's due time to `now + cmd_timeout`.

pub mod exec;
pub mod onetime;
pub mod pending;
pub mod queued;
pub mod subst;

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::config::{CommandLine, Commands};
use pending::{Entry, Store};
pub use queued::Queued;

/// Commands running at once.
pub const WORKERS: usize = 4;
/// Jobs waiting for a worker.
pub const MAX_JOBS: usize = 256;
/// Open requests waiting for the scheduler.
pub const MAX_REQUESTS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    door: String,
    addr: IpAddr,
}

#[derive(Debug)]
struct Request {
    key: Key,
    start: Option<CommandLine>,
    stop: Option<CommandLine>,
    after: Duration,
    at: SystemTime,
}

#[derive(Debug)]
enum Kind {
    Start,
    Stop { id: u64 },
}

#[derive(Debug)]
struct Job {
    key: Key,
    kind: Kind,
    cmd: CommandLine,
}

#[derive(Debug)]
struct Pending {
    entry: Entry,
    dispatched: bool,
}

#[derive(Debug, Default)]
struct State {
    requests: VecDeque<Request>,
    jobs: VecDeque<Job>,
    in_flight: HashSet<Key>,
    /// Stop ids whose command has run (or could not be started).
    done: Vec<u64>,
    shutdown: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes workers: a job was queued or a key became free.
    work: Condvar,
    /// Wakes the scheduler: a request arrived or a stop finished.
    sched: Condvar,
    time_limit: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking worker must not take the daemon with it: keep using the state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running command driver. Dropping it (or [`Actions::shutdown`]) stops the
/// threads; pending stops stay in the file and run at the next start.
#[derive(Debug)]
pub struct Actions {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// A cheap handle for the capture thread.
#[derive(Debug, Clone)]
pub struct ActionsHandle {
    to: Runner,
}

/// Where commands run: here, or in the privileged part (which looks the door's
/// commands up in its own config; only the door name and address travel).
#[derive(Debug, Clone)]
enum Runner {
    Here(Arc<Shared>),
    Privileged(Arc<crate::privsep::client::Client>),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Actions {
    /// Load pending stops from `state_dir` and start the threads. Stops already due run
    /// at once. `time_limit` is how long any one command may run.
    pub fn start(state_dir: &Path, time_limit: Duration) -> std::io::Result<Actions> {
        let store = Store::new(state_dir);
        let loaded = match store.load() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("pending stop commands: {e}; starting with none");
                Vec::new()
            }
        };
        if !loaded.is_empty() {
            let now = unix_ms(SystemTime::now());
            let due = loaded.iter().filter(|e| e.due_unix_ms <= now).count();
            tracing::info!(
                "{} pending stop command(s) from {} ({due} already due, running now)",
                loaded.len(),
                store.path().display()
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            sched: Condvar::new(),
            time_limit,
        });
        let mut threads = Vec::new();
        let s = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("pc-sched".into())
                .spawn(move || scheduler(&s, &store, loaded))?,
        );
        for i in 0..WORKERS {
            let s = Arc::clone(&shared);
            threads.push(std::thread::Builder::new().name(format!("pc-cmd{i}")).spawn(move || worker(&s))?);
        }
        Ok(Actions { shared, threads })
    }

    /// A handle for the capture thread.
    pub fn handle(&self) -> ActionsHandle {
        ActionsHandle { to: Runner::Here(Arc::clone(&self.shared)) }
    }

    /// Stop the scheduler and workers. Running commands are not waited for beyond a
    /// short grace time; unfinished stops stay recorded.
    pub fn shutdown(mut self) {
        self.stop_threads(Duration::from_secs(2));
    }

    fn stop_threads(&mut self, grace: Duration) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        self.shared.sched.notify_all();
        let end = std::time::Instant::now() + grace;
        for t in self.threads.drain(..) {
            while !t.is_finished() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        self.stop_threads(Duration::from_millis(200));
    }
}

impl ActionsHandle {
    /// Commands run by the privileged part over `client`.
    pub fn privileged(client: Arc<crate::privsep::client::Client>) -> ActionsHandle {
        ActionsHandle { to: Runner::Privileged(client) }
    }

    /// `addr` completed `door`'s sequence at `at`: run its start command now and its
    /// stop command `cmd_timeout` later (or only move the stop if the grant is open).
    pub fn open(&self, door: &str, addr: IpAddr, cmds: &Commands, at: SystemTime) -> Queued {
        let (start, stop) = match addr {
            IpAddr::V4(_) => (&cmds.start4, &cmds.stop4),
            IpAddr::V6(_) => (&cmds.start6, &cmds.stop6),
        };
        if start.is_none() {
            return Queued::Nothing;
        }
        let shared = match &self.to {
            Runner::Here(s) => s,
            Runner::Privileged(c) => return c.run_commands(door, addr, at),
        };
        let mut st = shared.lock();
        if st.requests.len() >= MAX_REQUESTS {
            return Queued::Full;
        }
        st.requests.push_back(Request {
            key: Key { door: door.to_string(), addr },
            start: start.clone(),
            stop: stop.clone(),
            after: cmds.cmd_timeout,
            at,
        });
        drop(st);
        shared.sched.notify_one();
        Queued::Yes
    }

    /// Stop commands scheduled and not yet finished (for tests and status; always true
    /// when the privileged part runs them).
    pub fn idle(&self) -> bool {
        let Runner::Here(shared) = &self.to else { return true };
        let st = shared.lock();
        st.requests.is_empty() && st.jobs.is_empty() && st.in_flight.is_empty()
    }
}

fn scheduler(shared: &Shared, store: &Store, loaded: Vec<Entry>) {
    let mut pending: Vec<Pending> =
        loaded.into_iter().map(|entry| Pending { entry, dispatched: false }).collect();
    let mut next_id = pending.iter().map(|p| p.entry.id).max().unwrap_or(0) + 1;
    loop {
        let mut st = shared.lock();
        loop {
            if st.shutdown {
                return;
            }
            let now = unix_ms(SystemTime::now());
            let next_due = pending.iter().filter(|p| !p.dispatched).map(|p| p.entry.due_unix_ms).min();
            if !st.requests.is_empty() || !st.done.is_empty() || next_due.is_some_and(|d| d <= now) {
                break;
            }
            // Re-check at least once a second: wall-clock jumps and queue space.
            let wait = next_due.map_or(1000, |d| (d - now).min(1000));
            st = shared
                .sched
                .wait_timeout(st, Duration::from_millis(wait))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let requests: Vec<Request> = st.requests.drain(..).collect();
        let done: Vec<u64> = std::mem::take(&mut st.done);
        drop(st);

        let mut dirty = !done.is_empty();
        pending.retain(|p| !done.contains(&p.entry.id));
        let mut starts = Vec::new();
        let mut added = Vec::new();
        for r in requests {
            let due = unix_ms(r.at + r.after);
            if let Some(p) = pending
                .iter_mut()
                .find(|p| !p.dispatched && p.entry.door == r.key.door && p.entry.addr == r.key.addr)
            {
                // Repeat knock on an open grant: extend, do not stack another start.
                p.entry.due_unix_ms = p.entry.due_unix_ms.max(due);
                dirty = true;
                tracing::info!(
                    "{}: {}: already open; stop command moved to {}s from now",
                    r.key.addr,
                    r.key.door,
                    r.after.as_secs()
                );
                continue;
            }
            if let Some(stop) = &r.stop {
                if pending.len() >= pending::MAX_ENTRIES {
                    tracing::error!(
                        "{}: {}: NOT running start command: {} stop commands already pending",
                        r.key.addr,
                        r.key.door,
                        pending::MAX_ENTRIES
                    );
                    continue;
                }
                let id = next_id;
                next_id += 1;
                pending.push(Pending {
                    entry: Entry::new(id, due, &r.key.door, r.key.addr, stop),
                    dispatched: false,
                });
                added.push(id);
                dirty = true;
            }
            if let Some(start) = r.start {
                starts.push(Job { key: r.key, kind: Kind::Start, cmd: start });
            }
        }
        if dirty {
            let entries: Vec<Entry> = pending.iter().map(|p| p.entry.clone()).collect();
            if let Err(e) = store.save(&entries) {
                // Fail closed: without a durable stop, do not open.
                tracing::error!(
                    "cannot record pending stop commands in {}: {e}; NOT running {} start command(s)",
                    store.path().display(),
                    added.len()
                );
                pending.retain(|p| !added.contains(&p.entry.id));
                starts.clear();
            }
        }
        let now = unix_ms(SystemTime::now());
        let mut st = shared.lock();
        for j in starts {
            if st.jobs.len() >= MAX_JOBS {
                tracing::error!("{}: {}: command queue full; start command dropped", j.key.addr, j.key.door);
                continue;
            }
            st.jobs.push_back(j);
        }
        for p in pending.iter_mut().filter(|p| !p.dispatched && p.entry.due_unix_ms <= now) {
            if st.jobs.len() >= MAX_JOBS {
                break; // retried on the next round
            }
            let key = Key { door: p.entry.door.clone(), addr: p.entry.addr };
            match p.entry.command() {
                Some(cmd) => st.jobs.push_back(Job { key, kind: Kind::Stop { id: p.entry.id }, cmd }),
                None => st.done.push(p.entry.id),
            }
            p.dispatched = true;
        }
        drop(st);
        shared.work.notify_all();
    }
}

fn worker(shared: &Shared) {
    loop {
        let job = {
            let mut st = shared.lock();
            loop {
                if st.shutdown {
                    return;
                }
                let free = st.jobs.iter().position(|j| !st.in_flight.contains(&j.key));
                if let Some(i) = free {
                    let job = st.jobs.remove(i);
                    if let Some(j) = &job {
                        st.in_flight.insert(j.key.clone());
                    }
                    break job;
                }
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(job) = job else { continue };
        run_job(&job, shared.time_limit);
        let mut st = shared.lock();
        st.in_flight.remove(&job.key);
        if let Kind::Stop { id } = job.kind {
            st.done.push(id);
        }
        drop(st);
        shared.work.notify_all();
        shared.sched.notify_one();
    }
}

fn run_job(job: &Job, limit: Duration) {
    let what = match job.kind {
        Kind::Start => "start",
        Kind::Stop { .. } => "stop",
    };
    let (addr, door) = (job.key.addr, &job.key.door);
    match exec::run(&job.cmd, addr, door, limit) {
        Ok(o) if o.ok() => {
            tracing::info!("{addr}: {door}: {what} command done ({} ms)", o.elapsed.as_millis());
        }
        Ok(o) if o.timed_out => tracing::error!(
            "{addr}: {door}: {what} command killed after {} s (time limit); stderr: {:?}",
            limit.as_secs_f32(),
            o.stderr
        ),
        Ok(o) => {
            tracing::error!("{addr}: {door}: {what} command failed ({}); stderr: {:?}", o.status, o.stderr)
        }
        Err(e) => tracing::error!("{addr}: {door}: {what} command could not be started: {e}"),
    }
}

#[cfg(test)]
mod tests;
