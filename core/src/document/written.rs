//! What a change wrote: the document paths of its operations, whether it replaced what
//! was there, and what else the document shows there. The rules (`rules.rs`) read this to
//! check a member's change: on the server before merging it, on the phone before keeping it.

use std::collections::{BTreeMap, HashMap};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Change, ObjId as ExId, Prop, ReadDoc};

use super::HouseholdDocument;

/// Where one operation of a change wrote, as map keys from the root (list positions and
/// text characters are reported as the path of their list or text).
pub type WrittenPath = Vec<String>;

/// Deeper than any path of the schema (the deepest, an issue's transition's `after`
/// list, is five keys from the root).
const MAX_DEPTH: usize = 32;

impl HouseholdDocument {
    /// The paths written by `change`, which must already be applied to this document,
    /// each once (a note typed character by character writes its path once), with
    /// whether an operation there replaced what was there before the change (it names
    /// predecessors the change did not make).
    /// Operations on objects that are no longer reachable, or whose parents loop, are
    /// reported as `["?"]`.
    pub fn paths_written_by(&self, change: &Change) -> BTreeMap<WrittenPath, bool> {
        let expanded = change.decode();
        let start_op = change.start_op().get();
        // Where each object sits. An object this change made under a map key sits where
        // it was made: no need to look it up in the document.
        let mut object_paths: HashMap<ObjectId, Option<WrittenPath>> = HashMap::new();
        let mut out = BTreeMap::new();
        for (i, op) in expanded.operations.iter().enumerate() {
            let base = match object_paths.get(&op.obj) {
                Some(base) => base.clone(),
                None => {
                    let base = self.object_path(&op.obj);
                    object_paths.insert(op.obj.clone(), base.clone());
                    base
                }
            };
            let path = match (base, &op.key) {
                (None, _) => vec!["?".to_string()],
                (Some(mut path), Key::Map(key)) => {
                    path.push(key.to_string());
                    if matches!(op.action, OpType::Make(_)) {
                        let made = ObjectId::Id(OpId(start_op + i as u64, change.actor_id().clone()));
                        object_paths.insert(made, Some(path.clone()));
                    }
                    path
                }
                (Some(path), Key::Seq(_)) => path,
            };
            // Predecessors made by this change itself replace nothing that was there.
            *out.entry(path).or_default() |= op.pred.iter().any(|id| !made_by(change, id.actor(), id.counter()));
        }
        out
    }

    fn object_path(&self, obj: &ObjectId) -> Option<WrittenPath> {
        let id: ExId = match obj {
            ObjectId::Root => ExId::Root,
            ObjectId::Id(id) => self.doc.import_obj(&format!("{}@{}", id.counter(), id.actor().to_hex_string())).ok()?,
        };
        if id == ExId::Root {
            return Some(Vec::new());
        }
        // Walked from the object up, at most one step deeper than any record: a change can
        // make an object its own ancestor, and the walk would never reach the root.
        let mut path: WrittenPath = Vec::new();
        for parent in self.doc.parents(&id).ok()?.take(MAX_DEPTH + 1) {
            path.push(match parent.prop {
                Prop::Map(k) => k,
                Prop::Seq(i) => i.to_string(),
            });
        }
        if path.len() > MAX_DEPTH {
            return None;
        }
        path.reverse();
        Some(path)
    }

    /// Whether the document, with `change` applied, shows at `path` (e.g. `["visits",
    /// id]`) a value that `change` did not make: one made concurrently with it elsewhere.
    pub fn shows_others_at(&self, path: &[&str], change: &Change) -> bool {
        let Some((key, parents)) = path.split_last() else { return false };
        let Some(parent) = Self::map_at(&self.doc, parents) else { return false };
        let made_by_change = |id: &ExId| matches!(id, ExId::Id(counter, actor, _) if made_by(change, actor, *counter));
        self.doc.get_all(&parent, *key).is_ok_and(|values| values.iter().any(|(_, id)| !made_by_change(id)))
    }
}

/// Whether the operation numbered `counter` of `actor` is one of `change`'s.
fn made_by(change: &Change, actor: &ActorId, counter: u64) -> bool {
    let start = change.start_op().get();
    actor == change.actor_id() && (start..start + change.len() as u64).contains(&counter)
}

#[cfg(test)]
mod tests {
    use automerge::legacy::{Key, ObjectId, Op, OpId, OpType, SortedVec};
    use automerge::{ActorId, ObjType};

    use crate::document::fixtures::{change_of, household};

    #[test]
    fn an_object_made_inside_itself_has_no_path() {
        let mut doc = household();
        let actor = ActorId::random();
        let start = 1_000;
        let made_inside_itself = Op {
            action: OpType::Make(ObjType::Map),
            obj: ObjectId::Id(OpId::new(start, &actor)),
            key: Key::Map("x".into()),
            pred: SortedVec::new(),
            insert: false,
        };
        let change = change_of(actor, start, doc.heads(), vec![made_inside_itself]);
        doc.apply_verified(change.clone()).unwrap();
        // Its parent is itself: the walk up stops instead of running out of memory. On
        // its own thread, so that a walk that does not stop fails the test, not hangs it.
        let (done, paths) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(doc.paths_written_by(&change)));
        let paths = paths.recv_timeout(std::time::Duration::from_secs(10)).expect("the walk up ends");
        assert_eq!(paths.into_keys().collect::<Vec<_>>(), vec![vec!["?".to_string()]]);
    }
}
