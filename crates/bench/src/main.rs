//! `portcullis-bench`: portcullisd measured side by side with knockd and fwknopd, in
//! the same run, inside network namespaces it builds and removes itself.
//!
//! # Safety
//! Everything that sends packets or changes a firewall happens inside the lab's
//! namespaces (server, client, attacker on one bridge); the root namespace's firewall
//! is never touched. Floods are bounded in packets and time, spoof only 198.18.0.0/15
//! and 2001:db8::/32, and target only the lab's server. Processes are stopped by PID.
//!
//! # Layout
//! - pure, unit-tested: [`stats`] (percentiles), [`table`] (markdown), packets
//!   ([`portcullis_daemon::lab::packet`]: headers and checksums), the token bucket in [`flood`], CPU% in [`procmon`];
//! - lab and daemons: [`env`]; client side of a trial: [`probe`];
//! - scenarios: [`latency`], [`floods`], [`spa_flood`], [`grants`], [`spa`],
//!   [`spa_isolation`], [`memory`], [`watch`], [`fleet`] (its own lab: three gateways and
//!   a PostgreSQL cluster).

mod env;
mod fleet;
mod flood;
mod floods;
mod grants;
mod latency;
mod memory;
mod probe;
mod procmon;
mod report;
mod spa;
mod spa_flood;
mod spa_isolation;
mod stats;
mod table;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use env::{Bins, Env};
use report::Report;

#[derive(Parser, Debug)]
#[command(
    name = "portcullis-bench",
    version,
    about = "Benchmark portcullisd against knockd and fwknopd in throwaway network namespaces (root)."
)]
struct Cli {
    /// Fewer trials, shorter floods (about 3 minutes instead of about 10).
    #[arg(long, global = true)]
    quick: bool,
    /// Also write the markdown report to this file.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Directory holding the release `portcullisd` (default: next to this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Only latency daemons / flood cases whose "daemon label" contains this text.
    #[arg(long, global = true)]
    only: Option<String>,
    /// Progress details on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    /// Every scenario, in order.
    All,
    /// 1. knock/SPA → port open latency.
    Latency,
    /// 2. flood resilience.
    Flood,
    /// 2b. SPA under attack: crypto-costly junk floods against legitimate SPA.
    SpaFlood,
    /// 3. grant scale (nftables driver, iptables driver, raw iptables rules).
    Grants,
    /// 4. SPA rejection throughput, and knocks behind SPA work (in process; no root needed).
    Spa,
    /// 5. memory under 1,000,000 spoofed sources.
    Memory,
    /// 6. self-repair: ruleset removed under a running daemon → port filtered again.
    Watch,
    /// 7. fleet mode: three gateways on one throwaway PostgreSQL (not part of `all`).
    Fleet,
}

/// Sizes for full and quick runs.
struct Plan {
    trials: usize,
    attempts: usize,
    grants: u64,
    spa_budget: Duration,
    mem_rate: Option<u64>,
}

fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            trials: 10,
            attempts: 4,
            grants: 10_000,
            spa_budget: Duration::from_millis(500),
            mem_rate: None,
        }
    } else {
        Plan {
            trials: 30,
            attempts: 10,
            grants: 100_000,
            spa_budget: Duration::from_secs(2),
            mem_rate: Some(100_000),
        }
    }
}

fn bins(dir: Option<PathBuf>) -> anyhow::Result<Bins> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::current_exe()?.parent().context("binary has no directory")?.to_path_buf(),
    };
    let portcullisd = dir.join("portcullisd");
    if !portcullisd.exists() {
        bail!("{} missing: run `cargo build --release --workspace` first", portcullisd.display());
    }
    for tool in ["knockd", "fwknopd", "fwknop", "nft", "iptables", "iptables-restore", "ip"] {
        if portcullis_daemon::lab::preflight::find_tool(tool).is_none() {
            bail!("{tool} is not installed: scripts/bench.sh installs knockd fwknop-server fwknop-client nftables iptables");
        }
    }
    Ok(Bins { portcullisd })
}

fn run(cli: &Cli) -> anyhow::Result<Report> {
    let p = plan(cli.quick);
    let mut report = Report::default();
    if cli.cmd == Cmd::Fleet {
        if !nix::unistd::geteuid().is_root() {
            bail!("needs root (network namespaces, nftables, a PostgreSQL cluster run as postgres)");
        }
        let sizes = if cli.quick {
            fleet::Sizes { fanout: 100, accept: 50, burst: 10_000 }
        } else {
            fleet::Sizes { fanout: 300, accept: 150, burst: 10_000 }
        };
        fleet::run(&bins(cli.bin_dir.clone())?.portcullisd, &sizes, &mut report)?;
        return Ok(report);
    }
    let needs_lab = cli.cmd != Cmd::Spa;
    let mut env = if needs_lab {
        if !nix::unistd::geteuid().is_root() {
            bail!("needs root (network namespaces, raw sockets, nftables)");
        }
        Some(Env::new(bins(cli.bin_dir.clone())?, cli.verbose)?)
    } else {
        None
    };
    let all = cli.cmd == Cmd::All;
    if let Some(env) = env.as_mut() {
        if all || cli.cmd == Cmd::Latency {
            latency::run(env, p.trials, cli.only.as_deref(), &mut report)?;
        }
        if all || cli.cmd == Cmd::Flood {
            floods::run(env, p.attempts, cli.only.as_deref(), &mut report)?;
        }
        if all || cli.cmd == Cmd::SpaFlood {
            spa_flood::run(env, p.attempts, cli.only.as_deref(), &mut report)?;
        }
        if all || cli.cmd == Cmd::Grants {
            grants::run(env, p.grants, &mut report)?;
        }
    }
    if all || cli.cmd == Cmd::Spa {
        eprintln!("[bench] spa: rejection throughput");
        spa::run(p.spa_budget, &mut report)?;
        eprintln!("[bench] spa: knocks behind SPA work, inline vs sliced");
        spa_isolation::run(p.spa_budget, &mut report)?;
    }
    if let Some(env) = env.as_mut() {
        if all || cli.cmd == Cmd::Memory {
            memory::run(env, p.attempts, p.mem_rate, &mut report)?;
        }
        if all || cli.cmd == Cmd::Watch {
            watch::run(env, p.trials.max(20), &mut report)?;
        }
    }
    Ok(report)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = Instant::now();
    let header = report::machine_header(if cli.quick { "--quick" } else { "full" });
    match run(&cli) {
        Ok(report) => {
            let mut md = header;
            md.push_str(&report.background_line());
            md.push_str(&format!("- suite runtime: {:.0} s\n\n", started.elapsed().as_secs_f64()));
            for t in &report.tables {
                md.push_str(&t.render());
                md.push('\n');
            }
            if !report.checks.is_empty() {
                md.push_str(&report.checks_table().render());
            }
            print!("{md}");
            if let Some(out) = &cli.out {
                if let Err(e) = std::fs::write(out, &md) {
                    eprintln!("portcullis-bench: writing {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
