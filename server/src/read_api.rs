//! The coordinator's read API (JSON): merged households, visits and issues with filters,
//! and statistics, always limited to the caller's branches and communities. Here the
//! queries are checked and turned into a [`ReadQuery`]; the store's readers answer it
//! (`store::read`, from the projection tables: no document is loaded).

use axum::extract::{Query, State};
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use doorstep_core::IssueStatus;

use crate::error::{Result, ServerError};
use crate::extract::Checked;
use crate::http::{App, Caller};
use crate::org::{Member, Role};
use crate::store::read::{Page, Period, ReadQuery, ReadStore, SortKey, Stats, StatusFilter};

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
    /// Lists: at most this many rows (1 to `MAX_PAGE`), with a `Link` header to the next
    /// page when more follow.
    pub limit: Option<u32>,
    /// Lists: the page after this point, as the previous page's `Link` gives it.
    pub after: Option<String>,
}

/// The most rows one page may ask for.
pub const MAX_PAGE: u32 = 10_000;

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
fn refuse_filter(given: bool, name: &str, endpoint: &str) -> Result<()> {
    if given {
        return Err(ServerError::BadRequest(format!("{endpoint} 不能按 {name} 筛选 / {endpoint} takes no {name} filter")));
    }
    Ok(())
}

/// The page `f` asks for, if any. `households` says which list: its rows sort by
/// household, the others' by time.
fn page(f: &Filter, households: bool) -> Result<Option<Page>> {
    let bad = |what: String| ServerError::BadRequest(what);
    let Some(limit) = f.limit else {
        return match f.after {
            Some(_) => Err(bad("after 需与 limit 一起使用 / after needs limit".into())),
            None => Ok(None),
        };
    };
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad(format!("limit 应在 1 到 {MAX_PAGE} 之间 / limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let after = match &f.after {
        None => None,
        Some(cursor) => {
            let key = hex::decode(cursor).ok().and_then(|json| serde_json::from_slice::<SortKey>(&json).ok());
            match key {
                Some(key) if matches!(key, SortKey::Household(..)) == households => Some(key),
                _ => return Err(bad(format!("after 不是本列表给出的位置 / after is not a point this list gave: {cursor:?}"))),
            }
        }
    };
    Ok(Some(Page { limit, after }))
}

/// A list's answer: the page's rows and, when more follow (the store gave one row more),
/// a `Link` header to the next page: this query with `after` at the last row.
fn list<T: Serialize>(mut rows: Vec<T>, page: Option<&Page>, uri: &Uri, key: impl Fn(&T) -> SortKey) -> Response {
    let mut next = None;
    if let Some(page) = page.filter(|p| rows.len() > p.limit as usize) {
        rows.truncate(page.limit as usize);
        if let Some(last) = rows.last() {
            let after = hex::encode(serde_json::to_vec(&key(last)).expect("a key serialises"));
            let kept = uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty() && !p.starts_with("after="));
            let query: Vec<String> = kept.map(str::to_string).chain([format!("after={after}")]).collect();
            next = Some(format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&")));
        }
    }
    match next {
        Some(link) => ([(header::LINK, link)], Json(rows)).into_response(),
        None => Json(rows).into_response(),
    }
}

/// The days `from` to `to`, both included, as `[start, end)` in milliseconds.
fn period(f: &Filter) -> Result<Period> {
    let from = f.from.as_deref().map(|d| day("from", d)).transpose()?;
    let to = f.to.as_deref().map(|d| day("to", d)).transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ServerError::BadRequest(format!("from 晚于 to / from ({from}) is after to ({to})")));
        }
    }
    Ok(Period { start: from.map(day_start_ms), end: to.map(|d| day_start_ms(d) + DAY_MS) })
}

/// The query `member` asks with filter `f` (`page` already taken from it); coordinators
/// and admins only.
fn query(member: Member, f: Filter, page: Option<Page>) -> Result<ReadQuery> {
    if member.role == Role::Member {
        return Err(ServerError::Forbidden("只有协调员和管理员可以查看汇总数据 / coordinators and admins only".into()));
    }
    let period = period(&f)?;
    let status = match f.status.as_deref() {
        None => None,
        Some("active") => Some(StatusFilter::Active),
        Some(s) if !matches!(IssueStatus::from(s), IssueStatus::Other(_)) => Some(StatusFilter::Is(s.to_string())),
        Some(s) => {
            return Err(ServerError::BadRequest(format!(
                "status 应为 open、acknowledged、referred、in_progress、resolved、closed 或 active / status must be \
                 open, acknowledged, referred, in_progress, resolved, closed or active, got {s:?}"
            )))
        }
    };
    // Written `YYYY-MM-DD` (the core refuses any other spelling of a due date too), so
    // that days compare as text.
    let overdue_on = f.overdue_on.as_deref().map(|d| day("overdue_on", d)).transpose()?.map(|d| d.format("%Y-%m-%d").to_string());
    Ok(ReadQuery { caller: member, branch: f.branch, community: f.community, member: f.member, status, overdue_on, period, page })
}

async fn households(State(app): State<App>, Caller(member): Caller, uri: Uri, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Response> {
    refuse_filter(f.status.is_some(), "status", "/v1/households")?;
    refuse_filter(f.overdue_on.is_some(), "overdue_on", "/v1/households")?;
    let page = page(&f, true)?;
    let q = query(member, f, page.clone())?;
    let rows = app.readers.read(move |store| store.households(&q)).await?;
    Ok(list(rows, page.as_ref(), &uri, |h| h.sort_key()))
}

async fn visits(State(app): State<App>, Caller(member): Caller, uri: Uri, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Response> {
    refuse_filter(f.status.is_some(), "status", "/v1/visits")?;
    refuse_filter(f.overdue_on.is_some(), "overdue_on", "/v1/visits")?;
    let page = page(&f, false)?;
    let q = query(member, f, page.clone())?;
    let rows = app.readers.read(move |store| store.visits(&q)).await?;
    Ok(list(rows, page.as_ref(), &uri, |v| v.sort_key()))
}

async fn issues(State(app): State<App>, Caller(member): Caller, uri: Uri, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Response> {
    let page = page(&f, false)?;
    let q = query(member, f, page.clone())?;
    let rows = app.readers.read(move |store| store.issues(&q)).await?;
    Ok(list(rows, page.as_ref(), &uri, |i| i.sort_key()))
}

async fn stats(State(app): State<App>, Caller(member): Caller, Checked(Query(f)): Checked<Query<Filter>>) -> Result<Json<Stats>> {
    refuse_filter(f.status.is_some(), "status", "/v1/stats")?;
    refuse_filter(f.limit.is_some() || f.after.is_some(), "limit/after", "/v1/stats")?;
    let mut q = query(member, f, None)?;
    // Overdue as of today in China unless a day is given.
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive().format("%Y-%m-%d").to_string();
    q.overdue_on.get_or_insert(today);
    Ok(Json(app.readers.read(move |store| store.stats(&q)).await?))
}
