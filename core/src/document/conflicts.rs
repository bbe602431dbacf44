//! Concurrent edits of the same field: listing them and settling them.
//!
//! Automerge keeps every concurrent value of a map key and shows one of them, chosen the
//! same way on every replica. We list each such key (with who wrote each value, from which
//! device, when) until a person picks a value. Issue status is derived from transitions,
//! so its conflicts are concurrent transitions, settled by one more transition.

use automerge::transaction::Transactable;
use automerge::{hydrate, ObjId, ObjType, ReadDoc, ScalarValue, Value};

use super::stored::IssueDoc;
use super::{change_time_ms, read_note, status, Author, HouseholdDocument, Scope};
use crate::error::{Error, Result};
use crate::model::{Conflict, ConflictValue, IssueStatus, Stamp};

/// Keys that hold bookkeeping, not something a person typed.
const NOT_A_CONFLICT: &[&str] = &["deleted", "id", "recorded", "raised", "created", "transitions", "comments"];

fn scalar_text(s: &ScalarValue) -> String {
    match s {
        ScalarValue::Str(s) => s.to_string(),
        ScalarValue::Int(i) => i.to_string(),
        ScalarValue::Uint(u) => u.to_string(),
        ScalarValue::F64(f) => f.to_string(),
        ScalarValue::Boolean(b) => b.to_string(),
        ScalarValue::Timestamp(t) => t.to_string(),
        ScalarValue::Null => String::new(),
        other => other.to_string(),
    }
}

/// Collect the paths of map keys flagged as conflicting, below `path`.
fn collect_flagged(path: Vec<String>, value: &hydrate::Value, out: &mut Vec<Vec<String>>) {
    let hydrate::Value::Map(map) = value else { return };
    for (key, entry) in map.iter() {
        if NOT_A_CONFLICT.contains(&key.as_str()) {
            continue;
        }
        let mut child = path.clone();
        child.push(key.clone());
        if entry.conflict {
            out.push(child.clone());
        }
        collect_flagged(child, &entry.value, out);
    }
}

impl HouseholdDocument {
    fn stamp_of_op(&mut self, op: &ObjId) -> Stamp {
        let hash = self.doc.hash_for_opid(op);
        match hash.and_then(|h| self.doc.get_change_meta_by_hash(&h)) {
            Some(meta) => {
                let (member_id, device_id, _) = read_note(meta.message.as_deref());
                Stamp { member_id, device_id, at_ms: change_time_ms(meta.timestamp) }
            }
            None => Stamp { member_id: String::new(), device_id: String::new(), at_ms: 0 },
        }
    }

    /// The conflicts inside the record at `path`, whose hydrated value is `value`.
    /// Hydration flags keys with concurrent values, so only those are looked up.
    pub(super) fn conflicts_under(&mut self, path: &[String], value: &hydrate::Value) -> Result<Vec<Conflict>> {
        let mut flagged: Vec<Vec<String>> = Vec::new();
        collect_flagged(path.to_vec(), value, &mut flagged);
        let mut found = Vec::new();
        for full in flagged {
            let (key, map_path) = full.split_last().expect("a flagged path has a key");
            let map_path: Vec<&str> = map_path.iter().map(String::as_str).collect();
            let Some(obj) = Self::map_at(&self.doc, &map_path) else { continue };
            let all = self.doc.get_all(&obj, key.as_str())?;
            if all.len() < 2 {
                continue;
            }
            let winner = self.doc.get(&obj, key.as_str())?.map(|(_, id)| id);
            let mut values: Vec<(bool, String, ObjId)> = all
                .into_iter()
                .map(|(v, id)| {
                    let text = match v {
                        Value::Scalar(s) => scalar_text(&s),
                        Value::Object(ObjType::Text) => self.doc.text(&id).unwrap_or_default(),
                        Value::Object(t) => format!("[{t}]"),
                    };
                    (Some(&id) == winner.as_ref(), text, id)
                })
                .collect();
            values.sort_by_key(|(w, _, _)| !*w);
            let values = values
                .into_iter()
                .map(|(_, value, op)| ConflictValue { value, by: self.stamp_of_op(&op) })
                .collect();
            found.push(Conflict { household_id: self.id.clone(), path: full.join("/"), values });
        }
        Ok(found)
    }

    /// Concurrent transitions of one problem, as a conflict on its status.
    pub(super) fn status_conflict(&self, issue: &IssueDoc) -> Option<Conflict> {
        let derived = status::derive(&issue.transitions);
        (derived.heads.len() > 1).then(|| Conflict {
            household_id: self.id.clone(),
            path: format!("issues/{}/status", issue.id),
            values: derived
                .heads
                .iter()
                .map(|h| {
                    let t = &issue.transitions[h];
                    ConflictValue { value: t.to.clone(), by: (&t.by).into() }
                })
                .collect(),
        })
    }

    /// Every field with concurrent values, the shown value first.
    pub fn conflicts(&mut self) -> Result<Vec<Conflict>> {
        Ok(self.view(&Scope::Everything)?.conflicts)
    }

    /// Settle the conflict at `path` by choosing one of its competing values.
    pub fn resolve_conflict(&mut self, author: &Author, now_ms: i64, path: &str, chosen: &str) -> Result<()> {
        let conflict = self
            .conflicts()?
            .into_iter()
            .find(|c| c.path == path)
            .ok_or_else(|| Error::not_found("conflict", path))?;
        if !conflict.values.iter().any(|v| v.value == chosen) {
            let choices: Vec<&str> = conflict.values.iter().map(|v| v.value.as_str()).collect();
            return Err(Error::invalid(
                format!("“{chosen}”不是该冲突的候选值：{choices:?}"),
                format!("{chosen:?} is not one of the competing values {choices:?}"),
            ));
        }
        let parts: Vec<&str> = path.split('/').collect();
        if let ["issues", issue_id, "status"] = parts.as_slice() {
            return self.add_transition(
                author,
                now_ms,
                issue_id,
                &IssueStatus::from(chosen),
                "resolve concurrent status change / 解决状态冲突",
                true,
            );
        }
        let (key, map_path) = parts.split_last().expect("a conflict path has a key");
        let obj = Self::map_at(&self.doc, map_path).ok_or_else(|| Error::not_found("conflict", path))?;
        let value: ScalarValue = self
            .doc
            .get_all(&obj, *key)?
            .into_iter()
            .find_map(|(v, id)| match v {
                Value::Scalar(s) if scalar_text(&s) == chosen => Some(s.into_owned()),
                // A note edited on two phones before either had seen an edit of it: the
                // chosen wording is kept as a plain string, text again at its next edit.
                Value::Object(ObjType::Text) if self.doc.text(&id).is_ok_and(|t| t == chosen) => {
                    Some(ScalarValue::Str(chosen.into()))
                }
                _ => None,
            })
            .ok_or_else(|| {
                Error::invalid("只能选择文字或数字类的候选值", "only a plain value can be chosen")
            })?;
        self.change(author, now_ms, format!("resolve_conflict {path}"), |doc| {
            doc.put(&obj, *key, value)?;
            Ok(())
        })
    }
}
