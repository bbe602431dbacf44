//! Projection tables: plain rows derived from the documents, for list screens and counts.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::Store;
use crate::document::View;
use crate::error::Result;
use crate::model::*;

/// Statuses that no longer count as open (see `IssueStatus::is_active`): every other
/// status does, one an app newer than this one wrote included.
pub const DONE_STATUSES: &str = "'resolved','closed'";

/// Rewrite the projection rows of one household that `view` covers.
pub(super) fn write(conn: &Connection, household_id: &str, view: &View) -> Result<()> {
    let id = household_id;
    if view.everything {
        for table in ["visits", "issues", "conflicts"] {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE household_id = ?1"))?.execute([id])?;
        }
    }
    if view.household_in_scope {
        conn.prepare_cached("DELETE FROM households WHERE id = ?1")?.execute([id])?;
        conn.prepare_cached("DELETE FROM household_members WHERE household_id = ?1")?.execute([id])?;
    }
    if let Some(household) = &view.household {
        conn.prepare_cached(
            "INSERT INTO households (id, family_name, address, community_id, branch_id, archived)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            id,
            household.family_name,
            household.address,
            household.community_id,
            household.branch_id,
            household.archived
        ])?;
        let mut member =
            conn.prepare_cached("INSERT INTO household_members (household_id, member_id) VALUES (?1, ?2)")?;
        for m in &household.assigned_members {
            member.execute(params![id, m])?;
        }
    }
    let mut delete_visit = conn.prepare_cached("DELETE FROM visits WHERE id = ?1")?;
    let mut visit = conn.prepare_cached(
        "INSERT INTO visits (id, household_id, started_at, ended_at, mode, follow_up_on, deleted, recorded_by, visitors)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (visit_id, v) in &view.visits {
        delete_visit.execute([visit_id])?;
        if let Some(v) = v {
            visit.execute(params![
                v.id,
                id,
                v.started_at_ms,
                v.ended_at_ms,
                v.mode.as_str(),
                v.follow_up_on,
                v.deleted.is_some(),
                v.recorded.member_id,
                serde_json::to_string(&v.visitors).expect("ids serialise")
            ])?;
        }
    }
    let mut delete_issue = conn.prepare_cached("DELETE FROM issues WHERE id = ?1")?;
    let mut issue = conn.prepare_cached(
        "INSERT INTO issues (id, household_id, visit_id, category, title, urgency, assignee, status,
                             due_on, raised_at, deleted, resolved_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (issue_id, i) in &view.issues {
        delete_issue.execute([issue_id])?;
        let Some(i) = i else { continue };
        let resolved_at = if i.status.is_active() {
            None
        } else {
            i.transitions.iter().rev().find(|t| t.to == IssueStatus::Resolved).map(|t| t.by.at_ms)
        };
        issue.execute(params![
            i.id,
            id,
            i.visit_id,
            i.category.as_str(),
            i.title,
            i.urgency.as_str(),
            i.assignee,
            i.status.as_str(),
            i.due_on,
            i.raised.at_ms,
            i.deleted.is_some(),
            resolved_at
        ])?;
    }
    let mut delete_conflicts = conn.prepare_cached(
        "DELETE FROM conflicts WHERE household_id = ?1 AND substr(path, 1, length(?2)) = ?2",
    )?;
    for prefix in &view.conflict_prefixes {
        delete_conflicts.execute([id, prefix.as_str()])?;
    }
    let mut conflict = conn
        .prepare_cached("INSERT OR REPLACE INTO conflicts (household_id, path, competing_values) VALUES (?1, ?2, ?3)")?;
    for c in &view.conflicts {
        let values: Vec<serde_json::Value> = c
            .values
            .iter()
            .map(|v| {
                serde_json::json!({"value": v.value, "member": v.by.member_id, "device": v.by.device_id, "at": v.by.at_ms})
            })
            .collect();
        conflict.execute(params![id, c.path, serde_json::Value::Array(values).to_string()])?;
    }
    Ok(())
}

/// Which problems a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueFilter {
    /// Still being handled (not resolved or closed).
    Open,
    /// Open and past their due date as of this day (`YYYY-MM-DD`).
    OverdueOn(String),
    /// Every problem of one household.
    Household(String),
}

fn issue_summary(r: &Row<'_>) -> rusqlite::Result<IssueSummary> {
    Ok(IssueSummary {
        id: r.get(0)?,
        household_id: r.get(1)?,
        title: r.get(2)?,
        category: r.get::<_, String>(3)?.as_str().into(),
        urgency: r.get::<_, String>(4)?.as_str().into(),
        status: r.get::<_, String>(5)?.as_str().into(),
        assignee: r.get(6)?,
        due_on: r.get(7)?,
        raised_at_ms: r.get(8)?,
    })
}

impl Store {
    pub fn household_summaries(&self) -> Result<Vec<HouseholdSummary>> {
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT household_id, member_id FROM household_members ORDER BY member_id")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (h, m) = row?;
            members.entry(h).or_default().push(m);
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT h.id, h.family_name, h.address, h.community_id, h.branch_id, h.archived,
                    coalesce(v.n, 0), v.last, coalesce(i.n, 0)
             FROM households h
             LEFT JOIN (SELECT household_id, count(*) AS n, max(started_at) AS last
                        FROM visits WHERE NOT deleted GROUP BY household_id) v ON v.household_id = h.id
             LEFT JOIN (SELECT household_id, count(*) AS n FROM issues
                        WHERE NOT deleted AND status NOT IN ({DONE_STATUSES}) GROUP BY household_id) i
                    ON i.household_id = h.id
             ORDER BY h.family_name, h.id"
        ))?;
        let rows = stmt
            .query_map([], |r| {
                let id: String = r.get(0)?;
                Ok(HouseholdSummary {
                    assigned_members: members.remove(&id).unwrap_or_default(),
                    id,
                    family_name: r.get(1)?,
                    address: r.get(2)?,
                    community_id: r.get(3)?,
                    branch_id: r.get(4)?,
                    archived: r.get(5)?,
                    visit_count: r.get(6)?,
                    last_visit_at_ms: r.get(7)?,
                    open_issue_count: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn issue_summaries(&self, filter: &IssueFilter) -> Result<Vec<IssueSummary>> {
        let select = "SELECT id, household_id, title, category, urgency, status, assignee, due_on, raised_at
                      FROM issues WHERE NOT deleted";
        let rows = match filter {
            IssueFilter::Open => self
                .conn
                .prepare_cached(&format!("{select} AND status NOT IN ({DONE_STATUSES}) ORDER BY due_on IS NULL, due_on, raised_at, id"))?
                .query_map([], issue_summary)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            IssueFilter::OverdueOn(day) => self
                .conn
                .prepare_cached(&format!(
                    "{select} AND status NOT IN ({DONE_STATUSES}) AND due_on < ?1 ORDER BY due_on, raised_at, id"
                ))?
                .query_map([day], issue_summary)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            IssueFilter::Household(h) => self
                .conn
                .prepare_cached(&format!("{select} AND household_id = ?1 ORDER BY raised_at, id"))?
                .query_map([h], issue_summary)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
        };
        Ok(rows)
    }

    /// Per community: households and visited households (archived ones aside), visits,
    /// open and overdue problems, and problems per status (of archived households too, as
    /// the server's statistics count them: the visits were made, the problems are open).
    pub fn overview(&self, today: &str) -> Result<Vec<CommunityOverview>> {
        let mut by_community: std::collections::BTreeMap<String, CommunityOverview> = Default::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT h.community_id, count(*) FILTER (WHERE NOT h.archived),
                    count(v.household_id) FILTER (WHERE NOT h.archived), coalesce(sum(v.n), 0)
             FROM households h
             LEFT JOIN (SELECT household_id, count(*) AS n FROM visits WHERE NOT deleted GROUP BY household_id) v
                    ON v.household_id = h.id
             GROUP BY h.community_id",
        )?;
        for row in stmt.query_map([], |r| {
            Ok(CommunityOverview {
                community_id: r.get(0)?,
                households: r.get(1)?,
                visited_households: r.get(2)?,
                visits: r.get(3)?,
                open_issues: 0,
                overdue_issues: 0,
                issues_by_status: Vec::new(),
            })
        })? {
            let o = row?;
            by_community.insert(o.community_id.clone(), o);
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT h.community_id, i.status, count(*),
                    count(*) FILTER (WHERE i.status NOT IN ({DONE_STATUSES}) AND i.due_on < ?1)
             FROM issues i JOIN households h ON h.id = i.household_id
             WHERE NOT i.deleted
             GROUP BY h.community_id, i.status"
        ))?;
        let rows = stmt
            .query_map([today], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?, r.get::<_, u32>(3)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (community, status, count, overdue) in rows {
            let o = by_community.entry(community.clone()).or_insert_with(|| CommunityOverview {
                community_id: community,
                households: 0,
                visited_households: 0,
                visits: 0,
                open_issues: 0,
                overdue_issues: 0,
                issues_by_status: Vec::new(),
            });
            let status = IssueStatus::from(status.as_str());
            if status.is_active() {
                o.open_issues += count;
            }
            o.overdue_issues += overdue;
            o.issues_by_status.push((status, count));
        }
        let mut out: Vec<CommunityOverview> = by_community.into_values().collect();
        for o in &mut out {
            o.issues_by_status.sort_by_key(|(s, _)| (s.stage(), s.to_string()));
        }
        Ok(out)
    }

    pub fn conflicts(&self, household_id: Option<&str>) -> Result<Vec<Conflict>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT household_id, path, competing_values FROM conflicts
             WHERE ?1 IS NULL OR household_id = ?1 ORDER BY household_id, path",
        )?;
        let rows = stmt
            .query_map([household_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .map(|(household_id, path, values)| {
                let values: Vec<serde_json::Value> = serde_json::from_str(&values).unwrap_or_default();
                let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
                Conflict {
                    household_id,
                    path,
                    values: values
                        .iter()
                        .map(|v| ConflictValue {
                            value: text(v, "value"),
                            by: Stamp {
                                member_id: text(v, "member"),
                                device_id: text(v, "device"),
                                at_ms: v["at"].as_i64().unwrap_or_default(),
                            },
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// The household a visit or an issue belongs to.
    pub fn household_of(&self, table: RecordTable, id: &str) -> Result<Option<String>> {
        let sql = match table {
            RecordTable::Visits => "SELECT household_id FROM visits WHERE id = ?1",
            RecordTable::Issues => "SELECT household_id FROM issues WHERE id = ?1",
        };
        Ok(self.conn.prepare_cached(sql)?.query_row([id], |r| r.get(0)).optional()?)
    }
}

/// Record tables that can be looked up by id.
#[derive(Debug, Clone, Copy)]
pub enum RecordTable {
    Visits,
    Issues,
}
