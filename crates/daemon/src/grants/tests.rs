//! The grant lifecycle on a temp store, the recording [`NoFirewall`] driver (no kernel
//! expiry: the daemon closes) and a manual clock: time advances, nothing sleeps.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use portcullis_proto::Service;
use rusqlite::Connection;

use super::clock::ManualClock;
use super::*;
use crate::firewall::none::NoFirewall;
use crate::firewall::{FirewallError, LiveGrant, Prefix};
use crate::store::{Filter, GrantState, Options};

const T0: i64 = 1_800_000_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
    clock: Arc<ManualClock>,
    granter: Arc<Granter>,
}

/// `NoFirewall` whose grants for some addresses look older than they are (its own
/// `list` reports remaining == timeout, i.e. "just granted").
struct Aged(NoFirewall, Vec<(IpAddr, Duration)>);

impl FirewallDriver for Aged {
    fn name(&self) -> &'static str {
        "aged"
    }
    fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError> {
        self.0.setup(plan)
    }
    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
        self.0.grant(grants)
    }
    fn revoke(&mut self, grants: &[crate::firewall::Key]) -> Result<(), FirewallError> {
        self.0.revoke(grants)
    }
    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
        let mut l = self.0.list()?;
        for g in &mut l {
            if let Some((_, age)) = self.1.iter().find(|(a, _)| *a == g.addr) {
                g.remaining = g.remaining.map(|r| r.saturating_sub(*age));
            }
        }
        Ok(l)
    }
    fn teardown(&mut self) -> Result<(), FirewallError> {
        self.0.teardown()
    }
    fn kernel_expiry(&self) -> bool {
        false
    }
}

fn fixture_full(opts: Options, driver: Box<dyn FirewallDriver>, dir: Option<tempfile::TempDir>) -> Fixture {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let path = dir.path().join("grants.db");
    let clock = ManualClock::new(T0);
    let store = Store::open(&path, Options { clock: clock.clone(), ..opts });
    let granter =
        Granter::new(firewall::Shared::new(driver), vec![Service::tcp(22)], store, clock.clone()).unwrap();
    Fixture { dir, path, clock, granter }
}

fn fixture_with(opts: Options) -> Fixture {
    fixture_full(opts, Box::new(NoFirewall::default()), None)
}

fn fixture() -> Fixture {
    fixture_with(Options::default())
}

fn door(name: &str) -> Origin {
    Origin { kind: OriginKind::Door, detail: name.into() }
}

fn api(name: &str) -> Origin {
    Origin { kind: OriginKind::Api, detail: name.into() }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn live(f: &Fixture) -> Vec<(IpAddr, Service)> {
    let mut l: Vec<_> = f.granter.live().unwrap().into_iter().map(|g| (g.addr, g.service)).collect();
    l.sort();
    l
}

fn all(f: &Fixture) -> Vec<crate::store::GrantRecord> {
    let s = f.granter.store().unwrap();
    s.sync_blocking();
    s.list(&Filter { per_page: 1000, ..Filter::default() }).unwrap().0
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn grant(f: &Fixture, a: &str, d: Duration) {
    f.granter.grant(door("d"), ip(a), &[Service::tcp(22)], d).unwrap();
}

#[test]
fn capture_path_grants_are_recorded_and_repeats_refresh() {
    let f = fixture();
    f.granter
        .grant(door("ssh"), ip("::ffff:192.0.2.2"), &[Service::tcp(22)], Duration::from_secs(30))
        .unwrap();
    f.clock.advance(Duration::from_secs(5));
    f.granter.grant(door("ssh"), ip("192.0.2.2"), &[Service::tcp(22)], Duration::from_secs(60)).unwrap();
    let recs = all(&f);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!((r.address, r.service, r.state), (ip("192.0.2.2"), Service::tcp(22), GrantState::Active));
    assert_eq!((r.origin.clone(), r.refresh_count, r.duration_ms), (door("ssh"), 1, 60_000));
    assert_eq!((r.effective_at, r.expires_at), (Some(T0), T0 + 65_000));
    assert_eq!(live(&f), vec![(ip("192.0.2.2"), Service::tcp(22))]);
    assert_eq!(f.granter.scheduled(), 1);
}

#[test]
fn daemon_side_expiry_closes_on_time_and_refresh_moves_the_deadline() {
    let f = fixture();
    assert!(!f.granter.kernel_expiry());
    grant(&f, "192.0.2.2", Duration::from_millis(1));
    grant(&f, "192.0.2.3", Duration::from_secs(1));
    grant(&f, "192.0.2.4", Duration::from_secs(60));
    grant(&f, "192.0.2.5", Duration::from_secs(2));
    f.clock.advance(Duration::from_millis(500));
    grant(&f, "192.0.2.5", Duration::from_secs(2)); // a repeat knock: now due at 2.5 s
    f.clock.advance(Duration::from_millis(499));
    f.granter.expire_due();
    assert_eq!(live(&f).len(), 3, "only the 1 ms grant is due at 999 ms");
    f.clock.advance(Duration::from_millis(1));
    f.granter.expire_due();
    assert_eq!(live(&f), vec![(ip("192.0.2.4"), Service::tcp(22)), (ip("192.0.2.5"), Service::tcp(22))]);
    f.clock.advance(Duration::from_millis(1499));
    f.granter.expire_due();
    assert_eq!(live(&f).len(), 2, "the refreshed deadline counts");
    f.clock.advance(Duration::from_millis(1));
    f.granter.expire_due();
    assert_eq!(live(&f), vec![(ip("192.0.2.4"), Service::tcp(22))]);
    let states: Vec<(String, GrantState, Option<i64>)> =
        all(&f).iter().map(|r| (r.address.to_string(), r.state, r.closed_at)).collect();
    assert!(states.contains(&("192.0.2.2".into(), GrantState::Expired, Some(T0 + 1))), "{states:?}");
    assert!(states.contains(&("192.0.2.3".into(), GrantState::Expired, Some(T0 + 1000))), "{states:?}");
    assert!(states.contains(&("192.0.2.5".into(), GrantState::Expired, Some(T0 + 2500))), "{states:?}");
    assert!(states.contains(&("192.0.2.4".into(), GrantState::Active, None)), "{states:?}");
    assert_eq!(f.granter.counters().daemon_expired.load(Ordering::Relaxed), 3);
}

/// Whatever the store does, a grant closes on time: thread stopped, channel refusing
/// every write, or no store at all.
#[test]
fn expiry_does_not_depend_on_the_store() {
    let stopped = fixture();
    stopped.granter.store().unwrap().shutdown();
    let refusing = fixture_with(Options { capacity: 0, paused: true, ..Options::default() });
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("grants.db")).unwrap();
    let missing = fixture_full(Options::default(), Box::new(NoFirewall::default()), Some(dir));
    assert!(matches!(missing.granter.store(), Err(StoreError::Unavailable(_))));
    for f in [&stopped, &refusing, &missing] {
        grant(f, "192.0.2.2", Duration::from_secs(3));
        assert_eq!(live(f).len(), 1, "enforced without a record");
        f.clock.advance(Duration::from_millis(2999));
        f.granter.expire_due();
        assert_eq!(live(f).len(), 1);
        f.clock.advance(Duration::from_millis(1));
        assert_eq!(f.granter.expire_due(), 1);
        assert!(live(f).is_empty(), "closed on time");
    }
    let s = refusing.granter.store().unwrap();
    assert_eq!(s.counters().dropped.load(Ordering::Relaxed), 2, "the record and the close were dropped");
    assert_eq!(s.list(&Filter::default()).unwrap().1, 0);
}

#[test]
fn the_scheduler_thread_closes_without_being_asked() {
    let f = fixture();
    grant(&f, "192.0.2.2", Duration::from_secs(1));
    f.clock.advance(Duration::from_secs(1));
    // The thread re-reads the clock at least once a second.
    let t0 = std::time::Instant::now();
    while !live(&f).is_empty() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(live(&f).is_empty());
}

#[test]
fn a_refused_close_is_retried() {
    struct Stubborn(NoFirewall, bool);
    impl FirewallDriver for Stubborn {
        fn name(&self) -> &'static str {
            "stubborn"
        }
        fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError> {
            self.0.setup(plan)
        }
        fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
            self.0.grant(grants)
        }
        fn revoke(&mut self, grants: &[crate::firewall::Key]) -> Result<(), FirewallError> {
            if std::mem::replace(&mut self.1, false) {
                return Err(FirewallError::Protocol("busy".into()));
            }
            self.0.revoke(grants)
        }
        fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
            self.0.list()
        }
        fn teardown(&mut self) -> Result<(), FirewallError> {
            self.0.teardown()
        }
        fn kernel_expiry(&self) -> bool {
            false
        }
    }
    let f = fixture_full(Options::default(), Box::new(Stubborn(NoFirewall::default(), true)), None);
    grant(&f, "192.0.2.2", Duration::from_secs(1));
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(f.granter.expire_due(), 0, "refused");
    assert_eq!(live(&f).len(), 1);
    f.clock.advance(Duration::from_millis(999));
    assert_eq!(f.granter.expire_due(), 0, "retried a second later, not before");
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(f.granter.expire_due(), 1);
    assert!(live(&f).is_empty());
    assert_eq!(all(&f)[0].state, GrantState::Expired);
}

#[test]
fn reconcile_restores_missing_closes_expired_and_revokes_unknown() {
    let f = fixture();
    grant(&f, "192.0.2.2", Duration::from_secs(600)); // will be lost from the firewall
    grant(&f, "192.0.2.3", Duration::from_secs(600)); // stays
    all(&f);
    let path = f.path.clone();
    f.granter.shutdown();
    let Fixture { dir, .. } = f;
    // An expired active record, as left by a crash.
    {
        let c = Connection::open(&path).unwrap();
        c.execute(
            "INSERT INTO grants (origin_kind, origin_detail, address, protocol, port, requested_at, effective_at, \
             expires_at, duration_ms, state, driver, driver_result) \
             VALUES ('spa', 'alice', '192.0.2.9', 'tcp', 22, 0, 0, 1000, 1000, 'active', 'none', 'ok')",
            [],
        )
        .unwrap();
    }
    // The firewall after a reboot-ish event: .3 and .9 are there, plus two nobody
    // recorded: .66 granted a minute ago (revoked), .77 just now (adopted: its record was
    // still in the channel when the daemon died).
    let mut fw = NoFirewall::default();
    for a in ["192.0.2.3", "192.0.2.9", "198.51.100.66", "198.51.100.77"] {
        fw.grants.push(Grant::host(ip(a), Service::tcp(22), Duration::from_secs(600)));
    }
    let aged = Aged(fw, vec![(ip("198.51.100.66"), Duration::from_secs(60))]);
    let f = fixture_full(Options::default(), Box::new(aged), Some(dir));
    f.clock.advance(Duration::from_secs(100));
    let report = f.granter.reconcile().unwrap();
    assert_eq!(
        report,
        ReconcileReport { kept: 1, restored: 1, expired: 1, unknown_revoked: 1, adopted: 1, failures: 0 },
        "{report:?}"
    );
    assert_eq!(
        live(&f),
        vec![
            (ip("192.0.2.2"), Service::tcp(22)),
            (ip("192.0.2.3"), Service::tcp(22)),
            (ip("198.51.100.77"), Service::tcp(22))
        ]
    );
    let recs = all(&f);
    let adopted = recs.iter().find(|r| r.address == ip("198.51.100.77")).unwrap();
    assert_eq!((adopted.origin.kind, adopted.state), (OriginKind::Adopted, GrantState::Active));
    let restored = f.granter.live().unwrap();
    let r2 = restored.iter().find(|g| g.addr == ip("192.0.2.2")).unwrap();
    assert_eq!(r2.remaining, Some(Duration::from_secs(500)), "restored with its remaining time, not more");
    let nine = recs.iter().find(|r| r.address == ip("192.0.2.9")).unwrap();
    assert_eq!((nine.state, nine.closed_at), (GrantState::Expired, Some(1000)));
    // All three are armed: they close at their original time.
    assert_eq!(f.granter.scheduled(), 3);
    f.clock.advance(Duration::from_secs(500));
    assert_eq!(f.granter.expire_due(), 2, "the restored and the kept one");
    assert_eq!(live(&f), vec![(ip("198.51.100.77"), Service::tcp(22))]);
}

#[test]
fn concurrent_revokes_of_one_grant_exactly_one_succeeds() {
    let f = fixture();
    grant(&f, "192.0.2.2", Duration::from_secs(60));
    let id = all(&f)[0].id;
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let g = Arc::clone(&f.granter);
            std::thread::spawn(move || rt().block_on(g.revoke(RevokeTarget::Id(id), &format!("t{i}"))))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| *r == Err(RevokeError::NotActive(GrantState::Revoked))));
    assert!(live(&f).is_empty());
    assert_eq!(f.granter.scheduled(), 0, "nothing left to expire");
    let r = f.granter.store().unwrap().get(id).unwrap().unwrap();
    assert_eq!(r.state, GrantState::Revoked);
    assert!(r.revoked_by.unwrap().starts_with('t'));
    let rt = rt();
    assert_eq!(rt.block_on(f.granter.revoke(RevokeTarget::Id(999), "t")), Err(RevokeError::NotFound));
    let key = RevokeTarget::Key(ip("192.0.2.2"), Service::tcp(22));
    assert_eq!(rt.block_on(f.granter.revoke(key, "t")), Err(RevokeError::NotFound));
}

#[test]
fn revoking_an_old_record_never_closes_a_newer_grant_of_the_same_key() {
    let f = fixture();
    grant(&f, "192.0.2.2", Duration::from_secs(1));
    let old = all(&f)[0].id;
    f.clock.advance(Duration::from_secs(1));
    f.granter.expire_due();
    f.clock.advance(Duration::from_millis(1));
    grant(&f, "192.0.2.2", Duration::from_secs(60));
    // Whatever the store has written by now, the old row is not what the firewall holds.
    let r = rt().block_on(f.granter.revoke(RevokeTarget::Id(old), "t"));
    assert_eq!(r, Err(RevokeError::NotActive(GrantState::Expired)));
    assert_eq!(live(&f).len(), 1, "the newer grant stands");
    let recs = all(&f);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs.iter().filter(|r| r.state == GrantState::Active).count(), 1);
}

#[test]
fn a_full_disk_loses_records_loudly_but_never_enforcement_and_api_grants_fail_closed() {
    // SQLite's max_page_count is what a full disk looks like to it: SQLITE_FULL.
    let f = fixture_with(Options { max_pages: Some(12), ..Options::default() });
    let store = Arc::clone(f.granter.store().unwrap());
    let mut n = 0u32;
    while store.counters().errors.load(Ordering::Relaxed) == 0 && n < 5000 {
        let a = IpAddr::from([10, 0, (n >> 8) as u8, n as u8]);
        f.granter.grant(door("d"), a, &[Service::tcp(22)], Duration::from_secs(600)).unwrap();
        n += 1;
        if n % 100 == 0 {
            store.sync_blocking();
        }
    }
    store.sync_blocking();
    assert!(store.counters().errors.load(Ordering::Relaxed) > 0, "never filled up after {n} grants");
    assert_eq!(live(&f).len() as u32, n, "every grant is enforced even when its record is lost");
    assert_eq!(f.granter.scheduled() as u32, n, "and every one will close on time");
    // Nothing half-written: every row that exists is complete and readable.
    let (rows, total) = store.list(&Filter { per_page: 1000, ..Filter::default() }).unwrap();
    assert!(total < u64::from(n) && rows.iter().all(|r| r.state == GrantState::Active));
    // The API path refuses and undoes its grant.
    let r = rt().block_on(f.granter.grant_recorded(
        api("t"),
        ip("203.0.113.7"),
        &[Service::tcp(22)],
        Duration::from_secs(9),
    ));
    assert!(matches!(r, Err(GrantError::Store(StoreError::Db(_)))), "{r:?}");
    assert!(!live(&f).contains(&(ip("203.0.113.7"), Service::tcp(22))), "API grant undone");
    assert_eq!(f.granter.scheduled() as u32, n);
    f.clock.advance(Duration::from_secs(600));
    assert_eq!(f.granter.expire_due() as u32, n);
    assert!(live(&f).is_empty());
}

#[test]
fn api_grants_return_their_rows_and_revoke_marks_them() {
    let f = fixture();
    let rt = rt();
    let rows = rt
        .block_on(f.granter.grant_recorded(
            api("alice"),
            ip("192.0.2.2"),
            &[Service::tcp(22), Service::udp(53)],
            Duration::from_secs(9),
        ))
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].service, rows[1].origin.detail.as_str()), (Service::udp(53), "alice"));
    assert_eq!(rows[1].expires_at, T0 + 9000);
    assert_eq!(f.granter.store().unwrap().get(rows[1].id).unwrap().as_ref(), Some(&rows[1]));
    f.clock.advance(Duration::from_secs(2));
    let r = rt.block_on(f.granter.revoke(RevokeTarget::Id(rows[0].id), "bob")).unwrap();
    assert_eq!(
        (r.state, r.revoked_by.as_deref(), r.closed_at),
        (GrantState::Revoked, Some("bob"), Some(T0 + 2000))
    );
    assert_eq!(live(&f), vec![(ip("192.0.2.2"), Service::udp(53))]);
    let r = rt.block_on(f.granter.revoke(RevokeTarget::Key(ip("::ffff:192.0.2.2"), Service::udp(53)), "bob"));
    assert_eq!(r.unwrap().state, GrantState::Revoked);
    assert!(live(&f).is_empty());
    drop(f.dir);
}

#[test]
fn a_grant_whose_first_record_was_lost_is_still_revoked_in_the_firewall() {
    let f = fixture();
    grant(&f, "192.0.2.2", Duration::from_secs(60));
    all(&f);
    // The first record never made it (channel full): only the refresh is written.
    Connection::open(&f.path).unwrap().execute("DELETE FROM grants", []).unwrap();
    f.clock.advance(Duration::from_secs(5));
    grant(&f, "192.0.2.2", Duration::from_secs(60));
    let id = all(&f)[0].id;
    let r = rt().block_on(f.granter.revoke(RevokeTarget::Id(id), "t")).unwrap();
    assert_eq!(r.state, GrantState::Revoked);
    assert!(live(&f).is_empty(), "closed in the firewall, not only in the record");
    assert_eq!(f.granter.scheduled(), 0);
}

#[test]
fn door_opens_beyond_their_bounds_touch_neither_firewall_nor_store() {
    use crate::config::{DoorLimits, Limits};
    let f = fixture();
    let mut limits = Limits::unbounded();
    limits.default_door = DoorLimits { opens_per_second: None, max_live_grants: Some(2) };
    f.granter.set_limits(limits);
    let open = |src: &str| {
        f.granter.open_door(door("ssh"), ip(src), ip(src), &[Service::tcp(22)], Duration::from_secs(30))
    };
    open("192.0.2.1").unwrap();
    open("192.0.2.2").unwrap();
    assert!(matches!(open("192.0.2.3"), Err(OpenError::Refused(Refusal::DoorFull))));
    assert_eq!(live(&f).len(), 2, "nothing asked of the firewall");
    assert_eq!(all(&f).len(), 2, "no record for a refused open");
    // API grants and the unbounded path (SPA) are not door opens: no bound applies.
    rt().block_on(f.granter.grant_recorded(
        api("t"),
        ip("192.0.2.9"),
        &[Service::tcp(22)],
        Duration::from_secs(30),
    ))
    .unwrap();
    f.granter.grant(door("ssh"), ip("192.0.2.8"), &[Service::tcp(22)], Duration::from_secs(30)).unwrap();
    assert_eq!(f.granter.door_live("ssh"), 2);
    // A revoke frees a place at once; expiry frees the rest.
    rt().block_on(f.granter.revoke(RevokeTarget::Key(ip("192.0.2.1"), Service::tcp(22)), "t")).unwrap();
    assert_eq!(f.granter.door_live("ssh"), 1);
    open("192.0.2.3").unwrap();
    f.clock.advance(Duration::from_secs(30));
    f.granter.expire_due();
    assert_eq!(f.granter.door_live("ssh"), 0);
    open("192.0.2.4").unwrap();
}

#[test]
fn restarts_count_the_live_door_grants_they_reconcile() {
    use crate::config::{DoorLimits, Limits};
    let f = fixture();
    grant(&f, "192.0.2.1", Duration::from_secs(60));
    grant(&f, "192.0.2.2", Duration::from_secs(60));
    f.granter.store().unwrap().sync_blocking();
    f.granter.shutdown();
    let dir = f.dir;
    let g = fixture_full(Options::default(), Box::new(NoFirewall::default()), Some(dir));
    g.granter.reconcile().unwrap();
    let mut limits = Limits::unbounded();
    limits.default_door = DoorLimits { opens_per_second: None, max_live_grants: Some(2) };
    g.granter.set_limits(limits);
    assert_eq!(g.granter.door_live("d"), 2, "restored grants count against the cap");
    let r = g.granter.open_door(
        door("d"),
        ip("192.0.2.3"),
        ip("192.0.2.3"),
        &[Service::tcp(22)],
        Duration::from_secs(9),
    );
    assert!(matches!(r, Err(OpenError::Refused(Refusal::DoorFull))), "{r:?}");
}

/// `NoFirewall` that lists its grants without a timeout, as an element added by hand
/// to a `flags timeout` set without one does.
struct Timeless(NoFirewall);

impl FirewallDriver for Timeless {
    fn name(&self) -> &'static str {
        "timeless"
    }
    fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError> {
        self.0.setup(plan)
    }
    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
        self.0.grant(grants)
    }
    fn revoke(&mut self, grants: &[crate::firewall::Key]) -> Result<(), FirewallError> {
        self.0.revoke(grants)
    }
    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
        Ok(self.0.list()?.into_iter().map(|g| LiveGrant { remaining: None, timeout: None, ..g }).collect())
    }
    fn teardown(&mut self) -> Result<(), FirewallError> {
        self.0.teardown()
    }
    fn kernel_expiry(&self) -> bool {
        true
    }
}

#[test]
fn without_a_store_a_grant_that_would_never_expire_is_revoked() {
    let mut fw = NoFirewall::default();
    let addr: IpAddr = "198.51.100.9".parse().unwrap();
    fw.grant(&[Grant::host(addr, Service::tcp(22), Duration::from_secs(60))]).unwrap();
    let clock = ManualClock::new(T0);
    let granter = Granter::new(
        firewall::Shared::new(Box::new(Timeless(fw))),
        vec![Service::tcp(22)],
        Err(StoreError::Unavailable("test".into())),
        clock,
    )
    .unwrap();
    granter.adopt_live().unwrap();
    assert!(granter.live().unwrap().is_empty(), "a grant with no timeout must not stay open");
}

#[test]
fn prefix_grants_are_their_own_keys_from_firewall_to_record() {
    use crate::config::{GrantPrefix, Limits};
    let f = fixture();
    let mut limits = Limits::unbounded();
    limits.grant_prefix.doors.insert("cgnat".into(), GrantPrefix { v4: 24, v6: 64 });
    limits.grant_prefix.users.insert("alice".into(), GrantPrefix { v4: 16, v6: 48 });
    f.granter.set_limits(limits);
    let (ssh, d30) = ([Service::tcp(22)], Duration::from_secs(30));
    let open = |name: &str, src: &str| f.granter.open_door(door(name), ip(src), ip(src), &ssh, d30).unwrap();
    let spa = |who: &str, src: &str| {
        f.granter.grant(Origin { kind: OriginKind::Spa, detail: who.into() }, ip(src), &ssh, d30).unwrap()
    };
    open("cgnat", "10.1.2.3");
    f.clock.advance(Duration::from_secs(5));
    // Another address of the same pool refreshes the same grant.
    open("cgnat", "::ffff:10.1.2.77");
    // A door without the option grants the single address, even the prefix's own.
    open("ssh", "10.1.2.0");
    open("cgnat", "2001:db8:0:7:1::2");
    spa("user alice", "10.9.8.7");
    spa("stanza 1", "10.9.8.7");

    let key = |s: &str| (s.parse::<Prefix>().unwrap(), Service::tcp(22));
    let mut got: Vec<_> = f.granter.live().unwrap().iter().map(LiveGrant::key).collect();
    got.sort();
    let mut want = vec![
        key("10.1.2.0/24"),
        key("10.1.2.0"),
        key("2001:db8:0:7::/64"),
        key("10.9.0.0/16"),
        key("10.9.8.7"),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(f.granter.scheduled(), 5);

    let recs = all(&f);
    let by_source =
        |s: &str| recs.iter().find(|r| r.source().short() == s).unwrap_or_else(|| panic!("{s}: {recs:?}"));
    assert_eq!(recs.len(), 5, "{recs:?}");
    assert_eq!(
        (by_source("10.1.2.0/24").refresh_count, by_source("10.1.2.0/24").expires_at),
        (1, T0 + 35_000)
    );
    assert_eq!(by_source("10.1.2.0").origin, door("ssh"));
    assert_eq!(by_source("10.9.0.0/16").origin.detail, "user alice");

    // Revoking the prefix grant (by id) leaves the host grant inside it.
    let id = by_source("10.1.2.0/24").id;
    let r = rt().block_on(f.granter.revoke(RevokeTarget::Id(id), "t")).unwrap();
    assert_eq!((r.state, r.source().short()), (GrantState::Revoked, "10.1.2.0/24".to_string()));
    let got: Vec<_> = f.granter.live().unwrap().iter().map(LiveGrant::key).collect();
    assert!(!got.contains(&key("10.1.2.0/24")) && got.contains(&key("10.1.2.0")), "{got:?}");

    // The daemon closes prefix grants on time like any other (this driver has no kernel expiry).
    f.clock.advance(Duration::from_secs(31));
    f.granter.expire_due();
    assert!(f.granter.live().unwrap().is_empty());
    assert!(all(&f).iter().all(|r| r.state != GrantState::Active), "{:?}", all(&f));
}

#[test]
fn a_restart_restores_prefix_grants_missing_from_the_firewall() {
    use crate::config::{GrantPrefix, Limits};
    let f = fixture();
    let mut limits = Limits::unbounded();
    limits.grant_prefix.doors.insert("cgnat".into(), GrantPrefix { v4: 24, v6: 128 });
    f.granter.set_limits(limits);
    f.granter
        .open_door(
            door("cgnat"),
            ip("10.1.2.3"),
            ip("10.1.2.3"),
            &[Service::tcp(22)],
            Duration::from_secs(60),
        )
        .unwrap();
    f.granter.store().unwrap().sync_blocking();
    f.granter.shutdown();
    // A fresh firewall (reboot): the record brings the prefix grant back, as a prefix.
    let g = fixture_full(Options::default(), Box::new(NoFirewall::default()), Some(f.dir));
    let report = g.granter.reconcile().unwrap();
    assert_eq!(report.restored, 1, "{report:?}");
    let live = g.granter.live().unwrap();
    assert_eq!(live.iter().map(|l| l.source().to_string()).collect::<Vec<_>>(), vec!["10.1.2.0/24"]);
}
