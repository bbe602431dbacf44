//! What changed in a document, and the records a projection needs to rewrite.
//!
//! A local edit names the record it touched, and `view` reads only that record (one
//! `hydrate`), with its conflicts. Imports rewrite the whole household: measured on
//! automerge 0.12, `diff` between two heads costs more than hydrating a household of
//! ordinary size (2–14 ms against ~1 ms for 10 visits).

use std::collections::BTreeSet;

use automerge::{hydrate, ReadDoc, ROOT};

use super::convert;
use super::stored::{HouseholdDoc, IssueDoc, VisitDoc};
use super::{corrupt, HouseholdDocument};
use crate::error::Result;
use crate::model::{Conflict, Household, Issue, Visit};


/// Which part of a household's projection to rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Everything,
    Records { household: bool, visits: BTreeSet<String>, issues: BTreeSet<String> },
}

/// The projected records of one household, for the scope asked.
#[derive(Debug, Default)]
pub struct View {
    /// Every row of the household is to be replaced.
    pub everything: bool,
    /// The profile, when in scope (and present).
    pub household: Option<Household>,
    pub household_in_scope: bool,
    /// Visits in scope; `None` for one that no longer exists.
    pub visits: Vec<(String, Option<Visit>)>,
    pub issues: Vec<(String, Option<Issue>)>,
    /// Conflicts under `conflict_prefixes`.
    pub conflicts: Vec<Conflict>,
    /// Path prefixes whose conflicts are replaced (e.g. `visits/<id>/`).
    pub conflict_prefixes: Vec<String>,
}

impl View {
    /// Add `other`, a view of other records of the same document (scopes that do not
    /// overlap, so neither is `Everything`): together they cover both scopes, as one view
    /// of both would.
    pub fn absorb(&mut self, other: View) {
        self.everything |= other.everything;
        if other.household_in_scope {
            self.household_in_scope = true;
            self.household = other.household;
        }
        self.visits.extend(other.visits);
        self.issues.extend(other.issues);
        self.conflicts.extend(other.conflicts);
        self.conflict_prefixes.extend(other.conflict_prefixes);
    }
}

impl Scope {
    pub fn household() -> Scope {
        Scope::Records { household: true, visits: BTreeSet::new(), issues: BTreeSet::new() }
    }

    pub fn visit(id: &str) -> Scope {
        Scope::Records { household: false, visits: BTreeSet::from([id.to_string()]), issues: BTreeSet::new() }
    }

    pub fn issue(id: &str) -> Scope {
        Scope::Records { household: false, visits: BTreeSet::new(), issues: BTreeSet::from([id.to_string()]) }
    }

    /// Widen this scope to also cover `other`.
    pub fn extend(&mut self, other: Scope) {
        match (&mut *self, other) {
            (Scope::Everything, _) => {}
            (this, Scope::Everything) => *this = Scope::Everything,
            (
                Scope::Records { household, visits, issues },
                Scope::Records { household: h, visits: v, issues: i },
            ) => {
                *household |= h;
                visits.extend(v);
                issues.extend(i);
            }
        }
    }

    /// Whether the two scopes share a record (`Everything` shares every record).
    pub fn overlaps(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Everything, _) | (_, Scope::Everything) => true,
            (
                Scope::Records { household, visits, issues },
                Scope::Records { household: h, visits: v, issues: i },
            ) => (*household && *h) || !visits.is_disjoint(v) || !issues.is_disjoint(i),
        }
    }

    /// The record a field path (as in `Conflict::path`) belongs to.
    pub fn of_path(path: &str) -> Scope {
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["household", ..] => Scope::household(),
            ["visits", id, ..] => Scope::visit(id),
            ["issues", id, ..] => Scope::issue(id),
            _ => Scope::Everything,
        }
    }
}

impl HouseholdDocument {
    fn parse<T: serde::de::DeserializeOwned>(&self, value: &hydrate::Value) -> Result<T> {
        serde_json::from_value(convert::to_json(value)).map_err(|e| corrupt(&self.id, e))
    }

    fn view_household(&mut self, value: &hydrate::Value, view: &mut View) -> Result<()> {
        let doc: HouseholdDoc = self.parse(value)?;
        view.household = Some(doc.to_model(&self.id));
        view.conflicts.extend(self.conflicts_under(&["household".into()], value)?);
        Ok(())
    }

    fn view_visit(&mut self, visit_id: &str, value: &hydrate::Value, view: &mut View) -> Result<()> {
        let doc: VisitDoc = self.parse(value)?;
        view.conflicts.extend(self.conflicts_under(&["visits".into(), visit_id.into()], value)?);
        view.visits.push((visit_id.into(), Some(doc.to_model(visit_id, &self.id))));
        Ok(())
    }

    fn view_issue(&mut self, issue_id: &str, value: &hydrate::Value, view: &mut View) -> Result<()> {
        let doc: IssueDoc = self.parse(value)?;
        view.conflicts.extend(self.conflicts_under(&["issues".into(), issue_id.into()], value)?);
        view.conflicts.extend(self.status_conflict(&doc));
        view.issues.push((issue_id.into(), Some(doc.to_model(issue_id, &self.id))));
        Ok(())
    }

    /// The hydrated record at `path`, if it exists.
    fn hydrate_at(&self, path: &[&str]) -> Result<Option<hydrate::Value>> {
        match Self::map_at(&self.doc, path) {
            Some(obj) => Ok(Some(self.doc.hydrate(&obj, None).map_err(|e| corrupt(&self.id, e))?)),
            None => Ok(None),
        }
    }

    /// Read the records in `scope` and their conflicts.
    pub fn view(&mut self, scope: &Scope) -> Result<View> {
        let mut view = View::default();
        match scope {
            Scope::Everything => {
                view.everything = true;
                view.household_in_scope = true;
                let root = self.doc.hydrate(&ROOT, None).map_err(|e| corrupt(&self.id, e))?;
                let hydrate::Value::Map(root) = root else { return Ok(view) };
                if let Some(h) = root.get("household") {
                    self.view_household(h, &mut view)?;
                }
                if let Some(hydrate::Value::Map(visits)) = root.get("visits") {
                    for (id, entry) in visits.iter() {
                        self.view_visit(id, &entry.value, &mut view)?;
                    }
                }
                if let Some(hydrate::Value::Map(issues)) = root.get("issues") {
                    for (id, entry) in issues.iter() {
                        self.view_issue(id, &entry.value, &mut view)?;
                    }
                }
            }
            Scope::Records { household, visits, issues } => {
                if *household {
                    view.household_in_scope = true;
                    view.conflict_prefixes.push("household/".into());
                    if let Some(h) = self.hydrate_at(&["household"])? {
                        self.view_household(&h, &mut view)?;
                    }
                }
                for id in visits {
                    view.conflict_prefixes.push(format!("visits/{id}/"));
                    match self.hydrate_at(&["visits", id])? {
                        Some(v) => self.view_visit(id, &v, &mut view)?,
                        None => view.visits.push((id.clone(), None)),
                    }
                }
                for id in issues {
                    view.conflict_prefixes.push(format!("issues/{id}/"));
                    match self.hydrate_at(&["issues", id])? {
                        Some(v) => self.view_issue(id, &v, &mut view)?,
                        None => view.issues.push((id.clone(), None)),
                    }
                }
            }
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn scopes_overlap_when_they_share_a_record() {
        assert!(Scope::visit("v1").overlaps(&Scope::visit("v1")));
        assert!(!Scope::visit("v1").overlaps(&Scope::visit("v2")));
        assert!(!Scope::visit("v1").overlaps(&Scope::issue("v1")), "a visit and an issue are different records");
        assert!(Scope::household().overlaps(&Scope::household()));
        assert!(!Scope::household().overlaps(&Scope::issue("i1")));
        assert!(Scope::Everything.overlaps(&Scope::issue("i1")));
        assert!(Scope::issue("i1").overlaps(&Scope::Everything));
    }

    #[test]
    fn extending_a_scope_covers_both_and_everything_absorbs() {
        let mut scope = Scope::visit("v1");
        scope.extend(Scope::issue("i1"));
        scope.extend(Scope::visit("v2"));
        assert_eq!(
            scope,
            Scope::Records {
                household: false,
                visits: ["v1".to_string(), "v2".to_string()].into(),
                issues: ["i1".to_string()].into()
            }
        );
        scope.extend(Scope::household());
        assert!(matches!(scope, Scope::Records { household: true, .. }));
        scope.extend(Scope::Everything);
        assert_eq!(scope, Scope::Everything);
        scope.extend(Scope::visit("v3"));
        assert_eq!(scope, Scope::Everything);
    }
}
