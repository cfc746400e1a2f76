//! The unprivileged part's end of the socket: one request at a time, numbered, each
//! answered before the next is sent. Shared by the firewall driver
//! ([`crate::firewall::remote`]), the command hand-off and one-time sequences.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use portcullis_proto::Service;

use super::codec::{self, Answer, Bundle, Op, Request, WireQueued, WireService};
use super::sys::{self, Recv};
use crate::actions::queued::Queued;

/// How often the unprivileged part asks for the firewall's health and the config
/// generation (health then lags the privileged part's watcher by at most this).
pub const STATUS_PERIOD: Duration = Duration::from_millis(100);

/// How long to wait for an answer. The privileged part answers in microseconds; a
/// command hand-off is queued, never run inline. Past this, it is considered dead.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no useful answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The privileged part refused (its config does not allow it).
    #[error("refused by the privileged part: {0}")]
    Refused(String),
    /// The privileged part tried and failed.
    #[error("{0}")]
    Failed(String),
    /// The privileged part is gone or answered nonsense.
    #[error("privileged part unavailable: {0}")]
    Channel(String),
}

struct Conn {
    seq: u64,
    buf: Vec<u8>,
}

/// The unprivileged part's connection to the privileged part.
pub struct Client {
    fd: OwnedFd,
    conn: Mutex<Conn>,
    dead: AtomicBool,
    /// The privileged part said the daemon stops.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("dead", &self.dead.load(Ordering::Relaxed)).finish()
    }
}

impl Client {
    /// Use `fd`, one end of [`sys::pair`].
    pub fn new(fd: OwnedFd) -> Client {
        Client {
            fd,
            conn: Mutex::new(Conn { seq: 0, buf: vec![0; codec::MAX_REPLY + 1] }),
            dead: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// Whether the privileged part asked the daemon to stop.
    pub fn stop_requested(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Mirror the privileged part's firewall health into `granter`'s (for `/v1/health`
    /// and metrics) every [`STATUS_PERIOD`], instead of a watcher of its own (it holds
    /// no firewall); the config generations it offers come out of the receiver.
    pub fn follow(
        self: &Arc<Client>,
        granter: &Arc<crate::grants::Granter>,
    ) -> std::io::Result<Receiver<u64>> {
        granter.firewall_state().stop();
        let (tx, rx) = std::sync::mpsc::channel();
        let (c, g) = (Arc::clone(self), Arc::downgrade(granter));
        std::thread::Builder::new().name("pc-status".into()).spawn(move || poll(&c, &g, &tx))?;
        Ok(rx)
    }

    /// The config bundle of `generation`, in pages.
    pub fn bundle(&self, generation: u64) -> Result<Bundle, ClientError> {
        let mut text = String::new();
        loop {
            let offset = u32::try_from(text.len()).unwrap_or(u32::MAX);
            match self.call(Op::Config { generation, offset })? {
                Answer::Config { part, more } => {
                    let done = !more || part.is_empty();
                    text.push_str(&part);
                    if text.len() > codec::MAX_BUNDLE {
                        return Err(ClientError::Channel("config bundle over its size limit".into()));
                    }
                    if done {
                        break;
                    }
                }
                a => return Err(ClientError::Channel(format!("config: unexpected answer {a:?}"))),
            }
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Channel(format!("config bundle: {e}")))
    }

    /// Watch the socket on a thread of its own: the moment the privileged part is gone
    /// (hang-up), mark the connection dead so the capture loop stops, even when no
    /// request is in flight.
    pub fn watch(self: &std::sync::Arc<Client>) -> std::io::Result<()> {
        let c = std::sync::Arc::clone(self);
        std::thread::Builder::new().name("pc-privsep".into()).spawn(move || {
            while !c.is_dead() {
                if sys::hung_up(&c.fd, Duration::from_millis(500)) {
                    tracing::error!("privsep: the privileged part is gone, stopping");
                    c.dead.store(true, Ordering::Relaxed);
                }
            }
        })?;
        Ok(())
    }

    /// Whether the privileged part has gone away (the daemon must exit).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Send `op` and wait for its answer. Refusals and failures come back as errors.
    pub fn call(&self, op: Op) -> Result<Answer, ClientError> {
        if self.is_dead() {
            return Err(ClientError::Channel("connection closed".into()));
        }
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.seq += 1;
        let req = Request { v: codec::VERSION, seq: c.seq, op };
        let r = self.exchange(&self.fd, &mut c, &req);
        if let Err(ClientError::Channel(e)) = &r {
            tracing::error!("privsep: {e}; the privileged part is gone, stopping");
            self.dead.store(true, Ordering::Relaxed);
        }
        match r? {
            Answer::Refused { reason } => Err(ClientError::Refused(reason)),
            Answer::Failed { error } => Err(ClientError::Failed(error)),
            a => Ok(a),
        }
    }

    fn exchange(&self, fd: &OwnedFd, c: &mut Conn, req: &Request) -> Result<Answer, ClientError> {
        let chan = |e: std::io::Error| ClientError::Channel(e.to_string());
        sys::send_msg(fd, &codec::encode(req)).map_err(chan)?;
        let n = match sys::recv_msg(fd, &mut c.buf, Some(ANSWER_TIMEOUT)).map_err(chan)? {
            Recv::Message(n) => n,
            Recv::Timeout => return Err(ClientError::Channel("no answer in time".into())),
            Recv::Closed => return Err(ClientError::Channel("connection closed".into())),
        };
        let reply = codec::decode_reply(&c.buf[..n]).map_err(|e| ClientError::Channel(e.to_string()))?;
        if reply.seq != req.seq {
            return Err(ClientError::Channel(format!("answer to {} for request {}", reply.seq, req.seq)));
        }
        Ok(reply.answer)
    }

    /// Ask for `door`'s configured commands to run for `addr`.
    pub fn run_commands(&self, door: &str, addr: IpAddr, at: SystemTime) -> Queued {
        let at_unix_ms = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, codec::millis);
        match self.call(Op::RunCommands { door: door.to_string(), addr, at_unix_ms }) {
            Ok(Answer::Queued { queued: WireQueued::Yes }) => Queued::Yes,
            Ok(Answer::Queued { queued: WireQueued::Nothing }) => Queued::Nothing,
            Ok(_) | Err(_) => Queued::Full,
        }
    }

    /// Mark `door`'s one-time sequence `used` and get the next one.
    pub fn one_time_used(&self, door: &str, used: &[Service]) -> Result<Option<Vec<Service>>, String> {
        let used = used.iter().map(|&s| WireService::from(s)).collect();
        match self.call(Op::OneTimeUsed { door: door.to_string(), used }) {
            Ok(Answer::Next { sequence: None }) => Ok(None),
            Ok(Answer::Next { sequence: Some(s) }) => s
                .into_iter()
                .map(|w| w.service().ok_or_else(|| "invalid service in answer".to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Ok(a) => Err(format!("unexpected answer {a:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The status poller: health into the granter, new generations to the reload thread.
fn poll(c: &Client, granter: &Weak<crate::grants::Granter>, offers: &Sender<u64>) {
    let mut seen = 0;
    while !c.is_dead() {
        std::thread::sleep(STATUS_PERIOD);
        let Some(g) = granter.upgrade() else { return };
        match c.call(Op::Status) {
            Ok(Answer::Status { problem, restores, repair_failures, generation, stopping }) => {
                let st = g.firewall_state();
                st.set_problem(problem);
                st.restores.store(restores, Ordering::Relaxed);
                st.repair_failures.store(repair_failures, Ordering::Relaxed);
                if stopping && !c.stopping.swap(true, Ordering::Relaxed) {
                    tracing::info!("privsep: the privileged part is stopping the daemon");
                }
                if generation > seen {
                    seen = generation;
                    let _ = offers.send(generation);
                }
            }
            Ok(a) => tracing::warn!("privsep: unexpected status answer {a:?}"),
            Err(e) => tracing::warn!("privsep: status: {e}"),
        }
    }
}
