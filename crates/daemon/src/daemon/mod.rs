//! The daemon: wires config, firewall driver, capture socket and address monitor
//! around the [`engine::Engine`], and runs the capture loop until told to stop.
//!
//! Threading: one capture thread does recv → parse → track → grant for knocks
//! synchronously. The nftables grant is a single netlink round trip (microseconds), so
//! doing it inline gives the lowest knock-to-open latency. With `[spa]` the SPA ports
//! have a packet socket of their own, read after the knocks' one: an SPA flood fills
//! only its own receive buffer. SPA datagrams get only their cheap checks and crypto
//! budget on arrival; what passes waits in a bounded backlog, fair between source
//! prefixes, and the same thread decides it (crypto, replay, policy, grant) in slices of
//! at most [`SPA_SLICE`] after each batch, reading the sockets without waiting while any
//! is left. So a flood of crypto-costly SPA junk holds a knock up by one SPA batch and
//! one slice at most, and grants stay applied one at a time through
//! [`crate::grants::Granter`]. The address monitor runs on its own thread, the grant
//! expiry scheduler and the store writer on theirs (see [`crate::grants`]).

pub mod engine;
pub mod reload;
pub mod service;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use portcullis_proto::bpf::{self, Match};
use portcullis_proto::{wire, Millis, Proto};

use crate::capture::udp_server::UdpServer;
use crate::capture::{is_timeout, wait_either, Batch, Monitor, PacketSocket};
use crate::config::{Backend, Config};
use crate::firewall::nft::NftDriver;
use crate::firewall::none::NoFirewall;
use crate::firewall::{FirewallDriver, Plan};
use crate::spa::replay::{self, ReplayCache};
use crate::spa::SpaGate;
use engine::Engine;

/// How long a capture read waits before the loop does housekeeping anyway.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// Largest packet we copy: headers plus the biggest SPA payload (1500), with room to spare.
const SNAPLEN: usize = 2048;
/// Packets taken per `recvmmsg` call when they are queued.
const BATCH: usize = 64;
/// Longest stretch of SPA crypto between two reads of the capture socket (a native
/// packet costs ~0.1 ms, an fwknop one ~2 µs per stanza tried).
pub const SPA_SLICE: Duration = Duration::from_micros(500);

/// Never exit on capture errors (an interface vanishing mid-read, ENOBUFS): log at most
/// once a second and keep going.
fn capture_error(last_log: &mut Option<Instant>, e: &std::io::Error) {
    if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
        tracing::warn!("capture error (continuing): {e}");
        *last_log = Some(Instant::now());
    }
    std::thread::sleep(Duration::from_millis(10));
}

/// The driver a config asks for.
pub fn driver_for(config: &Config) -> anyhow::Result<Box<dyn FirewallDriver>> {
    let mut d: Box<dyn FirewallDriver> = match config.daemon.backend {
        Backend::Nftables => Box::new(NftDriver::new().context("opening the nftables netlink socket")?),
        Backend::None => Box::new(NoFirewall::default()),
        Backend::Iptables(v) => Box::new(
            crate::firewall::iptables::IptablesDriver::new(v).context("setting up the iptables backend")?,
        ),
    };
    d.adopt(&plan_for(config));
    Ok(d)
}

/// What the firewall must enforce for `config`.
pub fn plan_for(config: &Config) -> Plan {
    let mut plan =
        crate::firewall::plan(config.protected(), config.daemon.max_grants, &config.daemon.firewall);
    plan.never_gate = config.daemon.never_gate.clone();
    (plan.prefix_v4, plan.prefix_v6) = config.limits.grant_prefix.lens();
    plan
}

/// The BPF matches for every knock of every door (de-duplicated) at Unix time `unix`,
/// and the SPA ports: what one capture socket takes.
pub fn bpf_matches(config: &Config, unix: u64) -> Vec<Match> {
    let mut m = knock_matches(config, unix);
    m.extend(spa_matches(config));
    m
}

/// The SPA ports' matches (none without `[spa]`).
pub fn spa_matches(config: &Config) -> Vec<Match> {
    let ports = config.spa.as_ref().map_or(&[][..], |s| &s.ports[..]);
    let udp =
        |port| Match { proto: Proto::Udp, port, flags: portcullis_proto::FlagFilter { set: 0, clear: 0 } };
    ports.iter().copied().collect::<BTreeSet<u16>>().into_iter().map(udp).collect()
}

/// The BPF matches for every knock of every door (de-duplicated) at Unix time `unix`:
/// a rotating door's knocks of the previous, current and next step, so the filter can
/// be swapped at leisure after a boundary without missing the new step's knocks.
pub fn knock_matches(config: &Config, unix: u64) -> Vec<Match> {
    let set: BTreeSet<(u8, u16, u8, u8)> = config
        .doors
        .iter()
        .flat_map(|d| {
            let mut knocks = d.all_knocks();
            if let Some(r) = &d.rotating {
                let step = r.rotation.step_at(unix);
                for s in [step.saturating_sub(1), step, step.saturating_add(1)] {
                    knocks.extend(r.rotation.sequence(s));
                }
            }
            knocks.into_iter().map(move |k| {
                let (s, c) = if k.proto == Proto::Tcp { (d.flags.set, d.flags.clear) } else { (0, 0) };
                (k.proto.number(), k.port, s, c)
            })
        })
        .collect();
    set.into_iter()
        .filter_map(|(p, port, set, clear)| {
            Some(Match {
                proto: Proto::from_number(p)?,
                port,
                flags: portcullis_proto::FlagFilter { set, clear },
            })
        })
        .collect()
}

/// The SPA replay cache: on disk in the state dir (or in memory without
/// persistence), seeded on its first creation from an fwknopd digest cache.
pub(crate) fn open_replay(
    config: &Config,
    spa: &crate::config::SpaConfig,
    now_unix: u64,
) -> anyhow::Result<ReplayCache> {
    if !spa.persist_replay {
        return Ok(ReplayCache::in_memory(replay::DEFAULT_CAPACITY));
    }
    let path = config.daemon.state_dir.join("spa-replay");
    let first = !path.exists();
    let mut replay = ReplayCache::open(&path, replay::DEFAULT_CAPACITY, now_unix)
        .with_context(|| format!("opening the SPA replay cache {}", path.display()))?;
    if let (true, Some(digests)) = (first, &spa.import_digest_file) {
        let keep = spa.aging.then_some(spa.max_age + 1);
        match crate::spa::digest_import::import(&mut replay, digests, keep, now_unix) {
            Ok(n) => {
                tracing::info!("spa: imported {n} entries of fwknopd's digest cache {}", digests.display())
            }
            Err(e) => tracing::warn!("spa: cannot import fwknopd's digest cache {}: {e}", digests.display()),
        }
    }
    Ok(replay)
}

/// What the daemon opens while it still has every privilege: the capture socket and
/// the API's sockets and tokens.
pub struct Opened {
    /// The packet socket: knocks (and the SPA ports when there is no `spa_sock`).
    pub sock: PacketSocket,
    /// With `[spa]`: a packet socket of its own for the SPA ports, so that no SPA flood
    /// can fill the knocks' receive buffer or be read before them.
    pub spa_sock: Option<PacketSocket>,
    /// The API, bound but not served.
    pub api: Option<crate::api::Bound>,
    /// With `[fleet]`: the database, its root-only URL file and CA file read.
    pub fleet: Option<crate::fleet::db::Database>,
}

/// Create the state directory, open the capture socket and bind the API.
pub fn open(config: &Config) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(&config.daemon.state_dir)
        .with_context(|| format!("creating state dir {}", config.daemon.state_dir.display()))?;
    let split = config.spa.is_some();
    let sock = PacketSocket::open(&bpf::program(&main_matches(config, unix_now(), split)), RECV_TIMEOUT)
        .context("opening the capture socket (needs CAP_NET_RAW)")?;
    let spa_sock = match split {
        true => Some(
            PacketSocket::open(&bpf::program(&spa_matches(config)), RECV_TIMEOUT)
                .context("opening the SPA capture socket (needs CAP_NET_RAW)")?,
        ),
        false => None,
    };
    let api = config.api.as_ref().map(crate::api::bind).transpose().context("starting the API")?;
    let fleet = crate::fleet::node::open_for(config)?;
    Ok(Opened { sock, spa_sock, api, fleet })
}

/// What the main capture socket takes: knocks, plus the SPA ports unless they have a
/// socket of their own (`split`).
fn main_matches(config: &Config, unix: u64, split: bool) -> Vec<Match> {
    if split {
        knock_matches(config, unix)
    } else {
        bpf_matches(config, unix)
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Everything but the firewall and the commands: store, grants, API, engine, capture.
/// `privileged` is set in the unprivileged part of a split daemon: commands and
/// one-time files are handed to the privileged part, and losing it stops the loop.
pub fn serve(
    config: &Config,
    shutdown: &AtomicBool,
    opened: Opened,
    driver: Box<dyn FirewallDriver>,
    privileged: Option<Arc<crate::privsep::client::Client>>,
    reloading: Option<(Option<signal_hook::iterator::Signals>, reload::Loader)>,
) -> anyhow::Result<()> {
    let Opened { sock, spa_sock, api, fleet } = opened;
    let plan = plan_for(config);
    // Firewall set-up, grant store, reconciliation, expiry scheduler; then the API.
    let granter =
        crate::grants::start(&config.daemon.state_dir, &plan, driver, &config.store, privileged.is_none())?;
    // Split: health comes from the privileged part's watcher, reloads from its offers.
    let offers = privileged.as_ref().map(|c| c.follow(&granter)).transpose()?;
    let spare = match (&privileged, &api) {
        (Some(_), Some(b)) => Some(b.try_clone().context("api: duplicating the listeners")?),
        _ => None,
    };
    let mut api = match (&config.api, api) {
        (Some(a), Some(bound)) => {
            Some(crate::api::serve(bound, a, Arc::clone(&granter)).context("starting the API")?)
        }
        _ => None,
    };
    let mut engine = Engine::with_granter(config, Arc::clone(&granter))?;
    let fleet = crate::fleet::node::start_for(config, fleet, &granter)?;
    if let Some(f) = &fleet {
        engine = engine.with_fleet(Arc::clone(f));
    }
    if let Some(spa) = &config.spa {
        let now_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let replay = open_replay(config, spa, now_unix)?;
        tracing::info!(
            "spa: udp port(s) {:?}, {} native user(s), {} fwknop stanza(s), {} replay entries restored",
            spa.ports,
            spa.users.len(),
            spa.stanzas.len(),
            replay.len()
        );
        let gate = SpaGate::new(spa, plan.protected.clone(), replay);
        engine = engine.with_spa(match crate::fleet::node::gate_for(fleet.as_deref(), spa)? {
            Some(fg) => gate.with_fleet(fg),
            None => gate,
        });
    }
    engine.defer_spa();
    let cycles = config.spa.as_ref().is_some_and(|s| s.stanzas.iter().any(|st| st.cmd_cycle.is_some()));
    let mut actions = None;
    if let Some(c) = &privileged {
        engine.set_privileged(Arc::clone(c));
    } else if cycles || config.doors.iter().any(|d| d.commands.is_some()) {
        let a = crate::actions::Actions::start(&config.daemon.state_dir, config.daemon.command_time_limit)
            .context("starting the command runner")?;
        engine.set_actions(a.handle());
        actions = Some(a);
    }
    let monitor = Monitor::start(config.daemon.interfaces.clone()).context("starting the address monitor")?;
    engine.follow_rotation(unix_now());
    let mut filter_generation = engine.rotation_generation();
    let udp = match config.spa.as_ref().and_then(|s| s.udp_server) {
        Some(port) => {
            let (srv, rx) = UdpServer::start(port)
                .with_context(|| format!("binding the SPA UDP server on port {port}"))?;
            tracing::info!("spa: UDP server bound on {} (silent: never answers)", srv.local_addr());
            Some((srv, rx))
        }
        None => None,
    };
    let protected = plan.protected.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
    tracing::info!(
        "ready: {} door(s), protecting {protected}, firewall {}, tracking up to {} attempts",
        config.doors.len(),
        granter.driver_name(),
        config.daemon.max_tracked
    );

    // SIGHUP (split: the privileged part's offer) reloads on a thread of its own; the
    // capture loop takes the result at a batch boundary. The reloader owns the API then.
    let (updates, pending) = std::sync::mpsc::channel::<reload::Update>();
    let reloader = match reloading {
        Some((hup, loader)) => {
            let (trigger, source) = match (privileged.clone(), offers, hup) {
                (Some(client), Some(rx), _) => {
                    (reload::Trigger::Offers(rx), reload::Source::Privileged { client, loader, spare })
                }
                (_, _, Some(hup)) => (reload::Trigger::Signals(hup), reload::Source::Files(loader)),
                _ => anyhow::bail!("reloading needs SIGHUP or the privileged part"),
            };
            let r = reload::Reloader {
                config: config.clone(),
                api: api.take(),
                granter: Arc::clone(&granter),
                source,
                updates,
                service: service::Service::from_env(&config.daemon.state_dir),
            };
            Some(r.spawn(trigger)?)
        }
        None => None,
    };
    // The config the capture loop runs on: the start one, then each reloaded one.
    let mut current = config.clone();
    let mut svc = service::Service::from_env(&config.daemon.state_dir);
    svc.ready(&format!("protecting {protected}"));

    let origin = Instant::now();
    let now = || Millis(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut generation = monitor.generation();
    let mut view = monitor.view();
    let mut batch = Batch::new(BATCH, SNAPLEN);
    let mut last_housekeeping = now();
    let mut last_error_log: Option<Instant> = None;
    let mut lost = false;
    while !shutdown.load(Ordering::Relaxed) {
        if let Some(c) = &privileged {
            lost = c.is_dead();
            if lost || c.stop_requested() {
                break;
            }
        }
        svc.pet();
        if let Ok(u) = pending.try_recv() {
            let mut next = u.engine;
            let kept = next.take_over(engine, u.spa);
            engine = next;
            current = *u.config;
            filter_generation = engine.rotation_generation();
            if let Err(e) =
                sock.set_filter(&bpf::program(&main_matches(&current, unix_now(), spa_sock.is_some())))
            {
                tracing::error!(
                    "reload: the new capture filter was refused ({e}); knocks on new ports are not seen"
                );
            }
            if let Err(e) =
                spa_sock.as_ref().map_or(Ok(()), |s| s.set_filter(&bpf::program(&spa_matches(&current))))
            {
                tracing::error!(
                    "reload: the new SPA capture filter was refused ({e}); new SPA ports are not seen"
                );
            }
            tracing::info!("reloaded: {}; {kept} door group(s) kept their knocks in progress", u.summary);
            svc.ready(&format!("reloaded: {}", u.summary));
        }
        // SPA packets waiting for crypto: read what is queued, do not wait for more.
        let wait = !engine.spa_pending();
        // Which sockets to read, and whether the read may wait: knocks first, from their
        // own socket when SPA has one, then one batch of the SPA socket.
        let reads: [(Option<&PacketSocket>, bool); 2] = match &spa_sock {
            None => [(Some(&sock), wait), (None, false)],
            Some(spa) => match wait_either(&sock, spa, if wait { RECV_TIMEOUT } else { Duration::ZERO }) {
                Ok((k, s)) => [(k.then_some(&sock), false), (s.then_some(spa), false)],
                Err(e) => {
                    capture_error(&mut last_error_log, &e);
                    [(None, false), (None, false)]
                }
            },
        };
        for (i, (from, wait)) in reads.into_iter().enumerate() {
            let Some(from) = from else { continue };
            // A coarse knock filter may pass SPA datagrams too: they are the SPA socket's.
            let skip_spa = i == 0 && spa_sock.is_some();
            match from.recv_batch(&mut batch, wait) {
                Ok(_) => {
                    if monitor.generation() != generation {
                        generation = monitor.generation();
                        view = monitor.view();
                    }
                    // One clock read per batch: packets in a batch arrived within microseconds.
                    let (t, wall) = (now(), SystemTime::now());
                    for (bytes, meta) in batch.packets() {
                        match wire::parse_ip(bytes) {
                            Ok(d) if skip_spa && d.proto == Proto::Udp && engine.is_spa_port(d.dst_port) => {}
                            Ok(d) => engine.on_datagram(&view, meta.ifindex, &d, t, wall),
                            Err(_) => {}
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => capture_error(&mut last_error_log, &e),
            }
        }
        let (t, wall) = (now(), SystemTime::now());
        if let Some((_, rx)) = &udp {
            while let Ok(d) = rx.try_recv() {
                engine.on_spa_socket(d.src, d.dst, d.dport, &d.payload, t, wall);
            }
        }
        if engine.spa_pending() {
            let until = Instant::now() + SPA_SLICE;
            engine.run_spa(&mut || Instant::now() < until, t, wall);
        }
        let unix = wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        engine.follow_rotation(unix);
        if engine.rotation_generation() != filter_generation {
            // If the new filter is refused the old one stays: it was built with the next
            // step in it, so it passes the new current step's knocks until the step after,
            // when the swap is tried again.
            match sock.set_filter(&bpf::program(&main_matches(&current, unix, spa_sock.is_some()))) {
                Ok(()) => tracing::debug!("rotating doors: capture filter follows step change"),
                Err(e) => tracing::error!("rotating doors: replacing the capture filter failed: {e}"),
            }
            filter_generation = engine.rotation_generation();
        }
        if t.since(last_housekeeping) >= Duration::from_secs(1) {
            engine.housekeeping(t, wall);
            for s in std::iter::once(&sock).chain(spa_sock.as_ref()) {
                if let Ok(n) = s.take_drops() {
                    engine.count_capture_drops(n);
                }
            }
            granter.publish_stats(engine.stats());
            last_housekeeping = t;
        }
    }
    svc.stopping();
    if let Some(r) = reloader {
        r.stop();
    }
    drop(udp);
    monitor.stop();
    if let Some(a) = actions {
        a.shutdown(); // pending stop commands stay recorded for the next start
    }
    if let Some(a) = api.as_mut() {
        a.stop();
    }
    granter.shutdown();
    if config.daemon.flush_at_exit && privileged.is_none() {
        // fwknopd FLUSH_IPT_AT_EXIT: every grant closes with the daemon (split: the
        // privileged part flushes once this part has stopped).
        match granter.with_driver(|d| d.teardown()) {
            Ok(()) => tracing::info!("firewall flushed at exit (FLUSH_IPT_AT_EXIT): every grant is closed"),
            Err(e) => tracing::error!("flushing the firewall at exit: {e}"),
        }
    }
    let s = engine.stats();
    tracing::info!(
        "stopping: {} packets seen, {} opened, {} grant failures, SPA {} accepted / {} rejected; firewall rules left in place, {}",
        s.packets,
        s.opened,
        s.grant_failures,
        s.spa_accepted,
        s.spa_rejected,
        if granter.kernel_expiry() {
            "grants expire on their own (kernel timeouts)"
        } else {
            "open grants stay open until the daemon runs again and closes the expired ones"
        }
    );
    if lost {
        anyhow::bail!("the privileged part is gone");
    }
    Ok(())
}
