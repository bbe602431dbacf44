//! What replicas exchange: per household, the document heads a peer has, and the
//! Automerge changes it lacks. The sync server uses exactly these.

/// The heads (hex change hashes) of one household's document on some replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HouseholdHeads {
    pub household_id: String,
    pub heads: Vec<String>,
}

/// Encoded Automerge changes of one household.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdChanges {
    pub household_id: String,
    pub changes: Vec<Vec<u8>>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Households whose documents changed.
    pub households_changed: Vec<String>,
    /// Changes applied (new to this replica).
    pub changes_applied: u32,
    /// Changes kept aside until the changes they depend on arrive.
    pub changes_waiting: u32,
}
