//! Changing a running gate's users, stanzas and ports (SIGHUP) while keeping its replay
//! cache: a packet accepted before the reload stays a replay after it. The crypto
//! budgets are rebuilt for the new `source_prefix` (a restart resets them too).

use super::budget::{self, PrefixBudget};
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
        self.budget = PrefixBudget::new(budget::with_prefix(budget::NATIVE, cfg.source_prefix));
        self.fwknop_budget = PrefixBudget::new(budget::with_prefix(budget::FWKNOP, cfg.source_prefix));
        self.source_prefix = cfg.source_prefix;
        self.generation += 1;
    }
}
