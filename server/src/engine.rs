//! The engine: every write of the server, on one thread that owns the store.
//!
//! Sync requests arriving together are handled in one transaction (group commit), so
//! one fsync serves many phones. A response is sent only after its transaction
//! committed: an acknowledged change is durable. If a batch fails, each of its requests
//! is retried alone, so one bad request cannot fail the others.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;

use automerge::{ActorId, Change, ChangeHash};
use doorstep_core::document::{shipped, Author, HouseholdDocument, Scope};
use doorstep_core::sync::protocol::*;
use lru::LruCache;

use crate::config::Limits;
use crate::error::{Result, ServerError};
use crate::org::{Device, Member};
use crate::store::{Compaction, QuarantineStatus, ServerStore, WriteTx};
use crate::merge;

/// Smallest and largest page a device may ask for.
const PAGE_BYTES: (u32, u32) = (16 * 1024, 16 * 1024 * 1024);

/// The author of changes the server makes on behalf of an admin or coordinator.
pub fn author(member_id: &str) -> Author {
    Author { member_id: member_id.to_string(), device_id: "server".to_string() }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A decoded sync request from an authenticated token.
pub struct SyncJob {
    pub token_hash: String,
    pub request: SyncRequest,
    /// The pushed changes, decoded (strictly) before the job was queued.
    pub changes: Vec<(String, Change)>,
}

pub struct Engine<S: ServerStore> {
    store: S,
    actor: ActorId,
    /// Documents in memory, the least recently used dropped first.
    cache: LruCache<String, HouseholdDocument>,
    /// Households whose compaction sync batches left for when no request waits, and
    /// those found due at start (`find_compactions_due`).
    compactions_due: BTreeSet<String>,
}

/// Documents being changed by the current transaction: put back in the cache only if it
/// commits.
type WorkingSet = HashMap<String, HouseholdDocument>;

impl<S: ServerStore> Engine<S> {
    /// An engine keeping up to `Limits::default().cached_households` documents in memory.
    pub fn new(store: S) -> Engine<S> {
        Engine::keeping(store, Limits::default().cached_households)
    }

    /// An engine keeping up to `cached_households` documents in memory.
    pub fn keeping(store: S, cached_households: NonZeroUsize) -> Engine<S> {
        Engine {
            store,
            actor: ActorId::random(),
            cache: LruCache::new(cached_households),
            compactions_due: BTreeSet::new(),
        }
    }

    fn keep(&mut self, working: WorkingSet) {
        for (id, doc) in working {
            self.cache.put(id, doc);
        }
    }

    /// Run `f` in one transaction; documents it changed are cached, and compactions it
    /// left for later remembered, only if it commits.
    pub fn write<T>(&mut self, f: impl FnOnce(&S::Tx<'_>, &mut Documents<'_>) -> Result<T>) -> Result<T> {
        let mut working = WorkingSet::new();
        let mut due = BTreeSet::new();
        let out = {
            let tx = self.store.begin()?;
            let mut docs = Documents { cache: &mut self.cache, working: &mut working, actor: &self.actor, due: &mut due };
            let out = f(&tx, &mut docs)?;
            #[cfg(test)]
            tests::commit_fault()?;
            tx.commit()?;
            out
        };
        self.keep(working);
        self.compactions_due.append(&mut due);
        Ok(out)
    }

    /// Take up the households left to compact before the server last stopped (they were
    /// remembered in memory only), with any other due: the writer compacts them once
    /// idle. Returns how many are due.
    pub fn find_compactions_due(&mut self) -> Result<usize> {
        let found = self.write(|tx, _| {
            let mut due = Vec::new();
            for id in tx.households_maybe_due_compaction()? {
                if tx.compaction_due(&id)? != Compaction::NotDue {
                    due.push(id);
                }
            }
            Ok(due)
        })?;
        let count = found.len();
        self.compactions_due.extend(found);
        Ok(count)
    }

    /// How many households wait to be compacted.
    pub fn compactions_due(&self) -> usize {
        self.compactions_due.len()
    }

    /// Compact up to `limit` of the households waiting to be, in one transaction:
    /// the writer does it while no request waits, so that a burst of syncs does not also
    /// rewrite every household it touched. Returns how many were compacted. A household
    /// not in memory is loaded for it and not kept.
    pub fn compact_due(&mut self, limit: usize) -> Result<usize> {
        let ids: Vec<String> = std::iter::from_fn(|| self.compactions_due.pop_first()).take(limit).collect();
        self.write(|tx, docs| {
            let mut compacted = 0;
            for id in &ids {
                // Compacted meanwhile (by a save that does it at once), or not stored.
                if tx.compaction_due(id)? == Compaction::NotDue {
                    continue;
                }
                let (mut doc, cached) = match docs.take(tx, id)? {
                    Held::InMemory(doc) => (*doc, true),
                    held => match held.load(id, docs.actor())? {
                        Some(doc) => (doc, false),
                        None => continue,
                    },
                };
                tx.compact_document(&mut doc)?;
                if cached {
                    docs.put(id, doc);
                }
                compacted += 1;
            }
            Ok(compacted)
        })
    }

    /// Handle sync requests together in one transaction; on failure, one by one.
    pub fn sync_batch(&mut self, jobs: Vec<SyncJob>) -> Vec<Result<SyncResponse>> {
        self.sync_batch_then(Batch::new(jobs), Vec::new).0
    }

    /// Handle `batch` in one transaction (on failure, one request at a time). Before
    /// committing, take the requests waiting now (`next`) and start them: their sessions
    /// are opened and their pushes read inside this transaction, which has just written
    /// what they depend on, and they merge on other threads while it commits. Returned
    /// with this batch's answers, to be handed back here next. If the commit fails, what
    /// was started read what was rolled back: it is returned not started, and begins
    /// again from the store.
    pub fn sync_batch_then(
        &mut self,
        batch: Batch,
        next: impl FnOnce() -> Vec<SyncJob>,
    ) -> (Vec<Result<SyncResponse>>, Option<Batch>) {
        let Batch { jobs, started } = batch;
        let mut following = None;
        let done = unwound(|| {
            self.write(|tx, docs| {
                let responses = match started {
                    Some(round) => finish_round(tx, docs, &jobs.iter().collect::<Vec<_>>(), round)?,
                    None => sync_jobs(tx, docs, &jobs)?,
                };
                following = Some(next()).filter(|jobs| !jobs.is_empty()).map(|jobs| start_batch(tx, docs, jobs));
                Ok(responses)
            })
        });
        match done {
            Ok(responses) => (responses, following),
            Err(e) => {
                let following = following.map(|b| Batch::new(b.jobs));
                // The batch was abandoned (its transaction rolled back): each request alone.
                let responses = if jobs.len() > 1 {
                    jobs.iter()
                        .map(|job| {
                            unwound(|| self.write(|tx, docs| sync_jobs(tx, docs, std::slice::from_ref(job))))
                                .and_then(single)
                        })
                        .collect()
                } else {
                    vec![Err(e)]
                };
                (responses, following)
            }
        }
    }

    /// Create a household document (admin action).
    pub fn create_household(&mut self, by: &str, new: &doorstep_core::NewHousehold) -> Result<doorstep_core::Household> {
        self.write(|tx, docs| docs.create(tx, by, new))
    }

    /// Assign or release a member (admin action): a change phones receive like any other.
    pub fn set_assignment(&mut self, by: &str, household_id: &str, member_id: &str, assigned: bool) -> Result<()> {
        self.edit(&author(by), household_id, |doc, a, now| doc.set_member_assigned(a, now, member_id, assigned))
    }

    /// Edit a household on the server as `author` (admin actions, demo data); the change
    /// is logged and reaches phones like any other.
    pub fn edit(
        &mut self,
        author: &Author,
        household_id: &str,
        f: impl FnOnce(&mut HouseholdDocument, &Author, i64) -> doorstep_core::Result<()>,
    ) -> Result<()> {
        self.write(|tx, docs| docs.edit(tx, household_id, |doc, now| f(doc, author, now)))
    }

    /// Release a quarantined change: merge it without the check. Then the changes held
    /// because they depended on it (directly or through other held changes) are checked
    /// like a fresh push: merged and released if they pass, otherwise still held, with
    /// their own reason.
    pub fn release(&mut self, by: &str, hash: &str) -> Result<()> {
        self.write(|tx, docs| {
            let q = still_held(tx, hash)?;
            let change = Change::from_bytes(q.bytes.clone()).map_err(|e| ServerError::Internal(e.to_string()))?;
            docs.merge(tx, &q.household_id, &change, Some(&q.device_id), Scope::Everything)?;
            tx.set_quarantine_status(hash, QuarantineStatus::Released, by, now_ms())?;
            recheck_dependents(tx, docs, hash, by)
        })
    }

    /// Discard a quarantined change and every held change that depends on it; the phone
    /// is told and rebuilds the household from the server's copy.
    pub fn discard(&mut self, by: &str, hash: &str) -> Result<()> {
        self.write(|tx, _| {
            still_held(tx, hash)?;
            let mut doomed = vec![hash.to_string()];
            let held = tx.quarantined(Some(QuarantineStatus::Held))?;
            let mut i = 0;
            while i < doomed.len() {
                for d in &held {
                    if !doomed.contains(&d.hash) && d.reason.contains(&doomed[i]) {
                        doomed.push(d.hash.clone());
                    }
                }
                i += 1;
            }
            for h in doomed {
                tx.set_quarantine_status(&h, QuarantineStatus::Discarded, by, now_ms())?;
            }
            Ok(())
        })
    }
}

/// Run `f`, a transaction's work: a panic in it (a bug set off by one request, such as a
/// stored document whose loading makes Automerge fail) becomes an internal error, the
/// transaction rolled back, so that a batch that fails this way is retried one request
/// at a time and only the request that set it off fails.
fn unwound<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::writer::survive("a sync batch", f)
        .unwrap_or_else(|| Err(ServerError::Internal(crate::writer::FAILED_INSIDE.into())))
}

/// A quarantined change an admin may still decide (held).
fn still_held(tx: &impl WriteTx, hash: &str) -> Result<crate::store::QuarantinedChange> {
    let q = tx.quarantined_change(hash)?.ok_or_else(|| ServerError::NotFound(format!("隔离的变更 / quarantined change {hash}")))?;
    if q.status != QuarantineStatus::Held {
        let status = q.status.as_str();
        return Err(ServerError::BadRequest(format!("该变更已处理（{status}）/ change {hash} was already {status}")));
    }
    Ok(q)
}

/// Sync requests handled together, in one transaction.
pub struct Batch {
    pub jobs: Vec<SyncJob>,
    /// Started inside the previous batch's transaction (see `Engine::sync_batch_then`).
    started: Option<Round>,
}

impl Batch {
    pub fn new(jobs: Vec<SyncJob>) -> Batch {
        Batch { jobs, started: None }
    }

    /// Whether it was started inside the transaction before its own.
    pub fn started(&self) -> bool {
        self.started.is_some()
    }
}

/// Start `jobs` inside the transaction before theirs: open their sessions and start
/// merging their pushes. Only a batch of one round (no device twice) is started; a failure
/// to start leaves it to begin from the store in its own transaction.
fn start_batch(tx: &impl WriteTx, docs: &mut Documents<'_>, jobs: Vec<SyncJob>) -> Batch {
    let mut devices = HashSet::new();
    if !jobs.iter().all(|job| devices.insert(job.token_hash.as_str())) {
        return Batch::new(jobs);
    }
    match start_round(tx, docs, &jobs.iter().collect::<Vec<_>>()) {
        Ok(round) => Batch { jobs, started: Some(round) },
        Err(e) => {
            tracing::warn!("the next batch could not be started early, it starts alone: {e}");
            Batch::new(jobs)
        }
    }
}

/// A household's document as `Documents::take` hands it out.
pub(crate) enum Held {
    InMemory(Box<HouseholdDocument>),
    /// Its stored bytes (snapshot and increments), not loaded yet.
    Stored(Vec<u8>),
    /// The server has no such household.
    Missing,
}

impl Held {
    /// The document, loaded if needed; `None` for a missing household.
    pub(crate) fn load(self, household_id: &str, actor: &ActorId) -> Result<Option<HouseholdDocument>> {
        Ok(match self {
            Held::InMemory(doc) => Some(*doc),
            Held::Stored(bytes) => Some(HouseholdDocument::load(household_id, &bytes, actor)?),
            Held::Missing => None,
        })
    }
}

/// The documents a transaction reads and changes.
pub struct Documents<'a> {
    cache: &'a mut LruCache<String, HouseholdDocument>,
    working: &'a mut WorkingSet,
    actor: &'a ActorId,
    due: &'a mut BTreeSet<String>,
}

impl Documents<'_> {
    /// The working copy of a household's document (loaded on first use).
    ///
    /// A cached document is moved, not cloned, into the working set: `keep` puts it back
    /// if the transaction commits; if it rolls back, the document is dropped with the
    /// working set and the next use loads it from the store.
    fn get(&mut self, tx: &impl WriteTx, household_id: &str) -> Result<Option<&mut HouseholdDocument>> {
        if !self.working.contains_key(household_id) {
            let Some(doc) = self.take(tx, household_id)?.load(household_id, self.actor)? else { return Ok(None) };
            self.put(household_id, doc);
        }
        Ok(self.working.get_mut(household_id))
    }

    /// A household's document as a sync response carries it, and its heads. One not in
    /// memory and stored as a single compacted snapshot is taken from its bytes, without
    /// loading it (a coordinator's first sync would otherwise load every household on the
    /// writer thread, and push the households in use out of the cache).
    fn shipped(&mut self, tx: &impl WriteTx, household_id: &str) -> Result<Option<(Vec<u8>, Vec<ChangeHash>)>> {
        if !self.working.contains_key(household_id) && !self.cache.contains(household_id) {
            let Some(stored) = tx.document(household_id)? else { return Ok(None) };
            if let Some(shipped) = shipped::strip_stored(&stored) {
                return Ok(Some(shipped));
            }
            if let Some(doc) = Held::Stored(stored).load(household_id, self.actor)? {
                self.put(household_id, doc);
            }
        }
        let Some(doc) = self.get(tx, household_id)? else { return Ok(None) };
        Ok(Some((doc.save_for_sync()?, doc.heads())))
    }

    /// Take a household's document out of the transaction, to be given back with `put`:
    /// in memory if it is, otherwise as stored, for the caller to load (off the writer
    /// thread). Not given back (an error): the transaction rolls back and the next use
    /// loads it from the store.
    pub(crate) fn take(&mut self, tx: &impl WriteTx, household_id: &str) -> Result<Held> {
        if let Some(doc) = self.working.remove(household_id).or_else(|| self.cache.pop(household_id)) {
            return Ok(Held::InMemory(Box::new(doc)));
        }
        Ok(match tx.document(household_id)? {
            Some(bytes) => Held::Stored(bytes),
            None => Held::Missing,
        })
    }

    /// The actor of the server's own changes, for loading documents.
    pub(crate) fn actor(&self) -> &ActorId {
        self.actor
    }

    /// Give a document back to the working set.
    pub(crate) fn put(&mut self, household_id: &str, doc: HouseholdDocument) {
        self.working.insert(household_id.to_string(), doc);
    }

    /// Compact the household once no request waits (`Engine::compact_due`).
    pub(crate) fn compact_later(&mut self, household_id: &str) {
        self.due.insert(household_id.to_string());
    }

    pub(crate) fn create(&mut self, tx: &impl WriteTx, by: &str, new: &doorstep_core::NewHousehold) -> Result<doorstep_core::Household> {
        let mut doc = HouseholdDocument::create(self.actor, &author(by), now_ms(), new)?;
        let id = doc.id().to_string();
        let view = doc.view(&Scope::Everything)?;
        let saved = doc.save();
        tx.save_document(&mut doc, &saved, &view)?;
        for change in doc.changes_since(&[]) {
            tx.append_change(&id, &change.hash().to_string(), None, change.raw_bytes(), now_ms())?;
        }
        // Not kept in memory: an import creates thousands in one transaction, and the
        // first sync that needs one loads it from the store.
        doc.household().map_err(Into::into)
    }

    /// Make a server-side edit and log its change.
    fn edit(
        &mut self,
        tx: &impl WriteTx,
        household_id: &str,
        f: impl FnOnce(&mut HouseholdDocument, i64) -> doorstep_core::Result<()>,
    ) -> Result<()> {
        let doc = self.get(tx, household_id)?.ok_or_else(|| ServerError::NotFound(format!("household {household_id}")))?;
        let before = doc.heads();
        f(doc, now_ms())?;
        let changes = doc.changes_since(&before);
        if changes.is_empty() {
            return Ok(());
        }
        let increment = doc.save_after(&before);
        let view = doc.view(&Scope::Everything)?;
        tx.save_document(doc, &increment, &view)?;
        for change in changes {
            tx.append_change(household_id, &change.hash().to_string(), None, change.raw_bytes(), now_ms())?;
        }
        Ok(())
    }

    /// Merge a change whose dependencies are present, store it and log it. A change that
    /// does not fit the document (`apply_verified`), or after which the household cannot
    /// be read, is refused even so (bad request); a panic while merging it is an internal
    /// error. Either way the transaction rolls back and the document is read again at its
    /// next use.
    ///
    /// A household the server lacks starts from this change: one created after the backup
    /// the server was restored from, whose history a phone pushed back. The change must
    /// make the household, with the branch, community and members the server knows.
    fn merge(&mut self, tx: &impl WriteTx, household_id: &str, change: &Change, device: Option<&str>, scope: Scope) -> Result<()> {
        let new = self.get(tx, household_id)?.is_none();
        if new {
            self.put(household_id, HouseholdDocument::empty(household_id, self.actor));
        }
        let doc = self.get(tx, household_id)?.ok_or_else(|| ServerError::NotFound(format!("household {household_id}")))?;
        let before = doc.heads();
        merge::contained(change, || doc.apply_verified(change.clone())).map_err(|what| {
            let hash = change.hash();
            ServerError::Internal(format!(
                "合并变更 {hash} 时服务器内部出错 / the server failed inside while merging change {hash} ({what})"
            ))
        })??;
        let increment = doc.save_after(&before);
        let unreadable = |e: &dyn std::fmt::Display| {
            ServerError::BadRequest(format!(
                "合并后住户资料无法读取，不能放行 / with this change the household could not be read, so it cannot be released: {e}"
            ))
        };
        let view = doc.view(&scope).map_err(|e| unreadable(&e))?;
        if new {
            let made_here = doc.to_json()["household"]["id"] == household_id;
            let Some(household) = view.household.as_ref().filter(|_| made_here) else {
                return Err(unreadable(&format!("it does not create household {household_id}, which the server lacks")));
            };
            check_refs(tx, &household.branch_id, &household.community_id, &household.assigned_members)?;
        }
        tx.save_document(doc, &increment, &view)?;
        tx.append_change(household_id, &change.hash().to_string(), device, change.raw_bytes(), now_ms())?;
        Ok(())
    }
}

/// A household's branch, community and members must be known to the server.
pub(crate) fn check_refs(tx: &impl WriteTx, branch_id: &str, community_id: &str, members: &[String]) -> Result<()> {
    if !tx.branches()?.iter().any(|b| b.id == branch_id) {
        return Err(ServerError::BadRequest(format!("未知的支部 / unknown branch {branch_id:?}")));
    }
    if !tx.communities()?.iter().any(|c| c.id == community_id) {
        return Err(ServerError::BadRequest(format!("未知的社区 / unknown community {community_id:?}")));
    }
    for m in members {
        if tx.member(m)?.is_none() {
            return Err(ServerError::BadRequest(format!("未知的党员 / unknown member {m:?}")));
        }
    }
    Ok(())
}

/// `released` was just merged: check the changes held because they depended on it
/// (directly or through each other) like a fresh push by the device that pushed them.
/// Those that pass are merged and released (their devices are told at their next sync);
/// the others stay held, with their own reason.
pub(crate) fn recheck_dependents(tx: &impl WriteTx, docs: &mut Documents<'_>, released: &str, by: &str) -> Result<()> {
    let mut released = vec![released.to_string()];
    loop {
        let mut progress = false;
        for dependent in tx.quarantined(Some(QuarantineStatus::Held))? {
            if !released.iter().any(|h| dependent.reason.contains(h.as_str())) {
                continue;
            }
            let Ok(c) = Change::from_bytes(dependent.bytes.clone()) else { continue };
            let Some(member) = tx.member(&dependent.member_id)? else { continue };
            let in_scope: HashSet<String> = tx.households_in_scope(&member)?.into_iter().collect();
            let held: HashSet<String> = tx.held_households(&dependent.device_id)?.into_iter().map(|(h, _)| h).collect();
            let household_id = &dependent.household_id;
            let may_push = merge::may_push(&member, &in_scope, &held, household_id);
            match merge::recheck(tx, docs, &member, &dependent.device_id, household_id, &c, may_push)? {
                None => {
                    let (h, device) = (&dependent.household_id, Some(dependent.device_id.as_str()));
                    tx.append_change(h, &dependent.hash, device, c.raw_bytes(), now_ms())?;
                    tx.set_quarantine_status(&dependent.hash, QuarantineStatus::Released, by, now_ms())?;
                    released.push(dependent.hash.clone());
                    progress = true;
                }
                Some(reason) => tx.set_quarantine_reason(&dependent.hash, &reason)?,
            }
        }
        if !progress {
            return Ok(());
        }
    }
}

/// Resolve a token to its device and member; `Unauthorized` if unknown or revoked.
pub fn authenticate(tx: &impl WriteTx, token_hash: &str) -> Result<(Device, Member)> {
    let device = tx.device_by_token(token_hash)?.ok_or(ServerError::Unauthorized)?;
    let member = tx.member(&device.member_id)?.ok_or(ServerError::Unauthorized)?;
    Ok((device, member))
}

fn heads_of(doc: &mut HouseholdDocument) -> Vec<[u8; 32]> {
    doc.heads().iter().map(|h| h.0).collect()
}

/// The `epoch` a device's position carries: the store's epoch, then the newest
/// change-log entry as of this response (its seq and the start of its hash). Every change
/// acknowledged to the device so far was logged at or before that entry.
fn position_epoch(tx: &impl WriteTx, epoch: &str, max_seq: u64) -> Result<String> {
    Ok(match tx.change_hash_at(max_seq)? {
        Some(hash) => format!("{epoch}.{max_seq}.{}", &hash[..hash.len().min(16)]),
        None => epoch.to_string(),
    })
}

/// Whether this store still holds the change log a position was handed from: the same
/// store, and the entry the position names unchanged. A store restored from an older
/// backup has lost that entry, or logged another change under its seq since; the epoch
/// alone cannot tell, since a backup keeps it.
fn log_intact(tx: &impl WriteTx, epoch: &str, position_epoch: &str) -> Result<bool> {
    let mut parts = position_epoch.splitn(3, '.');
    if parts.next() != Some(epoch) {
        return Ok(false);
    }
    match (parts.next(), parts.next()) {
        (None, None) => Ok(true),
        (Some(seq), Some(prefix)) if !prefix.is_empty() => match seq.parse::<u64>() {
            Ok(seq) => Ok(tx.change_hash_at(seq)?.is_some_and(|h| h.starts_with(prefix))),
            Err(_) => Ok(false),
        },
        _ => Ok(false),
    }
}

/// A sync request being handled: who sent it, and where its position stands.
struct Session {
    device: Device,
    member: Member,
    epoch: String,
    grant: u64,
    /// The end of the change log before the batch pushed anything.
    max_seq_before: u64,
    recognised: bool,
    client: Position,
    in_scope: HashSet<String>,
    held: HashSet<String>,
    /// Of `held`, those held only for their changes to be taken.
    taking: HashSet<String>,
}

fn open_session(tx: &impl WriteTx, job: &SyncJob) -> Result<Session> {
    let (device, member) = authenticate(tx, &job.token_hash)?;
    let request = &job.request;
    let epoch = tx.epoch()?;
    let grant = tx.device_grant(&device.id)?;
    let max_seq_before = tx.max_seq()?;
    let recognised = match &request.position {
        None => true,
        Some(p) => log_intact(tx, &epoch, &p.epoch)? && p.seq <= max_seq_before && p.grant <= grant,
    };
    let client = request.position.clone().unwrap_or(Position { epoch: epoch.clone(), seq: 0, grant: 0 });
    if recognised && request.reconcile.is_none() {
        let left = tx.confirm_grant(&device.id, client.grant)?;
        // Changes the member made to a household while the answer removing it was on its
        // way: the phone kept the household for them, and they are taken. It is held
        // again until then (also while the phone has more to push, which may be them);
        // the answer removes it once more, or sends it whole if it is in the scope again.
        let pushing = |h: &String| request.more_to_push || job.changes.iter().any(|(pushed, _)| pushed == h);
        for household_id in left.iter().filter(|h| pushing(h)) {
            tx.hold_for_taking(&device.id, household_id, client.grant)?;
        }
    }
    let in_scope: HashSet<String> = tx.households_in_scope(&member)?.into_iter().collect();
    let (mut held, mut taking) = (HashSet::new(), HashSet::new());
    for (household_id, for_taking) in tx.held_households(&device.id)? {
        if for_taking {
            taking.insert(household_id.clone());
        }
        held.insert(household_id);
    }
    Ok(Session { device, member, epoch, grant, max_seq_before, recognised, client, in_scope, held, taking })
}

/// Handle a batch's sync requests inside its transaction. A device's requests go in turn
/// (a phone that sent its request again before the first was answered): each round holds
/// one request per device, so each sees what the device's previous request did to its
/// grant and scope, as if they had come one after the other. Any error fails the batch.
fn sync_jobs(tx: &impl WriteTx, docs: &mut Documents<'_>, jobs: &[SyncJob]) -> Result<Vec<Result<SyncResponse>>> {
    let mut out: Vec<Option<Result<SyncResponse>>> = jobs.iter().map(|_| None).collect();
    let mut waiting: Vec<usize> = (0..jobs.len()).collect();
    while !waiting.is_empty() {
        let mut devices = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            waiting.into_iter().partition(|&i| devices.insert(jobs[i].token_hash.as_str()));
        let round_jobs: Vec<&SyncJob> = round.iter().map(|&i| &jobs[i]).collect();
        for (i, response) in round.into_iter().zip(sync_round(tx, docs, &round_jobs)?) {
            out[i] = Some(response);
        }
        waiting = later;
    }
    Ok(out.into_iter().flatten().collect())
}

/// One round of a batch (one request per device): every request's pushes (merged
/// household by household, see `merge`), then every request's answer. An unknown or
/// revoked token fails its own request only.
fn sync_round(tx: &impl WriteTx, docs: &mut Documents<'_>, jobs: &[&SyncJob]) -> Result<Vec<Result<SyncResponse>>> {
    let round = start_round(tx, docs, jobs)?;
    finish_round(tx, docs, jobs, round)
}

/// A round whose sessions are open and whose pushes are merging.
struct Round {
    /// One per request; `None`: an unknown or revoked token.
    sessions: Vec<Option<Session>>,
    merges: merge::Merges,
}

fn start_round(tx: &impl WriteTx, docs: &mut Documents<'_>, jobs: &[&SyncJob]) -> Result<Round> {
    let mut sessions = Vec::with_capacity(jobs.len());
    for job in jobs {
        match open_session(tx, job) {
            Ok(session) => sessions.push(Some(session)),
            Err(ServerError::Unauthorized) => sessions.push(None),
            Err(e) => return Err(e),
        }
    }
    let merges = merge::Merges::start(tx, docs, &pushers(&sessions, jobs))?;
    Ok(Round { sessions, merges })
}

/// Store what a round merged, then answer each request.
fn finish_round(
    tx: &impl WriteTx,
    docs: &mut Documents<'_>,
    jobs: &[&SyncJob],
    round: Round,
) -> Result<Vec<Result<SyncResponse>>> {
    let Round { sessions, merges } = round;
    let mut acks = merges.finish(tx, docs, &pushers(&sessions, jobs))?.into_iter();
    let mut out = Vec::with_capacity(jobs.len());
    for (session, job) in sessions.iter().zip(jobs) {
        out.push(match session {
            Some(session) => Ok(answer(tx, docs, job, session, acks.next().unwrap_or_default())?),
            None => Err(ServerError::Unauthorized),
        });
    }
    Ok(out)
}

/// The requests of a round with a session, as far as pushing goes.
fn pushers<'a>(sessions: &'a [Option<Session>], jobs: &[&'a SyncJob]) -> Vec<merge::Pusher<'a>> {
    sessions
        .iter()
        .zip(jobs)
        .filter_map(|(session, job)| {
            session.as_ref().map(|s| merge::Pusher {
                device_id: &s.device.id,
                member: &s.member,
                changes: &job.changes,
                in_scope: &s.in_scope,
                held: &s.held,
            })
        })
        .collect()
}

/// The one answer of a batch of one.
fn single(mut responses: Vec<Result<SyncResponse>>) -> Result<SyncResponse> {
    responses.pop().unwrap_or_else(|| Err(ServerError::Internal("no answer".into())))
}

/// The whole documents an answer gathers, as the phone receives them: without their
/// heads, in one bundle laid out by column, with the digest of their heads.
#[derive(Default)]
struct Whole {
    household_ids: Vec<String>,
    documents: Vec<Vec<u8>>,
    heads: Vec<Vec<ChangeHash>>,
}

impl Whole {
    /// `shipped` from `HouseholdDocument::save_for_sync`, and the document's heads.
    fn push(&mut self, household_id: &str, shipped: Vec<u8>, heads: Vec<ChangeHash>) {
        self.household_ids.push(household_id.to_string());
        self.documents.push(shipped);
        self.heads.push(heads);
    }

    fn into_documents(self) -> Result<Option<WholeDocuments>> {
        if self.household_ids.is_empty() {
            return Ok(None);
        }
        let bundle = shipped::bundle(&self.documents).map_err(|e| ServerError::Internal(format!("bundling documents: {e}")))?;
        Ok(Some(WholeDocuments {
            heads_digest: heads_digest(self.heads.iter().map(Vec::as_slice)),
            household_ids: self.household_ids,
            bundle: bundle.into(),
        }))
    }
}

/// A request's answer: its acknowledgements, then what the device lacks in its scope.
fn answer(tx: &impl WriteTx, docs: &mut Documents<'_>, job: &SyncJob, session: &Session, acks: Vec<Ack>) -> Result<SyncResponse> {
    let Session { device, member, epoch, grant, max_seq_before, recognised, client, held, taking, .. } = session;
    let (request, grant, max_seq_before, recognised) = (&job.request, *grant, *max_seq_before, *recognised);

    // ----- pulls -------------------------------------------------------------------------
    let new_grant = grant + 1;
    let mut used_grant = false;
    let max_seq = tx.max_seq()?;
    let scope: Vec<String> = tx.households_in_scope(member)?;
    let mut response = SyncResponse::new(acks, client.clone(), member.role);
    let mut whole = Whole::default();

    let budget = request.max_response_bytes.clamp(PAGE_BYTES.0, PAGE_BYTES.1) as usize;
    let mut bytes = 0usize;
    if let Some(client_heads) = &request.reconcile {
        // Full reconciliation by heads: what each side lacks, nothing lost on either.
        // Within the page's budget: a household whose part does not fit is left out, and a
        // later answer sends it whole (one the phone lacks is not granted; one it has is
        // held for taking, so that it is removed should it leave the scope first).
        tx.clear_device_scope(&device.id)?;
        let theirs: HashMap<&str, &Vec<[u8; 32]>> =
            client_heads.iter().map(|h| (h.household_id.as_str(), &h.heads)).collect();
        for household_id in &scope {
            let fits = |size: usize| bytes == 0 || bytes + size <= budget;
            match theirs.get(household_id.as_str()) {
                None => {
                    let Some((shipped, heads)) = docs.shipped(tx, household_id)? else { continue };
                    if !fits(shipped.len()) {
                        response.more = true;
                        continue;
                    }
                    bytes += shipped.len();
                    whole.push(household_id, shipped, heads);
                }
                Some(heads) => {
                    let heads: Vec<ChangeHash> = heads.iter().map(|h| ChangeHash(*h)).collect();
                    // The same heads on both sides (most households): nothing to send or
                    // ask, and nothing to load.
                    let same = tx.document_heads(household_id)?.is_some_and(|stored| {
                        let stored: BTreeSet<&str> = stored.iter().map(String::as_str).collect();
                        let theirs: Vec<String> = heads.iter().map(ToString::to_string).collect();
                        stored.len() == theirs.len() && theirs.iter().all(|h| stored.contains(h.as_str()))
                    });
                    if same {
                        tx.grant_household(&device.id, household_id, new_grant, max_seq)?;
                        continue;
                    }
                    let Some(doc) = docs.get(tx, household_id)? else { continue };
                    // What the phone must push: asked whatever the budget.
                    if heads.iter().any(|h| !doc.has_change(h)) {
                        response.server_heads.push(Heads { household_id: household_id.clone(), heads: heads_of(doc) });
                    }
                    let changes = doc.changes_since(&heads);
                    let size: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
                    if !fits(size) {
                        // Held, with nothing sent: whole later if in the scope, removed if not.
                        tx.hold_for_taking(&device.id, household_id, new_grant)?;
                        response.more = true;
                        continue;
                    }
                    if !changes.is_empty() {
                        bytes += size;
                        response.data.push(HouseholdData {
                            household_id: household_id.clone(),
                            chunks: changes.iter().map(|c| serde_bytes::ByteBuf::from(c.raw_bytes().to_vec())).collect(),
                        });
                    }
                }
            }
            tx.grant_household(&device.id, household_id, new_grant, max_seq)?;
        }
        let scope_set: HashSet<&String> = scope.iter().collect();
        for client in client_heads.iter().filter(|h| !scope_set.contains(&h.household_id)) {
            let household_id = &client.household_id;
            // A household that left the scope, which the phone holds changes to that the
            // server lacks (it was restored from an older backup): its heads, so that the
            // phone pushes them before the household leaves it.
            let lacking = match docs.get(tx, household_id)? {
                Some(doc) => client.heads.iter().any(|h| !doc.has_change(&ChangeHash(*h))).then(|| heads_of(doc)),
                None => (!client.heads.is_empty()).then(Vec::new),
            };
            let to_push = lacking.is_some();
            if let Some(heads) = lacking {
                response.server_heads.push(Heads { household_id: household_id.clone(), heads });
            }
            // Still held, to be removed once its changes were pushed, if the server's own
            // records say the device held it. Otherwise the server cannot tell the claim
            // from a phone reaching for another member's household: it leaves the phone
            // now, and the phone's changes to it (pushed, as the server lacks them) are
            // held for an admin.
            if held.contains(household_id) && (request.more_to_push || to_push) {
                tx.hold_for_taking(&device.id, household_id, new_grant)?;
            } else if tx.household_exists(household_id)? {
                response.removed.push(household_id.clone());
            }
            // A household the server lacks (created on the phone, or after the backup the
            // server was restored from) stays on the phone, its changes held for an admin.
        }
        used_grant = true;
        response.position.seq = max_seq;
    } else if !recognised {
        response.reconcile_needed = true;
        return Ok(response);
    } else {
        let scope_set: HashSet<&String> = scope.iter().collect();
        let mut to_send: Vec<&String> = scope.iter().filter(|h| !held.contains(*h)).collect();
        to_send.extend(request.rebuild.iter().filter(|h| scope_set.contains(h) && held.contains(*h)));
        to_send.extend(taking.iter().filter(|h| scope_set.contains(h) && !request.rebuild.contains(h)));
        // Asked whole again (a change to it was discarded) after it left the device, or
        // pushed to without the device holding it (one it claimed in a reconciliation; its
        // changes were held): it is not the device's.
        // Of those pushed to, only one the server has: one it lacks (created on the phone)
        // stays there, its changes held for an admin.
        let not_its = |h: &&String| !scope_set.contains(h) && !held.contains(*h);
        let mut removed: BTreeSet<&String> = request.rebuild.iter().filter(not_its).collect();
        for household_id in job.changes.iter().map(|(household_id, _)| household_id).filter(not_its) {
            if !removed.contains(household_id) && tx.household_exists(household_id)? {
                removed.insert(household_id);
            }
        }
        response.removed.extend(removed.into_iter().cloned());
        for household_id in to_send {
            let Some((shipped, heads)) = docs.shipped(tx, household_id)? else { continue };
            if !whole.household_ids.is_empty() && bytes + shipped.len() > budget {
                response.more = true;
                break;
            }
            bytes += shipped.len();
            whole.push(household_id, shipped, heads);
            tx.grant_household(&device.id, household_id, new_grant, max_seq)?;
            used_grant = true;
        }
        // A household that left the scope leaves the device once the device has pushed
        // everything it holds (its changes to it are taken first).
        if !request.more_to_push {
            for household_id in held.iter().filter(|h| !scope_set.contains(h)) {
                tx.remove_household(&device.id, household_id, new_grant)?;
                response.removed.push(household_id.clone());
                used_grant = true;
            }
        }
        for decided in tx.decisions_to_tell(&device.id)? {
            let Ok(hash) = decided.hash.parse::<ChangeHash>() else { continue };
            let outcome = match decided.status {
                QuarantineStatus::Released => Outcome::Accepted,
                _ => Outcome::Discarded { reason: decided.reason.clone() },
            };
            response.acks.push(Ack { hash: hash.0, outcome });
            tx.mark_told(&decided.hash, new_grant)?;
            used_grant = true;
        }
        if !response.more {
            let (changes, more) = tx.changes_for_device(&device.id, client.seq, max_seq_before, budget.saturating_sub(bytes))?;
            response.position.seq = if more { changes.last().map_or(client.seq, |c| c.seq) } else { max_seq };
            response.more = more;
            let mut by_household: BTreeMap<String, Vec<serde_bytes::ByteBuf>> = BTreeMap::new();
            let mut order = Vec::new();
            for c in changes {
                if !by_household.contains_key(&c.household_id) {
                    order.push(c.household_id.clone());
                }
                by_household.entry(c.household_id).or_default().push(serde_bytes::ByteBuf::from(c.bytes));
            }
            for household_id in order {
                let chunks = by_household.remove(&household_id).unwrap_or_default();
                response.data.push(HouseholdData { household_id, chunks });
            }
        }
    }
    response.whole = whole.into_documents()?;
    response.position.epoch = position_epoch(tx, epoch, max_seq)?;
    if used_grant {
        tx.set_device_grant(&device.id, new_grant)?;
        response.position.grant = new_grant;
    } else {
        response.position.grant = grant;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    //! A batch started inside the transaction before its own, when that transaction then
    //! fails to commit, begins again from the store: nothing it read of the rolled-back
    //! batch is kept.

    use std::cell::Cell;

    use doorstep_core::sync::protocol::Outcome;

    use super::*;
    use crate::admin;
    use crate::auth::hash_secret;
    use doorstep_core::NewHousehold;
    use crate::merge::tests::{district, household, job, phone, record_visits, sync, visits_on, whole};
    use crate::store::sqlite::SqliteStore;

    thread_local! {
        /// Fail the next commit on this thread (once): its transaction rolls back. Per
        /// thread, so that tests running alongside commit as usual.
        static FAIL_NEXT_COMMIT: Cell<bool> = const { Cell::new(false) };
    }

    pub(super) fn commit_fault() -> Result<()> {
        if FAIL_NEXT_COMMIT.replace(false) {
            return Err(ServerError::Internal("test fault: the commit failed".into()));
        }
        Ok(())
    }

    /// Two members' phones after their first sync, each with a household: h1's phone
    /// recorded two visits (the second after the first), h2's one.
    struct TwoPhones {
        engine: Engine<SqliteStore>,
        admin_token: String,
        households: (String, String),
        first_visit: ChangeHash,
    }

    /// The phones, the first batch (h1's first visit), and the requests waiting meanwhile
    /// (h1's second visit, the same phone sending again, and h2's visit).
    fn two_phones(dir: &std::path::Path) -> (TwoPhones, Batch, Vec<SyncJob>) {
        let (mut engine, admin_token) = district(dir, &["m1", "m2"]);
        let households = (household(&mut engine, "甲", "m1"), household(&mut engine, "乙", "m2"));
        let (p1, first1) = phone(&mut engine, "m1");
        let (p2, first2) = phone(&mut engine, "m2");
        let on_h1 = record_visits(&p1, &first1, |_| 2);
        let on_h2 = record_visits(&p2, &first2, |_| 1);
        let first = Batch::new(vec![job(&p1.token, Some(first1.position.clone()), vec![on_h1[0].clone()])]);
        let next = vec![
            job(&p1.token, Some(first1.position.clone()), vec![on_h1[1].clone()]),
            job(&p2.token, Some(first2.position.clone()), on_h2),
        ];
        (TwoPhones { engine, admin_token, households, first_visit: on_h1[0].1.hash() }, first, next)
    }

    impl TwoPhones {
        /// How many visits each household's stored document holds.
        fn visits(&mut self) -> (usize, usize) {
            let (h1, h2) = &self.households;
            (visits_on(&mut self.engine, &self.admin_token, h1), visits_on(&mut self.engine, &self.admin_token, h2))
        }
    }

    /// Whether each household is due a compaction, as stored.
    fn compactions(engine: &mut Engine<SqliteStore>, households: &[&str]) -> Vec<Compaction> {
        engine.write(|tx, _| households.iter().map(|h| tx.compaction_due(h)).collect()).unwrap()
    }

    /// The heads and contents of a household's document as stored.
    fn stored(engine: &mut Engine<SqliteStore>, household_id: &str) -> (Vec<ChangeHash>, serde_json::Value) {
        let bytes = engine.write(|tx, _| tx.document(household_id)).unwrap().unwrap();
        let mut doc = HouseholdDocument::load(household_id, &bytes, &ActorId::random()).unwrap();
        (doc.heads(), doc.to_json())
    }

    /// `two_phones` after both batches: h1 has two increments, h2 one; each outweighs the
    /// snapshot of a household just created.
    fn both_batches_synced(dir: &std::path::Path) -> TwoPhones {
        let (mut phones, first, next) = two_phones(dir);
        let (_, following) = phones.engine.sync_batch_then(first, || next);
        phones.engine.sync_batch_then(following.unwrap(), Vec::new);
        phones
    }

    #[test]
    fn a_household_held_again_for_a_late_visit_and_back_in_scope_comes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = district(dir.path(), &["m1"]);
        let h = household(&mut engine, "甲", "m1");
        let (p1, first) = phone(&mut engine, "m1");
        let late = record_visits(&p1, &first, |_| 1);
        // Unassigned (change U); the answer removes h, leaving U out, and its position
        // passes U. The phone keeps h: its visit was not sent yet.
        admin::assign(&mut engine, "admin", &h, "m1", false).unwrap();
        let removing = sync(&mut engine, &p1.token, Some(first.position.clone()), vec![]);
        assert_eq!(removing.removed, std::slice::from_ref(&h));
        assert!(removing.data.is_empty());
        // Assigned again (change A, after U) before the phone pushes its visit.
        admin::assign(&mut engine, "admin", &h, "m1", true).unwrap();
        let taken = sync(&mut engine, &p1.token, Some(removing.position.clone()), late.clone());
        assert_eq!(taken.acks[0].outcome, Outcome::Accepted);
        assert!(taken.removed.is_empty());

        // The phone's copy gets what it missed: the document whole, not A alone (which
        // would wait for U for ever).
        let mut copy = whole(&first).pop().unwrap();
        copy.apply(late.into_iter().map(|(_, c)| c).collect()).unwrap();
        let mut whole_again = whole(&taken).pop().expect("h comes whole");
        assert_eq!(whole_again.id(), h);
        let applied = copy.apply(whole_again.changes_since(&[])).unwrap();
        assert!(applied.waiting.is_empty());
        assert_eq!(copy.heads(), whole_again.heads());
        let after = sync(&mut engine, &p1.token, Some(taken.position.clone()), vec![]);
        assert!(after.whole.is_none() && after.data.is_empty() && after.removed.is_empty(), "held again as usual");
    }

    #[test]
    fn releasing_the_creation_of_a_household_the_server_lacks_creates_it_if_it_fits() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, admin_token) = district(dir.path(), &["m1"]);
        let position = sync(&mut engine, &admin_token, None, vec![]).position;
        // Households made elsewhere (before the backup the server was restored from), as
        // an admin's phone pushes them back.
        let made = |branch: &str| {
            let new = NewHousehold {
                family_name: "乙".into(),
                community_id: "c1".into(),
                branch_id: branch.into(),
                assigned_members: vec!["m1".into()],
                ..Default::default()
            };
            let author = Author { member_id: "admin".into(), device_id: "phone".into() };
            let mut doc = HouseholdDocument::create(&ActorId::random(), &author, 1_000, &new).unwrap();
            let creation = doc.changes_since(&[]);
            assert_eq!(creation.len(), 1);
            (doc.id().to_string(), creation[0].clone())
        };
        let (fits, creation) = made("b1");
        let (unknown_branch, in_b9) = made("b9");
        // A creation pushed under another household's id.
        let (other, elsewhere) = made("b1");
        let misplaced = format!("{other}-not");
        let pushed =
            vec![(fits.clone(), creation.clone()), (unknown_branch, in_b9.clone()), (misplaced.clone(), elsewhere.clone())];
        let held = sync(&mut engine, &admin_token, Some(position), pushed);
        for ack in &held.acks {
            assert!(matches!(&ack.outcome, Outcome::Quarantined { reason } if reason.contains("does not exist")), "{held:?}");
        }

        let refused = engine.release("admin", &in_b9.hash().to_string()).unwrap_err();
        assert!(refused.to_string().contains("unknown branch \"b9\""), "{refused}");
        let refused = engine.release("admin", &elsewhere.hash().to_string()).unwrap_err();
        assert!(refused.to_string().contains(&format!("it does not create household {misplaced}")), "{refused}");
        engine.release("admin", &creation.hash().to_string()).unwrap();
        let (heads, json) = stored(&mut engine, &fits);
        assert_eq!(heads, [creation.hash()]);
        assert_eq!(json["household"]["family_name"], "乙");
        for nothing_of in [&misplaced, &other] {
            assert!(engine.write(|tx, _| tx.document(nothing_of)).unwrap().is_none());
        }
        assert_eq!(engine.write(|tx, _| tx.quarantined(Some(QuarantineStatus::Held))).unwrap().len(), 2);
        let (_, first) = phone(&mut engine, "m1");
        assert_eq!(whole(&first).iter().map(|d| d.id().to_string()).collect::<Vec<_>>(), [fits]);
    }

    #[test]
    fn a_reconciliation_claiming_another_members_household_neither_shows_it_nor_lets_it_be_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, admin_token) = district(dir.path(), &["m1", "m2"]);
        household(&mut engine, "甲", "m1");
        let h2 = household(&mut engine, "乙", "m2");
        let (p1, first1) = phone(&mut engine, "m1");
        let (p2, first2) = phone(&mut engine, "m2");
        // m1's phone claims to hold m2's household, with a head the server lacks, and to
        // have more to push.
        let claim = |position: Position, changes: Vec<(String, Change)>| {
            let pushed = changes.iter().map(|(h, c)| PushedChange { household_id: h.clone(), bytes: c.raw_bytes().into() });
            let mut request = SyncRequest::new(Some(position), pushed.collect());
            request.reconcile = Some(vec![Heads { household_id: h2.clone(), heads: vec![[7; 32]] }]);
            request.more_to_push = true;
            SyncJob { token_hash: hash_secret(&p1.token), request, changes }
        };
        let claimed = engine.sync_batch(vec![claim(first1.position.clone(), vec![])]).pop().unwrap().unwrap();
        assert_eq!(claimed.removed, std::slice::from_ref(&h2), "not the phone's");

        // m2 records a visit on it; m1's phone hears nothing of it.
        let on_h2 = record_visits(&p2, &first2, |_| 1);
        assert_eq!(sync(&mut engine, &p2.token, Some(first2.position.clone()), on_h2.clone()).acks[0].outcome, Outcome::Accepted);
        let mut next = SyncRequest::new(Some(claimed.position.clone()), vec![]);
        next.more_to_push = true;
        let heard = engine.sync_batch(vec![SyncJob { token_hash: hash_secret(&p1.token), request: next, changes: vec![] }]);
        let heard = heard.into_iter().next().unwrap().unwrap();
        assert!(heard.data.is_empty() && heard.whole.is_none(), "{heard:?}");

        // A visit m1's phone records on it is held for an admin, not merged.
        let mut copy = whole(&first2).pop().unwrap();
        copy.apply(on_h2.into_iter().map(|(_, c)| c).collect()).unwrap();
        let before = copy.heads();
        let author = Author { member_id: "m1".into(), device_id: p1.device_id.clone() };
        let mut visit = crate::merge::tests::visit(&h2, 7_000_000);
        visit.notes = "不该记在这里".into();
        copy.record_visit(&author, 7_000_000, &visit).unwrap();
        let intruding: Vec<(String, Change)> = copy.changes_since(&before).into_iter().map(|c| (h2.clone(), c)).collect();
        let pushed = engine.sync_batch(vec![claim(heard.position.clone(), intruding)]).pop().unwrap().unwrap();
        assert!(
            matches!(&pushed.acks[0].outcome, Outcome::Quarantined { reason } if reason.contains("not in your scope")),
            "{pushed:?}"
        );
        assert!(pushed.removed.contains(&h2));
        assert_eq!(visits_on(&mut engine, &admin_token, &h2), 1, "m2's visit alone");
    }

    #[test]
    fn a_reconciliation_comes_in_pages_and_the_households_left_out_come_whole_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, admin_token) = district(dir.path(), &["m1"]);
        let households: BTreeSet<String> = (0..60).map(|i| household(&mut engine, &format!("户{i}"), "m1")).collect();
        let first = sync(&mut engine, &admin_token, None, vec![]).position;
        // The admin's phone, restored empty, reconciles with pages of 16 KiB.
        let request = |position: Position, reconcile: bool| {
            let mut request = SyncRequest::new(Some(position), vec![]);
            request.reconcile = reconcile.then(Vec::new);
            request.max_response_bytes = 16 * 1024;
            SyncJob { token_hash: hash_secret(&admin_token), request, changes: vec![] }
        };
        let mut answer = engine.sync_batch(vec![request(first, true)]).pop().unwrap().unwrap();
        let in_the_first = answer.whole.as_ref().map_or(0, |w| w.household_ids.len());
        assert!(answer.more && in_the_first < households.len(), "{in_the_first} in the first page");
        let mut received: Vec<String> = Vec::new();
        let mut answers = 0;
        loop {
            answers += 1;
            let encoded = answer.encode_for(PROTOCOL_VERSION).len();
            assert!(encoded < 16 * 1024 + 4 * 1024, "a page stays near its budget: {encoded} bytes");
            received.extend(answer.whole.iter().flat_map(|w| w.household_ids.iter().cloned()));
            if !answer.more {
                break;
            }
            answer = engine.sync_batch(vec![request(answer.position.clone(), false)]).pop().unwrap().unwrap();
        }
        assert!(answers >= 2, "{answers} answers");
        let unique: BTreeSet<String> = received.iter().cloned().collect();
        assert_eq!(unique.len(), received.len(), "none twice");
        assert_eq!(unique, households);
    }

    #[test]
    fn a_household_a_reconciliation_page_left_out_is_removed_should_it_leave_the_scope_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = district(dir.path(), &["m1"]);
        let households: Vec<String> = (0..60).map(|i| household(&mut engine, &format!("户{i}"), "m1")).collect();
        let (p1, first) = phone(&mut engine, "m1");
        // Heads that make every household's whole history due: more than a 16 KiB page.
        let mut request = SyncRequest::new(Some(first.position.clone()), vec![]);
        request.reconcile = Some(households.iter().map(|h| Heads { household_id: h.clone(), heads: vec![] }).collect());
        request.max_response_bytes = 16 * 1024;
        let job = |request: SyncRequest| SyncJob { token_hash: hash_secret(&p1.token), request, changes: vec![] };
        let paged = engine.sync_batch(vec![job(request)]).pop().unwrap().unwrap();
        assert!(paged.more);
        let sent: BTreeSet<&str> = paged.data.iter().map(|d| d.household_id.as_str()).collect();
        let left_out = households.iter().find(|h| !sent.contains(h.as_str())).unwrap().clone();

        // It leaves the member's scope before the next answer: that answer removes it.
        admin::assign(&mut engine, "admin", &left_out, "m1", false).unwrap();
        let next = SyncRequest { max_response_bytes: 16 * 1024, ..SyncRequest::new(Some(paged.position.clone()), vec![]) };
        let answer = engine.sync_batch(vec![job(next)]).pop().unwrap().unwrap();
        assert!(answer.removed.contains(&left_out), "{:?}", answer.removed);
        assert!(answer.data.iter().all(|d| d.household_id != left_out));
        assert!(answer.whole.iter().all(|w| !w.household_ids.contains(&left_out)));
    }

    #[test]
    fn a_reconciliation_loads_only_the_households_whose_heads_differ() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = district(dir.path(), &["m1"]);
        let same = household(&mut engine, "同", "m1");
        let behind = household(&mut engine, "落后", "m1");
        let (p1, first) = phone(&mut engine, "m1");
        let mut copies = whole(&first);
        let heads: Vec<Heads> =
            copies.iter_mut().map(|doc| Heads { household_id: doc.id().to_string(), heads: heads_of(doc) }).collect();
        // The server moves on for one household; its documents leave memory.
        let on_behind = record_visits(&p1, &first, |h| if h == behind { 1 } else { 0 });
        let accepted = sync(&mut engine, &p1.token, Some(first.position.clone()), on_behind);
        assert_eq!(accepted.acks[0].outcome, Outcome::Accepted);
        engine.cache.clear();

        let mut request = SyncRequest::new(Some(first.position.clone()), vec![]);
        request.reconcile = Some(heads);
        let job = SyncJob { token_hash: hash_secret(&p1.token), request, changes: vec![] };
        let answer = engine.sync_batch(vec![job]).pop().unwrap().unwrap();
        let sent: Vec<&str> = answer.data.iter().map(|d| d.household_id.as_str()).collect();
        assert_eq!(sent, [behind.as_str()]);
        assert!(answer.server_heads.is_empty() && answer.whole.is_none());
        assert!(!engine.cache.contains(&same), "the same heads: not loaded");
        assert!(engine.cache.contains(&behind));
    }

    #[test]
    fn households_sync_batches_grew_are_compacted_once_idle_and_read_the_same() {
        for in_memory in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut phones = both_batches_synced(dir.path());
            let (h1, h2) = phones.households.clone();
            assert_eq!(compactions(&mut phones.engine, &[&h1, &h2]), [Compaction::Due, Compaction::Due]);
            assert_eq!(phones.engine.compactions_due(), 2, "left for later, not done in the batch");
            let before = stored(&mut phones.engine, &h1);
            if !in_memory {
                phones.engine.cache.clear();
            }

            assert_eq!(phones.engine.compact_due(64).unwrap(), 2);
            assert_eq!(phones.engine.compactions_due(), 0);
            assert_eq!(compactions(&mut phones.engine, &[&h1, &h2]), [Compaction::NotDue, Compaction::NotDue]);
            assert_eq!(stored(&mut phones.engine, &h1), before, "the snapshot holds the same history");
            assert_eq!(phones.engine.cache.contains(&h1), in_memory, "one loaded to be compacted is not kept");
            assert_eq!(phones.visits(), (2, 1));
        }
    }

    #[test]
    fn a_first_sync_ships_compacted_households_from_their_bytes_and_loads_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut phones = both_batches_synced(dir.path());
        let (h1, h2) = phones.households.clone();
        assert_eq!(phones.engine.compact_due(64).unwrap(), 2);
        // One more visit to h2: an increment lighter than its snapshot, which stays.
        let (p2, first2) = phone(&mut phones.engine, "m2");
        let on_h2 = record_visits(&p2, &first2, |_| 1);
        phones.engine.sync_batch(vec![job(&p2.token, Some(first2.position.clone()), on_h2)]).pop().unwrap().unwrap();
        assert_eq!(compactions(&mut phones.engine, &[&h1, &h2]), [Compaction::NotDue, Compaction::NotDue]);
        assert_eq!(phones.engine.compactions_due(), 0);
        assert_eq!(phones.engine.find_compactions_due().unwrap(), 0, "an increment alone is not due");
        let expected = [stored(&mut phones.engine, &h1), stored(&mut phones.engine, &h2)];
        phones.engine.cache.clear();
        for (member, household_id, expected, loaded) in [("m1", &h1, &expected[0], false), ("m2", &h2, &expected[1], true)] {
            let (_, first) = phone(&mut phones.engine, member);
            let mut received = whole(&first);
            assert_eq!(received.len(), 1);
            assert_eq!(received[0].id(), household_id);
            assert_eq!(&(received[0].heads(), received[0].to_json()), expected);
            assert_eq!(phones.engine.cache.contains(household_id), loaded, "only a household with increments is loaded");
        }
    }

    #[test]
    fn a_restarted_server_takes_up_the_compactions_left_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let phones = both_batches_synced(dir.path());
        let (h1, h2) = phones.households.clone();
        assert_eq!(phones.engine.compactions_due(), 2);
        drop(phones);

        // Stopped before it was idle: the new engine finds both in the store.
        let mut engine = Engine::new(SqliteStore::open(dir.path()).unwrap());
        assert_eq!(engine.find_compactions_due().unwrap(), 2);
        assert_eq!(engine.compact_due(64).unwrap(), 2);
        assert_eq!(compactions(&mut engine, &[&h1, &h2]), [Compaction::NotDue, Compaction::NotDue]);
        assert_eq!(engine.find_compactions_due().unwrap(), 0, "nothing left");
    }

    #[test]
    fn a_household_whose_increments_outnumber_the_limit_is_compacted_in_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = district(dir.path(), &["m1"]);
        let h1 = household(&mut engine, "甲", "m1");
        let (p1, first) = phone(&mut engine, "m1");
        let mut position = first.position.clone();
        // One visit per sync, and never idle: the writer would compact between them.
        for (k, change) in record_visits(&p1, &first, |_| 65).into_iter().enumerate() {
            let answer = engine.sync_batch(vec![job(&p1.token, Some(position), vec![change])]).pop().unwrap().unwrap();
            assert_eq!(answer.acks[0].outcome, Outcome::Accepted);
            position = answer.position;
            if k + 1 == 64 {
                assert_eq!(compactions(&mut engine, &[&h1]), [Compaction::Due], "64 increments: left for later");
            }
        }
        assert_eq!(compactions(&mut engine, &[&h1]), [Compaction::NotDue], "the 65th: compacted at once");
    }

    #[test]
    fn a_batch_started_before_a_commit_that_failed_begins_again_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (mut phones, first, next) = two_phones(dir.path());
        FAIL_NEXT_COMMIT.set(true);
        let (answers, following) = phones.engine.sync_batch_then(first, || next);
        assert!(!FAIL_NEXT_COMMIT.get(), "the commit was reached and failed");
        assert!(answers[0].as_ref().is_err_and(|e| e.to_string().contains("test fault")), "{answers:?}");
        let following = following.expect("the waiting requests come back");
        assert!(!following.started(), "what was started read the rolled-back batch, so it begins again");

        // Handled from the store, the second visit lacks the first (the phone keeps both
        // and pushes them again); h2's visit merges.
        let (answers, after) = phones.engine.sync_batch_then(following, Vec::new);
        assert!(after.is_none());
        let outcomes: Vec<&Outcome> = answers.iter().map(|a| &a.as_ref().unwrap().acks[0].outcome).collect();
        let lacking = phones.first_visit.to_string();
        assert!(matches!(outcomes[0], Outcome::Quarantined { reason } if reason.contains(&lacking)), "{outcomes:?}");
        assert_eq!(outcomes[1], &Outcome::Accepted);
        assert_eq!(phones.visits(), (0, 1));
    }

    #[test]
    fn a_batch_started_before_a_commit_reads_what_that_batch_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (mut phones, first, next) = two_phones(dir.path());
        let (answers, following) = phones.engine.sync_batch_then(first, || next);
        assert_eq!(answers[0].as_ref().unwrap().acks[0].outcome, Outcome::Accepted);
        let following = following.expect("the waiting requests come back");
        assert!(following.started(), "started inside the first batch's transaction");

        // The second visit depends on the first, merged by the batch before: it merges.
        let (answers, _) = phones.engine.sync_batch_then(following, Vec::new);
        for answer in &answers {
            assert_eq!(answer.as_ref().unwrap().acks[0].outcome, Outcome::Accepted, "{answers:?}");
        }
        assert_eq!(phones.visits(), (2, 1));
    }
}
