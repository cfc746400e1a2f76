//! Grants API end to end: the daemon in a throwaway namespace with real nftables, the
//! `portcullis grants` CLI over the API's unix socket, and TCP probes from the client
//! and other namespaces. Root required (CI runs as root); as non-root: SKIPPED.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const TOKEN: &str = "ci-0123456789abcdef0123";

fn dir_for(tag: &str) -> std::path::PathBuf {
    // Where support::Server puts its files (it creates the directory).
    std::env::temp_dir().join(format!("pc-test-{tag}-{}", std::process::id()))
}

fn config(tag: &str) -> String {
    format!(
        r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
open = ["tcp/2222", "tcp/2223"]
open_for = 20

[api]
socket = "{}/api.sock"
tokens_file = "tokens"
max_duration = 600
"#,
        dir_for(tag).display()
    )
}

fn start(tag: &str) -> Server {
    start_with(tag, &config(tag), &[])
}

fn start_with(tag: &str, conf: &str, extra: &[(&str, &str)]) -> Server {
    let tokens = format!("ci {TOKEN}\n");
    let mut files = vec![("tokens", tokens.as_str())];
    files.extend_from_slice(extra);
    Server::start_with(tag, conf, &[2222, 2223], &files)
}

/// Run `portcullis grants --json ARGS` against `s`'s socket; (success, JSON).
fn grants(s: &Server, args: &[&str]) -> (bool, Value) {
    s.grants_json(TOKEN, args)
}

fn allow(s: &Server, addr: &str, service: &str, secs: u64) -> i64 {
    let (ok, v) = grants(s, &["allow", addr, service, "--for", &secs.to_string()]);
    assert!(ok, "{v}");
    v["grants"][0]["id"].as_i64().unwrap()
}

fn record(s: &Server, id: i64) -> Value {
    let (ok, v) = grants(s, &["show", &id.to_string()]);
    assert!(ok, "{v}");
    v
}

fn open_from_client(s: &Server, port: u16) -> bool {
    s.probe(&s.lab.client, lab::SERVER4, port) == Probe::Open
}

#[test]
fn api_grant_opens_for_that_address_closes_on_time_and_revoke_closes_at_once() {
    if !root_or_skip("api_grant_opens_for_that_address_closes_on_time_and_revoke_closes_at_once") {
        return;
    }
    let s = start("apigrant");
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
    let t0 = Instant::now();
    let id = allow(&s, lab::CLIENT4, "tcp/2222", 3);
    assert!(open_from_client(&s, 2222), "open for the granted address; log:\n{}", s.log_text());
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered, "not for others");
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2223), Probe::Filtered, "not other ports");
    // Closes on time (kernel timeout), and the record follows.
    assert!(wait_until(Duration::from_secs(6), || !open_from_client(&s, 2222)));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2700) && took <= Duration::from_secs(5),
        "3 s grant closed after {took:?}"
    );
    assert!(
        wait_until(Duration::from_secs(3), || record(&s, id)["state"] == "expired"),
        "{}",
        record(&s, id)
    );

    // Revoke closes at once.
    let id = allow(&s, lab::CLIENT4, "tcp/2222", 300);
    assert!(open_from_client(&s, 2222));
    let (ok, v) = grants(&s, &["revoke", &id.to_string()]);
    assert!(ok, "{v}");
    assert_eq!((v["state"].as_str(), v["revoked_by"].as_str()), (Some("revoked"), Some("ci")));
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered, "revoked: closed at once");
    let (ok, v) = grants(&s, &["revoke", &id.to_string()]);
    assert!(!ok && v["error"] == "conflict", "{v}");
    assert!(s.log_text().contains("api: ci DELETE /v1/grants/"), "requests are logged with the token name");
}

#[test]
fn kill_9_and_restart_keep_remaining_time_and_close_what_expired_meanwhile() {
    if !root_or_skip("kill_9_and_restart_keep_remaining_time_and_close_what_expired_meanwhile") {
        return;
    }
    let tag = "apikill9";
    let mut s = start(tag);
    let long = allow(&s, lab::CLIENT4, "tcp/2222", 8);
    let short = allow(&s, lab::CLIENT4, "tcp/2223", 1);
    let t0 = Instant::now();
    s.kill9();
    std::thread::sleep(Duration::from_millis(2000));
    // Wipe the kernel state too, as a reboot would: the long grant must come back.
    run_ok(&s.lab, &s.lab.server, &["nft", "flush", "ruleset"]);
    s.spawn(&config(tag));
    assert!(open_from_client(&s, 2222), "restored after restart; log:\n{}", s.log_text());
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2223), Probe::Filtered, "expired one stays closed");
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered);
    let r = record(&s, short);
    assert_eq!(r["state"], "expired", "{r}");
    let r = record(&s, long);
    assert_eq!(r["state"], "active", "{r}");
    let left = r["remaining_seconds"].as_u64().unwrap();
    assert!(left <= 6, "restored with its remaining time, not a fresh 8 s: {left}");
    assert!(s.log_text().contains("restoring tcp/2222"), "{}", s.log_text());
    // ...and it still closes at the original time.
    assert!(wait_until(Duration::from_secs(10), || !open_from_client(&s, 2222)));
    let took = t0.elapsed();
    assert!(took <= Duration::from_secs(10), "closed {took:?} after the grant, expected ~8 s");
}

#[test]
fn flushed_ruleset_is_restored_at_restart_and_unknown_grants_are_revoked() {
    if !root_or_skip("flushed_ruleset_is_restored_at_restart_and_unknown_grants_are_revoked") {
        return;
    }
    let tag = "apiflush";
    let mut s = start(tag);
    allow(&s, lab::CLIENT4, "tcp/2222", 120);
    // With the daemon down (a running one repairs at once: tests/watch.rs).
    s.kill9();
    run_ok(&s.lab, &s.lab.server, &["nft", "flush", "ruleset"]);
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Open, "flushed: nothing protects");
    s.spawn(&config(tag));
    assert!(open_from_client(&s, 2222), "grant restored; log:\n{}", s.log_text());
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered, "protection back");

    // A grant the store does not know about (added behind our back 30 s ago: older than
    // the adoption window) does not survive a restart. Added with the daemon down: a
    // running one revokes it at once.
    s.kill9();
    run_ok(
        &s.lab,
        &s.lab.server,
        &[
            "nft",
            "add",
            "element",
            "inet",
            "portcullis",
            "allow4",
            "{ 198.51.100.2 . tcp . 2222 timeout 90s expires 60s }",
        ],
    );
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Open);
    s.spawn(&config(tag));
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered, "unknown grant revoked");
    assert!(open_from_client(&s, 2222), "known grant kept");
    assert!(s.log_text().contains("no active record"), "{}", s.log_text());
}

#[test]
fn knock_and_spa_made_grants_appear_in_the_list() {
    if !root_or_skip("knock_and_spa_made_grants_appear_in_the_list") {
        return;
    }
    let keygen = |kind: &str| {
        let out = Command::new(client_bin()).args(["keygen", kind]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let pick = |n: &str| {
            text.lines().find(|l| l.contains(n)).and_then(|l| l.rsplit(' ').next()).unwrap().to_string()
        };
        (pick("secret key"), pick("public key"))
    };
    let (server_secret, server_public) = keygen("--server");
    let (user_secret, user_public) = keygen("--user");
    let tag = "apilist";
    let conf = format!(
        "{}\n[spa]\nserver_key_file = \"server.key\"\n\n[[spa.user]]\nname = \"alice\"\nkey = \"{user_public}\"\nopen = [\"tcp/2223\"]\nallow_addresses = [\"198.51.100.2\"]\n",
        config(tag)
    );
    let s = start_with(tag, &conf, &[("server.key", &server_secret), ("alice.key", &user_secret)]);
    let c = client_bin();
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "7000", "8000:udp", "9000"]);
    let key = s.dir.join("alice.key").display().to_string();
    s.client(&[
        &c,
        "spa",
        "--native",
        "--server-key",
        &server_public,
        "--user-key",
        &key,
        "-U",
        "alice",
        "-A",
        "tcp/2223",
        "-a",
        lab::OTHER4,
        "-f",
        "30",
        lab::SERVER4,
    ]);
    assert!(
        wait_until(Duration::from_secs(3), || s.probe(&s.lab.other, lab::SERVER4_OTHER, 2223) == Probe::Open),
        "log:\n{}",
        s.log_text()
    );
    let mut v = Value::Null;
    let found = wait_until(Duration::from_secs(3), || {
        v = grants(&s, &["list", "--state", "active"]).1;
        v["total"].as_u64() == Some(3)
    });
    assert!(found, "{v}\nlog:\n{}", s.log_text());
    let origins: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{}:{} {}/{}",
                g["origin"]["kind"].as_str().unwrap(),
                g["origin"]["detail"].as_str().unwrap(),
                g["protocol"].as_str().unwrap(),
                g["port"]
            )
        })
        .collect();
    assert!(origins.contains(&"door:ssh tcp/2222".to_string()), "{origins:?}");
    assert!(origins.contains(&"door:ssh tcp/2223".to_string()), "{origins:?}");
    assert!(
        origins.iter().any(|o| o.starts_with("spa:") && o.contains("alice") && o.ends_with("tcp/2223")),
        "{origins:?}"
    );
    let (ok, m) = grants(&s, &["list", "--origin", "door:ssh"]);
    assert!(ok && m["total"] == 2, "{m}");
    let (ok, m) = grants(&s, &["list", "--origin", "spa", "--address", lab::OTHER4]);
    assert!(ok && m["total"] == 1, "{m}");
}

#[test]
fn iptables_grants_close_on_time_without_a_store() {
    if !root_or_skip("iptables_grants_close_on_time_without_a_store") {
        return;
    }
    let conf = "[daemon]\nbackend = \"iptables-nft\"\n\n[[door]]\nname = \"ssh\"\n\
                sequence = [7000, \"8000:udp\", 9000]\nseq_timeout = 5\nopen = [\"tcp/2222\"]\nopen_for = 3\n";
    let mut s = Server::start("apinostore", conf, &[2222]);
    // Kill the daemon and make its database impossible to open: a directory where the
    // file should be. The restarted daemon runs without a store.
    s.kill9();
    let state = s.dir.join("state");
    for f in ["grants.db", "grants.db-wal", "grants.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    std::fs::create_dir(state.join("grants.db")).unwrap();
    s.spawn(conf);
    assert!(s.log_text().contains("RUNNING WITHOUT GRANT RECORDS"), "{}", s.log_text());
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered, "protected");
    let c = client_bin();
    s.client(&[&c, "knock", "-d", "20", lab::SERVER4, "7000", "8000:udp", "9000"]);
    let knocked = Instant::now();
    assert!(
        wait_until(Duration::from_secs(2), || s.probe(&s.lab.client, lab::SERVER4, 2222) == Probe::Open),
        "{}",
        s.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(6), || s.probe(&s.lab.client, lab::SERVER4, 2222) == Probe::Filtered),
        "the grant never closed: {}",
        s.log_text()
    );
    let closed = knocked.elapsed();
    assert!(closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5), "after {closed:?}");
    // The kernel closed it (ipset timeout), so the daemon has nothing to log.
}
