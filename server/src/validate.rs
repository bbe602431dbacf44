//! Checking a pushed change before it is merged.
//!
//! The change is applied to the household's working copy; then every path it wrote is
//! checked against the pushing member's role, and every record it touched is read back
//! (as the projection will store it) and checked against the schema. A change that fails
//! is quarantined with the reason returned here.

use std::collections::BTreeMap;

use automerge::Change;
use doorstep_core::document::{check_date, HouseholdDocument, Scope, View};
use doorstep_core::IssueStatus;

use crate::org::{Member, Role};

/// Fields only coordinators and admins may change.
const COORDINATOR_FIELDS: &[&str] = &["assigned_members", "branch_id", "community_id", "archived"];

/// Check `change`, already applied to `doc`. On success, the records it touched and,
/// unless that is the whole document, their projection: each record is read once, for
/// the checks and for the store.
pub fn check_change(
    doc: &mut HouseholdDocument,
    change: &Change,
    member: &Member,
) -> Result<(Scope, Option<View>), String> {
    let is_member = member.role == Role::Member;
    let mut household = false;
    // Record id -> whether the change wrote its `recorded` / `raised` stamp.
    let mut visits: BTreeMap<String, bool> = BTreeMap::new();
    let mut issues: BTreeMap<String, bool> = BTreeMap::new();
    for path in doc.paths_written_by(change) {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["household", field, ..] => {
                if is_member && COORDINATOR_FIELDS.contains(field) {
                    return Err(format!(
                        "党员不能修改住户的“{field}” / members cannot change household {field} (assignment, branch, community, archive)"
                    ));
                }
                household = true;
            }
            ["visits", id, rest @ ..] => *visits.entry(id.to_string()).or_default() |= rest.first() == Some(&"recorded"),
            ["issues", id, rest @ ..] => *issues.entry(id.to_string()).or_default() |= rest.first() == Some(&"raised"),
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
        if read.household.is_none() {
            return Err(unfit(&"it is missing"));
        }
        view.absorb(read);
    }
    for (id, stamp_written) in &visits {
        // Looked up once per record: whether this change created it.
        let created = is_member && doc.created_by(&["visits", id], change);
        if is_member && *stamp_written && !created {
            return Err("不能修改走访记录的记录人 / the recorder of a visit cannot be changed".into());
        }
        let unfit = |e: &dyn std::fmt::Display| format!("走访记录不符合格式 / visit {id} does not fit the schema: {e}");
        let read = doc.view(&Scope::visit(id)).map_err(|e| unfit(&e))?;
        let Some((_, Some(visit))) = read.visits.first() else { return Err(unfit(&"it is missing")) };
        if is_member {
            let own = visit.recorded.member_id == member.id;
            if created && !own {
                return Err(format!("走访记录必须以本人名义记录 / visit {id} must be recorded under your own id"));
            }
            if !created && !own && !visit.visitors.contains(&member.id) {
                return Err(format!(
                    "不能修改其他党员的走访记录 / cannot change visit {id}, recorded by another member"
                ));
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
    for (id, stamp_written) in &issues {
        if is_member && *stamp_written && !doc.created_by(&["issues", id], change) {
            return Err("不能修改问题的提出人 / who raised an issue cannot be changed".into());
        }
        let unfit = |e: &dyn std::fmt::Display| format!("问题记录不符合格式 / issue {id} does not fit the schema: {e}");
        let read = doc.view(&Scope::issue(id)).map_err(|e| unfit(&e))?;
        let Some((_, Some(issue))) = read.issues.first() else { return Err(unfit(&"it is missing")) };
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
