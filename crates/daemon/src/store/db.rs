//! The SQL side of the grant store: schema, forward-only migrations, and every query.
//!
//! Everything here takes a `&Connection` and does no threading, so it is unit-tested on
//! an in-memory database. Every value from outside goes in as a bound parameter; SQL
//! text is only ever assembled from the fixed fragments in this file.
//!
//! Times are Unix milliseconds (`i64`). One row per `(address, protocol, port)` grant,
//! where `address` is the single address, or `network/len` for a prefix grant (so a
//! prefix grant and a host grant inside it are different keys);
//! at most one row per key is `active` at a time (a partial unique index enforces it),
//! so a repeated grant of an active key refreshes that row instead of adding one.

use portcullis_proto::{Proto, Service};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{CloseTarget, Closed, Closing, Filter, GrantRecord, GrantState, NewGrants};
use crate::firewall::Prefix;
use crate::grants::origin::{Origin, OriginKind};

/// Forward-only migrations; `PRAGMA user_version` is the number applied. Never edit
/// a released step: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: grants.
    r#"
CREATE TABLE grants (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    origin_kind   TEXT    NOT NULL CHECK (origin_kind IN ('door', 'spa', 'api', 'cli', 'adopted')),
    origin_detail TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    protocol      TEXT    NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    port          INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    requested_at  INTEGER NOT NULL,
    effective_at  INTEGER,
    expires_at    INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('active', 'expired', 'revoked', 'failed')),
    revoked_by    TEXT,
    closed_at     INTEGER,
    driver        TEXT    NOT NULL,
    driver_result TEXT    NOT NULL,
    refresh_count INTEGER NOT NULL DEFAULT 0,
    refreshed_at  INTEGER
);
CREATE UNIQUE INDEX grants_one_active ON grants (address, protocol, port) WHERE state = 'active';
CREATE INDEX grants_state ON grants (state, expires_at);
CREATE INDEX grants_state_id ON grants (state, id);
CREATE INDEX grants_address ON grants (address, id);
CREATE INDEX grants_origin ON grants (origin_kind, state);
"#,
    // 2: closed rows by age, for retention.
    r#"
CREATE INDEX grants_closed ON grants (closed_at) WHERE state != 'active';
"#,
];

/// Schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Connection settings for the writer and the readers.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers (the API) never block the writer (the store thread) and vice versa.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!("store: journal_mode is {mode}, not wal");
    }
    // NORMAL in WAL mode: a power cut may lose the last transactions, never corrupt.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// Apply missing migrations in one transaction each. Refuses a database written by a
/// newer schema (we cannot know what its columns mean).
pub fn migrate(conn: &mut Connection) -> Result<usize, String> {
    let have: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(|e| e.to_string())
        .and_then(|v| usize::try_from(v).map_err(|_| format!("invalid user_version {v}")))?;
    if have > SCHEMA_VERSION {
        return Err(format!(
            "database schema version {have} is newer than this portcullisd ({SCHEMA_VERSION}); \
             refusing to touch it"
        ));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(have) {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(step).map_err(|e| format!("migration {}: {e}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(SCHEMA_VERSION)
}

const COLUMNS: &str = "id, origin_kind, origin_detail, address, protocol, port, requested_at, \
     effective_at, expires_at, duration_ms, state, revoked_by, closed_at, driver, driver_result, \
     refresh_count, refreshed_at";

fn row_to_record(r: &Row<'_>) -> rusqlite::Result<GrantRecord> {
    let kind: String = r.get(1)?;
    let proto: String = r.get(4)?;
    let state: String = r.get(10)?;
    let address: String = r.get(3)?;
    // A single address as it is; a prefix grant as `network/len`.
    let source = match address.split_once('/') {
        None => address.parse().map(Prefix::host).ok(),
        Some(_) => address.parse::<Prefix>().ok().filter(|p| !p.is_host()),
    };
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unexpected {what} in the database").into(),
        )
    };
    let source = source.ok_or_else(|| bad(3, "address"))?;
    Ok(GrantRecord {
        id: r.get(0)?,
        origin: Origin { kind: OriginKind::parse(&kind).ok_or_else(|| bad(1, "origin"))?, detail: r.get(2)? },
        address: source.addr,
        len: source.len,
        service: Service { proto: proto.parse::<Proto>().map_err(|_| bad(4, "protocol"))?, port: r.get(5)? },
        requested_at: r.get(6)?,
        effective_at: r.get(7)?,
        expires_at: r.get(8)?,
        duration_ms: r.get(9)?,
        state: GrantState::parse(&state).ok_or_else(|| bad(10, "state"))?,
        revoked_by: r.get(11)?,
        closed_at: r.get(12)?,
        driver: r.get(13)?,
        driver_result: r.get(14)?,
        refresh_count: r.get(15)?,
        refreshed_at: r.get(16)?,
    })
}

/// Record a batch of grants (one per service) in one transaction: all or nothing.
/// Returns the rows as they are now.
pub fn record(conn: &mut Connection, g: &NewGrants) -> rusqlite::Result<Vec<GrantRecord>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(g.services.len());
    for &service in &g.services {
        let id = record_one(&tx, g, service)?;
        out.push(get(&tx, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?);
    }
    tx.commit()?;
    Ok(out)
}

/// Returns the row id.
fn record_one(tx: &Transaction<'_>, g: &NewGrants, service: Service) -> rusqlite::Result<i64> {
    let addr = Prefix { addr: g.addr, len: g.len }.short();
    let proto = service.proto.as_str();
    let duration = i64::try_from(g.duration.as_millis()).unwrap_or(i64::MAX);
    match &g.result {
        Err(msg) => {
            tx.execute(
                "INSERT INTO grants (origin_kind, origin_detail, address, protocol, port, requested_at, \
                 effective_at, expires_at, duration_ms, state, closed_at, driver, driver_result) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?6, ?7, 'failed', ?6, ?8, ?9)",
                params![
                    g.origin.kind.as_str(),
                    g.origin.detail,
                    addr,
                    proto,
                    service.port,
                    g.requested_at,
                    duration,
                    g.driver,
                    msg
                ],
            )?;
            Ok(tx.last_insert_rowid())
        }
        Ok(()) => {
            let expires = g.effective_at.saturating_add(duration);
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM grants WHERE state = 'active' AND address = ?1 AND protocol = ?2 \
                     AND port = ?3",
                    params![addr, proto, service.port],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                // The driver replaced the element with the full new timeout; the record
                // follows what the firewall now enforces.
                tx.execute(
                    "UPDATE grants SET expires_at = ?2, duration_ms = ?3, refresh_count = refresh_count + 1, \
                     refreshed_at = ?4, driver_result = 'ok' WHERE id = ?1",
                    params![id, expires, duration, g.effective_at],
                )?;
                Ok(id)
            } else {
                tx.execute(
                    "INSERT INTO grants (origin_kind, origin_detail, address, protocol, port, requested_at, \
                     effective_at, expires_at, duration_ms, state, driver, driver_result) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, 'ok')",
                    params![
                        g.origin.kind.as_str(),
                        g.origin.detail,
                        addr,
                        proto,
                        service.port,
                        g.requested_at,
                        g.effective_at,
                        expires,
                        duration,
                        g.driver
                    ],
                )?;
                Ok(tx.last_insert_rowid())
            }
        }
    }
}

/// One record by id.
pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<GrantRecord>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM grants WHERE id = ?1"), [id], row_to_record).optional()
}

/// The active record for a key, if any.
pub fn active_for(conn: &Connection, src: Prefix, service: Service) -> rusqlite::Result<Option<GrantRecord>> {
    conn.query_row(
        &format!(
            "SELECT {COLUMNS} FROM grants WHERE state = 'active' AND address = ?1 AND protocol = ?2 AND port = ?3"
        ),
        params![src.short(), service.proto.as_str(), service.port],
        row_to_record,
    )
    .optional()
}

/// Every active record.
pub fn all_active(conn: &Connection) -> rusqlite::Result<Vec<GrantRecord>> {
    let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM grants WHERE state = 'active'"))?;
    let rows = st.query_map([], row_to_record)?;
    rows.collect()
}

/// Close active rows (revoked or expired) in one transaction. Of two closes of one
/// row, exactly one finds it active.
pub fn close(conn: &mut Connection, closes: &[Closing]) -> rusqlite::Result<Vec<Closed>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(closes.len());
    for c in closes {
        let row = match c.target {
            CloseTarget::Id(id) => get(&tx, id)?,
            CloseTarget::Key(addr, service) => active_for(&tx, addr, service)?,
        };
        let Some(row) = row else {
            out.push(Closed::NotFound);
            continue;
        };
        if row.state != GrantState::Active {
            out.push(Closed::NotActive(row));
            continue;
        }
        tx.execute(
            "UPDATE grants SET state = ?2, revoked_by = ?3, closed_at = ?4 WHERE id = ?1 AND state = 'active'",
            params![row.id, c.state.as_str(), c.by, c.at],
        )?;
        out.push(Closed::Done(get(&tx, row.id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?));
    }
    tx.commit()?;
    Ok(out)
}

/// A page of records, newest first, and the total matching the filter.
pub fn list(conn: &Connection, f: &Filter) -> rusqlite::Result<(Vec<GrantRecord>, u64)> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(s) = f.state {
        clauses.push("state = ?");
        args.push(s.as_str().to_string().into());
    }
    if let Some(a) = f.address {
        clauses.push("address = ?");
        args.push(a.to_string().into());
    }
    if let Some(k) = f.origin_kind {
        clauses.push("origin_kind = ?");
        args.push(k.as_str().to_string().into());
    }
    if let Some(d) = &f.origin_detail {
        clauses.push("origin_detail = ?");
        args.push(d.clone().into());
    }
    let filter = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    let total: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM grants{filter}"),
        rusqlite::params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let offset = (f.page.saturating_sub(1)).saturating_mul(f.per_page);
    let mut page_args = args.clone();
    page_args.push(i64::try_from(f.per_page).unwrap_or(i64::MAX).into());
    page_args.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
    let mut st =
        conn.prepare(&format!("SELECT {COLUMNS} FROM grants{filter} ORDER BY id DESC LIMIT ? OFFSET ?"))?;
    let rows = st.query_map(rusqlite::params_from_iter(page_args.iter()), row_to_record)?;
    let items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

/// Delete at most `batch` closed rows (expired, revoked, failed) that closed before
/// `before` (Unix ms), oldest first. Returns how many went.
pub fn prune(conn: &Connection, before: i64, batch: usize) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM grants WHERE id IN (SELECT id FROM grants WHERE state != 'active' \
         AND closed_at < ?1 ORDER BY closed_at LIMIT ?2)",
        params![before, i64::try_from(batch).unwrap_or(i64::MAX)],
    )
}

/// Record counts by (origin kind, state), for metrics.
pub fn counts(conn: &Connection) -> rusqlite::Result<Vec<(String, String, u64)>> {
    let mut st = conn.prepare(
        "SELECT origin_kind, state, COUNT(*) FROM grants GROUP BY origin_kind, state ORDER BY 1, 2",
    )?;
    let rows =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0))))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        configure(&c).unwrap();
        migrate(&mut c).unwrap();
        c
    }

    fn new(addr: &str, port: u16, at: i64, secs: u64) -> NewGrants {
        NewGrants {
            origin: Origin { kind: OriginKind::Door, detail: "ssh".into() },
            addr: addr.parse().unwrap(),
            len: Prefix::host(addr.parse().unwrap()).len,
            services: vec![Service::tcp(port)],
            requested_at: at,
            effective_at: at,
            duration: Duration::from_secs(secs),
            driver: "none",
            result: Ok(()),
        }
    }

    #[test]
    fn migrations_are_versioned_and_idempotent() {
        let mut c = db();
        assert_eq!(migrate(&mut c).unwrap(), SCHEMA_VERSION);
        let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v as usize, SCHEMA_VERSION);
        c.pragma_update(None, "user_version", 99).unwrap();
        assert!(migrate(&mut c).unwrap_err().contains("newer"));
    }

    #[test]
    fn a_repeat_grant_refreshes_the_active_record() {
        let mut c = db();
        let a = record(&mut c, &new("192.0.2.2", 22, 1000, 30)).unwrap().remove(0);
        let b = record(&mut c, &new("192.0.2.2", 22, 5000, 10)).unwrap().remove(0);
        assert_eq!(a.id, b.id);
        assert_eq!((b.expires_at, b.refresh_count, b.requested_at), (15_000, 1, 1000));
        assert_eq!(get(&c, a.id).unwrap().unwrap(), b, "the returned row is the stored row");
        // A different port or address is a different grant.
        assert_ne!(record(&mut c, &new("192.0.2.2", 23, 5000, 10)).unwrap()[0].id, a.id);
        assert_ne!(record(&mut c, &new("192.0.2.3", 22, 5000, 10)).unwrap()[0].id, a.id);
        // Once closed, the same key makes a new record.
        let revoke = |target| Closing { target, state: GrantState::Revoked, by: Some("t".into()), at: 6000 };
        let done = close(&mut c, &[revoke(CloseTarget::Id(a.id))]).unwrap();
        assert!(
            matches!(&done[..], [Closed::Done(r)] if r.state == GrantState::Revoked && r.closed_at == Some(6000))
        );
        let again = close(&mut c, &[revoke(CloseTarget::Id(a.id)), revoke(CloseTarget::Id(999))]).unwrap();
        assert!(matches!(&again[..], [Closed::NotActive(_), Closed::NotFound]), "closes once: {again:?}");
        assert_ne!(record(&mut c, &new("192.0.2.2", 22, 7000, 10)).unwrap()[0].id, a.id);
    }

    #[test]
    fn failed_grants_are_recorded_as_failed_and_do_not_touch_the_active_one() {
        let mut c = db();
        let a = record(&mut c, &new("192.0.2.2", 22, 1000, 30)).unwrap().remove(0);
        let mut f = new("192.0.2.2", 22, 2000, 30);
        f.result = Err("nft grant: set full".into());
        let b = record(&mut c, &f).unwrap().remove(0);
        assert_ne!(a.id, b.id);
        assert_eq!(b.state, GrantState::Failed);
        assert!(b.driver_result.contains("set full"));
        assert_eq!(get(&c, a.id).unwrap().unwrap().state, GrantState::Active);
    }

    #[test]
    fn closing_by_key_finds_the_active_row_only() {
        let mut c = db();
        let a = record(&mut c, &new("192.0.2.2", 22, 0, 1)).unwrap()[0].id;
        let b = record(&mut c, &new("192.0.2.3", 22, 0, 100)).unwrap()[0].id;
        let key = CloseTarget::Key("192.0.2.2".parse().unwrap(), Service::tcp(22));
        let expire = Closing { target: key, state: GrantState::Expired, by: None, at: 1000 };
        assert!(
            matches!(&close(&mut c, std::slice::from_ref(&expire)).unwrap()[..], [Closed::Done(r)] if r.id == a)
        );
        assert_eq!(
            close(&mut c, &[expire]).unwrap(),
            vec![Closed::NotFound],
            "no active row left for the key"
        );
        let r = get(&c, a).unwrap().unwrap();
        assert_eq!((r.state, r.closed_at), (GrantState::Expired, Some(1000)));
        assert_eq!(get(&c, b).unwrap().unwrap().state, GrantState::Active);
    }

    #[test]
    fn prune_deletes_closed_rows_older_than_the_cutoff_in_bounded_batches() {
        let mut c = db();
        let active = record(&mut c, &new("192.0.2.1", 22, 0, 10)).unwrap()[0].id;
        for i in 0..5u16 {
            let id = record(&mut c, &new("192.0.2.2", 100 + i, 0, 10)).unwrap()[0].id;
            let at = 1000 + i64::from(i);
            close(
                &mut c,
                &[Closing { target: CloseTarget::Id(id), state: GrantState::Expired, by: None, at }],
            )
            .unwrap();
        }
        let mut f = new("192.0.2.3", 22, 1003, 10);
        f.result = Err("set full".into());
        record(&mut c, &f).unwrap();
        // Closed at 1000..=1004, failed at 1003; the cutoff is exclusive.
        assert_eq!(prune(&c, 1000, 100).unwrap(), 0);
        assert_eq!(prune(&c, 1003, 2).unwrap(), 2, "a batch at most");
        assert_eq!(prune(&c, 1003, 100).unwrap(), 1);
        assert_eq!(prune(&c, 1005, 100).unwrap(), 3, "two expired and the failed one");
        assert_eq!(prune(&c, i64::MAX, 100).unwrap(), 0, "the active row is never pruned");
        assert_eq!(
            list(&c, &Filter::default()).unwrap().0.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![active]
        );
    }

    #[test]
    fn list_filters_and_pages_with_bound_parameters() {
        let mut c = db();
        for i in 0..25u16 {
            record(&mut c, &new(if i % 2 == 0 { "192.0.2.2" } else { "2001:db8::2" }, 100 + i, 0, 10))
                .unwrap();
        }
        let f = |page, per_page| Filter { page, per_page, ..Filter::default() };
        let (items, total) = list(&c, &f(1, 10)).unwrap();
        assert_eq!((items.len(), total), (10, 25));
        assert_eq!(items[0].service.port, 124, "newest first");
        assert_eq!(list(&c, &f(3, 10)).unwrap().0.len(), 5);
        assert_eq!(list(&c, &f(4, 10)).unwrap().0.len(), 0);
        let v6 = Filter { address: Some("2001:db8::2".parse().unwrap()), ..f(1, 100) };
        assert_eq!(list(&c, &v6).unwrap().1, 12);
        let sql = Filter { origin_detail: Some("x' OR '1'='1".into()), ..f(1, 100) };
        assert_eq!(list(&c, &sql).unwrap().1, 0);
        let active =
            Filter { state: Some(GrantState::Active), origin_kind: Some(OriginKind::Door), ..f(1, 1) };
        assert_eq!(list(&c, &active).unwrap().1, 25);
        assert_eq!(counts(&c).unwrap(), vec![("door".into(), "active".into(), 25)]);
    }
}
