use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use portcullis_proto::FlagFilter;

use super::*;
use crate::config;

fn cfg(text: &str) -> Config {
    config::parse(text, Path::new("/nonexistent/portcullis.toml")).unwrap()
}

const FIXED: &str = r#"
[[door]]
name = "ssh"
sequence = [7000, "8000:udp", 9000]
seq_timeout = "5s"
open = ["tcp/22"]
open_for = "30s"

[[door]]
name = "single"
sequence = ["5000:udp"]
tcp_flags = "any"
open = ["udp/53", "tcp/22"]

[[door]]
name = "cmd"
sequence = [1000, 2000, 3000]
open = ["tcp/80"]
start_command = "true"
"#;

#[test]
fn doors_the_kernel_cannot_run_are_skipped_with_a_reason() {
    let p = plan(&cfg(FIXED), Kind::Nftables, 0);
    let names: Vec<&str> = p.doors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ssh", "single"]);
    assert_eq!(p.warnings, ["door cmd: skipped: start/stop commands need the daemon"]);
    // tcp/80 belongs to the skipped door: not protected (nothing could open it).
    assert_eq!(p.protected, [Service::tcp(22), Service::udp(53)]);
    assert_eq!(p.step_secs, None);
}

#[test]
fn a_prefix_door_is_kept_for_its_own_address_and_says_so() {
    let text = FIXED.replacen("open_for = \"30s\"\n", "open_for = \"30s\"\ngrant_prefix_v4 = 24\n", 1);
    let p = plan(&cfg(&text), Kind::Nftables, 0);
    assert_eq!(p.doors.len(), 2);
    assert!(
        p.warnings.iter().any(|w| w.starts_with("door ssh: grant_prefix_v4/v6 is not applied")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn nft_ruleset_walks_stages_resets_and_gates() {
    let p = plan(&cfg(FIXED), Kind::Nftables, 0);
    let t = nft::render(&p, &["hdr".into()], 1024);
    for want in [
        "# hdr",
        "# What kernel mode cannot do:",
        "#   - door cmd: skipped: start/stop commands need the daemon",
        "set d0_k1_4 {\n\t\ttype ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic,timeout",
        "set d0_grant6 {\n\t\ttype ipv6_addr\n\t\tsize 1024",
        "flush chain inet portcullis input",
        "add element inet portcullis protected { tcp . 22, udp . 53 }",
        "meta nfproto ipv4 meta l4proto . th dport { tcp . 7000, tcp . 9000, udp . 8000 } jump d0_4",
        "tcp flags & (syn | ack) != syn return",
        "tcp dport 9000 ip saddr @d0_k2_4 delete @d0_k2_4 { ip saddr } update @d0_grant4 { ip saddr timeout 30000ms } return",
        "udp dport 8000 ip saddr @d0_k1_4 delete @d0_k1_4 { ip saddr } update @d0_k2_4 { ip saddr timeout 5000ms } return",
        "tcp dport 7000 ip saddr @d0_k1_4 return",
        "delete @d0_k1_4 { ip saddr } delete @d0_k2_4 { ip saddr }\n\t\ttcp dport 7000 update @d0_k1_4 { ip saddr timeout 5000ms }",
        "ip6 saddr @d0_grant6 meta l4proto . th dport { tcp . 22 } accept",
        "ip saddr @d1_grant4 meta l4proto . th dport { udp . 53, tcp . 22 } accept",
        "meta l4proto . th dport @protected drop",
        // A one-knock door opens on its knock and has no stage sets.
        "udp dport 5000 update @d1_grant4 { ip saddr timeout 30000ms } return",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert!(!t.contains("d1_k1"), "a one-knock door needs no stages:\n{t}");
    assert!(!t.contains("\ndelete table"), "a reload must keep grants:\n{t}");
    assert!(!t.contains("dport 1000"), "the skipped door left no rule:\n{t}");
    // Knock chains run before the established shortcut and the gate.
    let jump = t.find("jump d0_4").unwrap();
    assert!(jump < t.find("ct state established").unwrap());
    assert!(t.find("ct state established").unwrap() < t.find("@protected drop").unwrap());
}

#[test]
fn iptables_ruleset_uses_recent_lists_and_returns_instead_of_accepting() {
    let p = plan(&cfg(FIXED), Kind::Iptables, 0);
    let t = iptables::render(&p, &[], false);
    for want in [
        "*filter\n:PORTCULLIS-KNOCK - [0:0]\n:PCK-D0 - [0:0]\n:PCK-D1 - [0:0]",
        "-A PORTCULLIS-KNOCK -p udp -m udp --dport 8000 -j PCK-D0",
        "-A PCK-D0 -p tcp -m tcp ! --tcp-flags SYN,ACK SYN -j RETURN",
        "-A PCK-D0 -p tcp -m tcp --dport 9000 -m recent --name pck4_d0_k2 --rcheck --seconds 5 \
         -m recent --name pck4_d0_k2 --remove -m recent --name pck4_d0_grant --set -j RETURN",
        "-A PCK-D0 -m recent --name pck4_d0_k1 --remove\n-A PCK-D0 -m recent --name pck4_d0_k2 --remove\n\
         -A PCK-D0 -p tcp -m tcp --dport 7000 -m recent --name pck4_d0_k1 --set -j RETURN",
        "-A PORTCULLIS-KNOCK -p tcp -m tcp --dport 22 -m recent --name pck4_d0_grant --rcheck --seconds 30 --reap -j RETURN",
        "-A PORTCULLIS-KNOCK -p tcp -m tcp --dport 22 -m recent --name pck4_d1_grant --rcheck --seconds 30 --reap -j RETURN",
        "-A PORTCULLIS-KNOCK -p tcp -m tcp --dport 22 -j DROP",
        "-A PCK-D1 -p udp -m udp --dport 5000 -m recent --name pck4_d1_grant --set -j RETURN",
        "COMMIT\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert!(!t.contains("-j ACCEPT"), "ACCEPT would skip the admin's later INPUT rules:\n{t}");
    assert!(!t.contains("PCK-D1 -p tcp -m tcp ! --tcp-flags"), "tcp_flags = any has no flag rule");
    let t6 = iptables::render(&plan(&cfg(FIXED), Kind::Ip6tables, 0), &[], true);
    assert!(t6.contains("pck6_d0_grant") && !t6.contains("pck4_"), "{t6}");
}

#[test]
fn targets_restrict_the_family_and_the_destination() {
    let text = r#"
[[door]]
name = "vip"
sequence = [7000, 8000, 9000]
target = "192.0.2.10"
open = ["tcp/22"]
"#;
    let p = plan(&cfg(text), Kind::Nftables, 0);
    let t = nft::render(&p, &[], 8);
    assert!(t.contains("ip daddr 192.0.2.10 meta l4proto . th dport"), "{t}");
    assert!(!t.contains("jump d0_6"), "an IPv4 target never sees IPv6 knocks:\n{t}");
    let p6 = plan(&cfg(text), Kind::Ip6tables, 0);
    assert!(p6.doors.is_empty() && p6.warnings[0].contains("its target is IPv4"), "{p6:?}");
    let t4 = iptables::render(&plan(&cfg(text), Kind::Iptables, 0), &[], false);
    assert!(t4.contains("-A PORTCULLIS-KNOCK -d 192.0.2.10 -p tcp -m tcp --dport 7000 -j PCK-D0"), "{t4}");
}

fn rotating_cfg(dir: &Path, algorithm: &str, step: &str) -> Config {
    let secret = dir.join("door.secret");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&secret);
    std::io::Write::write_all(f.as_mut().unwrap(), b"f00b4r\n").unwrap();
    let step = if step.is_empty() { String::new() } else { format!(", step = \"{step}\"") };
    let text = format!(
        "[[door]]\nname = \"rot\"\nrotating = {{ algorithm = \"{algorithm}\", secret_file = \"{}\", \
         range = \"10000-10999\", count = 5{step} }}\nopen = [\"tcp/22\"]\n",
        secret.display()
    );
    config::parse(&text, &dir.join("portcullis.toml")).unwrap()
}

#[test]
fn rotating_doors_get_two_slots_and_only_the_new_one_is_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let c = rotating_cfg(dir.path(), "md5-hourly", "");
    // 2008-08-19 17:59:12 UTC: the write-up's example hour (step 382049 is odd: slot b).
    let at = 1_219_168_752;
    let p = plan(&c, Kind::Nftables, at);
    let d = &p.doors[0];
    assert_eq!(p.step_secs, Some(3600));
    assert!(d.burn);
    assert_eq!(d.slots.len(), 2);
    assert_eq!(d.slots[0].id, "d0b");
    assert_eq!(d.slots[0].step, Some((at / 3600, true)));
    assert_eq!(knocks_text(&d.slots[0].sequence), "10978 10024 10722 10688 10711");
    assert_eq!(d.slots[1].id, "d0a");
    assert_eq!(d.slots[1].step, Some((at / 3600 - 1, false)));
    let t = nft::render(&p, &[], 8);
    assert!(t.contains("flush set inet portcullis d0b_k1_4\n"), "{t}");
    assert!(t.contains("flush set inet portcullis d0b_burnt\n"), "{t}");
    assert!(!t.contains("flush set inet portcullis d0a_"), "the previous step keeps its state:\n{t}");
    assert!(t.contains(
        "tcp dport 10711 ip saddr @d0b_k4_4 th dport @d0b_burnt delete @d0b_k4_4 { ip saddr } return"
    ));
    assert!(t.contains("update @d0b_burnt { th dport } update @d0b_owner4 { ip saddr } return"), "{t}");
    // The next hour swaps the roles of the slots.
    let next = plan(&c, Kind::Nftables, at + 3600);
    assert_eq!(next.doors[0].slots[0].id, "d0a");
    assert_eq!(next.doors[0].slots[1].sequence, d.slots[0].sequence);
    // iptables cannot follow a rotation.
    let ipt = plan(&c, Kind::Iptables, at);
    assert!(ipt.doors.is_empty() && ipt.warnings[0].contains("need --kernel nftables"), "{ipt:?}");
}

#[test]
fn steps_no_calendar_can_follow_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(&rotating_cfg(dir.path(), "hmac-sha256", "7s"), Kind::Nftables, 100);
    assert!(p.doors.is_empty());
    assert!(p.warnings[0].contains("step of 7 s"), "{:?}", p.warnings);
    let p = plan(&rotating_cfg(dir.path(), "hmac-sha256", "30s"), Kind::Nftables, 100);
    assert_eq!(p.step_secs, Some(30));
}

#[test]
fn timer_calendars_match_every_step_boundary() {
    assert_eq!(systemd::on_calendar(30).as_deref(), Some("*-*-* *:*:00/30 UTC"));
    assert_eq!(systemd::on_calendar(1).as_deref(), Some("*-*-* *:*:00/1 UTC"));
    assert_eq!(systemd::on_calendar(60).as_deref(), Some("*-*-* *:00/1:00 UTC"));
    assert_eq!(systemd::on_calendar(900).as_deref(), Some("*-*-* *:00/15:00 UTC"));
    assert_eq!(systemd::on_calendar(3600).as_deref(), Some("*-*-* 00/1:00:00 UTC"));
    assert_eq!(systemd::on_calendar(21_600).as_deref(), Some("*-*-* 00/6:00:00 UTC"));
    for bad in [0, 7, 45, 90, 7200 + 60, 25_200] {
        assert_eq!(systemd::on_calendar(bad), None, "step {bad}");
    }
    let timer = systemd::timer("*-*-* *:*:00/30 UTC", 30);
    assert!(timer.contains("OnCalendar=*-*-* *:*:00/30 UTC\nAccuracySec=1ms\nUnit=portcullis-kernel.service"));
    let svc = systemd::service(
        Path::new("/usr/sbin/portcullisd"),
        Path::new("/etc/p.toml"),
        Path::new("/usr/sbin/nft"),
    );
    assert!(svc.contains(
        "ExecStart=/usr/sbin/portcullisd generate --kernel nftables --config /etc/p.toml \
         --output /run/portcullis-kernel/ruleset.nft\nExecStart=/usr/sbin/nft -f /run/portcullis-kernel/ruleset.nft"
    ));
}

#[test]
fn flag_filters_translate_to_both_syntaxes() {
    assert_eq!(nft::flag_mismatch(FlagFilter::ANY), None);
    assert_eq!(nft::flag_mismatch(FlagFilter::SYN_ONLY).unwrap(), "tcp flags & (syn | ack) != syn");
    let only_clear = FlagFilter::parse("!ack,!rst").unwrap();
    assert_eq!(nft::flag_mismatch(only_clear).unwrap(), "tcp flags & (rst | ack) != 0x0");
    assert_eq!(iptables::tcp_flags(FlagFilter::SYN_ONLY).unwrap(), "--tcp-flags SYN,ACK SYN");
    assert_eq!(iptables::tcp_flags(only_clear).unwrap(), "--tcp-flags RST,ACK NONE");
    assert_eq!(millis(Duration::ZERO), 1);
    assert_eq!(seconds_ceil(Duration::from_millis(1500)), 2);
}
