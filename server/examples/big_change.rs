use automerge::legacy::{Key, ObjectId, Op, OpType, SortedVec};
use automerge::{ActorId, Change, ScalarValue};
use doorstep_core::document::decode_change;
use std::time::Instant;
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let ops: Vec<Op> = (0..n).map(|_| Op { action: OpType::Put(ScalarValue::Null), obj: ObjectId::Root, key: Key::Map("x".into()), pred: SortedVec::new(), insert: false }).collect();
    let e = automerge::ExpandedChange { operations: ops, actor_id: ActorId::random(), hash: None, seq: 1, start_op: std::num::NonZeroU64::new(1000).unwrap(), time: 0, message: None, deps: vec![], extra_bytes: vec![], author: None };
    let c = Change::from(e);
    let bytes = c.raw_bytes().to_vec();
    let t = Instant::now();
    let d = decode_change(bytes.clone()).unwrap();
    println!("{n} null puts: {} bytes; decoded in {:?}, len {}", bytes.len(), t.elapsed(), d.len());
}
