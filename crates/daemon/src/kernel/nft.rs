//! The kernel-only ruleset as `nft -f` text.
//!
//! Per door slot and address family, stage sets hold the sources that have knocked the
//! first j knocks (`d0_k1_4` …), each element living `seq_timeout`; the door's chain
//! moves a source one stage on for the right knock, ignores a repeat of the knock it
//! just made (a retransmitted SYN), and clears every stage on any other knock of the
//! door. The last knock adds the source to the door's grant set for `open_for`; the
//! input chain then drops the protected services unless the source is in a grant set,
//! exactly as the daemon's table does.
//!
//! Loading is atomic and keeps state: the file declares every set and chain (a no-op
//! when they exist), flushes the chains and the protected set, and refills them in the
//! same transaction. Grants and knocks in progress survive a reload; a rotating door's
//! slot that now holds a new step is flushed.

use std::fmt::Write as _;

use portcullis_proto::{FlagFilter, Proto, Service, TcpFlags};

use super::{knocks_text, millis, KernelDoor, KernelPlan, Slot, LIMITS};
use crate::firewall::nft::{CHAIN, CHAIN_PRIORITY, SET_PROTECTED, TABLE};

/// Elements per stage set (sources with a sequence in progress, per door and family).
pub const STAGE_SET_SIZE: u32 = 65_536;

/// The two address families of the `inet` table: (match keyword, set type, suffix).
const FAMILIES: [(&str, &str, &str); 2] = [("ip", "ipv4_addr", "4"), ("ip6", "ipv6_addr", "6")];

/// `nft -f` text for `plan`. `header` lines become comments at the top (source, time).
pub fn render(plan: &KernelPlan, header: &[String], max_grants: u32) -> String {
    let mut s = String::new();
    comment_block(&mut s, plan, header);
    let t = format!("inet {TABLE}");

    // 1. Declarations (no-ops when they exist, so state survives a reload).
    let _ = writeln!(s, "table {t} {{");
    let _ = writeln!(s, "\tset {SET_PROTECTED} {{\n\t\ttype inet_proto . inet_service\n\t}}");
    for d in &plan.doors {
        for (_, ty, x) in FAMILIES {
            let _ = writeln!(s, "\tset {}_grant{x} {{", d.id);
            let _ = writeln!(s, "\t\ttype {ty}\n\t\tsize {max_grants}\n\t\tflags dynamic,timeout\n\t}}");
        }
        for slot in &d.slots {
            for (_, ty, x) in FAMILIES {
                for j in 1..slot.sequence.len() {
                    let _ = writeln!(s, "\tset {} {{", stage(slot, j, x));
                    let _ = writeln!(
                        s,
                        "\t\ttype {ty}\n\t\tsize {STAGE_SET_SIZE}\n\t\tflags dynamic,timeout\n\t}}"
                    );
                }
                if d.burn {
                    let _ =
                        writeln!(s, "\tset {}_owner{x} {{\n\t\ttype {ty}\n\t\tflags dynamic\n\t}}", slot.id);
                }
            }
            if d.burn {
                let _ =
                    writeln!(s, "\tset {}_burnt {{\n\t\ttype inet_service\n\t\tflags dynamic\n\t}}", slot.id);
            }
        }
    }
    let _ = writeln!(
        s,
        "\tchain {CHAIN} {{\n\t\ttype filter hook input priority filter - {}; policy accept;\n\t}}",
        -CHAIN_PRIORITY
    );
    for d in &plan.doors {
        for slot in &d.slots {
            for (_, _, x) in FAMILIES {
                let _ = writeln!(s, "\tchain {}_{x} {{\n\t}}", slot.id);
            }
        }
    }
    let _ = writeln!(s, "}}\n");

    // 2. Empty what is regenerated, in the same transaction as the refill below.
    let _ = writeln!(s, "flush chain {t} {CHAIN}");
    for d in &plan.doors {
        for slot in &d.slots {
            for (_, _, x) in FAMILIES {
                let _ = writeln!(s, "flush chain {t} {}_{x}", slot.id);
            }
        }
    }
    let _ = writeln!(s, "flush set {t} {SET_PROTECTED}");
    for d in &plan.doors {
        for slot in d.slots.iter().filter(|sl| matches!(sl.step, Some((_, true)))) {
            let _ =
                writeln!(s, "# step {} takes over slot {}: its old state is void", step_of(slot), slot.id);
            for (_, _, x) in FAMILIES {
                for j in 1..slot.sequence.len() {
                    let _ = writeln!(s, "flush set {t} {}", stage(slot, j, x));
                }
                if d.burn {
                    let _ = writeln!(s, "flush set {t} {}_owner{x}", slot.id);
                }
            }
            if d.burn {
                let _ = writeln!(s, "flush set {t} {}_burnt", slot.id);
            }
        }
    }
    if !plan.protected.is_empty() {
        let elems: Vec<String> = plan.protected.iter().map(|v| format!("{} . {}", v.proto, v.port)).collect();
        let _ = writeln!(s, "add element {t} {SET_PROTECTED} {{ {} }}", elems.join(", "));
    }
    let _ = writeln!(s);

    // 3. The rules.
    let _ = writeln!(s, "table {t} {{");
    let _ = writeln!(s, "\tchain {CHAIN} {{");
    for d in &plan.doors {
        let _ = writeln!(s, "\t\t# door {:?}: knocks go to its chains", d.name);
        for slot in &d.slots {
            let ports: Vec<String> =
                slot.sequence.iter().map(|k| format!("{} . {}", k.proto, k.port)).collect();
            let mut uniq = ports.clone();
            uniq.sort();
            uniq.dedup();
            for (fam, _, x) in FAMILIES {
                let dst = match d.target {
                    Some(std::net::IpAddr::V4(a)) if x == "4" => format!("ip daddr {a}"),
                    Some(std::net::IpAddr::V6(a)) if x == "6" => format!("ip6 daddr {a}"),
                    Some(_) => continue,
                    None => format!("meta nfproto ipv{x}"),
                };
                let _ = fam;
                let _ = writeln!(
                    s,
                    "\t\t{dst} meta l4proto . th dport {{ {} }} jump {}_{x}",
                    uniq.join(", "),
                    slot.id
                );
            }
        }
    }
    let _ = writeln!(s, "\t\tct state established,related accept");
    for d in &plan.doors {
        let open: Vec<String> = d.open.iter().map(|v| format!("{} . {}", v.proto, v.port)).collect();
        for (fam, _, x) in FAMILIES {
            let _ = writeln!(
                s,
                "\t\t{fam} saddr @{}_grant{x} meta l4proto . th dport {{ {} }} accept",
                d.id,
                open.join(", ")
            );
        }
    }
    let _ = writeln!(s, "\t\tmeta l4proto . th dport @{SET_PROTECTED} drop");
    let _ = writeln!(s, "\t}}");
    for d in &plan.doors {
        for slot in &d.slots {
            for fam in FAMILIES {
                door_chain(&mut s, d, slot, fam);
            }
        }
    }
    let _ = writeln!(s, "}}");
    s
}

fn step_of(slot: &Slot) -> u64 {
    slot.step.map_or(0, |(s, _)| s)
}

/// The stage set of `slot` holding sources that made knocks 0..j-1.
fn stage(slot: &Slot, j: usize, x: &str) -> String {
    format!("{}_k{j}_{x}", slot.id)
}

fn knock(k: &Service) -> String {
    match k.proto {
        Proto::Tcp => format!("tcp dport {}", k.port),
        Proto::Udp => format!("udp dport {}", k.port),
    }
}

/// `tcp flags & (syn | ack) != syn`: a TCP packet the door's filter does not pass.
pub fn flag_mismatch(f: FlagFilter) -> Option<String> {
    if f == FlagFilter::ANY {
        return None;
    }
    let names = |bits: u8| -> Vec<&'static str> {
        TcpFlags::NAMES.iter().filter(|(_, b)| bits & b != 0).map(|(n, _)| *n).collect()
    };
    let mask = names(f.set | f.clear).join(" | ");
    let want = if f.set == 0 { "0x0".to_string() } else { names(f.set).join(" | ") };
    Some(format!("tcp flags & ({mask}) != {want}"))
}

fn door_chain(s: &mut String, d: &KernelDoor, slot: &Slot, (fam, _, x): (&str, &str, &str)) {
    let seq = &slot.sequence;
    let n = seq.len();
    let timeout = format!("{}ms", millis(d.seq_timeout));
    let open_for = format!("{}ms", millis(d.open_for));
    let src = format!("{fam} saddr");
    let grant = format!("update @{}_grant{x} {{ {src} timeout {open_for} }}", d.id);
    let _ = writeln!(s, "\n\tchain {}_{x} {{", slot.id);
    match slot.step {
        None => {
            let _ = writeln!(s, "\t\t# door {:?}: {}", d.name, knocks_text(seq));
        }
        Some((step, cur)) => {
            let which = if cur { "current" } else { "previous" };
            let _ = writeln!(s, "\t\t# door {:?}, {which} step {step}: {}", d.name, knocks_text(seq));
        }
    }
    if seq.iter().any(|k| k.proto == Proto::Tcp) {
        if let Some(m) = flag_mismatch(d.flags) {
            let _ = writeln!(s, "\t\t# TCP knocks count only with flags {}; others are ignored", d.flags);
            let _ = writeln!(s, "\t\t{m} return");
        }
    }
    // Last knock first: the highest stage wins when ports repeat.
    let last = &seq[n - 1];
    let (had, leave) = if n > 1 {
        let st = stage(slot, n - 1, x);
        (format!(" {src} @{st}"), format!(" delete @{st} {{ {src} }}"))
    } else {
        (String::new(), String::new())
    };
    let k = knock(last);
    if d.burn {
        let _ = writeln!(s, "\t\t# knock {n}/{n}: a sequence opens once per step, for one source");
        let _ = writeln!(s, "\t\t{k}{had} {src} @{}_owner{x}{leave} {grant} return", slot.id);
        let _ = writeln!(s, "\t\t{k}{had} th dport @{}_burnt{leave} return", slot.id);
        let _ = writeln!(
            s,
            "\t\t{k}{had}{leave} {grant} update @{id}_burnt {{ th dport }} update @{id}_owner{x} {{ {src} }} return",
            id = slot.id
        );
    } else {
        let _ = writeln!(s, "\t\t# knock {n}/{n}: open");
        let _ = writeln!(s, "\t\t{k}{had}{leave} {grant} return");
    }
    for j in (1..n - 1).rev() {
        let (from, to) = (stage(slot, j, x), stage(slot, j + 1, x));
        let _ = writeln!(
            s,
            "\t\t{} {src} @{from} delete @{from} {{ {src} }} update @{to} {{ {src} timeout {timeout} }} return",
            knock(&seq[j])
        );
    }
    if n > 1 {
        let _ = writeln!(s, "\t\t# a repeat of the knock just made (retransmission) is ignored");
        for j in 1..n {
            let _ = writeln!(s, "\t\t{} {src} @{} return", knock(&seq[j - 1]), stage(slot, j, x));
        }
        let _ = writeln!(s, "\t\t# any other knock of this door starts over");
        let dels: Vec<String> =
            (1..n).map(|j| format!("delete @{} {{ {src} }}", stage(slot, j, x))).collect();
        let _ = writeln!(s, "\t\t{}", dels.join(" "));
        let _ =
            writeln!(s, "\t\t{} update @{} {{ {src} timeout {timeout} }}", knock(&seq[0]), stage(slot, 1, x));
    }
    let _ = writeln!(s, "\t}}");
}

fn comment_block(s: &mut String, plan: &KernelPlan, header: &[String]) {
    let _ = writeln!(s, "#!/usr/sbin/nft -f");
    let _ = writeln!(
        s,
        "# portcullis kernel-only ruleset: knocks are tracked by nftables itself, no daemon runs."
    );
    for h in header {
        let _ = writeln!(s, "# {h}");
    }
    let _ = writeln!(s, "#\n# Load: nft -f FILE (atomic; grants and knocks in progress survive a reload).");
    let _ = writeln!(s, "# Remove: portcullisd teardown (or: nft delete table inet {TABLE}).");
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
    let _ = writeln!(s, "#\n# Doors:");
    for d in &plan.doors {
        let open: Vec<String> = d.open.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(
            s,
            "#   {}: opens {} for {} ms; at most {} ms between knocks",
            d.name,
            open.join(", "),
            millis(d.open_for),
            millis(d.seq_timeout)
        );
        for slot in &d.slots {
            let _ = writeln!(s, "#     {}: {}", slot.id, knocks_text(&slot.sequence));
        }
    }
    let _ = writeln!(s);
}
