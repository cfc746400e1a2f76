//! Changing a running gate's users, stanzas and ports (SIGHUP) while keeping its replay
//! cache and budgets: a packet accepted before the reload stays a replay after it.

use super::SpaGate;
use crate::config::SpaConfig;

impl SpaGate {
    /// Take the users, stanzas, ports and limits of `cfg`.
    pub fn reconfigure(&mut self, cfg: &SpaConfig) {
        self.ports = cfg.ports.clone();
        self.max_age = cfg.max_age;
        self.server_key = cfg.server_key.clone();
        self.user_keys = cfg.users.iter().map(|(n, u)| (n.clone(), u.key)).collect();
        self.users = cfg.users.clone();
        self.stanzas = cfg.stanzas.clone();
        self.aging = cfg.aging;
        self.forwarding = cfg.forwarding;
        self.local_nat = cfg.local_nat;
    }
}
