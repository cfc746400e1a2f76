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
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening log file {}", p.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(f))
                    .with_target(false)
                    .with_ansi(false),
            )
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
            registry.with(tracing_journald::layer()?.with_syslog_identifier(ident)).try_init()
        }
    };
    // A subscriber already installed (tests, a second init) is not an error.
    let _ = result;
    Ok(())
}
