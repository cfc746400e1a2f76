//! Logging set-up: stderr, syslog or journald, chosen by config.
//!
//! Event lines follow knockd's shapes (`<ip>: <door>: Stage N`, `<ip>: <door>: OPEN
//! SESAME`) so existing fail2ban filters and habits carry over; details follow as
//! `key=value` fields. Everything interpolated into a line is either validated config
//! text (door names) or formatted by us (addresses, numbers), so a packet cannot forge
//! a log line.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::config::{LogTarget, SyslogFacility, SyslogSettings};

static SYSLOG: std::sync::OnceLock<SyslogSettings> = std::sync::OnceLock::new();

/// Syslog identity and facility for [`init`] (before it; default `portcullisd`, daemon).
pub fn set_syslog(s: SyslogSettings) {
    let _ = SYSLOG.set(s);
}

fn facility(f: SyslogFacility) -> syslog_tracing::Facility {
    use syslog_tracing::Facility as F;
    match f {
        SyslogFacility::Daemon => F::Daemon,
        SyslogFacility::Auth => F::Auth,
        SyslogFacility::Authpriv => F::AuthPriv,
        SyslogFacility::User => F::User,
        SyslogFacility::Local(n) => {
            [F::Local0, F::Local1, F::Local2, F::Local3, F::Local4, F::Local5, F::Local6, F::Local7]
                [usize::from(n.min(7))]
        }
    }
}

/// Install the global subscriber. `verbose` lowers the level to debug. `RUST_LOG`
/// overrides both. Safe to call once; later calls are ignored.
pub fn init(target: LogTarget, verbose: bool) -> anyhow::Result<()> {
    init_with_file(target, verbose, None)
}

/// [`init`], and also append every line (with a timestamp) to `file` if given: knockd's
/// `LogFile`, kept *in addition to* `target` so systemd's journal still has the lines.
pub fn init_with_file(target: LogTarget, verbose: bool, file: Option<&Path>) -> anyhow::Result<()> {
    let level = if verbose { LevelFilter::DEBUG } else { LevelFilter::INFO };
    let filter = EnvFilter::builder().with_default_directive(level.into()).from_env_lossy();
    let file_layer = match file {
        None => None,
        Some(p) => {
            let sink = std::sync::Arc::new(FileSink::open(p)?);
            let _ = LOG_FILE.set(std::sync::Arc::clone(&sink));
            Some(tracing_subscriber::fmt::layer().with_writer(sink).with_target(false).with_ansi(false))
        }
    };
    let registry = tracing_subscriber::registry().with(filter).with(file_layer);
    let result = match target {
        LogTarget::Stderr => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogTarget::Syslog => {
            let settings = SYSLOG.get().cloned().unwrap_or_default();
            // Validated config text: no NUL byte.
            let ident = std::ffi::CString::new(settings.identity).unwrap_or_else(|_| c"portcullisd".into());
            let writer = syslog_tracing::Syslog::new(
                ident,
                syslog_tracing::Options::LOG_PID,
                facility(settings.facility),
            )
            .ok_or_else(|| anyhow::anyhow!("syslog logger already initialised"))?;
            // syslog adds its own timestamp and host; keep the level for filters.
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(writer)
                        .with_target(false)
                        .with_ansi(false)
                        .without_time(),
                )
                .try_init()
        }
        LogTarget::Journald => {
            let ident = SYSLOG.get().map_or_else(|| "portcullisd".to_string(), |s| s.identity.clone());
            match tracing_journald::layer() {
                Ok(j) => registry.with(j.with_syslog_identifier(ident)).try_init(),
                // No journal socket (a container without journald, say): stderr rather than nothing.
                Err(e) => {
                    let r = registry
                        .with(
                            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false),
                        )
                        .try_init();
                    tracing::warn!("journald unavailable ({e}); logging to stderr");
                    r
                }
            }
        }
    };
    // A subscriber already installed (tests, a second init) is not an error.
    let _ = result;
    Ok(())
}

/// The `log_file` of the running daemon, for [`reopen`].
static LOG_FILE: OnceLock<std::sync::Arc<FileSink>> = OnceLock::new();

/// An append-only log file that can be reopened under the same name (after logrotate
/// moved it away).
struct FileSink {
    path: PathBuf,
    file: Mutex<File>,
}

impl FileSink {
    fn open(path: &Path) -> anyhow::Result<FileSink> {
        Ok(FileSink { path: path.to_path_buf(), file: Mutex::new(open_append(path)?) })
    }
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))
}

impl Write for &FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl FileSink {
    /// Open the path again and write there from now on; on failure keep the old file.
    fn reopen(&self) -> anyhow::Result<()> {
        let f = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f;
        Ok(())
    }
}

/// Reopen the log file, if there is one (SIGHUP). On failure the old file stays in use.
pub fn reopen() {
    if let Some(sink) = LOG_FILE.get() {
        if let Err(e) = sink.reopen() {
            tracing::error!("{e:#}; still writing to the previous file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_file_is_left_alone_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullisd.log");
        let sink = FileSink::open(&path).unwrap();
        (&sink).write_all(b"before\n").unwrap();
        std::fs::rename(&path, dir.path().join("portcullisd.log.1")).unwrap();
        (&sink).write_all(b"still old\n").unwrap();
        sink.reopen().unwrap();
        (&sink).write_all(b"after\n").unwrap();
        let old = std::fs::read_to_string(dir.path().join("portcullisd.log.1")).unwrap();
        assert_eq!(old, "before\nstill old\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("portcullisd.log");
        let sink = FileSink::open(&path).unwrap();
        std::fs::rename(&sub, dir.path().join("gone")).unwrap();
        assert!(sink.reopen().is_err());
        (&sink).write_all(b"kept\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("gone/portcullisd.log")).unwrap(), "kept\n");
    }
}
