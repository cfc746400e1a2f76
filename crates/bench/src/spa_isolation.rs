//! Scenario 4b: how long SPA work can keep the capture loop from reading its socket, in
//! process on one thread, with the daemon's own engine and defaults.
//!
//! The loop is driven as `serve` drives it: batches of 64 packets (63 native junk
//! packets with a valid server tag and a fresh ephemeral key each, from 128 /24s, and
//! one knock last), then, when SPA work is deferred, one slice of at most
//! [`portcullis_daemon::daemon::SPA_SLICE`]. Junk is offered as fast as the loop takes
//! it, so the crypto budget is always saturated. Measured per loop turn, in CPU time of
//! the thread (so that other load on the machine does not count): the work done until
//! the batch's knock was handled, and until the loop would read the socket again (what
//! a packet arriving just after a read waits, at most, to be looked at).
//! "inline" decides every screened packet as it arrives (the engine before the
//! backlog); "sliced" is the capture loop's mode now.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use portcullis_daemon::capture::LocalView;
use portcullis_daemon::daemon::engine::Engine;
use portcullis_daemon::daemon::SPA_SLICE;
use portcullis_daemon::firewall::none::NoFirewall;
use portcullis_daemon::spa::replay::ReplayCache;
use portcullis_daemon::spa::SpaGate;
use portcullis_proto::spa::native::{self, ServerKey};
use portcullis_proto::wire::Datagram;
use portcullis_proto::{Millis, Proto, Service, TcpFlags};

use crate::report::Report;
use crate::stats::{median_sorted, percentile_sorted, Rng};
use crate::table::{fmt_ms, thousands, Table};

const BATCH: usize = 64;
const SPA_PORT: u16 = 62201;

/// An engine with the bench door and native SPA (server key in `dir`).
fn engine(dir: &Path, server: &ServerKey, deferred: bool) -> anyhow::Result<Engine> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = dir.join("server.key");
    let _ = std::fs::remove_file(&key);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key)?;
    f.write_all(server.to_text().as_bytes())?;
    let user = portcullis_proto::spa::native::UserKey::generate(&mut crate::env::urandom);
    let text = format!(
        "[spa]\nports = [{SPA_PORT}]\nserver_key_file = \"{}\"\n\n[[spa.user]]\nname = \"u\"\nkey = \"{}\"\n\
         open = [\"tcp/22\"]\n\n[[door]]\nname = \"bench\"\nsequence = [7000, 8000, 9000]\nopen = [\"tcp/22\"]\n",
        key.display(),
        user.public()
    );
    let config = portcullis_daemon::config::parse(&text, &dir.join("bench.toml"))
        .map_err(|e| anyhow::anyhow!("isolation config: {e}"))?;
    let spa = config.spa.clone().ok_or_else(|| anyhow::anyhow!("no [spa]"))?;
    let gate = SpaGate::new(&spa, vec![Service::tcp(22)], ReplayCache::in_memory(100_000));
    let mut e = Engine::new(&config, Box::new(NoFirewall::default()))?.with_spa(gate);
    if deferred {
        e.defer_spa();
    }
    Ok(e)
}

/// CPU time this thread has used.
fn cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// Per loop turn: (knock handled after, next socket read after), ms of thread CPU.
fn drive(e: &mut Engine, server: &ServerKey, run_for: Duration) -> (Vec<f64>, Vec<f64>, u64) {
    let mut view = LocalView::default();
    let me = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    view.addrs.insert(me);
    let origin = Instant::now();
    let mut rng = Rng::from_time();
    let mut payloads: Vec<[u8; native::PACKET_LEN]> = vec![[0u8; native::PACKET_LEN]; BATCH];
    let (mut knock_ms, mut gap_ms) = (Vec::new(), Vec::new());
    let mut n: u32 = 0;
    let mut junk = 0u64;
    while origin.elapsed() < run_for && knock_ms.len() < 200_000 {
        // The batch as it comes off the socket (built before the clock starts).
        for p in payloads.iter_mut().take(BATCH - 1) {
            rng.fill(p);
            let mut eph = [0u8; 32];
            eph.copy_from_slice(&p[8..40]);
            let h = native::header_for(server.public(), &eph);
            p[..h.len()].copy_from_slice(&h);
        }
        let read = cpu();
        let now = Millis(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX));
        let wall = SystemTime::now();
        for p in payloads.iter().take(BATCH - 1) {
            n = n.wrapping_add(1);
            let src = IpAddr::V4(Ipv4Addr::from(0xc612_0000 | ((n % 128) << 8) | (n % 251 + 1)));
            let d = Datagram {
                src,
                dst: me,
                proto: Proto::Udp,
                src_port: 40000,
                dst_port: SPA_PORT,
                flags: TcpFlags(0),
                payload: p,
            };
            e.on_datagram(&view, 1, &d, now, wall);
            junk += 1;
        }
        let k = knock_ms.len() as u32;
        let knocker = IpAddr::V4(Ipv4Addr::from(0xc613_0400 + (k / 3) % 60_000));
        let d = Datagram {
            src: knocker,
            dst: me,
            proto: Proto::Tcp,
            src_port: 40000,
            dst_port: [7000, 8000, 9000][(k % 3) as usize],
            flags: TcpFlags(TcpFlags::SYN),
            payload: &[],
        };
        e.on_datagram(&view, 1, &d, now, wall);
        knock_ms.push((cpu() - read).as_secs_f64() * 1e3);
        if e.spa_pending() {
            let until = Instant::now() + SPA_SLICE;
            e.run_spa(&mut || Instant::now() < until, now, wall);
        }
        gap_ms.push((cpu() - read).as_secs_f64() * 1e3);
    }
    (knock_ms, gap_ms, junk)
}

/// Run scenario 4b for about `budget` per mode.
pub fn run(budget: Duration, report: &mut Report) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pc-bench-iso-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = ServerKey::generate(&mut crate::env::urandom);
    let mut t = Table::new(
        "4b. Knocks behind SPA work (in process, capture loop driven as `serve` does)",
        &[
            "SPA work",
            "loop turns",
            "junk packets",
            "SPA crypto done",
            "CPU until the batch's knock is handled, median / p99.9 / max ms",
            "CPU until the next socket read, median / p99.9 / max ms",
        ],
    );
    let mut sliced_p999 = None;
    for (label, deferred) in [("inline (as before the backlog)", false), ("sliced backlog (now)", true)] {
        let r = (|| -> anyhow::Result<()> {
            let mut e = engine(&dir, &server, deferred)?;
            let (knock, gap, junk) = drive(&mut e, &server, budget);
            let s = e.stats();
            let crypto = s.spa_rejected_in(portcullis_daemon::spa::RejectClass::Auth) + s.spa_accepted;
            let fmt = |v: &[f64]| {
                let mut v = v.to_vec();
                v.sort_by(f64::total_cmp);
                match (median_sorted(&v), percentile_sorted(&v, 99.9), v.last()) {
                    (Some(m), Some(p), Some(x)) => format!("{} / {} / {}", fmt_ms(m), fmt_ms(p), fmt_ms(*x)),
                    _ => "–".into(),
                }
            };
            if deferred {
                let mut v = knock.clone();
                v.sort_by(f64::total_cmp);
                sliced_p999 = percentile_sorted(&v, 99.9);
            }
            t.row(vec![
                label.into(),
                thousands(knock.len() as u64),
                thousands(junk),
                thousands(crypto),
                fmt(&knock),
                fmt(&gap),
            ]);
            Ok(())
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    t.note(format!(
        "One thread, default budgets (native 50/s per /24, burst 20; 2,000/s in all plus the quiet-prefix \
         reserve), {:.1} s per mode; junk from 198.18.0.0/17 (128 /24s), knocks from 198.19.4.0 onwards. SPA \
         crypto done = packets that reached X25519 (rejected as not authentic). Slice: at most {} µs of \
         decisions after each batch. The max column is single turns, and includes the cheap checks' own \
         upkeep as well as SPA decisions.",
        budget.as_secs_f64(),
        SPA_SLICE.as_micros()
    ));
    report.tables.push(t);
    if let Some(p) = sliced_p999 {
        report.check(
            "portcullisd: a knock waits ≤ 1 ms of CPU behind SPA work in 99.9 % of loop turns (sliced)",
            format!("p99.9 {} ms", fmt_ms(p)),
            p <= 1.0,
        );
    }
    Ok(())
}
