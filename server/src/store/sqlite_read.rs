//! The embedded store's readers: a read-only connection each, answering [`ReadStore`] from
//! the projection tables (no document is loaded).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::data_dir;
use super::read::*;
use super::sqlite::{member_row, MEMBER_COLUMNS};
use crate::error::Result;
use crate::org::{Member, Role};

/// How long a read waits for the store to be free (a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const DONE: &str = doorstep_core::store::DONE_STATUSES;

pub struct SqliteReader {
    conn: Connection,
    /// The store's file: a backup to download is written beside it.
    path: PathBuf,
}

impl SqliteReader {
    pub fn open(path: &Path) -> Result<SqliteReader> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(SqliteReader { conn, path: path.to_path_buf() })
    }

    fn rows<T>(&self, sql: &str, params: Vec<Value>, map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare(sql)?;
        let out = stmt.query_map(rusqlite::params_from_iter(params), map)?.collect::<rusqlite::Result<Vec<T>>>()?;
        Ok(out)
    }
}

/// ` AND` conditions keeping `column` (milliseconds) in the period, with their parameters.
fn in_period(period: &Period, column: &str) -> (String, Vec<Value>) {
    let (mut sql, mut params) = (String::new(), Vec::new());
    if let Some(start) = period.start {
        sql.push_str(&format!(" AND {column} >= ?"));
        params.push(Value::Integer(start));
    }
    if let Some(end) = period.end {
        sql.push_str(&format!(" AND {column} < ?"));
        params.push(Value::Integer(end));
    }
    (sql, params)
}

/// For a page: the condition keeping rows after its key (sorted by `columns`) and the
/// `LIMIT` (one row more than the page, to tell whether another follows), with their
/// parameters; nothing for a whole list.
fn paging(page: &Option<Page>, columns: &str) -> (String, String, Vec<Value>) {
    let Some(page) = page else { return (String::new(), String::new(), Vec::new()) };
    let mut params = Vec::new();
    let after = match &page.after {
        None => String::new(),
        Some(SortKey::Household(community, family, id)) => {
            params.extend([community, family, id].map(|v| Value::Text(v.clone())));
            format!(" AND ({columns}) > (?, ?, ?)")
        }
        Some(SortKey::Timed(at, id)) => {
            params.extend([Value::Integer(*at), Value::Text(id.clone())]);
            format!(" AND ({columns}) > (?, ?)")
        }
    };
    (after, format!(" LIMIT {}", u64::from(page.limit) + 1), params)
}

/// The SQL condition (on households `h`) limiting rows to what the caller may see, and
/// to the query's branch, community and (unless `with_member` is false) member, with
/// its parameters.
fn household_scope(q: &ReadQuery, with_member: bool) -> (String, Vec<Value>) {
    let mut sql = String::from("1");
    let mut params: Vec<Value> = Vec::new();
    if q.caller.role != Role::Admin {
        sql.push_str(" AND (h.branch_id IN (SELECT value FROM json_each(?)) OR h.community_id IN (SELECT value FROM json_each(?)))");
        params.push(Value::Text(serde_json::to_string(&q.caller.scope_branches).expect("ids serialise")));
        params.push(Value::Text(serde_json::to_string(&q.caller.scope_communities).expect("ids serialise")));
    }
    if let Some(b) = &q.branch {
        sql.push_str(" AND h.branch_id = ?");
        params.push(Value::Text(b.clone()));
    }
    if let Some(c) = &q.community {
        sql.push_str(" AND h.community_id = ?");
        params.push(Value::Text(c.clone()));
    }
    if let (Some(m), true) = (&q.member, with_member) {
        sql.push_str(" AND h.id IN (SELECT household_id FROM household_members WHERE member_id = ?)");
        params.push(Value::Text(m.clone()));
    }
    (sql, params)
}

impl ReadStore for SqliteReader {
    fn member_by_token(&self, token_hash: &str) -> Result<Option<Member>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {MEMBER_COLUMNS} FROM members
                 WHERE id = (SELECT member_id FROM devices WHERE token_hash = ?1 AND revoked_at IS NULL)"
            ))?
            .query_row([token_hash], member_row)
            .optional()?)
    }

    fn households(&self, q: &ReadQuery) -> Result<Vec<HouseholdRow>> {
        let (visit_period, mut params) = in_period(&q.period, "v.started_at");
        let (scope, scope_params) = household_scope(q, true);
        params.extend(scope_params);
        let order = "h.community_id, h.family_name, h.id";
        let (after, limit, page_params) = paging(&q.page, order);
        params.extend(page_params);
        let sql = format!(
            "SELECT h.id, h.family_name, h.address, h.community_id, h.branch_id, h.archived,
                    (SELECT json_group_array(member_id) FROM household_members m WHERE m.household_id = h.id),
                    (SELECT count(*) FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period}),
                    (SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted AND i.status NOT IN ({DONE}))
             FROM households h WHERE {scope}{after} ORDER BY {order}{limit}"
        );
        self.rows(&sql, params, |r| {
            Ok(HouseholdRow {
                id: r.get(0)?,
                family_name: r.get(1)?,
                address: r.get(2)?,
                community_id: r.get(3)?,
                branch_id: r.get(4)?,
                archived: r.get(5)?,
                assigned_members: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                visits: r.get(7)?,
                open_issues: r.get(8)?,
            })
        })
    }

    fn visits(&self, q: &ReadQuery) -> Result<Vec<VisitRow>> {
        let (scope, mut params) = household_scope(q, false);
        let mut sql = format!(
            "SELECT v.id, v.household_id, h.community_id, h.branch_id, v.recorded_by, v.visitors, v.started_at, v.ended_at, v.mode
             FROM visits v JOIN households h ON h.id = v.household_id
             WHERE NOT v.deleted AND {scope}"
        );
        if let Some(m) = &q.member {
            sql.push_str(" AND (v.recorded_by = ? OR EXISTS (SELECT 1 FROM json_each(v.visitors) WHERE value = ?))");
            params.push(Value::Text(m.clone()));
            params.push(Value::Text(m.clone()));
        }
        let (period, period_params) = in_period(&q.period, "v.started_at");
        sql.push_str(&period);
        params.extend(period_params);
        let (after, limit, page_params) = paging(&q.page, "v.started_at, v.id");
        params.extend(page_params);
        sql.push_str(&format!("{after} ORDER BY v.started_at, v.id{limit}"));
        self.rows(&sql, params, |r| {
            Ok(VisitRow {
                id: r.get(0)?,
                household_id: r.get(1)?,
                community_id: r.get(2)?,
                branch_id: r.get(3)?,
                recorded_by: r.get(4)?,
                visitors: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                started_at_ms: r.get(6)?,
                ended_at_ms: r.get(7)?,
                mode: r.get(8)?,
            })
        })
    }

    fn issues(&self, q: &ReadQuery) -> Result<Vec<IssueRow>> {
        let (scope, mut params) = household_scope(q, true);
        let mut sql = format!(
            "SELECT i.id, i.household_id, h.community_id, h.branch_id, i.title, i.category, i.urgency, i.status,
                    i.assignee, i.due_on, i.raised_at, i.resolved_at
             FROM issues i JOIN households h ON h.id = i.household_id
             WHERE NOT i.deleted AND {scope}"
        );
        match &q.status {
            None => {}
            Some(StatusFilter::Active) => sql.push_str(&format!(" AND i.status NOT IN ({DONE})")),
            Some(StatusFilter::Is(status)) => {
                sql.push_str(" AND i.status = ?");
                params.push(Value::Text(status.clone()));
            }
        }
        if let Some(day) = &q.overdue_on {
            sql.push_str(&format!(" AND i.status NOT IN ({DONE}) AND i.due_on < ?"));
            params.push(Value::Text(day.clone()));
        }
        let (period, period_params) = in_period(&q.period, "i.raised_at");
        sql.push_str(&period);
        params.extend(period_params);
        let (after, limit, page_params) = paging(&q.page, "i.raised_at, i.id");
        params.extend(page_params);
        sql.push_str(&format!("{after} ORDER BY i.raised_at, i.id{limit}"));
        self.rows(&sql, params, |r| {
            Ok(IssueRow {
                id: r.get(0)?,
                household_id: r.get(1)?,
                community_id: r.get(2)?,
                branch_id: r.get(3)?,
                title: r.get(4)?,
                category: r.get(5)?,
                urgency: r.get(6)?,
                status: r.get(7)?,
                assignee: r.get(8)?,
                due_on: r.get(9)?,
                raised_at_ms: r.get(10)?,
                resolved_at_ms: r.get(11)?,
            })
        })
    }

    fn stats(&self, q: &ReadQuery) -> Result<Stats> {
        let (scope, params) = household_scope(q, true);
        let (visit_period, visit_params) = in_period(&q.period, "v.started_at");
        let (resolve_period, resolve_params) = in_period(&q.period, "i.resolved_at");
        let today = q.overdue_on.clone().unwrap_or_default();
        let group = |column: &str| -> Result<Vec<GroupStats>> {
            let sql = format!(
                "SELECT h.{column},
                    count(*) FILTER (WHERE NOT h.archived AND EXISTS (SELECT 1 FROM household_members m WHERE m.household_id = h.id)),
                    count(*) FILTER (WHERE NOT h.archived AND EXISTS (SELECT 1 FROM household_members m WHERE m.household_id = h.id)
                                       AND EXISTS (SELECT 1 FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period})),
                    coalesce(sum((SELECT count(*) FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period})), 0),
                    coalesce(sum((SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted AND i.status NOT IN ({DONE}))), 0),
                    coalesce(sum((SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted AND i.status NOT IN ({DONE}) AND i.due_on < ?)), 0)
                 FROM households h WHERE {scope} GROUP BY h.{column} ORDER BY h.{column}"
            );
            let mut p = visit_params.clone();
            p.extend(visit_params.clone());
            p.push(Value::Text(today.clone()));
            p.extend(params.clone());
            self.rows(&sql, p, |r| {
                Ok(GroupStats { id: r.get(0)?, counts: Counts::new(r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?) })
            })
        };
        let by_branch = group("branch_id")?;
        let by_community = group("community_id")?;
        let mut p = visit_params.clone();
        p.extend(params.clone());
        // Whoever recorded the visit, and each member who took part, once per visit.
        let visits_by_member = self.rows(
            &format!(
                "SELECT m.value, count(DISTINCT v.id) FROM visits v JOIN households h ON h.id = v.household_id,
                        json_each(json_insert(v.visitors, '$[#]', v.recorded_by)) m
                 WHERE NOT v.deleted {visit_period} AND {scope} GROUP BY m.value ORDER BY 2 DESC, m.value"
            ),
            p,
            |r| Ok(MemberStats { member_id: r.get(0)?, visits: r.get(1)? }),
        )?;
        let mut p = resolve_params;
        p.extend(params);
        let mut hours: Vec<f64> = self.rows(
            &format!(
                "SELECT (i.resolved_at - i.raised_at) / 3600000.0 FROM issues i JOIN households h ON h.id = i.household_id
                 WHERE NOT i.deleted AND i.resolved_at IS NOT NULL {resolve_period} AND {scope}"
            ),
            p,
            |r| r.get(0),
        )?;
        hours.sort_by(f64::total_cmp);
        let median_hours_to_resolve = match hours.len() {
            0 => None,
            n if n % 2 == 1 => Some(hours[n / 2]),
            n => Some((hours[n / 2 - 1] + hours[n / 2]) / 2.0),
        };
        Ok(Stats {
            total: Counts::total(by_branch.iter().map(|g| &g.counts)),
            by_branch,
            by_community,
            visits_by_member,
            median_hours_to_resolve,
        })
    }

    fn back_up_for_download(&self) -> Result<(File, u64)> {
        data_dir::back_up_for_download(&self.conn, &self.path)
    }
}
