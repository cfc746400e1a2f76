//! Kernel-only mode: a config's doors as a netfilter ruleset that knocks by itself, with
//! no daemon running (`portcullisd generate --kernel ...`).
//!
//! [`plan`] decides which doors the kernel can implement and with which knocks (a
//! rotating door has two slots: the current step's sequence and the previous one's);
//! [`nft`] and [`iptables`] turn the plan into ruleset text, [`systemd`] into the units
//! that regenerate it at every step. Everything here is pure: config and time in, text
//! out.

pub mod iptables;
pub mod nft;
pub mod systemd;
#[cfg(test)]
mod tests;

use std::time::Duration;

use portcullis_proto::{FlagFilter, Service};

use crate::config::{Config, Door};

/// Which ruleset to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `nft -f` text: one `inet` table for IPv4 and IPv6.
    Nftables,
    /// `iptables-restore --noflush` text (IPv4).
    Iptables,
    /// `ip6tables-restore --noflush` text (IPv6).
    Ip6tables,
}

/// What kernel mode cannot do; printed at the top of every ruleset and in the docs.
pub const LIMITS: &[&str] = &[
    "no SPA (fwknop or native): packets are not decrypted or authenticated",
    "no grant records, no reconciliation, no REST API, no metrics, no log lines",
    "no one-time sequences and no start/stop commands (such doors are skipped)",
    "the sequence timeout bounds the time between two consecutive knocks, not the whole sequence",
    "a door's knocks are plain ports: anyone who sees them can replay them (rotating doors \
     limit that to the current and previous step)",
];

/// One sequence a door accepts, with the names its state carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Identifier used in set/chain/list names: `d0` for a fixed door, `d0a`/`d0b` for
    /// the two slots of a rotating door.
    pub id: String,
    /// The knocks.
    pub sequence: Vec<Service>,
    /// Rotating doors: the step this slot holds, and whether that step is the current
    /// one (its state is cleared when the ruleset is regenerated).
    pub step: Option<(u64, bool)>,
}

/// A door the kernel implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDoor {
    /// The config's name (comments only).
    pub name: String,
    /// Name prefix of the door's grant set or recent list: `d0`.
    pub id: String,
    /// One slot, or two for a rotating door (current step first).
    pub slots: Vec<Slot>,
    /// Longest time between two consecutive knocks.
    pub seq_timeout: Duration,
    /// TCP knocks must match these flags (others are ignored, as the daemon does).
    pub flags: FlagFilter,
    /// What a completed sequence opens for the knocker.
    pub open: Vec<Service>,
    /// For how long.
    pub open_for: Duration,
    /// Only knocks addressed here count.
    pub target: Option<std::net::IpAddr>,
    /// Rotating: burn a completed sequence for its step (refused from any other source).
    pub burn: bool,
}

/// The whole plan: doors to implement, and why others were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPlan {
    /// Doors in config order.
    pub doors: Vec<KernelDoor>,
    /// Every service some implemented door opens (sorted, unique).
    pub protected: Vec<Service>,
    /// Warnings: skipped doors and ignored sections, one line each.
    pub warnings: Vec<String>,
    /// The shortest step of the rotating doors implemented, if any (the regeneration
    /// timer's period).
    pub step_secs: Option<u64>,
}

/// Plan `config` for `kind` at Unix time `now` (used by rotating doors only).
pub fn plan(config: &Config, kind: Kind, now: u64) -> KernelPlan {
    let mut doors = Vec::new();
    let mut warnings = Vec::new();
    let mut step_secs: Option<u64> = None;
    if config.spa.is_some() {
        warnings.push("[spa] is ignored: kernel mode cannot check single-packet authorization".into());
    }
    if config.api.is_some() {
        warnings.push("[api] is ignored: kernel mode has no daemon to answer it".into());
    }
    for (i, d) in config.doors.iter().enumerate() {
        match door(i, d, kind, now) {
            Ok(k) => {
                if !config.limits.grant_prefix.door(&d.name).is_single() {
                    warnings.push(format!(
                        "door {}: grant_prefix_v4/v6 is not applied: kernel mode opens for the \
                         knocker's own address only",
                        d.name
                    ));
                }
                if let Some(r) = &d.rotating {
                    let s = r.rotation.step_secs();
                    step_secs = Some(step_secs.map_or(s, |t| t.min(s)));
                }
                doors.push(k);
            }
            Err(why) => warnings.push(format!("door {}: skipped: {why}", d.name)),
        }
    }
    let mut protected: Vec<Service> = doors.iter().flat_map(|d| d.open.iter().copied()).collect();
    protected.sort();
    protected.dedup();
    KernelPlan { doors, protected, warnings, step_secs }
}

fn door(i: usize, d: &Door, kind: Kind, now: u64) -> Result<KernelDoor, String> {
    if d.one_time.is_some() {
        return Err("one-time sequences need the daemon".into());
    }
    if d.commands.is_some() {
        return Err("start/stop commands need the daemon".into());
    }
    if d.open.is_empty() {
        return Err("it opens nothing".into());
    }
    match d.target {
        Some(t) if t.is_ipv4() && kind == Kind::Ip6tables => return Err("its target is IPv4".into()),
        Some(t) if t.is_ipv6() && kind == Kind::Iptables => return Err("its target is IPv6".into()),
        _ => {}
    }
    let id = format!("d{i}");
    let slots = match &d.rotating {
        None => vec![Slot { id: id.clone(), sequence: d.sequence.clone(), step: None }],
        Some(_) if kind != Kind::Nftables => {
            return Err(
                "rotating doors need --kernel nftables (recent lists cannot be swapped per step)".into()
            )
        }
        Some(r) => {
            let step = r.rotation.step_secs();
            if systemd::on_calendar(step).is_none() {
                return Err(format!(
                    "its step of {step} s does not divide a minute, an hour or a day, so no timer can follow it"
                ));
            }
            let [(cur, cur_seq), (prev, prev_seq)] = r.accepted_at(now);
            // Slot a holds even steps, slot b odd ones: regenerating for a new step
            // clears only the slot the new step takes over.
            let name = |s: u64| format!("{id}{}", if s % 2 == 0 { 'a' } else { 'b' });
            vec![
                Slot { id: name(cur), sequence: cur_seq, step: Some((cur, true)) },
                Slot { id: name(prev), sequence: prev_seq, step: Some((prev, false)) },
            ]
        }
    };
    if slots.iter().any(|s| s.sequence.is_empty()) {
        return Err("it has no knocks".into());
    }
    Ok(KernelDoor {
        name: d.name.clone(),
        id,
        slots,
        seq_timeout: d.seq_timeout,
        flags: d.flags,
        open: d.open.clone(),
        open_for: d.open_for,
        target: d.target,
        burn: d.rotating.is_some(),
    })
}

/// A duration in whole milliseconds, at least 1 (0 would mean "no timeout" to nft).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A duration in whole seconds, rounded up, at least 1 (`recent --seconds`).
pub fn seconds_ceil(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The knocks of a door as text for comments: `7000 8000:udp 9000`.
pub fn knocks_text(seq: &[Service]) -> String {
    portcullis_proto::rotate::format_knocks(seq)
}
