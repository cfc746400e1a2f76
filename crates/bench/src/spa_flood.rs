//! Scenario 2b: SPA under attack. Legitimate SPA clients against floods that cost the
//! daemon crypto work: native junk with a fresh ephemeral key and a valid server tag
//! per packet (X25519 each; the attacker knows the server public key), and base64
//! junk against 20 configured fwknop stanzas (an HMAC each). The flood comes from
//! other prefixes than the legitimate clients (198.19.4.x): one /24, or a /17 spread
//! over 128 /24s. The last rows knock (same daemon, same junk) to show that SPA work
//! does not starve knock handling: the capture thread screens SPA packets on arrival
//! and does their crypto only in short slices between packet batches.

use std::sync::Arc;
use std::time::Duration;

use crate::env::{self, Daemon, Env, SPA_PORT};
use crate::flood::{Kind, Ports, Sources, Spec};
use crate::floods::{cells, run_case, HEADERS};
use crate::report::Report;
use crate::table::Table;

/// Stanzas configured in the fwknop cases: 19 decoys, then the real one.
const STANZAS: usize = 20;
/// Hard cap on packets of a full-speed flood.
const CAP: u64 = 20_000_000;

/// One /24 of spoofed sources (198.18.0.0/24).
const ONE_24: Sources = Sources::V4 { base: std::net::Ipv4Addr::new(198, 18, 0, 0), count: 256 };

/// Run scenario 2b with `attempts` legitimate attempts per case.
pub fn run(env: &mut Env, attempts: usize, only: Option<&str>, report: &mut Report) -> anyhow::Result<()> {
    let secs = Duration::from_secs(attempts as u64 + 2);
    let spec = |kind: Kind, sources: Sources| Spec {
        dst: env::server4(),
        kind,
        ports: Ports::Fixed(SPA_PORT),
        avoid: Vec::new(),
        sources,
        rate: None,
        max_packets: CAP,
        max_time: secs,
    };
    let fwk_len = env.spa_packet(std::net::Ipv4Addr::new(198, 19, 3, 1))?.len();
    let b64 = Arc::new(crate::spa::base64_junk(4096, fwk_len));
    let server_pub = *env.native.0.public().as_bytes();
    let native = |s| spec(Kind::NativeFreshTag(server_pub), s);
    let fwknop = |s| spec(Kind::UdpPayloads(b64.clone()), s);
    // (daemon, label, spec, decoy stanzas, in the 10/10 target)
    let cases: Vec<(Daemon, &str, Spec, usize, bool)> = vec![
        (
            Daemon::PortcullisdSpaNative,
            "native junk, fresh ephemeral key + valid server tag per packet, from one /24, full speed",
            native(ONE_24),
            0,
            true,
        ),
        (
            Daemon::PortcullisdSpaNative,
            "native junk, fresh ephemeral key + valid server tag per packet, from 128 /24s (a /17), full speed",
            native(Sources::BENCH_V4_17),
            0,
            false,
        ),
        (
            Daemon::PortcullisdSpaFwknop,
            "base64 junk vs 20 fwknop stanzas (HMAC each), from one /24, full speed",
            fwknop(ONE_24),
            STANZAS - 1,
            true,
        ),
        (
            Daemon::PortcullisdSpaFwknop,
            "base64 junk vs 20 fwknop stanzas (HMAC each), from 128 /24s (a /17), full speed",
            fwknop(Sources::BENCH_V4_17),
            STANZAS - 1,
            false,
        ),
        (
            Daemon::PortcullisdSpaKnock,
            "knocks, during native fresh-ephemeral valid-tag junk from 128 /24s (a /17), full speed",
            native(Sources::BENCH_V4_17),
            0,
            false,
        ),
        (
            Daemon::PortcullisdSpaKnock,
            "knocks, during base64 junk vs 20 fwknop stanzas from 128 /24s (a /17), full speed",
            fwknop(Sources::BENCH_V4_17),
            STANZAS - 1,
            false,
        ),
    ];
    let mut t = Table::new("2b. SPA under attack (crypto-costly junk)", &HEADERS);
    let (mut target, mut knocks) = (Vec::new(), Vec::new());
    for (d, label, spec, decoys, in_target) in cases {
        if only.is_some_and(|o| !format!("{} {label}", d.name()).contains(o)) {
            continue;
        }
        env.say(format!("spa flood: {} — {label}", d.name()));
        env.spa_decoy_stanzas = decoys;
        let o = run_case(env, d, spec, attempts, report);
        env.spa_decoy_stanzas = 0;
        let o = o?;
        let mut row = vec![d.name().to_string(), label.to_string()];
        row.extend(cells(&o, attempts));
        t.row(row);
        if d == Daemon::PortcullisdSpaKnock {
            knocks.push(o.legit_ok());
        } else if in_target {
            target.push((d, o.legit_ok()));
        }
    }
    t.note(format!(
        "Attacker: raw socket in the attacker namespace, spoofed sources 198.18.0.0/24 (one prefix) or \
         198.18.0.0/17 (128 /24 prefixes); legitimate clients use 198.19.4.x, another prefix. Native junk: \
         a random 32-byte ephemeral key per packet with its server tag (one SHA-256 for the attacker), random \
         body: every packet passes `precheck`, is new to the ephemeral-key set and would cost X25519. fwknop \
         junk: random base64 of the length `fwknop -A tcp/22` produces, against {STANZAS} HMAC stanzas \
         (SOURCE ANY), the real one last. portcullisd budgets crypto per source /24 (native 50/s, burst 20; \
         fwknop 1,000 HMACs/s, burst 400) under a global ceiling (native 2,000/s, fwknop 50,000 HMACs/s) with a \
         small reserve for prefixes quiet for 1 s; screened packets wait in a 256-packet backlog, fair between /24s, decided in slices of at most 0.5 ms between packet batches. {} s per flood; legit: {attempts} attempts, one a second, \
         each from a fresh source with {:.1} s to get tcp/22 answered.",
        secs.as_secs(),
        crate::floods::LEGIT_LIMIT.as_secs_f64()
    ));
    report.tables.push(t);
    if !target.is_empty() {
        report.check(
            &format!(
                "portcullisd SPA: {attempts}/{attempts} legit under crypto-costly junk from another prefix"
            ),
            target
                .iter()
                .map(|(d, ok)| {
                    let fmt =
                        if *d == Daemon::PortcullisdSpaNative { "native" } else { "fwknop, 20 stanzas" };
                    format!("{ok}/{attempts} ({fmt})")
                })
                .collect::<Vec<_>>()
                .join(", "),
            target.iter().all(|(_, ok)| *ok == attempts),
        );
    }
    if !knocks.is_empty() {
        report.check(
            &format!("portcullisd: {attempts}/{attempts} legit knocks during SPA junk floods (SPA work off the knock path)"),
            knocks.iter().map(|ok| format!("{ok}/{attempts}")).collect::<Vec<_>>().join(", "),
            knocks.iter().all(|ok| *ok == attempts),
        );
    }
    Ok(())
}
