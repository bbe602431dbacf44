//! The organisation: branches (支部), communities (社区), members and their roles, devices.

use serde::{Deserialize, Serialize};

/// What a member may see and do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Community {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The branch the member belongs to, if any.
    pub branch_id: Option<String>,
    /// For coordinators: the branches they look after.
    #[serde(default)]
    pub scope_branches: Vec<String>,
    /// For coordinators: the communities they look after.
    #[serde(default)]
    pub scope_communities: Vec<String>,
}

/// A phone (or an admin's client) allowed to sync for a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub member_id: String,
    pub label: String,
    pub enrolled: bool,
    pub revoked: bool,
}
