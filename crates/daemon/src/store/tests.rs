//! Store thread, expiry scheduler, reconciliation and the shared grant path, on a temp
//! database with the recording [`NoFirewall`] driver (no kernel expiry: the daemon closes).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_proto::Service;

use super::*;
use crate::firewall::none::NoFirewall;
use crate::firewall::Grant;
use crate::grants::{GrantError, Granter};

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    driver: SharedDriver,
    granter: Arc<Granter>,
}

/// `NoFirewall` whose grants for some addresses look older than they are (its own
/// `list` reports remaining == timeout, i.e. "just granted").
struct Aged(NoFirewall, Vec<(IpAddr, Duration)>);

impl FirewallDriver for Aged {
    fn name(&self) -> &'static str {
        "aged"
    }
    fn setup(&mut self, plan: &crate::firewall::Plan) -> Result<(), crate::firewall::FirewallError> {
        self.0.setup(plan)
    }
    fn grant(&mut self, grants: &[Grant]) -> Result<(), crate::firewall::FirewallError> {
        self.0.grant(grants)
    }
    fn revoke(&mut self, grants: &[(IpAddr, Service)]) -> Result<(), crate::firewall::FirewallError> {
        self.0.revoke(grants)
    }
    fn list(&mut self) -> Result<Vec<crate::firewall::LiveGrant>, crate::firewall::FirewallError> {
        let mut l = self.0.list()?;
        for g in &mut l {
            if let Some((_, age)) = self.1.iter().find(|(a, _)| *a == g.addr) {
                g.remaining = g.remaining.map(|r| r.saturating_sub(*age));
            }
        }
        Ok(l)
    }
    fn teardown(&mut self) -> Result<(), crate::firewall::FirewallError> {
        self.0.teardown()
    }
    fn kernel_expiry(&self) -> bool {
        false
    }
}

fn fixture_with(opts: Options, driver: NoFirewall, dir: Option<tempfile::TempDir>) -> Fixture {
    fixture_driver(opts, Box::new(driver), dir)
}

fn fixture_driver(opts: Options, driver: Box<dyn FirewallDriver>, dir: Option<tempfile::TempDir>) -> Fixture {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let path = dir.path().join("grants.db");
    let driver: SharedDriver = Arc::new(Mutex::new(driver));
    let store = Store::open(&path, Arc::clone(&driver), opts);
    let granter = Arc::new(Granter::new(Arc::clone(&driver), vec![Service::tcp(22)], store));
    Fixture { _dir: dir, path, driver, granter }
}

fn fixture() -> Fixture {
    fixture_with(Options::default(), NoFirewall::default(), None)
}

fn door(name: &str) -> Origin {
    Origin { kind: OriginKind::Door, detail: name.into() }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn live(f: &Fixture) -> Vec<(IpAddr, Service)> {
    f.granter.live().unwrap().into_iter().map(|g| (g.addr, g.service)).collect()
}

fn all(f: &Fixture) -> Vec<GrantRecord> {
    let s = f.granter.store().unwrap();
    s.sync_blocking();
    s.list(&Filter { per_page: 1000, ..Filter::default() }).unwrap().0
}

#[test]
fn capture_path_grants_are_recorded_and_repeats_refresh() {
    let f = fixture();
    f.granter
        .grant(door("ssh"), ip("::ffff:192.0.2.2"), &[Service::tcp(22)], Duration::from_secs(30))
        .unwrap();
    f.granter.grant(door("ssh"), ip("192.0.2.2"), &[Service::tcp(22)], Duration::from_secs(60)).unwrap();
    let recs = all(&f);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!((r.address, r.service, r.state), (ip("192.0.2.2"), Service::tcp(22), GrantState::Active));
    assert_eq!((r.origin.clone(), r.refresh_count, r.duration_ms), (door("ssh"), 1, 60_000));
    assert_eq!(live(&f), vec![(ip("192.0.2.2"), Service::tcp(22))]);
}

#[test]
fn daemon_side_expiry_closes_on_time_when_the_kernel_does_not() {
    let f = fixture();
    assert!(!f.granter.kernel_expiry());
    let t0 = std::time::Instant::now();
    f.granter.grant(door("d"), ip("192.0.2.2"), &[Service::tcp(22)], Duration::from_millis(1)).unwrap();
    f.granter.grant(door("d"), ip("192.0.2.3"), &[Service::tcp(22)], Duration::from_secs(1)).unwrap();
    f.granter.grant(door("d"), ip("192.0.2.4"), &[Service::tcp(22)], Duration::from_secs(60)).unwrap();
    let closed = |a: &str| !live(&f).contains(&(ip(a), Service::tcp(22)));
    while !(closed("192.0.2.2") && closed("192.0.2.3")) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1600),
        "closed after {took:?}"
    );
    assert!(!closed("192.0.2.4"));
    let states: Vec<(String, GrantState)> =
        all(&f).iter().map(|r| (r.address.to_string(), r.state)).collect();
    assert!(states.contains(&("192.0.2.2".into(), GrantState::Expired)), "{states:?}");
    assert!(states.contains(&("192.0.2.3".into(), GrantState::Expired)), "{states:?}");
    assert!(states.contains(&("192.0.2.4".into(), GrantState::Active)), "{states:?}");
    assert_eq!(f.granter.store().unwrap().counters().daemon_expired.load(Ordering::Relaxed), 2);
}

#[test]
fn reconcile_restores_missing_closes_expired_and_revokes_unknown() {
    let f = fixture();
    let g = |a: &str, secs| {
        f.granter.grant(door("d"), ip(a), &[Service::tcp(22)], Duration::from_secs(secs)).unwrap()
    };
    g("192.0.2.2", 600); // will be lost from the firewall ("nft flush ruleset")
    g("192.0.2.3", 600); // stays
    all(&f);
    let dir = f._dir;
    let path = f.path.clone();
    f.granter.store().unwrap().shutdown();
    drop(f.granter);
    // An expired active record, as left by a crash: rewrite one row's expiry.
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
        fw.grants.push(Grant { addr: ip(a), service: Service::tcp(22), timeout: Duration::from_secs(600) });
    }
    let aged = Aged(fw, vec![(ip("198.51.100.66"), Duration::from_secs(60))]);
    let f = fixture_driver(Options::default(), Box::new(aged), Some(dir));
    let report = f.granter.store().unwrap().reconcile().unwrap();
    assert_eq!(
        report,
        ReconcileReport { kept: 1, restored: 1, expired: 1, unknown_revoked: 1, adopted: 1, failures: 0 },
        "{report:?}"
    );
    let mut l = live(&f);
    l.sort();
    assert_eq!(
        l,
        vec![
            (ip("192.0.2.2"), Service::tcp(22)),
            (ip("192.0.2.3"), Service::tcp(22)),
            (ip("198.51.100.77"), Service::tcp(22))
        ]
    );
    let adopted = all(&f).into_iter().find(|r| r.address == ip("198.51.100.77")).unwrap();
    assert_eq!((adopted.origin.kind, adopted.state), (OriginKind::Adopted, GrantState::Active));
    let restored = crate::store::lock_driver(&f.driver).list().unwrap();
    let r2 = restored.iter().find(|g| g.addr == ip("192.0.2.2")).unwrap();
    assert!(r2.remaining.unwrap() <= Duration::from_secs(600), "restored with its remaining time, not more");
    let nine = all(&f).into_iter().find(|r| r.address == ip("192.0.2.9")).unwrap();
    assert_eq!((nine.state, nine.closed_at), (GrantState::Expired, Some(1000)));
}

#[test]
fn concurrent_revokes_of_one_grant_exactly_one_succeeds() {
    let f = fixture();
    f.granter.grant(door("d"), ip("192.0.2.2"), &[Service::tcp(22)], Duration::from_secs(60)).unwrap();
    let id = all(&f)[0].id;
    let store = Arc::clone(f.granter.store().unwrap());
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.revoke(RevokeTarget::Id(id), &format!("t{i}")).unwrap().blocking_recv().unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| *r == Err(RevokeError::NotActive(GrantState::Revoked))));
    assert!(live(&f).is_empty());
    let r = store.get(id).unwrap().unwrap();
    assert_eq!(r.state, GrantState::Revoked);
    assert!(r.revoked_by.unwrap().starts_with('t'));
    let missing = store.revoke(RevokeTarget::Id(999), "t").unwrap().blocking_recv().unwrap();
    assert_eq!(missing, Err(RevokeError::NotFound));
}

#[test]
fn a_full_disk_loses_records_loudly_but_never_enforcement_and_api_grants_fail_closed() {
    // SQLite's max_page_count is what a full disk looks like to it: SQLITE_FULL.
    let f = fixture_with(Options { max_pages: Some(12) }, NoFirewall::default(), None);
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
    // Nothing half-written: every row that exists is complete and readable.
    let (rows, total) = store.list(&Filter { per_page: 1000, ..Filter::default() }).unwrap();
    assert!(total < u64::from(n) && rows.iter().all(|r| r.state == GrantState::Active));
    // The API path refuses and undoes its grant.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let api = Origin { kind: OriginKind::Api, detail: "t".into() };
    let r = rt.block_on(f.granter.grant_recorded(
        api,
        ip("203.0.113.7"),
        &[Service::tcp(22)],
        Duration::from_secs(9),
    ));
    assert!(matches!(r, Err(GrantError::Store(StoreError::Db(_)))), "{r:?}");
    assert!(!live(&f).contains(&(ip("203.0.113.7"), Service::tcp(22))), "API grant undone");
}

#[test]
fn an_unwritable_state_dir_leaves_the_granter_working_without_records() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be: open fails whoever we are.
    std::fs::create_dir(dir.path().join("grants.db")).unwrap();
    let f = fixture_with(Options::default(), NoFirewall::default(), Some(dir));
    assert!(matches!(f.granter.store(), Err(StoreError::Unavailable(_))));
    f.granter.grant(door("d"), ip("192.0.2.2"), &[Service::tcp(22)], Duration::from_secs(60)).unwrap();
    assert_eq!(live(&f).len(), 1);
}

#[test]
fn api_grants_return_their_rows() {
    let f = fixture();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let api = Origin { kind: OriginKind::Api, detail: "alice".into() };
    let rows = rt
        .block_on(f.granter.grant_recorded(
            api,
            ip("192.0.2.2"),
            &[Service::tcp(22), Service::udp(53)],
            Duration::from_secs(9),
        ))
        .unwrap();
    assert_eq!(rows.len(), 2);
    let store = f.granter.store().unwrap();
    let r = store.get(rows[1].id).unwrap().unwrap();
    assert_eq!((r.service, r.origin.detail.as_str()), (Service::udp(53), "alice"));
}
