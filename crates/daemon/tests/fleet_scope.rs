//! Fleet scope beyond native SPA users, with three gateway daemons (each in its own lab,
//! all with the same addresses, so the client is 192.0.2.2 behind every gateway) and a
//! throwaway PostgreSQL: a fleet-scoped knock door, API/CLI grants with `--fleet`, the
//! fleet list with the node of each grant, a fleet revoke from another node, health,
//! and a fleet-scoped fwknop stanza whose packet replayed to another gateway is refused.
//! Needs root; under CI=true a test that cannot run fails.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod fleet_pg;
mod support;

use fleet_pg::Pg;
use support::{client_bin, lab, root_or_skip, tool, wait_until, Probe, Server};

const TOKEN: &str = "fleet-scope-test-token-0123456789abcdef";
const KEY_B64: &str = "wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=";
const HMAC_B64: &str =
    "Yh+xizBnl6FotC5ec7FanVGClRMlsOAPh2u6eovnerfBVKwaVKzjGoblFMHMc593TNyi0dWn4opLoTIV9q/ttg==";
const NODES: [&str; 3] = ["gw1", "gw2", "gw3"];

fn tag(node: &str) -> String {
    format!("fs{node}")
}

/// The test dir `Server::start_with` uses for `tag` (the API socket lives there).
fn dir_for(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pc-test-{tag}-{}", std::process::id()))
}

fn config(node: &str) -> String {
    format!(
        r#"
[fleet]
database_url_file = "fleet.url"
node = "{node}"
nodes = ["gw1", "gw2", "gw3"]

[[door]]
name = "ssh"
sequence = [7000, 8000, 9000]
open = ["tcp/2222"]
open_for = 30
scope = "fleet"

[[door]]
name = "local"
sequence = [7100, 8100, 9100]
open = ["tcp/2225"]
open_for = 30

[spa]
protect = ["tcp/2223"]

[[spa.fwknop]]
name = "ops"
key_base64 = "{KEY_B64}"
hmac_key_base64 = "{HMAC_B64}"
open_ports = ["tcp/2224"]
fw_access_timeout = 30
scope = "fleet"

[api]
socket = "{}/api.sock"
tokens_file = "tokens"
"#,
        dir_for(&tag(node)).display()
    )
}

/// Run `portcullis grants --json ARGS` against `s`'s socket; (success, JSON).
fn grants(s: &Server, args: &[&str]) -> (bool, Value) {
    s.grants_json(TOKEN, args)
}

/// `GET path` on `s`'s API socket (curl over the unix socket: no network).
fn get(s: &Server, path: &str) -> Value {
    let sock = s.dir.join("api.sock");
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket", sock.to_str().unwrap()])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: not JSON ({e})"))
}

fn fwknop(s: &Server, save: &str) {
    let mut argv: Vec<String> =
        vec!["env".into(), format!("HOME={}", s.dir.display()), tool("fwknop"), "--no-rc-file".into()];
    for a in ["-A", "tcp/2224", "-a", lab::CLIENT4, "-D", lab::SERVER4, "--use-hmac"] {
        argv.push(a.into());
    }
    for a in ["--key-base64-rijndael", KEY_B64, "--key-base64-hmac", HMAC_B64, "-B", save] {
        argv.push(a.into());
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    s.client(&argv);
}

fn resend(s: &Server, file: &str) {
    // The file ends with a newline; send exactly the packet, as the client did.
    let script = format!("printf %s \"$(cat {file})\" > /dev/udp/{}/62201", lab::SERVER4);
    s.client(&["bash", "-c", &script]);
}

#[test]
fn doors_api_grants_and_fwknop_stanzas_with_fleet_scope() {
    if !root_or_skip("doors_api_grants_and_fwknop_stanzas_with_fleet_scope") {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    let url = pg.url("postgres");
    let tokens = format!("ci {TOKEN}\n");
    let files = [("fleet.url", url.as_str()), ("tokens", tokens.as_str())];
    let gws: Vec<Server> = NODES
        .iter()
        .map(|n| Server::start_with(&tag(n), &config(n), &[2222, 2223, 2224, 2225], &files))
        .collect();
    for g in &gws {
        let ok = wait_until(Duration::from_secs(10), || get(g, "/v1/health")["fleet"]["status"] == "ok");
        assert!(ok, "fleet health never ok: {}", get(g, "/v1/health"));
    }
    let h = get(&gws[2], "/v1/health");
    assert_eq!((h["status"].as_str(), h["fleet"]["node"].as_str()), (Some("ok"), Some("gw3")), "{h}");

    // A fleet-scoped door knocked on gateway 1 opens on all three, for that client only;
    // a local door knocked on gateway 1 opens there only.
    let knock = |g: &Server, seq: &[&str]| {
        let mut argv = vec![client_bin(), "knock".into(), "-d".into(), "20".into(), lab::SERVER4.into()];
        argv.extend(seq.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        g.client(&argv);
    };
    knock(&gws[0], &["7000", "8000", "9000"]);
    knock(&gws[0], &["7100", "8100", "9100"]);
    for g in &gws {
        g.wait_probe(&g.lab.client, lab::SERVER4, 2222, Probe::Open);
        assert_eq!(g.probe(&g.lab.other, lab::SERVER4_OTHER, 2222), Probe::Filtered);
    }
    gws[0].wait_probe(&gws[0].lab.client, lab::SERVER4, 2225, Probe::Open);
    assert_eq!(gws[1].probe(&gws[1].lab.client, lab::SERVER4, 2225), Probe::Filtered, "local door");

    // An API grant with fleet scope (the CLI's --fleet) on gateway 1 opens on the others.
    let (ok, v) = grants(&gws[0], &["allow", lab::CLIENT4, "tcp/2223", "--for", "60", "--fleet"]);
    assert!(ok, "{v}");
    for g in &gws[1..] {
        g.wait_probe(&g.lab.client, lab::SERVER4, 2223, Probe::Open);
    }
    // Gateway 3 lists the fleet's grants with gateway 1 as their node.
    let (ok, list) = grants(&gws[2], &["list", "--fleet"]);
    assert!(ok, "{list}");
    let items = list["items"].as_array().unwrap();
    let api = items.iter().find(|g| g["port"] == 2223).unwrap_or_else(|| panic!("{list}"));
    assert_eq!((api["node"].as_str(), api["origin"]["kind"].as_str()), (Some("gw1"), Some("cli")), "{api}");
    assert!(api["remaining_seconds"].as_u64().unwrap() > 50, "{api}");
    let door = items.iter().find(|g| g["port"] == 2222).unwrap_or_else(|| panic!("{list}"));
    assert_eq!((door["node"].as_str(), door["origin"]["detail"].as_str()), (Some("gw1"), Some("ssh")));
    assert!(items.iter().all(|g| g["port"] != 2225), "local grants are not the fleet's: {list}");
    // Local lists stay as they were: no node.
    let (_, local) = grants(&gws[2], &["list"]);
    assert!(local["items"].as_array().unwrap().iter().all(|g| g.get("node").is_none()), "{local}");

    // Revoke on gateway 3 closes it on 1 and 2 (and 3).
    let id = api["id"].as_i64().unwrap().to_string();
    let (ok, v) = grants(&gws[2], &["revoke", "--fleet", &id]);
    assert!(ok, "{v}");
    assert_eq!(v["state"], "revoked");
    for g in &gws {
        g.wait_probe(&g.lab.client, lab::SERVER4, 2223, Probe::Filtered);
    }
    let (ok, _) = grants(&gws[1], &["revoke", "--fleet", &id]);
    assert!(!ok, "a revoked fleet grant cannot be revoked again");
    gws[0].wait_probe(&gws[0].lab.client, lab::SERVER4, 2222, Probe::Open);

    // A fleet-scoped fwknop stanza: the packet to gateway 1 opens everywhere; the same
    // packet replayed to gateway 2 is refused there (the fleet-wide replay claim).
    let saved = gws[0].dir.join("spa.pkt").display().to_string();
    fwknop(&gws[0], &saved);
    for g in &gws {
        g.wait_probe(&g.lab.client, lab::SERVER4, 2224, Probe::Open);
    }
    resend(&gws[1], &saved);
    gws[1].wait_log("rejected: replayed packet", 1);
    let claims: i64 = pg.client().query_one("SELECT COUNT(*) FROM fleet_replay", &[]).unwrap().get(0);
    assert_eq!(claims, 1);

    // Without [fleet], scope = "fleet" is a config error, not a silent local door.
    let conf = gws[0].dir.join("nofleet.toml");
    let text = format!("[[door]]{}", config("gw1").split_once("[[door]]").unwrap().1);
    std::fs::write(&conf, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = support::daemon_check(&conf);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [fleet] section"), "{out:?}");
}
