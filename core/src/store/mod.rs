//! The replica's SQLite file: document chunks, projection tables, migrations.
//!
//! Each household's document is a compacted snapshot plus incremental change chunks.
//! Projection tables (households, visits, issues, conflicts) are rewritten for a household
//! in the same transaction as its new chunk, so list screens and counts read plain rows
//! and never load Automerge.

pub mod migrations;
mod projection;

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::document::{operations_claimed, HouseholdDocument, View};
use crate::sync::protocol::MAX_REQUEST_OPERATIONS;
use crate::error::Result;

pub use projection::{IssueFilter, RecordTable, DONE_STATUSES};

/// Compact a household when it has no snapshot yet (a new or newly received document),
/// or when its increments outnumber this or outweigh the snapshot.
const MAX_INCREMENTS: i64 = 64;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// How compaction saves a household's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshots {
    /// With Automerge's per-column DEFLATE: the smaller file. Phones (the default).
    Compressed,
    /// Without it: about twice the bytes, but no compressor is set up per column, which
    /// was most of a compaction's cost. The sync server, which compacts thousands of
    /// households a minute.
    Uncompressed,
}

/// Whether a household's stored chunks should become one snapshot (`StoreTx::compaction_due`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    NotDue,
    /// It has no snapshot yet, or its increments outweigh its snapshot: loading it costs
    /// more than it would, and its chunks take more room.
    Due,
    /// Its increments outnumber `MAX_INCREMENTS`: compact it now, whoever is waiting.
    Overdue,
}

pub struct Store {
    conn: Connection,
    snapshots: Snapshots,
}

impl Store {
    /// Open (creating if needed) and migrate the file. WAL with `synchronous = FULL`:
    /// a write whose transaction committed survives a crash of the app or the phone.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The store, the projections and the sync server together use more distinct
        // statements than rusqlite's default cache of 16 holds; a miss re-parses the SQL.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrations::migrate(&mut conn)?;
        Ok(Store { conn, snapshots: Snapshots::Compressed })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", [key, value])?;
        Ok(())
    }

    pub fn clear_meta(&self, key: &str) -> Result<()> {
        self.conn.execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// The stored chunks of a household, concatenated in order; `None` if unknown.
    pub fn document_bytes(&self, household_id: &str) -> Result<Option<Vec<u8>>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT data FROM doc_chunks WHERE household_id = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([household_id])?;
        let mut bytes: Option<Vec<u8>> = None;
        while let Some(row) = rows.next()? {
            let chunk = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            bytes.get_or_insert_with(Vec::new).extend_from_slice(chunk);
        }
        Ok(bytes)
    }

    /// Every household with a stored document.
    pub fn document_ids(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT household_id FROM doc_chunks ORDER BY household_id")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Changes from peers still waiting for the changes they depend on.
    pub fn pending_changes(&self, household_id: &str) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self.conn.prepare_cached("SELECT data FROM pending_changes WHERE household_id = ?1")?;
        let rows = stmt.query_map([household_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
        Ok(rows)
    }

    pub fn households_with_pending_changes(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT household_id FROM pending_changes")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Document heads of every household, from the projection (no document is loaded).
    pub fn all_heads(&self) -> Result<Vec<(String, Vec<String>)>> {
        let mut stmt = self.conn.prepare_cached("SELECT household_id, heads FROM doc_heads ORDER BY household_id")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, heads_from_text(&r.get::<_, String>(1)?))))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// How many local changes wait to be pushed (unacknowledged, not quarantined).
    pub fn outbox_waiting(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM outbox WHERE quarantine_reason IS NULL")?
            .query_row([], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Local changes not yet acknowledged by the server and not quarantined, oldest
    /// first, up to about `max_bytes` and up to the operations a request may claim
    /// (`MAX_REQUEST_OPERATIONS`; at least one change).
    pub fn outbox_batch(&self, max_bytes: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT household_id, data FROM outbox WHERE quarantine_reason IS NULL ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        let (mut total, mut operations) = (0, 0);
        while let Some(row) = rows.next()? {
            let data: Vec<u8> = row.get(1)?;
            // Bytes that claim no count are refused by the server whatever the batch.
            let claimed = operations_claimed(&data).unwrap_or(0);
            if !out.is_empty() && (total + data.len() > max_bytes || operations + claimed > MAX_REQUEST_OPERATIONS) {
                break;
            }
            total += data.len();
            operations += claimed;
            out.push((row.get(0)?, data));
        }
        Ok(out)
    }

    /// The bytes of a household's unacknowledged local changes, oldest first.
    pub fn outbox_changes(&self, household_id: &str) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self.conn.prepare_cached("SELECT data FROM outbox WHERE household_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([household_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every unacknowledged local change: (hash, household, quarantine reason).
    pub fn outbox_entries(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let mut stmt = self.conn.prepare_cached("SELECT hash, household_id, quarantine_reason FROM outbox ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// A write transaction. It takes SQLite's write lock as it begins, waiting for it (the
    /// busy timeout) if another connection holds it for a moment. Begun without it, a
    /// transaction that reads and then writes is refused at once when the lock is held
    /// ("database is locked"): SQLite does not wait while a reader would become a writer.
    pub fn transaction(&mut self) -> Result<StoreTx<'_>> {
        Ok(StoreTx { tx: self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?, snapshots: self.snapshots })
    }

    /// How compactions save snapshots from now on.
    pub fn set_snapshots(&mut self, snapshots: Snapshots) {
        self.snapshots = snapshots;
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// One SQLite transaction: nothing is visible or durable until `commit` returns.
pub struct StoreTx<'a> {
    tx: Transaction<'a>,
    snapshots: Snapshots,
}

impl StoreTx<'_> {
    /// Append a household's new changes (`increment`) and rewrite the projection rows
    /// `view` covers. Compacts the household into one snapshot when its increments have
    /// grown.
    pub fn save_document(&self, doc: &mut HouseholdDocument, increment: &[u8], view: &View) -> Result<()> {
        if self.append_document(doc, increment, view)? != Compaction::NotDue {
            self.compact_document(doc)?;
        }
        Ok(())
    }

    /// `save_document` without the compaction: whether the household is due one, for the
    /// caller to make now or later (the sync server, once idle).
    pub fn append_document(&self, doc: &mut HouseholdDocument, increment: &[u8], view: &View) -> Result<Compaction> {
        let id = doc.id().to_string();
        if !increment.is_empty() {
            self.tx.prepare_cached(
                "INSERT INTO doc_chunks (household_id, kind, data) VALUES (?1, 'incremental', ?2)",
            )?
            .execute(params![id, increment])?;
        }
        let heads: Vec<String> = doc.heads().iter().map(|h| h.to_string()).collect();
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO doc_heads (household_id, heads) VALUES (?1, ?2)")?
            .execute(params![id, heads.join(",")])?;
        projection::write(&self.tx, &id, view)?;
        self.compaction_due(&id)
    }

    /// The heads of a household's stored document (hex), as its last save wrote them,
    /// without loading it.
    pub fn document_heads(&self, household_id: &str) -> Result<Option<Vec<String>>> {
        let heads: Option<String> = self
            .tx
            .prepare_cached("SELECT heads FROM doc_heads WHERE household_id = ?1")?
            .query_row([household_id], |r| r.get(0))
            .optional()?;
        Ok(heads.as_deref().map(heads_from_text))
    }

    /// Whether a household's stored increments have grown enough to be compacted.
    pub fn compaction_due(&self, household_id: &str) -> Result<Compaction> {
        let (increments, increment_bytes, snapshot_bytes): (i64, i64, i64) = self
            .tx
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE kind = 'incremental'),
                        coalesce(sum(length(data)) FILTER (WHERE kind = 'incremental'), 0),
                        coalesce(sum(length(data)) FILTER (WHERE kind = 'snapshot'), 0)
                 FROM doc_chunks WHERE household_id = ?1",
            )?
            .query_row([household_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        // Without a snapshot, any increment outweighs it.
        Ok(if increments > MAX_INCREMENTS {
            Compaction::Overdue
        } else if increment_bytes > snapshot_bytes {
            Compaction::Due
        } else {
            Compaction::NotDue
        })
    }

    /// The households that may be due a compaction (`compaction_due` says which are):
    /// those with an increment (a household without a snapshot has one). The sync server
    /// looks for them when it starts, since it remembers the ones it left for later only
    /// in memory.
    pub fn households_maybe_due_compaction(&self) -> Result<Vec<String>> {
        let mut stmt = self.tx.prepare("SELECT DISTINCT household_id FROM doc_chunks WHERE kind = 'incremental'")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Replace a household's stored chunks with one snapshot of `doc`, which must hold
    /// everything stored.
    pub fn compact_document(&self, doc: &mut HouseholdDocument) -> Result<()> {
        let snapshot = match self.snapshots {
            Snapshots::Compressed => doc.save(),
            Snapshots::Uncompressed => doc.save_uncompressed(),
        };
        self.replace_with_snapshot(doc.id(), &snapshot)
    }

    fn replace_with_snapshot(&self, household_id: &str, snapshot: &[u8]) -> Result<()> {
        self.tx.prepare_cached("DELETE FROM doc_chunks WHERE household_id = ?1")?.execute([household_id])?;
        self.tx
            .prepare_cached("INSERT INTO doc_chunks (household_id, kind, data) VALUES (?1, 'snapshot', ?2)")?
            .execute(params![household_id, snapshot])?;
        Ok(())
    }

    /// Replace the set of changes waiting for dependencies for one household.
    pub fn set_pending_changes(&self, household_id: &str, changes: &[(String, Vec<u8>)]) -> Result<()> {
        self.tx.prepare_cached("DELETE FROM pending_changes WHERE household_id = ?1")?.execute([household_id])?;
        let mut insert = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO pending_changes (household_id, hash, data) VALUES (?1, ?2, ?3)")?;
        for (hash, data) in changes {
            insert.execute(params![household_id, hash, data])?;
        }
        Ok(())
    }

    pub fn clear_meta(&self, key: &str) -> Result<()> {
        self.tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", [key, value])?;
        Ok(())
    }

    /// Keep local changes until the sync server acknowledges them.
    pub fn add_to_outbox(&self, household_id: &str, changes: &[(String, Vec<u8>)]) -> Result<()> {
        let mut insert = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO outbox (hash, household_id, data) VALUES (?1, ?2, ?3)")?;
        for (hash, data) in changes {
            insert.execute(params![hash, household_id, data])?;
        }
        Ok(())
    }

    /// Changes a reconciliation found the server lacks: pushed on the next request, even
    /// one the server had quarantined. A server that lacks the change has lost its
    /// quarantine record too (it was restored from an older backup), and checks it again.
    pub fn push_again(&self, household_id: &str, changes: &[(String, Vec<u8>)]) -> Result<()> {
        self.add_to_outbox(household_id, changes)?;
        let mut clear = self.tx.prepare_cached("UPDATE outbox SET quarantine_reason = NULL WHERE hash = ?1")?;
        for (hash, _) in changes {
            clear.execute([hash])?;
        }
        Ok(())
    }

    /// The household an outbox change belongs to.
    pub fn outbox_household(&self, hash: &str) -> Result<Option<String>> {
        Ok(self
            .tx
            .prepare_cached("SELECT household_id FROM outbox WHERE hash = ?1")?
            .query_row([hash], |r| r.get(0))
            .optional()?)
    }

    /// Whether the outbox holds changes to the household the server has not been sent or
    /// not answered (quarantined ones aside).
    pub fn unsent_changes_to(&self, household_id: &str) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE household_id = ?1 AND quarantine_reason IS NULL)")?
            .query_row([household_id], |r| r.get(0))?)
    }

    /// The server merged this change: forget it.
    pub fn acknowledge(&self, hash: &str) -> Result<()> {
        self.tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?.execute([hash])?;
        Ok(())
    }

    /// The server quarantined this change: keep it, with the reason, and stop resending it.
    pub fn quarantine(&self, hash: &str, reason: &str) -> Result<()> {
        self.tx.prepare_cached("UPDATE outbox SET quarantine_reason = ?2 WHERE hash = ?1")?.execute([hash, reason])?;
        Ok(())
    }

    /// Remove a household's document and projection rows (it left this device's scope).
    pub fn remove_household(&self, household_id: &str) -> Result<()> {
        for (table, key) in [
            ("doc_chunks", "household_id"),
            ("doc_heads", "household_id"),
            ("pending_changes", "household_id"),
            ("households", "id"),
            ("household_members", "household_id"),
            ("visits", "household_id"),
            ("issues", "household_id"),
            ("conflicts", "household_id"),
        ] {
            self.tx.prepare_cached(&format!("DELETE FROM {table} WHERE {key} = ?1"))?.execute([household_id])?;
        }
        Ok(())
    }

    /// The open transaction, for a host (the sync server) that keeps tables of its own
    /// in the same file and commits them atomically with the documents.
    pub fn connection(&self) -> &Connection {
        &self.tx
    }

    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}

/// Heads as `doc_heads` keeps them: hex, separated by commas.
fn heads_from_text(text: &str) -> Vec<String> {
    text.split(',').filter(|h| !h.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    //! A request's changes stay within what a request may claim.

    use automerge::legacy::{Key, ObjectId, Op, OpType, SortedVec};
    use automerge::{ActorId, ScalarValue};

    use super::*;
    use crate::document::fixtures::change_of;

    #[test]
    fn a_batch_stops_before_its_changes_claim_more_operations_than_a_request_may() {
        let put_null =
            Op { action: OpType::Put(ScalarValue::Null), obj: ObjectId::Root, key: Key::Map("x".into()), pred: SortedVec::new(), insert: false };
        // Changes of a few dozen bytes, each claiming 99,999 operations.
        let changes: Vec<(String, Vec<u8>)> = (0..21)
            .map(|_| change_of(ActorId::random(), 1, vec![], vec![put_null.clone(); 99_999]))
            .map(|c| (c.hash().to_string(), c.raw_bytes().to_vec()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("r.sqlite3")).unwrap();
        let tx = store.transaction().unwrap();
        tx.add_to_outbox("h", &changes).unwrap();
        tx.commit().unwrap();
        let batch = store.outbox_batch(usize::MAX).unwrap();
        assert_eq!(batch.len(), 20, "20 × 99,999 claimed operations fit in 2,000,000");
        let claimed: u64 = batch.iter().map(|(_, bytes)| operations_claimed(bytes).unwrap()).sum();
        assert!(claimed <= MAX_REQUEST_OPERATIONS);
        assert_eq!(store.outbox_batch(1).unwrap().len(), 1, "at least one change");
    }
}
