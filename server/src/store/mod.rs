//! The server's storage, behind traits free of SQL so that a PostgreSQL implementation
//! can follow the embedded SQLite one (`sqlite.rs`). `data_dir.rs`: the SQLite data
//! directory's lock, backups and restore.
//!
//! All writes happen in a [`WriteTx`]: nothing is visible or durable before `commit`, and
//! the server acknowledges a change to a phone only after the transaction holding it
//! committed.

pub mod data_dir;
pub mod read;
pub mod sqlite;
pub mod sqlite_read;

use doorstep_core::document::{HouseholdDocument, View};
pub use doorstep_core::store::Compaction;

use crate::error::Result;
use crate::org::{Branch, Community, Device, Member};

/// A change held back by validation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuarantinedChange {
    pub hash: String,
    pub household_id: String,
    pub device_id: String,
    pub member_id: String,
    pub reason: String,
    pub at_ms: i64,
    pub status: QuarantineStatus,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineStatus {
    Held,
    Released,
    Discarded,
}

impl QuarantineStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            QuarantineStatus::Held => "held",
            QuarantineStatus::Released => "released",
            QuarantineStatus::Discarded => "discarded",
        }
    }
}

/// One entry of the change log: every merged change gets the next sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub seq: u64,
    pub household_id: String,
    pub bytes: Vec<u8>,
}

/// Opens write transactions.
pub trait ServerStore: Send + 'static {
    type Tx<'a>: WriteTx
    where
        Self: 'a;

    fn begin(&mut self) -> Result<Self::Tx<'_>>;
}

/// Everything the server writes, inside one transaction.
pub trait WriteTx {
    fn commit(self) -> Result<()>;

    /// A random id made when the store was created; a restored backup keeps it.
    fn epoch(&self) -> Result<String>;

    // ----- organisation --------------------------------------------------------------
    fn put_branch(&self, branch: &Branch) -> Result<()>;
    fn put_community(&self, community: &Community) -> Result<()>;
    fn branches(&self) -> Result<Vec<Branch>>;
    fn communities(&self) -> Result<Vec<Community>>;
    fn put_member(&self, member: &Member) -> Result<()>;
    fn member(&self, id: &str) -> Result<Option<Member>>;
    fn members(&self) -> Result<Vec<Member>>;

    // ----- devices -------------------------------------------------------------------
    /// Register a device with a one-time enrolment code (hash) valid until `expires_at_ms`.
    fn add_device(&self, device: &Device, enrolment_hash: &str, expires_at_ms: i64) -> Result<()>;
    /// Exchange an unused, unexpired enrolment code for a token (hash); the device.
    fn enrol_device(&self, enrolment_hash: &str, token_hash: &str, now_ms: i64) -> Result<Option<Device>>;
    fn revoke_device(&self, device_id: &str, now_ms: i64) -> Result<bool>;
    /// The enrolled, unrevoked device holding this token.
    fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>>;
    /// Every device, or a member's; by member, then id.
    fn devices(&self, member_id: Option<&str>) -> Result<Vec<Device>>;
    fn device(&self, device_id: &str) -> Result<Option<Device>>;

    // ----- household documents ------------------------------------------------------------
    fn document(&self, household_id: &str) -> Result<Option<Vec<u8>>>;
    /// The heads of a household's stored document (hex), without loading it.
    fn document_heads(&self, household_id: &str) -> Result<Option<Vec<String>>>;
    /// Store a document's new changes and rewrite the projection rows `view` covers;
    /// compact it if due.
    fn save_document(&self, doc: &mut HouseholdDocument, increment: &[u8], view: &View) -> Result<()>;
    /// `save_document` without the compaction: whether one is due, for the caller to make
    /// now or once idle.
    fn append_document(&self, doc: &mut HouseholdDocument, increment: &[u8], view: &View) -> Result<Compaction>;
    /// Whether a household's stored chunks should become one snapshot, and how soon.
    fn compaction_due(&self, household_id: &str) -> Result<Compaction>;
    /// Households that may be due a compaction: those with an increment.
    fn households_maybe_due_compaction(&self) -> Result<Vec<String>>;
    /// Store `doc`, which holds everything stored of its household, as one snapshot in
    /// place of its chunks.
    fn compact_document(&self, doc: &mut HouseholdDocument) -> Result<()>;
    /// Households a member may see: assigned ones for members; those of the coordinator's
    /// branches and communities; all for admins.
    fn households_in_scope(&self, member: &Member) -> Result<Vec<String>>;
    fn household_exists(&self, household_id: &str) -> Result<bool>;

    // ----- change log ----------------------------------------------------------------------
    fn max_seq(&self) -> Result<u64>;
    fn has_change(&self, hash: &str) -> Result<bool>;
    /// The hash of the change logged at `seq`, if any.
    fn change_hash_at(&self, seq: u64) -> Result<Option<String>>;
    fn append_change(&self, household_id: &str, hash: &str, device_id: Option<&str>, bytes: &[u8], now_ms: i64)
        -> Result<u64>;
    /// Changes after `after_seq` (and after the whole document the device received) of
    /// households the device holds, oldest first, up to about `max_bytes`; and whether
    /// more remain. The device's own changes are left out only when logged after
    /// `pushed_after` (those it pushed in this request): one it pushed earlier comes back
    /// if its position is older than that change, as after a lost response or on a phone
    /// restored from its own backup, which would otherwise never see it again.
    fn changes_for_device(
        &self,
        device_id: &str,
        after_seq: u64,
        pushed_after: u64,
        max_bytes: usize,
    ) -> Result<(Vec<LoggedChange>, bool)>;

    // ----- what each device holds -------------------------------------------------------------
    fn device_grant(&self, device_id: &str) -> Result<u64>;
    fn set_device_grant(&self, device_id: &str, grant: u64) -> Result<()>;
    /// The device confirmed everything up to `grant`: forget confirmed removals, and undo
    /// grants and removals it never confirmed (they are sent again). Returns the
    /// households whose removal it confirmed.
    fn confirm_grant(&self, device_id: &str, grant: u64) -> Result<Vec<String>>;
    /// Households the device holds (granted, not removed), each with whether it holds it
    /// only for its changes to be taken (`hold_for_taking`).
    fn held_households(&self, device_id: &str) -> Result<Vec<(String, bool)>>;
    /// The device received the whole document, as of change-log entry `seq`.
    fn grant_household(&self, device_id: &str, household_id: &str, grant: u64, seq: u64) -> Result<()>;
    fn remove_household(&self, device_id: &str, household_id: &str, grant: u64) -> Result<()>;
    /// The device keeps a household whose removal it confirmed, for the changes it made to
    /// it meanwhile (granted in `grant`): no changes are sent for it. It missed those
    /// of the answer that removed it, so it is sent whole should it be in the scope again.
    fn hold_for_taking(&self, device_id: &str, household_id: &str, grant: u64) -> Result<()>;
    /// Forget everything the device holds (before a reconciliation).
    fn clear_device_scope(&self, device_id: &str) -> Result<()>;

    // ----- quarantine ----------------------------------------------------------------------
    fn quarantined_change(&self, hash: &str) -> Result<Option<QuarantinedChange>>;
    fn quarantine(&self, change: &QuarantinedChange) -> Result<()>;
    /// The reasons of the changes held (not decided yet): which changes they wait for.
    fn held_reasons(&self) -> Result<Vec<String>>;
    fn quarantined(&self, status: Option<QuarantineStatus>) -> Result<Vec<QuarantinedChange>>;
    fn set_quarantine_status(&self, hash: &str, status: QuarantineStatus, by: &str, now_ms: i64) -> Result<()>;
    /// A held change is still held, for another reason.
    fn set_quarantine_reason(&self, hash: &str, reason: &str) -> Result<()>;
    /// Decided (released or discarded) changes of a device it has not confirmed hearing of.
    fn decisions_to_tell(&self, device_id: &str) -> Result<Vec<QuarantinedChange>>;
    fn mark_told(&self, hash: &str, grant: u64) -> Result<()>;
}
