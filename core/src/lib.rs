//! Doorstep core: the offline replica of households, visits and issues.
//!
//! - [`model`]: the records apps show and edit (owned, FFI-friendly values).
//! - [`document`]: one household as one Automerge document; typed reads, edits, merge
//!   rules and conflicts (sans-I/O).
//! - [`store`]: the SQLite file: document chunks, projection tables, migrations.
//! - [`replica`]: the API apps call; every write durable before it returns.
//! - [`exchange`]: what replicas and the sync server exchange.
//! - [`listener`]: change notifications with cancel-on-drop subscriptions.
//! - [`mod@sync`]: syncing with the Doorstep server: protocol, outbox, the sync loop over a
//!   transport, and (feature `http-client`, on by default) a reqwest transport.
//! - [`error`]: the narrow public error type.

pub mod document;
pub mod error;
pub mod exchange;
pub mod listener;
pub mod model;
pub mod replica;
pub mod store;
pub mod sync;

pub use document::{Author, HouseholdDocument};
pub use error::{Error, Result};
pub use exchange::{HouseholdChanges, HouseholdHeads, ImportReport};
pub use listener::{ChangeEvent, ChangeListener, ChangeOrigin, Subscription};
pub use model::*;
pub use replica::Replica;
pub use sync::client::{
    sync_with, SyncOptions, SyncReport, SyncTransport, TransportError, TransportRequest, TransportResponse,
};
#[cfg(feature = "http-client")]
pub use sync::http_client::{sync, ReqwestTransport};
pub use sync::PendingChange;
