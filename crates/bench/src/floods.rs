//! Scenario 2 (flood resilience) and the flood runner shared with scenario 5.
//!
//! Per case: a fresh daemon, then the attacker floods while a legitimate client makes
//! one attempt per second from a fresh source (2.5 s each to get the port open), then
//! two attempts right after the flood, then RSS "after".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::env::{self, Daemon, Env, SEQUENCE, SEQ_TIMEOUT_S, SPA_PORT};
use crate::flood::{self, Kind, Ports, Sources, Spec};
use crate::probe::FLOOD_PROBE_EVERY;
use crate::procmon::{self, Sampler};
use crate::report::Report;
use crate::stats::{ms, summarize};
use crate::table::{fmt_ms, thousands, Table};
use portcullis_proto::spa::native;

/// The grant flood: every spoofed source completes the door's (known) sequence.
pub const GRANT_FLOOD: &str =
    "grant flood: the known sequence 7000,8000,9000 completed by each of 50,000 spoofed sources (196 /24s)";
/// The grant flood's sources: 198.18.0.0 onwards, 50,000 of them.
const GRANT_FLOOD_SOURCES: Sources =
    Sources::V4 { base: std::net::Ipv4Addr::new(198, 18, 0, 0), count: 50_000 };

/// Time a legitimate attempt has to succeed.
pub const LEGIT_LIMIT: Duration = Duration::from_millis(2500);
/// Hard cap on packets of a full-speed flood.
const FULL_SPEED_CAP: u64 = 20_000_000;

/// What one flood case measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Attacker: packets sent per second.
    pub pps: f64,
    /// Attacker: packets sent.
    pub sent: u64,
    /// Packets per second the server's interface received during the flood.
    pub rx_pps: f64,
    /// Daemon CPU% (100 = one core) average and max over 100 ms samples.
    pub cpu: (f64, f64),
    /// RSS KiB before the flood, peak, after.
    pub rss: (u64, u64, u64),
    /// Seconds after the flood when "after" was taken.
    pub after_s: f64,
    /// Legit attempts during the flood that opened the port, latencies in ms.
    pub legit: Vec<Option<f64>>,
    /// Legit attempts right after the flood: (ok, tried).
    pub after: (usize, usize),
    /// Packets dropped by full kernel input backlogs during the case (machine-wide).
    pub backlog_drops: u64,
}

impl Outcome {
    /// `x/n` for the attempts during the flood.
    pub fn legit_ok(&self) -> usize {
        self.legit.iter().filter(|l| l.is_some()).count()
    }

    /// (median, max) latency of the successful attempts.
    pub fn legit_lat(&self) -> (Option<f64>, Option<f64>) {
        let v: Vec<f64> = self.legit.iter().flatten().copied().collect();
        summarize(&v).map_or((None, None), |s| (Some(s.median), Some(s.max)))
    }
}

/// Run one flood case against a freshly started `d`.
pub fn run_case(
    env: &mut Env,
    d: Daemon,
    spec: Spec,
    attempts: usize,
    report: &mut Report,
) -> anyhow::Result<Outcome> {
    report.settle();
    env.pin_daemon = true;
    env.pin_client = false;
    let r = env.start(d)?;
    let sampler = Sampler::start(r.pid);
    std::thread::sleep(Duration::from_millis(500));
    let before = procmon::sample(r.pid).map_or(0, |s| s.rss_kib);
    let rx0 = env.server_rx();
    let drops0 = procmon::softnet_dropped();
    let stop = Arc::new(AtomicBool::new(false));
    let t_start = Instant::now();
    let h = flood::spawn(env.atk_ns.clone(), spec, stop.clone());
    // Legit attempts; the flood stops by itself (max_time / max_packets), or at once
    // if something fails here.
    let legit_run = (|| -> anyhow::Result<(Vec<Option<f64>>, Vec<std::net::Ipv4Addr>)> {
        let mut handles = Vec::new();
        for k in 0..attempts {
            let at = t_start + Duration::from_millis(500) + Duration::from_secs(k as u64);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            handles.push(env.attempt_async(d, LEGIT_LIMIT, FLOOD_PROBE_EVERY)?);
        }
        let (mut legit, mut failed) = (Vec::new(), Vec::new());
        for (src, h) in handles {
            let r = h.join().map_err(|_| anyhow::anyhow!("attempt panicked"))??;
            if r.is_none() {
                failed.push(src);
            }
            legit.push(r.map(ms));
        }
        Ok((legit, failed))
    })();
    if legit_run.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let (legit, failed) = legit_run?;
    let fo = h.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    let t_end = fo.ended.unwrap_or_else(Instant::now);
    let rx1 = env.server_rx();
    let backlog_drops = procmon::softnet_dropped().saturating_sub(drops0);
    let mut after_ok = 0;
    for _ in 0..2 {
        if env.attempt(d, LEGIT_LIMIT)?.is_some() {
            after_ok += 1;
        }
    }
    // RSS "after": 3 s after the flood for knockd/fwknopd; for portcullisd, once its
    // housekeeping has freed the attempts (at most seq_timeout × 2 + 2 s).
    let after = if d.is_portcullisd() {
        let limit = t_end + Duration::from_secs(SEQ_TIMEOUT_S * 2 + 2);
        loop {
            let now = procmon::sample(r.pid).map_or(0, |s| s.rss_kib);
            if now <= before + before / 20 + 512 || Instant::now() >= limit {
                break now;
            }
            std::thread::sleep(procmon::PERIOD);
        }
    } else {
        std::thread::sleep((t_end + Duration::from_secs(3)).saturating_duration_since(Instant::now()));
        procmon::sample(r.pid).map_or(0, |s| s.rss_kib)
    };
    let after_s = t_end.elapsed().as_secs_f64();
    if env.verbose && !failed.is_empty() {
        let log = env.daemon_log();
        for src in &failed {
            let needle = format!("{src}:");
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
            env.say(format!("legit attempt from {src} failed; daemon log lines for it: {lines:?}"));
        }
    }
    let cpu = sampler.cpu(t_start, t_end);
    let peak = sampler.rss_peak(t_start, Instant::now()).max(after).max(before);
    drop(sampler.stop());
    env.stop(r);
    if env.verbose {
        let seen = env
            .daemon_log()
            .lines()
            .filter(|l| l.contains("stopping:"))
            .map(str::to_string)
            .collect::<Vec<_>>();
        env.say(format!(
            "flood sent {} ({:.0} pps), server rx {}, softnet backlog drops {backlog_drops}; {seen:?}",
            fo.sent,
            fo.pps(),
            rx1.saturating_sub(rx0)
        ));
    }
    let secs = fo.elapsed.as_secs_f64().max(1e-3);
    Ok(Outcome {
        pps: fo.pps(),
        sent: fo.sent,
        rx_pps: rx1.saturating_sub(rx0) as f64 / secs,
        cpu,
        rss: (before, peak, after),
        after_s,
        legit,
        after: (after_ok, 2),
        backlog_drops,
    })
}

/// Shared row cells: pps, rx pps, CPU, RSS, legit, latency, after.
pub fn cells(o: &Outcome, attempts: usize) -> Vec<String> {
    let (med, max) = o.legit_lat();
    vec![
        thousands(o.pps.round() as u64),
        format!("{} ({})", thousands(o.rx_pps.round() as u64), thousands(o.backlog_drops)),
        format!("{:.1} / {:.0}", o.cpu.0, o.cpu.1),
        format!(
            "{} / {} / {} (+{:.1} s)",
            thousands(o.rss.0),
            thousands(o.rss.1),
            thousands(o.rss.2),
            o.after_s
        ),
        format!("{}/{attempts}", o.legit_ok()),
        format!("{} / {}", med.map_or("–".into(), fmt_ms), max.map_or("–".into(), fmt_ms)),
        format!("{}/{}", o.after.0, o.after.1),
    ]
}

/// The flood table's headers.
pub const HEADERS: [&str; 9] = [
    "daemon",
    "flood",
    "attacker pps",
    "server rx pps (kernel backlog drops)",
    "daemon CPU% avg / max",
    "RSS KiB before / peak / after",
    "legit during",
    "legit latency med / max ms",
    "legit after",
];

/// Run scenario 2.
pub fn run(env: &mut Env, attempts: usize, only: Option<&str>, report: &mut Report) -> anyhow::Result<()> {
    let secs = Duration::from_secs(attempts as u64 + 2);
    let dst = env::server4();
    let mut avoid: Vec<u16> = SEQUENCE.to_vec();
    avoid.extend([env::PROTECTED, SPA_PORT]);
    let spec = |kind: Kind, ports: Ports, rate: Option<u64>| Spec {
        dst,
        kind,
        ports,
        avoid: avoid.clone(),
        sources: Sources::BENCH_V4_17,
        rate,
        max_packets: rate.map_or(FULL_SPEED_CAP, |r| r * secs.as_secs() + r),
        max_time: secs,
    };
    let syn7000 = "SYN → 7000 (1st knock port), 32,768 spoofed sources";
    // The SPA-port floods against portcullisd. fwknop-looking junk: random base64 of
    // the length `fwknop -A tcp/22` produces (passes the shape checks, costs an HMAC).
    let fwk_len = env.spa_packet(std::net::Ipv4Addr::new(198, 19, 3, 1))?.len();
    let b64_junk = Arc::new(crate::spa::base64_junk(4096, fwk_len));
    // Native packets with a valid server tag and a random body: what an attacker who
    // knows the server's public key (or copied headers off the wire) can send. Each
    // passes `precheck` and costs X25519 + AEAD, within the daemon's crypto budget.
    let tagged = Arc::new(crate::spa::tagged_native_junk(&env.native.0, &env.native.1, 1024)?);
    const NATIVE_HDR: &[u8] = &[native::MAGIC[0], native::MAGIC[1], native::MAGIC[2], native::VERSION];
    // (daemon, label, spec, counts for the "10/10 in every flood" target)
    let cases: Vec<(Daemon, String, Spec, bool)> = vec![
        (
            Daemon::Portcullisd,
            format!("{syn7000}, full speed"),
            spec(Kind::Syn, Ports::Fixed(7000), None),
            true,
        ),
        (
            Daemon::PortcullisdOneProcess,
            format!("{syn7000}, full speed"),
            spec(Kind::Syn, Ports::Fixed(7000), None),
            true,
        ),
        (
            Daemon::Portcullisd,
            format!("{syn7000} @20 kpps"),
            spec(Kind::Syn, Ports::Fixed(7000), Some(20_000)),
            true,
        ),
        (
            Daemon::Portcullisd,
            "SYN → random ports, full speed".into(),
            spec(Kind::Syn, Ports::Random, None),
            true,
        ),
        (
            Daemon::Portcullisd,
            format!("{GRANT_FLOOD}, full speed"),
            Spec { sources: GRANT_FLOOD_SOURCES, ..spec(Kind::Syn, Ports::Sequence(&SEQUENCE), None) },
            true,
        ),
        (
            Daemon::PortcullisdIptNft,
            format!("{syn7000}, full speed"),
            spec(Kind::Syn, Ports::Fixed(7000), None),
            false,
        ),
        (
            Daemon::PortcullisdIptNft,
            format!("{syn7000} @20 kpps"),
            spec(Kind::Syn, Ports::Fixed(7000), Some(20_000)),
            false,
        ),
        (
            Daemon::PortcullisdIptNft,
            "SYN → random ports, full speed".into(),
            spec(Kind::Syn, Ports::Random, None),
            false,
        ),
        (
            Daemon::PortcullisdSpaFwknop,
            format!("UDP junk (200 B) → {SPA_PORT} (SPA port), full speed"),
            spec(Kind::UdpJunk(200), Ports::Fixed(SPA_PORT), None),
            true,
        ),
        (
            Daemon::PortcullisdSpaFwknop,
            format!("fwknop-looking junk (random base64, {fwk_len} B) → {SPA_PORT}, full speed"),
            spec(Kind::UdpPayloads(b64_junk), Ports::Fixed(SPA_PORT), None),
            true,
        ),
        (
            Daemon::PortcullisdSpaNative,
            format!(
                "native-looking junk (`pcn\\x01` + random, {} B) → {SPA_PORT}, full speed",
                native::PACKET_LEN
            ),
            spec(Kind::UdpPrefixed(NATIVE_HDR, native::PACKET_LEN), Ports::Fixed(SPA_PORT), None),
            true,
        ),
        (
            Daemon::PortcullisdSpaNative,
            format!(
                "native, valid server tag + random body ({} B; attacker knows the server public key) → {SPA_PORT}, full speed",
                native::PACKET_LEN
            ),
            spec(Kind::UdpPayloads(tagged), Ports::Fixed(SPA_PORT), None),
            false,
        ),
        (
            Daemon::KnockdIpt,
            format!("{syn7000}, full speed"),
            spec(Kind::Syn, Ports::Fixed(7000), None),
            false,
        ),
        (
            Daemon::KnockdIpt,
            format!("{syn7000} @20 kpps"),
            spec(Kind::Syn, Ports::Fixed(7000), Some(20_000)),
            false,
        ),
        (
            Daemon::KnockdIpt,
            "SYN → random ports, full speed".into(),
            spec(Kind::Syn, Ports::Random, None),
            false,
        ),
        (
            Daemon::Fwknopd,
            format!("UDP junk (200 B) → {SPA_PORT} (SPA port), full speed"),
            spec(Kind::UdpJunk(200), Ports::Fixed(SPA_PORT), None),
            false,
        ),
        (
            Daemon::Fwknopd,
            "UDP junk (200 B) → random ports, full speed".into(),
            spec(Kind::UdpJunk(200), Ports::Random, None),
            false,
        ),
    ];
    let mut t = Table::new("2. Flood resilience", &HEADERS);
    let mut pc_results = Vec::new();
    for (d, label, spec, in_target) in cases {
        if only.is_some_and(|o| !format!("{} {label}", d.name()).contains(o)) {
            continue;
        }
        env.say(format!("flood: {} — {label}", d.name()));
        let o = run_case(env, d, spec, attempts, report)?;
        let who = if d.backend() == "nftables" {
            format!("{} ({})", d.name(), d.fw())
        } else {
            d.name().to_string()
        };
        let mut row = vec![who, label.clone()];
        row.extend(cells(&o, attempts));
        t.row(row);
        if d.is_portcullisd() {
            pc_results.push((d, label, in_target, o));
        }
    }
    t.note(format!(
        "Attacker: Rust raw socket (IP_HDRINCL) in the attacker namespace, same L2 segment as client and server; \
         spoofed sources 198.18.0.0/17 in order (each seen every 32,768 packets; the grant flood: 50,000 from 198.18.0.0, three packets each); {} s per flood, hard caps on \
         time and packets. Legit: {attempts} attempts, one per second from a fresh source, each with {:.1} s to \
         get tcp/22 answered; \"after\" = 2 attempts right after the flood. CPU% = the daemon's main process and its children \
         (utime+stime from /proc/PID/stat, all threads), 100 = one core. Server rx = the server's eth0 \
         rx_packets; backlog drops = packets the kernel dropped from full per-CPU input queues during the \
         case (/proc/net/softnet_stat, machine-wide): the lab's own limit, before any daemon sees the packet. RSS = VmRSS (main process + children), sampled every 100 ms; \
         \"after\" is taken 3 s after the flood for knockd/fwknopd, and for portcullisd once RSS is back within \
         5 % of \"before\" (at most seq_timeout × 2 + 2 s); the +s figure says when.",
        secs.as_secs(),
        LEGIT_LIMIT.as_secs_f64()
    ));
    report.tables.push(t);
    let in_target: Vec<&(Daemon, String, bool, Outcome)> = pc_results.iter().filter(|r| r.2).collect();
    let all_ok = in_target.iter().all(|r| r.3.legit_ok() == attempts);
    let measured =
        in_target.iter().map(|r| format!("{}/{attempts}", r.3.legit_ok())).collect::<Vec<_>>().join(", ");
    if !in_target.is_empty() {
        report.check(
            &format!("portcullisd: {attempts}/{attempts} legit in every flood scenario"),
            measured,
            all_ok,
        );
    }
    if let Some(r) = pc_results.iter().find(|r| r.1.starts_with(GRANT_FLOOD)) {
        report.check(
            &format!("portcullisd: {attempts}/{attempts} legit knocks during a grant flood (default bounds)"),
            format!("{}/{attempts}", r.3.legit_ok()),
            r.3.legit_ok() == attempts,
        );
    }
    let ipt: Vec<&(Daemon, String, bool, Outcome)> =
        pc_results.iter().filter(|r| r.0 == Daemon::PortcullisdIptNft).collect();
    if !ipt.is_empty() {
        report.check(
            &format!("portcullisd (iptables-nft): {attempts}/{attempts} legit in the three knock floods (not in the brief's targets)"),
            ipt.iter().map(|r| format!("{}/{attempts}", r.3.legit_ok())).collect::<Vec<_>>().join(", "),
            ipt.iter().all(|r| r.3.legit_ok() == attempts),
        );
    }
    let spa_junk: Vec<&&(Daemon, String, bool, Outcome)> =
        in_target.iter().filter(|r| r.0 != Daemon::Portcullisd).collect();
    if !spa_junk.is_empty() {
        report.check(
            &format!("portcullisd SPA: {attempts}/{attempts} legit under SPA-port junk floods"),
            spa_junk
                .iter()
                .map(|r| {
                    let fmt = if r.0 == Daemon::PortcullisdSpaNative { "native" } else { "fwknop" };
                    format!("{}/{attempts} ({fmt})", r.3.legit_ok())
                })
                .collect::<Vec<_>>()
                .join(", "),
            spa_junk.iter().all(|r| r.3.legit_ok() == attempts),
        );
    }
    Ok(())
}
