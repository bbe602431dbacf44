//! The replica object foreign code holds: every method converts, calls
//! [`doorstep_core::Replica`] and converts back.

use std::sync::Arc;

use doorstep_core as dc;

use crate::error::Result;
use crate::listener::{self, ChangeListener, SubscriptionHandle};
use crate::model::*;

fn convert<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}

/// A member's offline replica of their households, in one SQLite file.
///
/// Safe to share between threads (UI reads while a background job writes or a sync
/// runs); calls are serialised inside. **Every method except `sync` blocks** until its
/// SQLite transaction has committed (or, for reads, until the data is loaded): call them
/// off the UI thread. The Kotlin layer `app.doorstep.DoorstepReplica` does this with
/// `Dispatchers.IO` and suspend functions. `sync` is async and never blocks its caller.
///
/// Destroying the object (Kotlin `close()`, Swift deinit) closes the file once no call is
/// running and no other reference is held.
#[derive(uniffi::Object)]
pub struct Replica {
    // An `Arc` so that work can outlive one call's borrow of `self`: `sync` (src/sync.rs)
    // spawns the core's sync loop on the library's sync thread with a clone of it.
    core: Arc<dc::Replica>,
}

impl Replica {
    /// The core replica, for Rust callers (and `sync` in this crate).
    pub fn core(&self) -> &Arc<dc::Replica> {
        &self.core
    }
}

#[uniffi::export]
impl Replica {
    /// Open (or create) the replica file at `path` for a member on a device. A file
    /// belongs to one member and one device; opening it as another is refused.
    #[uniffi::constructor]
    pub fn open(path: String, member_id: String, device_id: String) -> Result<Arc<Self>> {
        let core = dc::Replica::open(&path, &member_id, &device_id)?;
        Ok(Arc::new(Replica {
            core: Arc::new(core),
        }))
    }

    pub fn member_id(&self) -> String {
        self.core.member_id()
    }

    pub fn device_id(&self) -> String {
        self.core.device_id()
    }

    /// The member's role as the server said at the last sync; none before the first. Once
    /// it is known, a member's own edits that the server would refuse (another member's
    /// visit, a household's assignment) fail at once with `NotAllowed`, and nothing is kept.
    pub fn role(&self) -> Option<Role> {
        self.core.role().map(Role::from)
    }

    /// Call once after this file was restored from a backup (the app's restore flow, e.g.
    /// Android's `BackupAgent.onRestoreFinished`), before any edit: later edits are made
    /// under a new Automerge actor, so that they cannot clash with what the file's earlier
    /// life wrote after the backup was taken (which would make every sync fail).
    pub fn restored_from_backup(&self) -> Result<()> {
        Ok(self.core.restored_from_backup()?)
    }

    // ----- households -------------------------------------------------------------

    /// Create a household (coordinators and the server do this; members receive them).
    pub fn create_household(&self, household: NewHousehold) -> Result<Household> {
        Ok(self.core.create_household(&household.into())?.into())
    }

    /// Every household on this replica, with visit and open-issue counts.
    pub fn list_households(&self) -> Result<Vec<HouseholdSummary>> {
        Ok(convert(self.core.list_households()?))
    }

    pub fn household(&self, household_id: String) -> Result<Household> {
        Ok(self.core.household(&household_id)?.into())
    }

    pub fn update_household(
        &self,
        household_id: String,
        update: HouseholdUpdate,
    ) -> Result<Household> {
        Ok(self
            .core
            .update_household(&household_id, &update.into())?
            .into())
    }

    pub fn add_guardian(&self, household_id: String, guardian: NewGuardian) -> Result<Household> {
        Ok(self
            .core
            .add_guardian(&household_id, &guardian.into())?
            .into())
    }

    pub fn update_guardian(
        &self,
        household_id: String,
        guardian_id: String,
        update: GuardianUpdate,
    ) -> Result<Household> {
        Ok(self
            .core
            .update_guardian(&household_id, &guardian_id, &update.into())?
            .into())
    }

    pub fn add_student(&self, household_id: String, student: NewStudent) -> Result<Household> {
        Ok(self
            .core
            .add_student(&household_id, &student.into())?
            .into())
    }

    /// Fix a member to a household, or release them (`assigned = false`).
    pub fn set_member_assigned(
        &self,
        household_id: String,
        member_id: String,
        assigned: bool,
    ) -> Result<Household> {
        Ok(self
            .core
            .set_member_assigned(&household_id, &member_id, assigned)?
            .into())
    }

    // ----- visits -------------------------------------------------------------------

    pub fn record_visit(&self, visit: NewVisit) -> Result<Visit> {
        Ok(self.core.record_visit(&visit.into())?.into())
    }

    /// Every visit to a household, deleted ones included (see `Visit.deleted`).
    pub fn visits(&self, household_id: String) -> Result<Vec<Visit>> {
        Ok(convert(self.core.visits(&household_id)?))
    }

    pub fn visit(&self, visit_id: String) -> Result<Visit> {
        Ok(self.core.visit(&visit_id)?.into())
    }

    /// Whether the member may change, delete or restore this visit (show it read-only
    /// otherwise): by the role the last sync gave; `true` before the first sync.
    pub fn may_edit_visit(&self, visit_id: String) -> Result<bool> {
        Ok(self.core.may_edit_visit(&visit_id)?)
    }

    pub fn update_visit(&self, visit_id: String, update: VisitUpdate) -> Result<Visit> {
        Ok(self.core.update_visit(&visit_id, &update.into())?.into())
    }

    /// Soft-delete a visit: it stays, with who deleted it and when.
    pub fn delete_visit(&self, visit_id: String) -> Result<Visit> {
        Ok(self.core.delete_visit(&visit_id)?.into())
    }

    pub fn restore_visit(&self, visit_id: String) -> Result<Visit> {
        Ok(self.core.restore_visit(&visit_id)?.into())
    }

    // ----- issues -------------------------------------------------------------------

    pub fn raise_issue(&self, issue: NewIssue) -> Result<Issue> {
        Ok(self.core.raise_issue(&issue.into())?.into())
    }

    pub fn issue(&self, issue_id: String) -> Result<Issue> {
        Ok(self.core.issue(&issue_id)?.into())
    }

    /// Every issue of a household, deleted ones included.
    pub fn issues(&self, household_id: String) -> Result<Vec<Issue>> {
        Ok(convert(self.core.issues(&household_id)?))
    }

    pub fn update_issue(&self, issue_id: String, update: IssueUpdate) -> Result<Issue> {
        Ok(self.core.update_issue(&issue_id, &update.into())?.into())
    }

    /// Move a problem along its lifecycle; an invalid move raises
    /// `DoorstepError.InvalidTransition` with its reason.
    pub fn transition_issue(
        &self,
        issue_id: String,
        to: IssueStatus,
        reason: String,
    ) -> Result<Issue> {
        Ok(self
            .core
            .transition_issue(&issue_id, &to.into(), &reason)?
            .into())
    }

    pub fn comment_on_issue(&self, issue_id: String, text: String) -> Result<Issue> {
        Ok(self.core.comment_on_issue(&issue_id, &text)?.into())
    }

    pub fn delete_issue(&self, issue_id: String) -> Result<Issue> {
        Ok(self.core.delete_issue(&issue_id)?.into())
    }

    pub fn restore_issue(&self, issue_id: String) -> Result<Issue> {
        Ok(self.core.restore_issue(&issue_id)?.into())
    }

    /// Problems still being handled, earliest due first.
    pub fn open_issues(&self) -> Result<Vec<IssueSummary>> {
        Ok(convert(self.core.open_issues()?))
    }

    /// Open problems whose due date is before `today` (`YYYY-MM-DD`).
    pub fn overdue_issues(&self, today: String) -> Result<Vec<IssueSummary>> {
        Ok(convert(self.core.overdue_issues(&today)?))
    }

    /// Counts per community for coordinators, as of `today` (`YYYY-MM-DD`).
    pub fn overview(&self, today: String) -> Result<Vec<CommunityOverview>> {
        Ok(convert(self.core.overview(&today)?))
    }

    // ----- conflicts and history ------------------------------------------------------

    /// Open conflicts, of one household or (`None`) of all.
    pub fn conflicts(&self, household_id: Option<String>) -> Result<Vec<Conflict>> {
        Ok(convert(self.core.conflicts(household_id.as_deref())?))
    }

    /// Settle a conflict by choosing one of its competing values.
    pub fn resolve_conflict(
        &self,
        household_id: String,
        path: String,
        chosen_value: String,
    ) -> Result<()> {
        Ok(self
            .core
            .resolve_conflict(&household_id, &path, &chosen_value)?)
    }

    /// Who changed what in a household, and when; oldest first.
    pub fn history(&self, household_id: String) -> Result<Vec<HistoryEntry>> {
        Ok(convert(self.core.history(&household_id)?))
    }

    /// The whole document of a household as JSON text (diagnostics, support, export).
    pub fn household_json(&self, household_id: String) -> Result<String> {
        Ok(self.core.household_json(&household_id)?.to_string())
    }

    // ----- exchange with peers --------------------------------------------------------

    /// The heads of every household document here, for a peer to compute what we lack.
    pub fn heads(&self) -> Result<Vec<HouseholdHeads>> {
        Ok(convert(self.core.heads()?))
    }

    /// The changes a peer lacks, given its heads (households it did not mention are
    /// sent whole).
    pub fn export_changes(&self, peer_heads: Vec<HouseholdHeads>) -> Result<Vec<HouseholdChanges>> {
        let peer: Vec<dc::HouseholdHeads> = convert(peer_heads);
        Ok(convert(self.core.export_changes(&peer)?))
    }

    /// Import changes from a peer. Bytes that do not decode refuse the whole import
    /// (`InvalidInput`) and nothing is stored.
    pub fn import_changes(&self, changes: Vec<HouseholdChanges>) -> Result<ImportReport> {
        let batches: Vec<dc::HouseholdChanges> = convert(changes);
        Ok(self.core.import_changes(&batches)?.into())
    }

    // ----- notifications ----------------------------------------------------------------

    /// Be told of every committed change (local edits and imports) until the returned
    /// handle is cancelled or destroyed.
    pub fn subscribe(&self, listener: Arc<dyn ChangeListener>) -> Arc<SubscriptionHandle> {
        Arc::new(SubscriptionHandle::new(
            self.core.subscribe(listener::forward(listener)),
        ))
    }
}
