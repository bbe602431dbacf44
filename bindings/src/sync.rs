//! Sync with the Doorstep server: `Replica.sync` (async, on tokio), its options and report,
//! and `Replica.pending_changes`.
//!
//! `sync` is an `async` method (Kotlin `suspend fun`, Swift `async`, Python `async def`).
//! Its work runs on a tokio runtime, never on the caller's thread: the future UniFFI hands
//! to the foreign side only waits for a task spawned on that runtime. The runtime is the
//! one UniFFI's `tokio` feature provides (`async_runtime = "tokio"`): one static runtime
//! for the whole process, driven by its own thread. So a Kotlin caller on the main
//! dispatcher does not block, and neither the HTTP exchange nor the SQLite transactions
//! that apply each response run on the UI thread.
//!
//! The core's sync takes the replica's lock only inside `sync_request` and
//! `apply_sync_response`, never across a network wait, so other threads read and write the
//! replica while a sync runs (the Kotlin and Python suites test this against a server
//! that holds the request open).
//!
//! Cancelling the foreign call (Kotlin: cancelling the coroutine; Python: cancelling the
//! task) aborts the sync at its next network wait. Each response is applied in one
//! transaction, so a cancelled sync has applied whole responses or nothing of one; the
//! next sync picks up where it stopped (the server deduplicates what it had already
//! taken).

use std::future::Future;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use doorstep_core as dc;

use crate::error::{DoorstepError, Result};
use crate::replica::Replica;

/// Options of a sync. Every field has a default: `SyncOptions()` in Kotlin.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncOptions {
    /// Give up a request to the server after this many seconds (connecting, sending the
    /// phone's changes and receiving the answer), with `DoorstepError.Network`. At least 1.
    #[uniffi(default = 60)]
    pub timeout_seconds: u32,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            timeout_seconds: 60,
        }
    }
}

impl TryFrom<SyncOptions> for dc::SyncOptions {
    type Error = DoorstepError;

    fn try_from(options: SyncOptions) -> Result<Self> {
        let SyncOptions { timeout_seconds } = options;
        if timeout_seconds == 0 {
            return Err(dc::Error::InvalidInput {
                reason: "timeout_seconds must be at least 1".into(),
                reason_zh: "超时秒数至少为 1".into(),
            }
            .into());
        }
        Ok(dc::SyncOptions {
            timeout: Duration::from_secs(timeout_seconds.into()),
            ..dc::SyncOptions::default()
        })
    }
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// HTTP requests made (1 for an ordinary sync; more for big pulls in pages).
    pub round_trips: u32,
    /// Local changes the server merged (and this phone no longer keeps as pending).
    pub accepted: u32,
    /// Local changes the server refused to merge; the phone keeps them, see
    /// `pending_changes()` for the reasons.
    pub quarantined: u32,
    /// Local changes an admin discarded on the server; their household was rebuilt from
    /// the server's copy.
    pub discarded: u32,
    /// Households whose records changed on this phone (new, or changed by others).
    pub households_changed: Vec<String>,
    /// Households that left this member's scope and were removed from the phone.
    pub households_removed: Vec<String>,
    /// Bytes on the wire (compressed request bodies).
    pub bytes_sent: u64,
    /// Bytes on the wire (compressed response bodies).
    pub bytes_received: u64,
}
mirror!(dc::SyncReport => SyncReport {
    round_trips, accepted, quarantined, discarded, households_changed, households_removed,
    bytes_sent, bytes_received,
});

/// A local change the server has not acknowledged yet. The phone keeps it until the
/// server merged it (or an admin discarded it).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PendingChange {
    /// The Automerge change hash (hex).
    pub change_hash: String,
    pub household_id: String,
    /// Set when the server quarantined the change: why (in the server's words). The change
    /// waits for an admin to release or discard it.
    pub quarantine_reason: Option<String>,
}
mirror!(dc::PendingChange => PendingChange { change_hash, household_id, quarantine_reason });

#[uniffi::export]
impl Replica {
    /// Local changes not yet acknowledged by the server, oldest first, with the reason of
    /// any the server quarantined. Empty once everything was delivered.
    pub fn pending_changes(&self) -> Result<Vec<PendingChange>> {
        Ok(self
            .core()
            .pending_changes()?
            .into_iter()
            .map(PendingChange::from)
            .collect())
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl Replica {
    /// Sync with the server at `server_url` (e.g. `https://doorstep.example.org`) using the
    /// device token the phone received at enrolment: hand over what was recorded here,
    /// receive what changed for this member's households. One round trip when there is
    /// little to exchange; big pulls come in pages, all within this call.
    ///
    /// Errors: `Network` (offline, timeout, connection cut) and `Server` (the server
    /// refused, e.g. 401 for a wrong or revoked token) lose nothing: every local change
    /// stays pending until the server acknowledged it, and the next sync picks up where
    /// this one stopped. The replica stays usable from other threads during a sync.
    #[uniffi::method(default(options))]
    pub async fn sync(
        &self,
        server_url: String,
        device_token: String,
        options: SyncOptions,
    ) -> Result<SyncReport> {
        let options = dc::SyncOptions::try_from(options)?;
        let core = Arc::clone(self.core());
        // Spawned, so that the work runs on the runtime's thread whatever thread polls
        // this future (UniFFI polls it from the foreign caller's thread).
        let task = AbortOnDrop(tokio::spawn(async move {
            dc::sync(&core, &server_url, &device_token, &options).await
        }));
        match task.await {
            Ok(result) => Ok(result?.into()),
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(_) => Err(dc::Error::Network {
                reason: "the sync was cancelled / 同步已取消".into(),
            }
            .into()),
        }
    }
}

/// A spawned task that is aborted when the future waiting for it is dropped (the foreign
/// caller cancelled), instead of running on detached.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort(); // no effect once the task has finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_are_the_core_defaults() {
        let core = dc::SyncOptions::try_from(SyncOptions::default()).unwrap();
        let defaults = dc::SyncOptions::default();
        assert_eq!(core.timeout, defaults.timeout);
        assert_eq!(core.page_bytes, defaults.page_bytes);
        let e = dc::SyncOptions::try_from(SyncOptions { timeout_seconds: 0 }).unwrap_err();
        assert!(
            matches!(e, DoorstepError::InvalidInput(ref m) if m.contains("timeout_seconds")),
            "{e}"
        );
    }
}
