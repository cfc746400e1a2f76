//! A driver that records what it is asked and enforces nothing: for `check`, dry
//! runs and in-process tests.

use super::{FirewallDriver, FirewallError, Grant, Key, LiveGrant, Plan};

/// Records grants in memory; enforces nothing.
#[derive(Debug, Default)]
pub struct NoFirewall {
    /// Grants currently recorded.
    pub grants: Vec<Grant>,
    /// The last plan passed to `setup`.
    pub plan: Option<Plan>,
}

impl FirewallDriver for NoFirewall {
    fn name(&self) -> &'static str {
        "none"
    }

    fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError> {
        self.plan = Some(plan.clone());
        Ok(())
    }

    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
        for g in grants {
            self.grants.retain(|x| x.key() != g.key());
            self.grants.push(*g);
        }
        Ok(())
    }

    fn revoke(&mut self, grants: &[Key]) -> Result<(), FirewallError> {
        self.grants.retain(|x| !grants.contains(&x.key()));
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
        Ok(self
            .grants
            .iter()
            .map(|g| LiveGrant {
                addr: g.addr,
                len: g.len,
                service: g.service,
                remaining: Some(g.timeout),
                timeout: Some(g.timeout),
            })
            .collect())
    }

    fn teardown(&mut self) -> Result<(), FirewallError> {
        self.grants.clear();
        self.plan = None;
        Ok(())
    }

    fn kernel_expiry(&self) -> bool {
        false
    }
}
