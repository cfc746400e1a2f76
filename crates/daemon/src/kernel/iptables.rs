//! The kernel-only ruleset as `iptables-restore --noflush` / `ip6tables-restore
//! --noflush` text, with `recent` lists in the ArchWiki style.
//!
//! Per door, list `pck4_d0_kJ` holds the sources that made the first J knocks: the
//! right next knock (`--rcheck --seconds seq_timeout`) moves the source to the next list
//! (`--remove` + `--set` in one rule), a repeat of the knock just made is ignored, any
//! other knock of the door removes the source from every list, and the first knock
//! starts it over. The last knock `--set`s the grant list; `PORTCULLIS-KNOCK` then
//! lets a protected service through (RETURN, so INPUT's later rules still apply) only
//! for a source seen in a grant list within `open_for`, and drops it otherwise.
//!
//! Only our own chains are declared, so `--noflush` leaves every other rule alone;
//! INPUT is hooked once by the administrator (the header says how).

use std::fmt::Write as _;

use portcullis_proto::{FlagFilter, Proto, Service, TcpFlags};

use super::{knocks_text, seconds_ceil, KernelDoor, KernelPlan, LIMITS};

/// The gate chain INPUT jumps to.
pub const CHAIN: &str = "PORTCULLIS-KNOCK";

/// `iptables-restore` text for `plan`; `v6` selects ip6tables.
pub fn render(plan: &KernelPlan, header: &[String], v6: bool) -> String {
    let tool = if v6 { "ip6tables" } else { "iptables" };
    let x = if v6 { "6" } else { "4" };
    let mut s = String::new();
    let _ = writeln!(s, "# portcullis kernel-only ruleset ({tool} recent lists): no daemon runs.");
    for h in header {
        let _ = writeln!(s, "# {h}");
    }
    let _ = writeln!(s, "#\n# Load: {tool}-restore --noflush FILE   (replaces only portcullis' chains)");
    let _ = writeln!(s, "# Hook once: {tool} -C INPUT -j {CHAIN} || {tool} -I INPUT 1 -j {CHAIN}");
    let _ = writeln!(s, "# Remove: {tool} -D INPUT -j {CHAIN}, then -F and -X {CHAIN} and each PCK-* chain.");
    let _ = writeln!(s, "# Each recent list keeps the last 100 sources by default (xt_recent ip_list_tot);");
    let _ = writeln!(s, "# raise it for busy hosts: options xt_recent ip_list_tot=10000");
    let _ = writeln!(s, "#\n# What kernel mode cannot do:");
    for l in LIMITS {
        let _ = writeln!(s, "#   - {l}");
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(s, "#\n# Left out of this ruleset:");
        for w in &plan.warnings {
            let _ = writeln!(s, "#   - {w}");
        }
    }
    let doors: Vec<&KernelDoor> =
        plan.doors.iter().filter(|d| d.target.is_none_or(|t| t.is_ipv6() == v6)).collect();
    let _ = writeln!(s, "\n*filter");
    let _ = writeln!(s, ":{CHAIN} - [0:0]");
    for d in &doors {
        let _ = writeln!(s, ":{} - [0:0]", chain(d));
    }
    for d in &doors {
        let _ = writeln!(s, "# door {:?}: knocks go to its chain", d.name);
        let dst = d.target.map(|t| format!(" -d {t}")).unwrap_or_default();
        let mut knocks = d.slots[0].sequence.clone();
        knocks.sort();
        knocks.dedup();
        for k in knocks {
            let _ = writeln!(s, "-A {CHAIN}{dst} {} -j {}", port(&k), chain(d));
        }
    }
    let _ = writeln!(s, "# protected services: through for a granted source, dropped otherwise");
    for svc in &plan.protected {
        let p = port(svc);
        let _ = writeln!(s, "-A {CHAIN} {p} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN");
        for d in doors.iter().filter(|d| d.open.contains(svc)) {
            let _ = writeln!(
                s,
                "-A {CHAIN} {p} -m recent --name {} --rcheck --seconds {} --reap -j RETURN",
                grant(d, x),
                seconds_ceil(d.open_for)
            );
        }
        let _ = writeln!(s, "-A {CHAIN} {p} -j DROP");
    }
    for d in &doors {
        door_chain(&mut s, d, x);
    }
    let _ = writeln!(s, "COMMIT");
    s
}

fn chain(d: &KernelDoor) -> String {
    format!("PCK-{}", d.id.to_ascii_uppercase())
}

fn grant(d: &KernelDoor, x: &str) -> String {
    format!("pck{x}_{}_grant", d.id)
}

fn stage(d: &KernelDoor, j: usize, x: &str) -> String {
    format!("pck{x}_{}_k{j}", d.id)
}

fn port(k: &Service) -> String {
    match k.proto {
        Proto::Tcp => format!("-p tcp -m tcp --dport {}", k.port),
        Proto::Udp => format!("-p udp -m udp --dport {}", k.port),
    }
}

/// `--tcp-flags SYN,ACK SYN` for the door's filter; `None` when every packet counts.
pub fn tcp_flags(f: FlagFilter) -> Option<String> {
    if f == FlagFilter::ANY {
        return None;
    }
    let names = |bits: u8| -> String {
        let v: Vec<String> = TcpFlags::NAMES
            .iter()
            .filter(|(_, b)| bits & b != 0)
            .map(|(n, _)| n.to_ascii_uppercase())
            .collect();
        if v.is_empty() {
            "NONE".into()
        } else {
            v.join(",")
        }
    };
    Some(format!("--tcp-flags {} {}", names(f.set | f.clear), names(f.set)))
}

fn door_chain(s: &mut String, d: &KernelDoor, x: &str) {
    let seq = &d.slots[0].sequence;
    let n = seq.len();
    let c = chain(d);
    let t = seconds_ceil(d.seq_timeout);
    let _ = writeln!(s, "# door {:?}: {}", d.name, knocks_text(seq));
    if seq.iter().any(|k| k.proto == Proto::Tcp) {
        if let Some(f) = tcp_flags(d.flags) {
            let _ = writeln!(s, "-A {c} -p tcp -m tcp ! {f} -j RETURN");
        }
    }
    let set_grant = format!("-m recent --name {} --set", grant(d, x));
    if n == 1 {
        let _ = writeln!(s, "-A {c} {} {set_grant} -j RETURN", port(&seq[0]));
        return;
    }
    // Last knock first: the highest stage wins when ports repeat.
    for j in (1..n).rev() {
        let from = stage(d, j, x);
        let next = if j == n - 1 {
            set_grant.clone()
        } else {
            format!("-m recent --name {} --set", stage(d, j + 1, x))
        };
        let _ = writeln!(
            s,
            "-A {c} {} -m recent --name {from} --rcheck --seconds {t} -m recent --name {from} --remove {next} -j RETURN",
            port(&seq[j])
        );
    }
    // A repeat of the knock just made (a retransmitted SYN) is ignored.
    for j in 1..n {
        let _ = writeln!(
            s,
            "-A {c} {} -m recent --name {} --rcheck --seconds {t} -j RETURN",
            port(&seq[j - 1]),
            stage(d, j, x)
        );
    }
    // Any other knock of the door starts over.
    for j in 1..n {
        let _ = writeln!(s, "-A {c} -m recent --name {} --remove", stage(d, j, x));
    }
    let _ = writeln!(s, "-A {c} {} -m recent --name {} --set -j RETURN", port(&seq[0]), stage(d, 1, x));
}
