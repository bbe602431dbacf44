//! How many operations an encoded change claims, read from its column headers and run
//! lengths without expanding them. Run-length encoding lets a change of a few dozen bytes
//! claim billions of operations, and Automerge counts a change's operations one by one
//! while it decodes them: a pushed change is measured here first.

/// The first bytes of every Automerge chunk.
pub(super) const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The chunk type of a change whose columns are not compressed.
const CHANGE: u8 = 1;

/// The most values any column of the change claims, or why the bytes are not a change
/// with plain (not deflated) columns.
pub(super) fn operations_claimed(bytes: &[u8]) -> Result<u64, String> {
    let contents = chunk_contents(bytes, CHANGE, "not an uncompressed change (phones send changes uncompressed)")?;
    let mut r = Reader { bytes: contents, at: 0 };
    let deps = r.uint()? as usize;
    r.take(deps.checked_mul(32).ok_or("too many dependencies")?)?;
    r.bytes_with_len()?; // actor
    r.uint()?; // seq
    r.uint()?; // start op
    r.int()?; // time
    r.bytes_with_len()?; // message
    for _ in 0..r.uint()? {
        r.bytes_with_len()?; // other actors
    }
    let mut columns = Vec::new();
    for _ in 0..r.uint()? {
        let spec = r.uint()?;
        columns.push((spec, r.uint()? as usize));
    }
    let mut most = 0;
    for (spec, len) in columns {
        if spec & 0b1000 != 0 {
            return Err("a deflated column".into());
        }
        let column = Reader { bytes: r.take(len)?, at: 0 };
        most = most.max(values_claimed(column, spec & 0b111)?);
    }
    Ok(most)
}

/// What the chunk at the start of `bytes` holds after its header (magic bytes, checksum,
/// type, length), if it is of type `kind`; `other` says what it is not otherwise.
pub(super) fn chunk_contents<'a>(bytes: &'a [u8], kind: u8, other: &str) -> Result<&'a [u8], String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return Err("not an Automerge chunk".into());
    }
    r.take(4)?; // checksum
    if r.take(1)?[0] != kind {
        return Err(other.into());
    }
    let len = r.uint()? as usize;
    r.take(len)
}

/// The values a column of `kind` claims: the sum of its run lengths.
fn values_claimed(mut r: Reader<'_>, kind: u64) -> Result<u64, String> {
    const GROUP: u64 = 0;
    const ACTOR: u64 = 1;
    const INTEGER: u64 = 2;
    const DELTA: u64 = 3;
    const BOOLEAN: u64 = 4;
    const STRING: u64 = 5;
    const VALUE_METADATA: u64 = 6;
    const VALUE: u64 = 7;
    let skip_value = |r: &mut Reader<'_>| -> Result<(), String> {
        match kind {
            GROUP | ACTOR | INTEGER | VALUE_METADATA => r.uint().map(drop),
            DELTA => r.int().map(drop),
            STRING => r.bytes_with_len().map(drop),
            _ => Err("unknown column type".into()),
        }
    };
    let mut total: u64 = 0;
    while !r.done() {
        let run = match kind {
            // Alternating runs of false and true.
            BOOLEAN => r.uint()?,
            // Raw values: their count is in the metadata column.
            VALUE => return Ok(0),
            _ => match r.int()? {
                n if n > 0 => {
                    skip_value(&mut r)?;
                    n as u64
                }
                n if n < 0 => {
                    for _ in 0..n.unsigned_abs() {
                        skip_value(&mut r)?;
                    }
                    n.unsigned_abs()
                }
                _ => r.uint()?, // a run of nulls
            },
        };
        total = total.saturating_add(run);
    }
    Ok(total)
}

pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or("truncated")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// An unsigned LEB128 number.
    pub(super) fn uint(&mut self) -> Result<u64, String> {
        self.number(leb128::read::unsigned)
    }

    /// A signed LEB128 number.
    pub(super) fn int(&mut self) -> Result<i64, String> {
        self.number(leb128::read::signed)
    }

    fn number<T>(&mut self, read: fn(&mut &'a [u8]) -> Result<T, leb128::read::Error>) -> Result<T, String> {
        let mut rest = &self.bytes[self.at..];
        let before = rest.len();
        let value = read(&mut rest).map_err(|e| format!("a malformed number: {e}"))?;
        self.at += before - rest.len();
        Ok(value)
    }

    pub(super) fn bytes_with_len(&mut self) -> Result<&'a [u8], String> {
        let len = self.uint()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use automerge::legacy::{Key, ObjectId, Op, OpType, SortedVec};
    use automerge::{ActorId, ScalarValue};

    use super::operations_claimed;
    use crate::document::fixtures::{author, change_of, household};
    use crate::document::{decode_change, MAX_CHANGE_OPERATIONS};
    use crate::{NewVisit, VisitMode, VisitUpdate};

    #[test]
    fn the_operations_a_change_claims_are_the_ones_it_holds() {
        let author = author();
        let mut doc = household();
        let visit = NewVisit {
            household_id: doc.id().into(),
            visitors: vec!["m2".into()],
            started_at_ms: 2_000,
            ended_at_ms: Some(3_000),
            mode: VisitMode::InPerson,
            people_met: vec!["母亲 李芳".into(), "学生 王小明".into()],
            topics: vec![],
            notes: "与家长交流了孩子的学习情况".into(),
            follow_up_on: Some("2026-04-01".into()),
            location: None,
        };
        let id = doc.record_visit(&author, 2_000, &visit).unwrap();
        // A note edited twice: the first edit makes it text, the second splices characters.
        for notes in ["与家长交流了孩子的学习和作息", "与家长详细交流了孩子的学习和作息安排"] {
            let update = VisitUpdate { notes: Some(notes.into()), ..Default::default() };
            doc.update_visit(&author, 3_000, &id, &update).unwrap();
        }
        let changes = doc.changes_since(&[]);
        assert_eq!(changes.len(), 4, "the household, the visit and two edits");
        for change in changes {
            assert_eq!(operations_claimed(change.raw_bytes()).unwrap(), change.len() as u64);
        }
    }

    #[test]
    fn a_change_claiming_a_million_operations_in_a_few_bytes_is_refused_before_decoding() {
        let put_null = || Op {
            action: OpType::Put(ScalarValue::Null),
            obj: ObjectId::Root,
            key: Key::Map("x".into()),
            pred: SortedVec::new(),
            insert: false,
        };
        let operations = (0..1_000_000).map(|_| put_null()).collect();
        let bytes = change_of(ActorId::random(), 1, vec![], operations).raw_bytes().to_vec();
        assert!(bytes.len() < 100, "run lengths: {} bytes", bytes.len());
        // Refused by the count of its run lengths, before Automerge decodes anything.
        let refused = decode_change(bytes).unwrap_err();
        assert!(refused.contains("1000000 operations") && refused.contains(&MAX_CHANGE_OPERATIONS.to_string()), "{refused}");
    }
}
