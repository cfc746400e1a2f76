use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
const NONE: TcpFlags = TcpFlags(0);

fn tcp(port: u16) -> Service {
    Service::tcp(port)
}

fn udp(port: u16) -> Service {
    Service::udp(port)
}

fn door(seq: &[Service], timeout_ms: u64) -> DoorSpec {
    DoorSpec {
        sequence: seq.to_vec(),
        timeout: Duration::from_millis(timeout_ms),
        flags: FlagFilter::SYN_ONLY,
    }
}

fn tracker(doors: Vec<DoorSpec>) -> Tracker {
    Tracker::new(doors, 10_000).expect("valid doors")
}

/// The usual door: tcp 7000, 8000, 9000 within 5 s.
fn std_door() -> DoorSpec {
    door(&[tcp(7000), tcp(8000), tcp(9000)], 5_000)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn flags_for(svc: Service) -> TcpFlags {
    match svc.proto {
        Proto::Tcp => SYN,
        Proto::Udp => NONE,
    }
}

/// One packet with flags that pass `syn,!ack`.
fn hit(t: &mut Tracker, src: IpAddr, svc: Service, now: u64) -> Vec<Event> {
    hit_flags(t, src, svc, flags_for(svc), now)
}

fn hit_flags(t: &mut Tracker, src: IpAddr, svc: Service, flags: TcpFlags, now: u64) -> Vec<Event> {
    let mut out = Vec::new();
    t.observe(src, svc, flags, Millis(now), &mut |e| out.push(e));
    out
}

/// Knocks `seq` 10 ms apart from `start`, returning every event.
fn knock_all(t: &mut Tracker, src: IpAddr, seq: &[Service], start: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, &svc) in seq.iter().enumerate() {
        out.extend(hit(t, src, svc, start + 10 * i as u64));
    }
    out
}

fn opens(events: &[Event], door: DoorId) -> bool {
    events.contains(&Event::Open { door })
}

fn stage(door: DoorId, stage: usize, of: usize) -> Event {
    Event::Stage { door, stage, of }
}

// ---- sequence semantics ----

#[test]
fn opens_on_correct_sequence() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    assert_eq!(hit(&mut t, a, tcp(7000), 0), [stage(0, 1, 3)]);
    assert_eq!(hit(&mut t, a, tcp(8000), 10), [stage(0, 2, 3)]);
    assert_eq!(t.len(), 1);
    assert_eq!(hit(&mut t, a, tcp(9000), 20), [Event::Open { door: 0 }]);
    assert!(t.is_empty(), "an opened attempt is forgotten");
}

#[test]
fn resets_on_wrong_port() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 0);
    assert_eq!(hit(&mut t, a, tcp(9000), 10), [Event::Reset { door: 0, at_stage: 1 }]);
    // Nothing left to advance: later knocks of the door do nothing.
    assert_eq!(hit(&mut t, a, tcp(8000), 20), []);
    assert_eq!(hit(&mut t, a, tcp(9000), 30), []);
    assert!(t.is_empty());
    assert!(opens(&knock_all(&mut t, a, &[tcp(7000), tcp(8000), tcp(9000)], 100), 0));
}

#[test]
fn wrong_knock_that_is_the_first_knock_restarts_the_attempt() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    knock_all(&mut t, a, &[tcp(7000), tcp(8000)], 0);
    assert_eq!(hit(&mut t, a, tcp(7000), 100), [Event::Reset { door: 0, at_stage: 2 }, stage(0, 1, 3)]);
    assert!(opens(&knock_all(&mut t, a, &[tcp(8000), tcp(9000)], 200), 0));
}

#[test]
fn ignores_ports_outside_the_door() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    assert!(!t.wants(tcp(22)) && !t.wants(udp(7000)));
    assert!(t.wants(tcp(7000)));
    hit(&mut t, a, tcp(7000), 0);
    assert_eq!(hit(&mut t, a, tcp(22), 5), []);
    assert_eq!(hit(&mut t, a, udp(8000), 6), [], "same port, other protocol: not in the door");
    hit(&mut t, a, tcp(8000), 10);
    assert_eq!(hit(&mut t, a, tcp(9000), 20), [Event::Open { door: 0 }]);
}

#[test]
fn port_sweep_never_opens_a_non_monotonic_sequence() {
    // The tracker sees every port here, as if the sniffer captured everything.
    for seq in [[7000, 9000, 8000], [9000, 7000, 8000], [8000, 9000, 7000]] {
        let spec = door(&seq.map(tcp), 600_000);
        assert!(!spec.sweep_walkable());
        let mut t = tracker(vec![spec]);
        let a = ip("192.0.2.1");
        for (now, port) in (1..=u16::MAX).enumerate() {
            assert!(!opens(&hit(&mut t, a, tcp(port), now as u64), 0), "{seq:?} at {port}");
        }
        for (now, port) in (1..=u16::MAX).rev().enumerate() {
            assert!(!opens(&hit(&mut t, a, tcp(port), 70_000 + now as u64), 0), "{seq:?}");
        }
    }
}

#[test]
fn descending_sweep_never_opens_an_ascending_sequence() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    for (now, port) in (1..=u16::MAX).rev().enumerate() {
        assert!(!opens(&hit(&mut t, a, tcp(port), now as u64 / 100), 0));
    }
}

/// Not a bug but a limit of knock semantics (knockd has it too): ports outside the
/// door are ignored, so an ascending scan hits an ascending door's ports in order.
/// `sweep_walkable` lets the daemon warn about such doors.
#[test]
fn ascending_sweep_walks_an_ascending_sequence() {
    assert!(std_door().sweep_walkable());
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    let mut opened = false;
    for (now, port) in (1..=u16::MAX).enumerate() {
        opened |= opens(&hit(&mut t, a, tcp(port), now as u64 / 100), 0);
    }
    assert!(opened);
}

#[test]
fn sweep_walkable_flags_only_monotonic_single_protocol_doors() {
    let walkable = |seq: &[Service]| door(seq, 1_000).sweep_walkable();
    assert!(walkable(&[tcp(1)]));
    assert!(walkable(&[tcp(1), tcp(2)]));
    assert!(walkable(&[tcp(3), tcp(2), tcp(1)]));
    assert!(!walkable(&[tcp(1), tcp(3), tcp(2)]));
    assert!(!walkable(&[tcp(1), tcp(1), tcp(2)]));
    assert!(!walkable(&[tcp(1), udp(2), tcp(3)]));
}

#[test]
fn ignores_tcp_knocks_with_mismatched_flags() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    let synack = TcpFlags(TcpFlags::SYN | TcpFlags::ACK);
    let rstack = TcpFlags(TcpFlags::RST | TcpFlags::ACK);
    assert_eq!(hit_flags(&mut t, a, tcp(7000), synack, 0), [], "no attempt starts");
    hit(&mut t, a, tcp(7000), 1);
    // Wrong port, but fails the filter: neither progress nor reset.
    assert_eq!(hit_flags(&mut t, a, tcp(9000), synack, 2), []);
    assert_eq!(hit_flags(&mut t, a, tcp(8000), rstack, 3), []);
    assert_eq!(hit(&mut t, a, tcp(8000), 4), [stage(0, 2, 3)]);
    assert_eq!(hit_flags(&mut t, a, tcp(7000), NONE, 5), []);
    assert_eq!(hit(&mut t, a, tcp(9000), 6), [Event::Open { door: 0 }]);
}

#[test]
fn any_filter_accepts_every_tcp_packet() {
    let mut spec = std_door();
    spec.flags = FlagFilter::ANY;
    let mut t = tracker(vec![spec]);
    let a = ip("192.0.2.1");
    hit_flags(&mut t, a, tcp(7000), TcpFlags(TcpFlags::ACK), 0);
    hit_flags(&mut t, a, tcp(8000), NONE, 1);
    assert!(opens(&hit_flags(&mut t, a, tcp(9000), TcpFlags(0xff), 2), 0));
}

#[test]
fn tolerates_duplicate_syns() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    let seq = [7000, 7000, 8000, 8000, 8000, 9000].map(tcp);
    assert_eq!(knock_all(&mut t, a, &seq, 0), [stage(0, 1, 3), stage(0, 2, 3), Event::Open { door: 0 }]);
}

#[test]
fn repeat_of_an_earlier_knock_is_not_a_duplicate() {
    let mut t = tracker(vec![door(&[tcp(1000), tcp(2000), tcp(3000), tcp(4000)], 5_000)]);
    let a = ip("192.0.2.1");
    knock_all(&mut t, a, &[tcp(1000), tcp(2000), tcp(3000)], 0);
    assert_eq!(hit(&mut t, a, tcp(2000), 100), [Event::Reset { door: 0, at_stage: 3 }]);
}

#[test]
fn repeated_port_sequence_advances() {
    let mut t = tracker(vec![door(&[tcp(1000), tcp(1000), tcp(2000)], 5_000)]);
    let a = ip("192.0.2.1");
    assert_eq!(hit(&mut t, a, tcp(1000), 0), [stage(0, 1, 3)]);
    assert_eq!(hit(&mut t, a, tcp(1000), 1), [stage(0, 2, 3)]);
    assert_eq!(hit(&mut t, a, tcp(1000), 2), [], "a third 1000 is a duplicate");
    assert_eq!(hit(&mut t, a, tcp(2000), 3), [Event::Open { door: 0 }]);
    // 1000 then 2000: 2000 is neither expected nor a repeat.
    hit(&mut t, a, tcp(1000), 10);
    assert_eq!(hit(&mut t, a, tcp(2000), 11), [Event::Reset { door: 0, at_stage: 1 }]);
}

#[test]
fn repeat_inside_sequence_is_followed() {
    let mut t = tracker(vec![door(&[tcp(1), tcp(2), tcp(1), tcp(3)], 5_000)]);
    let a = ip("192.0.2.1");
    let seq = [1, 1, 2, 2, 1, 1, 3].map(tcp);
    assert!(opens(&knock_all(&mut t, a, &seq, 0), 0));
}

// ---- timeouts ----

#[test]
fn opens_one_ms_before_timeout() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 1_000);
    hit(&mut t, a, tcp(8000), 3_000);
    assert_eq!(hit(&mut t, a, tcp(9000), 5_999), [Event::Open { door: 0 }]);
}

#[test]
fn opens_exactly_at_timeout() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 1_000);
    hit(&mut t, a, tcp(8000), 3_000);
    assert_eq!(hit(&mut t, a, tcp(9000), 6_000), [Event::Open { door: 0 }]);
}

#[test]
fn fails_one_ms_after_timeout_and_reports_it_once() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 1_000);
    hit(&mut t, a, tcp(8000), 3_000);
    assert_eq!(hit(&mut t, a, tcp(9000), 6_001), [Event::TimedOut { door: 0, at_stage: 2 }]);
    assert_eq!(hit(&mut t, a, tcp(9000), 6_002), []);
    assert!(t.is_empty());
}

#[test]
fn timeout_counts_from_the_first_knock_not_the_last() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 0);
    hit(&mut t, a, tcp(8000), 4_000);
    assert_eq!(hit(&mut t, a, tcp(9000), 8_000), [Event::TimedOut { door: 0, at_stage: 2 }]);
}

#[test]
fn restarts_after_timeout() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 0);
    assert_eq!(hit(&mut t, a, tcp(7000), 6_000), [Event::TimedOut { door: 0, at_stage: 1 }, stage(0, 1, 3)]);
    hit(&mut t, a, tcp(8000), 8_000);
    assert_eq!(hit(&mut t, a, tcp(9000), 10_999), [Event::Open { door: 0 }]);
}

#[test]
fn doors_keep_their_own_timeouts() {
    let short = door(&[tcp(1), tcp(2)], 1_000);
    let long = door(&[tcp(1), tcp(3)], 10_000);
    let mut t = tracker(vec![short, long]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(1), 0);
    assert_eq!(hit(&mut t, a, tcp(2), 2_000), [Event::TimedOut { door: 0, at_stage: 1 }]);
    assert_eq!(hit(&mut t, a, tcp(3), 9_000), [Event::Open { door: 1 }]);
}

#[test]
fn survives_the_32_bit_millisecond_wrap() {
    let origin = (1u64 << 32) - 2_000;
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), origin);
    hit(&mut t, a, tcp(8000), origin + 2_500);
    assert_eq!(hit(&mut t, a, tcp(9000), origin + 5_000), [Event::Open { door: 0 }]);
    hit(&mut t, a, tcp(7000), origin + 10_000);
    assert_eq!(hit(&mut t, a, tcp(8000), origin + 15_001), [Event::TimedOut { door: 0, at_stage: 1 }]);
}

#[test]
fn stale_attempt_does_not_revive_when_time_wraps() {
    // 2^32 ms later the truncated start time matches again; the attempt must be gone
    // even though housekeeping never ran.
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 100);
    assert_eq!(hit(&mut t, a, tcp(8000), 100 + (1 << 32)), []);
    assert!(t.is_empty());
}

#[test]
fn backwards_clock_does_not_panic_or_expire() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 10_000);
    hit(&mut t, a, tcp(8000), 9_000);
    t.housekeeping(Millis(0));
    assert_eq!(hit(&mut t, a, tcp(9000), 0), [Event::Open { door: 0 }]);
    hit(&mut t, a, tcp(7000), u64::MAX);
    t.housekeeping(Millis(u64::MAX));
    hit(&mut t, a, tcp(8000), 0);
}

// ---- several doors and sources ----

#[test]
fn doors_sharing_a_prefix_progress_independently() {
    let d0 = door(&[tcp(1), tcp(2), tcp(3)], 5_000);
    let d1 = door(&[tcp(1), tcp(2), tcp(4)], 5_000);
    let mut t = tracker(vec![d0, d1]);
    let a = ip("192.0.2.1");
    assert_eq!(
        knock_all(&mut t, a, &[tcp(1), tcp(2), tcp(3)], 0),
        [
            stage(0, 1, 3),
            stage(1, 1, 3),
            stage(0, 2, 3),
            stage(1, 2, 3),
            Event::Open { door: 0 },
            // Port 3 is not in door 1, so door 1 keeps its progress.
        ]
    );
    assert_eq!(hit(&mut t, a, tcp(4), 100), [Event::Open { door: 1 }]);
}

#[test]
fn doors_sharing_a_port_reset_independently() {
    let d0 = door(&[tcp(1), tcp(2), tcp(3)], 5_000);
    let d1 = door(&[tcp(3), tcp(2), tcp(1)], 5_000);
    let mut t = tracker(vec![d0, d1]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(1), 0);
    hit(&mut t, a, tcp(2), 1);
    assert_eq!(
        hit(&mut t, a, tcp(3), 2),
        [Event::Open { door: 0 }, stage(1, 1, 3)],
        "door 1 had no attempt, so port 3 starts one"
    );
    assert_eq!(hit(&mut t, a, tcp(1), 3), [stage(0, 1, 3), Event::Reset { door: 1, at_stage: 1 }]);
}

#[test]
fn interleaved_sources_progress_independently() {
    let mut t = tracker(vec![std_door()]);
    let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::3"));
    let seq = [tcp(7000), tcp(8000), tcp(9000)];
    let mut opened = Vec::new();
    for (i, &svc) in seq.iter().enumerate() {
        let now = 10 * i as u64;
        for src in [a, b] {
            if opens(&hit(&mut t, src, svc, now), 0) {
                opened.push(src);
            }
        }
        // c knocks wrong ports throughout: it only ever resets itself.
        hit(&mut t, c, tcp(9000), now + 1);
        hit(&mut t, c, tcp(7000), now + 2);
    }
    assert_eq!(opened, [a, b]);
    assert_eq!(t.len(), 1, "only c's attempt is left");
}

/// knockd 0.8 set the attempt list head to NULL when removing the head, dropping
/// everyone else's progress. See: /work/shared/reference/knockd.md §3.4.
#[test]
fn one_source_finishing_or_failing_keeps_others_progress() {
    let mut t = tracker(vec![std_door()]);
    let srcs: Vec<IpAddr> = (1..=4).map(|n| v4(0xC000_0200 + n)).collect();
    for (i, &s) in srcs.iter().enumerate() {
        hit(&mut t, s, tcp(7000), i as u64);
    }
    // The oldest attempt completes, the next one fails.
    hit(&mut t, srcs[0], tcp(8000), 10);
    assert!(opens(&hit(&mut t, srcs[0], tcp(9000), 11), 0));
    assert_eq!(hit(&mut t, srcs[1], tcp(9000), 12), [Event::Reset { door: 0, at_stage: 1 }]);
    for &s in &srcs[2..] {
        assert_eq!(hit(&mut t, s, tcp(8000), 20), [stage(0, 2, 3)]);
        assert!(opens(&hit(&mut t, s, tcp(9000), 30), 0));
    }
}

// ---- protocols and addresses ----

#[test]
fn udp_door_opens_whatever_the_flags() {
    let mut t = tracker(vec![door(&[udp(1000), udp(2000)], 5_000)]);
    let a = ip("192.0.2.1");
    // UDP has no flags; even garbage in the flags argument is not filtered.
    hit_flags(&mut t, a, udp(1000), TcpFlags(TcpFlags::ACK), 0);
    assert!(opens(&hit_flags(&mut t, a, udp(2000), NONE, 1), 0));
}

#[test]
fn mixed_protocol_door_needs_each_protocol() {
    let mut t = tracker(vec![door(&[tcp(1000), udp(2000), tcp(3000)], 5_000)]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(1000), 0);
    assert_eq!(hit(&mut t, a, tcp(2000), 1), [], "tcp/2000 is not in the door");
    assert_eq!(hit(&mut t, a, udp(2000), 2), [stage(0, 2, 3)]);
    assert_eq!(hit(&mut t, a, udp(3000), 3), []);
    assert_eq!(hit(&mut t, a, tcp(3000), 4), [Event::Open { door: 0 }]);
}

#[test]
fn ipv6_sources_are_tracked() {
    let mut t = tracker(vec![std_door()]);
    let (a, b) = (ip("2001:db8::1"), ip("2001:db8::2"));
    hit(&mut t, a, tcp(7000), 0);
    hit(&mut t, a, tcp(8000), 1);
    assert_eq!(hit(&mut t, b, tcp(9000), 2), [], "b has no attempt");
    assert!(opens(&hit(&mut t, a, tcp(9000), 3), 0));
}

#[test]
fn ipv4_mapped_ipv6_is_the_ipv4_source() {
    let mut t = tracker(vec![std_door()]);
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    hit(&mut t, ip("192.0.2.1"), tcp(7000), 0);
    hit(&mut t, mapped, tcp(8000), 1);
    assert!(opens(&hit(&mut t, ip("192.0.2.1"), tcp(9000), 2), 0));
    // A different IPv6 address with the same low 32 bits is someone else.
    let compat = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc000, 0x0201));
    hit(&mut t, ip("192.0.2.1"), tcp(7000), 10);
    assert_eq!(hit(&mut t, compat, tcp(8000), 11), []);
}

#[test]
fn one_knock_door_opens_immediately() {
    let mut t = tracker(vec![door(&[udp(5000)], 5_000), door(&[tcp(6000)], 5_000)]);
    let a = ip("192.0.2.1");
    assert_eq!(hit(&mut t, a, udp(5000), 0), [Event::Open { door: 0 }]);
    assert_eq!(hit(&mut t, a, udp(5000), 1), [Event::Open { door: 0 }], "every packet opens");
    assert_eq!(hit_flags(&mut t, a, tcp(6000), TcpFlags(TcpFlags::ACK), 2), []);
    assert_eq!(hit(&mut t, a, tcp(6000), 3), [Event::Open { door: 1 }]);
    assert!(t.is_empty() && t.slots() == 0, "nothing is stored for 1-knock doors");
}

// ---- configuration ----

#[test]
fn set_sequence_replaces_sequence_and_forgets_progress() {
    let mut t = tracker(vec![std_door(), door(&[tcp(1), tcp(2)], 5_000)]);
    let (a, b) = (ip("192.0.2.1"), ip("2001:db8::1"));
    knock_all(&mut t, a, &[tcp(7000), tcp(8000)], 0);
    hit(&mut t, b, tcp(1), 0);
    t.set_sequence(0, Some(vec![tcp(7100), tcp(8000), tcp(9000)])).expect("valid");
    assert_eq!(t.len(), 1, "door 1's progress is kept");
    assert!(!t.wants(tcp(7000)) && t.wants(tcp(7100)));
    assert_eq!(t.doors()[0].sequence, [tcp(7100), tcp(8000), tcp(9000)]);
    assert_eq!(hit(&mut t, a, tcp(9000), 100), [], "old progress is gone");
    assert!(opens(&knock_all(&mut t, a, &[tcp(7100), tcp(8000), tcp(9000)], 200), 0));
    assert!(opens(&hit(&mut t, b, tcp(2), 300), 1));
}

#[test]
fn set_sequence_forgets_progress_in_both_generations() {
    let mut t = Tracker::new(vec![std_door()], 4).expect("valid");
    let srcs: Vec<IpAddr> = (0..4).map(v4).collect();
    for (i, &s) in srcs.iter().enumerate() {
        hit(&mut t, s, tcp(7000), i as u64);
    }
    assert_eq!(t.len(), 4);
    t.set_sequence(0, Some(std_door().sequence)).expect("valid");
    assert!(t.is_empty());
    for &s in &srcs {
        assert_eq!(hit(&mut t, s, tcp(8000), 10), []);
    }
}

#[test]
fn disabled_door_ignores_its_ports_until_re_enabled() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 0);
    t.set_sequence(0, None).expect("door exists");
    assert!(t.is_empty());
    assert!(t.doors()[0].sequence.is_empty());
    assert!(!t.wants(tcp(7000)));
    assert_eq!(knock_all(&mut t, a, &std_door().sequence, 10), []);
    t.set_sequence(0, Some(std_door().sequence)).expect("valid");
    assert!(opens(&knock_all(&mut t, a, &std_door().sequence, 100), 0));
}

#[test]
fn set_sequence_rejects_bad_input_and_changes_nothing() {
    let mut t = tracker(vec![std_door()]);
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(7000), 0);
    assert_eq!(t.set_sequence(1, None), Err(SpecError::NoSuchDoor { door: 1 }));
    assert_eq!(t.set_sequence(usize::MAX, None), Err(SpecError::NoSuchDoor { door: usize::MAX }));
    assert_eq!(t.set_sequence(0, Some(vec![])), Err(SpecError::EmptySequence { door: 0 }));
    assert_eq!(
        t.set_sequence(0, Some(vec![tcp(1); 33])),
        Err(SpecError::SequenceTooLong { door: 0, len: 33 })
    );
    assert_eq!(t.len(), 1);
    assert_eq!(t.doors()[0], std_door());
}

#[test]
fn new_rejects_invalid_specs() {
    let err = |doors: Vec<DoorSpec>, cap: usize| Tracker::new(doors, cap).err();
    assert_eq!(err(vec![door(&[], 1_000)], 10), Some(SpecError::EmptySequence { door: 0 }));
    assert_eq!(
        err(vec![std_door(), door(&[tcp(1); 33], 1_000)], 10),
        Some(SpecError::SequenceTooLong { door: 1, len: 33 })
    );
    assert_eq!(err(vec![door(&[tcp(1)], 0)], 10), Some(SpecError::BadTimeout { door: 0 }));
    let mut sub_ms = std_door();
    sub_ms.timeout = Duration::from_micros(999);
    assert_eq!(err(vec![sub_ms], 10), Some(SpecError::BadTimeout { door: 0 }));
    let mut too_long = std_door();
    too_long.timeout = MAX_TIMEOUT + Duration::from_millis(1);
    assert_eq!(err(vec![too_long], 10), Some(SpecError::BadTimeout { door: 0 }));
    assert_eq!(err(vec![std_door()], 0), Some(SpecError::BadCapacity));
    assert_eq!(err(vec![std_door()], 1), Some(SpecError::BadCapacity));
    assert_eq!(err(vec![std_door()], MAX_CAPACITY + 1), Some(SpecError::BadCapacity));
    assert_eq!(err(vec![door(&[tcp(1)], 1); MAX_DOORS + 1], 10), Some(SpecError::TooManyDoors));

    let mut max = std_door();
    max.timeout = MAX_TIMEOUT;
    assert!(Tracker::new(vec![max, door(&[tcp(1); 32], 1)], 2).is_ok());
    assert!(Tracker::new(vec![door(&[tcp(1)], 1); MAX_DOORS], 2).is_ok());
    assert!(Tracker::new(vec![], 2).is_ok(), "no doors: a tracker that ignores everything");
    assert!(SpecError::BadCapacity.to_string().contains("capacity"));
}

#[test]
fn last_of_many_doors_works() {
    let mut doors = vec![door(&[tcp(1)], 1); MAX_DOORS - 1];
    doors.push(door(&[tcp(2), tcp(3)], 1_000));
    let mut t = Tracker::new(doors, 10).expect("valid");
    let a = ip("192.0.2.1");
    hit(&mut t, a, tcp(2), 0);
    assert_eq!(hit(&mut t, a, tcp(3), 1), [Event::Open { door: MAX_DOORS - 1 }]);
}

// ---- bounds, eviction, memory ----

#[test]
fn unmatched_packets_emit_nothing_and_allocate_nothing() {
    let mut t = tracker(vec![std_door()]);
    for n in 0..10_000u32 {
        assert_eq!(hit(&mut t, v4(n), tcp(22), u64::from(n)), []);
        assert_eq!(hit(&mut t, v4(n), udp(7000), u64::from(n)), []);
    }
    assert_eq!(t.memory_allocated_bytes(), 0);
    assert!(t.is_empty());
}

#[test]
fn len_never_exceeds_capacity_under_flood() {
    for cap in [2, 3, 10, 101] {
        let mut t = Tracker::new(vec![std_door(), door(&[tcp(7000), tcp(1)], 5_000)], cap).expect("valid");
        for n in 0..5_000u32 {
            hit(&mut t, v4(n), tcp(7000), u64::from(n / 10));
            assert!(t.len() <= cap && t.slots() <= cap, "cap {cap}: {} {}", t.len(), t.slots());
        }
        assert_eq!(t.slots(), cap / 2 * 2, "both generations full");
        assert!(t.memory_allocated_bytes() <= t.memory_bound_bytes());
    }
}

#[test]
fn forgets_oldest_attempts_first() {
    let mut t = Tracker::new(vec![std_door()], 10).expect("valid");
    let srcs: Vec<IpAddr> = (0..11).map(v4).collect();
    for (i, &s) in srcs[..10].iter().enumerate() {
        hit(&mut t, s, tcp(7000), i as u64);
    }
    assert_eq!(t.len(), 10, "room for exactly capacity attempts");
    hit(&mut t, srcs[10], tcp(7000), 10);
    assert_eq!(t.len(), 6, "the older generation (sources 0..5) was forgotten");
    for &s in &srcs[..5] {
        assert_eq!(hit(&mut t, s, tcp(8000), 20), [], "evicted");
    }
    for &s in &srcs[5..] {
        assert_eq!(hit(&mut t, s, tcp(8000), 20), [stage(0, 2, 3)], "kept");
    }
}

#[test]
fn progress_moves_an_attempt_to_the_new_generation() {
    let mut t = Tracker::new(vec![std_door()], 10).expect("valid");
    let a = ip("2001:db8::a");
    hit(&mut t, a, tcp(7000), 0);
    // Fill both generations after a, so a sits in the older one.
    for n in 0..5 {
        hit(&mut t, v4(n), tcp(7000), 1);
    }
    assert_eq!(hit(&mut t, a, tcp(8000), 2), [stage(0, 2, 3)]);
    // Another 4 newcomers rotate away the generation a came from, not a.
    for n in 10..14 {
        hit(&mut t, v4(n), tcp(7000), 3);
    }
    assert!(t.len() <= 10);
    assert!(opens(&hit(&mut t, a, tcp(9000), 4), 0));
}

#[test]
fn legit_source_opens_amid_a_flood() {
    let cap = 1_000;
    let mut t = Tracker::new(vec![std_door()], cap).expect("valid");
    let legit = ip("2001:db8::1");
    let mut spoofed = 0u32;
    let mut now = 0;
    let mut opened = false;
    for &svc in &std_door().sequence {
        // Just under capacity / 2 spoofed first knocks between each real knock.
        for _ in 0..(cap / 2 - 1) {
            hit(&mut t, v4(spoofed), tcp(7000), now);
            spoofed += 1;
            assert!(t.slots() <= cap);
        }
        now += 50;
        opened |= opens(&hit(&mut t, legit, svc, now), 0);
    }
    assert!(opened);
}

#[test]
fn memory_returns_to_zero_after_flood_and_housekeeping() {
    let mut t = Tracker::new(vec![std_door(), door(&[tcp(7000), tcp(1)], 1_000)], 1_000).expect("valid");
    for n in 0..5_000u32 {
        hit(&mut t, v4(n), tcp(7000), u64::from(n / 5)); // flood over t = 0..1000 ms
    }
    assert!(!t.is_empty() && t.memory_allocated_bytes() > 0);
    t.housekeeping(Millis(999 + 5_000));
    assert!(!t.is_empty(), "the newest attempts may still be live");
    t.housekeeping(Millis(999 + 5_001));
    assert_eq!((t.len(), t.slots(), t.memory_allocated_bytes()), (0, 0, 0));
    // And the tracker still works afterwards.
    assert!(opens(&knock_all(&mut t, ip("192.0.2.1"), &std_door().sequence, 10_000), 0));
}

#[test]
fn matching_packet_frees_generations_after_twice_the_timeout() {
    let mut t = Tracker::new(vec![std_door()], 1_000).expect("valid");
    for n in 0..2_000u32 {
        hit(&mut t, v4(n), tcp(7000), 0);
    }
    // Within the slack, expired attempts are kept so that a retry reports TimedOut.
    assert_eq!(
        hit(&mut t, v4(1_999), tcp(7000), 10_000).first(),
        Some(&Event::TimedOut { door: 0, at_stage: 1 })
    );
    assert_eq!(t.len(), 1_000);
    // Past twice the timeout, packets collect them even without housekeeping.
    hit(&mut t, ip("192.0.2.1"), tcp(7000), 20_001);
    assert_eq!((t.len(), t.slots()), (1, 1));
}

#[test]
fn memory_bound_is_about_50_bytes_per_attempt_at_the_default_capacity() {
    let t = Tracker::new(vec![std_door()], 1_000_000).expect("valid");
    assert_eq!(t.memory_allocated_bytes(), 0, "nothing is allocated before use");
    let per_attempt = t.memory_bound_bytes() as f64 / 1_000_000.0;
    assert!((50.0..51.0).contains(&per_attempt), "{per_attempt}");
    // Best case: capacity / 2 exactly fills a power-of-two table at 7/8 load.
    let t = Tracker::new(vec![std_door()], 2 * 917_504).expect("valid");
    let per_attempt = t.memory_bound_bytes() as f64 / (2.0 * 917_504.0);
    assert!(per_attempt < 28.0, "{per_attempt}");
}

#[test]
fn small_tracker_allocation_matches_its_bound() {
    let mut t = Tracker::new(vec![std_door()], 200).expect("valid");
    for n in 0..1_000u32 {
        hit(&mut t, v4(n), tcp(7000), 0);
    }
    // Both generations allocated and full: the estimate of what is allocated equals
    // the bound (both computed from the real tables' bucket counts).
    assert_eq!(t.memory_allocated_bytes(), t.memory_bound_bytes());
    assert!(t.memory_bound_bytes() <= 2 * (128 * 24 + 32));
}

#[test]
fn handles_200k_spoofed_sources_with_100k_capacity() {
    let mut t = Tracker::new(vec![std_door()], 100_000).expect("valid");
    let mut events = 0usize;
    for n in 0..200_000u32 {
        t.observe(v4(n), tcp(7000), SYN, Millis(u64::from(n / 100)), &mut |_| events += 1);
    }
    assert_eq!(events, 200_000);
    assert!(t.len() <= 100_000 && t.len() >= 50_000);
}

// ---- properties ----

/// A direct transcription of the semantics with unbounded memory, to check the
/// tracker against when capacity is never reached.
#[derive(Default)]
struct Model {
    attempts: HashMap<(IpAddr, DoorId), (usize, u64)>,
}

impl Model {
    fn observe(
        &mut self,
        doors: &[DoorSpec],
        src: IpAddr,
        svc: Service,
        flags: TcpFlags,
        now: u64,
    ) -> Vec<Event> {
        let src = match src {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        let mut out = Vec::new();
        for (door, spec) in doors.iter().enumerate() {
            let seq = &spec.sequence;
            if !seq.contains(&svc) || (svc.proto == Proto::Tcp && !spec.flags.matches(flags)) {
                continue;
            }
            let timeout = spec.timeout.as_millis() as u64;
            let mut cur = self.attempts.get(&(src, door)).copied();
            if let Some((stage, started)) = cur {
                if now.saturating_sub(started) > timeout {
                    self.attempts.remove(&(src, door));
                    out.push(Event::TimedOut { door, at_stage: stage });
                    cur = None;
                }
            }
            let start = |m: &mut Model, out: &mut Vec<Event>| {
                if seq.len() == 1 {
                    out.push(Event::Open { door });
                } else {
                    m.attempts.insert((src, door), (1, now));
                    out.push(Event::Stage { door, stage: 1, of: seq.len() });
                }
            };
            match cur {
                Some((stage, started)) if seq[stage] == svc => {
                    if stage + 1 == seq.len() {
                        self.attempts.remove(&(src, door));
                        out.push(Event::Open { door });
                    } else {
                        self.attempts.insert((src, door), (stage + 1, started));
                        out.push(Event::Stage { door, stage: stage + 1, of: seq.len() });
                    }
                }
                Some((stage, _)) if seq[stage - 1] == svc => {}
                Some((stage, _)) => {
                    self.attempts.remove(&(src, door));
                    out.push(Event::Reset { door, at_stage: stage });
                    if seq[0] == svc {
                        start(self, &mut out);
                    }
                }
                None if seq[0] == svc => start(self, &mut out),
                None => {}
            }
        }
        out
    }
}

fn prop_doors() -> Vec<DoorSpec> {
    vec![
        door(&[tcp(1), tcp(2), tcp(3)], 300),
        door(&[tcp(1), tcp(2), tcp(4)], 1_000),
        door(&[tcp(2), tcp(2), udp(5), tcp(1)], 700),
        door(&[udp(5)], 100),
        door(&[udp(6), udp(5), udp(6)], 2_000),
    ]
}

#[derive(Debug, Clone)]
struct Packet {
    src: u8,
    v6: bool,
    svc: Service,
    flags: u8,
    dt: u16,
    housekeeping: bool,
}

fn packet() -> impl Strategy<Value = Packet> {
    let svc = prop_oneof![
        (1u16..=7).prop_map(Service::tcp),
        (1u16..=7).prop_map(Service::udp),
        any::<u16>().prop_map(Service::tcp),
    ];
    (
        0u8..12,
        any::<bool>(),
        svc,
        prop_oneof![Just(TcpFlags::SYN), any::<u8>()],
        0u16..400,
        prop::bool::weighted(0.05),
    )
        .prop_map(|(src, v6, svc, flags, dt, housekeeping)| Packet {
            src,
            v6,
            svc,
            flags,
            dt,
            housekeeping,
        })
}

fn src_of(p: &Packet) -> IpAddr {
    // Sources 0..6 spell the same IPv4 address both ways when v6 is set.
    let a = Ipv4Addr::new(198, 51, 100, p.src);
    match (p.v6, p.src < 6) {
        (true, true) => IpAddr::V6(a.to_ipv6_mapped()),
        (true, false) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(p.src))),
        (false, _) => IpAddr::V4(a),
    }
}

proptest! {
    #[test]
    fn never_exceeds_capacity_or_panics(
        cap in 2usize..40,
        start in prop_oneof![Just(0u64), Just((1u64 << 32) - 1_000), Just(u64::MAX - 1_000_000)],
        packets in prop::collection::vec(packet(), 0..600),
    ) {
        let mut t = Tracker::new(prop_doors(), cap).expect("valid");
        let mut now = start;
        for p in &packets {
            now = now.saturating_add(u64::from(p.dt));
            if p.housekeeping {
                t.housekeeping(Millis(now));
            }
            t.observe(src_of(p), p.svc, TcpFlags(p.flags), Millis(now), &mut |_| {});
            prop_assert!(t.len() <= cap && t.slots() <= cap);
            prop_assert!(t.len() <= t.slots());
            prop_assert!(t.memory_allocated_bytes() <= t.memory_bound_bytes());
        }
    }

    #[test]
    fn agrees_with_the_model_when_under_capacity(
        packets in prop::collection::vec(packet(), 0..600),
    ) {
        let doors = prop_doors();
        let mut t = Tracker::new(doors.clone(), 10_000).expect("valid");
        let mut m = Model::default();
        let mut now = 5_000u64;
        for p in &packets {
            now += u64::from(p.dt);
            if p.housekeeping {
                t.housekeeping(Millis(now));
            }
            let mut got = Vec::new();
            t.observe(src_of(p), p.svc, TcpFlags(p.flags), Millis(now), &mut |e| got.push(e));
            let want = m.observe(&doors, src_of(p), p.svc, TcpFlags(p.flags), now);
            // Expired attempts may be freed silently by aging, so the tracker reports a
            // subset of the model's timeouts; every other event must match exactly.
            let not_timeout = |e: &&Event| !matches!(e, Event::TimedOut { .. });
            let got_rest: Vec<_> = got.iter().filter(not_timeout).collect();
            let want_rest: Vec<_> = want.iter().filter(not_timeout).collect();
            prop_assert_eq!(got_rest, want_rest, "packet {:?} at {}", p, now);
            for e in got.iter().filter(|e| matches!(e, Event::TimedOut { .. })) {
                prop_assert!(want.contains(e));
            }
        }
    }
}
