//! What a change wrote: the document paths of its operations, and whether it created a
//! record. The sync server uses this to check a member's change before merging it.

use std::collections::{BTreeSet, HashMap};

use automerge::legacy::{Key, ObjectId};
use automerge::{Change, ObjId as ExId, Prop, ReadDoc};

use super::HouseholdDocument;

/// Where one operation of a change wrote, as map keys from the root (list positions and
/// text characters are reported as the path of their list or text).
pub type WrittenPath = Vec<String>;

impl HouseholdDocument {
    /// The paths written by `change`, which must already be applied to this document,
    /// each once (a note typed character by character writes its path once).
    /// Operations on objects that are no longer reachable are reported as `["?"]`.
    pub fn paths_written_by(&self, change: &Change) -> Vec<WrittenPath> {
        let expanded = change.decode();
        let mut object_paths: HashMap<&ObjectId, Option<WrittenPath>> = HashMap::new();
        let mut out = BTreeSet::new();
        for op in &expanded.operations {
            let base = object_paths.entry(&op.obj).or_insert_with(|| self.object_path(&op.obj));
            let path = match (base, &op.key) {
                (None, _) => vec!["?".to_string()],
                (Some(base), Key::Map(key)) => {
                    let mut path = base.clone();
                    path.push(key.to_string());
                    path
                }
                (Some(base), Key::Seq(_)) => {
                    if out.contains(base) {
                        continue;
                    }
                    base.clone()
                }
            };
            out.insert(path);
        }
        out.into_iter().collect()
    }

    fn object_path(&self, obj: &ObjectId) -> Option<WrittenPath> {
        let id: ExId = match obj {
            ObjectId::Root => ExId::Root,
            ObjectId::Id(id) => self.doc.import_obj(&format!("{}@{}", id.counter(), id.actor().to_hex_string())).ok()?,
        };
        if id == ExId::Root {
            return Some(Vec::new());
        }
        let parents = self.doc.parents(&id).ok()?;
        Some(
            parents
                .path()
                .into_iter()
                .map(|(_, prop)| match prop {
                    Prop::Map(k) => k,
                    Prop::Seq(i) => i.to_string(),
                })
                .collect(),
        )
    }

    /// Whether the record at `path` (e.g. `["visits", id]`) was created by `change`.
    pub fn created_by(&self, path: &[&str], change: &Change) -> bool {
        match Self::map_at(&self.doc, path) {
            Some(ExId::Id(counter, actor, _)) => {
                actor == *change.actor_id()
                    && counter >= change.start_op().get()
                    && counter < change.start_op().get() + change.len() as u64
            }
            _ => false,
        }
    }
}
