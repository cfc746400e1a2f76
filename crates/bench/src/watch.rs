//! Scenario 6: self-repair. With portcullisd running, someone removes its ruleset
//! (`table inet portcullis` deleted over netlink as `portcullisd teardown` does,
//! `nft flush ruleset`, `iptables -F` for the iptables driver). Measured: from the
//! moment the removal has been committed (the deleting call or command returned)
//! until a connection attempt from a never-granted client to the protected port is
//! dropped again. The client polls with short connection attempts, so the figure has
//! a resolution of a fraction of a millisecond.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use portcullis_daemon::firewall::nft::NftDriver;
use portcullis_daemon::firewall::FirewallDriver;
use portcullis_daemon::lab::{self, Probe};

use crate::env::{self, Daemon, Env, PROTECTED};
use crate::report::Report;
use crate::stats::{ms, summarize};
use crate::table::{fmt_ms, Table};

/// A dropped SYN is declared after this; an answered one takes well under a ms.
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);
/// Pause between attempts while the port still answers.
const PROBE_GAP: Duration = Duration::from_micros(200);
/// Give up on a trial after this.
const LIMIT: Duration = Duration::from_secs(5);
/// Between trials: the daemon confirms its repair (and repairs are rate-limited).
const REST: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, Copy)]
enum Removal {
    /// `NFT_MSG_DELTABLE` from another netlink socket (what `portcullisd teardown` sends).
    Teardown,
    /// `nft flush ruleset` (`systemctl reload nftables` on Debian).
    NftFlush,
    /// `iptables-nft -F` (every chain of table filter, the jump from INPUT with them).
    IptFlush,
}

impl Removal {
    fn label(self) -> &'static str {
        match self {
            Removal::Teardown => "delete table (netlink, like `portcullisd teardown`)",
            Removal::NftFlush => "`nft flush ruleset`",
            Removal::IptFlush => "`iptables-nft -F` and `-t mangle -F`",
        }
    }

    /// Remove, in the server namespace; returns when the kernel has committed it.
    fn apply(self, env: &Env) -> anyhow::Result<Instant> {
        match self {
            Removal::Teardown => env.lab.in_ns(&env.lab.server, || -> anyhow::Result<Instant> {
                NftDriver::new()?.teardown()?;
                Ok(Instant::now())
            })?,
            Removal::NftFlush => {
                lab::sh(&["ip", "netns", "exec", &env.lab.server, "nft", "flush", "ruleset"])?;
                Ok(Instant::now())
            }
            Removal::IptFlush => {
                // Filter (INPUT gate) and mangle (the PREROUTING gate of forwarded services,
                // which also drops for local ones): only both open the port.
                lab::sh(&["ip", "netns", "exec", &env.lab.server, "iptables-nft", "-w", "-F"])?;
                lab::sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &env.lab.server,
                    "iptables-nft",
                    "-w",
                    "-t",
                    "mangle",
                    "-F",
                ])?;
                Ok(Instant::now())
            }
        }
    }
}

/// Seconds since midnight UTC of `t`.
fn time_of_day(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() % 86_400.0)
}

/// Seconds since midnight of a log line's `2026-11-30T02:39:01.333349Z` timestamp.
fn line_time_of_day(line: &str) -> Option<f64> {
    let clock = line.split_whitespace().next()?.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = clock.split(':').map(|p| p.parse::<f64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(h * 3600.0 + m * 60.0 + s)
}

/// From the daemon's log: the first repair line logged after the removal began
/// (`started`), in ms after it was committed (`done`; 0 if the daemon was faster than
/// the removing command's exit). The line is written once the reinstalled ruleset is
/// committed.
fn repaired_after(log: &str, started: SystemTime, done: SystemTime) -> Option<f64> {
    let (t0, t1) = (time_of_day(started), time_of_day(done));
    log.lines()
        .filter(|l| l.contains("REINSTALLED"))
        .filter_map(line_time_of_day)
        .find(|&t| t >= t0)
        .map(|t| ((t - t1) * 1e3).max(0.0))
}

/// One trial: the prober waits in the client namespace for the removal's commit time,
/// then tries until the port stops answering. Returns that delay, and the wall-clock
/// times the removal began and was committed (for the daemon's log).
fn trial(env: &Env, removal: Removal) -> anyhow::Result<(Duration, SystemTime, SystemTime)> {
    let to = SocketAddr::new(env::server4(), PROTECTED);
    let pre = env.lab.in_ns(&env.lab.client, move || lab::probe(to, PROBE_TIMEOUT))?;
    if pre != Probe::Filtered {
        bail!("the protected port answers a never-granted client before the removal ({pre:?})");
    }
    let (tx, rx) = mpsc::channel::<Instant>();
    let ns = env.lab.client.clone();
    let prober = std::thread::spawn(move || -> anyhow::Result<Option<Duration>> {
        lab::enter(&std::path::PathBuf::from("/run/netns").join(ns))?;
        let t0 = rx.recv().context("removal never happened")?;
        while t0.elapsed() < LIMIT {
            let start = Instant::now();
            if lab::probe(to, PROBE_TIMEOUT) == Probe::Filtered {
                return Ok(Some(start.saturating_duration_since(t0)));
            }
            std::thread::sleep(PROBE_GAP);
        }
        Ok(None)
    });
    let started = SystemTime::now();
    let t0 = removal.apply(env)?;
    let wall = SystemTime::now();
    let _ = tx.send(t0);
    let took = prober.join().map_err(|_| anyhow::anyhow!("prober panicked"))??;
    let took =
        took.with_context(|| format!("{}: port still open {LIMIT:?} after the removal", removal.label()))?;
    Ok((took, started, wall))
}

/// Run `trials` removals of each kind against portcullisd (nftables, then iptables-nft).
pub fn run(env: &mut Env, trials: usize, report: &mut Report) -> anyhow::Result<()> {
    let mut t = Table::new(
        "Firewall self-repair: ruleset removed under a running daemon → port filtered again (ms)",
        &[
            "daemon",
            "removal",
            "trials",
            "reinstalled (log): median / p95 / max",
            "dropped (client probe): median / p95 / max",
        ],
    );
    for (d, removals) in [
        (Daemon::Portcullisd, &[Removal::Teardown, Removal::NftFlush][..]),
        (Daemon::PortcullisdIptNft, &[Removal::IptFlush][..]),
    ] {
        report.settle();
        let running = env.start(d)?;
        for &r in removals {
            env.say(format!("watch: {} × {}, {}", trials, r.label(), d.name()));
            let (mut probed, mut commits) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
            for _ in 0..trials {
                std::thread::sleep(REST);
                let (took, started, done) = trial(env, r)?;
                probed.push(ms(took));
                commits.push((started, done));
            }
            std::thread::sleep(Duration::from_millis(200));
            let log = env.daemon_log();
            let logged: Vec<f64> = commits.iter().filter_map(|&(s, d)| repaired_after(&log, s, d)).collect();
            let p = summarize(&probed).context("no samples")?;
            let l = summarize(&logged).context("no repair lines in the daemon log")?;
            t.row(vec![
                d.name().into(),
                r.label().into(),
                p.n.to_string(),
                format!("{} / {} / {}", fmt_ms(l.median), fmt_ms(l.p95), fmt_ms(l.max)),
                format!("{} / {} / {}", fmt_ms(p.median), fmt_ms(p.p95), fmt_ms(p.max)),
            ]);
            if matches!(d, Daemon::Portcullisd) {
                report.check(
                    &format!("{}: ruleset back within 100 ms", r.label()),
                    format!("max {} ms over {} trials (daemon log)", fmt_ms(l.max), l.n),
                    l.max <= 100.0,
                );
            }
        }
        let log = env.daemon_log();
        let repairs = log.matches("REINSTALLED").count();
        t.note(format!("- {}: {repairs} repairs logged", d.name()));
        env.stop(running);
    }
    t.note(format!(
        "- from the removal's commit (call or command returned) to: the daemon's repair line (logged once \
         the reinstalled ruleset is committed; log timestamps, µs); and the first connection attempt from \
         a never-granted client that is dropped ({PROBE_TIMEOUT:?} without answer; attempts every \
         {PROBE_GAP:?}; on a loaded machine the prober itself may start late, so this column is an upper \
         bound). A command's figure can be ~0: the daemon repaired before the command had exited. \
         nftables: netlink change notifications; iptables: checked every {:?}.",
        portcullis_daemon::grants::watch::VERIFY_PERIOD
    ));
    report.tables.push(t);
    env.reset_firewall("")?;
    Ok(())
}
