//! The replica a phone (or a coordinator's machine) holds: the API apps call.
//!
//! Every write is one Automerge change and one SQLite transaction (new chunk plus
//! projection rows); the call returns only after that transaction committed. Reads of
//! lists and counts come from projection tables; reads of one record load its household's
//! document (kept in a small cache). A `Replica` is `Send + Sync`: calls are serialised on
//! an internal lock, and listeners run after it is released.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::{ActorId, Change, ChangeHash};

use crate::document::{decode_change, rules, Author, HouseholdDocument, Scope, View};
use crate::error::{Error, Result};
use crate::exchange::{HouseholdChanges, HouseholdHeads, ImportReport};
use crate::listener::{ChangeEvent, ChangeListener, ChangeOrigin, Listeners, Subscription};
use crate::model::*;
use crate::store::{IssueFilter, RecordTable, Store, StoreTx};

/// How many household documents stay loaded in memory.
const CACHE_CAPACITY: usize = 512;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Changes as outbox rows: (hex hash, encoded change).
/// A change for the outbox: its hash and bytes.
pub(crate) type OutboxEntry = (String, Vec<u8>);

pub(crate) fn outbox_entries(changes: Vec<Change>) -> Vec<OutboxEntry> {
    changes.into_iter().map(|c| (c.hash().to_string(), c.raw_bytes().to_vec())).collect()
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) author: Author,
    pub(crate) actor: ActorId,
    pub(crate) cache: HashMap<String, HouseholdDocument>,
    /// The member's role as the server last said (`ROLE_KEY`); `None` before the first
    /// sync.
    pub(crate) role: Option<Role>,
}

/// Where the member's role, as the server last said, is kept in the replica's meta.
pub(crate) const ROLE_KEY: &str = "role";

impl Inner {
    /// Take a household's document out of the cache (or load it). Put it back with
    /// `keep` once the edit is durable; a failed edit simply drops it.
    pub(crate) fn take(&mut self, household_id: &str) -> Result<HouseholdDocument> {
        if let Some(doc) = self.cache.remove(household_id) {
            return Ok(doc);
        }
        let bytes = self.store.document_bytes(household_id)?.ok_or_else(|| Error::not_found("household", household_id))?;
        HouseholdDocument::load(household_id, &bytes, &self.actor)
    }

    pub(crate) fn keep(&mut self, doc: HouseholdDocument) {
        if self.cache.len() >= CACHE_CAPACITY {
            if let Some(victim) = self.cache.keys().next().cloned() {
                self.cache.remove(&victim);
            }
        }
        self.cache.insert(doc.id().to_string(), doc);
    }

    fn read<T>(&mut self, household_id: &str, f: impl FnOnce(&mut HouseholdDocument) -> Result<T>) -> Result<T> {
        let mut doc = self.take(household_id)?;
        let out = f(&mut doc);
        self.keep(doc);
        out
    }

    /// Check the replica's own new `changes`, already in `doc`, by the rules the server
    /// will check them by (`document::rules`), for the member's role. Before the first
    /// sync the role is unknown: the schema is checked (as it is for every role; an
    /// admin's changes are checked for nothing more), and who may change what is left to
    /// the server. The records the last change touched and their projection, as the
    /// check read them (`None`: nothing checked, or the whole document).
    fn check_own(&self, doc: &mut HouseholdDocument, changes: &[Change]) -> Result<Option<(Scope, View)>> {
        let role = self.role.unwrap_or(Role::Admin);
        let mut read = None;
        for change in changes {
            let (scope, view) = rules::check_change(doc, change, &self.author.member_id, role)
                .map_err(|reason| Error::NotAllowed { reason })?;
            read = view.map(|view| (scope, view));
        }
        Ok(read.filter(|_| changes.len() == 1))
    }

    fn household_of(&self, table: RecordTable, id: &str) -> Result<String> {
        let what = match table {
            RecordTable::Visits => "visit",
            RecordTable::Issues => "issue",
        };
        self.store.household_of(table, id)?.ok_or_else(|| Error::not_found(what, id))
    }
}

/// A member's offline replica of their households, in one SQLite file.
pub struct Replica {
    inner: Mutex<Inner>,
    pub(crate) listeners: Arc<Listeners>,
    /// Held for the whole of a sync (`sync::client`): a second sync of the replica waits
    /// for the first, instead of both sending the same position and applying their answers
    /// out of order (the server would then send everything of the first again).
    pub(crate) syncing: futures_util::lock::Mutex<()>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Replica")
            .field("member_id", &inner.author.member_id)
            .field("device_id", &inner.author.device_id)
            .finish()
    }
}

impl Replica {
    /// Open (or create) the replica file at `path` for a member on a device. A file
    /// belongs to one member and one device; opening it as another is refused.
    pub fn open(path: impl AsRef<Path>, member_id: &str, device_id: &str) -> Result<Replica> {
        if member_id.trim().is_empty() || device_id.trim().is_empty() {
            return Err(Error::invalid("党员编号和设备编号不能为空", "member id and device id must not be empty"));
        }
        let store = Store::open(path.as_ref())?;
        for (key, value) in [("member_id", member_id), ("device_id", device_id)] {
            match store.meta(key)? {
                Some(stored) if stored != value => {
                    return Err(Error::invalid(
                        format!("此数据文件属于 {key} = {stored}"),
                        format!("this replica file belongs to {key} {stored:?}, not {value:?}"),
                    ))
                }
                Some(_) => {}
                None => store.set_meta(key, value)?,
            }
        }
        let actor = match store.meta("actor_id")? {
            Some(hex) => ActorId::from(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                    .collect::<std::result::Result<Vec<u8>, _>>()
                    .map_err(|e| Error::Storage { reason: format!("bad actor id in meta: {e}") })?,
            ),
            None => {
                let actor = ActorId::random();
                store.set_meta("actor_id", &actor.to_hex_string())?;
                actor
            }
        };
        let author = Author { member_id: member_id.to_string(), device_id: device_id.to_string() };
        let role = store.meta(ROLE_KEY)?.as_deref().and_then(Role::parse);
        let mut inner = Inner { store, author, actor, cache: HashMap::new(), role };
        if inner.store.meta("rebuild_projections")?.is_some() {
            Self::rebuild_projections(&mut inner)?;
        }
        Ok(Replica { inner: Mutex::new(inner), listeners: Arc::default(), syncing: Default::default() })
    }

    /// Rewrite every projection from the documents (after a migration that changed them).
    /// A corrupt household keeps its old rows and does not stop the others.
    fn rebuild_projections(inner: &mut Inner) -> Result<()> {
        let ids = inner.store.document_ids()?;
        let actor = inner.actor.clone();
        let mut docs = Vec::new();
        for id in ids {
            let Some(bytes) = inner.store.document_bytes(&id)? else { continue };
            match HouseholdDocument::load(&id, &bytes, &actor) {
                Ok(doc) => docs.push(doc),
                Err(e) => tracing::warn!(household = %id, error = %e, "cannot rebuild projection"),
            }
        }
        let tx = inner.store.transaction()?;
        for doc in &mut docs {
            match doc.view(&Scope::Everything) {
                Ok(view) => tx.save_document(doc, &[], &view)?,
                Err(e) => tracing::warn!(household = %doc.id(), error = %e, "cannot rebuild projection"),
            }
        }
        tx.clear_meta("rebuild_projections")?;
        tx.commit()
    }

    /// Call once after this file was restored from a backup, before any edit: later
    /// changes are made under a new Automerge actor. The file's earlier life may have gone
    /// on writing under the old one after the backup was taken; the restored file's edits
    /// would then take the same sequence numbers, and neither this phone nor the server
    /// could take the other's changes to that household (every sync of the phone would
    /// fail). Costs one more actor (16 bytes) in each household edited afterwards. (A new
    /// actor at every opening would need no call, but made the district bench's first
    /// sync 17% bigger: `docs/sync-benchmark.md`.)
    pub fn restored_from_backup(&self) -> Result<()> {
        let mut inner = self.lock();
        let actor = ActorId::random();
        inner.store.set_meta("actor_id", &actor.to_hex_string())?;
        inner.actor = actor;
        // The documents in memory write under the old actor.
        inner.cache.clear();
        Ok(())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn member_id(&self) -> String {
        self.lock().author.member_id.clone()
    }

    pub fn device_id(&self) -> String {
        self.lock().author.device_id.clone()
    }

    /// The member's role as the server said at the last sync; `None` before the first.
    /// A member's own edits are checked by the member's rules before they are kept.
    pub fn role(&self) -> Option<Role> {
        self.lock().role
    }

    /// Run one edit on a household's document and make it durable before returning.
    /// `scope` names the records the edit touched, whose projection rows are rewritten.
    /// An edit the member's rules refuse is dropped with the reason (`Error::NotAllowed`):
    /// nothing is kept, nothing waits for the server.
    fn edit<T>(
        &self,
        household_id: &str,
        scope: impl FnOnce(&T) -> Scope,
        f: impl FnOnce(&mut HouseholdDocument, &Author, i64) -> Result<T>,
    ) -> Result<T> {
        let out = {
            let mut inner = self.lock();
            let mut doc = inner.take(household_id)?;
            let before = doc.heads();
            let author = inner.author.clone();
            let out = f(&mut doc, &author, now_ms());
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    // A change made before the failure is not stored: the copy holding it
                    // goes, and the next edit starts from the store.
                    if doc.heads() == before {
                        inner.keep(doc);
                    }
                    return Err(e);
                }
            };
            if doc.heads() == before {
                inner.keep(doc);
                return Ok(out);
            }
            let changes = doc.changes_since(&before);
            let checked = inner.check_own(&mut doc, &changes)?;
            let increment = doc.save_after(&before);
            // The check read the records the edit touched already.
            let scope = scope(&out);
            let view = match checked {
                Some((read, view)) if read == scope => view,
                _ => doc.view(&scope)?,
            };
            let outgoing = outbox_entries(changes);
            let tx = inner.store.transaction()?;
            tx.save_document(&mut doc, &increment, &view)?;
            tx.add_to_outbox(household_id, &outgoing)?;
            tx.commit()?;
            inner.keep(doc);
            out
        };
        self.listeners
            .notify(ChangeEvent { household_ids: vec![household_id.to_string()], origin: ChangeOrigin::Local });
        Ok(out)
    }

    // ----- households -------------------------------------------------------------

    /// Create a household (coordinators and the server do this; members receive them).
    pub fn create_household(&self, new: &NewHousehold) -> Result<Household> {
        let household = {
            let mut inner = self.lock();
            let author = inner.author.clone();
            let mut doc = HouseholdDocument::create(&inner.actor, &author, now_ms(), new)?;
            let changes = doc.changes_since(&[]);
            inner.check_own(&mut doc, &changes)?;
            let bytes = doc.save();
            let view = doc.view(&Scope::Everything)?;
            let outgoing = outbox_entries(changes);
            let tx = inner.store.transaction()?;
            tx.save_document(&mut doc, &bytes, &view)?;
            tx.add_to_outbox(doc.id(), &outgoing)?;
            tx.commit()?;
            let household = doc.household()?;
            inner.keep(doc);
            household
        };
        self.listeners
            .notify(ChangeEvent { household_ids: vec![household.id.clone()], origin: ChangeOrigin::Local });
        Ok(household)
    }

    /// Every household on this replica, with visit and open-issue counts (no document is loaded).
    pub fn list_households(&self) -> Result<Vec<HouseholdSummary>> {
        self.lock().store.household_summaries()
    }

    pub fn household(&self, household_id: &str) -> Result<Household> {
        self.lock().read(household_id, |doc| doc.household())
    }

    pub fn update_household(&self, household_id: &str, update: &HouseholdUpdate) -> Result<Household> {
        self.edit(household_id, |_| Scope::household(), |doc, a, now| {
            doc.update_household(a, now, update)?;
            doc.household()
        })
    }

    pub fn add_guardian(&self, household_id: &str, guardian: &NewGuardian) -> Result<Household> {
        self.edit(household_id, |_| Scope::household(), |doc, a, now| {
            doc.add_guardian(a, now, guardian)?;
            doc.household()
        })
    }

    pub fn update_guardian(&self, household_id: &str, guardian_id: &str, update: &GuardianUpdate) -> Result<Household> {
        self.edit(household_id, |_| Scope::household(), |doc, a, now| {
            doc.update_guardian(a, now, guardian_id, update)?;
            doc.household()
        })
    }

    pub fn add_student(&self, household_id: &str, student: &NewStudent) -> Result<Household> {
        self.edit(household_id, |_| Scope::household(), |doc, a, now| {
            doc.add_student(a, now, student)?;
            doc.household()
        })
    }

    /// Fix a member to a household, or release them (`assigned = false`).
    pub fn set_member_assigned(&self, household_id: &str, member_id: &str, assigned: bool) -> Result<Household> {
        self.edit(household_id, |_| Scope::household(), |doc, a, now| {
            doc.set_member_assigned(a, now, member_id, assigned)?;
            doc.household()
        })
    }

    // ----- visits -------------------------------------------------------------------

    pub fn record_visit(&self, visit: &NewVisit) -> Result<Visit> {
        self.edit(&visit.household_id, |v: &Visit| Scope::visit(&v.id), |doc, a, now| {
            let id = doc.record_visit(a, now, visit)?;
            doc.visit(&id)
        })
    }

    /// Every visit to a household, deleted ones included (see `Visit::deleted`).
    pub fn visits(&self, household_id: &str) -> Result<Vec<Visit>> {
        self.lock().read(household_id, |doc| doc.visits())
    }

    pub fn visit(&self, visit_id: &str) -> Result<Visit> {
        let mut inner = self.lock();
        let household_id = inner.household_of(RecordTable::Visits, visit_id)?;
        inner.read(&household_id, |doc| doc.visit(visit_id))
    }

    /// Whether the member may change, delete or restore this visit, by the role the last
    /// sync gave (so that an app shows another member's visit read-only); `true` before
    /// the first sync, when the server alone checks.
    pub fn may_edit_visit(&self, visit_id: &str) -> Result<bool> {
        let visit = self.visit(visit_id)?;
        let inner = self.lock();
        Ok(inner.role.is_none_or(|role| rules::may_change_visit(&visit, &inner.author.member_id, role)))
    }

    fn edit_visit(
        &self,
        visit_id: &str,
        f: impl FnOnce(&mut HouseholdDocument, &Author, i64) -> Result<()>,
    ) -> Result<Visit> {
        let household_id = self.lock().household_of(RecordTable::Visits, visit_id)?;
        self.edit(&household_id, |_| Scope::visit(visit_id), |doc, a, now| {
            f(doc, a, now)?;
            doc.visit(visit_id)
        })
    }

    pub fn update_visit(&self, visit_id: &str, update: &VisitUpdate) -> Result<Visit> {
        self.edit_visit(visit_id, |doc, a, now| doc.update_visit(a, now, visit_id, update))
    }

    /// Soft-delete a visit: it stays in the document with who deleted it and when.
    pub fn delete_visit(&self, visit_id: &str) -> Result<Visit> {
        self.edit_visit(visit_id, |doc, a, now| doc.set_visit_deleted(a, now, visit_id, true))
    }

    pub fn restore_visit(&self, visit_id: &str) -> Result<Visit> {
        self.edit_visit(visit_id, |doc, a, now| doc.set_visit_deleted(a, now, visit_id, false))
    }

    // ----- issues -------------------------------------------------------------------

    pub fn raise_issue(&self, issue: &NewIssue) -> Result<Issue> {
        self.edit(&issue.household_id, |i: &Issue| Scope::issue(&i.id), |doc, a, now| {
            let id = doc.raise_issue(a, now, issue)?;
            doc.issue(&id)
        })
    }

    pub fn issue(&self, issue_id: &str) -> Result<Issue> {
        let mut inner = self.lock();
        let household_id = inner.household_of(RecordTable::Issues, issue_id)?;
        inner.read(&household_id, |doc| doc.issue(issue_id))
    }

    /// Every issue of a household, deleted ones included.
    pub fn issues(&self, household_id: &str) -> Result<Vec<Issue>> {
        self.lock().read(household_id, |doc| doc.issues())
    }

    fn edit_issue(
        &self,
        issue_id: &str,
        f: impl FnOnce(&mut HouseholdDocument, &Author, i64) -> Result<()>,
    ) -> Result<Issue> {
        let household_id = self.lock().household_of(RecordTable::Issues, issue_id)?;
        self.edit(&household_id, |_| Scope::issue(issue_id), |doc, a, now| {
            f(doc, a, now)?;
            doc.issue(issue_id)
        })
    }

    pub fn update_issue(&self, issue_id: &str, update: &IssueUpdate) -> Result<Issue> {
        self.edit_issue(issue_id, |doc, a, now| doc.update_issue(a, now, issue_id, update))
    }

    /// Move a problem along its lifecycle; an invalid move is refused with its reason.
    pub fn transition_issue(&self, issue_id: &str, to: &IssueStatus, reason: &str) -> Result<Issue> {
        self.edit_issue(issue_id, |doc, a, now| doc.transition_issue(a, now, issue_id, to, reason))
    }

    pub fn comment_on_issue(&self, issue_id: &str, text: &str) -> Result<Issue> {
        self.edit_issue(issue_id, |doc, a, now| doc.comment_on_issue(a, now, issue_id, text).map(|_| ()))
    }

    pub fn delete_issue(&self, issue_id: &str) -> Result<Issue> {
        self.edit_issue(issue_id, |doc, a, now| doc.set_issue_deleted(a, now, issue_id, true))
    }

    pub fn restore_issue(&self, issue_id: &str) -> Result<Issue> {
        self.edit_issue(issue_id, |doc, a, now| doc.set_issue_deleted(a, now, issue_id, false))
    }

    /// Problems still being handled, earliest due first.
    pub fn open_issues(&self) -> Result<Vec<IssueSummary>> {
        self.lock().store.issue_summaries(&IssueFilter::Open)
    }

    /// Open problems whose due date is before `today` (`YYYY-MM-DD`).
    pub fn overdue_issues(&self, today: &str) -> Result<Vec<IssueSummary>> {
        crate::document::check_date("today/今天", today)?;
        self.lock().store.issue_summaries(&IssueFilter::OverdueOn(today.to_string()))
    }

    /// Counts per community for coordinators, as of `today` (`YYYY-MM-DD`).
    pub fn overview(&self, today: &str) -> Result<Vec<CommunityOverview>> {
        crate::document::check_date("today/今天", today)?;
        self.lock().store.overview(today)
    }

    // ----- conflicts and history ------------------------------------------------------

    /// Open conflicts, of one household or of all (read from the projection).
    pub fn conflicts(&self, household_id: Option<&str>) -> Result<Vec<Conflict>> {
        self.lock().store.conflicts(household_id)
    }

    /// Settle a conflict by choosing one of its competing values.
    pub fn resolve_conflict(&self, household_id: &str, path: &str, chosen_value: &str) -> Result<()> {
        self.edit(household_id, |_| Scope::of_path(path), |doc, a, now| doc.resolve_conflict(a, now, path, chosen_value))
    }

    /// Who changed what in a household, and when; oldest first.
    pub fn history(&self, household_id: &str) -> Result<Vec<HistoryEntry>> {
        self.lock().read(household_id, |doc| Ok(doc.history()))
    }

    /// The whole document of a household as JSON (diagnostics, tests, export).
    pub fn household_json(&self, household_id: &str) -> Result<serde_json::Value> {
        self.lock().read(household_id, |doc| Ok(doc.to_json()))
    }

    // ----- exchange with peers --------------------------------------------------------

    /// The heads of every household document here, for a peer to compute what we lack.
    pub fn heads(&self) -> Result<Vec<HouseholdHeads>> {
        Ok(self
            .lock()
            .store
            .all_heads()?
            .into_iter()
            .map(|(household_id, heads)| HouseholdHeads { household_id, heads })
            .collect())
    }

    /// The changes a peer lacks, given its heads. Households the peer did not mention are
    /// sent whole; households where its heads equal ours are skipped without loading them.
    pub fn export_changes(&self, peer: &[HouseholdHeads]) -> Result<Vec<HouseholdChanges>> {
        let peer: HashMap<&str, &Vec<String>> = peer.iter().map(|h| (h.household_id.as_str(), &h.heads)).collect();
        let mut inner = self.lock();
        let mut out = Vec::new();
        for (household_id, ours) in inner.store.all_heads()? {
            let theirs = peer.get(household_id.as_str()).map(|h| h.as_slice()).unwrap_or_default();
            let mut a: Vec<&String> = ours.iter().collect();
            let mut b: Vec<&String> = theirs.iter().collect();
            a.sort();
            b.sort();
            if a == b {
                continue;
            }
            let their_heads: Vec<ChangeHash> = theirs.iter().filter_map(|h| h.parse().ok()).collect();
            let changes = inner.read(&household_id, |doc| {
                Ok(doc.changes_since(&their_heads).into_iter().map(|c| c.raw_bytes().to_vec()).collect::<Vec<_>>())
            })?;
            if !changes.is_empty() {
                out.push(HouseholdChanges { household_id, changes });
            }
        }
        Ok(out)
    }

    /// Import changes from a peer. Every change is decoded first: one that does not decode
    /// refuses the whole import and nothing is stored. Changes whose dependencies have not
    /// arrived are kept (durably) and applied when they do.
    pub fn import_changes(&self, batches: &[HouseholdChanges]) -> Result<ImportReport> {
        let mut decoded: Vec<(String, Vec<Change>)> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        for batch in batches {
            if batch.household_id.trim().is_empty() {
                return Err(Error::invalid("住户编号为空", "a change batch has an empty household id"));
            }
            let mut changes = Vec::with_capacity(batch.changes.len());
            for (i, bytes) in batch.changes.iter().enumerate() {
                changes.push(decode_change(bytes.clone()).map_err(|e| {
                    Error::invalid(
                        format!("住户 {} 的第 {} 个变更无法解码", batch.household_id, i + 1),
                        format!("change {} of household {} cannot be decoded: {e}", i + 1, batch.household_id),
                    )
                })?);
            }
            match position.get(batch.household_id.as_str()) {
                Some(&i) => decoded[i].1.extend(changes),
                None => {
                    position.insert(&batch.household_id, decoded.len());
                    decoded.push((batch.household_id.clone(), changes));
                }
            }
        }
        // Documents are taken out of the cache while they change; a failed import drops
        // them, so memory never holds changes that were not committed.
        let report = Self::apply_imports(&mut self.lock(), decoded)?;
        self.listeners
            .notify(ChangeEvent { household_ids: report.households_changed.clone(), origin: ChangeOrigin::Remote });
        Ok(report)
    }

    fn apply_imports(inner: &mut Inner, decoded: Vec<(String, Vec<Change>)>) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        let decoded = decoded.into_iter().map(|(id, changes)| (id, Incoming::Changes(changes))).collect();
        let mut prepared = prepare_imports(inner, decoded, &mut report, None)?;
        let tx = inner.store.transaction()?;
        write_imports(&tx, &mut prepared, &mut report)?;
        tx.commit()?;
        keep_imports(inner, prepared);
        Ok(report)
    }

    // ----- notifications ----------------------------------------------------------------

    /// Be told of every committed change; the listener stops when the returned
    /// subscription is dropped or cancelled.
    pub fn subscribe(&self, listener: Arc<dyn ChangeListener>) -> Subscription {
        self.listeners.add(listener)
    }
}

/// A household's document with imported changes applied in memory, not yet stored.
pub(crate) struct PreparedImport {
    doc: HouseholdDocument,
    increment: Vec<u8>,
    waiting: Vec<(String, Vec<u8>)>,
    view: View,
    /// The stored copy could not be read: it is replaced, not added to.
    replaces: bool,
}

impl PreparedImport {
    /// If this is `household_id`'s import: the changes a peer at `heads` lacks, with what
    /// arrived applied.
    pub(crate) fn changes_since(&mut self, household_id: &str, heads: &[ChangeHash]) -> Option<Vec<Change>> {
        (self.doc.id() == household_id).then(|| self.doc.changes_since(heads))
    }
}

/// What arrived for one household.
pub(crate) enum Incoming {
    /// Changes, in any order; those whose dependencies are missing wait.
    Changes(Vec<Change>),
    /// The whole document, as saved (a household new to this replica, or rebuilt from
    /// the server's copy), and loaded from those bytes with the replica's actor.
    Whole { doc: HouseholdDocument, saved: Vec<u8> },
}

/// Apply what arrived to the documents in memory (with the changes that were waiting
/// for it). Nothing is stored until `write_imports`. `report.changes_applied` does not
/// count the changes of a whole document stored as it came.
///
/// A household whose stored copy cannot be read takes a whole document in its place
/// (the server's copy: every change of the phone's own is in the outbox until the server
/// has it). Changes to it are left out and the household is put in `unreadable`, for the
/// caller to ask for it whole; without `unreadable`, they fail the import.
pub(crate) fn prepare_imports(
    inner: &mut Inner,
    decoded: Vec<(String, Incoming)>,
    report: &mut ImportReport,
    mut unreadable: Option<&mut Vec<String>>,
) -> Result<Vec<PreparedImport>> {
    let mut prepared = Vec::new();
    for (household_id, incoming) in decoded {
        let mut replaces = false;
        let held = match inner.take(&household_id) {
            // Empty: the household was heard of only through changes still waiting.
            Ok(mut doc) => (!doc.heads().is_empty()).then_some(doc),
            Err(Error::NotFound { .. }) => None,
            Err(Error::CorruptHousehold { .. }) if matches!(incoming, Incoming::Whole { .. }) => {
                replaces = true;
                None
            }
            Err(e @ Error::CorruptHousehold { .. }) => match unreadable.as_deref_mut() {
                Some(unreadable) => {
                    tracing::warn!(household = %household_id, "{e}: asking the server for the household whole");
                    unreadable.push(household_id);
                    continue;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let (mut doc, mut increment, mut changes) = match (held, incoming) {
            // New here: the document as it came, stored as it is, its history not applied
            // again change by change (a coordinator's first sync is thousands of these).
            (None, Incoming::Whole { doc, saved }) => (doc, saved, Vec::new()),
            (held, incoming) => {
                let changes = match incoming {
                    Incoming::Changes(changes) => changes,
                    Incoming::Whole { mut doc, .. } => doc.changes_since(&[]),
                };
                let doc = held.unwrap_or_else(|| HouseholdDocument::empty(&household_id, &inner.actor));
                (doc, Vec::new(), changes)
            }
        };
        changes.extend(inner.store.pending_changes(&household_id)?.into_iter().filter_map(|b| Change::from_bytes(b).ok()));
        if replaces {
            // The phone's own changes the server may not have yet: kept on the new copy.
            let own = inner.store.outbox_changes(&household_id)?;
            changes.extend(own.into_iter().filter_map(|b| Change::from_bytes(b).ok()));
        }
        let before = doc.heads();
        let applied = doc.apply(changes)?;
        report.changes_applied += applied.applied as u32;
        report.changes_waiting += applied.waiting.len() as u32;
        let waiting = outbox_entries(applied.waiting);
        increment.extend(doc.save_after(&before));
        let view = if increment.is_empty() { View::default() } else { doc.view(&Scope::Everything)? };
        prepared.push(PreparedImport { doc, increment, waiting, view, replaces });
    }
    Ok(prepared)
}

pub(crate) fn write_imports(tx: &StoreTx<'_>, prepared: &mut [PreparedImport], report: &mut ImportReport) -> Result<()> {
    for p in prepared {
        if p.replaces {
            tx.remove_household(p.doc.id())?;
        }
        tx.set_pending_changes(p.doc.id(), &p.waiting)?;
        if !p.increment.is_empty() {
            tx.save_document(&mut p.doc, &p.increment, &p.view)?;
            report.households_changed.push(p.doc.id().to_string());
        }
    }
    Ok(())
}

/// After the transaction committed: keep the documents loaded.
pub(crate) fn keep_imports(inner: &mut Inner, prepared: Vec<PreparedImport>) {
    for p in prepared {
        inner.keep(p.doc);
    }
}

#[cfg(test)]
mod tests {
    //! An edit that fails after changing the document keeps nothing of it.

    use super::*;
    use crate::document::fixtures::new_household;

    #[test]
    fn an_edit_that_fails_after_changing_the_document_leaves_nothing_of_it_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("r.sqlite3"), "sec-1", "d-1").unwrap();
        let h = replica.create_household(&new_household()).unwrap();
        let renamed = HouseholdUpdate { family_name: Some("改名".into()), ..HouseholdUpdate::default() };
        let failed = replica.edit(
            &h.id,
            |_: &()| Scope::household(),
            |doc, author, now| {
                doc.update_household(author, now, &renamed)?;
                Err(Error::invalid("读回失败", "reading it back failed"))
            },
        );
        assert!(failed.is_err());
        assert_eq!(replica.household(&h.id).unwrap(), h, "the change that failed is not shown");
        assert_eq!(replica.pending_changes().unwrap().len(), 1, "only the creation waits for the server");
        // The next edit depends on what was stored, not on the change that failed.
        replica.update_household(&h.id, &renamed).unwrap();
        let pending = replica.lock().store.outbox_batch(usize::MAX).unwrap();
        let last = Change::from_bytes(pending.last().unwrap().1.clone()).unwrap();
        let first = Change::from_bytes(pending[0].1.clone()).unwrap();
        assert_eq!(last.deps(), &[first.hash()], "{:?}", last.deps());
    }
}
