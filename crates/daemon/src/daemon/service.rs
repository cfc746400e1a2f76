//! Talking to the service manager: readiness, reload and stop notices, and the
//! watchdog keep-alive. Everything is a no-op outside systemd (no `$NOTIFY_SOCKET`).
//!
//! The keep-alive is sent only from the capture loop ([`Service::pet`] is called once
//! per loop turn), never from a timer thread: a wedged loop stops petting and systemd
//! kills and restarts the daemon.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::notify::{self, Notifier, State};

/// Environment variable that, together with [`WEDGE_FILE`] in the state directory,
/// makes the capture loop hang on purpose: the watchdog test of the systemd harness.
/// Both need root (a drop-in and a file in the 0700 state dir); without the variable
/// the file is never even looked at.
pub const WEDGE_ENV: &str = "PORTCULLIS_WATCHDOG_TEST";
/// See [`WEDGE_ENV`].
pub const WEDGE_FILE: &str = "wedge-capture-loop";

/// The daemon's side of the systemd notification protocol.
pub struct Service {
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    last_pet: Option<Instant>,
    wedge_file: Option<PathBuf>,
}

impl Service {
    /// From the environment systemd sets (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`).
    pub fn from_env(state_dir: &Path) -> Service {
        let notifier = match Notifier::from_env() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("systemd notification socket unusable, not notifying: {e}");
                None
            }
        };
        let watchdog = notify::watchdog_interval();
        let wedge_file = std::env::var_os(WEDGE_ENV).filter(|v| v == "1").map(|_| state_dir.join(WEDGE_FILE));
        Service { notifier, watchdog, last_pet: None, wedge_file }
    }

    fn send(&self, states: &[State<'_>]) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.notify(states) {
                tracing::warn!("systemd notification failed: {e}");
            }
        }
    }

    /// Start-up (or a reload) finished: the table is installed and capture runs.
    pub fn ready(&self, status: &str) {
        self.send(&[State::Ready, State::Status(status)]);
    }

    /// A reload begins.
    pub fn reloading(&self) {
        self.send(&[State::Reloading]);
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.send(&[State::Stopping]);
    }

    /// One turn of the capture loop: keep the watchdog fed, at twice its rate.
    pub fn pet(&mut self) {
        let Some(interval) = self.watchdog else { return };
        if self.last_pet.is_none_or(|t| t.elapsed() >= interval / 2) {
            self.send(&[State::Watchdog]);
            self.last_pet = Some(Instant::now());
        }
        if let Some(f) = &self.wedge_file {
            // One-shot: removed first, so the restarted daemon runs normally.
            if std::fs::remove_file(f).is_ok() {
                tracing::error!(
                    "{} exists and {WEDGE_ENV}=1: wedging the capture loop (watchdog test)",
                    f.display()
                );
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}

/// Whether we run under systemd with stdout/stderr going to the journal (or at least
/// started by it): then logging goes straight to the journal, with priorities.
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty())
        || std::env::var_os("INVOCATION_ID").is_some_and(|v| !v.is_empty())
}
