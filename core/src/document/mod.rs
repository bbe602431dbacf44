//! One household as one Automerge document: its profile, visits and issues.
//!
//! This layer is sans-I/O: it creates, reads, edits and merges a document in memory.
//! `crate::store` persists it; `crate::replica` ties the two together.
//!
//! Document layout (see `docs/data-model.md`):
//! `{ schema_version, household: {..}, visits: {id: {..}}, issues: {id: {..}} }`.
//! Every container is created together with its parent, never lazily, so that two
//! replicas never create competing copies of the same map.

mod claimed;
mod conflicts;
pub mod shipped;
mod convert;
pub mod rules;
pub(crate) mod status;
pub(crate) mod stored;
mod view;
mod written;

pub use view::{Scope, View};
pub use written::WrittenPath;

use std::collections::{BTreeMap, HashSet};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, AutomergeError, Change, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use autosurgeon::reconcile_prop;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::*;
use stored::*;

/// Who is making a change: the member and the device they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub member_id: String,
    pub device_id: String,
}

/// What is recorded in every Automerge change's message.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChangeNote {
    member: String,
    device: String,
    action: String,
}

/// Stands in an action for the record the change wrote (`record_visit *`). The record's
/// id is already in the change's operations; a random id repeated in every message cost a
/// coordinator's first sync about 8% more bytes. `history` puts the id back.
const RECORD: &str = "*";

/// A change's time as Automerge records it: whole seconds since the Unix epoch, as
/// Automerge's own libraries write it. Milliseconds cost a coordinator's first sync about
/// 1.5% more bytes (each change's time is a delta in the document's columns).
fn change_time(at_ms: i64) -> i64 {
    at_ms.div_euclid(1000)
}

/// A change's time in milliseconds, from seconds or, as changes written before
/// 2026-11-30 hold, from milliseconds: seconds stay below 10^11 until the year 5138,
/// milliseconds are above it since 1973.
fn change_time_ms(time: i64) -> i64 {
    if time.abs() < 100_000_000_000 {
        time * 1000
    } else {
        time
    }
}

/// Read a change message back into who did what; foreign or missing messages read as unknown.
fn read_note(message: Option<&str>) -> (String, String, String) {
    message
        .and_then(|m| serde_json::from_str::<ChangeNote>(m).ok())
        .map(|n| (n.member, n.device, n.action))
        .unwrap_or_else(|| (String::new(), String::new(), message.unwrap_or_default().to_string()))
}

/// The id of the record a change wrote, from its shortest path: a visit, an issue, a
/// guardian or a student; the household itself otherwise (a change at the root creates it).
fn record_written<'a>(paths: &'a [WrittenPath], household_id: &'a str) -> &'a str {
    match paths.iter().min_by_key(|path| path.len()).map(Vec::as_slice) {
        Some([kind, id, ..]) if kind == "visits" || kind == "issues" => id,
        Some([household, kind, id, ..])
            if household == "household" && (kind == "guardians" || kind == "students") =>
        {
            id
        }
        _ => household_id,
    }
}

/// Most operations one change may carry. A phone's change is a record or an edit: tens of
/// operations, a few thousand for a long note typed as text.
pub const MAX_CHANGE_OPERATIONS: u64 = 100_000;

/// Decode an Automerge change from untrusted bytes, strictly: `Change::from_bytes` does
/// not verify the chunk's checksum (the first 4 bytes of its hash), so a corrupted change
/// would otherwise be accepted under a new hash; and it counts a change's operations one
/// by one, so their number is read from the run lengths first (`claimed`).
pub fn decode_change(bytes: Vec<u8>) -> std::result::Result<Change, String> {
    let claimed = operations_claimed(&bytes)?;
    if claimed > MAX_CHANGE_OPERATIONS {
        return Err(format!("it claims {claimed} operations, more than {MAX_CHANGE_OPERATIONS}"));
    }
    let change = Change::from_bytes(bytes).map_err(|e| e.to_string())?;
    if change.raw_bytes().get(4..8) != Some(&change.hash().0[..4]) {
        return Err("checksum mismatch".to_string());
    }
    Ok(change)
}

/// How many operations a change's bytes claim (read from its run lengths, without
/// decoding it), or why they are not a change `decode_change` takes.
pub fn operations_claimed(bytes: &[u8]) -> std::result::Result<u64, String> {
    claimed::operations_claimed(bytes)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn corrupt(id: &str, e: impl std::fmt::Display) -> Error {
    Error::CorruptHousehold { household_id: id.to_string(), reason: e.to_string() }
}

/// How a visit took place and what it covered: values this version knows.
fn check_visit_kinds(mode: Option<&VisitMode>, topics: Option<&Vec<VisitTopic>>) -> Result<()> {
    if let Some(mode) = mode {
        mode.check_input("mode/走访方式")?;
    }
    topics.into_iter().flatten().try_for_each(|t| t.check_input("topics/走访内容"))
}

/// A visit ends (if it says when) no earlier than it starts.
fn check_visit_times(started_at_ms: i64, ended_at_ms: Option<i64>) -> Result<()> {
    if ended_at_ms.is_some_and(|ended| ended < started_at_ms) {
        return Err(Error::invalid("走访结束时间早于开始时间", "a visit cannot end before it starts"));
    }
    Ok(())
}

/// A calendar date typed by a person: `YYYY-MM-DD`.
pub fn check_date(field: &str, value: &str) -> Result<()> {
    parse_date(value).map(|_| ()).ok_or_else(|| {
        Error::invalid(
            format!("{field} 应为 年-月-日 格式的日期，收到“{value}”"),
            format!("{field} must be a date as YYYY-MM-DD, got {value:?}"),
        )
    })
}

/// A date written exactly as `YYYY-MM-DD` (`2026-03-05`, not `2026-3-5` nor ` 2026-03-05`,
/// which chrono also reads): dates are compared as text (overdue is `due_on` before
/// today), which holds only for this one spelling.
pub fn parse_date(value: &str) -> Option<chrono::NaiveDate> {
    let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    (date.format("%Y-%m-%d").to_string() == value).then_some(date)
}

fn check_not_blank(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("{field} 不能为空"), format!("{field} must not be empty")));
    }
    Ok(())
}

fn check_phone(value: &str) -> Result<()> {
    let ok = value.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c))
        && value.chars().filter(char::is_ascii_digit).count() >= 5;
    if !value.is_empty() && !ok {
        return Err(Error::invalid(
            format!("电话号码“{value}”无效"),
            format!("phone number {value:?} is not valid"),
        ));
    }
    Ok(())
}

fn stamp(author: &Author, now_ms: i64) -> StampDoc {
    StampDoc { member: author.member_id.clone(), device: author.device_id.clone(), at: now_ms }
}

/// What `HouseholdDocument::apply` did with a batch of changes.
pub struct Applied {
    /// Changes new to this document and applied.
    pub applied: usize,
    /// Changes whose dependencies are missing, not applied yet.
    pub waiting: Vec<Change>,
}

/// A household's Automerge document, with typed reads and edits.
#[derive(Clone)]
pub struct HouseholdDocument {
    id: String,
    /// Boxed: an `AutoCommit` is over 4 KB by value, and documents are moved through
    /// caches, maps and threads far more often than they are cloned.
    doc: Box<AutoCommit>,
}

impl HouseholdDocument {
    /// Create the document of a new household; the caller is its only creator.
    pub fn create(
        actor: &ActorId,
        author: &Author,
        now_ms: i64,
        new: &NewHousehold,
    ) -> Result<HouseholdDocument> {
        check_not_blank("family_name/户名", &new.family_name)?;
        check_not_blank("community_id/社区", &new.community_id)?;
        check_not_blank("branch_id/支部", &new.branch_id)?;
        for g in &new.guardians {
            check_not_blank("name/姓名", &g.name)?;
            check_phone(&g.phone)?;
        }
        for s in &new.students {
            check_not_blank("name/姓名", &s.name)?;
            s.hukou_status.check_input("hukou_status/户籍")?;
        }
        let id = new_id();
        let household = HouseholdDoc {
            id: id.clone(),
            family_name: new.family_name.clone(),
            address: new.address.clone(),
            community_id: new.community_id.clone(),
            branch_id: new.branch_id.clone(),
            guardians: new
                .guardians
                .iter()
                .map(|g| {
                    (new_id(), GuardianDoc { name: g.name.clone(), relation: g.relation.clone(), phone: g.phone.clone() })
                })
                .collect(),
            students: new
                .students
                .iter()
                .map(|s| {
                    (
                        new_id(),
                        StudentDoc {
                            name: s.name.clone(),
                            school: s.school.clone(),
                            grade: s.grade.clone(),
                            hukou_status: s.hukou_status.as_str().to_string(),
                        },
                    )
                })
                .collect(),
            assigned_members: new.assigned_members.iter().map(|m| (m.clone(), true)).collect(),
            notes: new.notes.clone(),
            archived: false,
            created: stamp(author, now_ms),
        };
        let mut this = HouseholdDocument { id: id.clone(), doc: Box::new(AutoCommit::new().with_actor(actor.clone())) };
        this.change(author, now_ms, format!("create_household {RECORD}"), |doc| {
            doc.put(ROOT, "schema_version", SCHEMA_VERSION)?;
            Self::insert_record(doc, &ROOT, "household", &household)?;
            doc.put_object(ROOT, "visits", ObjType::Map)?;
            doc.put_object(ROOT, "issues", ObjType::Map)?;
            Ok(())
        })?;
        Ok(this)
    }

    /// Load a stored document strictly: a truncated or garbled one is an error, never a
    /// silently shorter document.
    pub fn load(id: &str, bytes: &[u8], actor: &ActorId) -> Result<HouseholdDocument> {
        let options = automerge::LoadOptions::new().on_partial_load(automerge::OnPartialLoad::Error);
        let doc = AutoCommit::load_with_options(bytes, options).map_err(|e| corrupt(id, e))?;
        Ok(HouseholdDocument { id: id.to_string(), doc: Box::new(doc.with_actor(actor.clone())) })
    }

    /// An empty document for a household first heard of from a peer.
    pub fn empty(id: &str, actor: &ActorId) -> HouseholdDocument {
        HouseholdDocument { id: id.to_string(), doc: Box::new(AutoCommit::new().with_actor(actor.clone())) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Take back every change applied since `heads`: the document as it was then, with
    /// the same id and actor (the server undoes a change that failed its check this way,
    /// instead of checking each change on a copy).
    pub fn rewind(&mut self, heads: &[ChangeHash]) -> Result<()> {
        let actor = self.doc.get_actor().clone();
        let mut doc = self.doc.fork_at(heads).map_err(|e| corrupt(&self.id, e))?.with_actor(actor);
        doc.reset_diff_cursor();
        *self.doc = doc;
        Ok(())
    }

    /// The whole document, compacted.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The whole document without Automerge's per-column compression, for sending in a
    /// message that is compressed as a whole (smaller than `save` once compressed).
    pub fn save_uncompressed(&mut self) -> Vec<u8> {
        self.doc.save_nocompress()
    }

    /// The whole document as a sync response carries it: without Automerge's per-column
    /// compression (the message is compressed as a whole), its chunk header and its heads
    /// (`shipped`).
    pub fn save_for_sync(&mut self) -> Result<Vec<u8>> {
        shipped::strip(&self.doc.save_nocompress()).map_err(|e| corrupt(&self.id, e))
    }

    /// A document as a sync response carried it (`save_for_sync`), and its bytes saved
    /// with its heads, as `load` reads and checks them. Automerge takes a document's heads
    /// from its bytes, so the document is loaded twice: once without heads, to find the
    /// changes no other change depends on, then with them.
    pub fn load_from_sync(id: &str, shipped: &[u8], actor: &ActorId) -> Result<(HouseholdDocument, Vec<u8>)> {
        let headless = shipped::dress(shipped, &[]).map_err(|e| corrupt(id, e))?;
        let options = automerge::LoadOptions::new()
            .on_partial_load(automerge::OnPartialLoad::Error)
            .verification_mode(automerge::VerificationMode::DontCheck);
        let mut history = AutoCommit::load_with_options(&headless, options).map_err(|e| corrupt(id, e))?;
        let metas = history.get_changes_meta(&[]);
        let depended_on: HashSet<ChangeHash> = metas.iter().flat_map(|m| m.deps.iter().copied()).collect();
        let mut heads: Vec<ChangeHash> = metas.iter().map(|m| m.hash).filter(|h| !depended_on.contains(h)).collect();
        heads.sort();
        let saved = shipped::dress(shipped, &heads).map_err(|e| corrupt(id, e))?;
        Ok((Self::load(id, &saved, actor)?, saved))
    }

    /// The changes made after `heads`, as bytes that `load` accepts after a snapshot.
    pub fn save_after(&mut self, heads: &[ChangeHash]) -> Vec<u8> {
        self.doc.save_after(heads)
    }

    pub fn has_change(&mut self, hash: &ChangeHash) -> bool {
        self.doc.get_change_meta_by_hash(hash).is_some()
    }

    /// The changes a peer lacks, given the heads it reported. Heads we do not know are
    /// ignored (the peer has something we lack; it will send it).
    pub fn changes_since(&mut self, peer_heads: &[ChangeHash]) -> Vec<Change> {
        let known: Vec<ChangeHash> = peer_heads.iter().copied().filter(|h| self.has_change(h)).collect();
        self.doc.get_changes(&known)
    }

    /// Apply changes from a peer. Changes whose dependencies are still missing are not
    /// given to Automerge; they are returned so the caller can keep them until the
    /// dependencies arrive.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<Applied> {
        let mut applied = 0;
        let mut waiting: Vec<Change> = Vec::new();
        let mut seen = HashSet::new();
        for c in changes {
            if seen.insert(c.hash()) && !self.has_change(&c.hash()) {
                waiting.push(c);
            }
        }
        loop {
            let (ready, rest): (Vec<Change>, Vec<Change>) = waiting
                .into_iter()
                .partition(|c| c.deps().iter().all(|d| self.doc.get_change_meta_by_hash(d).is_some()));
            waiting = rest;
            if ready.is_empty() {
                return Ok(Applied { applied, waiting });
            }
            applied += ready.len();
            self.doc.apply_changes(ready).map_err(|e| corrupt(&self.id, e))?;
            // automerge 0.12 records patch events while applying even with patches off, and
            // never drops them (~25 KB per change, copied by every clone): drop them.
            self.doc.reset_diff_cursor();
        }
    }

    /// Apply one change from a peer that is not trusted (a phone's push, on the server),
    /// and make sure the document then holds exactly that change. A change whose bytes
    /// decode can still not fit the document (altered on the way, or crafted), and
    /// Automerge 0.12 checks little of that: it keeps operations, not change bytes, and
    /// rebuilds a change from its operations when the document is saved or sent on, so an
    /// unfit change can come back as another one, and the document no longer loads. So,
    /// before applying: its dependencies are here, and it follows its actor's previous
    /// change (the next sequence number, depending on it, operations numbered after its);
    /// after: the change rebuilt from the document is the one given. A refused change is
    /// an error; the caller then takes the document back (`rewind`).
    pub fn apply_verified(&mut self, change: Change) -> Result<()> {
        if let Some(missing) = change.deps().iter().find(|d| !self.has_change(d)) {
            return Err(Error::invalid(
                format!("缺少它依赖的变更 {missing}"),
                format!("it depends on {missing}, which is not here"),
            ));
        }
        let not_following = || Error::invalid("它与同一设备此前的变更不衔接", "it does not follow its device's previous change");
        if !self.follows_its_actor(&change) {
            return Err(not_following());
        }
        let hash = change.hash();
        self.doc.apply_changes([change]).map_err(|e| match e {
            // Its sequence number is taken here (Automerge checks before applying anything).
            AutomergeError::DuplicateSeqNumber(..) => not_following(),
            e => Error::invalid(e.to_string(), e.to_string()),
        })?;
        self.doc.reset_diff_cursor();
        // Rebuilt by its hash alone: its dependencies were all here, so it is the only
        // change applied (nothing waited for it).
        if self.doc.get_change_by_hash(&hash).is_none_or(|rebuilt| rebuilt.hash() != hash) {
            return Err(Error::invalid("其中的操作与文档不符", "its operations do not fit the document"));
        }
        Ok(())
    }

    /// Whether `change` may be the next of its actor's changes here: sequence number 1,
    /// or one more than a change of the same actor that it depends on (directly or through
    /// others) and whose operation numbers it comes after. Looked up from the change's
    /// dependencies, not over the whole history: every actor's changes here run from 1
    /// without a gap (each pushed one passed this check), so a sequence number already
    /// taken, the one way left not to follow, is refused by Automerge as a duplicate.
    fn follows_its_actor(&mut self, change: &Change) -> bool {
        match change.seq() {
            0 => return false,
            1 => return true,
            _ => {}
        }
        let previous = change.seq() - 1;
        let mut seen = HashSet::new();
        let mut next: Vec<ChangeHash> = change.deps().to_vec();
        while let Some(hash) = next.pop() {
            if !seen.insert(hash) {
                continue;
            }
            let Some(meta) = self.doc.get_change_meta_by_hash(&hash) else { continue };
            if *meta.actor != *change.actor_id() {
                next.extend(meta.deps);
            } else if meta.seq == previous {
                return change.start_op().get() > meta.max_op;
            } else if meta.seq > previous {
                return false;
            }
            // An earlier change of the actor: its previous one is not behind it.
        }
        false
    }

    /// Run `edit` as one Automerge change recording who made it and what it did.
    /// An error rolls the edit back, leaving the document as it was.
    fn change<T>(
        &mut self,
        author: &Author,
        now_ms: i64,
        action: String,
        edit: impl FnOnce(&mut AutoCommit) -> Result<T>,
    ) -> Result<T> {
        match edit(&mut self.doc) {
            Ok(value) => {
                let note = ChangeNote {
                    member: author.member_id.clone(),
                    device: author.device_id.clone(),
                    action,
                };
                let message = serde_json::to_string(&note).expect("a change note serialises");
                self.doc.commit_with(CommitOptions::default().with_message(message).with_time(change_time(now_ms)));
                Ok(value)
            }
            Err(e) => {
                self.doc.rollback();
                Err(e)
            }
        }
    }

    // ----- reading -------------------------------------------------------------

    /// The schema version the document was written with (1 when absent).
    pub fn schema_version(&self) -> u64 {
        match self.doc.get(ROOT, "schema_version") {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Uint(v) => *v,
                ScalarValue::Int(v) => *v as u64,
                _ => SCHEMA_VERSION,
            },
            _ => SCHEMA_VERSION,
        }
    }

    /// Whether the document holds a household profile yet (a document received from a
    /// peer may still wait for its first change).
    pub fn has_household(&self) -> bool {
        matches!(self.doc.get(ROOT, "household"), Ok(Some(_)))
    }

    /// Read the record at `path` (one `hydrate` of its object); `None` if absent.
    fn read_record<T: DeserializeOwned>(&self, path: &[&str]) -> Result<Option<T>> {
        let Some(obj) = Self::map_at(&self.doc, path) else { return Ok(None) };
        let value = self.doc.hydrate(&obj, None).map_err(|e| corrupt(&self.id, e))?;
        serde_json::from_value(convert::to_json(&value))
            .map(Some)
            .map_err(|e| corrupt(&self.id, format!("{}: {e}", path.join("/"))))
    }

    pub fn household(&self) -> Result<Household> {
        self.read_record::<HouseholdDoc>(&["household"])?
            .map(|h| h.to_model(&self.id))
            .ok_or_else(|| Error::not_found("household", &self.id))
    }

    fn visit_docs(&self) -> Result<BTreeMap<String, VisitDoc>> {
        Ok(self.read_record(&["visits"])?.unwrap_or_default())
    }

    fn issue_docs(&self) -> Result<BTreeMap<String, IssueDoc>> {
        Ok(self.read_record(&["issues"])?.unwrap_or_default())
    }

    /// Every visit, deleted ones included (see `Visit::deleted`), oldest first.
    pub fn visits(&self) -> Result<Vec<Visit>> {
        let mut visits: Vec<Visit> = self.visit_docs()?.iter().map(|(id, v)| v.to_model(id, &self.id)).collect();
        visits.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok(visits)
    }

    /// Every issue, deleted ones included, in the order they were raised.
    pub fn issues(&self) -> Result<Vec<Issue>> {
        let mut issues: Vec<Issue> = self.issue_docs()?.iter().map(|(id, i)| i.to_model(id, &self.id)).collect();
        issues.sort_by(|a, b| (a.raised.at_ms, &a.id).cmp(&(b.raised.at_ms, &b.id)));
        Ok(issues)
    }

    fn visit_doc(&self, visit_id: &str) -> Result<VisitDoc> {
        self.read_record(&["visits", visit_id])?.ok_or_else(|| Error::not_found("visit", visit_id))
    }

    fn issue_doc(&self, issue_id: &str) -> Result<IssueDoc> {
        self.read_record(&["issues", issue_id])?.ok_or_else(|| Error::not_found("issue", issue_id))
    }

    pub fn visit(&self, visit_id: &str) -> Result<Visit> {
        Ok(self.visit_doc(visit_id)?.to_model(visit_id, &self.id))
    }

    pub fn issue(&self, issue_id: &str) -> Result<Issue> {
        Ok(self.issue_doc(issue_id)?.to_model(issue_id, &self.id))
    }

    /// Who changed what, when: one entry per Automerge change, oldest first.
    pub fn history(&mut self) -> Vec<HistoryEntry> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .map(|c| {
                let (member_id, device_id, mut action) = read_note(c.message());
                if action.split(' ').any(|word| word == RECORD) {
                    let paths: Vec<WrittenPath> = self.paths_written_by(&c).into_keys().collect();
                    let record = record_written(&paths, &self.id);
                    let words: Vec<&str> = action.split(' ').map(|w| if w == RECORD { record } else { w }).collect();
                    action = words.join(" ");
                }
                HistoryEntry {
                    change_hash: c.hash().to_string(),
                    by: Stamp { member_id, device_id, at_ms: change_time_ms(c.timestamp()) },
                    action,
                }
            })
            .collect()
    }

    /// A whole-document view for comparing replicas in tests and diagnostics.
    pub fn to_json(&self) -> serde_json::Value {
        self.doc.hydrate(&ROOT, None).map(|v| convert::to_json(&v)).unwrap_or(serde_json::Value::Null)
    }

    // ----- editing -------------------------------------------------------------

    fn map_at(doc: &AutoCommit, path: &[&str]) -> Option<ObjId> {
        let mut obj = ROOT;
        for key in path {
            match doc.get(&obj, *key) {
                Ok(Some((Value::Object(ObjType::Map), id))) => obj = id,
                _ => return None,
            }
        }
        Some(obj)
    }

    fn household_map(&self) -> Result<ObjId> {
        Self::map_at(&self.doc, &["household"]).ok_or_else(|| Error::not_found("household", &self.id))
    }

    fn visit_map(&self, visit_id: &str) -> Result<ObjId> {
        Self::map_at(&self.doc, &["visits", visit_id]).ok_or_else(|| Error::not_found("visit", visit_id))
    }

    fn issue_map(&self, issue_id: &str) -> Result<ObjId> {
        Self::map_at(&self.doc, &["issues", issue_id]).ok_or_else(|| Error::not_found("issue", issue_id))
    }

    /// Put a scalar unless it already has that value (so that saving an unchanged form
    /// creates no change and no conflict).
    fn put_changed(doc: &mut AutoCommit, obj: &ObjId, key: &str, value: ScalarValue) -> Result<()> {
        if let Ok(Some((Value::Scalar(current), _))) = doc.get(obj, key) {
            if doc.get_all(obj, key).map(|all| all.len()).unwrap_or(0) == 1 && *current == value {
                return Ok(());
            }
        }
        doc.put(obj, key, value)?;
        Ok(())
    }

    fn put_opt(doc: &mut AutoCommit, obj: &ObjId, key: &str, value: Option<ScalarValue>) -> Result<()> {
        Self::put_changed(doc, obj, key, value.unwrap_or(ScalarValue::Null))
    }

    /// Edit a note (`notes`, `description`, `resolution`). A record is created with its
    /// notes as plain strings: most notes are written once, and a plain string costs one
    /// operation where text costs one per character. The first edit turns the note into
    /// Automerge text; from then on concurrent edits merge character by character.
    fn update_note(doc: &mut AutoCommit, obj: &ObjId, key: &str, value: &str) -> Result<()> {
        match doc.get(obj, key)? {
            Some((Value::Object(ObjType::Text), text)) => doc.update_text(&text, value)?,
            Some((Value::Scalar(current), _))
                if current.as_str() == Some(value) && doc.get_all(obj, key)?.len() == 1 => {}
            _ => {
                let text = doc.put_object(obj, key, ObjType::Text)?;
                doc.update_text(&text, value)?;
            }
        }
        Ok(())
    }

    /// Create a record (a map with its nested lists and texts) in one batch.
    fn insert_record<T: Serialize>(doc: &mut AutoCommit, obj: &ObjId, key: &str, record: &T) -> Result<ObjId> {
        let json = serde_json::to_value(record).map_err(|e| Error::Storage { reason: e.to_string() })?;
        Ok(doc.batch_create_object(obj, key, &convert::from_json(&json), false)?)
    }

    fn put_list(doc: &mut AutoCommit, obj: &ObjId, key: &str, values: &[String]) -> Result<()> {
        reconcile_prop(doc, obj, key, values).map_err(|e| Error::Storage { reason: e.to_string() })
    }

    pub fn update_household(&mut self, author: &Author, now_ms: i64, update: &HouseholdUpdate) -> Result<()> {
        let obj = self.household_map()?;
        for (field, value) in [
            ("family_name/户名", &update.family_name),
            ("community_id/社区", &update.community_id),
            ("branch_id/支部", &update.branch_id),
        ] {
            if let Some(value) = value {
                check_not_blank(field, value)?;
            }
        }
        self.change(author, now_ms, "update_household".into(), |doc| {
            for (key, value) in [
                ("family_name", &update.family_name),
                ("address", &update.address),
                ("community_id", &update.community_id),
                ("branch_id", &update.branch_id),
            ] {
                if let Some(v) = value {
                    Self::put_changed(doc, &obj, key, v.as_str().into())?;
                }
            }
            if let Some(archived) = update.archived {
                Self::put_changed(doc, &obj, "archived", archived.into())?;
            }
            if let Some(notes) = &update.notes {
                Self::update_note(doc, &obj, "notes", notes)?;
            }
            Ok(())
        })
    }

    pub fn add_guardian(&mut self, author: &Author, now_ms: i64, guardian: &NewGuardian) -> Result<String> {
        check_not_blank("name/姓名", &guardian.name)?;
        check_phone(&guardian.phone)?;
        let guardians = Self::map_at(&self.doc, &["household", "guardians"])
            .ok_or_else(|| Error::not_found("household", &self.id))?;
        let id = new_id();
        let value = GuardianDoc {
            name: guardian.name.clone(),
            relation: guardian.relation.clone(),
            phone: guardian.phone.clone(),
        };
        self.change(author, now_ms, format!("add_guardian {RECORD}"), |doc| {
            Self::insert_record(doc, &guardians, &id, &value).map(|_| ())
        })?;
        Ok(id)
    }

    pub fn update_guardian(
        &mut self,
        author: &Author,
        now_ms: i64,
        guardian_id: &str,
        update: &GuardianUpdate,
    ) -> Result<()> {
        let obj = Self::map_at(&self.doc, &["household", "guardians", guardian_id])
            .ok_or_else(|| Error::not_found("guardian", guardian_id))?;
        if let Some(name) = &update.name {
            check_not_blank("name/姓名", name)?;
        }
        if let Some(phone) = &update.phone {
            check_phone(phone)?;
        }
        self.change(author, now_ms, format!("update_guardian {RECORD}"), |doc| {
            for (key, value) in [("name", &update.name), ("relation", &update.relation), ("phone", &update.phone)] {
                if let Some(v) = value {
                    Self::put_changed(doc, &obj, key, v.as_str().into())?;
                }
            }
            Ok(())
        })
    }

    pub fn add_student(&mut self, author: &Author, now_ms: i64, student: &NewStudent) -> Result<String> {
        check_not_blank("name/姓名", &student.name)?;
        student.hukou_status.check_input("hukou_status/户籍")?;
        let students = Self::map_at(&self.doc, &["household", "students"])
            .ok_or_else(|| Error::not_found("household", &self.id))?;
        let id = new_id();
        let value = StudentDoc {
            name: student.name.clone(),
            school: student.school.clone(),
            grade: student.grade.clone(),
            hukou_status: student.hukou_status.as_str().to_string(),
        };
        self.change(author, now_ms, format!("add_student {RECORD}"), |doc| {
            Self::insert_record(doc, &students, &id, &value).map(|_| ())
        })?;
        Ok(id)
    }

    /// Fix a member to this household (`assigned = true`) or release them.
    pub fn set_member_assigned(&mut self, author: &Author, now_ms: i64, member_id: &str, assigned: bool) -> Result<()> {
        check_not_blank("member_id/党员", member_id)?;
        let members = Self::map_at(&self.doc, &["household", "assigned_members"])
            .ok_or_else(|| Error::not_found("household", &self.id))?;
        let present = matches!(self.doc.get(&members, member_id), Ok(Some(_)));
        if present == assigned {
            return Ok(());
        }
        let action = if assigned { "assign_member" } else { "unassign_member" };
        self.change(author, now_ms, format!("{action} {member_id}"), |doc| {
            if assigned {
                doc.put(&members, member_id, true)?;
            } else {
                doc.delete(&members, member_id)?;
            }
            Ok(())
        })
    }

    pub fn record_visit(&mut self, author: &Author, now_ms: i64, new: &NewVisit) -> Result<String> {
        check_visit_times(new.started_at_ms, new.ended_at_ms)?;
        check_visit_kinds(Some(&new.mode), Some(&new.topics))?;
        if let Some(d) = &new.follow_up_on {
            check_date("follow_up_on/回访日期", d)?;
        }
        let visits = Self::map_at(&self.doc, &["visits"]).ok_or_else(|| Error::not_found("household", &self.id))?;
        // Each member once; the recording member first if not named.
        let mut visitors = Vec::with_capacity(new.visitors.len() + 1);
        if !new.visitors.contains(&author.member_id) {
            visitors.push(author.member_id.clone());
        }
        for member in &new.visitors {
            if !visitors.contains(member) {
                visitors.push(member.clone());
            }
        }
        let id = new_id();
        let value = VisitDoc {
            id: id.clone(),
            visitors,
            started_at: new.started_at_ms,
            ended_at: new.ended_at_ms,
            mode: new.mode.as_str().to_string(),
            people_met: new.people_met.clone(),
            topics: new.topics.iter().map(|t| t.as_str().to_string()).collect(),
            notes: new.notes.clone(),
            follow_up_on: new.follow_up_on.clone(),
            latitude: new.location.as_ref().map(|l| l.latitude),
            longitude: new.location.as_ref().map(|l| l.longitude),
            accuracy_m: new.location.as_ref().and_then(|l| l.accuracy_m),
            recorded: stamp(author, now_ms),
            deleted: None,
        };
        self.change(author, now_ms, format!("record_visit {RECORD}"), |doc| {
            Self::insert_record(doc, &visits, &id, &value).map(|_| ())
        })?;
        Ok(id)
    }

    pub fn update_visit(&mut self, author: &Author, now_ms: i64, visit_id: &str, update: &VisitUpdate) -> Result<()> {
        let obj = self.visit_map(visit_id)?;
        if update.started_at_ms.is_some() || update.ended_at_ms.is_some() {
            let visit: VisitDoc =
                self.read_record(&["visits", visit_id])?.ok_or_else(|| Error::not_found("visit", visit_id))?;
            check_visit_times(update.started_at_ms.unwrap_or(visit.started_at), update.ended_at_ms.or(visit.ended_at))?;
        }
        check_visit_kinds(update.mode.as_ref(), update.topics.as_ref())?;
        if let Some(d) = &update.follow_up_on {
            check_date("follow_up_on/回访日期", d)?;
        }
        self.change(author, now_ms, format!("update_visit {RECORD}"), |doc| {
            if let Some(v) = update.started_at_ms {
                Self::put_changed(doc, &obj, "started_at", v.into())?;
            }
            if let Some(v) = update.ended_at_ms {
                Self::put_changed(doc, &obj, "ended_at", v.into())?;
            }
            if let Some(v) = &update.mode {
                Self::put_changed(doc, &obj, "mode", v.as_str().into())?;
            }
            if let Some(v) = &update.follow_up_on {
                Self::put_changed(doc, &obj, "follow_up_on", v.as_str().into())?;
            }
            if let Some(v) = &update.people_met {
                Self::put_list(doc, &obj, "people_met", v)?;
            }
            if let Some(v) = &update.topics {
                let topics: Vec<String> = v.iter().map(|t| t.as_str().to_string()).collect();
                Self::put_list(doc, &obj, "topics", &topics)?;
            }
            if let Some(v) = &update.notes {
                Self::update_note(doc, &obj, "notes", v)?;
            }
            Ok(())
        })
    }

    /// Soft-delete (`deleted = true`) or restore a visit or an issue.
    fn set_deleted(&mut self, author: &Author, now_ms: i64, kind: &str, id: &str, deleted: bool) -> Result<()> {
        let obj = Self::map_at(&self.doc, &[&format!("{kind}s"), id]).ok_or_else(|| Error::not_found(kind, id))?;
        let is_deleted = matches!(self.doc.get(&obj, "deleted"), Ok(Some((Value::Object(_), _))));
        if is_deleted == deleted {
            return Ok(());
        }
        let action = if deleted { "delete" } else { "restore" };
        self.change(author, now_ms, format!("{action}_{kind} {RECORD}"), |doc| {
            if deleted {
                Self::insert_record(doc, &obj, "deleted", &stamp(author, now_ms))?;
            } else {
                doc.delete(&obj, "deleted")?;
            }
            Ok(())
        })
    }

    pub fn set_visit_deleted(&mut self, author: &Author, now_ms: i64, visit_id: &str, deleted: bool) -> Result<()> {
        self.set_deleted(author, now_ms, "visit", visit_id, deleted)
    }

    pub fn set_issue_deleted(&mut self, author: &Author, now_ms: i64, issue_id: &str, deleted: bool) -> Result<()> {
        self.set_deleted(author, now_ms, "issue", issue_id, deleted)
    }

    pub fn raise_issue(&mut self, author: &Author, now_ms: i64, new: &NewIssue) -> Result<String> {
        check_not_blank("title/标题", &new.title)?;
        new.category.check_input("category/类别")?;
        new.urgency.check_input("urgency/紧急程度")?;
        if let Some(d) = &new.due_on {
            check_date("due_on/期限", d)?;
        }
        if let Some(v) = &new.visit_id {
            self.visit_map(v)?;
        }
        let issues = Self::map_at(&self.doc, &["issues"]).ok_or_else(|| Error::not_found("household", &self.id))?;
        let id = new_id();
        let value = IssueDoc {
            id: id.clone(),
            visit_id: new.visit_id.clone(),
            category: new.category.as_str().to_string(),
            title: new.title.clone(),
            description: new.description.clone(),
            urgency: new.urgency.as_str().to_string(),
            assignee: new.assignee.clone(),
            due_on: new.due_on.clone(),
            transitions: BTreeMap::new(),
            comments: BTreeMap::new(),
            resolution: String::new(),
            feedback_satisfaction: None,
            feedback_comment: None,
            raised: stamp(author, now_ms),
            deleted: None,
        };
        self.change(author, now_ms, format!("raise_issue {RECORD}"), |doc| {
            Self::insert_record(doc, &issues, &id, &value).map(|_| ())
        })?;
        Ok(id)
    }

    pub fn update_issue(&mut self, author: &Author, now_ms: i64, issue_id: &str, update: &IssueUpdate) -> Result<()> {
        let obj = self.issue_map(issue_id)?;
        if let Some(t) = &update.title {
            check_not_blank("title/标题", t)?;
        }
        if let Some(c) = &update.category {
            c.check_input("category/类别")?;
        }
        if let Some(u) = &update.urgency {
            u.check_input("urgency/紧急程度")?;
        }
        if let Some(d) = &update.due_on {
            check_date("due_on/期限", d)?;
        }
        if let Some(f) = &update.feedback {
            if !(1..=5).contains(&f.satisfaction) {
                return Err(Error::invalid("满意度应为 1 到 5", "satisfaction must be from 1 to 5"));
            }
        }
        self.change(author, now_ms, format!("update_issue {RECORD}"), |doc| {
            for (key, value) in [
                ("category", update.category.as_ref().map(|c| c.as_str())),
                ("title", update.title.as_deref()),
                ("urgency", update.urgency.as_ref().map(|u| u.as_str())),
                ("assignee", update.assignee.as_deref()),
                ("due_on", update.due_on.as_deref()),
            ] {
                if let Some(v) = value {
                    Self::put_changed(doc, &obj, key, v.into())?;
                }
            }
            if let Some(v) = &update.description {
                Self::update_note(doc, &obj, "description", v)?;
            }
            if let Some(v) = &update.resolution {
                Self::update_note(doc, &obj, "resolution", v)?;
            }
            if let Some(f) = &update.feedback {
                Self::put_opt(doc, &obj, "feedback_satisfaction", Some((f.satisfaction as i64).into()))?;
                Self::put_changed(doc, &obj, "feedback_comment", f.comment.as_str().into())?;
            }
            Ok(())
        })
    }

    /// Move a problem to `to`, checked against its current status. `force` is used only to
    /// settle a status conflict: the move is then the one the chosen value's own
    /// transition made (from the status both moves left), which was allowed, where a move
    /// from the value shown may not be (referred back to acknowledged).
    fn add_transition(
        &mut self,
        author: &Author,
        now_ms: i64,
        issue_id: &str,
        to: &IssueStatus,
        reason: &str,
        force: bool,
    ) -> Result<()> {
        let issue = self.issue_doc(issue_id)?;
        let derived = status::derive(&issue.transitions);
        if !force && !derived.status.can_move_to(to) {
            return Err(Error::InvalidTransition { from: derived.status.to_string(), to: to.to_string() });
        }
        if matches!(to, IssueStatus::Other(_)) {
            return Err(Error::invalid(format!("未知的问题状态“{to}”"), format!("unknown issue status {to:?}")));
        }
        let transitions = Self::map_at(&self.doc, &["issues", issue_id, "transitions"])
            .ok_or_else(|| Error::not_found("issue", issue_id))?;
        let chosen_move = || {
            let heads = derived.heads.iter().filter_map(|head| issue.transitions.get(head));
            heads.filter(|t| IssueStatus::from(t.to.as_str()) == *to).map(|t| t.from.clone()).next()
        };
        let from = force.then(chosen_move).flatten().unwrap_or_else(|| derived.status.as_str().to_string());
        let id = new_id();
        let value = TransitionDoc {
            id: id.clone(),
            from,
            to: to.as_str().to_string(),
            reason: reason.to_string(),
            after: derived.heads,
            by: stamp(author, now_ms),
        };
        self.change(author, now_ms, format!("transition_issue {RECORD} {} -> {}", value.from, value.to), |doc| {
            Self::insert_record(doc, &transitions, &id, &value).map(|_| ())
        })
    }

    pub fn transition_issue(
        &mut self,
        author: &Author,
        now_ms: i64,
        issue_id: &str,
        to: &IssueStatus,
        reason: &str,
    ) -> Result<()> {
        self.add_transition(author, now_ms, issue_id, to, reason, false)
    }

    pub fn comment_on_issue(&mut self, author: &Author, now_ms: i64, issue_id: &str, text: &str) -> Result<String> {
        check_not_blank("comment/评论", text)?;
        let comments = Self::map_at(&self.doc, &["issues", issue_id, "comments"])
            .ok_or_else(|| Error::not_found("issue", issue_id))?;
        let id = new_id();
        let value = CommentDoc { id: id.clone(), text: text.to_string(), by: stamp(author, now_ms) };
        self.change(author, now_ms, format!("comment_on_issue {RECORD}"), |doc| {
            Self::insert_record(doc, &comments, &id, &value).map(|_| ())
        })?;
        Ok(id)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! What the core's tests build on: a household, a visit, and changes made of given
    //! operations.

    use automerge::legacy::Op;
    use automerge::{ActorId, Change, ChangeHash};

    use super::HouseholdDocument;
    use crate::{Author, NewHousehold, NewVisit, VisitMode, VisitTopic};

    /// The author every document test writes as.
    pub fn author() -> Author {
        Author { member_id: "m1".into(), device_id: "phone".into() }
    }

    /// A household 王 of branch b1 and community c1, as it is entered.
    pub fn new_household() -> NewHousehold {
        NewHousehold { family_name: "王".into(), branch_id: "b1".into(), community_id: "c1".into(), ..Default::default() }
    }

    /// That household, created on a new actor.
    pub fn household() -> HouseholdDocument {
        HouseholdDocument::create(&ActorId::random(), &author(), 1_000, &new_household()).unwrap()
    }

    /// An in-person visit to `household_id` with `notes`.
    pub fn visit(household_id: &str, notes: &str) -> NewVisit {
        NewVisit {
            household_id: household_id.into(),
            visitors: vec![],
            started_at_ms: 2_000,
            ended_at_ms: Some(3_000),
            mode: VisitMode::InPerson,
            people_met: vec!["母亲 李芳".into()],
            topics: vec![VisitTopic::FamilyEducation],
            notes: notes.into(),
            follow_up_on: None,
            location: None,
        }
    }

    /// The first change of `actor`, with `operations` numbered from `start_op`, encoded as
    /// Automerge encodes any change (its bytes decode, its checksum is right).
    pub fn change_of(actor: ActorId, start_op: u64, deps: Vec<ChangeHash>, operations: Vec<Op>) -> Change {
        Change::from(automerge::ExpandedChange {
            operations,
            actor_id: actor,
            hash: None,
            seq: 1,
            start_op: start_op.try_into().unwrap(),
            time: 0,
            message: None,
            deps,
            extra_bytes: vec![],
            author: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{author, household, visit};
    use super::*;

    #[test]
    fn change_times_are_written_in_seconds_and_read_back_in_milliseconds_as_older_changes_hold_them() {
        let at_ms = 1_796_035_730_114;
        let mut doc = household();
        let saved = doc.save();
        let before = doc.heads();
        doc.record_visit(&author(), at_ms, &visit(doc.id(), "家访")).unwrap();
        let change = doc.changes_since(&before).remove(0);
        assert_eq!(change.timestamp(), 1_796_035_730, "whole seconds, as Automerge writes them");
        let history = doc.history();
        assert_eq!((history[0].by.at_ms, history[1].by.at_ms), (1_000, 1_796_035_730_000));

        // The same change written in milliseconds, as changes before 2026-11-30 are.
        let mut older = HouseholdDocument::load(doc.id(), &saved, &ActorId::random()).unwrap();
        assert_eq!(older.apply(vec![reencoded(&change, |c| c.time = at_ms)]).unwrap().applied, 1);
        assert_eq!(older.history()[1].by.at_ms, at_ms);
    }

    #[test]
    fn settling_a_status_conflict_on_the_value_that_lost_passes_the_rules() {
        let (member, coordinator) = (author(), Author { member_id: "c-1".into(), device_id: "c-device".into() });
        let mut one = household();
        let new = NewIssue {
            household_id: one.id().into(),
            visit_id: None,
            category: IssueCategory::Enrolment,
            title: "入学材料".into(),
            description: String::new(),
            urgency: Urgency::Normal,
            assignee: None,
            due_on: None,
        };
        let issue = one.raise_issue(&member, 2_000, &new).unwrap();
        let saved = one.save();
        let mut two = HouseholdDocument::load(one.id(), &saved, &ActorId::random()).unwrap();
        let (before_one, before_two) = (one.heads(), two.heads());
        one.transition_issue(&member, 3_000, &issue, &IssueStatus::Acknowledged, "已了解").unwrap();
        two.transition_issue(&coordinator, 3_000, &issue, &IssueStatus::Referred, "转交街道").unwrap();
        one.apply(two.changes_since(&before_two)).unwrap();
        two.apply(one.changes_since(&before_one)).unwrap();
        assert_eq!(one.issues().unwrap()[0].status, IssueStatus::Referred);

        // The member settles on acknowledged, the value that lost; the server checks it.
        let before = one.heads();
        one.resolve_conflict(&member, 4_000, &format!("issues/{issue}/status"), "acknowledged").unwrap();
        let settled = one.changes_since(&before).remove(0);
        two.apply_verified(settled.clone()).unwrap();
        assert!(rules::check_change(&mut two, &settled, &member.member_id, crate::model::Role::Member).is_ok());
        assert_eq!(two.issues().unwrap()[0].status, IssueStatus::Acknowledged);
    }

    #[test]
    fn a_change_leaving_the_household_without_a_community_fails_the_rules_whoever_makes_it() {
        let mut doc = household();
        let before = doc.heads();
        // Written past `update_household`'s own check, as a crafted change would be.
        let obj = doc.household_map().unwrap();
        doc.change(&author(), 2_000, "update_household".into(), |d| Ok(d.put(&obj, "community_id", "")?)).unwrap();
        let change = doc.changes_since(&before).remove(0);
        let refused = rules::check_change(&mut doc, &change, "c-1", crate::model::Role::Coordinator).unwrap_err();
        assert!(refused.contains("does not fit the schema") && refused.contains("community_id is blank"), "{refused}");

        // A blank an older version left locks nothing: a change to another field passes.
        let before = doc.heads();
        doc.update_household(&author(), 3_000, &HouseholdUpdate { address: Some("新地址".into()), ..Default::default() })
            .unwrap();
        let other = doc.changes_since(&before).remove(0);
        assert!(rules::check_change(&mut doc, &other, "c-1", crate::model::Role::Coordinator).is_ok());
    }

    #[test]
    fn rewinding_takes_back_the_changes_applied_since_and_keeps_the_actor() {
        let author = author();
        let mut phone = household();
        let server_actor = ActorId::random();
        let saved = phone.save();
        let mut server = HouseholdDocument::load(phone.id(), &saved, &server_actor).unwrap();
        let before = server.heads();
        let visit = NewVisit {
            household_id: phone.id().into(),
            visitors: vec![],
            started_at_ms: 2_000,
            ended_at_ms: None,
            mode: VisitMode::InPerson,
            people_met: vec!["母亲".into()],
            topics: vec![],
            notes: "家访".into(),
            follow_up_on: None,
            location: None,
        };
        phone.record_visit(&author, 2_000, &visit).unwrap();
        let change = phone.changes_since(&before);
        assert_eq!(server.apply(change.clone()).unwrap().applied, 1);
        assert_eq!(server.visits().unwrap().len(), 1);

        server.rewind(&before).unwrap();
        assert_eq!(server.heads(), before);
        assert!(server.visits().unwrap().is_empty());
        assert_eq!(server.household().unwrap().family_name, "王");
        // The change can come again later, and the server's own edits keep its actor.
        assert_eq!(server.apply(change).unwrap().applied, 1);
        let heads = server.heads();
        let rename = HouseholdUpdate { family_name: Some("汪".into()), ..Default::default() };
        server.update_household(&author, 3_000, &rename).unwrap();
        let edits = server.changes_since(&heads);
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].actor_id(), &server_actor);
    }

    /// `change` re-encoded with other header fields: its bytes decode and its checksum is
    /// right, as a phone in the wrong hands could send it.
    fn reencoded(change: &Change, edit: impl FnOnce(&mut automerge::ExpandedChange)) -> Change {
        let mut expanded = change.decode();
        edit(&mut expanded);
        expanded.hash = None;
        Change::from(expanded)
    }

    /// A household created on the server (its saved bytes) and a phone's copy of it.
    fn server_and_phone() -> (HouseholdDocument, Vec<u8>, HouseholdDocument) {
        let mut server = household();
        let saved = server.save();
        let phone = HouseholdDocument::load(server.id(), &saved, &ActorId::random()).unwrap();
        (server, saved, phone)
    }

    #[test]
    fn a_change_that_does_not_follow_its_device_is_refused_and_changes_nothing() {
        let author = author();
        let (mut server, _, mut phone) = server_and_phone();
        let base = phone.heads();
        let id = phone.id().to_string();
        phone.record_visit(&author, 2_000, &visit(&id, "第一次")).unwrap();
        phone.record_visit(&author, 3_000, &visit(&id, "第二次")).unwrap();
        let changes = phone.changes_since(&base);
        let (c1, c2) = (changes[0].clone(), changes[1].clone());
        let refused = |server: &mut HouseholdDocument, change: Change, words: &str| {
            let heads = server.heads();
            let error = server.apply_verified(change).unwrap_err().to_string();
            assert!(error.contains(words), "{error}");
            assert_eq!(server.heads(), heads, "nothing of it was applied");
        };

        refused(&mut server, c2.clone(), "depends on");
        server.apply_verified(c1.clone()).unwrap();
        // The device's first change again, made later: its sequence number is taken.
        refused(&mut server, reencoded(&c1, |c| c.time += 1), "does not follow");
        // A sequence number skipped, and operations numbered over the first change's.
        refused(&mut server, reencoded(&c2, |c| c.seq = 3), "does not follow");
        refused(&mut server, reencoded(&c2, |c| c.start_op = c1.start_op()), "does not follow");

        server.apply_verified(c2).unwrap();
        let saved = server.save();
        let reloaded = HouseholdDocument::load(server.id(), &saved, &ActorId::random()).unwrap();
        assert_eq!(reloaded.visits().unwrap().len(), 2, "both visits, and the document loads again");
    }

    #[test]
    fn a_device_follows_its_previous_change_through_changes_of_others() {
        let author = author();
        let (mut server, saved, mut phone) = server_and_phone();
        let id = phone.id().to_string();
        let base = phone.heads();
        phone.record_visit(&author, 2_000, &visit(&id, "第一次")).unwrap();
        let c1 = phone.changes_since(&base).remove(0);
        server.apply_verified(c1.clone()).unwrap();
        // Another phone's change on top of it, which the first phone merges before its next.
        let mut other = HouseholdDocument::load(&id, &saved, &ActorId::random()).unwrap();
        other.apply(vec![c1.clone()]).unwrap();
        let before = other.heads();
        other.record_visit(&author, 3_000, &visit(&id, "另一台手机")).unwrap();
        let by_other = other.changes_since(&before).remove(0);
        server.apply_verified(by_other.clone()).unwrap();
        phone.apply(vec![by_other.clone()]).unwrap();
        let before = phone.heads();
        phone.record_visit(&author, 4_000, &visit(&id, "第二次")).unwrap();
        let c2 = phone.changes_since(&before).remove(0);
        // Automerge names a device's previous change among the dependencies; a change
        // may also reach it only through another's (it is the same history).
        assert!(c2.deps().contains(&c1.hash()) && c2.deps().contains(&by_other.hash()), "{:?}", c2.deps());
        let through_other = reencoded(&c2, |c| c.deps = vec![by_other.hash()]);

        // A sequence number skipped behind the same dependencies: refused, nothing applied.
        let heads = server.heads();
        let skipped = reencoded(&through_other, |c| c.seq = 3);
        let error = server.apply_verified(skipped).unwrap_err().to_string();
        assert!(error.contains("does not follow"), "{error}");
        assert_eq!(server.heads(), heads);
        server.apply_verified(through_other).unwrap();
        assert_eq!(server.visits().unwrap().len(), 3);
    }

    #[test]
    fn a_change_that_comes_back_as_another_is_refused_and_the_document_still_loads() {
        use doorstep_tests::altered::altered;
        use rand::rngs::StdRng;
        use rand::SeedableRng;
        let author = author();
        let (mut server, saved, mut phone) = server_and_phone();
        let base = phone.heads();
        let id = phone.id().to_string();
        phone.record_visit(&author, 3_000, &visit(&id, "与家长交流了孩子的学习情况")).unwrap();
        let original = phone.changes_since(&base).remove(0);

        // Alter a byte or two and recompute the checksum, until a change decodes, follows
        // its device, applies, and yet does not come back as itself (a few in a hundred).
        let rng = &mut StdRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut found = None;
        for _ in 0..20_000 {
            let bytes = altered(original.raw_bytes(), rng);
            let Ok(change) = decode_change(bytes) else { continue };
            let mut copy = HouseholdDocument::load(server.id(), &saved, &ActorId::random()).unwrap();
            let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| copy.apply_verified(change.clone())));
            if matches!(&refused, Ok(Err(e)) if e.to_string().contains("do not fit")) {
                found = Some((change, copy));
                break;
            }
        }
        let (change, mut refused_on) = found.expect("an altered change that applies but comes back as another");

        // Taken back out, the document is as before and loads again.
        refused_on.rewind(&base).unwrap();
        let again = refused_on.save();
        assert_eq!(HouseholdDocument::load(server.id(), &again, &ActorId::random()).unwrap().heads(), base);
        // Without the check, the document would hold a change it cannot give back: saved,
        // it no longer loads.
        server.apply(vec![change]).unwrap();
        let broken = server.save();
        let reloaded = std::panic::catch_unwind(|| HouseholdDocument::load(server.id(), &broken, &ActorId::random()));
        assert!(!matches!(reloaded, Ok(Ok(_))), "a document holding it does not load again");
    }
}
