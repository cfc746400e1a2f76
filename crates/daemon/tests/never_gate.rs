//! `[daemon] never_gate`: the management network reaches protected ports without
//! knocking, with each firewall backend and with the boot-time gate alone; everyone
//! else is still filtered. Root required (CI runs as root); as non-root: SKIPPED.

mod support;

use support::*;

fn config(backend: &str) -> String {
    format!(
        "[daemon]\nbackend = \"{backend}\"\nnever_gate = [\"{}/24\", \"2001:db8:2::/48\"]\n\n[[door]]\nname = \"ssh\"\n\
         sequence = [7000, \"8000:udp\", 9000]\nopen = [\"tcp/2222\"]\nopen_for = 30\n",
        "198.51.100.0"
    )
}

fn management_gets_in_others_do_not(tag: &str, backend: &str) {
    let s = Server::start(tag, &config(backend), &[2222]);
    let (client, other) = (s.lab.client.clone(), s.lab.other.clone());
    assert_eq!(s.probe(&client, lab::SERVER4, 2222), Probe::Filtered, "outside the prefix: gated");
    assert_eq!(s.probe(&client, lab::SERVER6, 2222), Probe::Filtered, "outside the prefix: gated (v6)");
    assert_eq!(s.probe(&other, lab::SERVER4_OTHER, 2222), Probe::Open, "management network, no knock");
    assert_eq!(s.probe(&other, lab::SERVER6_OTHER, 2222), Probe::Open, "management network, no knock (v6)");
}

#[test]
fn nftables_never_gates_the_management_network() {
    if !root_or_skip("nftables_never_gates_the_management_network") {
        return;
    }
    management_gets_in_others_do_not("ng-nft", "nftables");
}

#[test]
fn iptables_never_gates_the_management_network() {
    if !root_or_skip("iptables_never_gates_the_management_network") {
        return;
    }
    management_gets_in_others_do_not("ng-ipt", "iptables-nft");
}

#[test]
fn the_boot_time_gate_keeps_the_management_network_in() {
    if !root_or_skip("the_boot_time_gate_keeps_the_management_network_in") {
        return;
    }
    let mut s = Server::start("ng-gate", &config("nftables"), &[2222]);
    // The daemon and its table gone; the gate alone (as at boot) installs the table.
    s.kill9();
    let conf = s.dir.join("portcullis.toml");
    let server = s.lab.server.clone();
    run_ok(&s.lab, &server, &[daemon_bin(), "teardown", "--config", conf.to_str().unwrap()]);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Open, "torn down: unprotected");
    run_ok(&s.lab, &server, &[daemon_bin(), "gate", "--config", conf.to_str().unwrap()]);
    let (client, other) = (s.lab.client.clone(), s.lab.other.clone());
    assert_eq!(s.probe(&client, lab::SERVER4, 2222), Probe::Filtered);
    assert_eq!(s.probe(&other, lab::SERVER4_OTHER, 2222), Probe::Open);
}

#[test]
fn a_prefix_with_host_bits_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(format!("pc-ng-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("portcullis.toml");
    std::fs::write(
        &conf,
        "[daemon]\nnever_gate = [\"192.0.2.1/24\"]\n\n[[door]]\nname = \"ssh\"\nsequence = [7000]\nopen = [\"tcp/22\"]\n",
    )
    .unwrap();
    let out = daemon_check(&conf);
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains(
            "portcullis.toml:2: never_gate: \"192.0.2.1/24\" has host bits set (did you mean a /24 network address?)"
        ),
        "{err}"
    );
}
