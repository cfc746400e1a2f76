//! Switching a running engine to a new config (SIGHUP), see `daemon/reload.rs`.

use super::Engine;
use crate::daemon::reload::SpaUpdate;

impl Engine {
    /// Become the running engine in place of `old`: knock attempts in progress are kept
    /// for every door group (same target) whose doors are all unchanged, in the same
    /// order; counters, log budgets, the command runner and the SPA replay cache carry
    /// over. Returns how many door groups kept their attempts.
    pub fn take_over(&mut self, mut old: Engine, spa: SpaUpdate) -> usize {
        let mut kept = 0;
        for g in &mut self.groups {
            let same = old.groups.iter().position(|o| {
                o.target == g.target
                    && o.doors.len() == g.doors.len()
                    && o.doors.iter().zip(&g.doors).all(|(&oi, &ni)| old.doors[oi] == self.doors[ni])
            });
            if let Some(i) = same {
                std::mem::swap(&mut g.tracker, &mut old.groups[i].tracker);
                std::mem::swap(&mut g.slots, &mut old.groups[i].slots);
                kept += 1;
            }
        }
        // Rotating sequences already used stay used (keyed by door index: only when the
        // doors are the same). A restart forgets them too, so this is never worse.
        if old.doors == self.doors {
            self.burnt = std::mem::take(&mut old.burnt);
        }
        self.fwknop = old.fwknop;
        self.limiter = old.limiter;
        self.open_limiter = old.open_limiter;
        self.reported_suppressed = old.reported_suppressed;
        self.stats = old.stats;
        self.ext = old.ext;
        // Packets screened under the old gate are decided by the new one (which screens
        // fwknop packets' stanza lists again); with SPA off they are dropped.
        self.spa_backlog = old.spa_backlog;
        self.spa = match spa {
            SpaUpdate::Off => None,
            SpaUpdate::Fresh(gate) => Some(*gate),
            SpaUpdate::Reconfigure(cfg) => old.spa.map(|mut gate| {
                gate.reconfigure(&cfg);
                gate
            }),
        };
        kept
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::SystemTime;

    use portcullis_proto::wire::Datagram;
    use portcullis_proto::{Millis, Proto, Service, TcpFlags};

    use super::*;
    use crate::capture::LocalView;
    use crate::config;
    use crate::firewall::none::NoFirewall;

    const SSH: &str = "[[door]]\nname = \"ssh\"\nsequence = [7000, 8000, 9000]\nopen = [\"tcp/22\"]\n";
    const WEB: &str = "[[door]]\nname = \"web\"\nsequence = [6000, 6001]\nopen = [\"tcp/443\"]\n";

    fn knock(e: &mut Engine, port: u16, t: u64) {
        let mut v = LocalView::default();
        v.addrs.insert("192.0.2.1".parse().unwrap());
        let d = Datagram {
            src: "192.0.2.2".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            proto: Proto::Tcp,
            src_port: 40000,
            dst_port: port,
            flags: TcpFlags(TcpFlags::SYN),
            payload: &[],
        };
        e.on_datagram(&v, 1, &d, Millis(t), SystemTime::UNIX_EPOCH);
    }

    fn open(e: &Engine) -> Vec<Service> {
        e.granter().live().unwrap().into_iter().map(|g| g.service).collect()
    }

    /// The engine for `text`, granting through `old`'s granter (as a reload does).
    fn next(old: &Engine, text: &str) -> Engine {
        let c = config::parse(text, std::path::Path::new("t.toml")).unwrap();
        Engine::with_granter(&c, Arc::clone(old.granter())).unwrap()
    }

    fn first(text: &str) -> Engine {
        let c = config::parse(text, std::path::Path::new("t.toml")).unwrap();
        Engine::new(&c, Box::new(NoFirewall::default())).unwrap()
    }

    #[test]
    fn an_unchanged_door_keeps_its_knock_in_progress() {
        let mut e = first(&format!("{SSH}{WEB}"));
        knock(&mut e, 7000, 0);
        knock(&mut e, 8000, 10);
        let mut n = next(&e, &format!("{SSH}{WEB}"));
        assert_eq!(n.take_over(e, SpaUpdate::Off), 1);
        knock(&mut n, 9000, 20);
        assert_eq!(open(&n), vec![Service::tcp(22)]);
        assert_eq!(n.stats().packets, 3, "counters carry over");
    }

    #[test]
    fn a_changed_door_starts_afresh_and_its_old_sequence_is_gone() {
        let mut e = first(SSH);
        knock(&mut e, 7000, 0);
        knock(&mut e, 8000, 10);
        let changed = SSH.replace("[7000, 8000, 9000]", "[7000, 8000, 9100]");
        let mut n = next(&e, &changed);
        assert_eq!(n.take_over(e, SpaUpdate::Off), 0);
        knock(&mut n, 9000, 20);
        knock(&mut n, 9100, 30);
        assert!(open(&n).is_empty(), "the attempt began under the old definition");
        for (i, p) in [7000, 8000, 9100].into_iter().enumerate() {
            knock(&mut n, p, 100 + i as u64);
        }
        assert_eq!(open(&n), vec![Service::tcp(22)]);
    }

    #[test]
    fn grants_are_not_the_engine_s_and_survive() {
        let mut e = first(SSH);
        for (i, p) in [7000, 8000, 9000].into_iter().enumerate() {
            knock(&mut e, p, i as u64);
        }
        let before: Vec<IpAddr> = e.granter().live().unwrap().into_iter().map(|g| g.addr).collect();
        let mut n = next(&e, &SSH.replace("7000", "7001"));
        n.take_over(e, SpaUpdate::Off);
        let after: Vec<IpAddr> = n.granter().live().unwrap().into_iter().map(|g| g.addr).collect();
        assert_eq!(before, after);
    }
}
