//! What a change wrote: the document paths of its operations, and whether it created a
//! record. The sync server uses this to check a member's change before merging it.

use std::collections::HashMap;

use automerge::legacy::{Key, ObjectId};
use automerge::{Change, ObjId as ExId, Prop, ReadDoc};

use super::HouseholdDocument;

/// Where one operation of a change wrote, as map keys from the root (list positions and
/// text characters are reported as the path of their list or text).
pub type WrittenPath = Vec<String>;

impl HouseholdDocument {
    /// The paths written by `change`, which must already be applied to this document.
    /// Operations on objects that are no longer reachable are reported as `["?"]`.
    pub fn paths_written_by(&self, change: &Change) -> Vec<WrittenPath> {
        let expanded = change.decode();
        let mut object_paths: HashMap<String, Option<WrittenPath>> = HashMap::new();
        let mut out = Vec::with_capacity(expanded.operations.len());
        for op in &expanded.operations {
            let obj_key = match &op.obj {
                ObjectId::Root => "_root".to_string(),
                ObjectId::Id(id) => format!("{}@{}", id.counter(), id.actor().to_hex_string()),
            };
            let base = object_paths
                .entry(obj_key.clone())
                .or_insert_with(|| self.object_path(&obj_key))
                .clone();
            let Some(mut path) = base else {
                out.push(vec!["?".to_string()]);
                continue;
            };
            if let Key::Map(key) = &op.key {
                path.push(key.to_string());
            }
            out.push(path);
        }
        out
    }

    fn object_path(&self, obj: &str) -> Option<WrittenPath> {
        let id: ExId = self.doc.import_obj(obj).ok()?;
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
