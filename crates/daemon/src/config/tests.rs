//! Native config tests: whole files, defaults, every refusal with its line, and the exact
//! text of the messages users see.

use std::path::Path;
use std::time::Duration;

use portcullis_proto::{FlagFilter, Service};

use super::*;

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("test.toml"))
}

const GOOD: &str = r#"
[daemon]
interfaces = ["eth0", "wg0"]
state_dir = "/var/lib/pc"
log = "syslog"
max_tracked = 2000000

[[door]]
name = "ssh"
sequence = [7000, "8000:udp", "9000:tcp"]
seq_timeout = "5s"
tcp_flags = "syn,!ack"
open = ["tcp/22"]
open_for = 30

[[door]]
name = "web-admin"
sequence = ["7000", "8000:udp", "9500"]
open = ["tcp/8443", "udp/51820"]
target = "2001:db8::1"
"#;

#[test]
fn accepts_a_full_config() {
    let c = p(GOOD).unwrap();
    assert_eq!(c.daemon.interfaces, Interfaces::Named(vec!["eth0".into(), "wg0".into()]));
    assert_eq!(c.daemon.log, LogTarget::Syslog);
    assert_eq!(c.daemon.max_tracked, 2_000_000);
    assert_eq!(c.doors.len(), 2);
    let d = &c.doors[0];
    assert_eq!(d.sequence, vec![Service::tcp(7000), Service::udp(8000), Service::tcp(9000)]);
    assert_eq!(d.seq_timeout, Duration::from_secs(5));
    assert_eq!(d.open_for, Duration::from_secs(30));
    assert_eq!(c.doors[1].flags, FlagFilter::SYN_ONLY);
    assert_eq!(c.doors[1].target, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(c.protected(), vec![Service::tcp(22), Service::tcp(8443), Service::udp(51820)]);
}

#[test]
fn defaults_are_safe() {
    let c = p("[[door]]\nname='a'\nsequence=[1111,2222,3333]\nopen=['tcp/22']\n").unwrap();
    assert_eq!(c.daemon.interfaces, Interfaces::All);
    assert_eq!(c.daemon.backend, Backend::Nftables);
    assert_eq!(c.daemon.max_tracked, DEFAULT_MAX_TRACKED);
    assert_eq!(c.doors[0].flags, FlagFilter::SYN_ONLY);
}

fn err_line(text: &str) -> (Option<usize>, String) {
    let e = p(text).unwrap_err();
    (e.line, e.message)
}

#[test]
fn refuses_bad_configs_with_line_and_reason() {
    let base = "[[door]]\nname = 'a'\nsequence = [1111, 2222, 3333]\nopen = ['tcp/22']\n";
    let cases: &[(&str, usize, &str)] = &[
        ("[[door]]\nname = 'a'\nsequence = [1111, 0, 3333]\nopen = ['tcp/22']\n", 3, "1..65535"),
        ("[[door]]\nname = 'a'\nsequence = [1111, '70000', 3333]\nopen = ['tcp/22']\n", 3, "1 to 65535"),
        ("[[door]]\nname = 'a'\nsequence = ['1111:icmp']\nopen = ['tcp/22']\n", 3, "tcp or udp"),
        ("[[door]]\nname = 'a'\nsequence = []\nopen = ['tcp/22']\n", 3, "1 to 32"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['22']\n", 4, "tcp/22"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = []\n", 4, "at least one"),
        ("[[door]]\nname = 'a b'\nsequence = [1]\nopen = ['tcp/1']\n", 2, "door name"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\nseq_timeout = -5\n", 5, "seq_timeout"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\nopen_for = '100d'\n", 5, "open_for"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\ntcp_flags = 'syn,bogus'\n", 5, "bogus"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\ntarget = 'example.com'\n", 5, "not an IP"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\nsequense = [2]\n", 5, "unknown field"),
        ("[daemon]\nlog = 'file'\n[[door]]\nname='a'\nsequence=[1]\nopen=['tcp/1']\n", 2, "stderr"),
        ("[daemon]\nmax_tracked = 10\n[[door]]\nname='a'\nsequence=[1]\nopen=['tcp/1']\n", 2, "max_tracked"),
        ("[daemon]\ninterfaces = ['all', 'eth0']\n", 2, "combined"),
        ("[daemon]\ninterfaces = ['../x']\n", 2, "interface"),
        ("[daemon]\nstate_dir = 'rel'\n", 2, "absolute"),
        ("[[door]]\nname = 'a'\nsequence = [1]\nopen = ['tcp/1']\n[[door]]\nname = 'a'\nsequence = [2]\nopen = ['tcp/1']\n", 5, "twice"),
        ("[daemon]\nmode = 'open'\n", 2, "gate or accept"),
        ("[daemon]\nmode = 'accept'\n", 2, "accept_table"),
        ("[daemon]\naccept_table = 'inet filter'\n", 2, "only used with mode"),
        ("[daemon]\nmode = 'accept'\naccept_table = 'ip filter'\n", 3, "inet <table>"),
        ("[daemon]\nmode = 'accept'\naccept_table = 'inet portcullis'\n", 3, "your own"),
        ("[daemon]\nbackend = 'iptables'\niptables_chain = 'INPUT'\n", 3, "built-in"),
        ("[daemon]\nbackend = 'iptables'\niptables_chain = 'a b'\n", 3, "1-24"),
        ("[daemon]\nbackend = 'iptables'\niptables_jump = 0\n", 3, "iptables_jump"),
        ("this is not toml", 1, ""),
    ];
    for (text, line, needle) in cases {
        let (l, m) = err_line(text);
        assert_eq!(l, Some(*line), "{text:?} -> {m}");
        assert!(m.contains(needle), "{text:?}: {m:?} lacks {needle:?}");
    }
    assert!(p(base).is_ok());
    let e = p("").unwrap_err();
    assert!(e.to_string().contains("nothing to do"), "{e}");
    assert!(e.to_string().starts_with("test.toml: "), "{e}");
}

#[test]
fn firewall_knobs() {
    let door = "[[door]]\nname='a'\nsequence=[1]\nopen=['tcp/1']\n";
    let c = p(door).unwrap();
    assert_eq!(c.daemon.firewall, FirewallSettings::default());
    assert!(c.daemon.firewall.gate_forward && !c.daemon.firewall.accept);
    let c = p(&format!(
        "[daemon]\nmode = 'accept'\naccept_table = 'inet filter'\ngate_forward = false\nnat = true\n{door}"
    ))
    .unwrap();
    let f = &c.daemon.firewall;
    assert!(f.accept && !f.gate_forward && f.nat);
    assert_eq!(f.accept_table, Some(("inet".to_string(), "filter".to_string())));
    let c = p(&format!(
        "[daemon]\nbackend = 'iptables'\nmode = 'accept'\niptables_chain = 'FWKNOP_INPUT'\niptables_jump = 3\n{door}"
    ))
    .unwrap();
    assert_eq!(
        (c.daemon.firewall.iptables_chain.as_str(), c.daemon.firewall.iptables_jump),
        ("FWKNOP_INPUT", 3)
    );
}

#[test]
fn warns_about_weak_doors() {
    let c = p("[[door]]\nname='w'\nsequence=[22, 7000]\nopen=['tcp/22']\n").unwrap();
    let w = c.warnings().join("\n");
    assert!(w.contains("only 2 knock"), "{w}");
    assert!(w.contains("well-known"), "{w}");
    assert!(w.contains("also a protected port"), "{w}");
    let c = p("[[door]]\nname='r'\nsequence=[7000, 7000, 8000]\nopen=['tcp/22']\n").unwrap();
    assert!(c.warnings().join("\n").contains("repeated"));
    let c = p("[[door]]\nname='s'\nsequence=[7000, 8000, 9000]\nopen=['tcp/22']\n").unwrap();
    assert!(c.warnings().join("\n").contains("port scan"));
    let c = p("[[door]]\nname='ok'\nsequence=[7000, 9000, 8000]\nopen=['tcp/22']\n").unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let c = p("[[door]]\nname='ok'\nsequence=[7000, '8000:udp', 9000]\nopen=['tcp/22']\n").unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}
#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/portcullis.toml"));
    let c = load(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.doors.len(), 2);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

/// The whole message a user sees for `text`.
fn shown(text: &str) -> String {
    p(text).unwrap_err().to_string()
}

const DOOR: &str = "[[door]]\nname = 'a'\nsequence = [7000, 9000, 8000]\nopen = ['tcp/22']\n";

#[test]
fn a_duration_of_the_wrong_type_says_what_is_accepted() {
    assert_eq!(
        shown(&format!("{DOOR}seq_timeout = 0.5\n")),
        "test.toml:5: seq_timeout: expected a whole number of seconds or a duration like \"500ms\" or \
         \"5s\", got 0.5"
    );
    assert_eq!(
        shown(&format!("{DOOR}open_for = true\n")),
        "test.toml:5: open_for: expected a whole number of seconds or a duration like \"500ms\" or \"5s\", \
         got true"
    );
    assert_eq!(
        shown(&format!("{DOOR}seq_timeout = '5 parsecs'\n")),
        "test.toml:5: seq_timeout: \"5 parsecs\" is not a duration; write a whole number of seconds or text \
         like \"500ms\", \"5s\" or \"2m\""
    );
}

#[test]
fn a_duration_out_of_range_gives_the_range_in_human_units() {
    assert_eq!(
        shown(&format!("{DOOR}open_for = '100d'\n")),
        "test.toml:5: open_for must be between 1 s and 24 h, got \"100d\""
    );
    assert_eq!(
        shown(&format!("{DOOR}open_for = 0\n")),
        "test.toml:5: open_for must be between 1 s and 24 h, got 0"
    );
    assert_eq!(
        shown(&format!("{DOOR}seq_timeout = '50ms'\n")),
        "test.toml:5: seq_timeout must be between 100 ms and 1 h, got \"50ms\""
    );
    assert_eq!(validate::human(Duration::from_secs(90)), "90 s");
    assert_eq!(validate::human(Duration::from_secs(600)), "10 min");
}

#[test]
fn other_values_of_the_wrong_type_say_what_is_accepted() {
    assert_eq!(
        shown("[[door]]\nname = 'a'\nsequence = [7000, 1.5]\nopen = ['tcp/22']\n"),
        "test.toml:3: knock 1.5: write a port number or text like \"7000:tcp\" / \"7000:udp\""
    );
    assert_eq!(
        shown("[[door]]\nname = 'a'\nsequence = [7000]\nstart_command = 5\n"),
        "test.toml:4: start_command: expected a shell command line (text) or a list of text arguments, got 5"
    );
}

#[test]
fn a_single_bracket_door_says_doors_are_double_bracket_tables() {
    let expected =
        "[door] is a single table, but each door is a [[door]] table (double brackets), one per door";
    assert_eq!(shown(&format!("{DOOR}[door]\nname = 'b'\n")), format!("test.toml:5: {expected}"));
    assert_eq!(
        shown("[door]\nname = 'b'\nsequence = [7000, 9000, 8000]\nopen = ['tcp/22']\n"),
        format!("test.toml:1: {expected}")
    );
    assert_eq!(
        shown("[spa]\n[spa.user]\nname = 'x'\n"),
        "test.toml:2: [spa.user] is a single table, but each user is a [[spa.user]] table (double brackets), \
         one per user"
    );
    assert_eq!(
        shown("[spa]\n[spa.fwknop]\nname = 'x'\n"),
        "test.toml:2: [spa.fwknop] is a single table, but each stanza is a [[spa.fwknop]] table (double \
         brackets), one per stanza"
    );
}

#[test]
fn a_bad_key_names_the_toml_key_and_its_line() {
    assert_eq!(
        shown("[spa]\n[[spa.fwknop]]\nname = 'x'\nkey_base64 = '!!!'\n"),
        "test.toml:4: key_base64 is not valid base64"
    );
    assert_eq!(
        shown("[spa]\n[[spa.fwknop]]\nname = 'x'\nkey = 'k'\nhmac_key_base64 = '%%'\n"),
        "test.toml:5: hmac_key_base64 is not valid base64"
    );
}

#[test]
fn native_files_are_detected_whatever_section_comes_first() {
    for first in ["[spa]", "[api]", "[daemon]", "[[door]]", "[door]", "[spa.x]", "# c\n\n[[spa.user]]"] {
        assert!(!knockd::looks_like_knockd(&format!("{first}\nx = 1\n")), "{first}");
    }
    for first in ["[options]", "[openSSH]", "  [ssh]  # door"] {
        assert!(knockd::looks_like_knockd(&format!("{first}\nsequence = 1\n")), "{first}");
    }
    let dir = std::env::temp_dir().join(format!("pc-cfg-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("api-first.toml");
    std::fs::write(&f, format!("[api]\nsocket = ''\nlisten = '127.0.0.1:9'\ntokens_file = 't'\n{DOOR}"))
        .unwrap();
    let c = load(&f).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.api.is_some());
    let f = dir.join("knockd-door-named-spa.conf");
    std::fs::write(&f, "[spa]\n  sequence = 7000,8000,9000\n  command = /bin/true\n").unwrap();
    assert_eq!(
        load(&f).unwrap_err().to_string(),
        format!(
            "{}:2: unexpected key or value, expected newline, `#` (this file reads as a knockd.conf: use \
             --format knockd)",
            f.display()
        )
    );
    assert_eq!(load_as(&f, Format::Knockd).unwrap().doors[0].name, "spa");
    let _ = std::fs::remove_dir_all(&dir);
}
