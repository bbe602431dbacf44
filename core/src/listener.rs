//! Change notifications: listeners that learn which households changed, and a
//! subscription handle that stops the listener when dropped.

use std::sync::{Arc, Mutex, Weak};

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// Made on this replica through its API.
    Local,
    /// Imported from a peer or the sync server.
    Remote,
}

/// Households whose records changed, after the change was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub household_ids: Vec<String>,
    pub origin: ChangeOrigin,
}

/// Told about every committed change. Called on the thread that made the change, after
/// the replica's lock is released, so a listener may read the replica.
pub trait ChangeListener: Send + Sync {
    fn on_change(&self, event: ChangeEvent);
}

#[derive(Default)]
pub(crate) struct Listeners {
    next_id: Mutex<u64>,
    entries: Mutex<Vec<(u64, Arc<dyn ChangeListener>)>>,
}

impl Listeners {
    pub(crate) fn add(self: &Arc<Self>, listener: Arc<dyn ChangeListener>) -> Subscription {
        let mut next = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        let id = *next;
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).push((id, listener));
        Subscription { listeners: Arc::downgrade(self), id }
    }

    pub(crate) fn notify(&self, event: ChangeEvent) {
        if event.household_ids.is_empty() {
            return;
        }
        let current: Vec<Arc<dyn ChangeListener>> =
            self.entries.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, l)| l.clone()).collect();
        for listener in current {
            listener.on_change(event.clone());
        }
    }
}

/// Keeps a listener subscribed; dropping it (or calling `cancel`) unsubscribes.
pub struct Subscription {
    listeners: Weak<Listeners>,
    id: u64,
}

impl Subscription {
    pub fn cancel(&self) {
        if let Some(listeners) = self.listeners.upgrade() {
            listeners.entries.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, _)| *id != self.id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}
