//! nftables driver over netlink (no `nft` binary at run time): the default backend.
//!
//! # The ruleset
//!
//! We own exactly one table and touch nothing else:
//!
//! ```text
//! table inet portcullis {
//!     set protected { type inet_proto . inet_service; elements = { tcp . 22, ... } }
//!     set allow4 { type ipv4_addr . inet_proto . inet_service; size <max_grants>; flags timeout; }
//!     set allow6 { type ipv6_addr . inet_proto . inet_service; size <max_grants>; flags timeout; }
//!     chain input {
//!         type filter hook input priority filter - 5; policy accept;
//!         ct state established,related accept
//!         ip saddr . meta l4proto . th dport @allow4 accept
//!         ip6 saddr . meta l4proto . th dport @allow6 accept
//!         meta l4proto . th dport @protected drop
//!     }
//! }
//! ```
//!
//! Doors and SPA users that grant prefixes (carrier-grade NAT) add, per prefix length in
//! use, a set `allow4_<len>` / `allow6_<len>` of the same type whose keys are network
//! addresses, and a rule after `@allow6` that masks the source before the lookup:
//! `ip saddr & 255.255.255.0 . meta l4proto . th dport @allow4_24 accept`. Exact-match
//! hash sets with kernel timeouts, like the others; a plan without prefix lengths has
//! neither, so single-address grants are untouched.
//!
//! Why this shape:
//!
//! - In nftables every table's base chains see the packet; an `accept` only ends
//!   *this* chain, while a `drop` is final everywhere. So our table only ever
//!   *drops* (a protected port, unless granted). Our `accept`s mean "not our
//!   business": the host's own firewall still decides about granted traffic, and
//!   we can never open something the admin closed.
//! - A grant is a set element with a kernel timeout. The kernel closes the hole on
//!   time even if the daemon dies, hangs or is killed (`kernel_expiry() == true`).
//! - `ct state established,related accept` lets a connection opened during the
//!   grant outlive it (an SSH session survives grant expiry); only *new*
//!   connections need a live grant.
//! - Policy `accept`: traffic to unprotected ports is none of our business either.
//!
//! # Operations
//!
//! Each operation is one atomic nf_tables batch (`netlink.rs`), every message ACKed
//! and every ACK checked; errors name the refused step and carry the errno.
//!
//! - `setup`: dump live grants first, then in ONE batch: add table, delete table,
//!   add the complete new table, and re-add the live grants whose service is still
//!   protected with their original `timeout` and their remaining `expires`. A
//!   restart neither closes nor extends open holes, and there is never a moment
//!   with ports unprotected or half a ruleset.
//! - `grant`: add + delete + add of each element, so the element ends up fresh with
//!   the full timeout whether it existed or not, on any kernel (see
//!   [`ruleset::grant_requests`]).
//! - `revoke`: dump, then delete the elements that exist (a `DELSETELEM` of a
//!   missing element would abort the whole batch with ENOENT). If an element
//!   expires between dump and delete, the batch fails with ENOENT and is retried
//!   with a fresh dump.
//! - `list`: dump both sets; remaining time is the kernel's `expires`.
//! - `teardown`: delete the table; ENOENT is success.
//!
//! The pure part (plan → messages, `nft` text, key encoding) is in `ruleset.rs`
//! and `expr.rs`; the socket is in `netlink.rs`.

use std::time::Duration;

use super::{
    AdminTable, FirewallDriver, FirewallError, Grant, Key, LiveGrant, Mode, NatGrant, Plan, Prefix, Watch,
};

mod compose;
mod expr;
mod monitor;
mod names;
mod netlink;
mod prefix_sets;
mod ruleset;
#[cfg(test)]
mod tests;

pub use compose::{ACCEPT_CHAIN, ADMIN_SET4, ADMIN_SET6, CHAIN_FORWARD, CHAIN_NAT};
pub use ruleset::{CHAIN, CHAIN_PRIORITY, RULES, SET_ALLOW4, SET_ALLOW6, SET_PROTECTED, TABLE};

use netlink::Netlink;
use ruleset::Elem;

/// The `nft -f` text equivalent to what the driver installs (grants aside), laid out
/// the way `nft list table inet portcullis` prints it, plus the optional forward/NAT
/// chains and the admin table's part. (nft 1.0 cannot parse `ct original proto-dst`
/// inside a concatenation, so those parts are for reading, not `nft -f`.)
pub fn render(plan: &Plan) -> String {
    let mut s = ruleset::render_table(plan, &compose::render_optional(plan));
    if let Some(t) = plan.accept_table.as_ref().filter(|_| plan.mode == Mode::Accept) {
        s.push_str(&compose::render_admin(t));
    }
    s
}

/// How often `revoke` retries when an element expired between dump and delete.
const REVOKE_ATTEMPTS: usize = 3;

/// The nftables firewall driver: owns `table inet portcullis` (and, in accept mode,
/// one chain and two sets in the admin's table).
#[derive(Debug)]
pub struct NftDriver {
    nl: Netlink,
    plan: Plan,
}

impl NftDriver {
    /// Open the `NETLINK_NETFILTER` socket. Changes nothing in the firewall.
    pub fn new() -> Result<Self, FirewallError> {
        let nl = Netlink::open()
            .map_err(|source| FirewallError::Kernel { op: "nft: open netlink socket", source })?;
        Ok(NftDriver { nl, plan: Plan::default() })
    }

    /// The grants in every grant set of our plan and of `next` (a setup's new plan),
    /// with their timeouts. Missing table or sets: none.
    fn live(&mut self, op: &'static str, next: Option<&Plan>) -> Result<Vec<Elem>, FirewallError> {
        let mut out = Vec::new();
        let mut sets = prefix_sets::grant_sets(&self.plan);
        for s in next.map(prefix_sets::grant_sets).unwrap_or_default() {
            if !sets.contains(&s) {
                sets.push(s);
            }
        }
        for (set, len) in sets {
            for raw in self.nl.dump_set(op, &set)?.unwrap_or_default() {
                let decoded = ruleset::decode_allow_key(&raw.key);
                // A prefix set's keys are network addresses; anything else is not ours.
                let decoded = match len {
                    None => decoded.map(|(a, s)| ((a, s), Prefix::host(a).len)),
                    Some(l) => decoded.filter(|(a, _)| Prefix::covering(*a, l).addr == *a).map(|k| (k, l)),
                };
                match decoded {
                    Some(((addr, service), len)) => out.push(Elem {
                        addr,
                        len,
                        service,
                        timeout_ms: raw.timeout_ms,
                        expires_ms: raw.expires_ms,
                    }),
                    None => {
                        tracing::warn!(set = %set, key = ?raw.key, "ignoring set element portcullis did not write")
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The admin's table when `plan` is in accept mode.
fn admin(plan: &Plan) -> Option<&AdminTable> {
    (plan.mode == Mode::Accept).then_some(plan.accept_table.as_ref()).flatten()
}

fn is_errno(err: &FirewallError, errno: i32) -> bool {
    matches!(err, FirewallError::Kernel { source, .. } if source.raw_os_error() == Some(errno))
}

impl FirewallDriver for NftDriver {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError> {
        let live = self.live("nft setup: list live grants", Some(plan))?;
        let restore = ruleset::restorable(plan, &live);
        let dropped = live.len() - restore.len();
        if dropped > 0 {
            tracing::info!(
                dropped,
                kept = restore.len(),
                "setup: not restoring grants for unprotected services or beyond max_grants"
            );
        }
        if plan.mode == Mode::Accept && plan.accept_table.is_none() {
            return Err(FirewallError::Protocol(
                "accept mode with nftables needs accept_table (an accept is final only in the admin's table)"
                    .into(),
            ));
        }
        let mut reqs = ruleset::setup_requests(plan, &restore);
        reqs.extend(compose::optional_requests(plan));
        if let Some(t) = admin(plan) {
            reqs.extend(compose::admin_setup_requests(t, plan, &restore));
        }
        self.nl.batch("nft setup", &reqs)?;
        self.plan = plan.clone();
        Ok(())
    }

    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
        if let Some(g) = grants.iter().find(|g| !self.plan.holds(&g.source())) {
            return Err(FirewallError::Protocol(format!(
                "grant for {}: no door or user grants /{} prefixes, so the firewall has no set for them",
                g.source(),
                g.len
            )));
        }
        let mut reqs = ruleset::grant_requests(grants);
        if let Some(t) = admin(&self.plan) {
            reqs.extend(compose::admin_grant_requests(t, grants));
        }
        match self.nl.batch("nft grant", &reqs) {
            // The kernel's word for a full set; its strerror ("Too many open files
            // in system") would send the reader the wrong way.
            Err(FirewallError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENFILE) => {
                Err(FirewallError::Kernel { op: "nft grant: set full (max_grants reached)", source })
            }
            r => r,
        }
    }

    fn revoke(&mut self, grants: &[Key]) -> Result<(), FirewallError> {
        // A prefix length the plan has no set for cannot be in the firewall.
        let grants: Vec<Key> = grants.iter().filter(|(p, _)| self.plan.holds(p)).copied().collect();
        let grants = grants.as_slice();
        if grants.is_empty() {
            return Ok(());
        }
        let mut blind = ruleset::revoke_blind_requests(grants);
        if let Some(t) = admin(&self.plan) {
            blind.extend(compose::admin_revoke_requests(t, grants));
        }
        match self.nl.batch("nft revoke", &blind) {
            // Full set (ENFILE) or no table at all (ENOENT): look up what is present.
            Err(e) if is_errno(&e, libc::ENFILE) || is_errno(&e, libc::ENOENT) => {}
            r => return r,
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let live = self.live("nft revoke: list live grants", None)?;
            let present: Vec<Key> = grants
                .iter()
                .filter(|(p, s)| live.iter().any(|e| e.addr == p.addr && e.len == p.len && e.service == *s))
                .copied()
                .collect();
            match self.nl.batch("nft revoke", &ruleset::revoke_requests(&present)) {
                // One expired between the dump and the delete: look again.
                Err(e) if attempt < REVOKE_ATTEMPTS && is_errno(&e, libc::ENOENT) => continue,
                r => return r,
            }
        }
    }

    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
        Ok(self
            .live("nft list", None)?
            .into_iter()
            .map(|e| LiveGrant {
                addr: e.addr,
                len: e.len,
                service: e.service,
                remaining: e.expires_ms.map(Duration::from_millis),
                timeout: e.timeout_ms.map(Duration::from_millis),
            })
            .collect())
    }

    fn teardown(&mut self) -> Result<(), FirewallError> {
        match self.nl.batch("nft teardown", &ruleset::teardown_requests()) {
            Err(e) if is_errno(&e, libc::ENOENT) => {}
            r => r?,
        }
        if let Some(t) = admin(&self.plan).cloned() {
            match self.nl.batch("nft teardown", &compose::admin_teardown_requests(&t, false)) {
                // The admin's rules still jump to our chain: leave it, empty.
                Err(e) if is_errno(&e, libc::EBUSY) => {
                    tracing::warn!(table = %t.name, "chain portcullis is still jumped to; left in place, empty");
                    match self.nl.batch("nft teardown", &compose::admin_teardown_requests(&t, true)) {
                        Err(e) if is_errno(&e, libc::ENOENT) => {}
                        r => r?,
                    }
                }
                Err(e) if is_errno(&e, libc::ENOENT) => {}
                r => r?,
            }
        }
        Ok(())
    }

    fn kernel_expiry(&self) -> bool {
        true
    }

    fn verify(&mut self, plan: &Plan) -> Result<Option<String>, FirewallError> {
        self.verify_state(plan)
    }

    fn watch(&self) -> Result<Option<Box<dyn Watch>>, FirewallError> {
        monitor::watch(&self.nl)
    }

    fn adopt(&mut self, plan: &Plan) {
        self.plan = plan.clone();
    }

    fn grant_nat(&mut self, grants: &[NatGrant]) -> Result<(), FirewallError> {
        if !self.plan.nat {
            return Err(FirewallError::Protocol("NAT grants need nat = true in the config".into()));
        }
        if let Some(g) = grants.iter().find(|g| g.addr.is_ipv6() != g.to.is_ipv6()) {
            return Err(FirewallError::Protocol(format!(
                "NAT grant for {} to {}: address families differ",
                g.addr, g.to
            )));
        }
        self.nl.batch("nft nat grant", &compose::nat_requests(grants, admin(&self.plan), false))
    }

    fn revoke_nat(&mut self, grants: &[NatGrant]) -> Result<(), FirewallError> {
        if !self.plan.nat {
            return Ok(());
        }
        self.nl.batch("nft nat revoke", &compose::nat_requests(grants, admin(&self.plan), true))
    }
}
