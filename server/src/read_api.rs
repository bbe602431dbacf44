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

/// Filters shared by the list endpoints; dates are `YYYY-MM-DD` (China time).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filter {
    pub branch: Option<String>,
    pub community: Option<String>,
    pub member: Option<String>,
    pub status: Option<String>,
    /// Only open issues whose due date is before this day.
    pub overdue_on: Option<String>,
    /// Visits (or issues raised) on or after this day.
    pub from: Option<String>,
    /// Visits (or issues raised) on or before this day.
    pub to: Option<String>,
}

/// Milliseconds at 00:00 China time (UTC+8) of a `YYYY-MM-DD` day.
fn day_start_ms(field: &str, day: &str) -> Result<i64> {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| ServerError::BadRequest(format!("{field} 应为 YYYY-MM-DD / {field} must be YYYY-MM-DD, got {day:?}")))?;
    Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis() - 8 * 3600 * 1000)
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
    pub visits: u32,
    pub open_issues: u32,
}

async fn households(State(app): State<App>, headers: HeaderMap, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Json<Vec<HouseholdRow>>> {
    let member = caller(&app, &headers).await?;
    let (scope, params) = household_scope(&member, &f)?;
    let sql = format!(
        "SELECT h.id, h.family_name, h.address, h.community_id, h.branch_id, h.archived,
                (SELECT json_group_array(member_id) FROM household_members m WHERE m.household_id = h.id),
                (SELECT count(*) FROM visits v WHERE v.household_id = h.id AND NOT v.deleted),
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

fn period(f: &Filter, column: &str, sql: &mut String, params: &mut Vec<Value>) -> Result<()> {
    if let Some(from) = &f.from {
        sql.push_str(&format!(" AND {column} >= ?"));
        params.push(Value::Integer(day_start_ms("from", from)?));
    }
    if let Some(to) = &f.to {
        sql.push_str(&format!(" AND {column} < ?"));
        params.push(Value::Integer(day_start_ms("to", to)? + 86_400_000));
    }
    Ok(())
}

async fn visits(State(app): State<App>, headers: HeaderMap, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Json<Vec<VisitRow>>> {
    let member = caller(&app, &headers).await?;
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
    period(&f, "v.started_at", &mut sql, &mut params)?;
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
    let (scope, mut params) = household_scope(&member, &f)?;
    let mut sql = format!(
        "SELECT i.id, i.household_id, h.community_id, h.branch_id, i.title, i.category, i.urgency, i.status,
                i.assignee, i.due_on, i.raised_at, i.resolved_at
         FROM issues i JOIN households h ON h.id = i.household_id
         WHERE NOT i.deleted AND {scope}"
    );
    if let Some(s) = &f.status {
        sql.push_str(" AND i.status = ?");
        params.push(Value::Text(s.clone()));
    }
    if let Some(day) = &f.overdue_on {
        day_start_ms("overdue_on", day)?;
        sql.push_str(&format!(" AND i.status IN ({}) AND i.due_on < ?", doorstep_core::store::OVERDUE_STATUSES));
        params.push(Value::Text(day.clone()));
    }
    period(&f, "i.raised_at", &mut sql, &mut params)?;
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
    /// Households assigned to at least one member.
    pub households_assigned: u32,
    /// Of those, households visited in the period.
    pub households_visited: u32,
    /// visited / assigned, 0 when nothing is assigned.
    pub coverage: f64,
    pub visits: u32,
    pub open_issues: u32,
    pub overdue_issues: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberStats {
    pub member_id: String,
    pub visits: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub households_assigned: u32,
    pub households_visited: u32,
    pub coverage: f64,
    pub visits: u32,
    pub by_branch: Vec<GroupStats>,
    pub by_community: Vec<GroupStats>,
    pub visits_by_member: Vec<MemberStats>,
    /// Median hours from raising to resolving, over issues resolved in the period.
    pub median_hours_to_resolve: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    #[serde(flatten)]
    pub filter: Filter,
    /// The day overdue is counted on (default: today, China time).
    pub today: Option<String>,
}

async fn stats(State(app): State<App>, headers: HeaderMap, Checked(Query(q)): Checked<Query<StatsQuery>>) -> Result<Json<Stats>> {
    let member = caller(&app, &headers).await?;
    let (scope, params) = household_scope(&member, &q.filter)?;
    let today = match q.today {
        Some(d) => {
            day_start_ms("today", &d)?;
            d
        }
        None => (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m-%d").to_string(),
    };
    let mut visit_period = String::new();
    let mut period_params = Vec::new();
    period(&q.filter, "v.started_at", &mut visit_period, &mut period_params)?;
    let mut resolve_period = String::new();
    let mut resolve_params = Vec::new();
    period(&q.filter, "i.resolved_at", &mut resolve_period, &mut resolve_params)?;
    let out = app
        .readers
        .read(move |conn| {
            let group = |column: &str| -> Result<Vec<GroupStats>> {
                let sql = format!(
                    "SELECT h.{column},
                        count(*) FILTER (WHERE EXISTS (SELECT 1 FROM household_members m WHERE m.household_id = h.id)),
                        count(*) FILTER (WHERE EXISTS (SELECT 1 FROM household_members m WHERE m.household_id = h.id)
                                           AND EXISTS (SELECT 1 FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period})),
                        coalesce(sum((SELECT count(*) FROM visits v WHERE v.household_id = h.id AND NOT v.deleted {visit_period})), 0),
                        coalesce(sum((SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted AND i.status IN ({open}))), 0),
                        coalesce(sum((SELECT count(*) FROM issues i WHERE i.household_id = h.id AND NOT i.deleted AND i.status IN ({open}) AND i.due_on < ?)), 0)
                     FROM households h WHERE NOT h.archived AND {scope} GROUP BY h.{column} ORDER BY h.{column}",
                    open = doorstep_core::store::OVERDUE_STATUSES
                );
                let mut p = period_params.clone();
                p.extend(period_params.clone());
                p.push(Value::Text(today.clone()));
                p.extend(params.clone());
                rows(conn, &sql, p, |r| {
                    let assigned: u32 = r.get(1)?;
                    let visited: u32 = r.get(2)?;
                    Ok(GroupStats {
                        id: r.get(0)?,
                        households_assigned: assigned,
                        households_visited: visited,
                        coverage: if assigned == 0 { 0.0 } else { visited as f64 / assigned as f64 },
                        visits: r.get(3)?,
                        open_issues: r.get(4)?,
                        overdue_issues: r.get(5)?,
                    })
                })
            };
            let by_branch = group("branch_id")?;
            let by_community = group("community_id")?;
            let mut p = period_params.clone();
            p.extend(params.clone());
            let visits_by_member = rows(
                conn,
                &format!(
                    "SELECT m.value, count(*) FROM visits v JOIN households h ON h.id = v.household_id, json_each(v.visitors) m
                     WHERE NOT v.deleted {visit_period} AND {scope} GROUP BY m.value ORDER BY count(*) DESC, m.value"
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
            let households_assigned = by_branch.iter().map(|g| g.households_assigned).sum();
            let households_visited = by_branch.iter().map(|g| g.households_visited).sum();
            Ok(Stats {
                households_assigned,
                households_visited,
                coverage: if households_assigned == 0 { 0.0 } else { households_visited as f64 / households_assigned as f64 },
                visits: by_branch.iter().map(|g| g.visits).sum(),
                by_branch,
                by_community,
                visits_by_member,
                median_hours_to_resolve,
            })
        })
        .await?;
    Ok(Json(out))
}
