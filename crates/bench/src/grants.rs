//! Scenario 3: grant scale. portcullis' nftables driver and its iptables driver
//! (iptables-nft and, if the kernel has x_tables, iptables-legacy) used directly (add
//! the N-th grant, revoke one, per-connection cost with N grants live), and raw
//! `iptables` rule insertion by fork+exec as knockd's start_command and fwknopd do it
//! (the knockd/fwknopd baseline).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use portcullis_daemon::config::IptablesVariant;
use portcullis_daemon::firewall::iptables::IptablesDriver;
use portcullis_daemon::firewall::nft::NftDriver;
use portcullis_daemon::firewall::{FirewallDriver, Grant, Plan};
use portcullis_daemon::lab::{self, Baseline};
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
/// Grants added (then revoked) one by one at each checkpoint, iptables driver.
const IPT_DRV_OPS: usize = 5;
/// The iptables driver stops at the checkpoint where one add or revoke took longer.
const IPT_DRV_SLOW: Duration = Duration::from_secs(5);
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
    drv.setup(&Plan { protected: vec![ssh()], max_grants: 262_144, ..Plan::default() })?;
    let long = Duration::from_secs(3600);
    drv.grant(&[Grant::host(client(), ssh(), long)])?;
    let conn0 = conn_median(env)?;
    let mut adds: Vec<(u64, Duration)> = Vec::new();
    let mut revokes: Vec<(u64, Vec<Duration>)> = Vec::new();
    let total_start = Instant::now();
    let last = max_n + WINDOW;
    for i in 1..=last {
        let g = Grant::host(IpAddr::V4(grant_addr(i)), ssh(), long);
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
                drv.revoke(&[g.key()])?;
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
    // The knockd/fwknopd set-up: their rules in front of the baseline's DROP, the N
    // grants in chain BENCH, then the client's own rule, checked last.
    env.lab.iptables_baseline(&env.lab.server, Baseline::DropTcp(&[PROTECTED]))?;
    for args in [
        vec!["iptables", "-w", "-N", "BENCH"],
        vec!["iptables", "-w", "-I", "INPUT", "2", "-p", "tcp", "--dport", &p, "-j", "BENCH"],
        vec!["iptables", "-w", "-I", "INPUT", "3", "-s", c, "-p", "tcp", "--dport", &p, "-j", "ACCEPT"],
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

/// Results of the iptables driver at one checkpoint.
struct DrvPoint {
    n: u64,
    /// One `grant()` call filling the ipset from the previous checkpoint to N.
    load: Duration,
    /// `IptablesDriver::setup` with N grants live (what a daemon restart costs).
    setup: Duration,
    add: f64,
    revoke: f64,
}

/// What the iptables driver part measured.
struct DrvRun {
    label: &'static str,
    points: Vec<DrvPoint>,
    conn0: f64,
    conn_n: Option<f64>,
    /// Why it stopped before the last checkpoint, if it did.
    stopped: Option<String>,
}

/// Run `f` on the driver on a thread inside the server namespace (the driver forks
/// `iptables-*-restore`/`-save`, which inherit the thread's namespace).
fn with_drv<T: Send + 'static>(
    env: &Env,
    mut drv: IptablesDriver,
    f: impl FnOnce(&mut IptablesDriver) -> T + Send + 'static,
) -> anyhow::Result<(IptablesDriver, T)> {
    env.lab.in_ns(&env.lab.server, move || {
        let r = f(&mut drv);
        (drv, r)
    })
}

/// portcullis' `IptablesDriver` used directly: for each checkpoint N, the ipset is
/// filled to N grants with one `grant()` call, the driver re-installs (`setup`, as
/// after a restart: the set is rebuilt and swapped in), then `IPT_DRV_OPS` grants are
/// added one per `grant()` call and revoked one per `revoke()` call. Stops early past
/// `deadline` or once an operation is slower than `IPT_DRV_SLOW`.
fn ipt_driver_part(
    env: &mut Env,
    variant: IptablesVariant,
    checkpoints: &[u64],
    deadline: Instant,
) -> anyhow::Result<DrvRun> {
    let label = match variant {
        IptablesVariant::Legacy => "iptables-legacy",
        _ => "iptables-nft",
    };
    if variant == IptablesVariant::Legacy {
        env.mark_legacy();
    }
    env.reset_firewall("")?;
    let drv = env.lab.in_ns(&env.lab.server, move || IptablesDriver::new(variant))??;
    let plan = Plan { protected: vec![ssh()], max_grants: 262_144, ..Plan::default() };
    let long = Duration::from_secs(3600);
    let p2 = plan.clone();
    let (drv, r) = with_drv(env, drv, move |d| {
        d.setup(&p2)?;
        d.grant(&[Grant::host(client(), ssh(), long)])
    })?;
    r?;
    let conn0 = conn_median(env)?;
    let mut drv = Some(drv);
    let mut points = Vec::new();
    let mut stopped = None;
    let mut next_extra: u64 = 110_000; // timed grants: 198.19.173.240 onwards, not in the bulk range
    let mut filled: u64 = 0;
    for &n in checkpoints {
        if Instant::now() > deadline {
            stopped = Some(format!("time budget spent before N = {}", thousands(n)));
            break;
        }
        let fill: Vec<Grant> =
            (filled + 1..=n).map(|i| Grant::host(IpAddr::V4(grant_addr(i)), ssh(), long)).collect();
        filled = n;
        let p2 = plan.clone();
        let d = drv.take().context("driver")?;
        let (d, r) = with_drv(env, d, move |d| -> anyhow::Result<(Duration, Duration, usize)> {
            let t = Instant::now();
            d.grant(&fill)?;
            let load = t.elapsed();
            let t = Instant::now();
            d.setup(&p2)?;
            let setup = t.elapsed();
            Ok((load, setup, d.list()?.len()))
        })?;
        let (load, setup, live) = r?;
        if live as u64 != n + 1 {
            bail!("{label}: expected {} live grants after setup, the driver holds {live}", n + 1);
        }
        let batch: Vec<Grant> = (0..IPT_DRV_OPS as u64)
            .map(|k| Grant::host(IpAddr::V4(grant_addr(next_extra + k)), ssh(), long))
            .collect();
        next_extra += IPT_DRV_OPS as u64;
        let (d, r) = with_drv(env, d, move |d| -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
            let (mut adds, mut revs) = (Vec::new(), Vec::new());
            for g in &batch {
                let t = Instant::now();
                d.grant(std::slice::from_ref(g))?;
                adds.push(t.elapsed());
            }
            for g in &batch {
                let t = Instant::now();
                d.revoke(&[g.key()])?;
                revs.push(t.elapsed());
            }
            Ok((adds, revs))
        })?;
        drv = Some(d);
        let (adds, revs) = r?;
        env.say(format!(
            "grants: {label} driver, {} rules: add {} / revoke {}",
            thousands(n),
            fmt_us(p50_secs(&adds)),
            fmt_us(p50_secs(&revs))
        ));
        let slow = adds.iter().chain(&revs).any(|d| *d > IPT_DRV_SLOW);
        points.push(DrvPoint { n, load, setup, add: p50_secs(&adds), revoke: p50_secs(&revs) });
        if slow {
            stopped = Some(format!(
                "an add or revoke at N = {} took over {} s",
                thousands(n),
                IPT_DRV_SLOW.as_secs()
            ));
            break;
        }
    }
    let conn_n = if points.is_empty() { None } else { Some(conn_median(env)?) };
    if let Some(d) = drv.take() {
        let (_, r) = with_drv(env, d, |d| d.teardown())?;
        r?;
    }
    env.reset_firewall("")?;
    Ok(DrvRun { label, points, conn0, conn_n, stopped })
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
    let mut drv_runs: Vec<DrvRun> = Vec::new();
    for (variant, budget) in [(IptablesVariant::Nft, 150), (IptablesVariant::Legacy, 60)] {
        env.say(format!("grants: portcullis iptables driver ({variant:?})"));
        report.settle();
        match ipt_driver_part(env, variant, &checkpoints, Instant::now() + Duration::from_secs(budget)) {
            Ok(r) => drv_runs.push(r),
            // iptables-legacy needs x_tables in the kernel: optional.
            Err(e) if variant == IptablesVariant::Legacy => {
                env.say(format!("grants: iptables-legacy driver skipped: {e:#}"));
                let _ = env.reset_firewall("");
            }
            Err(e) => return Err(e),
        }
    }
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
         grants/s. The `iptables -A/-D` columns are the knockd/fwknopd way, not portcullis: iptables-nft \
         itself as knockd's start_command and fwknopd do it, one fork+exec of `iptables` per rule in a chain \
         already holding N rules (bulk-loaded with iptables-restore), p50 of {IPT_OPS}. portcullis' own iptables \
         driver: table 3c.",
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
    for r in &drv_runs {
        let last_n = r.points.last().map_or(0, |p| p.n);
        c.row(vec![
            format!("portcullis {} driver (ipset, N = {} grants live)", r.label, thousands(last_n)),
            fmt_us(r.conn0 / 1e3),
            r.conn_n.map_or("–".into(), |v| fmt_us(v / 1e3)),
            fmt_ratio(r.conn_n, Some(r.conn0)),
        ]);
    }
    c.note("N = 0 means only the probing client's own grant/rule. Handshake = connect() to SYN-ACK processed, veth RTT included.");
    report.tables.push(c);

    if !drv_runs.is_empty() {
        let mut d = Table::new(
            "3c. portcullis iptables driver: time to add the N-th grant and to revoke one (p50)",
            &[
                "driver",
                "N live",
                "add",
                "revoke",
                "add ÷ nft add",
                "revoke ÷ nft revoke",
                "bulk load to N",
                "setup with N live",
            ],
        );
        for r in &drv_runs {
            for p in &nft {
                let mut row = vec![format!("portcullis {}", r.label), thousands(p.n)];
                match r.points.iter().find(|q| q.n == p.n) {
                    Some(q) => row.extend([
                        fmt_us(q.add),
                        fmt_us(q.revoke),
                        fmt_ratio(Some(q.add), Some(p.add)),
                        fmt_ratio(Some(q.revoke), Some(p.revoke)),
                        format!("{:.2} s", q.load.as_secs_f64()),
                        format!("{:.2} s", q.setup.as_secs_f64()),
                    ]),
                    None => row.extend(std::iter::repeat_n("not run".to_string(), 6)),
                }
                d.row(row);
            }
        }
        let stops: Vec<String> = drv_runs
            .iter()
            .filter_map(|r| r.stopped.as_ref().map(|s| format!("{}: stopped, {s}", r.label)))
            .collect();
        d.note(format!(
            "`portcullis_daemon::firewall::iptables::IptablesDriver` used directly from a thread in the server \
             namespace, as portcullisd runs it with `backend = \"iptables-nft\"` / `\"iptables-legacy\"`: \
             grants in the `hash:ip,port` ipset `portcullis4` (kernel timeouts), matched by one rule per \
             protected service in chain PORTCULLIS; a `grant()`/`revoke()` is one ipset netlink round trip, no \
             fork. At each N the set is first filled to N with one `grant()` call (\"bulk load\"), then the \
             driver re-installs (`setup`: iptables-save, dump the set, rebuild it into a twin set, swap, \
             iptables-restore of the chain, i.e. what a daemon restart with N grants costs), then {IPT_DRV_OPS} \
             grants are added one per call and revoked one per call; p50 of {IPT_DRV_OPS}. Ratios divide by the \
             nftables driver's figure at the same N (table 3). Budget: {} s for iptables-nft, {} s for \
             iptables-legacy; an add or revoke over {} s stops the series.{}",
            150,
            60,
            IPT_DRV_SLOW.as_secs(),
            if stops.is_empty() { String::new() } else { format!(" {}.", stops.join("; ")) }
        ));
        report.tables.push(d);
    }

    let first = nft.first().map_or(f64::NAN, |p| p.add);
    let lastp = nft.last().map_or(f64::NAN, |p| p.add);
    report.check(
        &format!("adding the {}th grant as fast as the first (≤ 1.5×)", thousands(last)),
        format!("{} vs {} ({})", fmt_us(lastp), fmt_us(first), fmt_ratio(Some(lastp), Some(first))),
        lastp <= first * 1.5,
    );
    for r in &drv_runs {
        if let (Some(f), Some(l)) = (r.points.first(), r.points.last()) {
            report.check(
                &format!("same target with portcullis' {} driver (ipset)", r.label),
                format!(
                    "{} grant: {} vs {} ({}); revoke {} vs {}",
                    thousands(l.n),
                    fmt_us(l.add),
                    fmt_us(f.add),
                    fmt_ratio(Some(l.add), Some(f.add)),
                    fmt_us(l.revoke),
                    fmt_us(f.revoke)
                ),
                l.add <= f.add * 1.5,
            );
        }
    }
    Ok(())
}
