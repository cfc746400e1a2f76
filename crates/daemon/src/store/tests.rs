//! The store thread on a temp database and a manual clock: it records and closes what
//! it is told, in order, and counts what it cannot.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis_proto::Service;

use super::*;
use crate::firewall::Prefix;
use crate::grants::clock::ManualClock;
use crate::grants::origin::{Origin, OriginKind};

const T0: i64 = 1_800_000_000_000;

fn open(opts: Options) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let s = Store::open(&dir.path().join("grants.db"), Options { clock: clock.clone(), ..opts }).unwrap();
    (dir, clock, s)
}

fn new(addr: &str, at: i64, secs: u64) -> NewGrants {
    NewGrants {
        origin: Origin { kind: OriginKind::Door, detail: "ssh".into() },
        addr: addr.parse().unwrap(),
        len: Prefix::host(addr.parse().unwrap()).len,
        services: vec![Service::tcp(22)],
        requested_at: at,
        effective_at: at,
        duration: Duration::from_secs(secs),
        driver: "none",
        result: Ok(()),
    }
}

fn key(addr: &str) -> CloseTarget {
    CloseTarget::Key(Prefix::host(addr.parse::<IpAddr>().unwrap()), Service::tcp(22))
}

#[test]
fn records_and_closes_apply_in_channel_order_with_the_times_given() {
    let (_d, clock, s) = open(Options::default());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // A grant, its expiry and a new grant of the same key, all queued without waiting.
    s.record_nowait(new("192.0.2.2", T0, 1));
    s.close_nowait(vec![Closing {
        target: key("192.0.2.2"),
        state: GrantState::Expired,
        by: None,
        at: T0 + 1000,
    }]);
    clock.advance(Duration::from_secs(5));
    let rows = rt.block_on(s.record(new("192.0.2.2", clock.now_ms(), 30)).unwrap()).unwrap().unwrap();
    assert_eq!(
        (rows[0].state, rows[0].expires_at, rows[0].refresh_count),
        (GrantState::Active, T0 + 35_000, 0)
    );
    let (all, total) = s.list(&Filter::default()).unwrap();
    assert_eq!(total, 2);
    assert_eq!((all[1].state, all[1].closed_at), (GrantState::Expired, Some(T0 + 1000)));
    // Revoke by id: the whole row comes back; a second close finds it closed.
    let revoke = Closing {
        target: CloseTarget::Id(rows[0].id),
        state: GrantState::Revoked,
        by: Some("t".into()),
        at: T0 + 6000,
    };
    let r = rt.block_on(s.close(vec![revoke.clone()]).unwrap()).unwrap().unwrap();
    assert!(
        matches!(&r[..], [Closed::Done(g)] if g.revoked_by.as_deref() == Some("t") && g.closed_at == Some(T0 + 6000))
    );
    let r = rt.block_on(s.close(vec![revoke]).unwrap()).unwrap().unwrap();
    assert!(matches!(&r[..], [Closed::NotActive(g)] if g.state == GrantState::Revoked));
    assert!(s.all_active().unwrap().is_empty());
    assert_eq!(
        s.counts().unwrap(),
        vec![("door".into(), "expired".into(), 1), ("door".into(), "revoked".into(), 1)]
    );
}

#[test]
fn a_refusing_channel_or_a_stopped_thread_drops_counts_and_answers_busy() {
    let (_d, _clock, s) = open(Options { capacity: 0, paused: true, ..Options::default() });
    s.record_nowait(new("192.0.2.2", T0, 1));
    s.close_nowait(vec![Closing { target: key("192.0.2.2"), state: GrantState::Expired, by: None, at: T0 }]);
    assert_eq!(s.counters().dropped.load(Ordering::Relaxed), 2);
    let (_d, _clock, s) = open(Options::default());
    s.shutdown();
    s.record_nowait(new("192.0.2.2", T0, 1));
    assert_eq!(s.counters().dropped.load(Ordering::Relaxed), 1);
    assert_eq!(s.record(new("192.0.2.2", T0, 1)).err(), Some(StoreError::Busy));
}

#[test]
fn a_full_disk_rolls_back_and_counts() {
    let (_d, _clock, s) = open(Options { max_pages: Some(12), ..Options::default() });
    let mut n = 0u32;
    while s.counters().errors.load(Ordering::Relaxed) == 0 && n < 5000 {
        let mut g = new("192.0.2.2", T0, 60);
        g.addr = IpAddr::from([10, 0, (n >> 8) as u8, n as u8]);
        s.record_nowait(g);
        n += 1;
        if n % 100 == 0 {
            s.sync_blocking();
        }
    }
    s.sync_blocking();
    assert!(s.counters().errors.load(Ordering::Relaxed) > 0, "never filled up after {n} records");
    let (rows, total) = s.list(&Filter { per_page: 1000, ..Filter::default() }).unwrap();
    assert!(
        total < u64::from(n) && rows.iter().all(|r| r.state == GrantState::Active),
        "nothing half-written"
    );
}

#[test]
fn retention_deletes_closed_records_once_they_are_older_than_it() {
    let keep = Duration::from_secs(30 * 86_400);
    let (_d, clock, s) = open(Options { retention: Some(keep), ..Options::default() });
    // 2,500 closed grants (more than one batch) and one active.
    for i in 0..2500u32 {
        let mut g = new("192.0.2.2", T0, 1);
        g.addr = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        s.record_nowait(g.clone());
        s.close_nowait(vec![Closing {
            target: CloseTarget::Key(Prefix::host(g.addr), Service::tcp(22)),
            state: GrantState::Expired,
            by: None,
            at: T0 + 1000,
        }]);
        if i % 500 == 0 {
            s.sync_blocking();
        }
    }
    s.record_nowait(new("192.0.2.9", T0, 86_400 * 365));
    s.sync_blocking();
    let total = |s: &Store| s.list(&Filter::default()).unwrap().1;
    assert_eq!(total(&s), 2501);
    // One millisecond short of the retention: nothing goes.
    clock.advance(keep);
    s.sync_blocking();
    s.sync_blocking();
    assert_eq!(total(&s), 2501);
    assert_eq!(s.prune_blocking(), 0);
    // Past it, at its next run (every keep / 4, at most 10 min): the store thread deletes
    // them by itself, a batch at a time between commands.
    clock.advance(Duration::from_millis(1001));
    s.sync_blocking();
    s.sync_blocking();
    assert_eq!(total(&s), 2501, "not due yet");
    clock.advance(Duration::from_secs(600));
    for _ in 0..5 {
        s.sync_blocking();
    }
    assert_eq!(total(&s), 1, "only the active record is left");
    assert_eq!(s.counters().pruned.load(Ordering::Relaxed), 2500);
    assert_eq!(s.all_active().unwrap().len(), 1);
}

#[test]
fn without_retention_nothing_is_deleted() {
    let (_d, clock, s) = open(Options::default());
    s.record_nowait(new("192.0.2.2", T0, 1));
    s.close_nowait(vec![Closing { target: key("192.0.2.2"), state: GrantState::Expired, by: None, at: T0 }]);
    clock.advance(Duration::from_secs(100 * 365 * 86_400));
    assert_eq!(s.prune_blocking(), 0);
    assert_eq!(s.list(&Filter::default()).unwrap().1, 1);
}

#[test]
fn the_database_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.db");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Store::open(&path, Options::default()).unwrap();
    s.record_nowait(new("192.0.2.2", T0, 1));
    s.sync_blocking();
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("grants.db{suffix}"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}
