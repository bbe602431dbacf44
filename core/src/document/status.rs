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

fn precedence<'a>((id, t): &(&'a str, &'a TransitionDoc)) -> (bool, u8, i64, &'a str) {
    let to = IssueStatus::from(t.to.as_str());
    (to.is_active(), to.stage(), t.by.at, id)
}

/// A transition is identified by its key in the problem's `transitions`, whatever its
/// `id` field says (a crafted one may say anything).
pub fn derive(transitions: &BTreeMap<String, TransitionDoc>) -> Derived {
    let followed: HashSet<&str> =
        transitions.values().flat_map(|t| t.after.iter().map(String::as_str)).collect();
    let all = || transitions.iter().map(|(id, t)| (id.as_str(), t));
    let mut heads: Vec<(&str, &TransitionDoc)> = all().filter(|(id, _)| !followed.contains(id)).collect();
    heads.sort_by(|a, b| precedence(b).cmp(&precedence(a)));
    let status = heads.first().map_or(IssueStatus::Open, |(_, t)| t.to.as_str().into());

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
    let mut ordered: Vec<(&str, &TransitionDoc)> = all().collect();
    ordered.sort_by_key(|&(id, t)| (depth[id], t.by.at, id));
    Derived {
        status,
        heads: heads.iter().map(|(id, _)| id.to_string()).collect(),
        ordered: ordered
            .into_iter()
            .map(|(id, t)| IssueTransition {
                id: id.to_string(),
                from: t.from.as_str().into(),
                to: t.to.as_str().into(),
                reason: t.reason.clone(),
                by: (&t.by).into(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::stored::StampDoc;

    fn moved(id_field: &str, from: &str, to: &str, after: &[&str], at: i64) -> TransitionDoc {
        TransitionDoc {
            id: id_field.into(),
            from: from.into(),
            to: to.into(),
            reason: String::new(),
            after: after.iter().map(|a| a.to_string()).collect(),
            by: StampDoc { member: "m1".into(), device: "d1".into(), at },
        }
    }

    #[test]
    fn transitions_are_known_by_their_keys_whatever_their_id_fields_say() {
        let transitions = BTreeMap::from([
            ("t1".to_string(), moved("t1", "open", "acknowledged", &[], 1)),
            // A crafted `id` field, unlike its key: it used to make the ordering panic.
            ("t2".to_string(), moved("not-t2", "acknowledged", "in_progress", &["t1"], 2)),
        ]);
        let derived = derive(&transitions);
        assert_eq!(derived.status, IssueStatus::InProgress);
        assert_eq!(derived.heads, vec!["t2".to_string()]);
        let ids: Vec<&str> = derived.ordered.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
    }
}
