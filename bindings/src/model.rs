//! The records and enums foreign code sees: one-to-one mirrors of `doorstep_core`'s model
//! (see `core/src/model.rs` for the meaning of every field), with conversions both ways.
//!
//! Times are milliseconds since the Unix epoch (`*_at_ms`); calendar dates are
//! `YYYY-MM-DD` strings. Enumerations keep an `Other { value }` variant so that a value
//! written by a newer app version is shown, not lost. Input records (`New*`, `*Update`)
//! give optional fields defaults, so Kotlin and Swift callers name only what they set.
//!
//! The conversions destructure the core types: a field added to the core and not here
//! is a compile error, not a silent loss.

use doorstep_core as dc;

/// `From<core> for facade` (or the reverse) by destructuring every field.
/// Per field: nothing = move, `(into)`, `(vec)` = convert each element, `(opt)` =
/// convert the value inside an `Option`, `(optvec)` = both.
macro_rules! mirror {
    ($from:path => $to:ident { $($field:ident $(($conv:ident))?),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(value: $from) -> Self {
                let $from { $($field),* } = value;
                $to { $($field: mirror!(@conv $field $(, $conv)?)),* }
            }
        }
    };
    ($from:ident => $to:path { $($field:ident $(($conv:ident))?),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(value: $from) -> Self {
                let $from { $($field),* } = value;
                $to { $($field: mirror!(@conv $field $(, $conv)?)),* }
            }
        }
    };
    (@conv $e:ident) => { $e };
    (@conv $e:ident, into) => { $e.into() };
    (@conv $e:ident, vec) => { $e.into_iter().map(Into::into).collect() };
    (@conv $e:ident, opt) => { $e.map(Into::into) };
    (@conv $e:ident, optvec) => { $e.map(|v| v.into_iter().map(Into::into).collect()) };
}

/// A UniFFI enum mirroring one of the core's string enums, `Other` included.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Enum)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this app version does not know (written by a newer version).
            /// Passed back to the core as its text, so a known text becomes its variant.
            Other { value: String },
        }

        impl From<dc::$name> for $name {
            fn from(v: dc::$name) -> Self {
                match v {
                    $(dc::$name::$variant => Self::$variant,)+
                    dc::$name::Other(value) => Self::Other { value },
                }
            }
        }

        impl From<$name> for dc::$name {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => Self::$variant,)+
                    $name::Other { value } => Self::from(value.as_str()),
                }
            }
        }
    };
}

// ----- enumerations -------------------------------------------------------------------

/// What the member may see and do, as the server said at the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Role {
    /// Records visits and problems for the households fixed to them.
    Member,
    /// Sees and routes everything in some branches and/or communities.
    Coordinator,
    /// Manages the organisation; sees everything.
    Admin,
}

impl From<dc::Role> for Role {
    fn from(role: dc::Role) -> Self {
        match role {
            dc::Role::Member => Role::Member,
            dc::Role::Coordinator => Role::Coordinator,
            dc::Role::Admin => Role::Admin,
        }
    }
}

string_enum!(
    /// Household-registration (户籍) status of a student, which decides the enrolment category.
    HukouStatus { Local, NonLocal, PolicyCare, Unknown }
);

string_enum!(
    /// How a visit took place.
    VisitMode { InPerson, Phone, WeChat, VideoCall, AtSchool }
);

string_enum!(
    /// What a visit covered. Extensible: new topics arrive as `Other`.
    VisitTopic { FamilyEducation, EnrolmentPolicy, PublicOpinion, StudentWellbeing }
);

string_enum!(
    /// What kind of problem a family raised (`General` is stored as "other").
    IssueCategory { Enrolment, FamilyEducation, StudentWelfare, Hardship, SchoolAndTransport, General }
);

string_enum!(
    /// How urgent a problem is.
    Urgency { Low, Normal, High, Urgent }
);

string_enum!(
    /// Where a problem stands. Allowed moves: open → acknowledged/referred/in_progress/
    /// resolved; acknowledged → referred/in_progress/resolved; referred → in_progress/
    /// resolved; in_progress → referred/resolved; resolved → closed/open; closed → open
    /// (see `issue_can_move`).
    IssueStatus { Open, Acknowledged, Referred, InProgress, Resolved, Closed }
);

// ----- records the replica returns ------------------------------------------------------

/// A parent or guardian of the household's students.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Guardian {
    pub id: String,
    pub name: String,
    /// Relation to the students, e.g. 母亲 (mother), 祖父 (grandfather).
    pub relation: String,
    pub phone: String,
}
mirror!(dc::Guardian => Guardian { id, name, relation, phone });

/// A student of the district's schools or kindergartens living in the household.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Student {
    pub id: String,
    pub name: String,
    pub school: String,
    /// Grade or class year, e.g. 幼儿园大班, 六年级.
    pub grade: String,
    pub hukou_status: HukouStatus,
}
mirror!(dc::Student => Student { id, name, school, grade, hukou_status(into) });

/// Who did something, from which device, and when.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Stamp {
    pub member_id: String,
    pub device_id: String,
    pub at_ms: i64,
}
mirror!(dc::Stamp => Stamp { member_id, device_id, at_ms });

/// A student family looked after by members.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
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
mirror!(dc::Household => Household {
    id, family_name, address, community_id, branch_id, guardians(vec), students(vec),
    assigned_members, notes, archived, created(into),
});

/// What a household list screen shows, read from projection tables only.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
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
mirror!(dc::HouseholdSummary => HouseholdSummary {
    id, family_name, address, community_id, branch_id, archived, assigned_members,
    visit_count, last_visit_at_ms, open_issue_count,
});

/// Where a visit took place, when the phone knew it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[uniffi(default)]
    pub accuracy_m: Option<f64>,
}
mirror!(dc::Location => Location { latitude, longitude, accuracy_m });
mirror!(Location => dc::Location { latitude, longitude, accuracy_m });

/// A visit to a household (走访).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
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
    /// Set when the visit was (soft-)deleted: who and when.
    pub deleted: Option<Stamp>,
}
mirror!(dc::Visit => Visit {
    id, household_id, visitors, started_at_ms, ended_at_ms, mode(into), people_met,
    topics(vec), notes, follow_up_on, location(opt), recorded(into), deleted(opt),
});

/// One move of a problem from one status to another.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct IssueTransition {
    pub id: String,
    pub from: IssueStatus,
    pub to: IssueStatus,
    pub reason: String,
    pub by: Stamp,
}
mirror!(dc::IssueTransition => IssueTransition { id, from(into), to(into), reason, by(into) });

/// A comment on a problem.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct IssueComment {
    pub id: String,
    pub text: String,
    pub by: Stamp,
}
mirror!(dc::IssueComment => IssueComment { id, text, by(into) });

/// What the family said about how their problem was handled.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FamilyFeedback {
    /// 1 (very unsatisfied) to 5 (very satisfied).
    pub satisfaction: u8,
    #[uniffi(default)]
    pub comment: String,
}
mirror!(dc::FamilyFeedback => FamilyFeedback { satisfaction, comment });
mirror!(FamilyFeedback => dc::FamilyFeedback { satisfaction, comment });

/// A problem or difficulty a family raised (问题和困难).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
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
    /// Derived from the transitions by the rule in the data model.
    pub status: IssueStatus,
    /// Every transition, in the order they are applied.
    pub transitions: Vec<IssueTransition>,
    pub comments: Vec<IssueComment>,
    pub resolution: String,
    pub feedback: Option<FamilyFeedback>,
    pub raised: Stamp,
    pub deleted: Option<Stamp>,
}
mirror!(dc::Issue => Issue {
    id, household_id, visit_id, category(into), title, description, urgency(into), assignee,
    due_on, status(into), transitions(vec), comments(vec), resolution, feedback(opt),
    raised(into), deleted(opt),
});

/// What list screens show of a problem, read from projection tables only.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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
mirror!(dc::IssueSummary => IssueSummary {
    id, household_id, title, category(into), urgency(into), status(into), assignee, due_on,
    raised_at_ms,
});

/// One of the values competing for a field after concurrent edits.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConflictValue {
    /// The value as text (numbers and booleans in their usual spelling).
    pub value: String,
    pub by: Stamp,
}
mirror!(dc::ConflictValue => ConflictValue { value, by(into) });

/// A field two people changed concurrently. The document shows `values[0]` (the
/// deterministic winner) until someone resolves the conflict with `resolve_conflict`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Conflict {
    pub household_id: String,
    /// Where the field lives, e.g. `household/guardians/<id>/phone`, `visits/<id>/mode`.
    pub path: String,
    pub values: Vec<ConflictValue>,
}
mirror!(dc::Conflict => Conflict { household_id, path, values(vec) });

/// One change in a household's history.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HistoryEntry {
    /// The Automerge change hash, hex.
    pub change_hash: String,
    pub by: Stamp,
    /// What was done, e.g. `record_visit <id>`.
    pub action: String,
}
mirror!(dc::HistoryEntry => HistoryEntry { change_hash, by(into), action });

/// How many problems have one status (the core's `(IssueStatus, u32)` pair).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StatusCount {
    pub status: IssueStatus,
    pub count: u32,
}

/// Counts for one community, the coordinator's overview.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CommunityOverview {
    pub community_id: String,
    pub households: u32,
    pub visited_households: u32,
    pub visits: u32,
    pub open_issues: u32,
    pub overdue_issues: u32,
    /// Problems per status, statuses in pipeline order.
    pub issues_by_status: Vec<StatusCount>,
}

impl From<dc::CommunityOverview> for CommunityOverview {
    fn from(value: dc::CommunityOverview) -> Self {
        let dc::CommunityOverview {
            community_id,
            households,
            visited_households,
            visits,
            open_issues,
            overdue_issues,
            issues_by_status,
        } = value;
        CommunityOverview {
            community_id,
            households,
            visited_households,
            visits,
            open_issues,
            overdue_issues,
            issues_by_status: issues_by_status
                .into_iter()
                .map(|(status, count)| StatusCount {
                    status: status.into(),
                    count,
                })
                .collect(),
        }
    }
}

// ----- records the app passes in ----------------------------------------------------------

/// A new household to create.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NewHousehold {
    pub family_name: String,
    pub address: String,
    pub community_id: String,
    pub branch_id: String,
    #[uniffi(default)]
    pub guardians: Vec<NewGuardian>,
    #[uniffi(default)]
    pub students: Vec<NewStudent>,
    #[uniffi(default)]
    pub assigned_members: Vec<String>,
    #[uniffi(default)]
    pub notes: String,
}
mirror!(NewHousehold => dc::NewHousehold {
    family_name, address, community_id, branch_id, guardians(vec), students(vec),
    assigned_members, notes,
});

/// A guardian to add.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewGuardian {
    pub name: String,
    pub relation: String,
    #[uniffi(default)]
    pub phone: String,
}
mirror!(NewGuardian => dc::NewGuardian { name, relation, phone });

/// A student to add.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewStudent {
    pub name: String,
    pub school: String,
    pub grade: String,
    pub hukou_status: HukouStatus,
}
mirror!(NewStudent => dc::NewStudent { name, school, grade, hukou_status(into) });

/// Profile fields to change; `None`/`null`/`nil` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct HouseholdUpdate {
    #[uniffi(default)]
    pub family_name: Option<String>,
    #[uniffi(default)]
    pub address: Option<String>,
    #[uniffi(default)]
    pub community_id: Option<String>,
    #[uniffi(default)]
    pub branch_id: Option<String>,
    #[uniffi(default)]
    pub archived: Option<bool>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    #[uniffi(default)]
    pub notes: Option<String>,
}
mirror!(HouseholdUpdate => dc::HouseholdUpdate {
    family_name, address, community_id, branch_id, archived, notes,
});

/// Guardian fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct GuardianUpdate {
    #[uniffi(default)]
    pub name: Option<String>,
    #[uniffi(default)]
    pub relation: Option<String>,
    #[uniffi(default)]
    pub phone: Option<String>,
}
mirror!(GuardianUpdate => dc::GuardianUpdate { name, relation, phone });

/// A visit to record.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NewVisit {
    pub household_id: String,
    pub started_at_ms: i64,
    pub mode: VisitMode,
    /// Members who took part, each kept once; the recording member is added if missing.
    #[uniffi(default)]
    pub visitors: Vec<String>,
    #[uniffi(default)]
    pub ended_at_ms: Option<i64>,
    #[uniffi(default)]
    pub people_met: Vec<String>,
    #[uniffi(default)]
    pub topics: Vec<VisitTopic>,
    #[uniffi(default)]
    pub notes: String,
    #[uniffi(default)]
    pub follow_up_on: Option<String>,
    #[uniffi(default)]
    pub location: Option<Location>,
}
mirror!(NewVisit => dc::NewVisit {
    household_id, visitors, started_at_ms, ended_at_ms, mode(into), people_met, topics(vec),
    notes, follow_up_on, location(opt),
});

/// Visit fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct VisitUpdate {
    #[uniffi(default)]
    pub started_at_ms: Option<i64>,
    #[uniffi(default)]
    pub ended_at_ms: Option<i64>,
    #[uniffi(default)]
    pub mode: Option<VisitMode>,
    #[uniffi(default)]
    pub people_met: Option<Vec<String>>,
    #[uniffi(default)]
    pub topics: Option<Vec<VisitTopic>>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    #[uniffi(default)]
    pub notes: Option<String>,
    #[uniffi(default)]
    pub follow_up_on: Option<String>,
}
mirror!(VisitUpdate => dc::VisitUpdate {
    started_at_ms, ended_at_ms, mode(opt), people_met, topics(optvec), notes, follow_up_on,
});

/// A problem to raise.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewIssue {
    pub household_id: String,
    pub category: IssueCategory,
    pub title: String,
    pub urgency: Urgency,
    #[uniffi(default)]
    pub description: String,
    #[uniffi(default)]
    pub visit_id: Option<String>,
    #[uniffi(default)]
    pub assignee: Option<String>,
    /// `YYYY-MM-DD`.
    #[uniffi(default)]
    pub due_on: Option<String>,
}
mirror!(NewIssue => dc::NewIssue {
    household_id, visit_id, category(into), title, description, urgency(into), assignee, due_on,
});

/// Problem fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct IssueUpdate {
    #[uniffi(default)]
    pub category: Option<IssueCategory>,
    #[uniffi(default)]
    pub title: Option<String>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    #[uniffi(default)]
    pub description: Option<String>,
    #[uniffi(default)]
    pub urgency: Option<Urgency>,
    #[uniffi(default)]
    pub assignee: Option<String>,
    #[uniffi(default)]
    pub due_on: Option<String>,
    /// Merged character by character with concurrent edits once edited (data model rule 5).
    #[uniffi(default)]
    pub resolution: Option<String>,
    #[uniffi(default)]
    pub feedback: Option<FamilyFeedback>,
}
mirror!(IssueUpdate => dc::IssueUpdate {
    category(opt), title, description, urgency(opt), assignee, due_on, resolution, feedback(opt),
});

// ----- exchange with peers ----------------------------------------------------------------

/// The heads (hex change hashes) of one household's document on some replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, uniffi::Record)]
pub struct HouseholdHeads {
    pub household_id: String,
    pub heads: Vec<String>,
}
mirror!(dc::HouseholdHeads => HouseholdHeads { household_id, heads });
mirror!(HouseholdHeads => dc::HouseholdHeads { household_id, heads });

/// Encoded Automerge changes of one household (opaque bytes for the app).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HouseholdChanges {
    pub household_id: String,
    pub changes: Vec<Vec<u8>>,
}
mirror!(dc::HouseholdChanges => HouseholdChanges { household_id, changes });
mirror!(HouseholdChanges => dc::HouseholdChanges { household_id, changes });

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ImportReport {
    /// Households whose documents changed.
    pub households_changed: Vec<String>,
    /// Changes applied (new to this replica).
    pub changes_applied: u32,
    /// Changes kept aside until the changes they depend on arrive.
    pub changes_waiting: u32,
}
mirror!(dc::ImportReport => ImportReport { households_changed, changes_applied, changes_waiting });
