//! Convergence of replicas under random edits and an unreliable network (property-based).
//!
//! Each case opens 3 to 5 replicas, each a real `Replica` on its own SQLite file with its
//! own member and device id. One of them has created 1 to 3 households, each with one visit
//! and one issue, and shared them with the others. Then 6 to 21 random steps run, each one
//!
//! - an edit on some replica: record a visit; change a visit's mode or notes; delete or
//!   restore a visit; raise an issue; move an issue to a random status (a refused move,
//!   `Error::InvalidTransition`, is fine and is not counted); comment on an issue; change a
//!   household's address or notes or its guardian's phone (the same field edited on several
//!   replicas makes a conflict); settle a listed conflict by choosing one of its values; or
//! - a message: an export from one replica for another, computed against the recipient's
//!   heads, against no heads (a full resend) or against a third replica's heads (a relay
//!   with foreign heads). The message is lost, or delivered once or twice, each time after
//!   a random delay (so messages overtake each other and arrive twice) and possibly only in
//!   part: some of its households, some of their changes. Changes that arrive before the
//!   changes they depend on must wait on the recipient until those arrive.
//!
//! Then everything still on the network is delivered and every replica exchanges with
//! every other until nobody has anything left to send. If conflicts are listed then, up to
//! three replicas each settle one (maybe the same one, differently) and the replicas
//! exchange again. Finally the test checks that every pair of replicas has
//!
//! - the same heads and, for every household, the same whole document (`household_json`);
//! - the same projections: `list_households()`, `open_issues()`, `overdue_issues(TODAY)`,
//!   `overview(TODAY)` and `conflicts(None)`;
//!
//! and that nothing was lost: every visit and issue created by a successful call, and every
//! status transition created by a successful `transition_issue` or status-conflict
//! resolution, is in the documents. Also: no change is left waiting for dependencies, the
//! household list's counts agree with the documents, and one replica's file, opened
//! afresh, holds the same documents as the replica in memory.
//!
//! The number of cases comes from `PROPTEST_CASES` through proptest's default config (256
//! when unset).

mod common;

use common::*;
use doorstep_core::store::Store;
use doorstep_core::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The day the overdue lists and overviews are computed for.
const TODAY: &str = "2027-01-01";

const ADDRESSES: &[&str] = &["桂城街道平洲路 1 号", "平洲路 2 号", "桂澜路 3 号 502"];
const PHONES: &[&str] = &["13800000000", "13911111111", "13722222222", "0757-8888 1234"];
const FRAGMENTS: &[&str] = &["", "家长", "下周回访。", "孩子", "ok", "，"];
const DUE_DATES: &[Option<&str>] = &[Some("2026-12-01"), Some("2027-06-30"), None, Some("2026-11-15")];
const MODES: &[VisitMode] =
    &[VisitMode::InPerson, VisitMode::Phone, VisitMode::WeChat, VisitMode::VideoCall, VisitMode::AtSchool];
const STATUSES: &[IssueStatus] = &[
    IssueStatus::Open,
    IssueStatus::Acknowledged,
    IssueStatus::Referred,
    IssueStatus::InProgress,
    IssueStatus::Resolved,
    IssueStatus::Closed,
];

/// A text edit: at character `pos` (modulo the length), delete `delete` characters and
/// insert a fragment.
#[derive(Debug, Clone)]
struct TextEdit {
    pos: usize,
    delete: usize,
    insert: usize,
}

impl TextEdit {
    fn apply(&self, current: &str) -> String {
        let chars: Vec<char> = current.chars().collect();
        let pos = self.pos % (chars.len() + 1);
        let delete = self.delete.min(chars.len() - pos);
        let mut out: String = chars[..pos].iter().collect();
        out.push_str(FRAGMENTS[self.insert % FRAGMENTS.len()]);
        out.extend(&chars[pos + delete..]);
        out
    }
}

/// Whose heads an export is computed against.
#[derive(Debug, Clone)]
enum Against {
    /// The recipient's heads at capture time (the normal case).
    Recipient,
    /// No heads: everything is sent again.
    Nothing,
    /// The heads of a third replica (a relay with foreign heads): the recipient may lack
    /// dependencies of what it receives.
    Replica(usize),
}

/// One step. Replica, household, visit, issue and conflict numbers are taken modulo what
/// exists when the step runs, so every generated step means something.
#[derive(Debug, Clone)]
enum Step {
    RecordVisit { at: usize, household: usize },
    SetVisitMode { at: usize, visit: usize, mode: usize },
    EditVisitNotes { at: usize, visit: usize, edit: TextEdit },
    DeleteOrRestoreVisit { at: usize, visit: usize },
    RaiseIssue { at: usize, household: usize, due: usize },
    Transition { at: usize, issue: usize, to: usize },
    Comment { at: usize, issue: usize },
    SetAddress { at: usize, household: usize, value: usize },
    SetGuardianPhone { at: usize, household: usize, value: usize },
    EditHouseholdNotes { at: usize, household: usize, edit: TextEdit },
    ResolveConflict { at: usize, conflict: usize, value: usize },
    /// Export from `from` for another replica (`to` counts the replicas after `from`) and
    /// put the message on the network, to be delivered as `deliveries` say: never (lost),
    /// once or twice, each after a delay.
    Send { from: usize, to: usize, against: Against, deliveries: Vec<Delivery> },
}

/// One delivery of a message, `delay` steps after it was sent (so messages overtake each
/// other), of only the households whose bit (by position in the message, modulo 8) is set
/// in `households`, and with `changes`, of only the changes whose bit (by position in
/// their household, modulo 64) is set.
#[derive(Debug, Clone)]
struct Delivery {
    delay: usize,
    households: u8,
    changes: Option<u64>,
}

#[derive(Debug, Clone)]
struct Scenario {
    replicas: usize,
    households: usize,
    steps: Vec<Step>,
    /// Conflict resolutions once the replicas have converged (conflicts come to light late
    /// in a case): each on one replica, before it hears of the others.
    settle: Vec<Step>,
    /// The replica whose file is opened afresh at the end (modulo the number of replicas).
    reopen: usize,
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    (0..40usize, prop_oneof![3 => Just(0usize), 1 => 1..4usize], 0..FRAGMENTS.len())
        .prop_map(|(pos, delete, insert)| TextEdit { pos, delete, insert })
}

fn step() -> impl Strategy<Value = Step> {
    let r = || 0..5usize;
    let pick = || 0..16usize;
    prop_oneof![
        2 => (r(), pick()).prop_map(|(at, household)| Step::RecordVisit { at, household }),
        2 => (r(), pick(), 0..MODES.len()).prop_map(|(at, visit, mode)| Step::SetVisitMode { at, visit, mode }),
        1 => (r(), pick(), text_edit()).prop_map(|(at, visit, edit)| Step::EditVisitNotes { at, visit, edit }),
        2 => (r(), pick()).prop_map(|(at, visit)| Step::DeleteOrRestoreVisit { at, visit }),
        2 => (r(), pick(), 0..DUE_DATES.len()).prop_map(|(at, household, due)| Step::RaiseIssue { at, household, due }),
        6 => (r(), pick(), 0..STATUSES.len()).prop_map(|(at, issue, to)| Step::Transition { at, issue, to }),
        1 => (r(), pick()).prop_map(|(at, issue)| Step::Comment { at, issue }),
        3 => (r(), pick(), 0..ADDRESSES.len())
            .prop_map(|(at, household, value)| Step::SetAddress { at, household, value }),
        3 => (r(), pick(), 0..PHONES.len())
            .prop_map(|(at, household, value)| Step::SetGuardianPhone { at, household, value }),
        1 => (r(), pick(), text_edit())
            .prop_map(|(at, household, edit)| Step::EditHouseholdNotes { at, household, edit }),
        4 => resolve_conflict(),
        14 => (r(), 0..4usize, against(), deliveries())
            .prop_map(|(from, to, against, deliveries)| Step::Send { from, to, against, deliveries }),
    ]
}

fn resolve_conflict() -> impl Strategy<Value = Step> {
    (0..5usize, 0..16usize, 0..16usize).prop_map(|(at, conflict, value)| Step::ResolveConflict { at, conflict, value })
}

fn against() -> impl Strategy<Value = Against> {
    prop_oneof![5 => Just(Against::Recipient), 1 => Just(Against::Nothing), 3 => (0..4usize).prop_map(Against::Replica)]
}

fn deliveries() -> impl Strategy<Value = Vec<Delivery>> {
    let delivery = (
        prop_oneof![1 => Just(0usize), 2 => 1..6usize],
        prop_oneof![4 => Just(u8::MAX), 1 => any::<u8>()],
        prop_oneof![2 => Just(None), 1 => any::<u64>().prop_map(Some)],
    )
        .prop_map(|(delay, households, changes)| Delivery { delay, households, changes });
    prop_oneof![1 => Just(Vec::new()), 6 => prop::collection::vec(delivery.clone(), 1), 2 => prop::collection::vec(delivery, 2)]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    // Fewer replicas and households are cheaper, so they come more often.
    let replicas = prop_oneof![4 => Just(3usize), 2 => Just(4), 1 => Just(5)];
    let households = prop_oneof![3 => Just(1usize), 2 => Just(2), 1 => Just(3)];
    let settle = prop::collection::vec(resolve_conflict(), 0..=3);
    (replicas, households, prop::collection::vec(step(), 6..22), settle, 0..5usize).prop_map(
        |(replicas, households, steps, settle, reopen)| Scenario { replicas, households, steps, settle, reopen },
    )
}

/// A delivery on its way: the part of a message that will reach replica `to` after step `due`.
struct InFlight {
    due: usize,
    sent_at: usize,
    to: usize,
    batches: Vec<HouseholdChanges>,
}

struct World {
    dir: tempfile::TempDir,
    replicas: Vec<Replica>,
    /// Household ids, with the id of each one's (first) guardian.
    households: Vec<(String, String)>,
    network: Vec<InFlight>,
    /// (household, visit) of every successfully recorded visit.
    visits: Vec<(String, String)>,
    /// (household, issue) of every successfully raised issue.
    issues: Vec<(String, String)>,
    /// (household, issue, transition) of every successful status move.
    transitions: Vec<(String, String, String)>,
}

type Outcome = Result<(), TestCaseError>;

fn fail(step: &Step, e: Error) -> TestCaseError {
    TestCaseError::fail(format!("{step:?} failed: {e}"))
}

/// A read or write that must succeed.
fn ok<T>(what: &str, result: Result<T>) -> Result<T, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

/// A record the replica has not received yet is skipped; any other error fails the case.
fn known<T>(step: &Step, result: Result<T>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(fail(step, e)),
    }
}

/// The transitions of `after` that `before` did not have, as (household, issue, transition).
fn new_transitions(before: &Issue, after: &Issue) -> Vec<(String, String, String)> {
    after
        .transitions
        .iter()
        .filter(|t| !before.transitions.iter().any(|b| b.id == t.id))
        .map(|t| (after.household_id.clone(), after.id.clone(), t.id.clone()))
        .collect()
}

fn pick<T>(items: &[T], pick: usize) -> Option<&T> {
    items.get(pick.checked_rem(items.len())?)
}

/// The first record, going round `ids` from `pick` on, that `read` finds on the replica.
fn first_known<T>(
    step: &Step,
    ids: &[(String, String)],
    pick: usize,
    read: impl Fn(&str) -> Result<T>,
) -> Result<Option<T>, TestCaseError> {
    for k in 0..ids.len() {
        if let Some(found) = known(step, read(&ids[(pick + k) % ids.len()].1))? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Where every case starts: the replica files once r0 has created the households, each
/// with one visit and one issue (so that concurrent edits of them are common), and shared
/// them with the others; and what they hold.
#[derive(Clone)]
struct Start {
    /// File name and contents, the SQLite files of closed replicas.
    files: Vec<(String, Vec<u8>)>,
    households: Vec<(String, String)>,
    visits: Vec<(String, String)>,
    issues: Vec<(String, String)>,
}

/// The start for this many replicas and households. Building it costs about as much as a
/// whole small case in a debug build, so it is built once per shape and each case gets its
/// own copy of the files.
fn start(replicas: usize, households: usize) -> Start {
    static STARTS: Mutex<BTreeMap<(usize, usize), Start>> = Mutex::new(BTreeMap::new());
    let mut starts = STARTS.lock().unwrap_or_else(|e| e.into_inner());
    starts.entry((replicas, households)).or_insert_with(|| build_start(replicas, households)).clone()
}

fn build_start(replicas: usize, households: usize) -> Start {
    let dir = tempfile::tempdir().unwrap();
    let replicas: Vec<Replica> = (0..replicas).map(|i| replica(&dir, &format!("r{i}"), &format!("m-{i}"))).collect();
    let (mut visits, mut issues) = (Vec::new(), Vec::new());
    let households = (0..households)
        .map(|k| {
            let mut new = new_household("m-0");
            new.family_name = format!("户{k}");
            new.community_id = format!("c-{}", k % 2);
            let h = replicas[0].create_household(&new).unwrap();
            let v = replicas[0].record_visit(&new_visit(&h.id, 1_600_000_000_000, "首次走访")).unwrap();
            let i = replicas[0].raise_issue(&new_issue(&h.id)).unwrap();
            visits.push((h.id.clone(), v.id));
            issues.push((h.id.clone(), i.id));
            (h.id, h.guardians[0].id.clone())
        })
        .collect();
    for r in &replicas[1..] {
        send(&replicas[0], r);
    }
    drop(replicas); // Closing the files checkpoints their write-ahead logs.
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| (entry.file_name().into_string().unwrap(), entry.path()))
        .filter(|(name, _)| !name.ends_with("-shm"))
        .map(|(name, path)| (name, std::fs::read(path).unwrap()))
        .collect();
    Start { files, households, visits, issues }
}

impl World {
    fn new(replicas: usize, households: usize) -> World {
        let start = start(replicas, households);
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in &start.files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let replicas = (0..replicas).map(|i| replica(&dir, &format!("r{i}"), &format!("m-{i}"))).collect();
        World {
            dir,
            replicas,
            households: start.households,
            network: Vec::new(),
            visits: start.visits,
            issues: start.issues,
            transitions: Vec::new(),
        }
    }

    fn household(&self, pick: usize) -> &str {
        &self.households[pick % self.households.len()].0
    }

    fn run(&mut self, now: usize, step: &Step) -> Outcome {
        let n = self.replicas.len();
        match step {
            Step::RecordVisit { at, household } => {
                let r = &self.replicas[at % n];
                let h = self.household(*household).to_string();
                let started = 1_700_000_000_000 + 3_600_000 * self.visits.len() as i64;
                let v = r.record_visit(&new_visit(&h, started, "走访记录")).map_err(|e| fail(step, e))?;
                self.visits.push((h, v.id));
            }
            Step::SetVisitMode { at, visit, mode } => {
                let r = &self.replicas[at % n];
                if let Some(v) = first_known(step, &self.visits, *visit, |id| r.visit(id))? {
                    let update = VisitUpdate { mode: Some(MODES[*mode].clone()), ..Default::default() };
                    r.update_visit(&v.id, &update).map_err(|e| fail(step, e))?;
                }
            }
            Step::EditVisitNotes { at, visit, edit } => {
                let r = &self.replicas[at % n];
                if let Some(v) = first_known(step, &self.visits, *visit, |id| r.visit(id))? {
                    let update = VisitUpdate { notes: Some(edit.apply(&v.notes)), ..Default::default() };
                    r.update_visit(&v.id, &update).map_err(|e| fail(step, e))?;
                }
            }
            Step::DeleteOrRestoreVisit { at, visit } => {
                let r = &self.replicas[at % n];
                if let Some(v) = first_known(step, &self.visits, *visit, |id| r.visit(id))? {
                    let after = if v.deleted.is_some() { r.restore_visit(&v.id) } else { r.delete_visit(&v.id) };
                    let after = after.map_err(|e| fail(step, e))?;
                    prop_assert_eq!(after.deleted.is_some(), v.deleted.is_none(), "{:?}", step);
                }
            }
            Step::RaiseIssue { at, household, due } => {
                let r = &self.replicas[at % n];
                let h = self.household(*household).to_string();
                let mut new = new_issue(&h);
                new.due_on = DUE_DATES[*due].map(str::to_string);
                let issue = r.raise_issue(&new).map_err(|e| fail(step, e))?;
                self.issues.push((h, issue.id));
            }
            Step::Transition { at, issue, to } => {
                let r = &self.replicas[at % n];
                let Some(before) = first_known(step, &self.issues, *issue, |id| r.issue(id))? else { return Ok(()) };
                match r.transition_issue(&before.id, &STATUSES[*to], "随机状态变更") {
                    Ok(after) => {
                        prop_assert_eq!(&after.status, &STATUSES[*to], "{:?}", step);
                        let new = new_transitions(&before, &after);
                        prop_assert_eq!(new.len(), 1, "{:?}", step);
                        self.transitions.extend(new);
                    }
                    Err(Error::InvalidTransition { .. }) => {
                        prop_assert!(!before.status.can_move_to(&STATUSES[*to]), "{:?} refused", step);
                    }
                    Err(e) => return Err(fail(step, e)),
                }
            }
            Step::Comment { at, issue } => {
                let r = &self.replicas[at % n];
                if let Some(i) = first_known(step, &self.issues, *issue, |id| r.issue(id))? {
                    let after = r.comment_on_issue(&i.id, "已电话联系家长").map_err(|e| fail(step, e))?;
                    prop_assert_eq!(after.comments.len(), i.comments.len() + 1, "{:?}", step);
                }
            }
            Step::SetAddress { at, household, value } => {
                let r = &self.replicas[at % n];
                let update = HouseholdUpdate { address: Some(ADDRESSES[*value].into()), ..Default::default() };
                r.update_household(self.household(*household), &update).map_err(|e| fail(step, e))?;
            }
            Step::SetGuardianPhone { at, household, value } => {
                let r = &self.replicas[at % n];
                let (h, guardian) = &self.households[household % self.households.len()];
                let update = GuardianUpdate { phone: Some(PHONES[*value].into()), ..Default::default() };
                r.update_guardian(h, guardian, &update).map_err(|e| fail(step, e))?;
            }
            Step::EditHouseholdNotes { at, household, edit } => {
                let r = &self.replicas[at % n];
                let h = self.household(*household);
                let current = r.household(h).map_err(|e| fail(step, e))?.notes;
                let update = HouseholdUpdate { notes: Some(edit.apply(&current)), ..Default::default() };
                r.update_household(h, &update).map_err(|e| fail(step, e))?;
            }
            Step::ResolveConflict { at, conflict, value } => {
                // The first replica from `at` on that lists a conflict.
                let mut listed = None;
                for k in 0..n {
                    let r = &self.replicas[(at + k) % n];
                    let conflicts = r.conflicts(None).map_err(|e| fail(step, e))?;
                    if !conflicts.is_empty() {
                        listed = Some((r, conflicts));
                        break;
                    }
                }
                let Some((r, conflicts)) = listed else { return Ok(()) };
                let Some(c) = pick(&conflicts, *conflict) else { return Ok(()) };
                let chosen = &c.values[value % c.values.len()].value;
                let issue = c.path.strip_prefix("issues/").and_then(|p| p.strip_suffix("/status"));
                let before = issue.map(|id| r.issue(id)).transpose().map_err(|e| fail(step, e))?;
                r.resolve_conflict(&c.household_id, &c.path, chosen).map_err(|e| fail(step, e))?;
                if let Some(before) = before {
                    let after = r.issue(&before.id).map_err(|e| fail(step, e))?;
                    prop_assert_eq!(after.status.as_str(), chosen.as_str(), "{:?}", step);
                    let new = new_transitions(&before, &after);
                    prop_assert_eq!(new.len(), 1, "{:?}", step);
                    self.transitions.extend(new);
                }
                let left = r.conflicts(Some(&c.household_id)).map_err(|e| fail(step, e))?;
                prop_assert!(left.iter().all(|k| k.path != c.path), "{:?}: conflict still listed: {:?}", step, left);
            }
            Step::Send { from, to, against, deliveries } => {
                let from = from % n;
                let to = (from + 1 + to % (n - 1)) % n;
                let heads = match against {
                    Against::Recipient => self.replicas[to].heads().unwrap(),
                    Against::Nothing => Vec::new(),
                    Against::Replica(k) => {
                        let others: Vec<usize> = (0..n).filter(|&x| x != from && x != to).collect();
                        self.replicas[others[k % others.len()]].heads().unwrap()
                    }
                };
                let message = self.replicas[from].export_changes(&heads).map_err(|e| fail(step, e))?;
                for d in deliveries {
                    let mut batches: Vec<HouseholdChanges> = message
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| d.households & (1 << (k % 8)) != 0)
                        .map(|(_, b)| b.clone())
                        .collect();
                    if let Some(mask) = d.changes {
                        for b in &mut batches {
                            let mut k = 0;
                            b.changes.retain(|_| {
                                k += 1;
                                mask & (1 << ((k - 1) % 64)) != 0
                            });
                        }
                    }
                    self.network.push(InFlight { due: now + d.delay, sent_at: now, to, batches });
                }
            }
        }
        Ok(())
    }

    /// Deliver what is due after step `now` (everything still on the network with `None`),
    /// in the order it falls due.
    fn deliver(&mut self, now: Option<usize>) -> Outcome {
        let (mut due, later): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.network).into_iter().partition(|m| now.is_none_or(|now| m.due <= now));
        self.network = later;
        due.sort_by_key(|m| m.due);
        for m in due {
            let what = format!("import into r{} of a message sent at step {}", m.to, m.sent_at);
            let report = ok(&what, self.replicas[m.to].import_changes(&m.batches))?;
            if report.changes_waiting > 0 {
                // Changes whose dependencies have not arrived are kept, in the file, until they do.
                let store = ok("store", Store::open(&self.path(m.to)))?;
                let mut held = 0;
                for b in &m.batches {
                    held += ok("waiting changes", store.pending_changes(&b.household_id))?.len();
                }
                prop_assert_eq!(held, report.changes_waiting as usize, "{}: changes kept waiting", what);
            }
        }
        Ok(())
    }

    fn path(&self, replica: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("r{replica}.sqlite3"))
    }

    /// Every replica sends to every other until, in a whole round, nobody has anything to
    /// send. A round goes through all ordered pairs, first everyone to r0, then r0 to
    /// everyone, then the rest, so that one round normally suffices and the next confirms it.
    fn quiesce(&self) -> Outcome {
        const ROUNDS: usize = 4;
        let n = self.replicas.len();
        let mut pairs: Vec<(usize, usize)> = (1..n).map(|i| (i, 0)).chain((1..n).map(|j| (0, j))).collect();
        pairs.extend((1..n).flat_map(|i| (1..n).filter(move |&j| j != i).map(move |j| (i, j))));
        for _ in 0..ROUNDS {
            let mut sent = 0;
            for &(a, b) in &pairs {
                let (a, b) = (&self.replicas[a], &self.replicas[b]);
                let changes = ok("export", a.export_changes(&ok("heads", b.heads())?))?;
                if !changes.is_empty() {
                    sent += 1;
                    ok("import", b.import_changes(&changes))?;
                }
            }
            if sent == 0 {
                return Ok(());
            }
        }
        Err(TestCaseError::fail(format!("replicas still exchanging changes after {ROUNDS} all-to-all rounds")))
    }

    fn sorted_heads(r: &Replica) -> Vec<HouseholdHeads> {
        let mut heads = r.heads().unwrap();
        for h in &mut heads {
            h.heads.sort();
        }
        heads
    }

    fn check(&self, reopen: usize) -> Outcome {
        let first = &self.replicas[0];
        let mut documents = Vec::new();
        for (h, _) in &self.households {
            documents.push(ok(&format!("document of {h} on r0"), first.household_json(h))?);
        }
        let document = |h: &str| &documents[self.households.iter().position(|(x, _)| x == h).unwrap()];

        // Nothing lost (on r0; every other replica has the same documents, checked below).
        for (h, v) in &self.visits {
            prop_assert!(document(h)["visits"].get(v).is_some(), "visit {} of {} lost", v, h);
        }
        for (h, i) in &self.issues {
            prop_assert!(document(h)["issues"].get(i).is_some(), "issue {} of {} lost", i, h);
        }
        for (h, i, t) in &self.transitions {
            let transitions = &document(h)["issues"][i]["transitions"];
            prop_assert!(transitions.get(t).is_some(), "transition {} of issue {} lost", t, i);
        }

        // What every replica must show, as r0 shows it.
        let heads = Self::sorted_heads(first);
        let households = ok("households on r0", first.list_households())?;
        let open = ok("open issues on r0", first.open_issues())?;
        let overdue = ok("overdue issues on r0", first.overdue_issues(TODAY))?;
        let overview = ok("overview on r0", first.overview(TODAY))?;
        let conflicts = ok("conflicts on r0", first.conflicts(None))?;

        // The household list agrees with the documents.
        for s in &households {
            let visits = document(&s.id)["visits"]
                .as_object()
                .map_or(0, |v| v.values().filter(|v| v.get("deleted").is_none_or(serde_json::Value::is_null)).count());
            let issues = ok("issues on r0", first.issues(&s.id))?;
            let active = issues.iter().filter(|i| i.deleted.is_none() && i.status.is_active()).count();
            prop_assert_eq!(s.visit_count as usize, visits, "visit count of {}", &s.id);
            prop_assert_eq!(s.open_issue_count as usize, active, "open issue count of {}", &s.id);
        }

        for (i, r) in self.replicas.iter().enumerate() {
            // Nothing still waits for dependencies once everyone has everything.
            let path = self.path(i);
            let store = ok("store", Store::open(&path))?;
            let waiting = ok("waiting changes", store.households_with_pending_changes())?;
            prop_assert!(waiting.is_empty(), "r{} still holds waiting changes for {:?}", i, waiting);
            // What is stored is what is in memory: one replica's file, opened afresh, holds
            // the same documents.
            if i == reopen % self.replicas.len() {
                let reopened = ok("reopen", Replica::open(&path, &r.member_id(), &r.device_id()))?;
                for ((h, _), doc) in self.households.iter().zip(&documents) {
                    let stored = ok(&format!("document of {h} on r{i} reopened"), reopened.household_json(h))?;
                    prop_assert_eq!(doc, &stored, "document of {} on r{} reopened", h, i);
                }
            }
            if i == 0 {
                continue;
            }
            // Same documents.
            prop_assert_eq!(&heads, &Self::sorted_heads(r), "heads on r0 and r{}", i);
            for ((h, _), doc) in self.households.iter().zip(&documents) {
                let theirs = ok(&format!("document of {h} on r{i}"), r.household_json(h))?;
                prop_assert_eq!(doc, &theirs, "document of {} on r0 and r{}", h, i);
            }
            // Same projections.
            let what = |name: &str| format!("{name} on r{i}");
            prop_assert_eq!(&households, &ok(&what("households"), r.list_households())?, "households, r0 and r{}", i);
            prop_assert_eq!(&open, &ok(&what("open issues"), r.open_issues())?, "open issues, r0 and r{}", i);
            prop_assert_eq!(&overdue, &ok(&what("overdue issues"), r.overdue_issues(TODAY))?, "overdue, r0 and r{}", i);
            prop_assert_eq!(&overview, &ok(&what("overview"), r.overview(TODAY))?, "overview, r0 and r{}", i);
            prop_assert_eq!(&conflicts, &ok(&what("conflicts"), r.conflicts(None))?, "conflicts, r0 and r{}", i);
        }
        Ok(())
    }
}

fn run_scenario(s: &Scenario) -> Outcome {
    let mut world = World::new(s.replicas, s.households);
    for (now, step) in s.steps.iter().enumerate() {
        world.run(now, step)?;
        world.deliver(Some(now))?;
    }
    world.deliver(None)?;
    world.quiesce()?;
    if !ok("conflicts", world.replicas[0].conflicts(None))?.is_empty() {
        for (k, step) in s.settle.iter().enumerate() {
            world.run(s.steps.len() + k, step)?;
        }
        world.quiesce()?;
    }
    world.check(s.reopen)
}

proptest! {
    // The default config: `PROPTEST_CASES` cases, 256 when unset.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn replicas_converge_whatever_the_edits_and_deliveries(s in scenario()) {
        run_scenario(&s)?;
    }
}
