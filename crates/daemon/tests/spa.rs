//! SPA end to end: the Debian fwknop client against portcullisd, `portcullis spa`
//! against a real fwknopd, and the native format over IPv4 and IPv6. Real packets in
//! throwaway namespaces. Root required: as non-root they fail under `CI=true`, and
//! elsewhere print SKIPPED and return.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

// Keys in fwknop's --key-gen format (test-only).
const KEY_B64: &str = "wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=";
const HMAC_B64: &str =
    "Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==";

fn access_conf() -> String {
    format!(
        "SOURCE ANY\nKEY_BASE64 {KEY_B64}\nHMAC_KEY_BASE64 {HMAC_B64}\nHMAC_DIGEST_TYPE sha256\nOPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 20\n"
    )
}

/// A native server key pair and a user key pair, made with `portcullis keygen`.
struct NativeKeys {
    server_secret: String,
    server_public: String,
    user_secret: String,
    user_public: String,
}

fn native_keys() -> NativeKeys {
    let (server_secret, server_public) = keygen("--server");
    let (user_secret, user_public) = keygen("--user");
    NativeKeys { server_secret, server_public, user_secret, user_public }
}

fn config(k: &NativeKeys) -> String {
    format!(
        r#"
[spa]
server_key_file = "server.key"
access_conf = "access.conf"

[[spa.user]]
name = "alice"
key = "{}"
open = ["tcp/2222", "tcp/2223"]
max_open_for = 20
allow_addresses = ["198.51.100.0/24", "2001:db8:2::/64"]

[[spa.fwknop]]
name = "legacy"
key = "legacykey"
encryption_mode = "legacy"
open_ports = ["tcp/2224"]
"#,
        k.user_public
    )
}

fn start(tag: &str, k: &NativeKeys) -> Server {
    let access = access_conf();
    Server::start_with(
        tag,
        &config(k),
        &[2222, 2223, 2224],
        &[("server.key", &k.server_secret), ("access.conf", &access), ("alice.key", &k.user_secret)],
    )
}

fn fwknop(s: &Server, extra: &[&str]) {
    // HOME in the test dir: the client writes ~/.fwknop.run there, not in /root.
    let mut cmd: Vec<String> =
        vec!["env".into(), format!("HOME={}", s.dir.display()), tool("fwknop"), "--no-rc-file".into()];
    cmd.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    s.client(&argv);
}

/// The fwknop client asking for tcp/2222 for the client's address with the HMAC
/// stanza's keys, plus `extra`.
fn fwknop_hmac(s: &Server, extra: &[&str]) {
    let mut args = vec!["-A", "tcp/2222", "-a", lab::CLIENT4, "-D", lab::SERVER4, "--use-hmac"];
    args.extend(["--key-base64-rijndael", KEY_B64, "--key-base64-hmac", HMAC_B64]);
    args.extend_from_slice(extra);
    fwknop(s, &args);
}

fn resend(s: &Server, file: &str) {
    // The file ends with a newline; send exactly the packet, as the client did.
    let script = format!("printf %s \"$(cat {file})\" > /dev/udp/{}/62201", lab::SERVER4);
    s.client(&["bash", "-c", &script]);
}

#[test]
fn debian_fwknop_client_opens_a_door_and_its_replays_are_refused_across_restarts() {
    if !root_or_skip("debian_fwknop_client_opens_a_door_and_its_replays_are_refused_across_restarts") {
        return;
    }
    let k = native_keys();
    let mut s = start("fwk", &k);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
    let saved = s.dir.join("spa.pkt").display().to_string();
    fwknop_hmac(&s, &["-B", &saved]);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);
    assert_eq!(
        s.nmap(&s.lab.other, lab::SERVER4_OTHER, 2222),
        "filtered",
        "open for the allowed address only"
    );
    assert!(s.log_text().contains("spa: fwknop stanza access.conf:1 user"), "{}", s.log_text());

    // The captured packet, sent again: refused.
    resend(&s, &saved);
    s.wait_log("rejected: replayed packet", 1);
    // ...and still refused after a kill -9 and restart (the replay cache is persisted).
    s.kill9();
    let cfg = config(&k);
    s.spawn(&cfg);
    resend(&s, &saved);
    s.wait_log("rejected: replayed packet", 2);

    // A stale packet (timestamp 10 minutes old) is refused.
    fwknop_hmac(&s, &["--time-offset-minus", "10m"]);
    s.wait_log("outside the allowed window", 1);
    // A wrong key is refused.
    fwknop(
        &s,
        &[
            "-A",
            "tcp/2222",
            "-s",
            "-D",
            lab::SERVER4,
            "--use-hmac",
            "--key-rijndael",
            "nope",
            "--key-hmac",
            "nopenope",
        ],
    );
    s.wait_log("HMAC verification failed", 1);
}

#[test]
fn debian_fwknop_legacy_stanza_without_hmac_opens_its_port() {
    if !root_or_skip("debian_fwknop_legacy_stanza_without_hmac_opens_its_port") {
        return;
    }
    let k = native_keys();
    let s = start("fwkleg", &k);
    // The weak stanza is named, with its line, at start.
    let log = s.log_text();
    let place = format!("fwknop stanza \"legacy\" ({}:", s.dir.join("portcullis.toml").display());
    assert!(log.contains(&place) && log.contains("no HMAC key"), "{log}");
    assert!(log.contains("legacy encryption mode"), "{log}");
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2224), Probe::Filtered);
    fwknop(&s, &["-A", "tcp/2224", "-s", "-D", lab::SERVER4, "-M", "legacy", "--key-rijndael", "legacykey"]);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2224, Probe::Open);
    // The legacy stanza may not open what the HMAC stanza protects.
    fwknop(&s, &["-A", "tcp/2222", "-s", "-D", lab::SERVER4, "-M", "legacy", "--key-rijndael", "legacykey"]);
    s.wait_log("not permitted", 1);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
}

#[test]
fn native_spa_opens_for_an_allow_address_other_than_the_source_over_ipv4_and_ipv6() {
    if !root_or_skip("native_spa_opens_for_an_allow_address_other_than_the_source_over_ipv4_and_ipv6") {
        return;
    }
    let k = native_keys();
    let s = start("native", &k);
    let c = client_bin();
    let key = s.dir.join("alice.key").display().to_string();
    let native = |allow: &str, server: &str, port: &str, user_key: &str| {
        s.client(&[
            &c,
            "spa",
            "--native",
            "--server-key",
            &k.server_public,
            "--user-key",
            user_key,
            "-U",
            "alice",
            "-A",
            port,
            "-a",
            allow,
            "-f",
            "10",
            server,
        ]);
    };
    native(lab::OTHER4, lab::SERVER4, "tcp/2222", &key);
    s.wait_probe(&s.lab.other, lab::SERVER4_OTHER, 2222, Probe::Open);
    assert_eq!(
        s.probe(&s.lab.client, lab::SERVER4, 2222),
        Probe::Filtered,
        "the sender itself was not allowed"
    );

    native(lab::OTHER6, lab::SERVER6, "tcp/2223", &key);
    s.wait_probe(&s.lab.other, lab::SERVER6_OTHER, 2223, Probe::Open);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER6, 2223), Probe::Filtered);

    // An address neither the source nor in alice's allow_addresses: refused.
    native(lab::BRIDGED_OTHER4, lab::SERVER4, "tcp/2222", &key);
    s.wait_log("neither the packet source nor listed in allow_addresses", 1);

    // Someone else's user key, claiming to be alice: refused.
    let (mallory_secret, _) = keygen("--user");
    let mkey = s.dir.join("mallory.key");
    std::fs::write(&mkey, mallory_secret).unwrap();
    native(lab::CLIENT4, lab::SERVER4, "tcp/2222", &mkey.display().to_string());
    s.wait_log("signature does not verify", 1);
    assert_eq!(s.probe(&s.lab.client, lab::SERVER4, 2222), Probe::Filtered);
}

#[test]
fn portcullis_spa_opens_a_real_fwknopd() {
    if !root_or_skip("portcullis_spa_opens_a_real_fwknopd") {
        return;
    }
    let fwknopd = tool("fwknopd");
    let mut lab = Lab::new("fwknopd").unwrap();
    let dir = std::env::temp_dir().join(format!("pc-fwknopd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    std::fs::write(
        dir.join("fwknopd.conf"),
        format!("PCAP_INTF vcli;\nPCAP_FILTER udp port 62201;\nFWKNOP_RUN_DIR {d};\nENABLE_DIGEST_PERSISTENCE N;\n"),
    )
    .unwrap();
    std::fs::write(dir.join("access.conf"), access_conf()).unwrap();
    for f in ["fwknopd.conf", "access.conf"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let server = lab.server.clone();
    let _listener = lab.in_ns(&server, || std::net::TcpListener::bind(("0.0.0.0", 2222)).unwrap()).unwrap();
    // The server's own firewall: closed unless fwknopd adds a rule.
    lab.iptables_baseline(&server, Baseline::DropTcp(&[2222])).unwrap();
    let log = std::fs::File::create(dir.join("fwknopd.log")).unwrap();
    let conf = format!("{d}/fwknopd.conf");
    let access = format!("{d}/access.conf");
    let pid = format!("{d}/fwknopd.pid");
    let digest = format!("{d}/digest.cache");
    lab.spawn(
        &server,
        &[&fwknopd, "-f", "-c", &conf, "-a", &access, "-i", "vcli", "-p", &pid, "-d", &digest],
        Stdio::null(),
        Stdio::from(log),
    )
    .unwrap();
    let srv: std::net::IpAddr = lab::SERVER4.parse().unwrap();
    assert_eq!(lab.probe(&lab.client, srv, 2222, Duration::from_millis(500)).unwrap(), Probe::Filtered);
    // fwknopd needs a moment to open its capture.
    std::thread::sleep(Duration::from_millis(1500));
    let c = client_bin();
    run_ok(
        &lab,
        &lab.client,
        &[
            &c,
            "spa",
            "-A",
            "tcp/2222",
            "-s",
            "--key-base64-rijndael",
            KEY_B64,
            "--key-base64-hmac",
            HMAC_B64,
            lab::SERVER4,
        ],
    );
    let opened = wait_until(Duration::from_secs(5), || {
        lab.probe(&lab.client, srv, 2222, Duration::from_millis(300)).unwrap() == Probe::Open
    });
    let text = std::fs::read_to_string(dir.join("fwknopd.log")).unwrap_or_default();
    assert!(opened, "fwknopd did not open the port; its log:\n{text}");
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The eavesdropper's replay at the edge of the window: a genuine native packet is
/// captured, the daemon restarts (its ephemeral-key set is empty again), and the
/// captured bytes are sent from the eavesdropper's own address in the last second in
/// which the time window still accepts them. Only the persisted replay cache stands
/// in the way, and it must still hold the entry in that second.
#[test]
fn native_replay_in_the_last_second_of_the_window_after_a_restart_is_refused() {
    use portcullis_proto::spa::native::{self, AllowAddr, Request, ServerPublicKey, UserKey};
    use portcullis_proto::Service;
    use std::time::SystemTime;

    if !root_or_skip("native_replay_in_the_last_second_of_the_window_after_a_restart_is_refused") {
        return;
    }
    const MAX_AGE: u64 = 8;
    let k = native_keys();
    let cfg = format!(
        "[spa]\nserver_key_file = \"server.key\"\nmax_age = {MAX_AGE}\n\n[[spa.user]]\nname = \"alice\"\nkey = \"{}\"\nopen = [\"tcp/2222\"]\n",
        k.user_public
    );
    let mut s = Server::start_with("replayedge", &cfg, &[2222], &[("server.key", &k.server_secret)]);
    let unix = || SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();

    // The genuine client opens for its own address; the eavesdropper keeps the bytes.
    let server: ServerPublicKey = k.server_public.parse().unwrap();
    let user = UserKey::from_text(&k.user_secret).unwrap();
    let mut rng = |b: &mut [u8]| {
        let f = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut &f, b).unwrap();
    };
    let ts = unix().as_secs();
    let req = Request::new("alice", ts, AllowAddr::Source, [Service::tcp(2222)], 5, &mut rng).unwrap();
    let packet = native::seal(&req, &server, &user, &mut rng).unwrap();
    let send = |s: &Server, ns: &str, dst: &'static str, pkt: Vec<u8>| {
        s.lab
            .in_ns(ns, move || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                sock.send_to(&pkt, (dst, 62201)).unwrap();
            })
            .unwrap();
    };
    send(&s, &s.lab.client, lab::SERVER4, packet.clone());
    s.wait_log("OPEN SESAME", 1);
    s.wait_probe(&s.lab.client, lab::SERVER4, 2222, Probe::Open);

    s.kill9();
    s.spawn(&cfg);
    // Wait for the last second of the window: unix time ts + MAX_AGE (plus 200 ms so
    // the send lands inside that second, not at its start).
    let edge = Duration::from_secs(ts + MAX_AGE) + Duration::from_millis(200);
    let now = unix();
    assert!(now < edge, "the restart took longer than the window ({now:?} vs {edge:?}); raise MAX_AGE");
    std::thread::sleep(edge - now);
    send(&s, &s.lab.other, lab::SERVER4_OTHER, packet);
    s.wait_log("rejected: replayed packet", 1);
    assert_eq!(s.log_text().matches("OPEN SESAME").count(), 1, "{}", s.log_text());
    assert_eq!(s.probe(&s.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered);
}
