//! Checking and merging pushed changes, household by household.
//!
//! A batch's pushed changes are grouped by household. The changes of one household are
//! checked in order against one working copy of its document (scope, dependencies, then
//! role and schema through [`crate::validate`]), and the copy is saved once: one
//! increment, one projection update. Households do not depend on each other, so their
//! groups are merged on several threads; the SQLite reads before and the writes after
//! stay on the writer thread.
//!
//! A change the server already holds in quarantine is checked again on its own, after
//! the groups (releasing it may release changes held because of it); so are the changes
//! after it to the same household.

use std::collections::{BTreeMap, HashSet};

use automerge::{ActorId, Change};
use doorstep_core::document::{HouseholdDocument, Scope, View};
use doorstep_core::sync::protocol::{Ack, Outcome};

use crate::engine::{now_ms, recheck_dependents, Documents, Held};
use crate::error::Result;
use crate::org::{Member, Role};
use crate::store::{QuarantineStatus, QuarantinedChange, WriteTx};
use crate::validate::check_change;

/// Below this many pushed changes in a batch, merging stays on the writer thread.
const PARALLEL_FROM: usize = 8;

/// Threads merging at most.
const MAX_THREADS: usize = 8;

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
    fn may_push(&self, household_id: &str) -> bool {
        may_push(self.member, self.in_scope, self.held, household_id)
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
    /// Quarantined and not released.
    Held,
    Missing,
}

/// One pushed change with what the store knows of it.
struct Pushed<'a> {
    /// Its request in the batch, and its place in the request.
    request: usize,
    index: usize,
    household_id: &'a str,
    change: &'a Change,
    hash: String,
    device_id: &'a str,
    member: &'a Member,
    may_push: bool,
    status: Status,
    deps: Vec<(String, Dep)>,
}

impl<'a> Pushed<'a> {
    #[allow(clippy::too_many_arguments)]
    fn read(
        tx: &impl WriteTx,
        (request, index): (usize, usize),
        household_id: &'a str,
        change: &'a Change,
        device_id: &'a str,
        member: &'a Member,
        may_push: bool,
        as_new: bool,
    ) -> Result<Pushed<'a>> {
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
                    match tx.quarantined_change(&dep)? {
                        Some(q) if q.status != QuarantineStatus::Released => Dep::Held,
                        _ => Dep::Missing,
                    }
                };
                deps.push((dep, state));
            }
        }
        Ok(Pushed { request, index, household_id, change, hash, device_id, member, may_push, status, deps })
    }

    /// Why the change must be quarantined before it is even applied: the household is
    /// outside the member's scope, or a dependency is missing or held. `merged` and
    /// `refused` are what the same group decided before it.
    fn precheck(&self, merged: &HashSet<&str>, refused: &HashSet<&str>) -> Option<String> {
        if !self.may_push {
            let h = self.household_id;
            return Some(format!("该住户不在您的负责范围内 / household {h} is not in your scope"));
        }
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
                Dep::Held => return Some(format!("依赖的变更已被隔离 / depends on quarantined change {dep}")),
                Dep::Missing => {
                    return Some(format!("缺少依赖的变更 / depends on change {dep}, which the server does not have"))
                }
            }
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
    /// Handled on its own after the groups (see the module docs).
    Later,
}

/// What to store for a household that merged changes: the increment, and the projection
/// rows of the records they touched.
type ToStore = (Vec<u8>, View);

/// A household, its document (in memory, or as stored, loaded by the merging thread) and
/// its pushed changes.
type Group<'g, 'p> = (&'g str, Held, &'g [Pushed<'p>]);

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
fn merge_group(household_id: &str, held: Held, items: &[Pushed<'_>], actor: &ActorId) -> Result<Merged> {
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
                Status::New => {
                    let reason = match (p.precheck(&merged, &refused), &mut merging) {
                        (Some(reason), _) => Some(reason),
                        (None, None) => Some(no_household(p.household_id)),
                        (None, Some(m)) => m.try_merge(p.change, p.member)?,
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

/// `merge_group` for every group, on several threads when the batch is big enough.
fn merge_groups(groups: Vec<Group<'_, '_>>, actor: &ActorId) -> Vec<Result<Merged>> {
    let changes: usize = groups.iter().map(|(_, _, items)| items.len()).sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS).min(groups.len());
    if threads < 2 || changes < PARALLEL_FROM {
        return groups.into_iter().map(|(h, held, items)| merge_group(h, held, items, actor)).collect();
    }
    let mut shares: Vec<Vec<(usize, Group<'_, '_>)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, group) in groups.into_iter().enumerate() {
        shares[i % threads].push((i, group));
    }
    let mut results: Vec<(usize, Result<Merged>)> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                s.spawn(move || {
                    share.into_iter().map(|(i, (h, held, items))| (i, merge_group(h, held, items, actor))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Check and merge the pushed changes of a batch's requests, or quarantine them; never
/// drop one silently. Returns each request's acknowledgements, in its order.
pub fn push_batch(tx: &impl WriteTx, docs: &mut Documents<'_>, pushers: &[Pusher<'_>]) -> Result<Vec<Vec<Ack>>> {
    // What the store knows, grouped by household (requests in order, changes in order).
    let mut groups: BTreeMap<&str, Vec<Pushed<'_>>> = BTreeMap::new();
    for (r, pusher) in pushers.iter().enumerate() {
        for (i, (household_id, change)) in pusher.changes.iter().enumerate() {
            let may_push = pusher.may_push(household_id);
            let p = Pushed::read(tx, (r, i), household_id, change, pusher.device_id, pusher.member, may_push, false)?;
            groups.entry(household_id.as_str()).or_default().push(p);
        }
    }
    let mut work = Vec::with_capacity(groups.len());
    for (household_id, items) in &groups {
        work.push((*household_id, docs.take(tx, household_id)?, items.as_slice()));
    }
    let results = merge_groups(work, docs.actor());

    let mut acks: Vec<Vec<Option<Ack>>> = pushers.iter().map(|p| vec![None; p.changes.len()]).collect();
    let mut later = Vec::new();
    for ((household_id, items), result) in groups.iter().zip(results) {
        let Merged { doc, stored, verdicts } = result?;
        save_merged(tx, docs, household_id, doc, stored)?;
        for (p, verdict) in items.iter().zip(verdicts) {
            let outcome = match verdict {
                Verdict::Known => Outcome::Accepted,
                Verdict::Merged => record(tx, p, None)?,
                Verdict::Quarantine(reason) => record(tx, p, Some(reason))?,
                Verdict::Later => {
                    later.push((p.request, p.index));
                    continue;
                }
            };
            acks[p.request][p.index] = Some(Ack { hash: p.change.hash().0, outcome });
        }
    }
    later.sort();
    for (r, i) in later {
        let pusher = &pushers[r];
        let (household_id, change) = &pusher.changes[i];
        let may_push = pusher.may_push(household_id);
        let p = Pushed::read(tx, (r, i), household_id, change, pusher.device_id, pusher.member, may_push, false)?;
        let outcome = match p.status {
            Status::Logged => Outcome::Accepted,
            Status::Quarantined(ref q) => repushed_quarantined(tx, docs, &p, q)?,
            // Just read: its dependencies are as the store has them now.
            Status::New => {
                let verdict = merge_one(tx, docs, &p)?;
                record(tx, &p, verdict)?
            }
        };
        acks[r][i] = Some(Ack { hash: change.hash().0, outcome });
    }
    Ok(acks.into_iter().map(|request| request.into_iter().flatten().collect()).collect())
}

/// Log a merged change (`verdict` `None`), or quarantine it with the reason.
fn record(tx: &impl WriteTx, p: &Pushed<'_>, verdict: Option<String>) -> Result<Outcome> {
    let Some(reason) = verdict else {
        tx.append_change(p.household_id, &p.hash, Some(p.device_id), p.change.raw_bytes(), now_ms())?;
        return Ok(Outcome::Accepted);
    };
    tracing::info!(hash = %p.hash, household = %p.household_id, member = %p.member.id, %reason, "change quarantined");
    tx.quarantine(&QuarantinedChange {
        hash: p.hash.clone(),
        household_id: p.household_id.to_string(),
        device_id: p.device_id.to_string(),
        member_id: p.member.id.clone(),
        reason: reason.clone(),
        at_ms: now_ms(),
        status: QuarantineStatus::Held,
        bytes: p.change.raw_bytes().to_vec(),
    })?;
    Ok(Outcome::Quarantined { reason })
}

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
        tx.save_document(&mut doc, &increment, &view)?;
    }
    docs.put(household_id, doc);
    Ok(())
}

/// A change the server already holds in quarantine, pushed again.
fn repushed_quarantined(
    tx: &impl WriteTx,
    docs: &mut Documents<'_>,
    p: &Pushed<'_>,
    q: &QuarantinedChange,
) -> Result<Outcome> {
    let hash = &q.hash;
    Ok(match q.status {
        // Held, and pushed again: checked again, as this pusher. A reconciliation makes
        // phones push every change the server lacks, other members' too: one relayed by
        // a phone that may not make it is held until its author's phone pushes it.
        QuarantineStatus::Held if q.household_id == p.household_id => match check_push(tx, docs, p)? {
            None => {
                tx.append_change(p.household_id, hash, Some(p.device_id), p.change.raw_bytes(), now_ms())?;
                tx.set_quarantine_status(hash, QuarantineStatus::Released, &p.member.id, now_ms())?;
                recheck_dependents(tx, docs, hash, &p.member.id)?;
                Outcome::Accepted
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
fn check_push(tx: &impl WriteTx, docs: &mut Documents<'_>, p: &Pushed<'_>) -> Result<Option<String>> {
    let fresh =
        Pushed::read(tx, (p.request, p.index), p.household_id, p.change, p.device_id, p.member, p.may_push, true)?;
    merge_one(tx, docs, &fresh)
}

/// Merge one change read as new (`Status::New`, its dependencies as the store has them)
/// into the transaction's document and store that, or say why it must be quarantined.
fn merge_one(tx: &impl WriteTx, docs: &mut Documents<'_>, p: &Pushed<'_>) -> Result<Option<String>> {
    let held = docs.take(tx, p.household_id)?;
    let Merged { doc, stored, mut verdicts } =
        merge_group(p.household_id, held, std::slice::from_ref(p), docs.actor())?;
    save_merged(tx, docs, p.household_id, doc, stored)?;
    Ok(match verdicts.pop() {
        Some(Verdict::Quarantine(reason)) => Some(reason),
        _ => None,
    })
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

/// Changes to one household being checked and merged together: a working copy of its
/// document, saved once by `close`.
struct Merging {
    doc: HouseholdDocument,
    /// The merged changes, in order: the increment to store (what `save_after` would
    /// give, without searching the history for it).
    increment: Vec<u8>,
    /// The records the merged changes touched; `None` while nothing was merged.
    touched: Option<Scope>,
}

impl Merging {
    fn new(doc: HouseholdDocument) -> Merging {
        Merging { doc, increment: Vec::new(), touched: None }
    }

    /// Merge `change` into the working copy if the result passes the check; otherwise
    /// leave the copy as it was and say why.
    fn try_merge(&mut self, change: &Change, member: &Member) -> Result<Option<String>> {
        let mut trial = self.doc.clone();
        if let Err(e) = trial.apply(vec![change.clone()]) {
            return Ok(Some(format!("变更无法合并 / the change cannot be merged: {e}")));
        }
        match check_change(&trial, change, member) {
            Ok(scope) => {
                self.doc = trial;
                self.increment.extend_from_slice(change.raw_bytes());
                match &mut self.touched {
                    Some(touched) => touched.extend(scope),
                    None => self.touched = Some(scope),
                }
                Ok(None)
            }
            Err(reason) => Ok(Some(reason)),
        }
    }

    /// The document, and what to store if something merged: one increment and the
    /// projection rows of the touched records.
    fn close(mut self) -> Result<(HouseholdDocument, Option<ToStore>)> {
        let Some(touched) = self.touched else { return Ok((self.doc, None)) };
        let view = self.doc.view(&touched)?;
        Ok((self.doc, Some((self.increment, view))))
    }
}
