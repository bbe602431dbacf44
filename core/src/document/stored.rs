//! The shape of a household document as stored in Automerge (schema version 1).
//!
//! These types are used to create records (one batch insert each) and to read them back
//! (one `hydrate` of the record's object). Edits are made field by field, never by
//! rewriting a whole record, so that concurrent edits to different fields both survive and
//! fields written by newer app versions are kept. Notes (`notes`, `description`,
//! `resolution`) are plain strings when written with their record and become Automerge
//! text, merged character by character, at their first edit.
//!
//! Why not autosurgeon's derive for reading: measured on automerge 0.12 (release build,
//! this 2-core machine), hydrating a household of 300 visits through it took ~130 ms
//! against ~20 ms for one `hydrate` call (`docs/benchmarks.md`, "Design measurements").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    FamilyFeedback, Guardian, Household, Issue, IssueComment, Location, Stamp, Student, Visit,
};

/// The schema version this code writes into every document it creates.
pub const SCHEMA_VERSION: u64 = 1;

/// Who did something, from which device, and when.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StampDoc {
    pub member: String,
    pub device: String,
    pub at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardianDoc {
    pub name: String,
    pub relation: String,
    pub phone: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StudentDoc {
    pub name: String,
    pub school: String,
    pub grade: String,
    pub hukou_status: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HouseholdDoc {
    pub id: String,
    pub family_name: String,
    pub address: String,
    pub community_id: String,
    pub branch_id: String,
    pub guardians: BTreeMap<String, GuardianDoc>,
    pub students: BTreeMap<String, StudentDoc>,
    /// A set: member id -> true, so that concurrent assignments both survive.
    pub assigned_members: BTreeMap<String, bool>,
    pub notes: String,
    pub archived: bool,
    pub created: StampDoc,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VisitDoc {
    pub id: String,
    pub visitors: Vec<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub mode: String,
    pub people_met: Vec<String>,
    pub topics: Vec<String>,
    pub notes: String,
    pub follow_up_on: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub accuracy_m: Option<f64>,
    pub recorded: StampDoc,
    pub deleted: Option<StampDoc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TransitionDoc {
    pub id: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// The transitions that were current (the heads) when this one was made.
    pub after: Vec<String>,
    pub by: StampDoc,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CommentDoc {
    pub id: String,
    pub text: String,
    pub by: StampDoc,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IssueDoc {
    pub id: String,
    pub visit_id: Option<String>,
    pub category: String,
    pub title: String,
    pub description: String,
    pub urgency: String,
    pub assignee: Option<String>,
    pub due_on: Option<String>,
    pub transitions: BTreeMap<String, TransitionDoc>,
    pub comments: BTreeMap<String, CommentDoc>,
    pub resolution: String,
    pub feedback_satisfaction: Option<i64>,
    pub feedback_comment: Option<String>,
    pub raised: StampDoc,
    pub deleted: Option<StampDoc>,
}

impl From<&StampDoc> for Stamp {
    fn from(s: &StampDoc) -> Self {
        Stamp { member_id: s.member.clone(), device_id: s.device.clone(), at_ms: s.at }
    }
}

impl HouseholdDoc {
    /// The household `id` is: the document's id, whatever the record's `id` field says.
    pub fn to_model(&self, id: &str) -> Household {
        Household {
            id: id.to_string(),
            family_name: self.family_name.clone(),
            address: self.address.clone(),
            community_id: self.community_id.clone(),
            branch_id: self.branch_id.clone(),
            guardians: self
                .guardians
                .iter()
                .map(|(id, g)| Guardian {
                    id: id.clone(),
                    name: g.name.clone(),
                    relation: g.relation.clone(),
                    phone: g.phone.clone(),
                })
                .collect(),
            students: self
                .students
                .iter()
                .map(|(id, s)| Student {
                    id: id.clone(),
                    name: s.name.clone(),
                    school: s.school.clone(),
                    grade: s.grade.clone(),
                    hukou_status: s.hukou_status.as_str().into(),
                })
                .collect(),
            assigned_members: self.assigned_members.keys().cloned().collect(),
            notes: self.notes.clone(),
            archived: self.archived,
            created: (&self.created).into(),
        }
    }
}

impl VisitDoc {
    /// The visit stored under the key `id` (which is its id, whatever the record's `id`
    /// field says) in household `household_id`.
    pub fn to_model(&self, id: &str, household_id: &str) -> Visit {
        Visit {
            id: id.to_string(),
            household_id: household_id.to_string(),
            visitors: self.visitors.clone(),
            started_at_ms: self.started_at,
            ended_at_ms: self.ended_at,
            mode: self.mode.as_str().into(),
            people_met: self.people_met.clone(),
            topics: self.topics.iter().map(|t| t.as_str().into()).collect(),
            notes: self.notes.clone(),
            follow_up_on: self.follow_up_on.clone(),
            location: match (self.latitude, self.longitude) {
                (Some(latitude), Some(longitude)) => {
                    Some(Location { latitude, longitude, accuracy_m: self.accuracy_m })
                }
                _ => None,
            },
            recorded: (&self.recorded).into(),
            deleted: self.deleted.as_ref().map(Into::into),
        }
    }
}

impl IssueDoc {
    /// The issue stored under the key `id` (its id, whatever the record's `id` field says)
    /// in household `household_id`; its transitions and comments are known by their keys
    /// too.
    pub fn to_model(&self, id: &str, household_id: &str) -> Issue {
        let derived = super::status::derive(&self.transitions);
        Issue {
            id: id.to_string(),
            household_id: household_id.to_string(),
            visit_id: self.visit_id.clone(),
            category: self.category.as_str().into(),
            title: self.title.clone(),
            description: self.description.clone(),
            urgency: self.urgency.as_str().into(),
            assignee: self.assignee.clone(),
            due_on: self.due_on.clone(),
            status: derived.status,
            transitions: derived.ordered,
            comments: self
                .comments
                .iter()
                .map(|(id, c)| IssueComment { id: id.clone(), text: c.text.clone(), by: (&c.by).into() })
                .collect(),
            resolution: self.resolution.clone(),
            feedback: self.feedback_satisfaction.map(|s| FamilyFeedback {
                satisfaction: s.clamp(0, 255) as u8,
                comment: self.feedback_comment.clone().unwrap_or_default(),
            }),
            raised: (&self.raised).into(),
            deleted: self.deleted.as_ref().map(Into::into),
        }
    }
}
