//! The rule that turns a problem's transitions into its current status.
//!
//! Transitions are never overwritten: each is a record of its own that names the
//! transitions it followed (`after`). The *heads* are the transitions no other one
//! followed. One head: its target is the status. Several heads (people moved the problem
//! concurrently): the head that keeps the problem active wins (a problem is never closed by
//! accident), then the later stage of the pipeline, then the later time, then the larger
//! id. Every replica holding the same transitions computes the same status.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::stored::TransitionDoc;
use crate::model::{IssueStatus, IssueTransition};

pub struct Derived {
    pub status: IssueStatus,
    /// Ids of the head transitions (more than one means a status conflict).
    pub heads: Vec<String>,
    /// All transitions, in the order they apply.
    pub ordered: Vec<IssueTransition>,
}

fn precedence(t: &TransitionDoc) -> (bool, u8, i64, &str) {
    let to = IssueStatus::from(t.to.as_str());
    (to.is_active(), to.stage(), t.by.at, t.id.as_str())
}

pub fn derive(transitions: &BTreeMap<String, TransitionDoc>) -> Derived {
    let followed: HashSet<&str> =
        transitions.values().flat_map(|t| t.after.iter().map(String::as_str)).collect();
    let mut heads: Vec<&TransitionDoc> =
        transitions.values().filter(|t| !followed.contains(t.id.as_str())).collect();
    heads.sort_by(|a, b| precedence(b).cmp(&precedence(a)));
    let status = heads.first().map_or(IssueStatus::Open, |t| t.to.as_str().into());

    // Order: depth in the `after` graph, then time, then id.
    let mut depth: HashMap<&str, usize> = HashMap::new();
    fn depth_of<'a>(
        id: &'a str,
        all: &'a BTreeMap<String, TransitionDoc>,
        memo: &mut HashMap<&'a str, usize>,
        guard: usize,
    ) -> usize {
        if let Some(d) = memo.get(id) {
            return *d;
        }
        let d = match all.get(id) {
            Some(t) if guard < all.len() => t
                .after
                .iter()
                .map(|p| depth_of(p, all, memo, guard + 1) + 1)
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        memo.insert(id, d);
        d
    }
    for id in transitions.keys() {
        depth_of(id, transitions, &mut depth, 0);
    }
    let mut ordered: Vec<&TransitionDoc> = transitions.values().collect();
    ordered.sort_by_key(|t| (depth[t.id.as_str()], t.by.at, t.id.clone()));
    Derived {
        status,
        heads: heads.iter().map(|t| t.id.clone()).collect(),
        ordered: ordered
            .into_iter()
            .map(|t| IssueTransition {
                id: t.id.clone(),
                from: t.from.as_str().into(),
                to: t.to.as_str().into(),
                reason: t.reason.clone(),
                by: (&t.by).into(),
            })
            .collect(),
    }
}
