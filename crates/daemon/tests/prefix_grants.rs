//! Prefix grants (carrier-grade NAT) end to end: a knock from one address of the client
//! namespace with `grant_prefix_v4 = 24` / `grant_prefix_v6 = 64` lets a second address
//! of that namespace connect, an address outside the prefix stays filtered, the kernel
//! closes it on time, and a door without the option still grants the single address.
//! `portcullis grants list` shows the prefix. Root required: as non-root these fail
//! under `CI=true`, and elsewhere print SKIPPED and return.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const TOKEN: &str = "ci-0123456789abcdef0123";
/// A second address of the client namespace, inside the knocker's /24 and /64.
const NEIGHBOUR4: &str = "192.0.2.3";
const NEIGHBOUR6: &str = "2001:db8:1::3";
/// How long the prefix door opens.
const OPEN_FOR: u64 = 4;

fn config(dir: &std::path::Path, backend: &str) -> String {
    format!(
        r#"
[daemon]
backend = "{backend}"

[[door]]
name = "cgnat"
sequence = [7000, "8000:udp", 9000]
open = ["tcp/2222"]
open_for = {OPEN_FOR}
grant_prefix_v4 = 24
grant_prefix_v6 = 64

[[door]]
name = "plain"
sequence = [7100, "8100:udp", 9100]
open = ["tcp/2223"]
open_for = 30

[api]
socket = "{}/api.sock"
tokens_file = "tokens"
"#,
        dir.display()
    )
}

fn start(tag: &str, backend: &str) -> Server {
    // Where support::Server puts its files (it creates the directory).
    let dir = std::env::temp_dir().join(format!("pc-test-{tag}-{}", std::process::id()));
    let tokens = format!("ci {TOKEN}\n");
    let s = Server::start_with(tag, &config(&dir, backend), &[2222, 2223], &[("tokens", tokens.as_str())]);
    // The neighbour shares the client's link (and so its /24 and /64).
    let dev = link_of(&s, lab::CLIENT4);
    run_ok(&s.lab, &s.lab.client, &["ip", "addr", "add", &format!("{NEIGHBOUR4}/24"), "dev", &dev]);
    run_ok(&s.lab, &s.lab.client, &["ip", "addr", "add", &format!("{NEIGHBOUR6}/64"), "dev", &dev, "nodad"]);
    s
}

/// The client namespace's interface holding `addr`.
fn link_of(s: &Server, addr: &str) -> String {
    let out = s.lab.exec(&s.lab.client, &["ip", "-o", "addr", "show", "to", addr]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).unwrap_or_else(|| panic!("no interface holds {addr}: {text}")).to_string()
}

/// Whether a TCP connection from `src` (an address of namespace `ns`) to `dst:port`
/// succeeds within a second.
fn connects(s: &Server, ns: &str, src: &str, dst: &str, port: u16) -> bool {
    let nc = tool("nc");
    let port = port.to_string();
    let out = s.lab.exec(ns, &[nc.as_str(), "-z", "-w", "1", "-s", src, dst, &port]).unwrap();
    out.status.success()
}

fn knock(s: &Server, dst: &str, ports: &[&str]) {
    let bin = client_bin();
    let mut args = vec![bin.as_str(), "knock", "-d", "20", dst];
    args.extend_from_slice(ports);
    run_ok(&s.lab, &s.lab.client, &args);
}

/// `portcullis grants --json ARGS` over the API socket.
fn grants(s: &Server, args: &[&str]) -> (bool, String) {
    let sock = s.dir.join("api.sock");
    let out = Command::new(client_bin())
        .args(["grants", "--socket", sock.to_str().unwrap()])
        .args(args)
        .env("PORTCULLIS_TOKEN", TOKEN)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn active_json(s: &Server) -> Vec<Value> {
    let (ok, text) = grants(s, &["--json", "list", "--state", "active"]);
    assert!(ok, "{text}");
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_prefix_door_opens_for_the_knockers_prefix_only_and_closes_on_time() {
    if !root_or_skip("a_prefix_door_opens_for_the_knockers_prefix_only_and_closes_on_time") {
        return;
    }
    prefix_door_v4(&start("cgnat4", "nftables"));
}

#[test]
fn the_iptables_backend_grants_prefixes_in_a_hash_net_port_set() {
    if !root_or_skip("the_iptables_backend_grants_prefixes_in_a_hash_net_port_set") {
        return;
    }
    let s = start("cgnatipt", "iptables-nft");
    prefix_door_v4(&s);
    // The prefix grant lived in its own set, beside the single-address one.
    let out = s.lab.exec(&s.lab.server, &["ipset", "list", "-n"]).unwrap();
    let sets = String::from_utf8_lossy(&out.stdout);
    assert!(sets.lines().any(|l| l == "portcullis4n"), "{sets}");
}

/// Knock the prefix door from the client's first address; its neighbour gets in, the
/// other host does not, it closes on time; the plain door then opens for one address.
fn prefix_door_v4(s: &Server) {
    let (c, o) = (s.lab.client.clone(), s.lab.other.clone());
    assert!(!connects(s, &c, NEIGHBOUR4, lab::SERVER4, 2222), "filtered before any knock");

    let t0 = Instant::now();
    knock(s, lab::SERVER4, &["7000", "8000:udp", "9000"]);
    let dump = || {
        let a = s.lab.exec(&s.lab.server, &["ipset", "list"]).unwrap();
        let b = s.lab.exec(&s.lab.server, &["nft", "list", "ruleset"]).unwrap();
        String::from_utf8_lossy(&a.stdout).into_owned() + &String::from_utf8_lossy(&b.stdout)
    };
    assert!(
        wait_until(Duration::from_secs(2), || connects(s, &c, NEIGHBOUR4, lab::SERVER4, 2222)),
        "the neighbour in the knocker's /24 gets in; log:\n{}\n{}",
        s.log_text(),
        dump()
    );
    assert!(connects(s, &c, lab::CLIENT4, lab::SERVER4, 2222), "and the knocker itself");
    assert!(s.log_text().contains("cgnat: opened tcp/2222 for 192.0.2.0/24 until"), "{}", s.log_text());
    assert!(!connects(s, &o, lab::OTHER4, lab::SERVER4_OTHER, 2222), "outside the prefix: filtered");
    assert!(!connects(s, &c, NEIGHBOUR4, lab::SERVER4, 2223), "only the door's port");

    // The record and the API show the prefix.
    let items = active_json(s);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        (items[0]["address"].as_str(), items[0]["prefix_len"].as_u64()),
        (Some("192.0.2.0"), Some(24))
    );
    let (ok, table) = grants(s, &["list"]);
    assert!(ok && table.contains("192.0.2.0/24"), "{table}");

    // The kernel closes it on time.
    assert!(wait_until(Duration::from_secs(OPEN_FOR + 3), || !connects(
        s,
        &c,
        NEIGHBOUR4,
        lab::SERVER4,
        2222
    )));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(OPEN_FOR * 1000 - 500), "closed early: {took:?}");

    // A door without the option grants the knocker's own address, not its neighbour.
    knock(s, lab::SERVER4, &["7100", "8100:udp", "9100"]);
    assert!(
        wait_until(Duration::from_secs(2), || connects(s, &c, lab::CLIENT4, lab::SERVER4, 2223)),
        "plain door opens for the knocker; log:\n{}",
        s.log_text()
    );
    assert!(!connects(s, &c, NEIGHBOUR4, lab::SERVER4, 2223), "plain door: single address only");
    let items = active_json(s);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["address"], "192.0.2.2");
    assert!(items[0].get("prefix_len").is_none(), "{items:?}");
}

#[test]
fn a_prefix_door_opens_for_the_knockers_ipv6_slash_64() {
    if !root_or_skip("a_prefix_door_opens_for_the_knockers_ipv6_slash_64") {
        return;
    }
    let s = start("cgnat6", "nftables");
    let (c, o) = (s.lab.client.clone(), s.lab.other.clone());
    assert!(!connects(&s, &c, NEIGHBOUR6, lab::SERVER6, 2222), "filtered before any knock");
    knock(&s, lab::SERVER6, &["7000", "8000:udp", "9000"]);
    assert!(
        wait_until(Duration::from_secs(2), || connects(&s, &c, NEIGHBOUR6, lab::SERVER6, 2222)),
        "the neighbour in the knocker's /64 gets in; log:\n{}",
        s.log_text()
    );
    assert!(connects(&s, &c, lab::CLIENT6, lab::SERVER6, 2222));
    assert!(!connects(&s, &o, lab::OTHER6, lab::SERVER6_OTHER, 2222), "outside the prefix: filtered");
    let items = active_json(&s);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        (items[0]["address"].as_str(), items[0]["prefix_len"].as_u64()),
        (Some("2001:db8:1::"), Some(64))
    );
    assert!(wait_until(Duration::from_secs(OPEN_FOR + 3), || !connects(
        &s,
        &c,
        NEIGHBOUR6,
        lab::SERVER6,
        2222
    )));
}

#[test]
fn a_native_spa_user_with_grant_prefix_opens_for_the_prefix() {
    if !root_or_skip("a_native_spa_user_with_grant_prefix_opens_for_the_prefix") {
        return;
    }
    let (server_secret, server_public) = keygen("--server");
    let (user_secret, user_public) = keygen("--user");
    let conf = format!(
        "[spa]\nserver_key_file = \"server.key\"\n\n[[spa.user]]\nname = \"alice\"\nkey = \"{user_public}\"\n\
         open = [\"tcp/2222\"]\nmax_open_for = 20\ngrant_prefix_v4 = 24\n"
    );
    let s = Server::start_with(
        "cgnatspa",
        &conf,
        &[2222],
        &[("server.key", server_secret.as_str()), ("alice.key", user_secret.as_str())],
    );
    let dev = link_of(&s, lab::CLIENT4);
    run_ok(&s.lab, &s.lab.client, &["ip", "addr", "add", &format!("{NEIGHBOUR4}/24"), "dev", &dev]);
    let (c, o) = (s.lab.client.clone(), s.lab.other.clone());
    assert!(!connects(&s, &c, NEIGHBOUR4, lab::SERVER4, 2222), "filtered before the packet");
    let key = s.dir.join("alice.key").display().to_string();
    let bin = client_bin();
    let args = ["spa", "--native", "--server-key", &server_public, "--user-key", &key, "-U", "alice"];
    let mut argv = vec![bin.as_str()];
    argv.extend(args);
    argv.extend(["-A", "tcp/2222", "-a", lab::CLIENT4, "-f", "10", lab::SERVER4]);
    s.client(&argv);
    assert!(
        wait_until(Duration::from_secs(2), || connects(&s, &c, NEIGHBOUR4, lab::SERVER4, 2222)),
        "the neighbour in alice's /24 gets in; log:\n{}",
        s.log_text()
    );
    assert!(!connects(&s, &o, lab::OTHER4, lab::SERVER4_OTHER, 2222), "outside the prefix: filtered");
    assert!(s.log_text().contains("for 192.0.2.0/24"), "{}", s.log_text());
}

#[test]
fn check_warns_about_prefix_grants_and_refuses_what_cannot_hold_them() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("portcullis.toml");
    let base = "[[door]]\nname = \"cgnat\"\nsequence = [7000, 8000, 9000]\nopen = [\"tcp/22\"]\n";
    std::fs::write(&conf, format!("{base}grant_prefix_v4 = 24\n")).unwrap();
    let out = daemon_check(&conf);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("door cgnat: grants /24 (IPv4) and /128 (IPv6) prefixes"), "{text}");
    assert!(text.contains("allow4_24"), "the ruleset shows the prefix set: {text}");

    std::fs::write(&conf, base).unwrap();
    let out = daemon_check(&conf);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("prefixes, not single addresses"),
        "off by default"
    );

    for (extra, why) in [
        ("grant_prefix_v4 = 8\n", "grant_prefix_v4 must be between 16 and 32"),
        ("grant_prefix_v6 = 32\n", "grant_prefix_v6 must be between 48 and 128"),
        ("grant_prefix_v4 = \"24\"\n", "portcullis.toml:5: invalid type"),
    ] {
        std::fs::write(&conf, format!("{base}{extra}")).unwrap();
        let out = daemon_check(&conf);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{extra}: {err}");
    }
    let accept = "[daemon]\nbackend = \"iptables\"\nmode = \"accept\"\n";
    std::fs::write(&conf, format!("{accept}{base}grant_prefix_v4 = 24\n")).unwrap();
    let out = daemon_check(&conf);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("work in mode = \"gate\" only"), "{err}");
}
