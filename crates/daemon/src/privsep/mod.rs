//! Privilege separation: `portcullisd run` as root opens what needs root (capture
//! socket, API sockets and tokens), then forks into two parts joined by a
//! `SOCK_SEQPACKET` socket pair (see `docs/privsep.md` for the picture):
//!
//! - the **privileged part** (the original process, the one systemd watches) keeps
//!   uid 0 with only `CAP_NET_ADMIN` (plus `CAP_NET_RAW` for iptables; all of root's
//!   capabilities only if a door has knockd commands, which are root shell lines), holds
//!   the real firewall driver and the command runner, and answers the tiny request set
//!   of [`codec`], checked against the [`policy::Policy`] of the config it loaded itself;
//! - the **unprivileged part** (the child) becomes the `portcullis` user (else `nobody`)
//!   with every capability set empty and `no_new_privs`, and runs everything that reads
//!   the network: capture, parsing, knock tracker, SPA, store, API. Its firewall driver is
//!   [`crate::firewall::remote::RemoteDriver`].
//!
//! Either part dying ends the other at once (socket EOF, `PR_SET_PDEATHSIG`), the
//! privileged part exits non-zero, and the supervisor restarts the pair; the ruleset
//! stays and kernel timeouts keep closing grants.

pub mod client;
pub mod codec;
pub mod firewall;
pub mod landlock;
pub mod policy;
pub mod reload;
pub mod seccomp;
pub mod server;
pub mod sys;
pub mod unsplit;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use caps::Capability;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::{Backend, Config};
use crate::daemon::{self, Opened};
use crate::firewall::remote::RemoteDriver;
use client::Client;
use sys::{Forked, Recv};

/// SIGHUP (claimed before the split) and how to read the config again.
pub type Reloading = (signal_hook::iterator::Signals, crate::daemon::reload::Loader);

/// Split and run both parts with `driver` (opened, and flushed if the config says so,
/// by the caller); returns in the privileged part when the pair stops. The unprivileged
/// part never returns: it exits the process with its own status.
pub fn run(
    config: &Config,
    shutdown: Arc<AtomicBool>,
    opened: Opened,
    driver: Box<dyn crate::firewall::FirewallDriver>,
    reloading: Reloading,
) -> anyhow::Result<()> {
    let (account, dedicated) = sys::account().context("privsep: choosing the unprivileged account")?;
    if !dedicated {
        tracing::warn!(
            "privsep: no `portcullis` account; the unprivileged part runs as {} (create a dedicated \
             system user `portcullis`; the package does)",
            account.name
        );
    }
    sys::check_reachable(&config.daemon.state_dir, &account).map_err(|e| anyhow::anyhow!("privsep: {e}"))?;
    // The unprivileged part owns the store and the replay cache; the pending stop
    // commands and the state dir lock stay root's (the privileged part checks the
    // pending file's owner when loading and holds the lock).
    sys::chown_tree(
        &config.daemon.state_dir,
        &account,
        &[crate::actions::pending::FILE_NAME, crate::statedir::LOCK_FILE],
    )
    .context("privsep: handing the state directory to the unprivileged part")?;
    // Opened before the fork (single-threaded, as root); only the privileged part keeps it.
    let (hup, loader) = reloading;
    let (name, kernel_expiry) = (driver.name(), driver.kernel_expiry());
    let (privileged_end, unprivileged_end) = sys::pair().context("privsep: socket pair")?;
    let parent = nix::unistd::getpid();
    match sys::fork().context("privsep: fork")? {
        Forked::Child => {
            drop(privileged_end);
            drop(driver);
            // Kept, never read: SIGHUP sent to this part is ignored (the privileged
            // part reads the config and offers it).
            let _hup = hup;
            let code = match unprivileged(
                config,
                &shutdown,
                opened,
                unprivileged_end,
                parent,
                &account,
                (name, kernel_expiry),
                loader,
            ) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("unprivileged part: {e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
        Forked::Parent(child) => {
            drop(opened);
            drop(unprivileged_end);
            let reload = reload::Reload::new(config.clone(), loader);
            privileged(config, &shutdown, privileged_end, child, driver, (hup, reload))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn unprivileged(
    config: &Config,
    shutdown: &AtomicBool,
    opened: Opened,
    fd: OwnedFd,
    parent: Pid,
    account: &sys::Account,
    (name, kernel_expiry): (&'static str, bool),
    loader: crate::daemon::reload::Loader,
) -> anyhow::Result<()> {
    sys::drop_all(account).context("dropping privileges")?;
    // After the credential change, which clears the parent-death signal.
    sys::die_with_parent(parent)?;
    // systemd's watchdog is fed by this part's capture loop, but WATCHDOG_PID names the
    // main process. Still single-threaded here, so changing the environment is safe.
    if std::env::var_os("WATCHDOG_PID").is_some() {
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    }
    // Files it still reads after start: only fwknopd's digest cache, once, if imported.
    let read: Vec<&std::path::Path> =
        config.spa.as_ref().and_then(|s| s.import_digest_file.as_deref()).into_iter().collect();
    // The fleet database: its TCP ports (a unix socket needs no rule).
    let ports = opened.fleet.as_ref().map(|d| d.tcp_ports()).unwrap_or_default();
    let sandbox = landlock::restrict(&config.daemon.state_dir, &read, &ports)?;
    if sandbox.enforced != landlock::Enforced::Fully {
        tracing::warn!("privsep: unprivileged part file access: {sandbox}");
    }
    seccomp::confine_unprivileged().context("installing the seccomp filter")?;
    tracing::info!(
        "privsep: unprivileged part (pid {}) running as {} (uid {}), no capabilities, no_new_privs, {sandbox}, seccomp",
        std::process::id(),
        account.name,
        account.uid
    );
    let client = Arc::new(Client::new(fd));
    client.watch().context("privsep: watching the privileged part")?;
    let driver = Box::new(RemoteDriver::new(Arc::clone(&client), name, kernel_expiry));
    daemon::serve(config, shutdown, opened, driver, Some(client), Some((None, loader)))
}

/// Capabilities the privileged part keeps.
fn keep_for(config: &Config) -> Option<Vec<Capability>> {
    if config.doors.iter().any(|d| d.commands.is_some()) {
        // knockd commands are arbitrary root shell lines: they keep root's set.
        return None;
    }
    Some(match config.daemon.backend {
        Backend::Iptables(_) => vec![Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW],
        Backend::Nftables | Backend::None => vec![Capability::CAP_NET_ADMIN],
    })
}

fn privileged(
    config: &Config,
    shutdown: &AtomicBool,
    fd: OwnedFd,
    child: Pid,
    driver: Box<dyn crate::firewall::FirewallDriver>,
    reloading: (signal_hook::iterator::Signals, reload::Reload),
) -> anyhow::Result<()> {
    let result = (|| {
        let actions = if config.doors.iter().any(|d| d.commands.is_some()) {
            Some(
                crate::actions::Actions::start(&config.daemon.state_dir, config.daemon.command_time_limit)
                    .context("starting the command runner")?,
            )
        } else {
            None
        };
        let server = server::Server::new(
            driver,
            daemon::plan_for(config),
            policy::Policy::from_config(config),
            actions.as_ref().map(|a| a.handle()),
        );
        // Subscribed before the seccomp filter; its thread starts after the capability
        // drop (capabilities are per thread: a thread started earlier would keep them).
        let source = server.firewall().subscribe();
        let keep = keep_for(config);
        match &keep {
            Some(k) => sys::keep_only(k).context("dropping capabilities")?,
            None => nix::sys::prctl::set_no_new_privs().context("no_new_privs")?,
        }
        // A filter is inherited by exec'd programs: only without commands and iptables.
        let filtered = keep.is_some() && !matches!(config.daemon.backend, Backend::Iptables(_));
        if filtered {
            seccomp::confine_privileged().context("installing the seccomp filter")?;
        }
        server.firewall().watch(source).context("starting the firewall watcher")?;
        let kept = keep.map_or("all (door commands configured)".to_string(), |k| {
            k.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
        });
        tracing::info!(
            "privsep: privileged part (pid {}) keeps capabilities {kept}{}; unprivileged part is pid {child}",
            std::process::id(),
            if filtered { ", seccomp" } else { "" }
        );
        anyhow::Ok((server, actions))
    })();
    let (server, actions) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(e);
        }
    };
    let firewall = std::sync::Arc::clone(server.firewall());
    let status = serve(server, &fd, child, shutdown, reloading);
    firewall.stop();
    if config.daemon.flush_at_exit {
        // fwknopd FLUSH_IPT_AT_EXIT: every grant closes with the daemon.
        match firewall.teardown() {
            Ok(()) => tracing::info!("firewall flushed at exit (FLUSH_IPT_AT_EXIT): every grant is closed"),
            Err(e) => tracing::error!("flushing the firewall at exit: {e}"),
        }
    }
    if let Some(a) = actions {
        a.shutdown(); // pending stop commands stay recorded for the next start
    }
    status
}

/// Answer requests until the unprivileged part is gone; then reap it. Success only if
/// it exited 0 (a requested stop).
fn serve(
    mut server: server::Server,
    fd: &OwnedFd,
    child: Pid,
    shutdown: &AtomicBool,
    (mut hup, mut reload): (signal_hook::iterator::Signals, reload::Reload),
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; codec::MAX_REQUEST + 1];
    let mut told = false;
    loop {
        if shutdown.load(Ordering::Relaxed) && !told {
            // The unprivileged part learns it from its next status poll (this part
            // keeps no CAP_KILL to signal another user's process).
            server.stopping = true;
            let _ = kill(child, Signal::SIGTERM);
            told = true;
        }
        if hup.pending().count() > 0 {
            reload.on_hup(&mut server);
        }
        match sys::recv_msg(fd, &mut buf, Some(Duration::from_millis(200))) {
            Ok(Recv::Message(n)) => {
                let (reply, settled) = server.handle_settling(&buf[..n], n > codec::MAX_REQUEST);
                if let Some(c) = settled {
                    reload.settled(c);
                }
                if sys::send_msg(fd, &codec::encode(&reply)).is_err() {
                    break;
                }
            }
            Ok(Recv::Timeout) => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(s) => return finish(s, told, &server),
                Err(_) => return finish(WaitStatus::Exited(child, 1), told, &server),
            },
            Ok(Recv::Closed) | Err(_) => break,
        }
    }
    finish(reap(child), told, &server)
}

/// Wait for the child a little, then kill it.
fn reap(child: Pid) -> WaitStatus {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = kill(child, Signal::SIGKILL);
                return waitpid(child, None).unwrap_or(WaitStatus::Signaled(child, Signal::SIGKILL, false));
            }
            Ok(s) => return s,
            Err(_) => return WaitStatus::Exited(child, 1),
        }
    }
}

fn finish(status: WaitStatus, told: bool, server: &server::Server) -> anyhow::Result<()> {
    tracing::info!(
        "privsep: unprivileged part ended ({status:?}); {} request(s) served, {} refused",
        server.served,
        server.refused
    );
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        s if told => anyhow::bail!("the unprivileged part failed while stopping: {s:?}"),
        s => anyhow::bail!(
            "the unprivileged part died unexpectedly ({s:?}); exiting so that the pair is restarted"
        ),
    }
}
