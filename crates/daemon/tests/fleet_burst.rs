//! A burst of fleet grants made on one node, against a real PostgreSQL (a throwaway
//! cluster on a unix socket, [`portcullis_daemon::lab::pg`]): three in-process
//! gateways, each a Granter over a recording driver with its fleet threads. Every grant
//! must reach the two other nodes exactly once, have exactly one database row, and
//! close on every node at its absolute expiry. Needs root (the cluster runs as
//! `postgres`); under CI=true a test that cannot run fails.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_daemon::firewall::none::NoFirewall;
use portcullis_daemon::fleet::config::FleetConfig;
use portcullis_daemon::fleet::node::{Fleet, Outgoing};
use portcullis_daemon::fleet::{unix_ms, OnDbDown};
use portcullis_daemon::grants::{Granter, Origin, OriginKind};
use portcullis_daemon::lab::pg::Pg;
use portcullis_proto::Service;

/// Grants in the burst: as many as the benchmark's (`portcullis-bench fleet`).
const BURST: u32 = 10_000;
/// Grants a second gw1 makes (ten times the native SPA crypto ceiling).
const RATE: u32 = 20_000;
/// Their common lifetime: long enough for the whole burst to be applied everywhere
/// on a loaded machine, short enough to wait for.
const LIFE: Duration = Duration::from_secs(25);

fn start_pg() -> Option<Pg> {
    match Pg::start("burst") {
        Ok(pg) => Some(pg),
        Err(e) => {
            portcullis_daemon::lab::preflight::cannot_run("fleet_burst", format!("{e:#}"));
            None
        }
    }
}

fn node(pg: &Pg, name: &str) -> FleetConfig {
    let f = pg.dir().join(format!("{name}.url"));
    pg.write_url_file(&f).unwrap();
    FleetConfig {
        database_url_file: f,
        node: name.into(),
        nodes: vec!["gw1".into(), "gw2".into(), "gw3".into()],
        on_db_down: OnDbDown::Refuse,
    }
}

fn ssh() -> Service {
    Service::parse_grant("tcp/22").unwrap()
}

/// The i-th client of the burst: 10.20.0.0 onwards.
fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a14_0000 + i))
}

fn held(g: &Granter) -> usize {
    g.live().unwrap().len()
}

/// Poll `f` until it holds; `Err` once `limit` has passed.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            eprintln!("timed out after {limit:?} waiting for {what}");
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn burst_reaches_every_node_once_and_expires_on_time() {
    let Some(pg) = start_pg() else { return };
    let gws: Vec<Arc<Granter>> =
        (0..3).map(|_| Granter::unrecorded(Box::new(NoFirewall::default())).unwrap()).collect();
    let fleets: Vec<Fleet> =
        ["gw1", "gw2", "gw3"].iter().zip(&gws).map(|(n, g)| Fleet::start(node(&pg, n), g).unwrap()).collect();
    for f in &fleets {
        let up =
            wait_for("listener", Duration::from_secs(10), || f.status().connected.load(Ordering::Relaxed));
        up.expect("fleet listener connected");
    }

    // gw1 makes every grant locally (as its SPA path does) and shares it: a flood of
    // grants on one node, at ten times the native SPA crypto ceiling (2,000/s). A bare
    // loop (~65,000/s here) outruns the database writes; beyond the bounded queue those
    // are dropped, counted and logged (the grants still hold on gw1).
    let expires_at = unix_ms() + i64::try_from(LIFE.as_millis()).unwrap();
    let origin = Origin { kind: OriginKind::Api, detail: "burst".into() };
    let t = Instant::now();
    for i in 0..BURST {
        if i % 100 == 0 {
            let due = Duration::from_secs_f64(f64::from(i) / f64::from(RATE));
            std::thread::sleep(due.saturating_sub(t.elapsed()));
        }
        let left = Duration::from_millis(u64::try_from(expires_at - unix_ms()).unwrap());
        gws[0].grant(origin.clone(), client(i), &[ssh()], left).unwrap();
        fleets[0].share(Outgoing {
            addr: client(i),
            services: vec![ssh()],
            expires_at,
            origin: "api:burst".into(),
        });
    }
    let made = t.elapsed();
    let all = usize::try_from(BURST).unwrap();
    let status = |f: &Fleet| {
        let s = f.status();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        format!("queued {} dropped {} applied {}", n(&s.queued), n(&s.dropped), n(&s.applied))
    };
    wait_for("the burst on gw2 and gw3", LIFE - Duration::from_secs(3), || {
        held(&gws[1]) == all && held(&gws[2]) == all
    })
    .unwrap_or_else(|()| {
        panic!(
            "burst not applied: held {:?}; gw1 {}; gw2 {}; gw3 {}",
            gws.iter().map(|g| held(g)).collect::<Vec<_>>(),
            status(&fleets[0]),
            status(&fleets[1]),
            status(&fleets[2])
        )
    });
    let applied = t.elapsed();
    eprintln!("{BURST} fleet grants: made on gw1 in {made:?}, applied on gw2 and gw3 after {applied:?}");

    // None lost, none duplicated: one row per grant, one application per node.
    assert_eq!(fleets[0].status().dropped.load(Ordering::Relaxed), 0, "grants dropped from the queue");
    let mut c = pg.client().unwrap();
    let (rows, distinct): (i64, i64) = {
        let r = c.query_one("SELECT COUNT(*), COUNT(DISTINCT addr) FROM fleet_grants", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((rows, distinct), (i64::from(BURST), i64::from(BURST)), "database rows");
    for (i, g) in gws.iter().enumerate() {
        assert_eq!(held(g), all, "gw{} holds every grant", i + 1);
    }
    for f in &fleets[1..] {
        assert_eq!(f.status().applied.load(Ordering::Relaxed), u64::from(BURST), "applied exactly once");
    }
    assert_eq!(fleets[0].status().applied.load(Ordering::Relaxed), 0, "gw1 does not reapply its own");
    assert_eq!(fleets[0].status().queued.load(Ordering::Relaxed), 0, "queue drained");

    // Every node closes them at their absolute expiry: none early, none late.
    let until = |ms: i64| Duration::from_millis(u64::try_from(expires_at - ms - unix_ms()).unwrap_or(0));
    std::thread::sleep(until(1000));
    for (i, g) in gws.iter().enumerate() {
        assert_eq!(held(g), all, "gw{} closed grants before their expiry", i + 1);
    }
    std::thread::sleep(until(0));
    let closed = wait_for("every node to close the burst", Duration::from_millis(2500), || {
        gws.iter().all(|g| held(g) == 0)
    });
    closed.unwrap_or_else(|()| {
        panic!("still held after expiry: {:?}", gws.iter().map(|g| held(g)).collect::<Vec<_>>())
    });
}
