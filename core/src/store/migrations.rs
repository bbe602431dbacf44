//! Schema migrations through `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` upgrades a file from version `i` to `i + 1`; a new file runs them all.
//! Never edit a released step: add one. A step that changes what projections hold sets
//! `rebuild_projections`, and the replica rebuilds them from the documents on open.

use rusqlite::{Connection, Transaction};

use crate::error::{Error, Result};
use crate::sync::RECONCILE_KEY;

/// Version 1: documents as chunks, and projection tables for list screens.
const V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE doc_chunks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    household_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('snapshot', 'incremental')),
    data BLOB NOT NULL
);
CREATE INDEX doc_chunks_household ON doc_chunks (household_id, seq);
CREATE TABLE households (
    id TEXT PRIMARY KEY,
    family_name TEXT NOT NULL,
    address TEXT NOT NULL,
    community_id TEXT NOT NULL,
    branch_id TEXT NOT NULL,
    archived INTEGER NOT NULL
);
CREATE TABLE household_members (
    household_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (household_id, member_id)
);
CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    mode TEXT NOT NULL,
    follow_up_on TEXT,
    deleted INTEGER NOT NULL
);
CREATE INDEX visits_household ON visits (household_id);
CREATE TABLE issues (
    id TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    visit_id TEXT,
    category TEXT NOT NULL,
    title TEXT NOT NULL,
    urgency TEXT NOT NULL,
    assignee TEXT,
    status TEXT NOT NULL,
    due_on TEXT,
    raised_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX issues_household ON issues (household_id);
";

/// Version 2: conflicts and document heads projected; changes waiting for their
/// dependencies kept; issue resolution time for coordinators' statistics.
const V2: &str = "
CREATE TABLE conflicts (
    household_id TEXT NOT NULL,
    path TEXT NOT NULL,
    competing_values TEXT NOT NULL,
    PRIMARY KEY (household_id, path)
);
CREATE TABLE doc_heads (household_id TEXT PRIMARY KEY, heads TEXT NOT NULL);
CREATE TABLE pending_changes (
    household_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (household_id, hash)
);
ALTER TABLE issues ADD COLUMN resolved_at INTEGER;
CREATE INDEX issues_status_due ON issues (status, due_on);
CREATE INDEX households_community ON households (community_id);
INSERT OR REPLACE INTO meta (key, value) VALUES ('rebuild_projections', '1');
";

/// Version 3: the outbox of local changes the sync server has not acknowledged.
const V3: &str = "
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    household_id TEXT NOT NULL,
    data BLOB NOT NULL,
    quarantine_reason TEXT
);
";

/// Version 4: who recorded each visit and who took part, for "visits per member".
const V4: &str = "
ALTER TABLE visits ADD COLUMN recorded_by TEXT NOT NULL DEFAULT '';
ALTER TABLE visits ADD COLUMN visitors TEXT NOT NULL DEFAULT '[]';
CREATE INDEX visits_started ON visits (started_at);
INSERT OR REPLACE INTO meta (key, value) VALUES ('rebuild_projections', '1');
";

pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Bring the file up to the current version, one step per transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > current_version() {
        return Err(Error::Storage {
            reason: format!(
                "this replica file has schema version {version}, newer than this app ({}) / 本机数据来自更新版本的应用",
                current_version()
            ),
        });
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        apply_step(&tx, step, sql)?;
        if step + 1 == OUTBOX_VERSION && version > 0 {
            // Edits made before the outbox were never queued for the server: the next
            // sync compares every household with the server's, which takes them.
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, '1')", [RECONCILE_KEY])?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// The version that added the outbox (`V3`).
const OUTBOX_VERSION: usize = 3;

fn apply_step(tx: &Transaction<'_>, step: usize, sql: &str) -> Result<()> {
    tx.execute_batch(sql)?;
    tx.pragma_update(None, "user_version", (step + 1) as i64)?;
    Ok(())
}

/// Create a file at an older schema version, as an older app release left it.
/// Used by the upgrade tests; not by the app.
#[doc(hidden)]
pub fn create_at_version(conn: &mut Connection, version: usize) -> Result<()> {
    for (step, sql) in MIGRATIONS.iter().enumerate().take(version) {
        let tx = conn.transaction()?;
        apply_step(&tx, step, sql)?;
        tx.commit()?;
    }
    Ok(())
}
