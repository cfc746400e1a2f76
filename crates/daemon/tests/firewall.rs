//! Firewall backends end to end, in throwaway namespaces: ipset grants that the kernel
//! closes even after `kill -9`, accept mode on default-drop hosts (iptables, and
//! nftables through a chain in the admin's table), NAT grants to an inside host, and
//! gating of services reached through DNAT. Root required: as non-root they fail under
//! `CI=true` and print SKIPPED elsewhere.
//!
//! Driver-level tests run the driver on a thread inside the server namespace, so that
//! the `iptables-restore` it forks and its netlink sockets stay there.

mod support;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use portcullis_daemon::config::IptablesVariant;
use portcullis_daemon::firewall::iptables::IptablesDriver;
use portcullis_daemon::firewall::nft::NftDriver;
use portcullis_daemon::firewall::{FirewallDriver, Grant, NatGrant, Plan, Prefix};
use portcullis_proto::Service;
use support::*;

const DOOR: &str = "[[door]]\nname = \"ssh\"\nsequence = [7000, \"8000:udp\", 9000]\nseq_timeout = 5\n\
                    open = [\"tcp/22\"]\nopen_for = 3\n";

/// How long a probe that should be answered may keep trying (busy CI machines).
const ANSWER: Duration = Duration::from_secs(3);

/// A TCP probe from namespace `ns`, callable from any thread (it uses its own).
fn probe_from(ns: &str, addr: &str, port: u16) -> Probe {
    let path = PathBuf::from("/run/netns").join(ns);
    let to = SocketAddr::new(addr.parse().unwrap(), port);
    std::thread::spawn(move || {
        lab::enter(&path).unwrap();
        lab::probe(to, Duration::from_millis(600))
    })
    .join()
    .unwrap()
}

fn wait_probe(ns: &str, addr: &str, port: u16, want: Probe, limit: Duration) -> bool {
    wait_until(limit, || probe_from(ns, addr, port) == want)
}

fn knock(s: &Server) {
    s.client(&[&client_bin(), "knock", "-d", "20", lab::SERVER4, "7000", "8000:udp", "9000"]);
}

fn ipset_list(s: &Server, set: &str) -> String {
    String::from_utf8_lossy(&s.lab.exec(&s.lab.server, &["ipset", "list", set]).unwrap().stdout).into_owned()
}

#[test]
fn ipset_grants_close_on_time_after_kill_9() {
    if !root_or_skip("ipset_grants_close_on_time_after_kill_9") {
        return;
    }
    let conf = format!("[daemon]\nbackend = \"iptables-nft\"\n\n{DOOR}");
    let mut s = Server::start("fw-kill9", &conf, &[22]);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 22), Probe::Filtered, "protected");
    knock(&s);
    let knocked = Instant::now();
    s.wait_probe(&s.lab.client, lab::SERVER4, 22, Probe::Open);
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 22), Probe::Filtered, "only the knocking source");
    let set = ipset_list(&s, "portcullis4");
    assert!(set.contains(&format!("{},tcp:22 timeout", lab::CLIENT4)), "{set}");
    s.kill9();
    assert!(wait_probe(&s.lab.client, lab::SERVER4, 22, Probe::Filtered, Duration::from_secs(6)));
    let closed = knocked.elapsed();
    assert!(
        closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5),
        "closed after {closed:?}"
    );
    assert!(!ipset_list(&s, "portcullis4").contains(lab::CLIENT4));
}

#[test]
fn iptables_accept_mode_opens_a_default_drop_host() {
    if !root_or_skip("iptables_accept_mode_opens_a_default_drop_host") {
        return;
    }
    let conf = format!(
        "[daemon]\nbackend = \"iptables\"\nmode = \"accept\"\niptables_chain = \"FWKNOP_INPUT\"\n\n{DOOR}"
    );
    let s = Server::start("fw-ipt-accept", &conf, &[22]);
    // The host: INPUT policy DROP, only loopback and established/related accepted.
    s.lab.iptables_baseline(&s.lab.server, Baseline::DropAll).unwrap();
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 22), Probe::Filtered);
    knock(&s);
    let knocked = Instant::now();
    s.wait_probe(&s.lab.client, lab::SERVER4, 22, Probe::Open);
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 22), Probe::Filtered, "only the knocking source");
    assert!(wait_probe(&s.lab.client, lab::SERVER4, 22, Probe::Filtered, Duration::from_secs(6)));
    let closed = knocked.elapsed();
    assert!(
        closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5),
        "closed after {closed:?}"
    );
}

#[test]
fn gate_mode_does_not_open_a_default_drop_host() {
    if !root_or_skip("gate_mode_does_not_open_a_default_drop_host") {
        return;
    }
    // The counterpart of the test above: in gate mode the host's DROP still decides.
    let conf = format!("[daemon]\nbackend = \"iptables\"\n\n{DOOR}");
    let s = Server::start("fw-ipt-gate", &conf, &[22]);
    s.lab.iptables_baseline(&s.lab.server, Baseline::DropAll).unwrap();
    knock(&s);
    s.wait_log("via iptables", 1);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 22), Probe::Filtered);
}

const ADMIN_RULESET: &str = "table inet filter {
    chain portcullis {
    }
    chain input {
        type filter hook input priority filter; policy drop;
        iif lo accept
        ct state established,related accept
        jump portcullis
    }
}
";

#[test]
fn nftables_accept_mode_through_the_admins_table() {
    if !root_or_skip("nftables_accept_mode_through_the_admins_table") {
        return;
    }
    let mut s = Server::start("fw-nft-accept", &format!("[daemon]\n\n{DOOR}"), &[22]);
    s.kill9();
    let rules = s.dir.join("admin.nft");
    std::fs::write(&rules, ADMIN_RULESET).unwrap();
    run_ok(&s.lab, &s.lab.server, &["nft", "-f", rules.to_str().unwrap()]);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 22), Probe::Filtered, "the admin's policy drop");
    s.spawn(&format!("[daemon]\nmode = \"accept\"\naccept_table = \"inet filter\"\n\n{DOOR}"));
    knock(&s);
    let knocked = Instant::now();
    s.wait_probe(&s.lab.client, lab::SERVER4, 22, Probe::Open);
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 22), Probe::Filtered, "only the knocking source");
    assert!(wait_probe(&s.lab.client, lab::SERVER4, 22, Probe::Filtered, Duration::from_secs(6)));
    let closed = knocked.elapsed();
    assert!(
        closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5),
        "closed after {closed:?}"
    );

    // Teardown leaves the admin's jump target in place (emptied) and their table intact.
    let conf = s.dir.join("portcullis.toml");
    s.kill9();
    let out =
        s.lab.exec(&s.lab.server, &[daemon_bin(), "teardown", "--config", conf.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing =
        String::from_utf8_lossy(&s.lab.exec(&s.lab.server, &["nft", "list", "ruleset"]).unwrap().stdout)
            .into_owned();
    assert!(listing.contains("jump portcullis") && !listing.contains("portcullis_allow4"), "{listing}");
    assert!(!listing.contains("table inet portcullis"), "{listing}");
}

/// Which backend a driver-level test runs.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Nft,
    Iptables,
}

fn driver(b: Backend) -> Box<dyn FirewallDriver> {
    match b {
        Backend::Nft => Box::new(NftDriver::new().unwrap()),
        Backend::Iptables => Box::new(IptablesDriver::new(IptablesVariant::Nft).unwrap()),
    }
}

/// The server namespace routes between client and other; `other` runs the inside
/// service on tcp/22 (its default route is the server, so replies come back). The
/// service accepts and closes every connection, so that many probes never fill its
/// listen queue (which would look like a drop).
fn routed_lab(tag: &str) -> Lab {
    let lab = Lab::new(tag).unwrap();
    run_ok(&lab, &lab.server, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    run_ok(&lab, &lab.server, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let inside = lab.in_ns(&lab.other, || TcpListener::bind(("::", 22)).unwrap()).unwrap();
    // Ends with the test process; the namespace (and socket) go when the lab drops.
    std::thread::spawn(move || inside.incoming().for_each(drop));
    lab
}

fn nat_grant_reaches_the_inside_host_for_its_source_only(b: Backend, tag: &str) {
    let lab = routed_lab(tag);
    let (client, other) = (lab.client.clone(), lab.other.clone());
    lab.in_ns(&lab.server, move || {
        let mut d = driver(b);
        let plan = Plan {
            protected: vec![Service::tcp(22)],
            max_grants: 64,
            nat: true,
            forward: true,
            ..Plan::default()
        };
        d.adopt(&plan);
        d.setup(&plan).unwrap();
        let g = NatGrant {
            addr: lab::CLIENT4.parse().unwrap(),
            service: Service::tcp(2222),
            to: SocketAddr::new(lab::OTHER4.parse().unwrap(), 22),
            timeout: Duration::from_secs(3),
        };
        // Nothing listens on the server's own 2222: a connection not forwarded is refused.
        assert!(wait_probe(&client, lab::SERVER4, 2222, Probe::Closed, ANSWER), "before the grant");
        d.grant_nat(&[g]).unwrap();
        let granted = Instant::now();
        assert!(wait_probe(&client, lab::SERVER4, 2222, Probe::Open, ANSWER), "forwarded to the inside host");
        assert!(
            wait_probe(&other, lab::SERVER4_OTHER, 2222, Probe::Closed, ANSWER),
            "a stranger is not forwarded"
        );
        assert!(
            wait_probe(&client, lab::SERVER4, 2222, Probe::Closed, Duration::from_secs(6)),
            "never expired"
        );
        let closed = granted.elapsed();
        assert!(
            closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5),
            "after {closed:?}"
        );
        // Revoke closes at once.
        d.grant_nat(&[g]).unwrap();
        assert!(wait_probe(&client, lab::SERVER4, 2222, Probe::Open, ANSWER), "open");
        d.revoke_nat(&[g]).unwrap();
        assert!(wait_probe(&client, lab::SERVER4, 2222, Probe::Closed, ANSWER), "revoked");
        d.teardown().unwrap();
    })
    .unwrap();
}

#[test]
fn nft_nat_grant_reaches_the_inside_host_for_its_source_only() {
    if root_or_skip("nft_nat_grant_reaches_the_inside_host_for_its_source_only") {
        nat_grant_reaches_the_inside_host_for_its_source_only(Backend::Nft, "fw-nat-nft");
    }
}

#[test]
fn iptables_nat_grant_reaches_the_inside_host_for_its_source_only() {
    if root_or_skip("iptables_nat_grant_reaches_the_inside_host_for_its_source_only") {
        nat_grant_reaches_the_inside_host_for_its_source_only(Backend::Iptables, "fw-nat-ipt");
    }
}

/// The admin's own port forward (as Docker or a router config would add):
/// server tcp/2200 → other tcp/22, over IPv4 and IPv6.
fn admin_port_forward(lab: &Lab) {
    for (tool, to) in
        [("iptables", format!("{}:22", lab::OTHER4)), ("ip6tables", format!("[{}]:22", lab::OTHER6))]
    {
        run_ok(
            lab,
            &lab.server,
            &[
                tool,
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--dport",
                "2200",
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ],
        );
    }
}

fn forwarded_service_is_gated(b: Backend, tag: &str) {
    let lab = routed_lab(tag);
    admin_port_forward(&lab);
    let client = lab.client.clone();
    lab.in_ns(&lab.server, move || {
        let mut d = driver(b);
        // Without forward gating the DNAT'd service is open to anyone: what we fix.
        let mut plan = Plan { protected: vec![Service::tcp(2200)], max_grants: 64, ..Plan::default() };
        d.setup(&plan).unwrap();
        for server in [lab::SERVER4, lab::SERVER6] {
            assert!(wait_probe(&client, server, 2200, Probe::Open, ANSWER), "ungated forward to {server}");
        }
        plan.forward = true;
        d.setup(&plan).unwrap();
        for (server, source) in [(lab::SERVER4, lab::CLIENT4), (lab::SERVER6, lab::CLIENT6)] {
            let source: IpAddr = source.parse().unwrap();
            assert_eq!(
                probe_from(&client, server, 2200),
                Probe::Filtered,
                "a stranger is filtered ({server})"
            );
            d.grant(&[Grant::host(source, Service::tcp(2200), Duration::from_secs(30))]).unwrap();
            assert!(
                wait_probe(&client, server, 2200, Probe::Open, ANSWER),
                "the granted {source} gets through"
            );
            d.revoke(&[(Prefix::host(source), Service::tcp(2200))]).unwrap();
            assert_eq!(probe_from(&client, server, 2200), Probe::Filtered, "revoked ({server})");
        }
        d.teardown().unwrap();
    })
    .unwrap();
}

#[test]
fn nft_gates_forwarded_services() {
    if root_or_skip("nft_gates_forwarded_services") {
        forwarded_service_is_gated(Backend::Nft, "fw-fwd-nft");
    }
}

#[test]
fn iptables_gates_forwarded_services() {
    if root_or_skip("iptables_gates_forwarded_services") {
        forwarded_service_is_gated(Backend::Iptables, "fw-fwd-ipt");
    }
}
