//! Scenario 6: self-repair. With portcullisd running, someone removes its ruleset
//! (`table inet portcullis` deleted over netlink as `portcullisd teardown` does,
//! `nft flush ruleset`, `iptables -F` for the iptables driver). Measured: from the
//! moment the removal has been committed (the deleting call or command returned)
//! until a connection attempt from a never-granted client to the protected port is
//! dropped again. The client polls with short connection attempts, so the figure has
//! a resolution of a fraction of a millisecond.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
            Removal::IptFlush => "`iptables-nft -F`",
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
                lab::sh(&["ip", "netns", "exec", &env.lab.server, "iptables-nft", "-w", "-F"])?;
                Ok(Instant::now())
            }
        }
    }
}

/// One trial: the prober waits in the client namespace for the removal's commit time,
/// then tries until the port stops answering. Returns that delay.
fn trial(env: &Env, removal: Removal) -> anyhow::Result<Duration> {
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
    let t0 = removal.apply(env)?;
    let _ = tx.send(t0);
    let took = prober.join().map_err(|_| anyhow::anyhow!("prober panicked"))??;
    took.with_context(|| format!("{}: port still open {LIMIT:?} after the removal", removal.label()))
}

/// Run `trials` removals of each kind against portcullisd (nftables, then iptables-nft).
pub fn run(env: &mut Env, trials: usize, report: &mut Report) -> anyhow::Result<()> {
    let mut t = Table::new(
        "Firewall self-repair: ruleset removed under a running daemon → port filtered again (ms)",
        &["daemon", "removal", "trials", "median", "p95", "max"],
    );
    for (d, removals) in [
        (Daemon::Portcullisd, &[Removal::Teardown, Removal::NftFlush][..]),
        (Daemon::PortcullisdIptNft, &[Removal::IptFlush][..]),
    ] {
        report.settle();
        let running = env.start(d)?;
        for &r in removals {
            env.say(format!("watch: {} × {}, {}", trials, r.label(), d.name()));
            let mut samples = Vec::with_capacity(trials);
            for _ in 0..trials {
                std::thread::sleep(REST);
                samples.push(ms(trial(env, r)?));
            }
            let s = summarize(&samples).context("no samples")?;
            t.row(vec![
                d.name().into(),
                r.label().into(),
                s.n.to_string(),
                fmt_ms(s.median),
                fmt_ms(s.p95),
                fmt_ms(s.max),
            ]);
            if matches!(d, Daemon::Portcullisd) {
                report.check(
                    &format!("{}: filtered again within 100 ms", r.label()),
                    format!("max {} ms over {} trials", fmt_ms(s.max), s.n),
                    s.max <= 100.0,
                );
            }
        }
        let log = env.daemon_log();
        let repairs = log.matches("REINSTALLED").count();
        t.note(format!("- {}: {repairs} repairs logged", d.name()));
        env.stop(running);
    }
    t.note(format!(
        "- measured from the removal's commit (call or command returned) to the first connection attempt \
         from a never-granted client that is dropped ({PROBE_TIMEOUT:?} without answer); attempts every \
         {PROBE_GAP:?}. nftables: netlink change notifications; iptables: checked every {:?}.",
        portcullis_daemon::grants::watch::VERIFY_PERIOD
    ));
    report.tables.push(t);
    env.reset_firewall("")?;
    Ok(())
}
