//! The embedded store: one SQLite file in the data directory.
//!
//! Household documents and their projection tables are the core's (`doorstep_core::store`):
//! the server is a replica of every household. The server's own tables (organisation,
//! devices, change log, device scope, quarantine) live in the same file, so a change, its
//! log entry and its projection commit in one transaction. Server tables are versioned in
//! `server_meta.schema_version`, the core's by `PRAGMA user_version`.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use doorstep_core::document::{HouseholdDocument, View};
use doorstep_core::store::{Snapshots, Store, StoreTx};
use rusqlite::{params, OptionalExtension, Row};

use super::data_dir::{DataDirLock, STORE_FILE};
use super::{Compaction, LoggedChange, QuarantineStatus, QuarantinedChange, ServerStore, WriteTx};
use crate::error::{Result, ServerError};
use crate::org::{Branch, Community, Device, Member, Role};

const SERVER_V1: &str = "
CREATE TABLE server_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE branches (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE communities (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE members (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('member', 'coordinator', 'admin')),
    branch_id TEXT,
    scope_branches TEXT NOT NULL DEFAULT '[]',
    scope_communities TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    label TEXT NOT NULL,
    enrolment_hash TEXT UNIQUE,
    enrolment_expires_at INTEGER,
    token_hash TEXT UNIQUE,
    enrolled_at INTEGER,
    revoked_at INTEGER
);
CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    household_id TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    device_id TEXT,
    data BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX change_log_household ON change_log (household_id, seq);
CREATE TABLE device_grants (device_id TEXT PRIMARY KEY, grant INTEGER NOT NULL);
CREATE TABLE device_scope (
    device_id TEXT NOT NULL,
    household_id TEXT NOT NULL,
    granted_in INTEGER NOT NULL,
    granted_seq INTEGER NOT NULL,
    removed_in INTEGER,
    PRIMARY KEY (device_id, household_id)
);
CREATE TABLE quarantine (
    hash TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('held', 'released', 'discarded')),
    decided_by TEXT,
    decided_at INTEGER,
    told_in INTEGER
);
CREATE INDEX quarantine_device ON quarantine (device_id, status);
";

/// A member's households (`households_in_scope`, twice per sync) without scanning every
/// assignment: the projection's primary key starts with the household.
const SERVER_V2: &str = "
CREATE INDEX IF NOT EXISTS household_members_member ON household_members (member_id, household_id);
";

const SERVER_MIGRATIONS: &[&str] = &[SERVER_V1, SERVER_V2];

/// How many pages the write-ahead log may reach before the writer checkpoints it itself:
/// only if the checkpoint thread falls far behind (SQLite's default is 1,000).
const WRITER_CHECKPOINT_PAGES: i64 = 100_000;

/// The writer's page cache, in KiB (SQLite's default is 2 MiB). A batch of syncs changes
/// several thousand pages; with the default, SQLite spills them to the log before the
/// commit, writes them again when they change once more, and at the commit re-checksums
/// every frame after the first one rewritten: all on the writer thread, while no batch
/// merges. Profiled during a burst of pushes, that was 6% of the server's CPU with 2 MiB
/// and 2% with 16 MiB; 64 MiB saved a little more of it but spent it again on fresh
/// memory (page zeroing), for 50 MB more RSS.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

pub struct SqliteStore {
    store: Store,
    checkpointer: Checkpointer,
    /// Dropped last: released once the store is closed.
    _lock: DataDirLock,
}

/// Copies the write-ahead log into the database file on a thread of its own, after each
/// commit. Otherwise SQLite does it inside whichever commit takes the log past 1,000
/// pages: with a batch of syncs writing several thousand, that was every batch, about 45
/// of its 350 ms on the writer thread. Durability does not depend on it: a commit is
/// durable once its log pages are synced.
struct Checkpointer {
    nudge: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // One nudge waiting is enough: a checkpoint copies everything committed before it.
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("doorstep-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    // PASSIVE: copies what it can without waiting for (or blocking) the writer.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!("checkpoint of the write-ahead log failed: {e}");
                    }
                }
            })
            .map_err(|e| ServerError::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { nudge: Some(nudge), thread: Some(thread) })
    }

    fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            // Full: a checkpoint is already due.
            let _ = nudge.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SqliteStore {
    /// Open (creating and migrating as needed) `doorstep.sqlite3` in `data_dir`, refused
    /// while another process has it open.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ServerError::Internal(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let lock = DataDirLock::take(data_dir)?;
        let path = data_dir.join(STORE_FILE);
        let mut store = Store::open(&path)?;
        // The server compacts households all day: cheap snapshots over small ones.
        store.set_snapshots(Snapshots::Uncompressed);
        store.connection().pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        store.connection().pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        {
            let tx = store.transaction()?;
            let conn = tx.connection();
            let version: usize = server_meta(conn, "schema_version")?.and_then(|v| v.parse().ok()).unwrap_or(0);
            if version > SERVER_MIGRATIONS.len() {
                return Err(ServerError::Internal(format!(
                    "数据库来自更新版本的服务器（服务器表版本 {version}），本版本无法打开 / the store was written by a newer \
                     server (server schema version {version}, this server knows {})",
                    SERVER_MIGRATIONS.len()
                )));
            }
            for sql in SERVER_MIGRATIONS.iter().skip(version) {
                conn.execute_batch(sql)?;
            }
            conn.execute(
                "INSERT OR REPLACE INTO server_meta (key, value) VALUES ('schema_version', ?1)",
                [SERVER_MIGRATIONS.len().to_string()],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO server_meta (key, value) VALUES ('epoch', ?1)",
                [uuid::Uuid::new_v4().simple().to_string()],
            )?;
            tx.commit()?;
        }
        Ok(SqliteStore { store, checkpointer: Checkpointer::start(&path)?, _lock: lock })
    }
}

pub struct SqliteTx<'a> {
    tx: StoreTx<'a>,
    checkpointer: &'a Checkpointer,
}

impl ServerStore for SqliteStore {
    type Tx<'a> = SqliteTx<'a>;

    fn begin(&mut self) -> Result<SqliteTx<'_>> {
        Ok(SqliteTx { tx: self.store.transaction()?, checkpointer: &self.checkpointer })
    }
}

/// The value of `key` in the server's own metadata; `None` also when the file has no such
/// table (a new file, or not a Doorstep store).
pub(super) fn server_meta(conn: &rusqlite::Connection, key: &str) -> Result<Option<String>> {
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'server_meta'",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    Ok(conn.query_row("SELECT value FROM server_meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

pub(super) const MEMBER_COLUMNS: &str = "id, name, role, branch_id, scope_branches, scope_communities";

/// A member, from a row of [`MEMBER_COLUMNS`].
pub(super) fn member_row(r: &Row<'_>) -> rusqlite::Result<Member> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let s: String = r.get(i)?;
        Ok(serde_json::from_str(&s).unwrap_or_default())
    };
    Ok(Member {
        id: r.get(0)?,
        name: r.get(1)?,
        role: Role::parse(&r.get::<_, String>(2)?).unwrap_or(Role::Member),
        branch_id: r.get(3)?,
        scope_branches: list(4)?,
        scope_communities: list(5)?,
    })
}

fn device_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        member_id: r.get(1)?,
        label: r.get(2)?,
        enrolled: r.get::<_, Option<i64>>(3)?.is_some(),
        revoked: r.get::<_, Option<i64>>(4)?.is_some(),
    })
}

/// `device_scope.granted_seq` of a household held only for its changes to be taken
/// (`hold_for_taking`): past every change, so none is sent for it.
const TAKING_ONLY: i64 = i64::MAX;

const DEVICE_COLUMNS: &str = "id, member_id, label, enrolled_at, revoked_at";
const QUARANTINE_COLUMNS: &str = "hash, household_id, device_id, member_id, reason, at, status, data";

fn quarantine_row(r: &Row<'_>) -> rusqlite::Result<QuarantinedChange> {
    Ok(QuarantinedChange {
        hash: r.get(0)?,
        household_id: r.get(1)?,
        device_id: r.get(2)?,
        member_id: r.get(3)?,
        reason: r.get(4)?,
        at_ms: r.get(5)?,
        status: match r.get::<_, String>(6)?.as_str() {
            "released" => QuarantineStatus::Released,
            "discarded" => QuarantineStatus::Discarded,
            _ => QuarantineStatus::Held,
        },
        bytes: r.get(7)?,
    })
}

impl SqliteTx<'_> {
    fn conn(&self) -> &rusqlite::Connection {
        self.tx.connection()
    }

    fn strings(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<String>> {
        let mut stmt = self.conn().prepare_cached(sql)?;
        let rows = stmt.query_map(p, |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }
}

impl WriteTx for SqliteTx<'_> {
    fn commit(self) -> Result<()> {
        self.tx.commit()?;
        self.checkpointer.nudge();
        Ok(())
    }

    fn epoch(&self) -> Result<String> {
        server_meta(self.conn(), "epoch")?.ok_or_else(|| ServerError::Internal("the store has no epoch".into()))
    }

    fn put_branch(&self, b: &Branch) -> Result<()> {
        self.conn().execute("INSERT OR REPLACE INTO branches (id, name) VALUES (?1, ?2)", [&b.id, &b.name])?;
        Ok(())
    }

    fn put_community(&self, c: &Community) -> Result<()> {
        self.conn().execute("INSERT OR REPLACE INTO communities (id, name) VALUES (?1, ?2)", [&c.id, &c.name])?;
        Ok(())
    }

    fn branches(&self) -> Result<Vec<Branch>> {
        let mut stmt = self.conn().prepare_cached("SELECT id, name FROM branches ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok(Branch { id: r.get(0)?, name: r.get(1)? }))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn communities(&self) -> Result<Vec<Community>> {
        let mut stmt = self.conn().prepare_cached("SELECT id, name FROM communities ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok(Community { id: r.get(0)?, name: r.get(1)? }))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn put_member(&self, m: &Member) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO members (id, name, role, branch_id, scope_branches, scope_communities)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                m.id,
                m.name,
                m.role.as_str(),
                m.branch_id,
                serde_json::to_string(&m.scope_branches).expect("ids serialise"),
                serde_json::to_string(&m.scope_communities).expect("ids serialise"),
            ],
        )?;
        Ok(())
    }

    fn member(&self, id: &str) -> Result<Option<Member>> {
        Ok(self
            .conn()
            .prepare_cached(&format!("SELECT {MEMBER_COLUMNS} FROM members WHERE id = ?1"))?
            .query_row([id], member_row)
            .optional()?)
    }

    fn members(&self) -> Result<Vec<Member>> {
        let mut stmt = self.conn().prepare_cached(&format!("SELECT {MEMBER_COLUMNS} FROM members ORDER BY id"))?;
        let rows = stmt.query_map([], member_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn add_device(&self, d: &Device, enrolment_hash: &str, expires_at_ms: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO devices (id, member_id, label, enrolment_hash, enrolment_expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![d.id, d.member_id, d.label, enrolment_hash, expires_at_ms],
        )?;
        Ok(())
    }

    fn enrol_device(&self, enrolment_hash: &str, token_hash: &str, now_ms: i64) -> Result<Option<Device>> {
        let changed = self.conn().execute(
            "UPDATE devices SET token_hash = ?2, enrolled_at = ?3, enrolment_hash = NULL
             WHERE enrolment_hash = ?1 AND enrolment_expires_at > ?3 AND revoked_at IS NULL AND token_hash IS NULL",
            params![enrolment_hash, token_hash, now_ms],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        self.device_by_token(token_hash)
    }

    fn revoke_device(&self, device_id: &str, now_ms: i64) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE devices SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![device_id, now_ms],
        )? > 0)
    }

    fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = ?1 AND revoked_at IS NULL"
            ))?
            .query_row([token_hash], device_row)
            .optional()?)
    }

    fn devices(&self, member_id: Option<&str>) -> Result<Vec<Device>> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE ?1 IS NULL OR member_id = ?1 ORDER BY member_id, id"
        ))?;
        let rows = stmt.query_map([member_id], device_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn device(&self, device_id: &str) -> Result<Option<Device>> {
        Ok(self
            .conn()
            .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"))?
            .query_row([device_id], device_row)
            .optional()?)
    }

    fn document(&self, household_id: &str) -> Result<Option<Vec<u8>>> {
        let mut stmt =
            self.conn().prepare_cached("SELECT data FROM doc_chunks WHERE household_id = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([household_id])?;
        let mut bytes: Option<Vec<u8>> = None;
        while let Some(row) = rows.next()? {
            let chunk: Vec<u8> = row.get(0)?;
            bytes.get_or_insert_with(Vec::new).extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    fn save_document(&self, doc: &mut HouseholdDocument, increment: &[u8], view: &View) -> Result<()> {
        Ok(self.tx.save_document(doc, increment, view)?)
    }

    fn append_document(&self, doc: &mut HouseholdDocument, increment: &[u8], view: &View) -> Result<Compaction> {
        Ok(self.tx.append_document(doc, increment, view)?)
    }

    fn compaction_due(&self, household_id: &str) -> Result<Compaction> {
        Ok(self.tx.compaction_due(household_id)?)
    }

    fn compact_document(&self, doc: &mut HouseholdDocument) -> Result<()> {
        Ok(self.tx.compact_document(doc)?)
    }

    fn households_maybe_due_compaction(&self) -> Result<Vec<String>> {
        Ok(self.tx.households_maybe_due_compaction()?)
    }

    fn households_in_scope(&self, member: &Member) -> Result<Vec<String>> {
        match member.role {
            Role::Admin => self.strings("SELECT id FROM households ORDER BY id", []),
            Role::Member => self.strings(
                "SELECT household_id FROM household_members WHERE member_id = ?1 ORDER BY household_id",
                [&member.id],
            ),
            Role::Coordinator => self.strings(
                "SELECT id FROM households
                 WHERE branch_id IN (SELECT value FROM json_each(?1))
                    OR community_id IN (SELECT value FROM json_each(?2))
                 ORDER BY id",
                params![
                    serde_json::to_string(&member.scope_branches).expect("ids serialise"),
                    serde_json::to_string(&member.scope_communities).expect("ids serialise")
                ],
            ),
        }
    }

    fn document_heads(&self, household_id: &str) -> Result<Option<Vec<String>>> {
        Ok(self.tx.document_heads(household_id)?)
    }

    fn household_exists(&self, household_id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM doc_heads WHERE household_id = ?1")?
            .query_row([household_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn max_seq(&self) -> Result<u64> {
        Ok(self.conn().query_row("SELECT coalesce(max(seq), 0) FROM change_log", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn has_change(&self, hash: &str) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM change_log WHERE hash = ?1")?
            .query_row([hash], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn change_hash_at(&self, seq: u64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT hash FROM change_log WHERE seq = ?1")?
            .query_row([seq as i64], |r| r.get(0))
            .optional()?)
    }

    fn append_change(
        &self,
        household_id: &str,
        hash: &str,
        device_id: Option<&str>,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<u64> {
        self.conn()
            .prepare_cached("INSERT INTO change_log (household_id, hash, device_id, data, at) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![household_id, hash, device_id, bytes, now_ms])?;
        Ok(self.conn().last_insert_rowid() as u64)
    }

    fn changes_for_device(
        &self,
        device_id: &str,
        after_seq: u64,
        pushed_after: u64,
        max_bytes: usize,
    ) -> Result<(Vec<LoggedChange>, bool)> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT c.seq, c.household_id, c.data FROM change_log c
             JOIN device_scope s ON s.device_id = ?1 AND s.household_id = c.household_id AND s.removed_in IS NULL
             WHERE c.seq > ?2 AND c.seq > s.granted_seq
               AND (c.seq <= ?3 OR c.device_id IS NULL OR c.device_id != ?1)
             ORDER BY c.seq",
        )?;
        let mut rows = stmt.query(params![device_id, after_seq as i64, pushed_after as i64])?;
        let mut out = Vec::new();
        let mut total = 0;
        while let Some(row) = rows.next()? {
            let bytes: Vec<u8> = row.get(2)?;
            if !out.is_empty() && total + bytes.len() > max_bytes {
                return Ok((out, true));
            }
            total += bytes.len();
            out.push(LoggedChange { seq: row.get::<_, i64>(0)? as u64, household_id: row.get(1)?, bytes });
        }
        Ok((out, false))
    }

    fn device_grant(&self, device_id: &str) -> Result<u64> {
        Ok(self
            .conn()
            .prepare_cached("SELECT grant FROM device_grants WHERE device_id = ?1")?
            .query_row([device_id], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0) as u64)
    }

    fn set_device_grant(&self, device_id: &str, grant: u64) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO device_grants (device_id, grant) VALUES (?1, ?2)")?
            .execute(params![device_id, grant as i64])?;
        Ok(())
    }

    fn confirm_grant(&self, device_id: &str, grant: u64) -> Result<Vec<String>> {
        let g = grant as i64;
        let conn = self.conn();
        let left = conn
            .prepare_cached(
                "DELETE FROM device_scope WHERE device_id = ?1 AND removed_in IS NOT NULL AND removed_in <= ?2
                 RETURNING household_id",
            )?
            .query_map(params![device_id, g], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        conn.prepare_cached("DELETE FROM device_scope WHERE device_id = ?1 AND granted_in > ?2")?
            .execute(params![device_id, g])?;
        conn.prepare_cached("UPDATE device_scope SET removed_in = NULL WHERE device_id = ?1 AND removed_in > ?2")?
            .execute(params![device_id, g])?;
        conn.prepare_cached("UPDATE quarantine SET told_in = NULL WHERE device_id = ?1 AND told_in > ?2")?
            .execute(params![device_id, g])?;
        Ok(left)
    }

    fn held_households(&self, device_id: &str) -> Result<Vec<(String, bool)>> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT household_id, granted_seq = {TAKING_ONLY} FROM device_scope
             WHERE device_id = ?1 AND removed_in IS NULL ORDER BY household_id"
        ))?;
        let rows = stmt.query_map([device_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn grant_household(&self, device_id: &str, household_id: &str, grant: u64, seq: u64) -> Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO device_scope (device_id, household_id, granted_in, granted_seq, removed_in)
                 VALUES (?1, ?2, ?3, ?4, NULL)",
            )?
            .execute(params![device_id, household_id, grant as i64, seq as i64])?;
        Ok(())
    }

    fn remove_household(&self, device_id: &str, household_id: &str, grant: u64) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE device_scope SET removed_in = ?3 WHERE device_id = ?1 AND household_id = ?2")?
            .execute(params![device_id, household_id, grant as i64])?;
        Ok(())
    }

    fn hold_for_taking(&self, device_id: &str, household_id: &str, grant: u64) -> Result<()> {
        self.grant_household(device_id, household_id, grant, TAKING_ONLY as u64)
    }

    fn clear_device_scope(&self, device_id: &str) -> Result<()> {
        self.conn().prepare_cached("DELETE FROM device_scope WHERE device_id = ?1")?.execute([device_id])?;
        Ok(())
    }

    fn quarantined_change(&self, hash: &str) -> Result<Option<QuarantinedChange>> {
        Ok(self
            .conn()
            .prepare_cached(&format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE hash = ?1"))?
            .query_row([hash], quarantine_row)
            .optional()?)
    }

    fn quarantine(&self, q: &QuarantinedChange) -> Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO quarantine (hash, household_id, device_id, member_id, data, reason, at, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'held')",
            )?
            .execute(params![q.hash, q.household_id, q.device_id, q.member_id, q.bytes, q.reason, q.at_ms])?;
        Ok(())
    }

    fn held_reasons(&self) -> Result<Vec<String>> {
        self.strings("SELECT reason FROM quarantine WHERE status = 'held'", [])
    }

    fn quarantined(&self, status: Option<QuarantineStatus>) -> Result<Vec<QuarantinedChange>> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE ?1 IS NULL OR status = ?1 ORDER BY at, hash"
        ))?;
        let rows = stmt.query_map([status.map(|s| s.as_str())], quarantine_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn set_quarantine_status(&self, hash: &str, status: QuarantineStatus, by: &str, now_ms: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE quarantine SET status = ?2, decided_by = ?3, decided_at = ?4, told_in = NULL WHERE hash = ?1",
            params![hash, status.as_str(), by, now_ms],
        )?;
        Ok(())
    }

    fn set_quarantine_reason(&self, hash: &str, reason: &str) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE quarantine SET reason = ?2 WHERE hash = ?1 AND status = 'held'")?
            .execute([hash, reason])?;
        Ok(())
    }

    fn decisions_to_tell(&self, device_id: &str) -> Result<Vec<QuarantinedChange>> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE device_id = ?1 AND status != 'held' AND told_in IS NULL"
        ))?;
        let rows = stmt.query_map([device_id], quarantine_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn mark_told(&self, hash: &str, grant: u64) -> Result<()> {
        self.conn()
            .prepare_cached("UPDATE quarantine SET told_in = ?2 WHERE hash = ?1")?
            .execute(params![hash, grant as i64])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn an_edit_waits_for_a_write_lock_held_for_a_moment_elsewhere_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        // Another connection holds the write lock for a moment (as one recovering the
        // log's index does).
        let other = rusqlite::Connection::open(dir.path().join(STORE_FILE)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        // An admin edit reads, then writes. Begun without the lock, SQLite refused the
        // write at once ("database is locked"), without waiting.
        let tx = store.begin().unwrap();
        assert!(tx.branches().unwrap().is_empty());
        tx.put_branch(&Branch { id: "b1".into(), name: "第一支部".into() }).unwrap();
        tx.commit().unwrap();
        holder.join().unwrap();
        let tx = store.begin().unwrap();
        assert_eq!(tx.branches().unwrap().len(), 1);
    }

    #[test]
    fn committed_pages_reach_the_database_file_through_the_checkpoint_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let file = dir.path().join(STORE_FILE);
        let size = || std::fs::metadata(&file).unwrap().len();
        let before = size();
        // About 8 MB in 100 commits: far below the writer's own threshold (400 MB of log).
        for i in 0..100 {
            let tx = store.begin().unwrap();
            tx.put_branch(&Branch { id: format!("b{i}"), name: "支部".repeat(13_000) }).unwrap();
            tx.commit().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while size() < before + 6_000_000 {
            assert!(Instant::now() < deadline, "the log was not copied into the file: {} bytes", size());
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(store);
        let conn = rusqlite::Connection::open(&file).unwrap();
        let branches: i64 = conn.query_row("SELECT count(*) FROM branches", [], |r| r.get(0)).unwrap();
        assert_eq!(branches, 100);
    }

    #[test]
    fn a_store_from_a_newer_server_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let newer = (SERVER_MIGRATIONS.len() + 1).to_string();
        let conn = rusqlite::Connection::open(dir.path().join(STORE_FILE)).unwrap();
        conn.execute("UPDATE server_meta SET value = ?1 WHERE key = 'schema_version'", [&newer]).unwrap();
        let Err(e) = SqliteStore::open(dir.path()) else { panic!("a newer store opened") };
        assert!(e.to_string().contains(&format!("newer server (server schema version {newer}")), "{e}");
        let version: String =
            conn.query_row("SELECT value FROM server_meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(version, newer);
    }
}
