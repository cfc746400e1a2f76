//! Scenario 7: fleet mode. Three gateways running portcullisd with `[fleet]` on one
//! throwaway PostgreSQL cluster ([`env`]), one client:
//!
//! - **fan-out**: a fleet-scoped native SPA packet to gw1 → the port reachable from
//!   the client on gw2 and gw3 (the slower of the two), median and p99;
//! - **burst**: 10,000 fleet grants written to the database as one member (`ops`, in
//!   transactions of [`BATCH`], as a node's publisher does) → every grant in every
//!   gateway's kernel set, one row each, applied once each (the gateways' logs), and
//!   closed on every node at its absolute expiry;
//! - **replay-check cost**: SPA → port reachable on gw1, the same packet shape from a
//!   local-scope user and from a fleet-scoped one (whose accept waits for the fleet
//!   replay claim in the database), interleaved in the same run.
//!
//! Bounded: every wait has a limit, trials are paced (the native SPA crypto budget is
//! 50 packets a second per /24), the burst's grants expire by themselves.

pub mod env;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use portcullis_daemon::fleet::{shared, unix_ms};
use portcullis_proto::{Proto, Service};

use crate::probe;
use crate::report::Report;
use crate::stats::{ms, percentile_sorted, summarize};
use crate::table::{fmt_ms, thousands, Table};
use env::{FleetLab, User, OPS, PROTECTED, SPA_PORT};

/// Rows per transaction when the burst is written.
pub const BATCH: usize = 500;
/// Time between two trials (keeps every /24 of trial sources under its SPA budget).
const PACE: Duration = Duration::from_millis(30);
/// Longest wait for a port to open in one trial.
const TRIAL_LIMIT: Duration = Duration::from_secs(2);
/// Probe interval while waiting for a port.
const PROBE_EVERY: Duration = Duration::from_micros(200);
/// Lifetime of every burst grant: the burst must be applied everywhere well before.
const BURST_LIFE: Duration = Duration::from_secs(45);

/// Sizes of one run.
pub struct Sizes {
    /// Fan-out trials.
    pub fanout: usize,
    /// Trials per user in the replay-check comparison.
    pub accept: usize,
    /// Grants in the burst.
    pub burst: u32,
}

/// Run the three measurements and add their table and checks to `report`.
pub fn run(portcullisd: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let pool = u32::try_from(sizes.fanout + 2 * sizes.accept + 10)?;
    eprintln!("[bench] fleet: PostgreSQL cluster, 3 gateways, 1 client");
    let mut lab = FleetLab::new(portcullisd, pool)?;
    let mut t = Table::new(
        "Fleet mode: 3 gateways, one PostgreSQL (unix socket, fsync off)",
        &["measure", "n", "median ms", "p99 ms", "max ms", "load (1 min)"],
    );

    // Warm-up: one fleet grant end to end (connections, caches).
    fanout(&mut lab)?;
    report.settle();
    let load = loadavg();
    eprintln!("[bench] fleet: {} fan-out trials", sizes.fanout);
    let mut fan = Vec::new();
    let mut failed = 0;
    for _ in 0..sizes.fanout {
        match fanout(&mut lab)? {
            Some(d) => fan.push(ms(d)),
            None => failed += 1,
        }
        std::thread::sleep(PACE);
    }
    let p99 = row(&mut t, "SPA to gw1 → port reachable on gw2 **and** gw3 (fleet user)", &fan, failed, &load);
    report.check(
        "fleet grant → applied on all nodes, p99 ≤ 50 ms",
        format!("{} ms ({} trials, {failed} failed)", fmt_ms(p99), fan.len()),
        p99 <= 50.0 && failed == 0,
    );

    report.settle();
    let load = loadavg();
    eprintln!("[bench] fleet: SPA accept on gw1, local vs fleet user, {} each", sizes.accept);
    let (mut local, mut fleet, mut failed) = (Vec::new(), Vec::new(), [0, 0]);
    for _ in 0..sizes.accept {
        for (user, out, k) in [(User::Local, &mut local, 0), (User::Fleet, &mut fleet, 1)] {
            match accept(&mut lab, user)? {
                Some(d) => out.push(ms(d)),
                None => failed[k] += 1,
            }
            std::thread::sleep(PACE);
        }
    }
    row(&mut t, "SPA to gw1 → port reachable on gw1, local user", &local, failed[0], &load);
    row(
        &mut t,
        "SPA to gw1 → port reachable on gw1, fleet user (replay claim in the database)",
        &fleet,
        failed[1],
        &load,
    );
    let med = |v: &[f64]| summarize(v).map_or(f64::NAN, |s| s.median);
    t.note(format!(
        "- fleet replay check adds **{} ms** to the median SPA accept (fleet − local, same run, interleaved)",
        fmt_ms(med(&fleet) - med(&local))
    ));

    report.settle();
    let b = burst(&mut lab, sizes.burst)?;
    t.note(b.note());
    report.check(
        "10,000 fleet grants in a burst: all applied on every node, none lost or duplicated",
        b.measured(),
        b.ok(),
    );
    report.check(
        "burst grants closed on every node at their absolute expiry",
        b.expiry(),
        b.closed_on_time(),
    );
    t.note(
        "- fan-out: the time from the SPA datagram leaving the client to the first SYN answered by the later of \
         gw2 and gw3 (probes every 0.2 ms from the granted source); trials paced 30 ms apart",
    );
    report.tables.push(t);
    for g in &mut lab.gws {
        if !g.alive() {
            bail!("{} exited during the run; log:\n{}", g.node, g.log_text());
        }
    }
    Ok(())
}

/// The 1-minute load average (`/proc/loadavg`), as text.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Add a row; returns the p99.
fn row(t: &mut Table, what: &str, v: &[f64], failed: usize, load: &str) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let p99 = percentile_sorted(&s, 99.0).unwrap_or(f64::NAN);
    let (median, max) = summarize(v).map_or((f64::NAN, f64::NAN), |x| (x.median, x.max));
    let n = if failed == 0 { v.len().to_string() } else { format!("{} (+{failed} never opened)", v.len()) };
    t.row(vec![what.into(), n, fmt_ms(median), fmt_ms(p99), fmt_ms(max), format!("{load} → {}", loadavg())]);
    p99
}

/// One SPA datagram from a fresh source to gw1; how long until the port answers on
/// each gateway in `on` (indices), `None` for one that never did.
fn trial(lab: &mut FleetLab, user: User, on: &[usize]) -> anyhow::Result<Vec<Option<Duration>>> {
    let src = lab.fresh_source()?;
    let packet = lab.packet(user, src, 60)?;
    let client = lab.client.clone();
    let mut starts = Vec::new();
    let mut probers = Vec::new();
    for &i in on {
        let to = SocketAddr::new(lab.gws[i].addr, PROTECTED);
        let (tx, rx) = mpsc::channel::<Instant>();
        starts.push(tx);
        let ns = client.clone();
        probers.push(std::thread::spawn(move || -> anyhow::Result<Option<Duration>> {
            env::in_ns(&ns, move || {
                let t0 = rx.recv().context("no start")?;
                Ok(probe::await_open(src, to, t0, TRIAL_LIMIT, PROBE_EVERY)?)
            })?
        }));
    }
    let dst = SocketAddr::new(lab.gws[0].addr, SPA_PORT);
    let t0 = env::in_ns(&client, move || probe::send_udp(src, dst, &packet))??;
    for tx in starts {
        let _ = tx.send(t0);
    }
    probers.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("prober panicked"))?).collect()
}

/// Fan-out: the later of gw2 and gw3.
fn fanout(lab: &mut FleetLab) -> anyhow::Result<Option<Duration>> {
    let r = trial(lab, User::Fleet, &[1, 2])?;
    Ok(match (r[0], r[1]) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    })
}

/// Accept on gw1 itself.
fn accept(lab: &mut FleetLab, user: User) -> anyhow::Result<Option<Duration>> {
    Ok(trial(lab, user, &[0])?[0])
}

/// The i-th burst grantee: 10.20.0.0 onwards (nothing in the lab owns them).
fn burst_addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 20, 0, 0)) + i))
}

fn in_burst(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v) if v.octets()[..2] == [10, 20])
}

/// What the burst did.
struct Burst {
    n: u32,
    written: Duration,
    /// Per gateway: time until its kernel held all `n`, or what it held at the limit.
    applied: Vec<Result<Duration, usize>>,
    rows: i64,
    distinct: i64,
    /// Per gateway: how many times its log says it applied one of them.
    logged: Vec<usize>,
    /// Per gateway: warnings and errors in its log over the whole run.
    complaints: Vec<usize>,
    /// Per gateway: held 2 s before expiry.
    before: Vec<usize>,
    /// Time after the expiry until no node held any (`None`: some still held at +3 s).
    closed: Option<Duration>,
    load: (String, String),
}

impl Burst {
    fn ok(&self) -> bool {
        let n = i64::from(self.n);
        let all = usize::try_from(self.n).unwrap_or(usize::MAX);
        self.applied.iter().all(Result::is_ok)
            && self.rows == n
            && self.distinct == n
            && self.logged.iter().all(|&l| l == all)
    }

    fn closed_on_time(&self) -> bool {
        let all = usize::try_from(self.n).unwrap_or(usize::MAX);
        self.before.iter().all(|&b| b == all) && self.closed.is_some()
    }

    fn measured(&self) -> String {
        let per: Vec<String> = self
            .applied
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                Ok(d) => format!("gw{}: all after {:.2} s", i + 1, d.as_secs_f64()),
                Err(held) => format!("gw{}: only {} held", i + 1, thousands(*held as u64)),
            })
            .collect();
        format!(
            "{} (kernel sets read every 0.2 s); {} rows ({} distinct); applied per node (log) {:?}",
            per.join(", "),
            thousands(u64::try_from(self.rows).unwrap_or(0)),
            thousands(u64::try_from(self.distinct).unwrap_or(0)),
            self.logged
        )
    }

    fn expiry(&self) -> String {
        let closed = self.closed.map_or("some still open 3 s after".into(), |d| {
            format!("none left {:.2} s after (poll every 0.1 s)", d.as_secs_f64())
        });
        format!("2 s before expiry every node held {:?}; {closed}", self.before)
    }

    fn note(&self) -> String {
        format!(
            "- burst: {} fleet grants written as member `{OPS}` in transactions of {BATCH} in {:.2} s (load {} → {}); {}; {}; \
             warnings + errors in each gateway's log over the run: {:?}",
            thousands(u64::from(self.n)),
            self.written.as_secs_f64(),
            self.load.0,
            self.load.1,
            self.measured(),
            self.expiry(),
            self.complaints
        )
    }
}

fn held(lab: &FleetLab, i: usize) -> anyhow::Result<usize> {
    Ok(lab.kernel_grants(i)?.iter().filter(|g| in_burst(g.addr)).count())
}

fn burst(lab: &mut FleetLab, n: u32) -> anyhow::Result<Burst> {
    eprintln!("[bench] fleet: burst of {n} grants");
    let load0 = loadavg();
    let life = i64::try_from(BURST_LIFE.as_millis())?;
    let ssh = [Service { proto: Proto::Tcp, port: PROTECTED }];
    let mut c = lab.pg.client()?;
    let expires_at = unix_ms() + life;
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let end = n.min(i + u32::try_from(BATCH)?);
        let batch: Vec<shared::NewGrant<'_>> = (i..end)
            .map(|k| shared::NewGrant {
                addr: burst_addr(k),
                services: &ssh,
                expires_at,
                origin: "api:bench",
            })
            .collect();
        shared::publish_batch(&mut c, OPS, &batch, unix_ms())?;
        i = end;
    }
    let written = t0.elapsed();
    let all = usize::try_from(n)?;
    let limit = t0 + BURST_LIFE - Duration::from_secs(5);
    let mut applied: Vec<Option<Result<Duration, usize>>> = vec![None; lab.gws.len()];
    while applied.iter().any(Option::is_none) {
        let late = Instant::now() >= limit;
        for (k, slot) in applied.iter_mut().enumerate() {
            if slot.is_none() {
                let h = held(lab, k)?;
                if h == all {
                    *slot = Some(Ok(t0.elapsed()));
                } else if late {
                    *slot = Some(Err(h));
                }
            }
        }
        // Each poll dumps three sets of up to 10,000 elements: not too often.
        std::thread::sleep(Duration::from_millis(200));
    }
    let applied: Vec<Result<Duration, usize>> = applied.into_iter().flatten().collect();
    let load1 = loadavg();
    let r =
        c.query_one("SELECT COUNT(*), COUNT(DISTINCT addr) FROM fleet_grants WHERE node = $1", &[&OPS])?;
    let (rows, distinct): (i64, i64) = (r.get(0), r.get(1));
    let needle = format!("by fleet node {OPS}");
    let logged = lab.gws.iter().map(|g| g.log_text().matches(&needle).count()).collect();
    let complaints = lab
        .gws
        .iter()
        .map(|g| g.log_text().lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).count())
        .collect();

    let until = |ms_before: i64| {
        Duration::from_millis(u64::try_from(expires_at - ms_before - unix_ms()).unwrap_or(0))
    };
    std::thread::sleep(until(2000));
    let before = (0..lab.gws.len()).map(|k| held(lab, k)).collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::sleep(until(0));
    let at = Instant::now();
    let mut closed = None;
    while at.elapsed() < Duration::from_secs(3) {
        if (0..lab.gws.len())
            .map(|k| held(lab, k))
            .collect::<anyhow::Result<Vec<_>>>()?
            .iter()
            .all(|&h| h == 0)
        {
            closed = Some(at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Burst {
        n,
        written,
        applied,
        rows,
        distinct,
        logged,
        complaints,
        before,
        closed,
        load: (load0, load1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst(applied: Vec<Result<Duration, usize>>, rows: i64, logged: Vec<usize>) -> Burst {
        Burst {
            n: 10,
            written: Duration::ZERO,
            applied,
            rows,
            distinct: rows,
            logged,
            complaints: vec![0; 3],
            before: vec![10; 3],
            closed: Some(Duration::ZERO),
            load: (String::new(), String::new()),
        }
    }

    #[test]
    fn burst_verdict_catches_loss_and_duplicates() {
        let all = || vec![Ok(Duration::from_secs(1)); 3];
        assert!(burst(all(), 10, vec![10; 3]).ok());
        assert!(!burst(vec![Ok(Duration::ZERO), Err(9), Ok(Duration::ZERO)], 10, vec![10; 3]).ok(), "lost");
        assert!(!burst(all(), 11, vec![10; 3]).ok(), "duplicate row");
        assert!(!burst(all(), 10, vec![10, 11, 10]).ok(), "applied twice");
        let mut late = burst(all(), 10, vec![10; 3]);
        late.closed = None;
        assert!(!late.closed_on_time());
        late.closed = Some(Duration::ZERO);
        late.before = vec![10, 9, 10];
        assert!(!late.closed_on_time(), "closed early");
    }

    #[test]
    fn burst_addresses_are_apart_from_the_lab() {
        assert_eq!(burst_addr(0), IpAddr::V4(Ipv4Addr::new(10, 20, 0, 0)));
        assert_eq!(burst_addr(9_999), IpAddr::V4(Ipv4Addr::new(10, 20, 39, 15)));
        assert!(in_burst(burst_addr(9_999)));
        assert!(!in_burst("198.19.4.1".parse().unwrap()) && !in_burst("192.0.2.2".parse().unwrap()));
    }
}
