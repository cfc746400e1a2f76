//! `portcullisd gate`: the boot-time gate closes protected ports with no daemon running,
//! keeps grants that are already live, and leaves the firewall alone on a bad config.
//! Root only (namespaces, nftables); under CI=true a non-root run fails.

mod support;

use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use support::*;

const DOOR: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
seq_timeout = 5
tcp_flags = "syn"
open = ["tcp/2222"]
open_for = 30
"#;

fn gate(lab: &Lab, config: &Path) -> std::process::Output {
    lab.exec(&lab.server, &[daemon_bin(), "gate", "--config", config.to_str().unwrap()]).unwrap()
}

fn probe(lab: &Lab, ns: &str, addr: &str, port: u16) -> Probe {
    let ip: IpAddr = addr.parse().unwrap();
    lab.probe(ns, ip, port, Duration::from_millis(600)).unwrap()
}

#[test]
fn gate_closes_protected_ports_with_no_daemon_and_refuses_a_bad_config() {
    if !root_or_skip("gate_closes_protected_ports_with_no_daemon_and_refuses_a_bad_config") {
        return;
    }
    let lab = Lab::new("gate").expect("lab");
    let _listeners: Vec<TcpListener> = [2222u16, 2223]
        .iter()
        .map(|&p| lab.in_ns(&lab.server, move || TcpListener::bind(("::", p)).unwrap()).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("portcullis.toml");
    std::fs::write(
        &conf,
        format!("[daemon]\nstate_dir = \"{}\"\n{DOOR}", dir.path().join("state").display()),
    )
    .unwrap();
    assert_eq!(probe(&lab, &lab.client, lab::SERVER4, 2222), Probe::Open, "open before the gate");

    let out = gate(&lab, &conf);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "gate failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "nftables: gate installed, protecting tcp/2222; 0 live grant(s) kept");
    assert_eq!(probe(&lab, &lab.client, lab::SERVER4, 2222), Probe::Filtered, "gated, no daemon running");
    assert_eq!(probe(&lab, &lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered);
    assert_eq!(probe(&lab, &lab.client, lab::SERVER4, 2223), Probe::Open, "unprotected ports untouched");

    // A broken config is refused and the gate already in place stays.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[door]]\nname = \"ssh\"\nsequence = [99999]\nopen = [\"tcp/2222\"]\n").unwrap();
    let out = gate(&lab, &bad);
    assert_eq!(out.status.code(), Some(2), "bad config must exit 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("portcullisd: {}:", bad.display())), "no file in message: {stderr}");
    assert_eq!(
        probe(&lab, &lab.client, lab::SERVER4, 2222),
        Probe::Filtered,
        "still gated after a bad config"
    );
}

#[test]
fn gate_keeps_grants_that_are_already_open() {
    if !root_or_skip("gate_keeps_grants_that_are_already_open") {
        return;
    }
    let mut s = Server::start("gatekeep", DOOR, &[2222]);
    let c = client_bin();
    s.client(&[&c, "knock", "-d", "50", lab::SERVER4, "7000", "8000:udp", "9000"]);
    s.wait_log("OPEN SESAME", 1);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    s.kill9();

    let out = gate(&s.lab, &s.dir.join("portcullis.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "gate failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 live grant(s) kept"), "{stdout}");
    assert_eq!(
        s.probe(&s.lab.client, lab::SERVER4, 2222),
        Probe::Open,
        "the knocker's grant survives the gate"
    );
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered, "others stay out");
}
