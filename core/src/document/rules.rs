//! The rules a change must follow: who may change what, and the schema.
//!
//! One check, run in two places: the server runs it on every pushed change before it is
//! merged (one that fails is quarantined with the reason returned here), and a member's
//! phone runs it on each of its own edits before keeping it (one that fails is refused at
//! once, so it never waits on the server, nor holds back the phone's later changes).
//!
//! The change is applied to the document; then every path it wrote is checked against
//! the member's role, and every record it touched is read back (as the projection will
//! store it) and checked against the schema.

use std::collections::BTreeMap;

use automerge::Change;

use super::{check_date, HouseholdDocument, Scope, View};
use crate::model::{Issue, IssueStatus, Role, Stamp, Visit};

/// Household fields only coordinators and admins may change (`created`: who created the
/// household, and when).
const COORDINATOR_FIELDS: &[&str] = &["assigned_members", "branch_id", "community_id", "archived", "created"];

/// What a change wrote of one visit or issue.
#[derive(Default)]
struct Wrote {
    /// The record's key itself (`["visits", id]`): a new record, or one replaced.
    key: bool,
    /// Replacing what the key held before the change (the operation there names
    /// predecessors the change did not make).
    replaced: bool,
    /// Its `recorded` / `raised` stamp.
    stamp: bool,
    /// A visit's `visitors`.
    visitors: bool,
    /// Its `deleted` stamp (deleted or restored).
    deleted: bool,
    /// An issue's `transitions` or `comments` map itself.
    lists: bool,
    /// Its status moves and comments: (`transitions` or `comments`, key) -> whether the
    /// change wrote that key itself, and whether it replaced what the key held.
    entries: BTreeMap<(String, String), (bool, bool)>,
}

/// Check `change`, made by member `member_id` in `role` and already applied to `doc`. On
/// success, the records it touched and, unless that is the whole document, their
/// projection: each record is read once, for the checks and for the store. On failure,
/// the reason, in Chinese and English.
pub fn check_change(
    doc: &mut HouseholdDocument,
    change: &Change,
    member_id: &str,
    role: Role,
) -> Result<(Scope, Option<View>), String> {
    let is_member = role == Role::Member;
    let mut household = false;
    // Household fields (and guardians' or students' names) the change wrote, which must
    // not be blank: only those, so that a blank left by an older version locks nothing.
    let mut named: Vec<Vec<String>> = Vec::new();
    let mut visits: BTreeMap<String, Wrote> = BTreeMap::new();
    let mut issues: BTreeMap<String, Wrote> = BTreeMap::new();
    for (path, replaced) in doc.paths_written_by(change) {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["household", field, ..] => {
                if is_member && COORDINATOR_FIELDS.contains(field) {
                    return Err(format!(
                        "党员不能修改住户的“{field}” / members cannot change household {field} (assignment, branch, community, archive, creation)"
                    ));
                }
                household = true;
                match p.as_slice() {
                    ["household", "family_name" | "branch_id" | "community_id"]
                    | ["household", "guardians" | "students", _]
                    | ["household", "guardians" | "students", _, "name"] => named.push(path.clone()),
                    _ => {}
                }
            }
            ["visits", id, rest @ ..] => visits.entry(id.to_string()).or_default().note(rest, replaced, "recorded"),
            ["issues", id, rest @ ..] => issues.entry(id.to_string()).or_default().note(rest, replaced, "raised"),
            [] | ["household"] | ["visits"] | ["issues"] | ["schema_version"] | ["?", ..] if is_member => {
                return Err("党员不能创建或替换住户文档 / members cannot create or replace a household document".into());
            }
            // Whoever pushes it: no app writes there (a crafted change can make an object
            // its own ancestor, which nothing could read back).
            ["?", ..] => {
                return Err("变更写到了文档中不存在的位置 / the change writes to an object with no place in the document".into());
            }
            _ => {}
        }
    }
    if visits.is_empty() && issues.is_empty() && !household {
        return Ok((Scope::Everything, None));
    }
    let mut view = View::default();
    if household {
        let unfit = |e: &dyn std::fmt::Display| format!("住户资料不符合格式 / the household does not fit the schema: {e}");
        let read = doc.view(&Scope::household()).map_err(|e| unfit(&e))?;
        let Some(h) = &read.household else { return Err(unfit(&"it is missing")) };
        let person = |people: &str, id: &str| match people {
            "guardians" => h.guardians.iter().find(|g| g.id == id).map(|g| g.name.as_str()),
            _ => h.students.iter().find(|s| s.id == id).map(|s| s.name.as_str()),
        };
        for path in &named {
            let value = match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["household", "family_name"] => Some(h.family_name.as_str()),
                ["household", "branch_id"] => Some(h.branch_id.as_str()),
                ["household", "community_id"] => Some(h.community_id.as_str()),
                ["household", people, id, ..] => person(people, id),
                _ => None,
            };
            if value.is_some_and(|v| v.trim().is_empty()) {
                return Err(unfit(&format!("{} is blank", path[1..].join("/"))));
            }
        }
        view.absorb(read);
    }
    for (id, wrote) in &visits {
        let stamp_kept = "不能修改走访记录的记录人 / the recorder of a visit cannot be changed";
        let created = is_member && wrote.made_by_member(doc, change, ("visits", id), ("走访记录", "visit"), stamp_kept)?;
        // Who took part is set when the visit is recorded, so that it also says, as
        // before this change, who else may change the visit (below).
        if is_member && wrote.visitors && !created {
            return Err(format!("不能修改走访记录的参与人 / who took part in visit {id} cannot be changed"));
        }
        let unfit = |e: &dyn std::fmt::Display| format!("走访记录不符合格式 / visit {id} does not fit the schema: {e}");
        let read = doc.view(&Scope::visit(id)).map_err(|e| unfit(&e))?;
        let Some((_, Some(visit))) = read.visits.first() else { return Err(unfit(&"it is missing")) };
        if is_member {
            let own = visit.recorded.member_id == member_id;
            if created && !own {
                return Err(format!("走访记录必须以本人名义记录 / visit {id} must be recorded under your own id"));
            }
            if !created && !may_change_visit(visit, member_id, role) {
                return Err(format!(
                    "不能修改其他党员的走访记录 / cannot change visit {id}, recorded by another member"
                ));
            }
            if wrote.deleted {
                deleted_by_self(visit.deleted.as_ref(), member_id, ("走访记录", "visit"), id)?;
            }
        }
        if visit.ended_at_ms.is_some_and(|end| end < visit.started_at_ms) {
            return Err(format!("走访结束时间早于开始时间 / visit {id} ends before it starts"));
        }
        if let Some(d) = &visit.follow_up_on {
            check_date("follow_up_on", d).map_err(|e| e.to_string())?;
        }
        view.absorb(read);
    }
    for (id, wrote) in &issues {
        let stamp_kept = "不能修改问题的提出人 / who raised an issue cannot be changed";
        let created = is_member && wrote.made_by_member(doc, change, ("issues", id), ("问题记录", "issue"), stamp_kept)?;
        let unfit = |e: &dyn std::fmt::Display| format!("问题记录不符合格式 / issue {id} does not fit the schema: {e}");
        let read = doc.view(&Scope::issue(id)).map_err(|e| unfit(&e))?;
        let Some((_, Some(issue))) = read.issues.first() else { return Err(unfit(&"it is missing")) };
        if is_member {
            if created && issue.raised.member_id != member_id {
                return Err(format!("问题必须以本人名义提出 / issue {id} must be raised under your own id"));
            }
            check_history(doc, change, id, wrote, issue, member_id)?;
            if wrote.deleted {
                deleted_by_self(issue.deleted.as_ref(), member_id, ("问题", "issue"), id)?;
            }
        }
        if issue.title.trim().is_empty() {
            return Err(format!("问题标题为空 / issue {id} has an empty title"));
        }
        if let Some(d) = &issue.due_on {
            check_date("due_on", d).map_err(|e| e.to_string())?;
        }
        for t in &issue.transitions {
            let settles_conflict = t.from == t.to;
            if !settles_conflict && !t.from.can_move_to(&t.to) || matches!(t.to, IssueStatus::Other(_)) {
                return Err(format!(
                    "问题状态不能从“{}”改为“{}” / issue {id}: a move from {} to {} is not allowed",
                    t.from, t.to, t.from, t.to
                ));
            }
        }
        view.absorb(read);
    }
    let scope = Scope::Records { household, visits: visits.into_keys().collect(), issues: issues.into_keys().collect() };
    Ok((scope, Some(view)))
}

/// Whether a member in `role` may change `visit` once recorded: coordinators and admins
/// may; a member, if they recorded it or took part in it.
pub fn may_change_visit(visit: &Visit, member_id: &str, role: Role) -> bool {
    role != Role::Member || visit.recorded.member_id == member_id || visit.visitors.iter().any(|v| v == member_id)
}

impl Wrote {
    /// For a member's change to record `id` under `records`: whether it made the record.
    /// A member's change makes a record only at a key that held nothing before it, so one
    /// that wrote the key is refused if the key held a record (one the change replaced,
    /// or another made concurrently with it, which Automerge may show in its place). The
    /// record's stamp (who recorded or raised it) is set when it is made: changing it
    /// afterwards is refused with `stamp_kept`.
    fn made_by_member(
        &self,
        doc: &HouseholdDocument,
        change: &Change,
        (records, id): (&str, &str),
        (zh, en): (&str, &str),
        stamp_kept: &str,
    ) -> Result<bool, String> {
        if self.key && found_there(doc, change, &[records, id], self.replaced) {
            return Err(format!("该{zh}已存在，不能替换 / {en} {id} already holds a record, which cannot be replaced"));
        }
        if self.stamp && !self.key {
            return Err(stamp_kept.into());
        }
        Ok(self.key)
    }

    /// Take one path the change wrote under the record (`rest`, after its id).
    fn note(&mut self, rest: &[&str], replaced: bool, stamp: &str) {
        match rest {
            [] => (self.key, self.replaced) = (true, self.replaced || replaced),
            [field, ..] if *field == stamp => self.stamp = true,
            ["visitors", ..] => self.visitors = true,
            ["deleted", ..] => self.deleted = true,
            ["transitions" | "comments"] => self.lists = true,
            [list @ ("transitions" | "comments"), entry, more @ ..] => {
                let (key, replacing) = self.entries.entry((list.to_string(), entry.to_string())).or_default();
                if more.is_empty() {
                    (*key, *replacing) = (true, *replacing || replaced);
                }
            }
            _ => {}
        }
    }
}


/// Whether a change that wrote the key at `path` found something there: a value it
/// `replaced` (from `paths_written_by`), or one made concurrently that the key still shows.
fn found_there(doc: &HouseholdDocument, change: &Change, path: &[&str], replaced: bool) -> bool {
    replaced || doc.shows_others_at(path, change)
}

/// A member adds status moves and comments to an issue, each under the member's own id,
/// and changes none once made: they are the issue's history.
fn check_history(
    doc: &HouseholdDocument,
    change: &Change,
    id: &str,
    wrote: &Wrote,
    issue: &Issue,
    member_id: &str,
) -> Result<(), String> {
    let changed =
        || format!("问题的状态变更和评论写入后不能修改 / issue {id}: its status moves and comments cannot be changed once made");
    // Past `made_by_member`, a member's change that wrote the issue's key made it.
    if wrote.lists && !wrote.key {
        return Err(changed());
    }
    for ((list, entry), &(key, replaced)) in &wrote.entries {
        if !key || found_there(doc, change, &["issues", id, list, entry], replaced) {
            return Err(changed());
        }
        let by = match list.as_str() {
            "transitions" => issue.transitions.iter().find(|t| t.id == *entry).map(|t| &t.by),
            _ => issue.comments.iter().find(|c| c.id == *entry).map(|c| &c.by),
        };
        if by.map(|by| by.member_id.as_str()) != Some(member_id) {
            return Err(format!(
                "状态变更和评论必须以本人名义写入 / issue {id}: status moves and comments must be made under your own id"
            ));
        }
    }
    Ok(())
}

/// A member's change that deleted (or restored) a record: a deletion names the member.
fn deleted_by_self(deleted: Option<&Stamp>, member_id: &str, (zh, en): (&str, &str), id: &str) -> Result<(), String> {
    match deleted {
        Some(by) if by.member_id != member_id => {
            Err(format!("删除{zh}必须以本人名义 / {en} {id} must be deleted under your own id"))
        }
        _ => Ok(()),
    }
}
