//! Scenario 1: last knock/SPA packet sent → protected port answers, per daemon.

use std::time::Duration;

use crate::env::{Daemon, Env, GRANT_S, SEQ_TIMEOUT_S};
use crate::probe::PROBE_EVERY;
use crate::report::Report;
use crate::stats::{ms, summarize, Summary};
use crate::table::{fmt_ms, fmt_ratio, Table};

/// Give up on a trial after this long.
const LIMIT: Duration = Duration::from_secs(3);

/// Run `trials` trials against every daemon.
pub fn run(env: &mut Env, trials: usize, only: Option<&str>, report: &mut Report) -> anyhow::Result<()> {
    let daemons = [Daemon::Portcullisd, Daemon::KnockdIpt, Daemon::KnockdNft, Daemon::Fwknopd];
    let mut results: Vec<(Daemon, usize, Option<Summary>)> = Vec::new();
    for d in daemons {
        if only.is_some_and(|o| !format!("{} {}", d.name(), d.fw()).contains(o)) {
            continue;
        }
        env.say(format!("latency: {} ({}), {trials} trials", d.name(), d.fw()));
        report.settle();
        let r = env.start(d)?;
        let mut lat = Vec::new();
        for _ in 0..trials {
            if let Some(l) = env.attempt(d, LIMIT)? {
                lat.push(ms(l));
            }
        }
        env.stop(r);
        results.push((d, lat.len(), summarize(&lat)));
    }
    let pc = results.iter().find(|r| r.0 == Daemon::Portcullisd).and_then(|r| r.2);
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
    for (d, ok, s) in &results {
        let f = |v: fn(&Summary) -> f64| s.as_ref().map_or("–".into(), |s| fmt_ms(v(s)));
        t.row(vec![
            d.name().into(),
            d.fw().into(),
            format!("{ok}/{trials}"),
            f(|s| s.min),
            f(|s| s.median),
            f(|s| s.p95),
            f(|s| s.max),
            if *d == Daemon::Portcullisd {
                "1×".into()
            } else {
                fmt_ratio(s.map(|s| s.median), pc.map(|s| s.median))
            },
            if *d == Daemon::Portcullisd {
                "1×".into()
            } else {
                fmt_ratio(s.map(|s| s.p95), pc.map(|s| s.p95))
            },
        ]);
    }
    t.note(format!(
        "Each trial uses a fresh client source address. Knocks: TCP SYN 7000, 8000, 9000 sent back to back \
         (knock(1) semantics, our own sockets); SPA: built by the real `fwknop` client (`-T -B`, HMAC-SHA256 + \
         Rijndael) in the client namespace and sent as one UDP datagram by the bench so its send time is exact. \
         Then a probe SYN to tcp/22 from the same source every {} µs (non-blocking connect, ppoll); latency = send \
         time of the first answered probe − send time of the last knock/SPA packet, so figures are upper bounds \
         with {} µs resolution. seq_timeout {SEQ_TIMEOUT_S} s, cmd_timeout/open_for/FW_ACCESS_TIMEOUT {GRANT_S} s.",
        PROBE_EVERY.as_micros(),
        PROBE_EVERY.as_micros()
    ));
    report.tables.push(t);

    let pc_s = pc.map(|s| (s.median, s.p95));
    let best = |want: &[Daemon]| {
        results
            .iter()
            .filter(|r| want.contains(&r.0))
            .filter_map(|r| r.2.map(|s| s.median))
            .fold(None, |a: Option<f64>, m| Some(a.map_or(m, |a| a.min(m))))
    };
    let (med, p95) = pc_s.unwrap_or((f64::NAN, f64::NAN));
    let pc_ok = results.iter().find(|r| r.0 == Daemon::Portcullisd).map_or(0, |r| r.1);
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
