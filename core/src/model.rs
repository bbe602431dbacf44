//! The records a phone app shows and edits: owned, FFI-friendly values.
//!
//! Times are milliseconds since the Unix epoch (`*_at_ms`); calendar dates (due dates,
//! follow-up dates) are `YYYY-MM-DD` strings, because that is how people set them.
//! Enumerations keep an `Other` variant so that a value written by a newer app version
//! is shown, not lost.

use std::fmt;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant,)+
            /// A value this app version does not know (written by a newer version).
            Other(String),
        }

        impl $name {
            /// The value as stored in documents and projection tables.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }

            /// Every value this version knows.
            pub fn known() -> &'static [&'static str] {
                &[$($text),+]
            }

            /// A value given as input is one this version knows, or a value of a newer
            /// version's kind (`Other`, which round-trips): a code of lowercase letters,
            /// digits and `_`, as every known value is. An empty or free-text value would
            /// stand in the statistics as a kind of its own.
            pub fn check_input(&self, field: &str) -> crate::error::Result<()> {
                match self {
                    Self::Other(v) if !is_code(v) => Err(crate::error::Error::invalid(
                        format!("{field} 的取值“{v}”无效，应为 {:?} 之一（或新版本的代码）", Self::known()),
                        format!("{field} must be one of {:?} (or a newer version's code), not {v:?}", Self::known()),
                    )),
                    _ => Ok(()),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A value's code: 1 to 40 lowercase ASCII letters, digits and `_`.
fn is_code(value: &str) -> bool {
    (1..=40).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

string_enum!(
    /// Household-registration (户籍) status of a student, which decides the enrolment category.
    HukouStatus {
        Local => "local",
        NonLocal => "non_local",
        PolicyCare => "policy_care",
        Unknown => "unknown",
    }
);

string_enum!(
    /// How a visit took place.
    VisitMode {
        InPerson => "in_person",
        Phone => "phone",
        WeChat => "wechat",
        VideoCall => "video_call",
        AtSchool => "at_school",
    }
);

string_enum!(
    /// What a visit covered. Extensible: new topics arrive as `Other`.
    VisitTopic {
        FamilyEducation => "family_education",
        EnrolmentPolicy => "enrolment_policy",
        PublicOpinion => "public_opinion",
        StudentWellbeing => "student_wellbeing",
    }
);

string_enum!(
    /// What kind of problem a family raised.
    IssueCategory {
        Enrolment => "enrolment",
        FamilyEducation => "family_education",
        StudentWelfare => "student_welfare",
        Hardship => "hardship",
        SchoolAndTransport => "school_and_transport",
        General => "other",
    }
);

string_enum!(
    /// How urgent a problem is.
    Urgency {
        Low => "low",
        Normal => "normal",
        High => "high",
        Urgent => "urgent",
    }
);

string_enum!(
    /// Where a problem stands. See `docs/data-model.md` for the allowed moves.
    IssueStatus {
        Open => "open",
        Acknowledged => "acknowledged",
        Referred => "referred",
        InProgress => "in_progress",
        Resolved => "resolved",
        Closed => "closed",
    }
);

impl IssueStatus {
    /// Still needs work: counts as an open problem.
    pub fn is_active(&self) -> bool {
        !matches!(self, Self::Resolved | Self::Closed)
    }

    /// Position along the handling pipeline, used to order concurrent transitions.
    pub fn stage(&self) -> u8 {
        match self {
            Self::Open => 0,
            Self::Acknowledged => 1,
            Self::Referred => 2,
            Self::InProgress => 3,
            Self::Resolved => 4,
            Self::Closed => 5,
            Self::Other(_) => 0,
        }
    }

    /// Whether a member may move a problem from `self` to `to`.
    pub fn can_move_to(&self, to: &IssueStatus) -> bool {
        use IssueStatus::*;
        matches!(
            (self, to),
            (Open, Acknowledged | Referred | InProgress | Resolved)
                | (Acknowledged, Referred | InProgress | Resolved)
                | (Referred, InProgress | Resolved)
                | (InProgress, Referred | Resolved)
                | (Resolved, Closed | Open)
                | (Closed, Open)
                | (Other(_), Open)
        )
    }
}

/// A parent or guardian of the household's students.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardian {
    pub id: String,
    pub name: String,
    /// Relation to the students, e.g. 母亲 (mother), 祖父 (grandfather).
    pub relation: String,
    pub phone: String,
}

/// A student of the district's schools or kindergartens living in the household.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Student {
    pub id: String,
    pub name: String,
    pub school: String,
    /// Grade or class year, e.g. 幼儿园大班, 六年级.
    pub grade: String,
    pub hukou_status: HukouStatus,
}

/// What a member may see and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Records visits and problems for the households fixed to them.
    Member,
    /// Sees and routes everything in some branches and/or communities.
    Coordinator,
    /// Manages the organisation; sees everything.
    Admin,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Coordinator => "coordinator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "coordinator" => Some(Role::Coordinator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who did something, from which device, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub member_id: String,
    pub device_id: String,
    pub at_ms: i64,
}

/// A student family looked after by members.
#[derive(Debug, Clone, PartialEq)]
pub struct Household {
    pub id: String,
    pub family_name: String,
    pub address: String,
    pub community_id: String,
    pub branch_id: String,
    pub guardians: Vec<Guardian>,
    pub students: Vec<Student>,
    /// Members fixed to this household (固定联系).
    pub assigned_members: Vec<String>,
    pub notes: String,
    pub archived: bool,
    pub created: Stamp,
}

/// What a household list screen shows, read from projection tables only.
#[derive(Debug, Clone, PartialEq)]
pub struct HouseholdSummary {
    pub id: String,
    pub family_name: String,
    pub address: String,
    pub community_id: String,
    pub branch_id: String,
    pub archived: bool,
    pub assigned_members: Vec<String>,
    pub visit_count: u32,
    pub last_visit_at_ms: Option<i64>,
    pub open_issue_count: u32,
}

/// Where a visit took place, when the phone knew it.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_m: Option<f64>,
}

/// A visit to a household (走访).
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub id: String,
    pub household_id: String,
    /// Members who took part.
    pub visitors: Vec<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub mode: VisitMode,
    /// People met, e.g. "母亲 李芳", "学生 王小明".
    pub people_met: Vec<String>,
    pub topics: Vec<VisitTopic>,
    pub notes: String,
    pub follow_up_on: Option<String>,
    pub location: Option<Location>,
    pub recorded: Stamp,
    pub deleted: Option<Stamp>,
}

/// One move of a problem from one status to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueTransition {
    pub id: String,
    pub from: IssueStatus,
    pub to: IssueStatus,
    pub reason: String,
    pub by: Stamp,
}

/// A comment on a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueComment {
    pub id: String,
    pub text: String,
    pub by: Stamp,
}

/// What the family said about how their problem was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyFeedback {
    /// 1 (very unsatisfied) to 5 (very satisfied).
    pub satisfaction: u8,
    pub comment: String,
}

/// A problem or difficulty a family raised (问题和困难).
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub id: String,
    pub household_id: String,
    pub visit_id: Option<String>,
    pub category: IssueCategory,
    pub title: String,
    pub description: String,
    pub urgency: Urgency,
    pub assignee: Option<String>,
    pub due_on: Option<String>,
    /// Derived from the transitions by the rule in `docs/data-model.md`.
    pub status: IssueStatus,
    /// Every transition, in the order they are applied.
    pub transitions: Vec<IssueTransition>,
    pub comments: Vec<IssueComment>,
    pub resolution: String,
    pub feedback: Option<FamilyFeedback>,
    pub raised: Stamp,
    pub deleted: Option<Stamp>,
}

/// What list screens show of a problem, read from projection tables only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueSummary {
    pub id: String,
    pub household_id: String,
    pub title: String,
    pub category: IssueCategory,
    pub urgency: Urgency,
    pub status: IssueStatus,
    pub assignee: Option<String>,
    pub due_on: Option<String>,
    pub raised_at_ms: i64,
}

/// One of the values competing for a field after concurrent edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictValue {
    /// The value as text (numbers and booleans in their usual spelling).
    pub value: String,
    pub by: Stamp,
}

/// A field two people changed concurrently. The document shows `values[0]` (the
/// deterministic winner) until someone resolves the conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub household_id: String,
    /// Where the field lives, e.g. `household/guardians/<id>/phone`, `visits/<id>/mode`,
    /// `issues/<id>/status`.
    pub path: String,
    pub values: Vec<ConflictValue>,
}

/// One change in a household's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The Automerge change hash, hex.
    pub change_hash: String,
    pub by: Stamp,
    /// What was done, e.g. `record_visit <id>`.
    pub action: String,
}

/// Counts for one community, the coordinator's overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommunityOverview {
    pub community_id: String,
    pub households: u32,
    pub visited_households: u32,
    pub visits: u32,
    pub open_issues: u32,
    pub overdue_issues: u32,
    /// Problems per status, statuses in pipeline order.
    pub issues_by_status: Vec<(IssueStatus, u32)>,
}

/// A new household to create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewHousehold {
    pub family_name: String,
    pub address: String,
    pub community_id: String,
    pub branch_id: String,
    pub guardians: Vec<NewGuardian>,
    pub students: Vec<NewStudent>,
    pub assigned_members: Vec<String>,
    pub notes: String,
}

/// A guardian to add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGuardian {
    pub name: String,
    pub relation: String,
    pub phone: String,
}

/// A student to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStudent {
    pub name: String,
    pub school: String,
    pub grade: String,
    pub hukou_status: HukouStatus,
}

/// Profile fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HouseholdUpdate {
    pub family_name: Option<String>,
    pub address: Option<String>,
    pub community_id: Option<String>,
    pub branch_id: Option<String>,
    pub archived: Option<bool>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    pub notes: Option<String>,
}

/// Guardian fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardianUpdate {
    pub name: Option<String>,
    pub relation: Option<String>,
    pub phone: Option<String>,
}

/// A visit to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVisit {
    pub household_id: String,
    /// Members who took part, each kept once; the recording member is added if missing.
    pub visitors: Vec<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub mode: VisitMode,
    pub people_met: Vec<String>,
    pub topics: Vec<VisitTopic>,
    pub notes: String,
    pub follow_up_on: Option<String>,
    pub location: Option<Location>,
}

/// Visit fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VisitUpdate {
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub mode: Option<VisitMode>,
    pub people_met: Option<Vec<String>>,
    pub topics: Option<Vec<VisitTopic>>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    pub notes: Option<String>,
    pub follow_up_on: Option<String>,
}

/// A problem to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIssue {
    pub household_id: String,
    pub visit_id: Option<String>,
    pub category: IssueCategory,
    pub title: String,
    pub description: String,
    pub urgency: Urgency,
    pub assignee: Option<String>,
    pub due_on: Option<String>,
}

/// Problem fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueUpdate {
    pub category: Option<IssueCategory>,
    pub title: Option<String>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    pub description: Option<String>,
    pub urgency: Option<Urgency>,
    pub assignee: Option<String>,
    pub due_on: Option<String>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    pub resolution: Option<String>,
    pub feedback: Option<FamilyFeedback>,
}
