//! Scenario 1: last knock/SPA packet sent → protected port answers, per daemon.

use std::time::Duration;

use crate::env::{Daemon, Env, GRANT_S, SEQ_TIMEOUT_S};
use crate::probe::PROBE_EVERY;
use crate::report::Report;
use crate::stats::{ms, summarize, Rng, Summary};
use crate::table::{fmt_ms, fmt_ratio, Table};

/// Give up on a trial after this long.
const LIMIT: Duration = Duration::from_secs(3);

/// Run `trials` trials against every daemon.
pub fn run(env: &mut Env, trials: usize, only: Option<&str>, report: &mut Report) -> anyhow::Result<()> {
    // (daemon, pinned): unpinned like the anchors; one extra portcullisd row with the
    // daemon and the client pinned to different cores, to show the cost of waking an
    // idle vCPU (a VM artefact that the sub-millisecond figure is sensitive to).
    let runs = [
        (Daemon::Portcullisd, false),
        (Daemon::PortcullisdOneProcess, false),
        (Daemon::Portcullisd, true),
        (Daemon::PortcullisdIptNft, false),
        (Daemon::PortcullisdIptLegacy, false),
        (Daemon::KernelNft, false),
        (Daemon::KernelIpt, false),
        (Daemon::PortcullisdSpaFwknop, false),
        (Daemon::PortcullisdSpaNative, false),
        (Daemon::KnockdIpt, false),
        (Daemon::KnockdNft, false),
        (Daemon::Fwknopd, false),
        (Daemon::PortcullisdFwknopdConf, false),
    ];
    let mut results: Vec<(Daemon, bool, usize, Option<Summary>)> = Vec::new();
    for (d, pin) in runs {
        if only.is_some_and(|o| !format!("{} {}", d.name(), d.fw()).contains(o)) {
            continue;
        }
        env.say(format!(
            "latency: {} ({}){}, {trials} trials",
            d.name(),
            d.fw(),
            if pin { ", pinned" } else { "" }
        ));
        report.settle();
        env.pin_daemon = pin;
        env.pin_client = pin;
        let r = match env.start(d) {
            Ok(r) => r,
            // iptables-legacy needs x_tables in the kernel: optional row.
            Err(e) if d == Daemon::PortcullisdIptLegacy => {
                env.say(format!("latency: skipping {}: {e:#}", d.name()));
                env.pin_daemon = false;
                env.pin_client = false;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut lat = Vec::new();
        let mut rng = Rng::from_time();
        for _ in 0..trials {
            // A random pause between trials (not timed), so trials do not run in phase
            // with a daemon's own clock (knockd's 50 ms capture timeout, fwknopd's 100 ms
            // loop sleep), which would bias its figures one way or the other.
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 100_000));
            if let Some(l) = env.attempt(d, LIMIT)? {
                lat.push(ms(l));
            }
        }
        env.stop(r);
        env.pin_daemon = false;
        env.pin_client = false;
        results.push((d, pin, lat.len(), summarize(&lat)));
    }
    let pc = results.iter().find(|r| r.0 == Daemon::Portcullisd && !r.1).and_then(|r| r.3);
    let mut t = Table::new(
        "1. Latency: last knock/SPA packet sent → protected port answers (ms)",
        &[
            "daemon",
            "firewall",
            "ok",
            "min",
            "median",
            "p95",
            "max",
            "median ÷ portcullisd",
            "p95 ÷ portcullisd",
        ],
    );
    for (d, pin, ok, s) in &results {
        let f = |v: fn(&Summary) -> f64| s.as_ref().map_or("–".into(), |s| fmt_ms(v(s)));
        t.row(vec![
            if *pin {
                format!("{} (daemon and client pinned to different cores)", d.name())
            } else {
                d.name().into()
            },
            d.fw().into(),
            format!("{ok}/{trials}"),
            f(|s| s.min),
            f(|s| s.median),
            f(|s| s.p95),
            f(|s| s.max),
            fmt_ratio(s.map(|s| s.median), pc.map(|s| s.median)),
            fmt_ratio(s.map(|s| s.p95), pc.map(|s| s.p95)),
        ]);
    }
    t.note(format!(
        "Each trial uses a fresh client source address. Knocks: TCP SYN 7000, 8000, 9000 sent back to back \
         (knock(1) semantics, our own sockets), after a random 0–100 ms pause so trials are not in phase \
         with knockd's 50 ms capture timeout or fwknopd's 100 ms loop; SPA: built by the real `fwknop` client (`-T -B`, HMAC-SHA256 + \
         Rijndael) in the client namespace and sent as one UDP datagram by the bench so its send time is exact; \
         the same packets go to fwknopd and to portcullisd's fwknop stanza (same keys, tcp/22, 5 s). Native SPA: \
         sealed in process before the trial (`portcullis_proto::spa::native::seal`, allow = the trial source, \
         tcp/22, 5 s) and sent the same way (256 B). \
         Then a probe SYN to tcp/22 from the same source every {} µs (non-blocking connect, ppoll); latency = send \
         time of the first answered probe − send time of the last knock/SPA packet, so figures are upper bounds \
         with {} µs resolution; the first probe leaves about 20 µs after the last knock, so a figure near \
         that is the floor of the method (the door was already open). No CPU pinning (as in the anchors) except \
         in the extra portcullisd row, where the daemon sits on one core and the client on the other: the \
         difference is the cost of waking an idle vCPU in this VM. portcullisd (iptables-nft / iptables-legacy): \
         the same daemon and door with `backend = \"iptables-nft\"` / `\"iptables-legacy\"`: rules \
         (chain PORTCULLIS in filter INPUT and mangle PREROUTING) are loaded once at start by \
         `iptables-<variant>-restore --noflush`; each grant is one ipset netlink message (`hash:ip,port`, \
         kernel timeout), no process forked. Between rows the server's nftables ruleset, x_tables tables \
         and ipsets are emptied. kernel-only (no daemon): the same door as `portcullisd generate --kernel \
         nftables|iptables`, loaded with `nft -f` / `iptables-nft-restore --noflush`, no process running: \
         netfilter itself walks the sequence (stage sets / recent lists). seq_timeout {SEQ_TIMEOUT_S} s, \
         cmd_timeout/open_for/FW_ACCESS_TIMEOUT {GRANT_S} s.",
        PROBE_EVERY.as_micros(),
        PROBE_EVERY.as_micros()
    ));
    report.tables.push(t);

    spa_vs_fwknopd(&results, trials, report);

    // The knock targets are about the nftables portcullisd row: none without it (`--only`).
    if !results.iter().any(|r| r.0 == Daemon::Portcullisd && !r.1) {
        return Ok(());
    }

    let pc_s = pc.map(|s| (s.median, s.p95));
    let best = |want: &[Daemon]| {
        results
            .iter()
            .filter(|r| want.contains(&r.0))
            .filter_map(|r| r.3.map(|s| s.median))
            .fold(None, |a: Option<f64>, m| Some(a.map_or(m, |a| a.min(m))))
    };
    let (med, p95) = pc_s.unwrap_or((f64::NAN, f64::NAN));
    let pc_ok = results.iter().find(|r| r.0 == Daemon::Portcullisd && !r.1).map_or(0, |r| r.2);
    report.check(
        "open latency median ≤ 1 ms",
        format!("{} ms ({pc_ok}/{trials} opened)", fmt_ms(med)),
        med <= 1.0 && pc_ok == trials,
    );
    report.check("open latency p95 ≤ 5 ms", format!("{} ms", fmt_ms(p95)), p95 <= 5.0);
    let k = best(&[Daemon::KnockdIpt, Daemon::KnockdNft]);
    let f = best(&[Daemon::Fwknopd]);
    let rk = k.map(|k| k / med);
    let rf = f.map(|f| f / med);
    report.check(
        "≥ 30× faster than knockd (median, faster knockd variant)",
        fmt_ratio(k, Some(med)),
        rk.is_some_and(|r| r >= 30.0),
    );
    report.check(
        "≥ 100× faster than fwknopd (median)",
        fmt_ratio(f, Some(med)),
        rf.is_some_and(|r| r >= 100.0),
    );
    Ok(())
}

/// Table 1b and the SPA targets: portcullisd SPA (both formats) against fwknopd.
fn spa_vs_fwknopd(results: &[(Daemon, bool, usize, Option<Summary>)], trials: usize, report: &mut Report) {
    let get = |d: Daemon| results.iter().find(|r| r.0 == d && !r.1);
    let fw = get(Daemon::Fwknopd).and_then(|r| r.3);
    let spa = [
        (Daemon::Fwknopd, "fwknopd", "fwknop client (HMAC-SHA256 + Rijndael)"),
        (Daemon::PortcullisdSpaFwknop, "portcullisd", "fwknop client (HMAC-SHA256 + Rijndael)"),
        (Daemon::PortcullisdSpaNative, "portcullisd", "native (X25519 + ChaCha20-Poly1305 + Ed25519)"),
        (
            Daemon::PortcullisdFwknopdConf,
            "portcullisd (run --config fwknopd.conf)",
            "fwknop client (HMAC-SHA256 + Rijndael)",
        ),
    ];
    if spa.iter().skip(1).all(|(d, ..)| get(*d).is_none()) {
        return;
    }
    let mut t = Table::new(
        "1b. SPA latency: portcullisd against fwknopd (ms)",
        &["daemon", "SPA packet", "ok", "median", "p95", "fwknopd median ÷ this", "fwknopd p95 ÷ this"],
    );
    for (d, name, packet) in spa {
        let Some((_, _, ok, s)) = get(d) else { continue };
        let f = |v: fn(&Summary) -> f64| s.as_ref().map_or("–".into(), |s| fmt_ms(v(s)));
        t.row(vec![
            name.into(),
            packet.into(),
            format!("{ok}/{trials}"),
            f(|s| s.median),
            f(|s| s.p95),
            fmt_ratio(fw.map(|s| s.median), s.map(|s| s.median)),
            fmt_ratio(fw.map(|s| s.p95), s.map(|s| s.p95)),
        ]);
    }
    t.note(
        "Same trials as table 1 (fresh source per trial, one UDP datagram to 62201, probe SYN every 100 µs). \
         portcullisd runs one configuration with both an `[[spa.fwknop]]` stanza holding fwknopd's keys and a \
         native `[[spa.user]]`; the rows differ only in the packet the client sends. portcullisd (run --config \
         fwknopd.conf) is the drop-in: it reads the very files fwknopd reads (one fwknopd.conf, one access.conf, \
         same paths) on the host fwknopd expects (iptables INPUT policy DROP, loopback and established/related \
         accepted, for both rows), grants as ipset members matched by an ACCEPT in its FWKNOP_INPUT chain, with \
         the system's iptables (nf_tables here); only `--state-dir` and `--log stderr` are added. The ratio \
         columns divide fwknopd's figure by the row's: how many times faster than fwknopd.",
    );
    report.tables.push(t);

    let rows: Vec<(&str, usize, Option<Summary>)> =
        [(Daemon::PortcullisdSpaFwknop, "fwknop format"), (Daemon::PortcullisdSpaNative, "native")]
            .iter()
            .filter_map(|(d, label)| get(*d).map(|r| (*label, r.2, r.3)))
            .collect();
    if let Some((_, _, ok, s)) = get(Daemon::PortcullisdFwknopdConf).filter(|_| fw.is_some()) {
        report.check(
            "portcullisd on fwknopd's own fwknopd.conf + access.conf: ≥ 100× faster than fwknopd (median, as the SPA rows)",
            format!(
                "{} ms ({ok}/{trials}); {}",
                s.map_or("–".into(), |s| fmt_ms(s.median)),
                fmt_ratio(fw.map(|f| f.median), s.map(|s| s.median))
            ),
            *ok == trials && fw.zip(*s).is_some_and(|(f, s)| f.median / s.median >= 100.0),
        );
    }
    if rows.is_empty() {
        return;
    }
    report.check(
        "SPA open latency median ≤ 1 ms (both formats)",
        rows.iter()
            .map(|(l, ok, s)| {
                format!("{l}: {} ms ({ok}/{trials})", s.map_or("–".into(), |s| fmt_ms(s.median)))
            })
            .collect::<Vec<_>>()
            .join("; "),
        rows.iter().all(|(_, ok, s)| *ok == trials && s.is_some_and(|s| s.median <= 1.0)),
    );
    report.check(
        "SPA ≥ 100× faster than fwknopd (median, both formats)",
        rows.iter()
            .map(|(l, _, s)| format!("{l}: {}", fmt_ratio(fw.map(|f| f.median), s.map(|s| s.median))))
            .collect::<Vec<_>>()
            .join("; "),
        rows.iter().all(|(_, _, s)| match (fw, s) {
            (Some(f), Some(s)) => f.median / s.median >= 100.0,
            _ => false,
        }),
    );
}
