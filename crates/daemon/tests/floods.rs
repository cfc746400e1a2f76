//! Hostile floods end to end, in throwaway namespaces with real nftables: a knock
//! sequence completed from 50,000 spoofed sources stays within the daemon's bounds
//! (live grants, log lines, database rows) while a knock from an unflooded prefix still
//! opens; and a second daemon on the same state directory refuses to start. Root
//! required (CI runs as root); as non-root: SKIPPED (FAILS under CI=true).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_daemon::lab::packet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use support::*;

/// Spoofed sources: 198.18.0.0 onwards (RFC 2544 benchmark range), 196 /24 prefixes.
const SOURCES: u32 = 50_000;
const SEQUENCE: [u16; 3] = [7000, 8000, 9000];
/// Opens each /24 may make in a burst (`opens_per_prefix = "2/min"`).
const PER_PREFIX: usize = 2;
const MAX_LIVE: usize = 500;
/// Packets per second the flood sends (so the capture socket keeps up) and its hard stop.
const FLOOD_PPS: u64 = 60_000;
const FLOOD_LIMIT: Duration = Duration::from_secs(20);

fn config() -> String {
    format!(
        r#"
[daemon]
opens_per_prefix = "{PER_PREFIX}/min"
prefix_v4 = 24

[store]
retention = "2s"

[[door]]
name = "ssh"
sequence = [{}, {}, {}]
seq_timeout = 10
open = ["tcp/2222"]
open_for = 3
opens_per_second = 200
max_live_grants = {MAX_LIVE}
"#,
        SEQUENCE[0], SEQUENCE[1], SEQUENCE[2]
    )
}

/// Complete the sequence from every spoofed source (three SYNs each), from the other
/// host's namespace, at most [`FLOOD_PPS`] and for at most [`FLOOD_LIMIT`]. Returns the
/// packets sent.
fn flood(s: &Server, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let ns = Path::new("/run/netns").join(&s.lab.other);
    let dst: Ipv4Addr = lab::SERVER4_OTHER.parse().unwrap();
    std::thread::spawn(move || {
        lab::enter(&ns).unwrap();
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).unwrap();
        let to = SockAddr::from(SocketAddr::from((dst, 0)));
        let mut buf = [0u8; 40];
        let start = Instant::now();
        let mut sent = 0u64;
        'all: for i in 0..SOURCES {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
            for (k, &port) in SEQUENCE.iter().enumerate() {
                if stop.load(Ordering::Relaxed) || start.elapsed() > FLOOD_LIMIT {
                    break 'all;
                }
                let sport = 20_000 + (i % 40_000) as u16;
                packet::tcp_syn_v4(&mut buf, src, dst, sport, port, i.wrapping_mul(3) + k as u32);
                if sock.send_to(&buf, &to).is_ok() {
                    sent += 1;
                }
                // Pace: never ahead of FLOOD_PPS.
                let due = Duration::from_micros(sent * 1_000_000 / FLOOD_PPS);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        sent
    })
}

/// Elements in the server's `allow4` set.
fn live_grants(s: &Server) -> usize {
    let out = s.lab.exec(&s.lab.server, &["nft", "list", "set", "inet", "portcullis", "allow4"]).unwrap();
    assert!(out.status.success(), "nft list set: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).matches(" expires ").count()
}

/// Rows in the grant store.
fn db_rows(s: &Server) -> i64 {
    let db = s.dir.join("state/grants.db");
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row("SELECT COUNT(*) FROM grants", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_knock_flood_from_50000_spoofed_sources_stays_within_bounds_and_a_legit_knock_opens() {
    if !root_or_skip("a_knock_flood_from_50000_spoofed_sources_stays_within_bounds_and_a_legit_knock_opens") {
        return;
    }
    let s = Server::start("floods", &config(), &[2222]);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let h = flood(&s, Arc::clone(&stop));
    // A legitimate knock in the middle of the flood, from 192.0.2.0/24 (not flooded).
    std::thread::sleep(Duration::from_millis(1000));
    let knock = |s: &Server| {
        let ports: Vec<String> = SEQUENCE.iter().map(u16::to_string).collect();
        let mut args = vec![client_bin(), "knock".into(), "-d".into(), "20".into(), lab::SERVER4.into()];
        args.extend(ports);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.client(&args);
    };
    knock(&s);
    let opened =
        wait_until(Duration::from_secs(2), || s.probe(&s.lab.client, lab::SERVER4, 2222) == Probe::Open);
    let during = !h.is_finished();
    let sent = h.join().unwrap();
    let flood_took = t0.elapsed();
    assert!(opened, "the legit knock did not open during the flood; log tail:\n{}", tail(&s.log_text()));
    assert!(during, "the flood ended before the legit knock was sent ({sent} packets in {flood_took:?})");
    assert_eq!(sent, u64::from(SOURCES) * 3, "the flood was cut short after {flood_took:?}");

    // Within the bounds: at most 2 opens per /24 (plus the refill over the flood), never
    // more than max_live_grants; and the flood did open some (the test can fail).
    let prefixes = SOURCES.div_ceil(256) as usize;
    let refill = prefixes * PER_PREFIX * (flood_took.as_secs() as usize + 2) / 60;
    let live = live_grants(&s);
    assert!(live <= MAX_LIVE, "{live} live grants > max_live_grants {MAX_LIVE}");
    assert!(
        live <= prefixes * PER_PREFIX + refill + 1,
        "{live} live grants: more than the prefix budgets allow"
    );
    assert!(live >= 100, "only {live} flood grants: did the flood complete the sequence?");
    let rows = db_rows(&s);
    eprintln!("flood: {sent} packets in {flood_took:?}; {live} live grants, {rows} records");
    assert!(rows <= (prefixes * PER_PREFIX + refill + 1) as i64, "{rows} records: refused opens left rows");

    // The refusals end in one summary line per interval (10 s), not one line each.
    let summarised =
        wait_until(Duration::from_secs(15), || s.log_text().contains("opens refused or failed in the last"));
    assert!(summarised, "no refusal summary; log tail:\n{}", tail(&s.log_text()));
    let log = s.log_text();
    let lines = log.lines().count();
    assert!(lines < 5_000, "{lines} log lines for {sent} packets");
    let one_by_one = log.matches("NOT opened").count();
    eprintln!("log: {lines} lines, {one_by_one} refusal lines");
    assert!(one_by_one <= 20 + 2 * (t0.elapsed().as_secs() as usize + 1), "{one_by_one} refusal lines");
    let summary = log.lines().find(|l| l.contains("opens refused or failed in the last")).unwrap();
    assert!(summary.contains("source prefix over its rate"), "{summary}");

    // Retention (2 s) empties the store once the grants (3 s) have closed.
    let emptied = wait_until(Duration::from_secs(15), || db_rows(&s) == 0);
    assert!(emptied, "{} records left after retention", db_rows(&s));
    assert_eq!(live_grants(&s), 0, "every flood grant expired");
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    if !root_or_skip("a_second_daemon_on_the_same_state_dir_refuses_to_start") {
        return;
    }
    let s = Server::start("twodaemons", &config(), &[2222]);
    let conf = s.dir.join("portcullis.toml");
    let out = s.lab.exec(&s.lab.server, &[daemon_bin(), "run", "--config", conf.to_str().unwrap()]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second daemon ran: {err}");
    assert!(
        err.contains("in use by another portcullisd") && err.contains(&format!("PID {}", s.pid)),
        "{err}"
    );
    // The first one is unharmed: it still opens.
    let mut args = vec![client_bin(), "knock".into(), lab::SERVER4.into()];
    args.extend(SEQUENCE.iter().map(u16::to_string));
    s.client(&args.iter().map(String::as_str).collect::<Vec<_>>());
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
