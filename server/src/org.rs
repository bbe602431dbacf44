//! The organisation: branches (支部), communities (社区), members and their roles, devices.

use serde::{Deserialize, Serialize};

pub use doorstep_core::Role;

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
