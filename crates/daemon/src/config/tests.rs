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
