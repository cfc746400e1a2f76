//! Privileged tests: each runs on a thread that first moves into a fresh network
//! namespace (`unshare(CLONE_NEWNET)` affects only that thread and the processes it
//! spawns), so the host's iptables are never touched. Both variants are exercised by
//! calling their own binaries. As non-root they fail under `CI=true`, and elsewhere
//! print SKIPPED and return (see [`crate::lab::preflight`]).

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use portcullis_proto::Service;

use super::{rules, IptablesDriver};
use crate::config::IptablesVariant;
use crate::firewall::{FirewallDriver, Grant, Plan};

fn in_netns(test: &str, f: impl FnOnce() + Send + 'static) {
    if !crate::lab::preflight::root_or_skip(test) {
        return;
    }
    let joined = std::thread::spawn(move || {
        let before = std::fs::read_link("/proc/thread-self/ns/net").expect("read netns");
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let after = std::fs::read_link("/proc/thread-self/ns/net").expect("read netns");
        assert_ne!(before, after, "unshare did not move this thread to a new namespace");
        f();
    })
    .join();
    if let Err(p) = joined {
        std::panic::resume_unwind(p);
    }
}

fn save(tool: &str) -> String {
    let out = Command::new(tool).args(["-t", "filter"]).output().expect(tool);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn g(addr: &str, service: Service, secs: u64) -> Grant {
    Grant { addr: addr.parse().unwrap(), service, timeout: Duration::from_secs(secs) }
}

fn exercise(variant: IptablesVariant, suffix: &'static str) {
    let save4 = format!("iptables-{suffix}-save");
    let save6 = format!("ip6tables-{suffix}-save");
    let plan =
        Plan { protected: vec![Service::tcp(22), Service::udp(53)], max_grants: 16, never_gate: Vec::new() };
    let mut d = IptablesDriver::new(variant).expect("driver");
    d.setup(&plan).unwrap();
    d.setup(&plan).unwrap(); // idempotent: one jump, one chain
    for tool in [&save4, &save6] {
        let text = save(tool);
        assert_eq!(text.matches("-A INPUT -j PORTCULLIS").count(), 1, "{tool}:\n{text}");
        assert!(text.contains("-A PORTCULLIS -p tcp -m tcp --dport 22 -j DROP"), "{text}");
        assert!(text.contains("-A PORTCULLIS -p udp -m udp --dport 53 -j DROP"), "{text}");
    }
    d.grant(&[g("192.0.2.2", Service::tcp(22), 60), g("2001:db8::2", Service::udp(53), 60)]).unwrap();
    d.grant(&[g("192.0.2.2", Service::tcp(22), 120)]).unwrap(); // refresh: replaced, not stacked
    let v4 = rules::parse_save(&save(&save4));
    assert_eq!(v4.grants.len(), 1, "{v4:?}");
    assert!(v4.grants[0].expires >= super::unix_now() + 100);
    let v6 = rules::parse_save(&save(&save6));
    assert_eq!(v6.grants.len(), 1);
    assert_eq!(v6.grants[0].addr, "2001:db8::2".parse::<IpAddr>().unwrap());
    assert_eq!(d.list().unwrap().len(), 2);

    // A restarted daemon (new driver) keeps live grants with their time; an expired
    // one (written as if left by a daemon that died) is dropped at setup.
    let stale = rules::update_batch(
        &[rules::GrantRule { addr: "192.0.2.7".parse().unwrap(), service: Service::tcp(22), expires: 1000 }],
        &[],
    );
    let mut child = Command::new(format!("iptables-{suffix}-restore"))
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stale.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let mut d2 = IptablesDriver::new(variant).unwrap();
    d2.setup(&plan).unwrap();
    let live = d2.list().unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|l| l.remaining.unwrap() > Duration::from_secs(50)));
    assert!(!save(&save4).contains("192.0.2.7"));

    // Revoke one; someone deleting a rule behind our back does not wedge us.
    d2.revoke(&[("2001:db8::2".parse().unwrap(), Service::udp(53))]).unwrap();
    assert!(rules::parse_save(&save(&save6)).grants.is_empty());
    let spec = rules::grant_spec(&rules::parse_save(&save(&save4)).grants[0]);
    let mut args = vec!["-D".to_string(), "PORTCULLIS".to_string()];
    args.extend(spec.split_whitespace().map(str::to_string));
    assert!(Command::new(format!("iptables-{suffix}")).args(&args).status().unwrap().success());
    d2.revoke(&[("192.0.2.2".parse().unwrap(), Service::tcp(22))]).unwrap();
    d2.grant(&[g("192.0.2.3", Service::tcp(22), 60)]).unwrap();
    assert_eq!(d2.list().unwrap().len(), 1);

    d2.teardown().unwrap();
    d2.teardown().unwrap(); // nothing left: still fine
    for tool in [&save4, &save6] {
        assert!(!save(tool).contains("PORTCULLIS"), "{tool} after teardown");
    }
}

#[test]
fn iptables_legacy_driver_in_a_private_namespace() {
    in_netns("iptables_legacy_driver_in_a_private_namespace", || exercise(IptablesVariant::Legacy, "legacy"));
}

#[test]
fn iptables_nft_driver_in_a_private_namespace() {
    in_netns("iptables_nft_driver_in_a_private_namespace", || exercise(IptablesVariant::Nft, "nft"));
}
