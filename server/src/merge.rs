//! Checking and merging pushed changes, household by household.
//!
//! A batch's pushed changes are grouped by household. The changes of one household are
//! merged in order into one working copy of its document and checked there (dependencies,
//! scope, then role and schema through [`doorstep_core::document::rules`]); a
//! change that fails is taken back out (the copy is rebuilt without it). The copy is
//! saved once: one increment, one projection update. Households do not depend on each
//! other, so their groups are merged on several threads. The SQLite reads before and the
//! writes stay on the writer thread, which stores each group as soon as it is merged.
//!
//! A panic while merging one change (a bug set off by it) is caught there: the change is
//! held like one that failed its check, and the writer goes on. Should the copy then not
//! be rebuilt either, the group fails, and its batch is retried one request at a time.
//!
//! A change the server already holds in quarantine is checked again on its own, after
//! the groups (releasing it may release changes held because of it); so are the changes
//! after it to the same household.

use std::collections::{BTreeMap, HashSet};

use automerge::{ActorId, Change};
use doorstep_core::document::{HouseholdDocument, Scope, View};
use doorstep_core::sync::protocol::{Ack, Outcome};
use rayon::prelude::*;

use crate::engine::{now_ms, recheck_dependents, Documents, Held};
use crate::error::{Result, ServerError};
use crate::org::{Member, Role};
use crate::store::{Compaction, QuarantineStatus, QuarantinedChange, WriteTx};
use doorstep_core::document::rules::check_change;

/// Below this many pushed changes in a batch, merging stays on the writer thread.
const PARALLEL_FROM: usize = 8;

/// A merging thread stopped (a panic outside any one change): the batch fails, and its
/// requests are retried one at a time.
const MERGING_STOPPED: &str =
    "服务器合并变更时内部出错，请重试 / the server failed inside while merging changes; retry the request";

/// The requests of a batch, as far as pushing goes.
pub struct Pusher<'a> {
    pub device_id: &'a str,
    pub member: &'a Member,
    pub changes: &'a [(String, Change)],
    /// The households in the member's scope, and those the device holds.
    pub in_scope: &'a HashSet<String>,
    pub held: &'a HashSet<String>,
}

impl Pusher<'_> {
    /// What the store knows now of this request's change `i` (the request being `r` of
    /// its batch).
    fn read(&self, tx: &impl WriteTx, (r, i): (usize, usize)) -> Result<Pushed> {
        let (household_id, change) = &self.changes[i];
        let may_push = may_push(self.member, self.in_scope, self.held, household_id);
        Pushed::read(tx, (r, i), household_id, change, self.device_id, self.member, may_push, false)
    }
}

/// What the store knew of a pushed change before the batch merged anything.
enum Status {
    New,
    Logged,
    Quarantined(QuarantinedChange),
}

/// Where a change's dependency stands.
#[derive(Clone, Copy)]
enum Dep {
    Logged,
    /// Quarantined, not decided yet.
    Held,
    /// Quarantined and discarded by an admin.
    Discarded,
    Missing,
}

/// One pushed change with what the store knows of it. Owned, so that it can be merged
/// on other threads while the writer goes on (see [`Merges`]).
struct Pushed {
    /// Its request in the batch, and its place in the request.
    request: usize,
    index: usize,
    household_id: String,
    change: Change,
    hash: String,
    device_id: String,
    member: Member,
    may_push: bool,
    status: Status,
    deps: Vec<(String, Dep)>,
}

impl Pushed {
    #[allow(clippy::too_many_arguments)]
    fn read(
        tx: &impl WriteTx,
        (request, index): (usize, usize),
        household_id: &str,
        change: &Change,
        device_id: &str,
        member: &Member,
        may_push: bool,
        as_new: bool,
    ) -> Result<Pushed> {
        let hash = change.hash().to_string();
        let status = if as_new {
            Status::New
        } else if tx.has_change(&hash)? {
            Status::Logged
        } else {
            tx.quarantined_change(&hash)?.map_or(Status::New, Status::Quarantined)
        };
        let mut deps = Vec::new();
        if matches!(status, Status::New) {
            for dep in change.deps() {
                let dep = dep.to_string();
                let state = if tx.has_change(&dep)? {
                    Dep::Logged
                } else {
                    match tx.quarantined_change(&dep)?.map(|q| q.status) {
                        Some(QuarantineStatus::Held) => Dep::Held,
                        Some(QuarantineStatus::Discarded) => Dep::Discarded,
                        _ => Dep::Missing,
                    }
                };
                deps.push((dep, state));
            }
        }
        Ok(Pushed {
            request,
            index,
            household_id: household_id.to_string(),
            change: change.clone(),
            hash,
            device_id: device_id.to_string(),
            member: member.clone(),
            may_push,
            status,
            deps,
        })
    }

    /// Why the change is discarded at once: it depends on a change an admin discarded
    /// (made after it, on a phone that had not heard yet). The admin's discard covers it.
    fn discarded_dep(&self) -> Option<String> {
        self.deps.iter().find(|(_, state)| matches!(state, Dep::Discarded)).map(|(dep, _)| {
            format!("依赖的变更 {dep} 已被管理员丢弃 / depends on change {dep}, which an admin discarded")
        })
    }

    /// Why the change must be quarantined before it is even applied: a dependency is
    /// missing or held (named first, so that releasing a held one releases this change
    /// too, checked again), or the household is outside the member's scope. A household the
    /// server lacks (not `exists`) is left to the caller. `merged` and `refused` are what
    /// the same group decided before it.
    fn precheck(&self, exists: bool, merged: &HashSet<&str>, refused: &HashSet<&str>) -> Option<String> {
        for (dep, state) in &self.deps {
            let state = if merged.contains(dep.as_str()) {
                Dep::Logged
            } else if refused.contains(dep.as_str()) {
                Dep::Held
            } else {
                *state
            };
            match state {
                Dep::Logged => {}
                Dep::Held | Dep::Discarded => return Some(format!("依赖的变更已被隔离 / depends on quarantined change {dep}")),
                Dep::Missing => {
                    return Some(format!("缺少依赖的变更 / depends on change {dep}, which the server does not have"))
                }
            }
        }
        if exists && !self.may_push {
            let h = &self.household_id;
            return Some(format!("该住户不在您的负责范围内 / household {h} is not in your scope"));
        }
        None
    }
}

/// What became of a pushed change in its group.
enum Verdict {
    /// The server had it already.
    Known,
    Merged,
    Quarantine(String),
    /// Discarded with the discarded change it depends on.
    Discard(String),
    /// Handled on its own after the groups (see the module docs).
    Later,
}

/// What to store for a household that merged changes: the increment, and the projection
/// rows of the records they touched.
type ToStore = (Vec<u8>, View);

/// A household, its document (in memory, or as stored, loaded by the merging thread) and
/// its pushed changes.
type Group = (String, Held, Vec<Pushed>);

/// A merged group: its household and changes, back from the merging thread with the result.
type MergedGroup = (String, Vec<Pushed>, Result<Merged>);

/// A group's result: its document back (changed if something merged), what to store,
/// and a verdict per change.
struct Merged {
    doc: Option<HouseholdDocument>,
    stored: Option<ToStore>,
    verdicts: Vec<Verdict>,
}

/// Load a household's document if needed (the server may not have the household), then
/// check and merge its changes in order against it. No store access, so groups run in
/// parallel.
fn merge_group(household_id: &str, held: Held, items: &[Pushed], actor: &ActorId) -> Result<Merged> {
    let doc = held.load(household_id, actor)?;
    let mut merging = doc.map(Merging::new);
    let (mut merged, mut refused) = (HashSet::new(), HashSet::new());
    let mut later = false;
    let mut verdicts = Vec::with_capacity(items.len());
    for p in items {
        let verdict = if later {
            Verdict::Later
        } else {
            match &p.status {
                Status::Logged => Verdict::Known,
                _ if merged.contains(p.hash.as_str()) => Verdict::Known,
                Status::Quarantined(_) => {
                    later = true;
                    Verdict::Later
                }
                _ if refused.contains(p.hash.as_str()) => {
                    later = true;
                    Verdict::Later
                }
                Status::New => match p.discarded_dep() {
                    Some(reason) => {
                        refused.insert(p.hash.as_str());
                        Verdict::Discard(reason)
                    }
                    None => {
                        let reason = match (p.precheck(merging.is_some(), &merged, &refused), &mut merging) {
                            (Some(reason), _) => Some(reason),
                            (None, None) => Some(no_household(&p.household_id)),
                            (None, Some(m)) => m.try_merge(&p.change, &p.member)?,
                        };
                        match reason {
                            None => {
                                merged.insert(p.hash.as_str());
                                Verdict::Merged
                            }
                            Some(reason) => {
                                refused.insert(p.hash.as_str());
                                Verdict::Quarantine(reason)
                            }
                        }
                    }
                },
            }
        };
        verdicts.push(verdict);
    }
    let (doc, stored) = match merging {
        Some(m) => {
            let (doc, stored) = m.close()?;
            (Some(doc), stored)
        }
        None => (None, None),
    };
    Ok(Merged { doc, stored, verdicts })
}

/// A batch's pushed changes, read from the store and grouped by household, their
/// documents taken out of the transaction: being merged, on rayon's threads (one per core,
/// kept between batches) when the batch is big enough. The writer stores each group as it
/// comes back (`finish`). Merging needs no store access, so it may go on while the writer
/// commits the previous batch (see `engine`).
pub struct Merges {
    /// How many changes each request pushed.
    pushed: Vec<usize>,
    run: Run,
}

enum Run {
    /// Few changes: merged on the writer thread, by `finish`.
    Here(Vec<Group>, ActorId),
    /// Merging on other threads; each group comes back once merged.
    Elsewhere { merged: std::sync::mpsc::Receiver<MergedGroup>, groups: usize },
}

impl Merges {
    /// Read what the store knows of every pushed change of a batch's requests, take their
    /// households' documents out of the transaction, and start merging them.
    pub fn start(tx: &impl WriteTx, docs: &mut Documents<'_>, pushers: &[Pusher<'_>]) -> Result<Merges> {
        // Grouped by household (requests in order, changes in order).
        let mut by_household: BTreeMap<&str, Vec<Pushed>> = BTreeMap::new();
        for (r, pusher) in pushers.iter().enumerate() {
            for (i, (household_id, _)) in pusher.changes.iter().enumerate() {
                by_household.entry(household_id.as_str()).or_default().push(pusher.read(tx, (r, i))?);
            }
        }
        let mut groups = Vec::with_capacity(by_household.len());
        for (household_id, items) in by_household {
            groups.push((household_id.to_string(), docs.take(tx, household_id)?, items));
        }
        let pushed = pushers.iter().map(|p| p.changes.len()).collect();
        let actor = docs.actor().clone();
        let changes: usize = groups.iter().map(|(_, _, items)| items.len()).sum();
        if groups.len() < 2 || changes < PARALLEL_FROM {
            return Ok(Merges { pushed, run: Run::Here(groups, actor) });
        }
        let (sender, merged) = std::sync::mpsc::channel();
        let count = groups.len();
        std::thread::Builder::new()
            .name("doorstep-merge".into())
            .spawn(move || {
                groups.into_par_iter().for_each_with(sender, |sender, (household_id, held, items)| {
                    let result = merge_group(&household_id, held, &items, &actor);
                    // Fails only once the writer stopped listening (an error, or a batch
                    // abandoned): nothing to do.
                    let _ = sender.send((household_id, items, result));
                })
            })
            .map_err(|e| ServerError::Internal(format!("cannot start merging: {e}")))?;
        Ok(Merges { pushed, run: Run::Elsewhere { merged, groups: count } })
    }

    /// Store each household as it comes back merged, log or quarantine its changes, then
    /// handle the changes left for later (see the module docs); never drop one silently.
    /// `pushers` are the requests `start` was given. Returns each request's
    /// acknowledgements, in its order. The first error is returned (the groups still
    /// merging finish unheard).
    pub fn finish(self, tx: &impl WriteTx, docs: &mut Documents<'_>, pushers: &[Pusher<'_>]) -> Result<Vec<Vec<Ack>>> {
        let mut acks: Vec<Vec<Option<Ack>>> = self.pushed.iter().map(|&n| vec![None; n]).collect();
        let mut later = Vec::new();
        // Changes logged now, by whom: a change held for want of one of them is checked again.
        let mut logged: Vec<(String, String)> = Vec::new();
        let mut store = |(household_id, items, result): MergedGroup| -> Result<()> {
            let Merged { doc, stored, verdicts } = result?;
            save_merged(tx, docs, &household_id, doc, stored)?;
            for (p, verdict) in items.iter().zip(verdicts) {
                let outcome = match verdict {
                    Verdict::Known => Outcome::Accepted,
                    Verdict::Merged => {
                        logged.push((p.hash.clone(), p.member.id.clone()));
                        record(tx, p, None)?
                    }
                    Verdict::Quarantine(reason) => record(tx, p, Some(reason))?,
                    Verdict::Discard(reason) => {
                        discard(tx, p, reason)?;
                        continue;
                    }
                    Verdict::Later => {
                        later.push((p.request, p.index));
                        continue;
                    }
                };
                acks[p.request][p.index] = Some(Ack { hash: p.change.hash().0, outcome });
            }
            Ok(())
        };
        match self.run {
            Run::Here(groups, actor) => {
                for (household_id, held, items) in groups {
                    let result = merge_group(&household_id, held, &items, &actor);
                    store((household_id, items, result))?;
                }
            }
            Run::Elsewhere { merged, groups } => {
                for _ in 0..groups {
                    let group = merged
                        .recv()
                        .map_err(|_| ServerError::Internal(MERGING_STOPPED.into()))?;
                    store(group)?;
                }
            }
        }
        later.sort();
        for (r, i) in later {
            let p = pushers[r].read(tx, (r, i))?;
            let outcome = match p.status {
                Status::Logged => Outcome::Accepted,
                Status::Quarantined(ref q) => repushed_quarantined(tx, docs, &p, q)?,
                // Just read: its dependencies are as the store has them now.
                Status::New => match merge_one(tx, docs, &p)? {
                    Verdict::Discard(reason) => {
                        discard(tx, &p, reason)?;
                        continue;
                    }
                    Verdict::Quarantine(reason) => record(tx, &p, Some(reason))?,
                    _ => {
                        logged.push((p.hash.clone(), p.member.id.clone()));
                        record(tx, &p, None)?
                    }
                },
            };
            acks[r][i] = Some(Ack { hash: p.change.hash().0, outcome });
        }
        // A change held because the server lacked one it depends on (a server restored from
        // a backup; the phone sent it first) merges once that one is here, checked as a
        // fresh push, and its device hears so with this batch's answers.
        // Only the changes a held one names: one read of the reasons per batch, not a
        // search of the held changes per change logged.
        if !logged.is_empty() {
            let reasons = tx.held_reasons()?;
            let named: HashSet<&str> = reasons.iter().flat_map(|r| hashes_in(r)).collect();
            for (hash, by) in logged.iter().filter(|(hash, _)| named.contains(hash.as_str())) {
                recheck_dependents(tx, docs, hash, by)?;
            }
        }
        Ok(acks.into_iter().map(|request| request.into_iter().flatten().collect()).collect())
    }
}

/// Log a merged change (`verdict` `None`), or quarantine it with the reason.
fn record(tx: &impl WriteTx, p: &Pushed, verdict: Option<String>) -> Result<Outcome> {
    let Some(reason) = verdict else {
        tx.append_change(&p.household_id, &p.hash, Some(&p.device_id), p.change.raw_bytes(), now_ms())?;
        return Ok(Outcome::Accepted);
    };
    tracing::info!(hash = %p.hash, household = %p.household_id, member = %p.member.id, %reason, "change quarantined");
    tx.quarantine(&QuarantinedChange {
        hash: p.hash.clone(),
        household_id: p.household_id.clone(),
        device_id: p.device_id.clone(),
        member_id: p.member.id.clone(),
        reason: reason.clone(),
        at_ms: now_ms(),
        status: QuarantineStatus::Held,
        bytes: p.change.raw_bytes().to_vec(),
    })?;
    Ok(Outcome::Quarantined { reason })
}

/// The change hashes a held change's reason names (64 hexadecimal digits each).
fn hashes_in(reason: &str) -> impl Iterator<Item = &str> {
    reason.split(|c: char| !c.is_ascii_hexdigit()).filter(|word| word.len() == 64)
}

/// Keep a change discarded with the discarded change it depends on. No acknowledgement
/// here: the request's answer tells the device, as it tells an admin's decisions.
fn discard(tx: &impl WriteTx, p: &Pushed, reason: String) -> Result<()> {
    record(tx, p, Some(reason))?;
    tx.set_quarantine_status(&p.hash, QuarantineStatus::Discarded, DISCARDED_WITH_ITS_DEPENDENCY, now_ms())
}

/// Who decided a change discarded with its dependency (`decided_by`).
const DISCARDED_WITH_ITS_DEPENDENCY: &str = "server";

/// Store what a group merged and give its document back to the transaction.
fn save_merged(
    tx: &impl WriteTx,
    docs: &mut Documents<'_>,
    household_id: &str,
    doc: Option<HouseholdDocument>,
    stored: Option<ToStore>,
) -> Result<()> {
    let Some(mut doc) = doc else { return Ok(()) };
    if let Some((increment, view)) = stored {
        // A burst of syncs would otherwise rewrite most households it touches: the
        // writer compacts them once no request waits, unless loading one got slow.
        match tx.append_document(&mut doc, &increment, &view)? {
            Compaction::NotDue => {}
            Compaction::Due => docs.compact_later(household_id),
            Compaction::Overdue => tx.compact_document(&mut doc)?,
        }
    }
    docs.put(household_id, doc);
    Ok(())
}

/// A change the server already holds in quarantine, pushed again.
fn repushed_quarantined(
    tx: &impl WriteTx,
    docs: &mut Documents<'_>,
    p: &Pushed,
    q: &QuarantinedChange,
) -> Result<Outcome> {
    let hash = &q.hash;
    Ok(match q.status {
        // Held, and pushed again: checked again, as this pusher. A reconciliation makes
        // phones push every change the server lacks, other members' too: one relayed by
        // a phone that may not make it is held until its author's phone pushes it.
        QuarantineStatus::Held if q.household_id == p.household_id => match check_push(tx, docs, p)? {
            None => {
                let logged = record(tx, p, None)?;
                tx.set_quarantine_status(hash, QuarantineStatus::Released, &p.member.id, now_ms())?;
                recheck_dependents(tx, docs, hash, &p.member.id)?;
                logged
            }
            Some(_) => Outcome::Quarantined { reason: q.reason.clone() },
        },
        QuarantineStatus::Held => Outcome::Quarantined { reason: q.reason.clone() },
        QuarantineStatus::Released => Outcome::Accepted,
        QuarantineStatus::Discarded => Outcome::Discarded { reason: q.reason.clone() },
    })
}

/// Check `p` as a fresh push (whatever the store holds of it) and, if it passes, merge it
/// into the transaction's document and store that; otherwise say why it must be
/// quarantined. The caller logs it.
fn check_push(tx: &impl WriteTx, docs: &mut Documents<'_>, p: &Pushed) -> Result<Option<String>> {
    let fresh =
        Pushed::read(tx, (p.request, p.index), &p.household_id, &p.change, &p.device_id, &p.member, p.may_push, true)?;
    // A held change checked again stays held, with the reason, also when a change it
    // depends on was discarded meanwhile (an admin decides it).
    Ok(match merge_one(tx, docs, &fresh)? {
        Verdict::Quarantine(reason) | Verdict::Discard(reason) => Some(reason),
        _ => None,
    })
}

/// Merge one change read as new (`Status::New`, its dependencies as the store has them)
/// into the transaction's document and store that: `Merged`, or why it must be
/// quarantined or discarded.
fn merge_one(tx: &impl WriteTx, docs: &mut Documents<'_>, p: &Pushed) -> Result<Verdict> {
    let held = docs.take(tx, &p.household_id)?;
    let Merged { doc, stored, mut verdicts } =
        merge_group(&p.household_id, held, std::slice::from_ref(p), docs.actor())?;
    save_merged(tx, docs, &p.household_id, doc, stored)?;
    Ok(verdicts.pop().unwrap_or(Verdict::Merged))
}

/// Check a held change again, as a fresh push by `member` from `device_id`; merged and
/// stored if it passes (the caller logs it), otherwise why it stays held.
pub fn recheck(
    tx: &impl WriteTx,
    docs: &mut Documents<'_>,
    member: &Member,
    device_id: &str,
    household_id: &str,
    change: &Change,
    may_push: bool,
) -> Result<Option<String>> {
    let p = Pushed::read(tx, (0, 0), household_id, change, device_id, member, may_push, true)?;
    check_push(tx, docs, &p)
}

fn no_household(household_id: &str) -> String {
    format!("服务器上没有该住户 / household {household_id} does not exist on the server")
}

/// Whether `member` may push to `household_id`: admins anywhere; others in their scope, or
/// to a household their device still holds (a reassigned household's pending changes are
/// taken before it leaves the phone).
pub fn may_push(member: &Member, in_scope: &HashSet<String>, held: &HashSet<String>, household_id: &str) -> bool {
    member.role == Role::Admin || in_scope.contains(household_id) || held.contains(household_id)
}

/// Run `f`, the merging of `change`, turning a panic (a bug in Automerge or here, set off
/// by this change) into its message: one change must not stop the writer thread.
pub(crate) fn contained<T>(change: &Change, f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    caught(change, || {
        #[cfg(test)]
        tests::fault(change);
        f()
    })
}

/// `contained` without the tests' fault hook: for taking a failed change back out.
fn caught<T>(change: &Change, f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(change = %change.hash(), "merging a change panicked: {what}");
        what
    })
}

/// Changes to one household being checked and merged together: a working copy of its
/// document, saved once by `close`.
struct Merging {
    doc: HouseholdDocument,
    /// The merged changes, in order: the increment to store (what `save_after` would
    /// give, without searching the history for it).
    increment: Vec<u8>,
    /// The records the merged changes touched; `None` while nothing was merged.
    touched: Option<Scope>,
    /// Their projection, as the checks read it, while each merged change touched other
    /// records (so what an earlier one read is still current); otherwise `None`, and
    /// `close` reads it.
    view: Option<View>,
}

impl Merging {
    fn new(doc: HouseholdDocument) -> Merging {
        Merging { doc, increment: Vec::new(), touched: None, view: None }
    }

    /// Merge `change` into the working copy if the result passes the check; otherwise
    /// take it back out and say why. A panic while merging or checking it (a bug in
    /// Automerge or here, set off by this change) holds the change like a failed check
    /// instead of stopping the writer: the other changes go on, an admin sees the reason.
    /// An error only if the copy cannot be taken back to where it was.
    fn try_merge(&mut self, change: &Change, member: &Member) -> Result<Option<String>> {
        let before = self.doc.heads();
        let checked = contained(change, || {
            if let Err(e) = self.doc.apply_verified(change.clone()) {
                return Err(format!("变更无法合并 / the change cannot be merged: {e}"));
            }
            check_change(&mut self.doc, change, &member.id, member.role)
        })
        .unwrap_or_else(|what| {
            Err(format!(
                "合并该变更时服务器内部出错，已暂存待管理员处理 / the server failed inside while merging this change \
                 ({what}); it is held for an admin"
            ))
        });
        match checked {
            Ok((scope, view)) => {
                self.increment.extend_from_slice(change.raw_bytes());
                match &mut self.touched {
                    Some(touched) => {
                        self.view = match (self.view.take(), view) {
                            (Some(mut read), Some(view)) if !touched.overlaps(&scope) => {
                                read.absorb(view);
                                Some(read)
                            }
                            _ => None,
                        };
                        touched.extend(scope);
                    }
                    None => (self.touched, self.view) = (Some(scope), view),
                }
                Ok(None)
            }
            Err(reason) => {
                // Rare (a refused change), so the copy is rebuilt then rather than cloned
                // before every change. If even that fails, the group fails: its batch is
                // retried request by request, and only this change's request gets an error.
                let rewound = caught(change, || {
                    #[cfg(test)]
                    tests::rewind_fault(change);
                    self.doc.rewind(&before)
                });
                rewound.map_err(|what| ServerError::Internal(format!("household {}: {what}", self.doc.id())))??;
                Ok(Some(reason))
            }
        }
    }

    /// The document, and what to store if something merged: one increment and the
    /// projection rows of the touched records.
    fn close(mut self) -> Result<(HouseholdDocument, Option<ToStore>)> {
        #[cfg(test)]
        tests::close_fault(self.doc.id());
        let Some(touched) = self.touched else { return Ok((self.doc, None)) };
        let view = match self.view {
            Some(view) => view,
            None => self.doc.view(&touched)?,
        };
        Ok((self.doc, Some((self.increment, view))))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! A panic while merging one change (set off here by a test fault, standing for a bug
    //! in Automerge) holds that change and its dependents; the rest of the batch merges
    //! and the engine goes on serving. Should the working copy then not be rebuilt either,
    //! only that change's request fails, and nothing of it is kept. A panic on a merging
    //! thread outside any one change fails its batch on the writer: nothing of the batch
    //! is kept, not even the households already stored, and the writer goes on.

    use std::sync::Mutex;

    use automerge::{ActorId, ChangeHash};
    use doorstep_core::document::Author;
    use doorstep_core::sync::protocol::{Position, PushedChange, SyncRequest, SyncResponse};
    use doorstep_core::{NewHousehold, NewVisit, VisitMode, VisitTopic};

    use super::*;
    use crate::admin;
    use crate::auth::hash_secret;
    use crate::engine::{Engine, SyncJob};
    use crate::org::{Branch, Community};
    use crate::store::sqlite::SqliteStore;

    /// Changes whose merge panics.
    static PANIC_ON: Mutex<Vec<ChangeHash>> = Mutex::new(Vec::new());

    /// The tests here share the fault lists: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Changes after whose refusal the working copy cannot be rebuilt.
    static REWIND_PANIC_ON: Mutex<Vec<ChangeHash>> = Mutex::new(Vec::new());

    pub(super) fn fault(change: &Change) {
        let hit = PANIC_ON.lock().unwrap().contains(&change.hash());
        if hit {
            panic!("test fault on change {}", change.hash());
        }
    }

    /// Households whose merged group panics when it is closed: a bug outside any one
    /// change, on a merging thread.
    static CLOSE_PANIC_ON: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub(super) fn close_fault(household_id: &str) {
        let hit = CLOSE_PANIC_ON.lock().unwrap().iter().any(|h| h == household_id);
        if hit {
            panic!("test fault closing household {household_id}");
        }
    }

    pub(super) fn rewind_fault(change: &Change) {
        let hit = REWIND_PANIC_ON.lock().unwrap().contains(&change.hash());
        if hit {
            panic!("test fault rebuilding the copy after change {}", change.hash());
        }
    }

    pub(crate) fn job(token: &str, position: Option<Position>, changes: Vec<(String, Change)>) -> SyncJob {
        let pushed = changes.iter().map(|(h, c)| PushedChange { household_id: h.clone(), bytes: c.raw_bytes().into() });
        let request = SyncRequest::new(position, pushed.collect());
        SyncJob { token_hash: hash_secret(token), request, changes }
    }

    pub(crate) fn sync(
        engine: &mut Engine<SqliteStore>,
        token: &str,
        position: Option<Position>,
        changes: Vec<(String, Change)>,
    ) -> SyncResponse {
        let mut responses = engine.sync_batch(vec![job(token, position, changes)]);
        assert_eq!(responses.len(), 1);
        responses.pop().unwrap().expect("the sync is answered")
    }

    pub(crate) fn visit(household_id: &str, at: i64) -> NewVisit {
        NewVisit {
            household_id: household_id.into(),
            started_at_ms: at,
            ended_at_ms: Some(at + 1_800_000),
            visitors: vec![],
            mode: VisitMode::InPerson,
            people_met: vec!["母亲".into()],
            topics: vec![VisitTopic::EnrolmentPolicy],
            notes: "家长询问入学材料".into(),
            follow_up_on: None,
            location: None,
        }
    }

    /// An engine on a new store with an admin, branch b1 and community c1, and members
    /// of b1 with the given ids; the admin's token.
    pub(crate) fn district(dir: &std::path::Path, members: &[&str]) -> (Engine<SqliteStore>, String) {
        let mut engine = Engine::new(SqliteStore::open(dir).unwrap());
        let admin_token = admin::create_admin(&mut engine, "admin", "管理员").unwrap().token;
        admin::add_branch(&mut engine, &Branch { id: "b1".into(), name: "一支部".into() }).unwrap();
        admin::add_community(&mut engine, &Community { id: "c1".into(), name: "一社区".into() }).unwrap();
        for m in members {
            let member = Member {
                id: m.to_string(),
                name: m.to_string(),
                role: Role::Member,
                branch_id: Some("b1".into()),
                scope_branches: vec![],
                scope_communities: vec![],
            };
            admin::add_member(&mut engine, &member).unwrap();
        }
        (engine, admin_token)
    }

    /// A household of b1 and c1 assigned to `member`.
    pub(crate) fn household(engine: &mut Engine<SqliteStore>, family: &str, member: &str) -> String {
        let new = NewHousehold {
            family_name: family.into(),
            community_id: "c1".into(),
            branch_id: "b1".into(),
            assigned_members: vec![member.into()],
            ..Default::default()
        };
        admin::create_household(engine, "admin", &new).unwrap()
    }

    /// A phone enrolled for `member`, after its first sync: its token and that answer.
    pub(crate) fn phone(engine: &mut Engine<SqliteStore>, member: &str) -> (admin::DeviceToken, SyncResponse) {
        let enrolment = admin::enrol_device(engine, member, "phone", None).unwrap();
        let device = admin::exchange_code(engine, &enrolment.enrolment_code).unwrap();
        let first = sync(engine, &device.token, None, vec![]);
        (device, first)
    }

    /// Visits the phone records offline on each household of its first sync, `count` of
    /// them for a household (each after the one before): the changes, in order.
    pub(crate) fn record_visits(
        device: &admin::DeviceToken,
        first: &SyncResponse,
        count: impl Fn(&str) -> i64,
    ) -> Vec<(String, Change)> {
        let author = Author { member_id: device.member_id.clone(), device_id: device.device_id.clone() };
        let mut changes = Vec::new();
        for (k, mut doc) in whole(first).into_iter().enumerate() {
            let household_id = doc.id().to_string();
            let before = doc.heads();
            for v in 0..count(&household_id) {
                let at = 1_000_000 * (10 * k as i64 + v + 1);
                doc.record_visit(&author, at, &visit(&household_id, at)).unwrap();
            }
            changes.extend(doc.changes_since(&before).into_iter().map(|c| (household_id.clone(), c)));
        }
        changes
    }

    /// The whole documents of `response`, loaded as a phone loads them.
    pub(crate) fn whole(response: &SyncResponse) -> Vec<HouseholdDocument> {
        let loaded = response.whole.as_ref().expect("whole documents").load(&ActorId::random()).expect("they load");
        loaded.into_iter().map(|(doc, _)| doc).collect()
    }

    /// How many visits the store's document of `household_id` holds, read by an admin sync.
    pub(crate) fn visits_on(engine: &mut Engine<SqliteStore>, admin_token: &str, household_id: &str) -> usize {
        let all = sync(engine, admin_token, None, vec![]);
        let doc = whole(&all).into_iter().find(|doc| doc.id() == household_id).unwrap();
        doc.visits().unwrap().len()
    }

    #[test]
    fn a_panic_while_merging_a_change_holds_it_and_the_engine_goes_on() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, admin_token) = district(dir.path(), &["m1"]);
        let h1 = household(&mut engine, "甲", "m1");
        let h2 = household(&mut engine, "乙", "m1");
        let (device, first) = phone(&mut engine, "m1");

        // Offline: two visits to the first household (the second depends on the first),
        // seven to the second: enough changes for the batch to merge on several threads.
        let changes = record_visits(&device, &first, |h| if h == h1 { 2 } else { 7 });
        let poisoned = changes.iter().find(|(h, _)| *h == h1).unwrap().1.hash();
        PANIC_ON.lock().unwrap().push(poisoned);
        let pushed = sync(&mut engine, &device.token, Some(first.position.clone()), changes.clone());

        let outcome = |hash: ChangeHash| pushed.acks.iter().find(|a| a.hash == hash.0).map(|a| a.outcome.clone());
        match outcome(poisoned) {
            Some(Outcome::Quarantined { reason }) => assert!(reason.contains("failed inside"), "{reason}"),
            other => panic!("the change whose merge panicked is held, not {other:?}"),
        }
        for (household, change) in &changes {
            let expected_held = *household == h1;
            let held = matches!(outcome(change.hash()), Some(Outcome::Quarantined { .. }));
            assert_eq!(held, expected_held, "{household}: held only on the household of the panic");
        }
        let held = admin::quarantined(&mut engine, Some(QuarantineStatus::Held)).unwrap();
        assert_eq!(held.len(), 2, "the change and the one after it, listed for admins");

        // The engine goes on: the next sync is answered and the other household merged.
        let again = sync(&mut engine, &device.token, Some(pushed.position.clone()), vec![]);
        assert!(again.acks.is_empty());
        let visits_h1 = visits_on(&mut engine, &admin_token, &h1);
        assert_eq!((visits_h1, visits_on(&mut engine, &admin_token, &h2)), (0, 7));

        // Releasing it while the fault is still there fails with a readable error and
        // changes nothing; the engine goes on.
        let refused = engine.release("admin", &poisoned.to_string()).unwrap_err().to_string();
        assert!(refused.contains("failed inside"), "{refused}");
        assert_eq!(admin::quarantined(&mut engine, Some(QuarantineStatus::Held)).unwrap().len(), 2);
        assert_eq!(visits_on(&mut engine, &admin_token, &h1), 0);

        // Once the fault is gone (a fixed server), the admin releases the change: it and
        // the one held after it merge.
        PANIC_ON.lock().unwrap().clear();
        engine.release("admin", &poisoned.to_string()).unwrap();
        assert!(admin::quarantined(&mut engine, Some(QuarantineStatus::Held)).unwrap().is_empty());
        assert_eq!(visits_on(&mut engine, &admin_token, &h1), 2);
    }
    #[test]
    fn a_copy_that_cannot_be_rebuilt_fails_only_its_own_request() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, admin_token) = district(dir.path(), &["m1", "m2"]);
        let mut phones = Vec::new();
        for m in ["m1", "m2"] {
            household(&mut engine, "王", m);
            let (device, first) = phone(&mut engine, m);
            let changes = record_visits(&device, &first, |_| 1);
            phones.push((device.token, first.position, changes));
        }
        let push = |(token, position, changes): &(String, Position, Vec<(String, Change)>)| {
            job(token, Some(position.clone()), changes.clone())
        };
        // m1's change is refused (a fault while merging it), and its household's copy then
        // cannot be rebuilt: that group fails, so the batch is retried request by request.
        let refused = phones[0].2[0].1.hash();
        PANIC_ON.lock().unwrap().push(refused);
        REWIND_PANIC_ON.lock().unwrap().push(refused);
        let mut answers = engine.sync_batch(vec![push(&phones[0]), push(&phones[1])]);
        PANIC_ON.lock().unwrap().clear();
        REWIND_PANIC_ON.lock().unwrap().clear();
        let second = answers.pop().unwrap().expect("m2's request is answered");
        assert_eq!(second.acks.len(), 1);
        assert_eq!(second.acks[0].outcome, Outcome::Accepted);
        let failed = answers.pop().unwrap().expect_err("m1's request fails");
        assert!(failed.to_string().contains("rebuilding the copy"), "{failed}");
        // Nothing of it was kept: sent again (the phone keeps what was not acknowledged),
        // it merges, once.
        let again = sync(&mut engine, &phones[0].0, Some(phones[0].1.clone()), phones[0].2.clone());
        assert_eq!(again.acks.len(), 1);
        assert_eq!(again.acks[0].outcome, Outcome::Accepted);
        assert!(admin::quarantined(&mut engine, None).unwrap().is_empty());
        assert_eq!(visits_on(&mut engine, &admin_token, &phones[0].2[0].0), 1);
    }

    #[test]
    fn a_panic_on_the_writer_fails_only_the_request_that_set_it_off() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, admin_token) = district(dir.path(), &["m1", "m2"]);
        let h1 = household(&mut engine, "甲", "m1");
        household(&mut engine, "乙", "m2");
        let (p1, first1) = phone(&mut engine, "m1");
        let (p2, first2) = phone(&mut engine, "m2");
        // Few changes: merged on the writer thread, where the group of h1 panics.
        let jobs = vec![
            job(&p1.token, Some(first1.position.clone()), record_visits(&p1, &first1, |_| 1)),
            job(&p2.token, Some(first2.position.clone()), record_visits(&p2, &first2, |_| 1)),
        ];
        CLOSE_PANIC_ON.lock().unwrap().push(h1.clone());
        let answers = engine.sync_batch(jobs);
        CLOSE_PANIC_ON.lock().unwrap().clear();
        assert!(answers[0].as_ref().is_err_and(|e| e.to_string().contains("failed inside")), "{answers:?}");
        assert_eq!(answers[1].as_ref().unwrap().acks[0].outcome, Outcome::Accepted, "the other request, alone");
        let all = sync(&mut engine, &admin_token, None, vec![]);
        let mut visits: Vec<usize> = whole(&all).iter().map(|doc| doc.visits().unwrap().len()).collect();
        visits.sort();
        assert_eq!(visits, [0, 1]);
    }

    #[test]
    fn a_panic_on_a_merging_thread_fails_the_batch_keeps_nothing_of_it_and_the_writer_goes_on() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, admin_token) = district(dir.path(), &["m1"]);
        let households: Vec<String> = ["甲", "乙", "丙"].iter().map(|f| household(&mut engine, f, "m1")).collect();
        let (device, first) = phone(&mut engine, "m1");
        // Three visits to each household: enough for the groups to merge on rayon's threads
        // while the writer stores those already merged.
        let changes = record_visits(&device, &first, |_| 3);
        assert!(changes.len() >= PARALLEL_FROM);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let writer = crate::writer::Writer::start(engine);
            let visits = |writer: &crate::writer::Writer| {
                let (writer, token) = (writer.clone(), admin_token.clone());
                async move {
                    let all = writer.sync(job(&token, None, vec![])).await.unwrap();
                    let mut counts: Vec<usize> = whole(&all).iter().map(|doc| doc.visits().unwrap().len()).collect();
                    counts.sort();
                    counts
                }
            };

            // The last household's group panics when it is closed, on a merging thread.
            CLOSE_PANIC_ON.lock().unwrap().push(households[2].clone());
            let failed = writer.sync(job(&device.token, Some(first.position.clone()), changes.clone())).await;
            CLOSE_PANIC_ON.lock().unwrap().clear();
            let failed = failed.expect_err("the batch fails");
            assert!(failed.to_string().contains("failed inside"), "{failed}");
            // Nothing of it was kept, not even the households the writer had stored already.
            assert_eq!(visits(&writer).await, vec![0, 0, 0]);
            assert!(writer.run(|engine| admin::quarantined(engine, None)).await.unwrap().is_empty());

            // The phone kept its changes and sends them again: all merge, once.
            let again = writer.sync(job(&device.token, Some(first.position.clone()), changes.clone())).await.unwrap();
            assert_eq!(again.acks.len(), changes.len());
            assert!(again.acks.iter().all(|a| a.outcome == Outcome::Accepted), "{:?}", again.acks);
            assert_eq!(visits(&writer).await, vec![3, 3, 3]);
        });
    }
}
