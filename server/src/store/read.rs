//! What requests read beside the writer, each reader thread with a connection of its own
//! (`crate::readers`): the member behind a token, the coordinator's read API
//! (`docs/read-api.md`), a backup to download. Free of SQL like the write side; the
//! embedded implementation is `sqlite_read.rs`.

use std::fs::File;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::org::Member;

/// One reader of the store.
pub trait ReadStore: Send + 'static {
    /// The member whose device holds the token (hashed), unless it was revoked.
    fn member_by_token(&self, token_hash: &str) -> Result<Option<Member>>;
    fn households(&self, query: &ReadQuery) -> Result<Vec<HouseholdRow>>;
    fn visits(&self, query: &ReadQuery) -> Result<Vec<VisitRow>>;
    fn issues(&self, query: &ReadQuery) -> Result<Vec<IssueRow>>;
    fn stats(&self, query: &ReadQuery) -> Result<Stats>;
    /// A consistent copy of the whole store, made now, in a file already unlinked: its
    /// length and the open file to stream.
    fn back_up_for_download(&self) -> Result<(File, u64)>;
}

/// A read API query, checked: who asks (a coordinator or an admin), and the filters their
/// endpoint takes (`crate::read_api` refuses the others).
#[derive(Debug, Clone)]
pub struct ReadQuery {
    pub caller: Member,
    pub branch: Option<String>,
    pub community: Option<String>,
    /// Households assigned to this member; for visits, the visits the member recorded or
    /// took part in.
    pub member: Option<String>,
    pub status: Option<StatusFilter>,
    /// Issues: only those still active and due before this day. Statistics: the day
    /// overdue issues are counted on. Written `YYYY-MM-DD`, so that days compare as text.
    pub overdue_on: Option<String>,
    /// Milliseconds, `[start, end)`.
    pub period: Period,
    /// Lists: one page of them; `None`, all rows.
    pub page: Option<Page>,
}

/// A page of a list: the first `limit` rows after the row sorting at `after`. The store
/// answers one row more when there is one, so that the caller knows a next page exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub limit: u32,
    pub after: Option<SortKey>,
}

/// Where a row of a list sorts: households by community, family name and id; visits by
/// start and id; issues by time raised and id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortKey {
    Household(String, String, String),
    Timed(i64, String),
}

impl HouseholdRow {
    pub fn sort_key(&self) -> SortKey {
        SortKey::Household(self.community_id.clone(), self.family_name.clone(), self.id.clone())
    }
}

impl VisitRow {
    pub fn sort_key(&self) -> SortKey {
        SortKey::Timed(self.started_at_ms, self.id.clone())
    }
}

impl IssueRow {
    pub fn sort_key(&self) -> SortKey {
        SortKey::Timed(self.raised_at_ms, self.id.clone())
    }
}

/// Which issues by status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusFilter {
    /// Open, acknowledged, referred or in progress.
    Active,
    /// Exactly this known status.
    Is(String),
}

/// The days `from` to `to`, both included, as `[start, end)` in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Period {
    pub start: Option<i64>,
    pub end: Option<i64>,
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

/// The figures of a group of households (one branch, one community, or all in scope).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
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

impl Counts {
    pub fn new(households_assigned: u32, households_visited: u32, visits: u32, open_issues: u32, overdue_issues: u32) -> Counts {
        let coverage = if households_assigned == 0 { 0.0 } else { households_visited as f64 / households_assigned as f64 };
        Counts { households_assigned, households_visited, coverage, visits, open_issues, overdue_issues }
    }

    /// The figures of the groups together.
    pub fn total<'a>(groups: impl IntoIterator<Item = &'a Counts>) -> Counts {
        let (mut assigned, mut visited, mut visits, mut open, mut overdue) = (0, 0, 0, 0, 0);
        for c in groups {
            assigned += c.households_assigned;
            visited += c.households_visited;
            visits += c.visits;
            open += c.open_issues;
            overdue += c.overdue_issues;
        }
        Counts::new(assigned, visited, visits, open, overdue)
    }
}

/// One branch's or one community's figures.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupStats {
    pub id: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberStats {
    pub member_id: String,
    /// Visits in the period the member recorded or took part in, each counted once.
    pub visits: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Every household in scope (and the filters) together.
    #[serde(flatten)]
    pub total: Counts,
    pub by_branch: Vec<GroupStats>,
    pub by_community: Vec<GroupStats>,
    pub visits_by_member: Vec<MemberStats>,
    /// Median hours from raising to resolving, over issues resolved in the period.
    pub median_hours_to_resolve: Option<f64>,
}
