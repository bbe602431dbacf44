//! Change notifications for foreign code: a listener trait implemented in Kotlin, Swift
//! or Python, and a handle whose `cancel()` (or destruction) stops it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use doorstep_core as dc;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChangeOrigin {
    /// Made on this replica through its API.
    Local,
    /// Imported from a peer or the sync server.
    Remote,
}

/// Households whose records changed, after the change was committed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChangeEvent {
    pub household_ids: Vec<String>,
    pub origin: ChangeOrigin,
}

impl From<dc::ChangeEvent> for ChangeEvent {
    fn from(e: dc::ChangeEvent) -> Self {
        ChangeEvent {
            household_ids: e.household_ids,
            origin: match e.origin {
                dc::ChangeOrigin::Local => ChangeOrigin::Local,
                dc::ChangeOrigin::Remote => ChangeOrigin::Remote,
            },
        }
    }
}

/// Told about every committed change, implemented by the app.
///
/// Called on the thread that made the change (a background thread, never the UI thread
/// unless the app wrote from it), after the replica's lock is released: the listener may
/// read the replica, and should hand the event to its UI quickly (Kotlin: the `changes()`
/// Flow of the `app.doorstep` layer does this). An exception thrown here is logged and
/// ignored: the change is already committed and the other listeners are still told.
///
/// Avoid reference cycles: a listener that holds the replica keeps it alive until the
/// subscription is cancelled.
#[uniffi::export(foreign)]
pub trait ChangeListener: Send + Sync {
    fn on_change(&self, event: ChangeEvent);
}

/// Forwards core notifications to a foreign listener.
struct ForeignListener(Arc<dyn ChangeListener>);

impl dc::ChangeListener for ForeignListener {
    fn on_change(&self, event: dc::ChangeEvent) {
        // A foreign exception surfaces as a panic in the generated callback code; it
        // must not unwind into the replica call that made (and committed) the change.
        let listener = &self.0;
        if catch_unwind(AssertUnwindSafe(|| listener.on_change(event.into()))).is_err() {
            tracing::warn!("a change listener failed; the change itself is committed");
        }
    }
}

pub(crate) fn forward(listener: Arc<dyn ChangeListener>) -> Arc<dyn dc::ChangeListener> {
    Arc::new(ForeignListener(listener))
}

/// Keeps a listener subscribed. `cancel()` stops it; so does destroying the handle
/// (Kotlin `close()`/`use {}` or garbage collection, Swift deinit, Python `del`).
#[derive(uniffi::Object)]
pub struct SubscriptionHandle {
    subscription: Mutex<Option<dc::Subscription>>,
}

impl SubscriptionHandle {
    pub(crate) fn new(subscription: dc::Subscription) -> Self {
        SubscriptionHandle {
            subscription: Mutex::new(Some(subscription)),
        }
    }
}

#[uniffi::export]
impl SubscriptionHandle {
    /// Stop notifications. Idempotent: later calls do nothing. Once it returns, the
    /// listener is not called for changes committed afterwards.
    pub fn cancel(&self) {
        let subscription = self
            .subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(subscription); // dc::Subscription cancels on drop
    }

    /// Whether the listener is still subscribed.
    pub fn is_active(&self) -> bool {
        self.subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}
