//! Scenario 3: grant scale. portcullis' nftables driver used directly (add the N-th
//! grant, revoke one, per-connection cost with N grants live), against raw `iptables`
//! rule insertion as the knockd/fwknopd-style baseline (portcullis has no iptables
//! driver: these rows measure iptables itself, not portcullis).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use portcullis_daemon::firewall::nft::NftDriver;
use portcullis_daemon::firewall::{FirewallDriver, Grant, Plan};
use portcullis_daemon::lab;
use portcullis_proto::{Proto, Service};

use crate::env::{self, Env, PROTECTED};
use crate::probe;
use crate::report::Report;
use crate::stats::median_ms;
use crate::table::{fmt_ratio, fmt_us, thousands, Table};

/// Grants timed on each side of a checkpoint N (the batch whose p50 is reported).
const WINDOW: u64 = 10;
/// Revokes timed at each checkpoint.
const REVOKES: usize = 5;
/// iptables -A / -D timed at each checkpoint.
const IPT_OPS: usize = 5;
/// Handshakes timed for per-connection cost.
const CONNS: usize = 30;

fn grant_addr(i: u64) -> Ipv4Addr {
    // 198.18.0.0/15 holds 131,072 addresses: enough for 100,000 + the windows.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i as u32)
}

fn ssh() -> Service {
    Service { proto: Proto::Tcp, port: PROTECTED }
}

fn client() -> IpAddr {
    IpAddr::V4(lab::CLIENT4.parse().unwrap_or(Ipv4Addr::new(192, 0, 2, 2)))
}

fn conn_median(env: &Env) -> anyhow::Result<f64> {
    let to = SocketAddr::new(env::server4(), PROTECTED);
    let times = env.lab.in_ns(&env.lab.client, move || probe::connect_times(client(), to, CONNS))??;
    median_ms(&times).context("no samples")
}

fn p50_secs(v: &[Duration]) -> f64 {
    median_ms(v).unwrap_or(f64::NAN) / 1e3
}

/// Per-checkpoint results: add p50, revoke p50 (seconds).
struct Point {
    n: u64,
    add: f64,
    revoke: f64,
}

fn nft_part(env: &mut Env, max_n: u64, checkpoints: &[u64]) -> anyhow::Result<(Vec<Point>, f64, f64, f64)> {
    env.reset_firewall("")?;
    let mut drv = env.lab.in_ns(&env.lab.server, NftDriver::new)??;
    drv.setup(&Plan { protected: vec![ssh()], max_grants: 262_144 })?;
    let long = Duration::from_secs(3600);
    drv.grant(&[Grant { addr: client(), service: ssh(), timeout: long }])?;
    let conn0 = conn_median(env)?;
    let mut adds: Vec<(u64, Duration)> = Vec::new();
    let mut revokes: Vec<(u64, Vec<Duration>)> = Vec::new();
    let total_start = Instant::now();
    let last = max_n + WINDOW;
    for i in 1..=last {
        let g = Grant { addr: IpAddr::V4(grant_addr(i)), service: ssh(), timeout: long };
        let t = Instant::now();
        drv.grant(&[g])?;
        let dt = t.elapsed();
        if checkpoints.iter().any(|&n| i + WINDOW >= n && i <= n + WINDOW) {
            adds.push((i, dt));
        }
        if checkpoints.contains(&i) {
            let mut rv = Vec::new();
            for _ in 0..REVOKES {
                let t = Instant::now();
                drv.revoke(&[(g.addr, g.service)])?;
                rv.push(t.elapsed());
                drv.grant(&[g])?;
            }
            revokes.push((i, rv));
        }
        if i % 20_000 == 0 {
            env.say(format!("grants: {} live", thousands(i)));
        }
    }
    let fill_rate = last as f64 / total_start.elapsed().as_secs_f64();
    let live = drv.list()?.len();
    if live < last as usize {
        bail!("expected {last} live grants, the set holds {live}");
    }
    let conn_n = conn_median(env)?;
    drv.teardown()?;
    let points = checkpoints
        .iter()
        .map(|&n| {
            let a: Vec<Duration> =
                adds.iter().filter(|(i, _)| *i + WINDOW >= n && *i <= n + WINDOW).map(|(_, d)| *d).collect();
            let r = revokes.iter().find(|(i, _)| *i == n).map(|(_, v)| p50_secs(v)).unwrap_or(f64::NAN);
            Point { n, add: p50_secs(&a), revoke: r }
        })
        .collect();
    Ok((points, conn0, conn_n, fill_rate))
}

/// Run a command on a thread inside the server namespace (no `ip netns exec` in the
/// timing: a fork+exec of the binary, as knockd and fwknopd do), returning its wall time.
fn timed(env: &Env, args: &[&str], stdin: Option<String>) -> anyhow::Result<Duration> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    env.lab.in_ns(&env.lab.server, move || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let mut c = Command::new(&args[0])
            .args(&args[1..])
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", args[0]))?;
        if let (Some(text), Some(mut w)) = (stdin, c.stdin.take()) {
            w.write_all(text.as_bytes())?;
        }
        let out = c.wait_with_output()?;
        let dt = t.elapsed();
        if !out.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(dt)
    })?
}

fn rule(a: Ipv4Addr) -> Vec<String> {
    ["-s", &format!("{a}/32"), "-p", "tcp", "-m", "tcp", "--dport", &PROTECTED.to_string(), "-j", "ACCEPT"]
        .map(String::from)
        .to_vec()
}

struct IptPoint {
    n: u64,
    load: Duration,
    add: f64,
    del: f64,
}

fn iptables_part(env: &mut Env, checkpoints: &[u64]) -> anyhow::Result<(Vec<IptPoint>, f64, f64)> {
    env.reset_firewall("")?;
    let c = lab::CLIENT4;
    let p = PROTECTED.to_string();
    for args in [
        vec!["iptables", "-w", "-N", "BENCH"],
        vec![
            "iptables",
            "-w",
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ],
        vec!["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", &p, "-j", "BENCH"],
        vec!["iptables", "-w", "-A", "INPUT", "-s", c, "-p", "tcp", "--dport", &p, "-j", "ACCEPT"],
        vec!["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", &p, "-j", "DROP"],
    ] {
        timed(env, &args, None)?;
    }
    let conn0 = conn_median(env)?;
    let mut have: u64 = 0;
    let mut extra: u64 = 200_000; // addresses for the timed -A/-D, beyond the bulk ones
    let mut points = Vec::new();
    for &n in checkpoints {
        let mut text = String::from("*filter\n");
        while have < n {
            have += 1;
            text.push_str("-A BENCH ");
            text.push_str(&rule(grant_addr(have)).join(" "));
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        let load = timed(env, &["iptables-restore", "-w", "--noflush"], Some(text))?;
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for _ in 0..IPT_OPS {
            extra += 1;
            let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 128, 0)) + (extra - 200_000) as u32);
            let mut args = vec!["iptables".to_string(), "-w".into(), "-A".into(), "BENCH".into()];
            args.extend(rule(a));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            adds.push(timed(env, &refs, None)?);
            args[2] = "-D".into();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            dels.push(timed(env, &refs, None)?);
        }
        env.say(format!("iptables: {} rules", thousands(n)));
        points.push(IptPoint { n, load, add: p50_secs(&adds), del: p50_secs(&dels) });
    }
    let conn_n = conn_median(env)?;
    env.reset_firewall("")?;
    Ok((points, conn0, conn_n))
}

/// Run scenario 3 up to `max_n` grants (checkpoints 1, 1k, 10k, 100k that fit).
pub fn run(env: &mut Env, max_n: u64, report: &mut Report) -> anyhow::Result<()> {
    let checkpoints: Vec<u64> = [1, 1_000, 10_000, 100_000].into_iter().filter(|&n| n <= max_n).collect();
    env.say(format!("grants: nftables driver up to {}", thousands(max_n)));
    report.settle();
    let (nft, nconn0, nconn_n, fill) = nft_part(env, max_n, &checkpoints)?;
    env.say("grants: iptables baseline");
    report.settle();
    let (ipt, iconn0, iconn_n) = iptables_part(env, &checkpoints)?;
    let mut t = Table::new(
        "3. Grant scale: time to add the N-th grant and to revoke one (p50)",
        &[
            "N live",
            "portcullis nft add",
            "portcullis nft revoke",
            "iptables -A (fork+exec)",
            "iptables -D (fork+exec)",
            "iptables-restore bulk load to N",
            "add: iptables ÷ portcullis",
        ],
    );
    for (a, b) in nft.iter().zip(&ipt) {
        debug_assert_eq!(a.n, b.n);
        t.row(vec![
            thousands(a.n.max(b.n)),
            fmt_us(a.add),
            fmt_us(a.revoke),
            fmt_us(b.add),
            fmt_us(b.del),
            format!("{:.2} s", b.load.as_secs_f64()),
            fmt_ratio(Some(b.add), Some(a.add)),
        ]);
    }
    t.note(format!(
        "portcullis: `NftDriver::grant` / `revoke` called directly on the server namespace's netlink socket, one \
         grant (one atomic batch) per call, tcp/22 for 198.18.0.0/15 addresses, 1 h timeouts; add = p50 of the {} \
         grants numbered N−{WINDOW}..N+{WINDOW}; revoke = p50 of {REVOKES} revokes at N. Filling the set ran at {} \
         grants/s. iptables rows are NOT portcullis (it has no iptables driver): they measure iptables-nft itself \
         as knockd's start_command and fwknopd do it, one fork+exec of `iptables` per rule in a chain already \
         holding N rules (bulk-loaded with iptables-restore), p50 of {IPT_OPS}.",
        2 * WINDOW + 1,
        thousands(fill.round() as u64)
    ));
    report.tables.push(t);

    let last = checkpoints.last().copied().unwrap_or(1);
    let mut c = Table::new(
        "3b. Per-connection cost at the protected port with N grants live (TCP handshake from a granted source, median of 30)",
        &["firewall", "N = 0", &format!("N = {}", thousands(last)), "ratio"],
    );
    c.row(vec![
        "portcullis nft sets".into(),
        fmt_us(nconn0 / 1e3),
        fmt_us(nconn_n / 1e3),
        fmt_ratio(Some(nconn_n), Some(nconn0)),
    ]);
    c.row(vec![
        "iptables chain (baseline, granted rule after N others)".into(),
        fmt_us(iconn0 / 1e3),
        fmt_us(iconn_n / 1e3),
        fmt_ratio(Some(iconn_n), Some(iconn0)),
    ]);
    c.note("N = 0 means only the probing client's own grant/rule. Handshake = connect() to SYN-ACK processed, veth RTT included.");
    report.tables.push(c);

    let first = nft.first().map_or(f64::NAN, |p| p.add);
    let lastp = nft.last().map_or(f64::NAN, |p| p.add);
    report.check(
        &format!("adding the {}th grant as fast as the first (≤ 1.5×)", thousands(last)),
        format!("{} vs {} ({})", fmt_us(lastp), fmt_us(first), fmt_ratio(Some(lastp), Some(first))),
        lastp <= first * 1.5,
    );
    Ok(())
}
