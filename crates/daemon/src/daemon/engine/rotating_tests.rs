//! Unit tests of the engine with rotating doors.

use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;

use portcullis_proto::TcpFlags;

use super::*;
use crate::config;
use crate::firewall::none::NoFirewall;

const STEP: u64 = 30;

fn engine(dir: &std::path::Path) -> (Engine, config::RotatingDoor) {
    let secret = dir.join("door.secret");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&secret)
        .unwrap();
    std::io::Write::write_all(&mut f, b"engine test secret\n").unwrap();
    let text = format!(
        "[[door]]\nname = \"rot\"\nrotating = {{ algorithm = \"hmac-sha256\", secret_file = \"{}\", \
             range = \"20000-20999\", count = 4, step = \"{STEP}s\", protocols = \"mixed\" }}\n\
             seq_timeout = 5\nopen = [\"tcp/22\"]\n",
        secret.display()
    );
    let c = config::parse(&text, &dir.join("p.toml")).unwrap();
    let r = c.doors[0].rotating.clone().unwrap();
    (Engine::new(&c, Box::new(NoFirewall::default())).unwrap(), r)
}

/// Knock `seq` from `src` at Unix time `unix`; whether `src` holds a grant after.
fn knock(e: &mut Engine, src: [u8; 4], seq: &[Service], unix: u64) -> bool {
    let mut v = LocalView::default();
    v.addrs.insert("192.0.2.1".parse().unwrap());
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
    for (i, k) in seq.iter().enumerate() {
        let d = Datagram {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: "192.0.2.1".parse().unwrap(),
            proto: k.proto,
            src_port: 40000,
            dst_port: k.port,
            flags: TcpFlags(if k.proto == Proto::Tcp { TcpFlags::SYN } else { 0 }),
            payload: &[],
        };
        e.on_datagram(&v, 1, &d, Millis(unix * 1000 + i as u64), wall);
    }
    let me = IpAddr::V4(Ipv4Addr::from(src));
    e.granter().live().unwrap().iter().any(|g| g.addr == me)
}

#[test]
fn current_and_previous_steps_open_older_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, r) = engine(dir.path());
    let t = 1_800_000_000 + 7; // inside step 60_000_000
    let step = t / STEP;
    assert!(!knock(&mut e, [192, 0, 2, 10], &r.rotation.sequence(step - 2), t), "two steps old");
    assert!(!knock(&mut e, [192, 0, 2, 11], &r.rotation.sequence(step + 1), t), "next step");
    assert!(knock(&mut e, [192, 0, 2, 12], &r.rotation.sequence(step - 1), t), "previous step");
    assert!(knock(&mut e, [192, 0, 2, 13], &r.rotation.sequence(step), t), "current step");
}

#[test]
fn a_completed_sequence_is_burnt_for_other_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, r) = engine(dir.path());
    let t = 1_800_000_000;
    let seq = r.rotation.sequence(t / STEP);
    assert!(knock(&mut e, [192, 0, 2, 2], &seq, t));
    assert!(!knock(&mut e, [198, 51, 100, 2], &seq, t + 1), "replayed from another source");
    // Next step: the sequence is the previous step's now, still burnt.
    assert!(!knock(&mut e, [198, 51, 100, 3], &seq, t + STEP), "replayed after the boundary");
    assert!(knock(&mut e, [198, 51, 100, 3], &r.rotation.sequence(t / STEP + 1), t + STEP));
}

#[test]
fn knocks_in_progress_on_the_previous_step_survive_a_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, r) = engine(dir.path());
    let step = 1_800_000_000 / STEP;
    let end = (step + 1) * STEP - 1; // last second of `step`
    let seq = r.rotation.sequence(step);
    // Two knocks before the boundary, two after: still one attempt.
    assert!(!knock(&mut e, [192, 0, 2, 5], &seq[..2], end));
    assert!(e.follow_rotation(end + 1), "the boundary re-arms a slot");
    assert!(knock(&mut e, [192, 0, 2, 5], &seq[2..], end + 1));
    assert!(!e.follow_rotation(end + 2), "nothing changes within a step");
}
