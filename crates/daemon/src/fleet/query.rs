//! What the API asks of the fleet database: the live fleet grants, and revoking one by
//! its fleet id. These run on the API's blocking threads over one connection of their
//! own, opened on first use and again after an error.

use std::net::IpAddr;

use postgres::Client;

use super::node::Fleet;
use super::shared::{self, FleetGrant, CHANNEL};
use super::FleetError;

impl Fleet {
    fn with_db<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, FleetError>) -> Result<T, FleetError> {
        let mut db = self.db.lock().map_err(|_| FleetError::Timeout)?;
        if db.as_ref().is_none_or(Client::is_closed) {
            *db = self.database.connect();
        }
        let c = db.as_mut().ok_or(FleetError::Timeout)?;
        let r = f(c);
        if r.is_err() {
            *db = None;
        }
        r
    }

    /// Every live fleet grant (of `address`, if given), oldest first, with the node
    /// that made each.
    pub fn live_grants(&self, address: Option<IpAddr>) -> Result<Vec<FleetGrant>, FleetError> {
        let now = self.clock.fleet_ms();
        let all = self.with_db(|c| shared::live(c, &self.cfg, now))?;
        Ok(all.into_iter().filter(|g| address.is_none_or(|a| g.addr == a)).collect())
    }

    /// Revoke fleet grant `id` on every node (this one too, through its listener).
    /// `Ok(None)`: no such live grant.
    pub fn revoke_id(&self, id: i64) -> Result<Option<FleetGrant>, FleetError> {
        let now = self.clock.fleet_ms();
        let node = self.cfg.node.clone();
        self.with_db(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "INSERT INTO fleet_revocations (grant_id, node, revoked_at)
                 SELECT id, $1, $3 FROM fleet_grants g WHERE g.id = $2 AND g.expires_at > $3
                 ON CONFLICT (grant_id) DO NOTHING",
                &[&node, &id, &now],
            )?;
            if n == 0 {
                return Ok(None);
            }
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("r {id}")])?;
            tx.commit()?;
            Ok(shared::get_any(c, &self.cfg, id)?.and_then(Result::ok))
        })
    }
}
