//! Scenario 5: portcullisd's memory under 1,000,000 distinct spoofed sources.

use std::time::Duration;

use crate::env::{Daemon, Env};
use crate::flood::{Kind, Ports, Sources, Spec};
use crate::floods::{self, HEADERS};
use crate::report::Report;
use crate::table::{thousands, Table};

/// Distinct spoofed sources.
pub const SOURCES: u64 = 1_000_000;

/// Run scenario 5. `rate` None = full speed.
pub fn run(env: &mut Env, attempts: usize, rate: Option<u64>, report: &mut Report) -> anyhow::Result<()> {
    let dst = portcullis_daemon::lab::SERVER6.parse()?;
    let spec = Spec {
        dst,
        kind: Kind::Syn,
        ports: Ports::Fixed(7000),
        avoid: Vec::new(),
        sources: Sources::V6 { base: "2001:db8:ff00::".parse()?, count: SOURCES },
        rate,
        max_packets: SOURCES,
        max_time: Duration::from_secs(30),
    };
    env.say(format!("memory: portcullisd, {} distinct IPv6 sources", thousands(SOURCES)));
    let o = floods::run_case(env, Daemon::Portcullisd, spec, attempts, report)?;
    let mut t = Table::new("5. Memory under 1,000,000 distinct spoofed sources", &HEADERS);
    let label = format!(
        "SYN → 7000 over IPv6, {} distinct sources from 2001:db8:ff00::/40, {}",
        thousands(SOURCES),
        rate.map_or("full speed".into(), |r| format!("@{} kpps", r / 1000))
    );
    let mut row = vec![format!("portcullisd ({})", Daemon::Portcullisd.fw()), label];
    row.extend(floods::cells(&o, attempts));
    t.row(row);
    let mib = |k: u64| k as f64 / 1024.0;
    t.note(format!(
        "Each spoofed source sends exactly one first knock, so every packet creates a tracked attempt \
         (max_tracked = 1,000,000, the default). Attacker sent {}; the legit client knocks over IPv4 from fresh \
         sources. RSS before / peak / after: {:.1} / {:.1} / {:.1} MiB.",
        thousands(o.sent),
        mib(o.rss.0),
        mib(o.rss.1),
        mib(o.rss.2)
    ));
    report.tables.push(t);
    report.check(
        &format!("1M sources: {attempts}/{attempts} legit during the flood"),
        format!("{}/{attempts}", o.legit_ok()),
        o.legit_ok() == attempts,
    );
    report.check("1M sources: peak RSS < 128 MiB", format!("{:.1} MiB", mib(o.rss.1)), mib(o.rss.1) < 128.0);
    let back = o.rss.2 <= o.rss.0 + o.rss.0 / 20 + 512;
    report.check(
        "1M sources: RSS back to baseline after (within 5 % + 512 KiB)",
        format!("{} → {} KiB, {:.1} s after the flood", thousands(o.rss.0), thousands(o.rss.2), o.after_s),
        back,
    );
    Ok(())
}
