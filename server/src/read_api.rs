//! The coordinator's read API (JSON): merged households, visits and issues with filters,
//! and statistics, always limited to the caller's branches and communities.
//!
//! Everything is read from the projection tables: no document is loaded.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::types::Value;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use doorstep_core::IssueStatus;

use crate::error::{Result, ServerError};
use crate::extract::Checked;
use crate::http::{caller, App};
use crate::org::{Member, Role};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/households", get(households))
        .route("/v1/visits", get(visits))
        .route("/v1/issues", get(issues))
        .route("/v1/stats", get(stats))
}

/// The query of every read endpoint; dates are `YYYY-MM-DD` (China time, UTC+8). Each
/// endpoint refuses a filter that means nothing for it, and any unknown name, so that a
/// misspelt filter is an error rather than a wider answer. `docs/read-api.md` describes
/// them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub branch: Option<String>,
    pub community: Option<String>,
    /// Households assigned to this member; for `/v1/visits`, the visits the member
    /// recorded or took part in.
    pub member: Option<String>,
    /// Issues in this status, or `active`: open, acknowledged, referred or in progress.
    pub status: Option<String>,
    /// Issues still active whose due date is before this day; for `/v1/stats`, the day
    /// overdue issues are counted on (default: today).
    pub overdue_on: Option<String>,
    /// Visits (or issues raised, or resolved for the statistics) on or after this day.
    pub from: Option<String>,
    /// The same, on or before this day.
    pub to: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

/// A day given as `field`, written exactly `YYYY-MM-DD`.
fn day(field: &str, text: &str) -> Result<chrono::NaiveDate> {
    doorstep_core::document::parse_date(text)
        .ok_or_else(|| ServerError::BadRequest(format!("{field} 应为 YYYY-MM-DD / {field} must be YYYY-MM-DD, got {text:?}")))
}

/// Milliseconds at 00:00 China time (UTC+8) of `date`.
fn day_start_ms(date: chrono::NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis() - 8 * 3600 * 1000
}

/// A filter `endpoint` does not take, given: refused.
fn refuse_filter(given: &Option<String>, name: &str, endpoint: &str) -> Result<()> {
    match given {
        Some(_) => Err(ServerError::BadRequest(format!("{endpoint} 不能按 {name} 筛选 / {endpoint} takes no {name} filter"))),
        None => Ok(()),
    }
}

/// The days `from` to `to`, both included, as `[start, end)` in milliseconds.
#[derive(Clone, Copy)]
struct Period {
    start: Option<i64>,
    end: Option<i64>,
}

impl Period {
    fn of(f: &Filter) -> Result<Period> {
        let from = f.from.as_deref().map(|d| day("from", d)).transpose()?;
        let to = f.to.as_deref().map(|d| day("to", d)).transpose()?;
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(ServerError::BadRequest(format!("from 晚于 to / from ({from}) is after to ({to})")));
            }
        }
        Ok(Period { start: from.map(day_start_ms), end: to.map(|d| day_start_ms(d) + DAY_MS) })
    }

    /// ` AND` conditions keeping `column` (milliseconds) in the period, with their parameters.
    fn condition(&self, column: &str) -> (String, Vec<Value>) {
        let (mut sql, mut params) = (String::new(), Vec::new());
        if let Some(start) = self.start {
            sql.push_str(&format!(" AND {column} >= ?"));
            params.push(Value::Integer(start));
        }
        if let Some(end) = self.end {
            sql.push_str(&format!(" AND {column} < ?"));
            params.push(Value::Integer(end));
        }
        (sql, params)
    }
}

/// The SQL condition (on households `h`) limiting rows to what `member` may see, plus
/// the caller's filters, with their parameters.
fn household_scope(member: &Member, f: &Filter) -> Result<(String, Vec<Value>)> {
    let mut sql = String::from("1");
    let mut params: Vec<Value> = Vec::new();
    match member.role {
        Role::Admin => {}
        Role::Coordinator => {
            sql.push_str(" AND (h.branch_id IN (SELECT value FROM json_each(?)) OR h.community_id IN (SELECT value FROM json_each(?)))");
            params.push(Value::Text(serde_json::to_string(&member.scope_branches).expect("ids serialise")));
            params.push(Value::Text(serde_json::to_string(&member.scope_communities).expect("ids serialise")));
        }
        Role::Member => {
            return Err(ServerError::Forbidden("只有协调员和管理员可以查看汇总数据 / coordinators and admins only".into()))
        }
    }
    if let Some(b) = &f.branch {
        sql.push_str(" AND h.branch_id = ?");
        params.push(Value::Text(b.clone()));
    }
    if let Some(c) = &f.community {
        sql.push_str(" AND h.community_id = ?");
        params.push(Value::Text(c.clone()));
    }
    if let Some(m) = &f.member {
        sql.push_str(" AND h.id IN (SELECT household_id FROM household_members WHERE member_id = ?)");
        params.push(Value::Text(m.clone()));
    }
    Ok((sql, params))
}

fn rows<T>(conn: &Connection, sql: &str, params: Vec<Value>, map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(sql)?;
    let out = stmt.query_map(rusqlite::params_from_iter(params), map)?.collect::<rusqlite::Result<Vec<T>>>()?;
    Ok(out)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct HouseholdRow {
    pub id: String,
    pub family_name: String,
    pub address: String,
    pub community_id: String,
    pub branch_id: String,
    pub archived: bool,
    pub assigned_members: Vec<String>,
    /// Visits in the period (`from`, `to`), or ever.
    pub visits: u32,
    pub open_issues: u32,
}

async fn households(State(app): State<App>, headers: HeaderMap, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Json<Vec<HouseholdRow>>> {
    let member = caller(&app, &headers).await?;
    refuse_filter(&f.status, "status", "/v1/households")?;
    refuse_filter(&f.overdue_on, "overdue_on", "/v1/households")?;
    let (visit_period, mut params) = Period::of(&f)?.condition("v.started_at");
    let (scope, scope_params) = household_scope(&member, &f)?;
    params.extend(scope_params);
    let sql = format!(
        "SELECT h.id, h.family_name, h.address, h.community_id, h.branch_id, h.archived,
                (SELECT json_group_array(member_id) FROM household_members m WHERE m.household_id = h.id),
                (SELECT count(*) FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period}),
                (SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted
                   AND i.status IN ({open}))
         FROM households h WHERE {scope} ORDER BY h.community_id, h.family_name, h.id",
        open = doorstep_core::store::OVERDUE_STATUSES
    );
    let out = app
        .readers
        .read(move |conn| {
            rows(conn, &sql, params, |r| {
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
        })
        .await?;
    Ok(Json(out))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct VisitRow {
    pub id: String,
    pub household_id: String,
    pub community_id: String,
    pub branch_id: String,
    pub recorded_by: String,
    pub visitors: Vec<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub mode: String,
}

async fn visits(State(app): State<App>, headers: HeaderMap, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Json<Vec<VisitRow>>> {
    let member = caller(&app, &headers).await?;
    refuse_filter(&f.status, "status", "/v1/visits")?;
    refuse_filter(&f.overdue_on, "overdue_on", "/v1/visits")?;
    let period = Period::of(&f)?;
    let (scope, mut params) = household_scope(&member, &Filter { member: None, ..f.clone() })?;
    let mut sql = format!(
        "SELECT v.id, v.household_id, h.community_id, h.branch_id, v.recorded_by, v.visitors, v.started_at, v.ended_at, v.mode
         FROM visits v JOIN households h ON h.id = v.household_id
         WHERE NOT v.deleted AND {scope}"
    );
    if let Some(m) = &f.member {
        sql.push_str(" AND (v.recorded_by = ? OR EXISTS (SELECT 1 FROM json_each(v.visitors) WHERE value = ?))");
        params.push(Value::Text(m.clone()));
        params.push(Value::Text(m.clone()));
    }
    let (in_period, period_params) = period.condition("v.started_at");
    sql.push_str(&in_period);
    params.extend(period_params);
    sql.push_str(" ORDER BY v.started_at, v.id");
    let out = app
        .readers
        .read(move |conn| {
            rows(conn, &sql, params, |r| {
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
        })
        .await?;
    Ok(Json(out))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct IssueRow {
    pub id: String,
    pub household_id: String,
    pub community_id: String,
    pub branch_id: String,
    pub title: String,
    pub category: String,
    pub urgency: String,
    pub status: String,
    pub assignee: Option<String>,
    pub due_on: Option<String>,
    pub raised_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
}

async fn issues(State(app): State<App>, headers: HeaderMap, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Json<Vec<IssueRow>>> {
    let member = caller(&app, &headers).await?;
    let period = Period::of(&f)?;
    let overdue_on = f.overdue_on.as_deref().map(|d| day("overdue_on", d)).transpose()?;
    let (scope, mut params) = household_scope(&member, &f)?;
    let mut sql = format!(
        "SELECT i.id, i.household_id, h.community_id, h.branch_id, i.title, i.category, i.urgency, i.status,
                i.assignee, i.due_on, i.raised_at, i.resolved_at
         FROM issues i JOIN households h ON h.id = i.household_id
         WHERE NOT i.deleted AND {scope}"
    );
    match f.status.as_deref() {
        None => {}
        Some("active") => sql.push_str(&format!(" AND i.status IN ({})", doorstep_core::store::OVERDUE_STATUSES)),
        Some(s) if !matches!(IssueStatus::from(s), IssueStatus::Other(_)) => {
            sql.push_str(" AND i.status = ?");
            params.push(Value::Text(s.to_string()));
        }
        Some(s) => {
            return Err(ServerError::BadRequest(format!(
                "status 应为 open、acknowledged、referred、in_progress、resolved、closed 或 active / status must be \
                 open, acknowledged, referred, in_progress, resolved, closed or active, got {s:?}"
            )))
        }
    }
    if let Some(day) = overdue_on {
        // Due dates are written `YYYY-MM-DD` (the core refuses any other spelling), so
        // comparing them as text compares the days.
        sql.push_str(&format!(" AND i.status IN ({}) AND i.due_on < ?", doorstep_core::store::OVERDUE_STATUSES));
        params.push(Value::Text(day.format("%Y-%m-%d").to_string()));
    }
    let (in_period, period_params) = period.condition("i.raised_at");
    sql.push_str(&in_period);
    params.extend(period_params);
    sql.push_str(" ORDER BY i.raised_at, i.id");
    let out = app
        .readers
        .read(move |conn| {
            rows(conn, &sql, params, |r| {
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
        })
        .await?;
    Ok(Json(out))
}

/// Counts for one branch or one community.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupStats {
    pub id: String,
    /// Households assigned to at least one member, not archived.
    pub households_assigned: u32,
    /// Of those, households visited in the period.
    pub households_visited: u32,
    /// visited / assigned, 0 when nothing is assigned.
    pub coverage: f64,
    /// Visits in the period, to any household of the group (archived ones too: the
    /// visits were made).
    pub visits: u32,
    /// Issues open, acknowledged, referred or in progress.
    pub open_issues: u32,
    /// Of those, issues due before the day overdue is counted on.
    pub overdue_issues: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberStats {
    pub member_id: String,
    /// Visits in the period the member recorded or took part in, each counted once.
    pub visits: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub households_assigned: u32,
    pub households_visited: u32,
    pub coverage: f64,
    pub visits: u32,
    pub open_issues: u32,
    pub overdue_issues: u32,
    pub by_branch: Vec<GroupStats>,
    pub by_community: Vec<GroupStats>,
    pub visits_by_member: Vec<MemberStats>,
    /// Median hours from raising to resolving, over issues resolved in the period.
    pub median_hours_to_resolve: Option<f64>,
}

async fn stats(State(app): State<App>, headers: HeaderMap, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Json<Stats>> {
    let member = caller(&app, &headers).await?;
    refuse_filter(&f.status, "status", "/v1/stats")?;
    let period = Period::of(&f)?;
    let today = match &f.overdue_on {
        Some(d) => day("overdue_on", d)?,
        None => (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive(),
    }
    .format("%Y-%m-%d")
    .to_string();
    let (scope, params) = household_scope(&member, &f)?;
    let (visit_period, visit_params) = period.condition("v.started_at");
    let (resolve_period, resolve_params) = period.condition("i.resolved_at");
    let out = app
        .readers
        .read(move |conn| {
            let group = |column: &str| -> Result<Vec<GroupStats>> {
                let sql = format!(
                    "SELECT h.{column},
                        count(*) FILTER (WHERE NOT h.archived AND EXISTS (SELECT 1 FROM household_members m WHERE m.household_id = h.id)),
                        count(*) FILTER (WHERE NOT h.archived AND EXISTS (SELECT 1 FROM household_members m WHERE m.household_id = h.id)
                                           AND EXISTS (SELECT 1 FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period})),
                        coalesce(sum((SELECT count(*) FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period})), 0),
                        coalesce(sum((SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted AND i.status IN ({open}))), 0),
                        coalesce(sum((SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted AND i.status IN ({open}) AND i.due_on < ?)), 0)
                     FROM households h WHERE {scope} GROUP BY h.{column} ORDER BY h.{column}",
                    open = doorstep_core::store::OVERDUE_STATUSES
                );
                let mut p = visit_params.clone();
                p.extend(visit_params.clone());
                p.push(Value::Text(today.clone()));
                p.extend(params.clone());
                rows(conn, &sql, p, |r| {
                    let assigned: u32 = r.get(1)?;
                    let visited: u32 = r.get(2)?;
                    Ok(GroupStats {
                        id: r.get(0)?,
                        households_assigned: assigned,
                        households_visited: visited,
                        coverage: coverage(visited, assigned),
                        visits: r.get(3)?,
                        open_issues: r.get(4)?,
                        overdue_issues: r.get(5)?,
                    })
                })
            };
            let by_branch = group("branch_id")?;
            let by_community = group("community_id")?;
            let mut p = visit_params.clone();
            p.extend(params.clone());
            // Whoever recorded the visit, and each member who took part, once per visit.
            let visits_by_member = rows(
                conn,
                &format!(
                    "SELECT m.value, count(DISTINCT v.id) FROM visits v JOIN households h ON h.id = v.household_id,
                            json_each(json_insert(v.visitors, '$[#]', v.recorded_by)) m
                     WHERE NOT v.deleted {visit_period} AND {scope} GROUP BY m.value ORDER BY 2 DESC, m.value"
                ),
                p,
                |r| Ok(MemberStats { member_id: r.get(0)?, visits: r.get(1)? }),
            )?;
            let mut p = resolve_params.clone();
            p.extend(params.clone());
            let mut hours: Vec<f64> = rows(
                conn,
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
            let total = |count: fn(&GroupStats) -> u32| by_branch.iter().map(count).sum::<u32>();
            let (households_assigned, households_visited) = (total(|g| g.households_assigned), total(|g| g.households_visited));
            Ok(Stats {
                households_assigned,
                households_visited,
                coverage: coverage(households_visited, households_assigned),
                visits: total(|g| g.visits),
                open_issues: total(|g| g.open_issues),
                overdue_issues: total(|g| g.overdue_issues),
                by_branch,
                by_community,
                visits_by_member,
                median_hours_to_resolve,
            })
        })
        .await?;
    Ok(Json(out))
}

/// Households visited over households assigned; 0 when none is assigned.
fn coverage(visited: u32, assigned: u32) -> f64 {
    if assigned == 0 {
        0.0
    } else {
        visited as f64 / assigned as f64
    }
}
