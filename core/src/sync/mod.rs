//! Syncing a replica with the Doorstep server.
//!
//! - [`protocol`]: the wire messages, shared with the server.
//! - The replica side (sans-I/O): `Replica::sync_request` builds a request from the
//!   outbox and the stored position; `Replica::apply_sync_response` applies a response in
//!   one SQLite transaction (changes, whole documents, acknowledgements, removals, new
//!   position). A response that is lost changes nothing; the next request repeats.
//! - [`client`]: the sync loop that pages until the server has nothing more, over any
//!   [`client::SyncTransport`] (one method: post these bytes, return the status and body).
//! - `http_client` (feature `http-client`, on by default): the reqwest transport and
//!   `sync`, the loop over it. The mobile bindings build without it and post through the
//!   phone's own HTTP stack.

pub mod client;
#[cfg(feature = "http-client")]
pub mod http_client;
pub mod protocol;

use std::collections::BTreeSet;

use automerge::{ActorId, ChangeHash};

use crate::document::{decode_change, HouseholdDocument};
use crate::error::{Error, Result};
use crate::exchange::ImportReport;
use crate::listener::{ChangeEvent, ChangeOrigin};
use crate::replica::{
    keep_imports, outbox_entries, prepare_imports, write_imports, Incoming, OutboxEntry, Replica, ROLE_KEY,
};
use protocol::*;

const POSITION_KEY: &str = "sync_position";
pub(crate) const RECONCILE_KEY: &str = "sync_reconcile";
const REBUILD_KEY: &str = "sync_rebuild";

/// A local change the server has not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub change_hash: String,
    pub household_id: String,
    /// Set when the server quarantined the change: why (the phone keeps it).
    pub quarantine_reason: Option<String>,
}

/// What one response did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStep {
    pub accepted: u32,
    pub quarantined: u32,
    pub discarded: u32,
    pub households_changed: Vec<String>,
    pub households_removed: Vec<String>,
    /// Sync again: more pages, a reconciliation, or more local changes to push.
    pub again: bool,
}

fn hex_hash(hash: &[u8; 32]) -> String {
    ChangeHash(*hash).to_string()
}

fn parse_heads(heads: &[[u8; 32]]) -> Vec<ChangeHash> {
    heads.iter().map(|h| ChangeHash(*h)).collect()
}

impl WholeDocuments {
    /// Each document loaded as a phone loads it (`HouseholdDocument::load_from_sync`), with
    /// its bytes saved with its heads; refused if the heads are not those the server sent.
    /// The documents are loaded on as many threads as the phone has cores: a coordinator's
    /// first sync loads thousands, each twice.
    pub fn load(&self, actor: &ActorId) -> std::result::Result<Vec<(HouseholdDocument, Vec<u8>)>, String> {
        let documents = self.documents()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(documents.len().max(1));
        let per_thread = documents.len().div_ceil(threads).max(1);
        let load = |part: &[(&str, Vec<u8>)]| -> std::result::Result<Vec<(HouseholdDocument, Vec<u8>)>, String> {
            part.iter()
                .map(|(household_id, shipped)| {
                    #[cfg(test)]
                    tests::loading_fault(household_id);
                    HouseholdDocument::load_from_sync(household_id, shipped, actor)
                        .map_err(|e| format!("household {household_id}: {e}"))
                })
                .collect()
        };
        let parts: Vec<_> = std::thread::scope(|scope| {
            let running: Vec<_> = documents.chunks(per_thread).map(|part| scope.spawn(move || load(part))).collect();
            let failed = || Err("a document made Automerge fail while loading it".to_string());
            running.into_iter().map(|thread| thread.join().unwrap_or_else(|_| failed())).collect()
        });
        let mut loaded = Vec::with_capacity(documents.len());
        for part in parts {
            loaded.extend(part?);
        }
        let heads: Vec<Vec<ChangeHash>> = loaded.iter_mut().map(|(doc, _)| doc.heads()).collect();
        if self.heads_digest != heads_digest(heads.iter().map(Vec::as_slice)) {
            return Err("they are not the documents the server sent (their heads differ)".into());
        }
        Ok(loaded)
    }
}

impl Replica {
    /// Local changes not yet acknowledged by the server, with quarantine reasons.
    pub fn pending_changes(&self) -> Result<Vec<PendingChange>> {
        Ok(self
            .lock()
            .store
            .outbox_entries()?
            .into_iter()
            .map(|(change_hash, household_id, quarantine_reason)| PendingChange {
                change_hash,
                household_id,
                quarantine_reason,
            })
            .collect())
    }

    /// The next request to send: the outbox (oldest first, up to about `max_push_bytes`,
    /// and whether more waits), the position, and a reconciliation or rebuilds when they
    /// are due.
    pub fn sync_request(&self, max_response_bytes: u32, max_push_bytes: u32) -> Result<SyncRequest> {
        let inner = self.lock();
        let position = match inner.store.meta(POSITION_KEY)? {
            Some(json) => Some(serde_json::from_str(&json).map_err(|e| Error::Storage { reason: e.to_string() })?),
            None => None,
        };
        let reconcile = if inner.store.meta(RECONCILE_KEY)?.is_some() {
            let heads = inner
                .store
                .all_heads()?
                .into_iter()
                .map(|(household_id, heads)| Heads {
                    household_id,
                    heads: heads.iter().filter_map(|h| h.parse::<ChangeHash>().ok()).map(|h| h.0).collect(),
                })
                .collect();
            Some(heads)
        } else {
            None
        };
        let rebuild = match inner.store.meta(REBUILD_KEY)? {
            Some(json) => serde_json::from_str(&json).unwrap_or_default(),
            None => Vec::new(),
        };
        let changes: Vec<PushedChange> = inner
            .store
            .outbox_batch(max_push_bytes as usize)?
            .into_iter()
            .map(|(household_id, bytes)| PushedChange { household_id, bytes })
            .collect();
        let more_to_push = inner.store.outbox_waiting()? > changes.len();
        Ok(SyncRequest { reconcile, rebuild, max_response_bytes, more_to_push, ..SyncRequest::new(position, changes) })
    }

    /// Apply a server response in one transaction. Nothing is kept from a response whose
    /// data does not decode.
    pub fn apply_sync_response(&self, response: SyncResponse) -> Result<SyncStep> {
        let mut step = SyncStep::default();
        let actor = self.lock().actor.clone();
        let mut decoded: Vec<(String, Incoming)> = Vec::new();
        if let Some(whole) = &response.whole {
            let loaded = whole.load(&actor).map_err(|e| Error::Server {
                status: 200,
                message: format!("the whole documents in the response cannot be decoded: {e}"),
            })?;
            for (doc, saved) in loaded {
                decoded.push((doc.id().to_string(), Incoming::Whole { doc, saved }));
            }
        }
        for data in &response.data {
            let changes = data.chunks.iter().map(|chunk| decode_change(chunk.to_vec()));
            let changes = changes.collect::<std::result::Result<_, _>>().map_err(|e| Error::Server {
                status: 200,
                message: format!("household {} in the response cannot be decoded: {e}", data.household_id),
            })?;
            decoded.push((data.household_id.clone(), Incoming::Changes(changes)));
        }

        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut rebuild: BTreeSet<String> = match inner.store.meta(REBUILD_KEY)? {
            Some(json) => serde_json::from_str(&json).unwrap_or_default(),
            None => BTreeSet::new(),
        };
        // Whole documents answer earlier rebuild requests.
        for household_id in response.whole.iter().flat_map(|whole| &whole.household_ids) {
            rebuild.remove(household_id);
        }
        let mut report = ImportReport::default();
        let mut unreadable = Vec::new();
        let mut prepared = prepare_imports(inner, decoded, &mut report, Some(&mut unreadable))?;

        // Changes the server lacks (found by a reconciliation) go to the outbox.
        // Per household, the (hash, bytes) of each change the server lacks.
        let mut to_push: Vec<(String, Vec<OutboxEntry>)> = Vec::new();
        for heads in &response.server_heads {
            let theirs = parse_heads(&heads.heads);
            // With what the response brought applied: the server's heads are then known,
            // and only what the server lacks is pushed (not the household's whole history).
            let missing = match prepared.iter_mut().find_map(|p| p.changes_since(&heads.household_id, &theirs)) {
                Some(lacking) => outbox_entries(lacking),
                None => {
                    let mut doc = match inner.take(&heads.household_id) {
                        Ok(doc) => doc,
                        Err(Error::NotFound { .. }) => continue,
                        // Its changes are in the outbox until the server has them: it
                        // comes whole, and they are pushed from there.
                        Err(Error::CorruptHousehold { .. }) => {
                            unreadable.push(heads.household_id.clone());
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let missing = outbox_entries(doc.changes_since(&theirs));
                    inner.keep(doc);
                    missing
                }
            };
            if !missing.is_empty() {
                to_push.push((heads.household_id.clone(), missing));
            }
        }

        // Stored copies that cannot be read come whole again; this answer's changes to
        // them are in that copy.
        let unreadable_found = !unreadable.is_empty();
        rebuild.extend(unreadable);
        let tx = inner.store.transaction()?;
        write_imports(&tx, &mut prepared, &mut report)?;
        let mut dropped: Vec<String> = Vec::new();
        for ack in &response.acks {
            let hash = hex_hash(&ack.hash);
            match &ack.outcome {
                Outcome::Accepted => {
                    tx.acknowledge(&hash)?;
                    step.accepted += 1;
                }
                Outcome::Quarantined { reason } => {
                    tx.quarantine(&hash, reason)?;
                    step.quarantined += 1;
                }
                Outcome::Discarded { .. } => {
                    // The household is rebuilt from the server's copy: gone from the lists
                    // until it comes (the listeners hear of it).
                    if let Some(household_id) = tx.outbox_household(&hash)? {
                        tx.remove_household(&household_id)?;
                        dropped.push(household_id.clone());
                        rebuild.insert(household_id);
                    }
                    tx.acknowledge(&hash)?;
                    step.discarded += 1;
                }
            }
        }
        for (household_id, missing) in &to_push {
            tx.push_again(household_id, missing)?;
        }
        // A household that left the scope goes, unless the member changed it while this
        // request was on its way, or the server lacks changes to it (a reconciliation):
        // those changes are pushed first (the server takes them from a device that has
        // just heard of the removal), and the answer to that push removes it again.
        let mut leaving_later = false;
        for household_id in &response.removed {
            rebuild.remove(household_id);
            if tx.unsent_changes_to(household_id)? {
                leaving_later = true;
                continue;
            }
            tx.remove_household(household_id)?;
            step.households_removed.push(household_id.clone());
        }
        tx.set_meta(POSITION_KEY, &serde_json::to_string(&response.position).expect("a position serialises"))?;
        if response.reconcile_needed {
            tx.set_meta(RECONCILE_KEY, "1")?;
        } else {
            tx.clear_meta(RECONCILE_KEY)?;
        }
        tx.set_meta(REBUILD_KEY, &serde_json::to_string(&rebuild).expect("ids serialise"))?;
        tx.set_meta(ROLE_KEY, response.role.as_str())?;
        tx.commit()?;
        inner.role = Some(response.role);
        let removed: BTreeSet<&String> = step.households_removed.iter().chain(rebuild.iter()).collect();
        keep_imports(inner, prepared);
        for id in &removed {
            inner.cache.remove(id.as_str());
        }
        drop(guard);

        step.households_changed = report.households_changed.clone();
        let progress = step.accepted + step.quarantined + step.discarded > 0;
        step.again = response.more
            || response.reconcile_needed
            || leaving_later
            || !to_push.is_empty()
            || unreadable_found
            || (progress && (!rebuild.is_empty() || !self.lock().store.outbox_batch(1)?.is_empty()));
        let mut changed: Vec<String> = report.households_changed;
        changed.extend(step.households_removed.iter().cloned());
        changed.extend(dropped.into_iter().filter(|h| !changed.contains(h)).collect::<Vec<_>>());
        self.listeners.notify(ChangeEvent { household_ids: changed, origin: ChangeOrigin::Remote });
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    //! Whole documents in a server's answer; the role it gives.

    use super::*;
    use crate::document::fixtures::{new_household, visit};
    use crate::exchange::HouseholdHeads;
    use crate::model::{HouseholdUpdate, Role, VisitUpdate};

    /// Households whose loading panics, as a bug in Automerge set off by a document would.
    static PANIC_LOADING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn loading_fault(household_id: &str) {
        if PANIC_LOADING.lock().unwrap().iter().any(|h| h == household_id) {
            panic!("test fault: loading household {household_id}");
        }
    }

    fn sorted(mut heads: Vec<HouseholdHeads>) -> Vec<HouseholdHeads> {
        for h in &mut heads {
            h.heads.sort();
        }
        heads
    }

    #[test]
    fn a_whole_document_new_here_is_stored_with_the_changes_that_waited_for_it_once_checked_and_loaded() {
        let (dir, phone) = client::tests::replica_with_a_change();
        let household = phone.list_households().unwrap().remove(0);
        phone.record_visit(&visit(&household.id, "第一次走访")).unwrap();
        let saved = phone.lock().store.document_bytes(&household.id).unwrap().unwrap();
        let heads_saved = phone.heads().unwrap();
        phone.record_visit(&visit(&household.id, "第二次走访")).unwrap();
        let later = phone.export_changes(&heads_saved).unwrap();
        assert_eq!(later[0].changes.len(), 1);

        let path = dir.path().join("coordinator.sqlite3");
        let coordinator = Replica::open(&path, "sec-1", "d-2").unwrap();
        // The later change arrives first (from a peer) and waits for its dependencies.
        assert_eq!(coordinator.import_changes(&later).unwrap().changes_waiting, 1);
        // The server's copy, as a sync response carries it: without its heads.
        let mut sent = HouseholdDocument::load(&household.id, &saved, &automerge::ActorId::random()).unwrap();
        let (shipped, sent_heads) = (sent.save_for_sync().unwrap(), sent.heads());
        let bundle = crate::document::shipped::bundle(&[shipped]).unwrap();
        let answer = |digest: [u8; 32]| SyncResponse {
            version: PROTOCOL_VERSION,
            acks: vec![],
            data: vec![],
            whole: Some(WholeDocuments {
                household_ids: vec![household.id.clone()],
                bundle: bundle.clone().into(),
                heads_digest: digest,
            }),
            removed: vec![],
            position: Position { epoch: "e".into(), seq: 1, grant: 1 },
            more: false,
            reconcile_needed: false,
            role: Role::Coordinator,
            server_heads: vec![],
        };
        // Heads that are not the document's: refused, and nothing kept.
        let wrong = answer(heads_digest([&[][..]]));
        let refused = coordinator.apply_sync_response(wrong).unwrap_err();
        assert!(refused.to_string().contains("heads differ"), "{refused}");
        assert!(coordinator.list_households().unwrap().is_empty());
        // Automerge panicking while loading it (on a loading thread): refused with a
        // message, nothing kept, and the replica goes on.
        PANIC_LOADING.lock().unwrap().push(household.id.clone());
        let failed = coordinator.apply_sync_response(answer(heads_digest([sent_heads.as_slice()])));
        PANIC_LOADING.lock().unwrap().clear();
        let failed = failed.unwrap_err();
        assert!(failed.to_string().contains("made Automerge fail"), "{failed}");
        assert!(coordinator.list_households().unwrap().is_empty());

        let step = coordinator.apply_sync_response(answer(heads_digest([sent_heads.as_slice()]))).unwrap();
        assert_eq!(step.households_changed, vec![household.id.clone()]);
        assert_eq!(sorted(coordinator.heads().unwrap()), sorted(phone.heads().unwrap()));
        assert_eq!(coordinator.visits(&household.id).unwrap().len(), 2);

        // Edited further under the replica's own actor (the document stays in memory).
        let before = coordinator.heads().unwrap();
        coordinator.record_visit(&visit(&household.id, "书记回访")).unwrap();
        let news = coordinator.export_changes(&before).unwrap();
        let change = automerge::Change::from_bytes(news[0].changes[0].clone()).unwrap();
        assert_eq!(change.actor_id(), &coordinator.lock().actor);
        assert_eq!(phone.import_changes(&news).unwrap().changes_applied, 1);
        assert_eq!(phone.visits(&household.id).unwrap().len(), 3);

        // And stored: reopened, the replica has all three.
        drop(coordinator);
        let coordinator = Replica::open(&path, "sec-1", "d-2").unwrap();
        assert_eq!(sorted(coordinator.heads().unwrap()), sorted(phone.heads().unwrap()));
        assert_eq!(coordinator.visits(&household.id).unwrap().len(), 3);
    }

    /// A response that brings nothing but the member's role.
    fn role_only(role: Role) -> SyncResponse {
        SyncResponse::new(vec![], Position::default(), role)
    }

    #[test]
    fn a_member_s_own_edits_are_checked_by_the_role_the_last_sync_gave() {
        let (dir, m1) = client::tests::replica_with_a_change();
        let h = m1.list_households().unwrap().remove(0).id;
        let theirs = m1.record_visit(&visit(&h, "m-1 的走访")).unwrap();
        let together = crate::model::NewVisit { visitors: vec!["m-1".into(), "m-2".into()], ..visit(&h, "一同走访") };
        let shared = m1.record_visit(&together).unwrap();
        let path = dir.path().join("m2.sqlite3");
        let m2 = Replica::open(&path, "m-2", "d-2").unwrap();
        m2.import_changes(&m1.export_changes(&[]).unwrap()).unwrap();
        assert_eq!(m2.role(), None);
        assert!(m2.may_edit_visit(&theirs.id).unwrap(), "the server alone checks before the first sync");

        m2.apply_sync_response(role_only(Role::Member)).unwrap();
        assert_eq!(m2.role(), Some(Role::Member));
        assert!(!m2.may_edit_visit(&theirs.id).unwrap(), "shown read-only");
        assert!(m2.may_edit_visit(&shared.id).unwrap(), "m-2 took part in it");
        let rewrite = VisitUpdate { notes: Some("m-2 改写".into()), ..VisitUpdate::default() };
        let refusals = [
            m2.update_visit(&theirs.id, &rewrite).unwrap_err(),
            m2.delete_visit(&theirs.id).unwrap_err(),
            m2.set_member_assigned(&h, "m-2", true).unwrap_err(),
            m2.update_household(&h, &HouseholdUpdate { archived: Some(true), ..HouseholdUpdate::default() }).unwrap_err(),
            m2.create_household(&new_household()).unwrap_err(),
        ];
        let reasons: Vec<String> = refusals.iter().map(ToString::to_string).collect();
        assert!(refusals.iter().all(|e| matches!(e, Error::NotAllowed { .. })), "{reasons:?}");
        assert!(reasons[0].contains("recorded by another member"), "{reasons:?}");
        assert!(reasons[2].contains("assigned_members") && reasons[3].contains("archived"), "{reasons:?}");
        assert!(reasons[4].contains("cannot create"), "{reasons:?}");
        // Nothing of them kept: not in the outbox, not in the document, not in the list.
        assert!(m2.pending_changes().unwrap().is_empty());
        assert_eq!(m2.visit(&theirs.id).unwrap(), theirs);
        assert_eq!(m2.list_households().unwrap().len(), 1);
        assert_eq!(m2.household_json(&h).unwrap(), m1.household_json(&h).unwrap());
        // What a member may do still goes through.
        let own = m2.record_visit(&visit(&h, "m-2 的走访")).unwrap();
        assert!(m2.may_edit_visit(&own.id).unwrap());
        m2.update_visit(&own.id, &rewrite).unwrap();
        assert_eq!(m2.pending_changes().unwrap().len(), 2);

        // The role is kept with the replica; the next sync's role replaces it.
        drop(m2);
        let m2 = Replica::open(&path, "m-2", "d-2").unwrap();
        assert_eq!(m2.role(), Some(Role::Member));
        assert!(m2.set_member_assigned(&h, "m-2", true).is_err());
        m2.apply_sync_response(role_only(Role::Coordinator)).unwrap();
        assert!(m2.set_member_assigned(&h, "m-2", true).unwrap().assigned_members.contains(&"m-2".to_string()));
        assert!(m2.may_edit_visit(&theirs.id).unwrap());
        assert!(m2.update_visit(&theirs.id, &rewrite).is_ok(), "a coordinator may");
    }
}
