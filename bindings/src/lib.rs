//! Doorstep's mobile bindings: a thin UniFFI facade over [`doorstep_core::Replica`].
//!
//! Kotlin (Android), Swift (iOS) and Python see one object, [`Replica`], the records and
//! enums of [`model`], one error type ([`DoorstepError`]), a change listener
//! ([`ChangeListener`] with a [`SubscriptionHandle`]) and sync with the server
//! ([`mod@sync`]: `Replica.sync`, async, posting through the app's [`HttpTransport`], and
//! `Replica.pending_changes`). Every function here converts its arguments, calls the core
//! and converts the result back: no logic of its own (beyond checking sync options, bounding
//! each request by its timeout, and mapping the transport's errors, see [`mod@sync`]).
//!
//! Threads: the replica is `Send + Sync`; calls are serialised by the core's lock, so the
//! UI may read while a background job writes or a sync runs. Every call except `sync`
//! blocks its calling thread until SQLite has committed, so foreign code calls it off the
//! UI thread (Kotlin: the `app.doorstep` layer wraps each call in
//! `withContext(Dispatchers.IO)`; Swift: a `Task.detached` or an actor). `sync` is async
//! and runs on the library's own sync thread (see [`mod@sync`]).
//!
//! The namespace is `doorstep`: Kotlin package `app.doorstep.ffi` (see uniffi.toml),
//! Swift module `Doorstep` with the C module `doorstepFFI`, Python module `doorstep`.

uniffi::setup_scaffolding!("doorstep");

pub mod error;
pub mod listener;
#[macro_use]
pub mod model;
pub mod replica;
pub mod sync;

pub use error::DoorstepError;
pub use listener::{ChangeEvent, ChangeListener, ChangeOrigin, SubscriptionHandle};
pub use model::*;
pub use replica::Replica;
pub use sync::{
    HttpHeader, HttpRequest, HttpResponse, HttpTransport, PendingChange, SyncOptions, SyncReport,
    TransportError,
};

/// Whether a problem may move from status `from` to status `to` (the rule the replica
/// enforces in `transition_issue`), so that a screen offers only the allowed moves.
#[uniffi::export]
pub fn issue_can_move(from: IssueStatus, to: IssueStatus) -> bool {
    doorstep_core::IssueStatus::from(from).can_move_to(&to.into())
}
