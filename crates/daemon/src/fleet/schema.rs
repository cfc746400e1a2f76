//! Versioned migrations of the fleet database. Each node migrates at start under an
//! advisory lock, so two nodes starting together do not race; a database whose schema
//! is newer than this daemon knows is refused rather than written to.

use postgres::Client;

use super::FleetError;

/// Migrations, in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    // 1: replay claims, shared grants, revocations.
    "CREATE TABLE fleet_replay (
         digest BYTEA PRIMARY KEY,
         expires_at BIGINT NOT NULL,
         node TEXT NOT NULL,
         seen_at BIGINT NOT NULL
     );
     CREATE INDEX fleet_replay_expiry ON fleet_replay (expires_at);
     CREATE TABLE fleet_grants (
         id BIGSERIAL PRIMARY KEY,
         node TEXT NOT NULL,
         addr TEXT NOT NULL,
         service TEXT NOT NULL,
         expires_at BIGINT NOT NULL,
         origin TEXT NOT NULL,
         created_at BIGINT NOT NULL
     );
     CREATE INDEX fleet_grants_expiry ON fleet_grants (expires_at);
     CREATE TABLE fleet_revocations (
         grant_id BIGINT PRIMARY KEY REFERENCES fleet_grants (id) ON DELETE CASCADE,
         node TEXT NOT NULL,
         revoked_at BIGINT NOT NULL
     );",
];

/// Newest schema version this daemon knows.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Arbitrary key of the advisory lock that serialises migrations across nodes.
const LOCK_KEY: i64 = 0x706f_7274_6375_6c6c;

/// Bring the schema up to [`VERSION`]; refuse a newer one. Returns the version found.
pub fn migrate(client: &mut Client) -> Result<i32, FleetError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])?;
    // Not a NOTICE that the table exists at every (re)connect.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let found: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?.get(0);
    if found > VERSION {
        return Err(FleetError::NewerSchema { found, known: VERSION });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(sql)?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&v])?;
    }
    tx.commit()?;
    Ok(found)
}
