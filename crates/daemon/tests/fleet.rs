//! Fleet mode against a real PostgreSQL: a throwaway cluster (initdb in a temp dir,
//! owned by the `postgres` user, listening only on a unix socket in that dir), three
//! in-process gateways (each a Granter over a recording firewall driver) and their
//! fleet threads. Needs root (to run the cluster as `postgres`); under CI=true a test
//! that cannot run fails.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use portcullis_daemon::firewall::none::NoFirewall;
use portcullis_daemon::fleet::node::{Fleet, Outgoing};
use portcullis_daemon::fleet::replay::{self, Claim, FleetReplay};
use portcullis_daemon::fleet::{schema, shared, unix_ms, FleetError, OnDbDown};
use portcullis_daemon::grants::Granter;
use portcullis_proto::Service;

mod fleet_pg;
mod support;

use fleet_pg::Pg;

fn ssh() -> Service {
    Service::parse_grant("tcp/22").unwrap()
}

fn gateway() -> Arc<Granter> {
    Granter::unrecorded(Box::new(NoFirewall::default())).unwrap()
}

fn holds(g: &Granter, addr: IpAddr) -> Option<Duration> {
    g.live().unwrap().into_iter().find(|l| l.addr == addr && l.service == ssh()).and_then(|l| l.remaining)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn schema_migrates_once_and_refuses_newer() {
    let Some(pg) = Pg::start() else { return };
    let mut c = pg.client();
    assert_eq!(schema::migrate(&mut c).unwrap(), 0);
    assert_eq!(schema::migrate(&mut c).unwrap(), schema::VERSION);
    let skew = shared::check_clock(&mut c, &unix_ms).unwrap();
    assert!(skew.abs() < shared::CLOCK_WARN_MS, "same host, same clock: {skew} ms");
    c.execute("INSERT INTO schema_version (version) VALUES (99)", &[]).unwrap();
    let e = schema::migrate(&mut c).unwrap_err();
    assert!(matches!(e, FleetError::NewerSchema { found: 99, .. }), "{e}");
    assert!(e.to_string().contains("upgrade"));
    // A wrong URL is a clear error, not a hang.
    let f = pg.dir.path().join("bad.url");
    std::fs::write(&f, "host=/nonexistent user=nobody dbname=x").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r =
        FleetReplay::spawn("host=/nonexistent user=x dbname=x".into(), "gw1".into(), replay::DEFAULT_WAIT)
            .unwrap();
    assert_eq!(r.claim([1; 32], u64::MAX / 2), Claim::Down);
}

#[test]
fn same_packet_on_three_nodes_at_once_is_granted_once() {
    let Some(pg) = Pg::start() else { return };
    schema::migrate(&mut pg.client()).unwrap();
    let now = unix_ms() / 1000;
    for round in 0..20u8 {
        let barrier = Arc::new(Barrier::new(3));
        let firsts: usize = ["gw1", "gw2", "gw3"]
            .map(|node| {
                let (b, url) = (Arc::clone(&barrier), pg.url("postgres"));
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    b.wait();
                    replay::claim(&mut c, node, &[round; 32], now + 120, now).unwrap()
                })
            })
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&c| c == Claim::First)
            .count();
        assert_eq!(firsts, 1, "round {round}");
    }
    // Replayed to another node later: refused; an expired claim does not block for ever.
    let mut c = pg.client();
    assert_eq!(replay::claim(&mut c, "gw2", &[0; 32], now + 120, now).unwrap(), Claim::Replayed);
    assert_eq!(replay::claim(&mut c, "gw2", &[0; 32], now + 500, now + 121).unwrap(), Claim::First);
}

#[test]
fn replay_claim_cost_and_bounded_wait() {
    let Some(pg) = Pg::start() else { return };
    schema::migrate(&mut pg.client()).unwrap();
    let r = FleetReplay::spawn(pg.url("postgres"), "gw1".into(), replay::DEFAULT_WAIT).unwrap();
    let exp = u64::try_from(unix_ms() / 1000 + 120).unwrap();
    assert_eq!(r.claim([0; 32], exp), Claim::First); // connects
    let mut times = Vec::new();
    for i in 1..=200u32 {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_be_bytes());
        let t = Instant::now();
        assert_eq!(r.claim(d, exp), Claim::First);
        times.push(t.elapsed());
        assert_eq!(r.claim(d, exp), Claim::Replayed);
    }
    times.sort();
    eprintln!("fleet replay claim: median {:?}, p99 {:?}", times[100], times[197]);
    // Database stopped: the answer is Down within the bound, not a hang.
    pg.down();
    let t = Instant::now();
    assert_eq!(r.claim([9; 32], exp), Claim::Down);
    assert!(t.elapsed() < Duration::from_millis(400), "{:?}", t.elapsed());
    pg.up();
    wait_for("reconnect", Duration::from_secs(10), || r.claim([10; 32], exp) == Claim::First);
}

/// Three in-process nodes gw1..gw3, their listeners connected.
fn three_nodes(pg: &Pg) -> ([Arc<Granter>; 3], Vec<Fleet>) {
    let gws = [gateway(), gateway(), gateway()];
    let fleets: Vec<Fleet> =
        ["gw1", "gw2", "gw3"].iter().zip(&gws).map(|(n, g)| Fleet::start(pg.node(n), g).unwrap()).collect();
    for f in &fleets {
        wait_for("listener", Duration::from_secs(10), || f.status().connected.load(Ordering::Relaxed));
    }
    (gws, fleets)
}

#[test]
fn fleet_grants_apply_everywhere_and_revoke_everywhere() {
    let Some(pg) = Pg::start() else { return };
    let (gws, fleets) = three_nodes(&pg);
    let client: IpAddr = "192.0.2.10".parse().unwrap();
    let other: IpAddr = "192.0.2.11".parse().unwrap();
    // gw1 grants locally (as its SPA path does) and shares it.
    gws[0]
        .grant(
            portcullis_daemon::grants::Origin {
                kind: portcullis_api::OriginKind::Spa,
                detail: "user alice".into(),
            },
            client,
            &[ssh()],
            Duration::from_secs(30),
        )
        .unwrap();
    let t = Instant::now();
    fleets[0].share(Outgoing {
        addr: client,
        services: vec![ssh()],
        expires_at: unix_ms() + 30_000,
        origin: "spa:user alice".into(),
    });
    wait_for("gw2 and gw3 open", Duration::from_secs(5), || {
        holds(&gws[1], client).is_some() && holds(&gws[2], client).is_some()
    });
    eprintln!("grant -> applied on all nodes: {:?}", t.elapsed());
    for g in &gws {
        let left = holds(g, client).unwrap();
        assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(25), "{left:?}");
        assert!(holds(g, other).is_none(), "only that client");
    }
    // Revoke on gw3 closes it on gw1 and gw2.
    fleets[2].revoke(client, ssh());
    wait_for("closed everywhere", Duration::from_secs(5), || gws.iter().all(|g| holds(g, client).is_none()));

    let mut c = pg.client();
    let revoked: i64 =
        c.query_one("SELECT COUNT(*) FROM fleet_revocations WHERE node = 'gw3'", &[]).unwrap().get(0);
    assert_eq!(revoked, 1);
    // Forged notifications and rows from unknown nodes are never acted on.
    c.execute("SELECT pg_notify('portcullis_fleet', 'g 1; DROP TABLE x')", &[]).unwrap();
    c.execute("SELECT pg_notify('portcullis_fleet', $1)", &[&"g ".repeat(1000)]).unwrap();
    let id: i64 = c
        .query_one(
            "INSERT INTO fleet_grants (node, addr, service, expires_at, origin, created_at)
         VALUES ('evil', '192.0.2.66', 'tcp/22', $1, 'spa:x', $2) RETURNING id",
            &[&(unix_ms() + 30_000), &unix_ms()],
        )
        .unwrap()
        .get(0);
    c.execute("SELECT pg_notify('portcullis_fleet', $1)", &[&format!("g {id}")]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for g in &gws {
        assert!(holds(g, "192.0.2.66".parse().unwrap()).is_none());
    }

    // gw2 restarts (a fresh kernel, nothing held) and reconciles the live fleet grants.
    fleets[0].share(Outgoing {
        addr: other,
        services: vec![ssh()],
        expires_at: unix_ms() + 20_000,
        origin: "api:ops".into(),
    });
    wait_for("gw2 open", Duration::from_secs(5), || holds(&gws[1], other).is_some());
    std::thread::sleep(Duration::from_millis(1100));
    drop(fleets.into_iter().nth(1));
    let gw2 = gateway();
    let f2 = Fleet::start(pg.node("gw2"), &gw2).unwrap();
    wait_for("gw2 reconciled", Duration::from_secs(10), || holds(&gw2, other).is_some());
    let left = holds(&gw2, other).unwrap();
    assert!(
        left < Duration::from_millis(19_000) && left > Duration::from_secs(15),
        "remaining time: {left:?}"
    );
    assert!(holds(&gw2, client).is_none(), "revoked grant not reapplied");
    assert!(holds(&gw2, "192.0.2.66".parse().unwrap()).is_none(), "unknown node not applied");
    drop(f2);
}

#[test]
fn database_down_local_grants_hold_and_expire_then_queue_drains() {
    let Some(pg) = Pg::start() else { return };
    let (gw1, gw2) = (gateway(), gateway());
    let f1 = Fleet::start(pg.node("gw1"), &gw1).unwrap();
    let f2 = Fleet::start(pg.node("gw2"), &gw2).unwrap();
    wait_for("listeners", Duration::from_secs(10), || {
        f1.status().connected.load(Ordering::Relaxed) && f2.status().connected.load(Ordering::Relaxed)
    });
    pg.down();
    wait_for("disconnect seen", Duration::from_secs(10), || !f2.status().connected.load(Ordering::Relaxed));
    let a: IpAddr = "192.0.2.20".parse().unwrap();
    let origin =
        portcullis_daemon::grants::Origin { kind: portcullis_api::OriginKind::Door, detail: "ssh".into() };
    // A local door still opens, and closes on time, with the database down.
    gw1.grant(origin.clone(), a, &[ssh()], Duration::from_secs(1)).unwrap();
    assert!(holds(&gw1, a).is_some());
    wait_for("expiry", Duration::from_millis(2500), || holds(&gw1, a).is_none());
    // A fleet grant made now is queued, then shared when the database returns.
    let b: IpAddr = "192.0.2.21".parse().unwrap();
    gw1.grant(origin, b, &[ssh()], Duration::from_secs(30)).unwrap();
    f1.share(Outgoing {
        addr: b,
        services: vec![ssh()],
        expires_at: unix_ms() + 30_000,
        origin: "door:ssh".into(),
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(f1.status().queued.load(Ordering::Relaxed), 1);
    pg.up();
    wait_for("queue drained and applied", Duration::from_secs(15), || holds(&gw2, b).is_some());
    // The publisher counts the job done once its transaction returns, which can be just
    // after gw2 got the notification.
    wait_for("queue counted empty", Duration::from_secs(2), || {
        f1.status().queued.load(Ordering::Relaxed) == 0
    });
    assert!(f2.status().lag_ms.load(Ordering::Relaxed) >= 0);
}

mod gate {
    use super::*;
    use portcullis_daemon::config::spa::{NativeUser, SpaConfig};
    use portcullis_daemon::fleet::gate::FleetGate;
    use portcullis_daemon::spa::replay::ReplayCache;
    use portcullis_daemon::spa::{RejectReason, SpaGate, Verdict};
    use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerKey, UserKey};
    use portcullis_proto::Millis;
    use std::collections::HashMap;

    fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut x = seed;
        move |b: &mut [u8]| {
            for chunk in b.chunks_mut(8) {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..chunk.len()]);
            }
        }
    }

    fn gate(server: &ServerKey, alice: &UserKey, fleet: bool, fg: Option<FleetGate>) -> SpaGate {
        let mut users = HashMap::new();
        users.insert(
            "alice".to_string(),
            NativeUser {
                key: alice.public(),
                open: vec![ssh()],
                max_open_for: Duration::from_secs(60),
                allow_addresses: Vec::new(),
                fleet,
            },
        );
        let cfg = SpaConfig { server_key: Some(server.clone()), users, ..SpaConfig::default() };
        let g = SpaGate::new(&cfg, vec![ssh()], ReplayCache::in_memory(1000));
        match fg {
            Some(fg) => g.with_fleet(fg),
            None => g,
        }
    }

    fn fleet_gate(url: String, node: &str, on_db_down: OnDbDown) -> FleetGate {
        FleetGate::new(FleetReplay::spawn(url, node.into(), replay::DEFAULT_WAIT).unwrap(), on_db_down)
    }

    #[test]
    fn packet_accepted_on_one_gateway_is_refused_on_another() {
        let Some(pg) = Pg::start() else { return };
        schema::migrate(&mut pg.client()).unwrap();
        let (server, alice) = (ServerKey::generate(&mut rng(1)), UserKey::generate(&mut rng(2)));
        let mut gw1 =
            gate(&server, &alice, true, Some(fleet_gate(pg.url("postgres"), "gw1", OnDbDown::Refuse)));
        let mut gw2 =
            gate(&server, &alice, true, Some(fleet_gate(pg.url("postgres"), "gw2", OnDbDown::Refuse)));
        let now = u64::try_from(unix_ms() / 1000).unwrap();
        let packet = |seed| {
            let mut r = rng(seed);
            let req = Request::new("alice", now, AllowAddr::Source, [ssh()], 30, &mut r).unwrap();
            native::seal(&req, server.public(), &alice, &mut r).unwrap()
        };
        let src: IpAddr = "192.0.2.10".parse().unwrap();
        let p = packet(10);
        let t = Instant::now();
        assert!(matches!(gw1.handle(src, &p, now, Millis(0)), Verdict::Grant(_)));
        eprintln!("fleet-scoped SPA accept (incl. claim): {:?}", t.elapsed());
        assert!(gw1.take_fleet_share(), "a fleet grant is shared");
        assert!(!gw1.take_fleet_share(), "once");
        assert_eq!(gw2.handle(src, &p, now, Millis(0)), Verdict::Reject(RejectReason::Replayed));
        // A local-scope user on the same gateway never waits for the database.
        let mut local =
            gate(&server, &alice, false, Some(fleet_gate(pg.url("postgres"), "gw2", OnDbDown::Refuse)));
        let t = Instant::now();
        assert!(matches!(local.handle(src, &packet(11), now, Millis(0)), Verdict::Grant(_)));
        eprintln!("local-scope SPA accept: {:?}", t.elapsed());
        assert!(!local.take_fleet_share());
        // Database down: refuse, or accept locally, as on_db_down says.
        pg.down();
        let mut refuse =
            gate(&server, &alice, true, Some(fleet_gate(pg.url("postgres"), "gw3", OnDbDown::Refuse)));
        let mut lenient =
            gate(&server, &alice, true, Some(fleet_gate(pg.url("postgres"), "gw3", OnDbDown::Local)));
        let t = Instant::now();
        assert_eq!(
            refuse.handle(src, &packet(12), now, Millis(0)),
            Verdict::Reject(RejectReason::FleetUnavailable)
        );
        assert!(t.elapsed() < Duration::from_millis(400), "bounded wait: {:?}", t.elapsed());
        let p = packet(13);
        assert!(matches!(lenient.handle(src, &p, now, Millis(0)), Verdict::Grant(_)));
        assert!(!lenient.take_fleet_share(), "not shared when accepted locally");
        assert!(matches!(
            lenient.handle(src, &p, now, Millis(1)),
            Verdict::Reject(RejectReason::Replayed | RejectReason::EphemeralSeen)
        ));
        let mut local = gate(&server, &alice, false, None);
        assert!(
            matches!(local.handle(src, &packet(14), now, Millis(0)), Verdict::Grant(_)),
            "local users unaffected"
        );
    }
}

/// Three gateway daemons (each in its own lab, all with the same addresses, so the
/// client is 192.0.2.2 behind every gateway) sharing one database.
mod daemons {
    use super::*;
    use crate::support::{self, lab, root_or_skip, Probe, Server};
    use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerKey, UserKey};

    fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut x = seed;
        move |b: &mut [u8]| {
            for chunk in b.chunks_mut(8) {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..chunk.len()]);
            }
        }
    }

    fn config(node: &str, alice: &UserKey, bob: &UserKey) -> String {
        format!(
            r#"
[fleet]
database_url_file = "fleet.url"
node = "{node}"
nodes = ["gw1", "gw2", "gw3"]

[spa]
server_key_file = "server.key"

[[spa.user]]
name = "alice"
key = "{}"
open = ["tcp/2222"]
max_open_for = 20
scope = "fleet"

[[spa.user]]
name = "bob"
key = "{}"
open = ["tcp/2223"]
"#,
            alice.public(),
            bob.public()
        )
    }

    fn send(s: &Server, p: Vec<u8>) {
        s.lab
            .in_ns(&s.lab.client, move || {
                let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                u.send_to(&p, (lab::SERVER4, 62201)).unwrap();
            })
            .unwrap();
    }

    #[test]
    fn three_gateways_share_grants_replays_and_revocations() {
        if !root_or_skip("three_gateways_share_grants_replays_and_revocations") {
            return;
        }
        let Some(pg) = Pg::start() else { return };
        let server = ServerKey::generate(&mut rng(11));
        let (alice, bob) = (UserKey::generate(&mut rng(12)), UserKey::generate(&mut rng(13)));
        let url = pg.url("postgres");
        let key_text = server.to_text();
        let files = [("fleet.url", url.as_str()), ("server.key", key_text.as_str())];
        let mut gws: Vec<Server> = ["gw1", "gw2", "gw3"]
            .iter()
            .map(|n| Server::start_with(&format!("fl{n}"), &config(n, &alice, &bob), &[2222, 2223], &files))
            .collect();
        let mut seed = 100;
        let mut packet = |user: &UserKey, name: &str, port: u16, secs: u32| {
            seed += 1;
            let mut r = rng(seed);
            let now = u64::try_from(unix_ms() / 1000).unwrap();
            let svc = Service::parse_grant(&format!("tcp/{port}")).unwrap();
            let req = Request::new(name, now, AllowAddr::Source, [svc], secs, &mut r).unwrap();
            native::seal(&req, server.public(), user, &mut r).unwrap()
        };
        let rows = |pg: &Pg| -> i64 {
            pg.client().query_one("SELECT COUNT(*) FROM fleet_grants", &[]).unwrap().get(0)
        };

        // An SPA to gateway 1 opens the port on all three, for that client only.
        let p = packet(&alice, "alice", 2222, 20);
        send(&gws[0], p.clone());
        for g in &gws {
            g.wait_probe(&g.lab.client, lab::SERVER4, 2222, Probe::Open);
            assert_eq!(g.probe(&g.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered);
        }
        // Each gateway runs split: its fleet node lives in the unprivileged part (which
        // applied gateway 1's grant above through the privileged part).
        for g in &gws {
            let log = g.log_text();
            assert!(!log.contains("NOT SPLIT"), "{log}");
            assert!(log.contains("privsep: unprivileged part"), "{log}");
        }
        for g in &gws[1..] {
            g.wait_log("by fleet node gw1", 1);
        }
        // The same packet replayed to gateway 2 is refused there.
        send(&gws[1], p);
        gws[1].wait_log("replayed packet", 1);
        assert_eq!(rows(&pg), 1);
        // The same packet to all three at once: one grant record.
        let p = packet(&alice, "alice", 2222, 20);
        std::thread::scope(|sc| {
            for g in &gws {
                let p = p.clone();
                sc.spawn(move || send(g, p));
            }
        });
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(rows(&pg), 2, "exactly one more grant record");
        // Revoke on gateway 3 closes it on 1 and 2.
        let client: IpAddr = lab::CLIENT4.parse().unwrap();
        assert!(!shared::revoke(&mut pg.client(), "gw3", client, None, unix_ms()).unwrap().is_empty());
        for g in &gws[..2] {
            g.wait_probe(&g.lab.client, lab::SERVER4, 2222, Probe::Filtered);
        }

        // Gateway 2 killed; a grant made meanwhile is applied when it restarts.
        gws[1].kill9();
        send(&gws[0], packet(&alice, "alice", 2222, 20));
        gws[0].wait_probe(&gws[0].lab.client, lab::SERVER4, 2222, Probe::Open);
        let conf = config("gw2", &alice, &bob);
        gws[1].spawn(&conf);
        gws[1].wait_probe(&gws[1].lab.client, lab::SERVER4, 2222, Probe::Open);
        gws[1].wait_log("opened for", 1);

        // Database stopped: local users still open, and close on time; fleet users refused.
        pg.down();
        let t = Instant::now();
        send(&gws[2], packet(&bob, "bob", 2223, 3));
        gws[2].wait_probe(&gws[2].lab.client, lab::SERVER4, 2223, Probe::Open);
        send(&gws[2], packet(&alice, "alice", 2222, 20));
        gws[2].wait_log("fleet database unavailable", 1);
        let closed = support::wait_until(Duration::from_secs(8), || {
            gws[2].probe(&gws[2].lab.client, lab::SERVER4, 2223) == Probe::Filtered
        });
        // 3 s grant; the slack is for probes (600 ms each) on a loaded machine.
        assert!(closed, "local grant did not expire");
        assert!(t.elapsed() < Duration::from_secs(6), "local grant closed late: {:?}", t.elapsed());
        for g in &mut gws {
            g.kill9();
        }
    }
}

/// Grant on one node → applied on the two others: median and p99 over 200 grants
/// (printed; the target is p99 ≤ 50 ms, asserted loosely here for a loaded machine).
#[test]
fn grant_to_all_nodes_latency() {
    let Some(pg) = Pg::start() else { return };
    let (gws, fleets) = three_nodes(&pg);
    let mut times = Vec::new();
    for i in 0..200u32 {
        let addr = IpAddr::from([10, 9, (i >> 8) as u8, i as u8]);
        let t = Instant::now();
        fleets[0].share(Outgoing {
            addr,
            services: vec![ssh()],
            expires_at: unix_ms() + 60_000,
            origin: "api:bench".into(),
        });
        let held = |g: &Granter| g.live().unwrap().iter().any(|l| l.addr == addr);
        while !(held(&gws[1]) && held(&gws[2])) {
            assert!(t.elapsed() < Duration::from_secs(5), "grant {i} never applied everywhere");
            std::thread::sleep(Duration::from_micros(200));
        }
        times.push(t.elapsed());
    }
    times.sort();
    let (median, p99) = (times[100], times[197]);
    eprintln!("fleet grant -> applied on all nodes: median {median:?}, p99 {p99:?} (200 grants)");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
}

/// A node whose clock is minutes off: the difference is measured against the
/// database's clock, and fleet grants still close at their absolute expiry there.
#[test]
fn node_clock_off_by_minutes_is_detected_and_expiry_holds() {
    let Some(pg) = Pg::start() else { return };
    let (gw1, ahead, behind) = (gateway(), gateway(), gateway());
    let f1 = Fleet::start(pg.node("gw1"), &gw1).unwrap();
    let five_min = 300_000;
    let f2 = Fleet::start_with_clock(pg.node("gw2"), &ahead, Arc::new(move || unix_ms() + five_min)).unwrap();
    let f3 =
        Fleet::start_with_clock(pg.node("gw3"), &behind, Arc::new(move || unix_ms() - five_min)).unwrap();
    for f in [&f1, &f2, &f3] {
        wait_for("listener", Duration::from_secs(10), || f.status().connected.load(Ordering::Relaxed));
    }
    let skew = |f: &Fleet| f.status().skew_ms.load(Ordering::Relaxed);
    assert!((skew(&f2) + five_min).abs() < 2_000, "ahead: {}", skew(&f2));
    assert!((skew(&f3) - five_min).abs() < 2_000, "behind: {}", skew(&f3));
    assert!(skew(&f1).abs() < shared::CLOCK_WARN_MS);
    let mut metrics = String::new();
    portcullis_daemon::fleet::metrics::render(&mut metrics);
    assert!(metrics.contains("portcullis_fleet_clock_skew_milliseconds"), "{metrics}");

    // A 30 s grant from gw1: the node ahead does not take it for expired, the node
    // behind does not keep it 5 minutes longer.
    let client: IpAddr = "192.0.2.40".parse().unwrap();
    f1.share(Outgoing {
        addr: client,
        services: vec![ssh()],
        expires_at: unix_ms() + 30_000,
        origin: "door:ssh".into(),
    });
    wait_for("applied on both", Duration::from_secs(5), || {
        holds(&ahead, client).is_some() && holds(&behind, client).is_some()
    });
    for g in [&ahead, &behind] {
        let left = holds(g, client).unwrap();
        assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(25), "{left:?}");
    }
    // A grant shared by the node ahead (its own clock says 30 s from its now) lasts
    // 30 s on the others too, not 30 s minus 5 minutes.
    let other: IpAddr = "192.0.2.41".parse().unwrap();
    f2.share(Outgoing {
        addr: other,
        services: vec![ssh()],
        expires_at: unix_ms() + five_min + 30_000,
        origin: "door:ssh".into(),
    });
    wait_for("applied on gw1", Duration::from_secs(5), || holds(&gw1, other).is_some());
    let left = holds(&gw1, other).unwrap();
    assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(25), "{left:?}");
}

/// Malformed notifications and rows from unknown nodes are ignored, and the listener
/// keeps working after them; a node refuses to join a database with a newer schema.
#[test]
fn bad_notifications_are_ignored_and_newer_schema_refused_at_start() {
    let Some(pg) = Pg::start() else { return };
    let (gws, fleets) = three_nodes(&pg);
    let mut c = pg.client();
    for bad in
        ["", "g", "g -1", "g 0", "x 5", "g 99999999999999999999", "r abc", "g 1 2", "\u{1}\u{7f}", "g\u{a0}1"]
    {
        c.execute("SELECT pg_notify('portcullis_fleet', $1)", &[&bad]).unwrap();
    }
    // A row naming a node outside `nodes`, and one whose address does not parse.
    for (node, addr) in [("gw9", "192.0.2.50"), ("gw1", "not-an-address")] {
        let id: i64 = c
            .query_one(
                "INSERT INTO fleet_grants (node, addr, service, expires_at, origin, created_at)
                 VALUES ($1, $2, 'tcp/22', $3, 'spa:x', $4) RETURNING id",
                &[&node, &addr, &(unix_ms() + 30_000), &unix_ms()],
            )
            .unwrap()
            .get(0);
        c.execute("SELECT pg_notify('portcullis_fleet', $1)", &[&format!("g {id}")]).unwrap();
    }
    // Still listening: a genuine grant after the bad ones is applied.
    let good: IpAddr = "192.0.2.51".parse().unwrap();
    fleets[0].share(Outgoing {
        addr: good,
        services: vec![ssh()],
        expires_at: unix_ms() + 30_000,
        origin: "api:ops".into(),
    });
    wait_for("good grant applied", Duration::from_secs(5), || {
        holds(&gws[1], good).is_some() && holds(&gws[2], good).is_some()
    });
    for g in &gws {
        assert!(holds(g, "192.0.2.50".parse().unwrap()).is_none(), "unknown node applied");
        assert_eq!(g.live().unwrap().len(), usize::from(holds(g, good).is_some()), "only the good grant");
    }
    assert!(fleets.iter().all(|f| f.status().connected.load(Ordering::Relaxed)));
    drop(fleets);

    c.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(schema::VERSION + 1)]).unwrap();
    let e = Fleet::start(pg.node("gw1"), &gateway()).err().expect("newer schema refused");
    assert!(matches!(e, FleetError::NewerSchema { .. }), "{e}");
    assert!(e.to_string().contains("upgrade portcullis on this node"), "{e}");
}

/// The API's view of the fleet: live grants with their node, revoke by fleet id.
#[test]
fn live_grants_list_and_revoke_by_id() {
    let Some(pg) = Pg::start() else { return };
    let (gws, fleets) = three_nodes(&pg);
    let a: IpAddr = "192.0.2.60".parse().unwrap();
    fleets[0].share(Outgoing {
        addr: a,
        services: vec![ssh()],
        expires_at: unix_ms() + 30_000,
        origin: "api:ops".into(),
    });
    wait_for("applied", Duration::from_secs(5), || holds(&gws[2], a).is_some());
    let live = fleets[2].live_grants(None).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].node.as_str(), live[0].addr, live[0].origin.as_str()), ("gw1", a, "api:ops"));
    assert!(fleets[2].live_grants(Some("192.0.2.61".parse().unwrap())).unwrap().is_empty());
    let g = fleets[2].revoke_id(live[0].id).unwrap().expect("revoked");
    assert_eq!(g.id, live[0].id);
    wait_for("closed everywhere", Duration::from_secs(5), || gws.iter().all(|g| holds(g, a).is_none()));
    assert!(fleets[1].revoke_id(live[0].id).unwrap().is_none(), "already revoked");
    assert!(fleets[1].live_grants(None).unwrap().is_empty());
}

/// A node started while the database is away creates the schema when it first reaches
/// it; a node reconnecting to a database a newer node has upgraded refuses to read it.
#[test]
fn schema_is_checked_at_every_connect() {
    let Some(pg) = Pg::start() else { return };
    pg.down();
    let (gw1, gw2) = (gateway(), gateway());
    let f1 = Fleet::start(pg.node("gw1"), &gw1).unwrap();
    let f2 = Fleet::start(pg.node("gw2"), &gw2).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!f1.status().connected.load(Ordering::Relaxed));
    assert!(!f1.status().problem().is_empty());
    pg.up();
    for f in [&f1, &f2] {
        wait_for("connected", Duration::from_secs(10), || f.status().connected.load(Ordering::Relaxed));
    }
    let a: IpAddr = "192.0.2.70".parse().unwrap();
    f1.share(Outgoing {
        addr: a,
        services: vec![ssh()],
        expires_at: unix_ms() + 30_000,
        origin: "api:ops".into(),
    });
    wait_for("applied", Duration::from_secs(5), || holds(&gw2, a).is_some());

    // A newer node upgrades the schema; after a reconnect, ours refuse it.
    pg.client()
        .execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(schema::VERSION + 1)])
        .unwrap();
    pg.down();
    pg.up();
    wait_for("newer schema refused", Duration::from_secs(15), || {
        f2.status().problem().contains("newer than this daemon")
    });
    assert!(!f2.status().connected.load(Ordering::Relaxed));
}
