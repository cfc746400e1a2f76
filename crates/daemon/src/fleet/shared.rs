//! Fleet-scoped grants: a row in `fleet_grants` per (address, service) with an absolute
//! expiry, announced with `NOTIFY portcullis_fleet, 'g <id>'`; revocations are rows in
//! `fleet_revocations` announced as `r <id>`. Every node LISTENs, reads the row the
//! notification names (the payload carries nothing else, so a forged payload can at
//! most make a node re-read the database) and applies it through an [`Apply`] with the
//! remaining time. A node that starts or reconnects applies every live row.
//!
//! Rows naming a node not in the fleet, an address or service that does not parse, or
//! an expiry already past are refused and logged, never applied.

use std::net::IpAddr;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use portcullis_proto::Service;
use postgres::{Client, Row};

use super::config::FleetConfig;
use super::FleetError;

/// The LISTEN/NOTIFY channel.
pub const CHANNEL: &str = "portcullis_fleet";

/// Longest notification payload acted on.
pub const MAX_PAYLOAD: usize = 32;

/// What a notification names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A new grant row.
    Grant(i64),
    /// A revocation of a grant row.
    Revoke(i64),
}

/// Parse a payload strictly: `g <id>` or `r <id>`, id a positive decimal.
pub fn parse_notice(payload: &str) -> Option<Notice> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let (kind, id) = payload.split_once(' ')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: i64 = id.parse().ok().filter(|&n| n > 0)?;
    match kind {
        "g" => Some(Notice::Grant(id)),
        "r" => Some(Notice::Revoke(id)),
        _ => None,
    }
}

/// A fleet grant as read from the database and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetGrant {
    /// Row id.
    pub id: i64,
    /// The node that made it.
    pub node: String,
    /// Who may come in.
    pub addr: IpAddr,
    /// To what.
    pub service: Service,
    /// Absolute expiry, unix milliseconds.
    pub expires_at: i64,
    /// What made it on that node (`spa:user alice`).
    pub origin: String,
    /// When its node recorded it, unix milliseconds.
    pub created_at: i64,
}

impl FleetGrant {
    /// Time left at `now_ms` (fleet time), or `None` if expired. Never more than the
    /// grant's whole length, whatever the clocks say.
    pub fn remaining(&self, now_ms: i64) -> Option<Duration> {
        let left = self.expires_at.checked_sub(now_ms)?;
        let whole = self.expires_at.saturating_sub(self.created_at).max(0);
        (left > 0).then(|| Duration::from_millis(u64::try_from(left.min(whole)).unwrap_or(0)))
    }

    /// Milliseconds from its recording to `now_ms` (negative if the clocks disagree).
    pub fn lag_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.created_at)
    }
}

/// Why a row was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowRefusal {
    /// Its node is not a fleet member.
    #[error("grant {0} names unknown node {1:?}")]
    UnknownNode(i64, String),
    /// Its address or service does not parse.
    #[error("grant {0} is malformed")]
    Malformed(i64),
}

/// A row as stored, before it is checked.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// Row id.
    pub id: i64,
    /// The node that made it.
    pub node: String,
    /// Address text.
    pub addr: String,
    /// Service text (`tcp/22`).
    pub service: String,
    /// Absolute expiry, unix ms.
    pub expires_at: i64,
    /// What made it on that node.
    pub origin: String,
    /// When it was recorded, unix ms.
    pub created_at: i64,
}

/// Check a raw row against the fleet's members.
pub fn check_row(cfg: &FleetConfig, r: RawRow) -> Result<FleetGrant, RowRefusal> {
    let id = r.id;
    if !cfg.knows(&r.node) {
        return Err(RowRefusal::UnknownNode(id, r.node.chars().take(64).collect()));
    }
    let addr: IpAddr = r.addr.parse().map_err(|_| RowRefusal::Malformed(id))?;
    let service = Service::parse_grant(&r.service).map_err(|_| RowRefusal::Malformed(id))?;
    if r.origin.len() > 256 {
        return Err(RowRefusal::Malformed(id));
    }
    Ok(FleetGrant {
        id,
        node: r.node,
        addr: portcullis_proto::addr::canonical(addr),
        service,
        expires_at: r.expires_at,
        origin: r.origin,
        created_at: r.created_at,
    })
}

fn from_row(cfg: &FleetConfig, r: &Row) -> Result<FleetGrant, RowRefusal> {
    // `try_get`: a table altered behind our back is a refused row, not a panic.
    let raw = || -> Result<RawRow, postgres::Error> {
        Ok(RawRow {
            id: r.try_get(0)?,
            node: r.try_get(1)?,
            addr: r.try_get(2)?,
            service: r.try_get(3)?,
            expires_at: r.try_get(4)?,
            origin: r.try_get(5)?,
            created_at: r.try_get(6)?,
        })
    };
    check_row(cfg, raw().map_err(|_| RowRefusal::Malformed(r.try_get(0).unwrap_or(0)))?)
}

/// Record a fleet grant made on this node and announce it. Returns the row ids.
pub fn publish(
    client: &mut Client,
    node: &str,
    addr: IpAddr,
    services: &[Service],
    expires_at: i64,
    origin: &str,
    now: i64,
) -> Result<Vec<i64>, FleetError> {
    publish_batch(client, node, &[NewGrant { addr, services, expires_at, origin }], now)
}

/// A grant made on this node, to record with [`publish_batch`].
#[derive(Debug, Clone, Copy)]
pub struct NewGrant<'a> {
    /// Who may come in.
    pub addr: IpAddr,
    /// To what (one row each).
    pub services: &'a [Service],
    /// Absolute expiry, unix ms.
    pub expires_at: i64,
    /// What made it on this node.
    pub origin: &'a str,
}

/// Most grants a publisher records in one transaction.
pub const MAX_BATCH: usize = 1000;

/// Record grants made on this node and announce each row (`g <id>`), all in one
/// statement (so one transaction: the rows and their notifications commit together):
/// a burst of grants on one node is shared at the database's pace, not one commit per
/// grant. Returns the row ids.
pub fn publish_batch(
    client: &mut Client,
    node: &str,
    grants: &[NewGrant<'_>],
    now: i64,
) -> Result<Vec<i64>, FleetError> {
    let (mut addrs, mut services, mut expiries, mut origins) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for g in grants {
        for s in g.services {
            addrs.push(g.addr.to_string());
            services.push(s.to_string());
            expiries.push(g.expires_at);
            origins.push(g.origin);
        }
    }
    if addrs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client.query(
        "WITH g AS (
             INSERT INTO fleet_grants (node, addr, service, expires_at, origin, created_at)
             SELECT $1, a, s, e, o, $2 FROM unnest($3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])
                 WITH ORDINALITY AS t(a, s, e, o, n) ORDER BY n
             RETURNING id)
         SELECT id, pg_notify($7, 'g ' || id) FROM g ORDER BY id",
        &[&node, &now, &addrs, &services, &expiries, &origins, &CHANNEL],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Revoke every live fleet grant of `addr` (and `service`, if given) from `node`, and
/// announce it. Returns the revoked ids.
pub fn revoke(
    client: &mut Client,
    node: &str,
    addr: IpAddr,
    service: Option<Service>,
    now: i64,
) -> Result<Vec<i64>, FleetError> {
    let mut tx = client.transaction()?;
    let svc = service.map(|s| s.to_string());
    let rows = tx.query(
        "INSERT INTO fleet_revocations (grant_id, node, revoked_at)
         SELECT id, $1, $4 FROM fleet_grants g
         WHERE g.addr = $2 AND ($3::TEXT IS NULL OR g.service = $3) AND g.expires_at > $4
           AND NOT EXISTS (SELECT 1 FROM fleet_revocations r WHERE r.grant_id = g.id)
         RETURNING grant_id",
        &[&node, &portcullis_proto::addr::canonical(addr).to_string(), &svc, &now],
    )?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    for id in &ids {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("r {id}")])?;
    }
    tx.commit()?;
    Ok(ids)
}

const SELECT: &str =
    "SELECT g.id, g.node, g.addr, g.service, g.expires_at, g.origin, g.created_at FROM fleet_grants g";

/// Every live, unrevoked fleet grant at `now` (checked; refused rows are logged).
pub fn live(client: &mut Client, cfg: &FleetConfig, now: i64) -> Result<Vec<FleetGrant>, FleetError> {
    let rows = client.query(
        &format!(
            "{SELECT} WHERE g.expires_at > $1
             AND NOT EXISTS (SELECT 1 FROM fleet_revocations r WHERE r.grant_id = g.id) ORDER BY g.id"
        ),
        &[&now],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| from_row(cfg, r).map_err(|e| tracing::warn!("fleet: refused: {e}")).ok())
        .collect())
}

/// One grant row by id, if it exists and is not revoked.
pub fn get(
    client: &mut Client,
    cfg: &FleetConfig,
    id: i64,
) -> Result<Option<Result<FleetGrant, RowRefusal>>, FleetError> {
    let row = client.query_opt(
        &format!(
            "{SELECT} WHERE g.id = $1
             AND NOT EXISTS (SELECT 1 FROM fleet_revocations r WHERE r.grant_id = g.id)"
        ),
        &[&id],
    )?;
    Ok(row.map(|r| from_row(cfg, &r)))
}

/// The row a revocation names (revoked or not).
pub fn get_any(
    client: &mut Client,
    cfg: &FleetConfig,
    id: i64,
) -> Result<Option<Result<FleetGrant, RowRefusal>>, FleetError> {
    let row = client.query_opt(&format!("{SELECT} WHERE g.id = $1"), &[&id])?;
    Ok(row.map(|r| from_row(cfg, &r)))
}

/// What a node does with fleet grants: open with the remaining time, close.
pub trait Apply: Send {
    /// Open `g` for `remaining`.
    fn open(&mut self, g: &FleetGrant, remaining: Duration);
    /// Close `g`.
    fn close(&mut self, g: &FleetGrant);
}

/// Apply every live grant (start, reconnect) at `now` (fleet time). Rows this node made
/// are applied too: after a restart its kernel may have lost them. Returns how many
/// were applied.
pub fn reconcile(
    client: &mut Client,
    cfg: &FleetConfig,
    apply: &mut dyn Apply,
    now: i64,
) -> Result<usize, FleetError> {
    let mut n = 0;
    for g in live(client, cfg, now)? {
        if let Some(left) = g.remaining(now) {
            apply.open(&g, left);
            n += 1;
        }
    }
    Ok(n)
}

/// Act on one notification: read its row and apply it with the time left at `now`
/// (fleet time). Own grants are skipped (applied locally when made).
pub fn handle(
    client: &mut Client,
    cfg: &FleetConfig,
    payload: &str,
    apply: &mut dyn Apply,
    now: &dyn Fn() -> i64,
) -> Result<(), FleetError> {
    handle_batch(client, cfg, &[payload.to_owned()], apply, now)
}

/// Act on notifications in their order, reading every grant row they name in one
/// query: a burst costs one round trip per batch, not two per grant. A row named twice
/// in one batch is applied once.
pub fn handle_batch(
    client: &mut Client,
    cfg: &FleetConfig,
    payloads: &[String],
    apply: &mut dyn Apply,
    now: &dyn Fn() -> i64,
) -> Result<(), FleetError> {
    let notices: Vec<Notice> = payloads
        .iter()
        .filter_map(|p| {
            let n = parse_notice(p);
            if n.is_none() {
                tracing::warn!("fleet: refused malformed notification ({} bytes)", p.len());
            }
            n
        })
        .collect();
    let ids: Vec<i64> =
        notices.iter().filter_map(|n| if let Notice::Grant(id) = n { Some(*id) } else { None }).collect();
    let mut grants: std::collections::HashMap<i64, Result<FleetGrant, RowRefusal>> = if ids.is_empty() {
        Default::default()
    } else {
        client
            .query(
                &format!(
                    "{SELECT} WHERE g.id = ANY($1)
                     AND NOT EXISTS (SELECT 1 FROM fleet_revocations r WHERE r.grant_id = g.id)"
                ),
                &[&ids],
            )?
            .iter()
            .filter_map(|r| Some((r.try_get(0).ok()?, from_row(cfg, r))))
            .collect()
    };
    for notice in notices {
        match notice {
            Notice::Grant(id) => match grants.remove(&id) {
                None => {}
                Some(Err(e)) => tracing::warn!("fleet: refused: {e}"),
                Some(Ok(g)) if g.node == cfg.node => {}
                Some(Ok(g)) => match g.remaining(now()) {
                    Some(left) => apply.open(&g, left),
                    None => tracing::info!("fleet: grant {id} already expired"),
                },
            },
            Notice::Revoke(id) => match get_any(client, cfg, id)? {
                None => {}
                Some(Err(e)) => tracing::warn!("fleet: refused: {e}"),
                Some(Ok(g)) => {
                    let by: Option<String> = client
                        .query_opt("SELECT node FROM fleet_revocations WHERE grant_id = $1", &[&id])?
                        .map(|r| r.get(0));
                    let by: String =
                        by.map_or_else(|| "?".into(), |n| n.chars().take(super::config::MAX_NODE).collect());
                    tracing::info!(
                        "fleet: grant {id} ({} {}) from {} revoked by node {by:?}",
                        g.addr,
                        g.service,
                        g.node
                    );
                    apply.close(&g);
                }
            },
        }
    }
    Ok(())
}

/// Clock difference beyond which a warning is logged: every node applies absolute
/// expiries by its own clock, so a node off by this much keeps grants open that much
/// longer (or shorter) than the node that made them.
pub const CLOCK_WARN_MS: i64 = 2_000;

/// Compare this node's clock (`local`) with the database's; warn when they differ.
/// Returns the difference (database minus here, ms).
pub fn check_clock(client: &mut Client, local: &dyn Fn() -> i64) -> Result<i64, FleetError> {
    let before = local();
    let db: i64 =
        client.query_one("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT", &[])?.get(0);
    let here = before + (local() - before) / 2;
    let skew = db - here;
    if skew.abs() > CLOCK_WARN_MS {
        tracing::warn!(
            "fleet: this node's clock differs from the database's by {skew} ms; fleet grants are \
             timed by the database's clock, but local grants and SPA time windows are not: run NTP \
             on every node"
        );
    }
    Ok(skew)
}

/// How often the listener measures the clock difference again.
const CLOCK_EVERY: Duration = Duration::from_secs(60);

/// LISTEN on `client` and apply notifications until `stop` says so. Reconciles first,
/// so nothing announced while this node was not listening is missed.
pub fn listen(
    client: &mut Client,
    cfg: &FleetConfig,
    apply: &mut dyn Apply,
    stop: &dyn Fn() -> bool,
    clock: &super::FleetClock,
) -> Result<(), FleetError> {
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    let measure = |c: &mut Client| -> Result<(), FleetError> {
        let skew = check_clock(c, &|| clock.local_ms())?;
        clock.status.skew_ms.store(skew, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    };
    measure(client)?;
    let n = reconcile(client, cfg, apply, clock.fleet_ms())?;
    tracing::info!("fleet: {n} live fleet grant(s) applied with their remaining time");
    clock.status.set_connected(true, "");
    let mut measured = std::time::Instant::now();
    while !stop() {
        if measured.elapsed() >= CLOCK_EVERY {
            measure(client)?;
            measured = std::time::Instant::now();
        }
        let mut pending = Vec::new();
        {
            let mut notes = client.notifications();
            let first = notes.timeout_iter(Duration::from_millis(250)).next()?;
            if let Some(n) = first {
                pending.push(n);
                let mut more = notes.iter();
                while pending.len() < 256 {
                    match more.next()? {
                        Some(n) => pending.push(n),
                        None => break,
                    }
                }
            }
        }
        let pending: Vec<String> =
            pending.into_iter().filter(|n| n.channel() == CHANNEL).map(|n| n.payload().to_owned()).collect();
        handle_batch(client, cfg, &pending, apply, &|| clock.fleet_ms())?;
    }
    Ok(())
}
