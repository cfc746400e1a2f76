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

use super::IptablesDriver;
use crate::config::IptablesVariant;
use crate::firewall::{FirewallDriver, Grant, Mode, Plan, Prefix};

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
    let out = Command::new(tool).output().expect(tool);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn g(addr: &str, service: Service, secs: u64) -> Grant {
    Grant::host(addr.parse().unwrap(), service, Duration::from_secs(secs))
}

fn ipset_list(set: &str) -> String {
    let out = Command::new("ipset").args(["list", set]).output().expect("ipset");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exercise(variant: IptablesVariant, suffix: &'static str) {
    let save4 = format!("iptables-{suffix}-save");
    let save6 = format!("ip6tables-{suffix}-save");
    let plan = Plan {
        protected: vec![Service::tcp(22), Service::udp(53)],
        max_grants: 16,
        forward: true,
        ..Plan::default()
    };
    // An older version's per-grant rule, live and expired: setup moves the live one into the set.
    let old = format!(
        "*filter\n:PORTCULLIS - [0:0]\n-A INPUT -j PORTCULLIS\n\
         -A PORTCULLIS -s 192.0.2.9/32 -p tcp -m tcp --dport 22 -m comment --comment portcullis:expires={} -j RETURN\n\
         -A PORTCULLIS -s 192.0.2.7/32 -p tcp -m tcp --dport 22 -m comment --comment portcullis:expires=1000 -j RETURN\n\
         COMMIT\n",
        super::unix_now() + 90
    );
    let mut child = Command::new(format!("iptables-{suffix}-restore"))
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), old.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    let mut d = IptablesDriver::new(variant).expect("driver");
    assert!(d.kernel_expiry());
    d.setup(&plan).unwrap();
    d.setup(&plan).unwrap(); // idempotent: one jump, one chain
    for tool in [&save4, &save6] {
        let text = save(tool);
        assert_eq!(text.matches("-A INPUT -j PORTCULLIS").count(), 1, "{tool}:\n{text}");
        assert_eq!(text.matches("-A PREROUTING -j PORTCULLIS").count(), 1, "{tool}:\n{text}");
        assert!(text.contains("-p tcp -m tcp --dport 22 -m set ! --match-set portcullis"), "{text}");
        assert!(text.contains("-p udp -m udp --dport 53 -m set ! --match-set portcullis"), "{text}");
        assert!(!text.contains("portcullis:expires"), "{text}");
    }
    let live = d.list().unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].addr, "192.0.2.9".parse::<IpAddr>().unwrap());
    assert!(live[0].remaining.unwrap() > Duration::from_secs(80));

    d.grant(&[g("192.0.2.2", Service::tcp(22), 60), g("2001:db8::2", Service::udp(53), 60)]).unwrap();
    d.grant(&[g("192.0.2.2", Service::tcp(22), 120)]).unwrap(); // refresh: replaced, not stacked
    assert_eq!(ipset_list("portcullis4").matches("192.0.2.2,tcp:22").count(), 1);
    assert!(ipset_list("portcullis6").contains("2001:db8::2,udp:53"));
    let live = d.list().unwrap();
    assert_eq!(live.len(), 3, "{live:?}");
    let two = live.iter().find(|l| l.addr == "192.0.2.2".parse::<IpAddr>().unwrap()).unwrap();
    assert!(two.remaining.unwrap() > Duration::from_secs(100));

    // A restarted daemon (new driver) with a different plan: grants for services no
    // longer protected go, the others stay with their time, in the same set (swapped).
    let mut d2 = IptablesDriver::new(variant).unwrap();
    let smaller = Plan { protected: vec![Service::tcp(22)], ..plan.clone() };
    d2.setup(&smaller).unwrap();
    let live = d2.list().unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|l| l.service == Service::tcp(22)));
    assert!(!save(&save4).contains("--dport 53"));

    // Revoke; revoking again or something missing is fine; someone deleting an entry
    // behind our back does not wedge us.
    d2.revoke(&[(Prefix::host("192.0.2.2".parse().unwrap()), Service::tcp(22))]).unwrap();
    d2.revoke(&[
        (Prefix::host("192.0.2.2".parse().unwrap()), Service::tcp(22)),
        (Prefix::host("2001:db8::5".parse().unwrap()), Service::tcp(22)),
    ])
    .unwrap();
    assert!(Command::new("ipset")
        .args(["del", "portcullis4", "192.0.2.9,tcp:22"])
        .status()
        .unwrap()
        .success());
    d2.revoke(&[(Prefix::host("192.0.2.9".parse().unwrap()), Service::tcp(22))]).unwrap();
    d2.grant(&[g("192.0.2.3", Service::tcp(22), 60)]).unwrap();
    assert_eq!(d2.list().unwrap().len(), 1);

    // Accept mode with a named chain at a position.
    let accept =
        Plan { mode: Mode::Accept, chain: "FWKNOP_INPUT".into(), jump_position: 1, ..smaller.clone() };
    d2.teardown().unwrap();
    d2.setup(&accept).unwrap();
    let text = save(&save4);
    assert!(text.contains("-A INPUT -j FWKNOP_INPUT"), "{text}");
    assert!(
        text.contains(
            "-A FWKNOP_INPUT -p tcp -m tcp --dport 22 -m set --match-set portcullis4 src,dst -j ACCEPT"
        ),
        "{text}"
    );

    d2.teardown().unwrap();
    d2.teardown().unwrap(); // nothing left: still fine
    for tool in [&save4, &save6] {
        let text = save(tool);
        assert!(
            !text.contains("PORTCULLIS") && !text.contains("FWKNOP_INPUT"),
            "{tool} after teardown:\n{text}"
        );
    }
    assert!(ipset_list("portcullis4").is_empty() && ipset_list("portcullis6").is_empty());
}

#[test]
fn iptables_legacy_driver_in_a_private_namespace() {
    in_netns("iptables_legacy_driver_in_a_private_namespace", || exercise(IptablesVariant::Legacy, "legacy"));
}

#[test]
fn iptables_nft_driver_in_a_private_namespace() {
    in_netns("iptables_nft_driver_in_a_private_namespace", || exercise(IptablesVariant::Nft, "nft"));
}

#[test]
fn verify_passes_after_setup_in_every_mode_and_names_a_flush() {
    in_netns("verify_passes_after_setup_in_every_mode_and_names_a_flush", || {
        let mut d = IptablesDriver::new(IptablesVariant::Nft).expect("iptables-nft driver");
        let base =
            Plan { protected: vec![Service::tcp(22), Service::udp(53)], max_grants: 16, ..Plan::default() };
        let plans = [
            base.clone(),
            Plan { forward: true, ..base.clone() },
            Plan { mode: Mode::Accept, ..base.clone() },
        ];
        for p in &plans {
            d.setup(p).expect("setup");
            assert_eq!(d.verify(p).expect("verify"), None, "{p:?}\n{}", save("iptables-nft-save"));
        }
        let st = Command::new("iptables-nft").arg("-F").status().expect("iptables-nft -F");
        assert!(st.success());
        let v = d.verify(&plans[2]).expect("verify").expect("a flush is noticed");
        assert!(v.contains("jump from INPUT"), "{v}");
        d.setup(&plans[2]).expect("setup again");
        assert_eq!(d.verify(&plans[2]).expect("verify"), None);
        d.teardown().expect("teardown");
    });
}
