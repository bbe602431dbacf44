//! Whole documents as a sync response carries them.
//!
//! Each is Automerge's document chunk without what the receiving phone rebuilds from the
//! rest: the chunk's header (magic bytes, checksum, type, length: the message frames the
//! document already) and its heads with their indices. The heads are the hashes of the
//! document's last changes, which loading the document computes again, and their 32
//! random bytes each are the one part of a document that zstd cannot shrink: about 5.5%
//! of a coordinator's first sync. The response's heads digest lets the phone check that
//! the heads it computed are the server's.
//!
//! The documents of a response travel as one bundle, laid out by column: first each
//! document's actors and column lengths, then each column of every document together
//! (all the visits' notes, all the change times...). zstd finds more alike bytes close
//! together that way: about 1% fewer bytes for a coordinator's first sync.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use super::claimed::{chunk_contents, Reader, MAGIC};

/// The chunk type of a document.
const DOCUMENT: u8 = 0;

/// The document chunk `saved` (as `save_nocompress` writes it) without its header, its
/// heads and the heads' indices after its columns.
pub(super) fn strip(saved: &[u8]) -> Result<Vec<u8>, String> {
    let contents = chunk_contents(saved, DOCUMENT, "not a document chunk")?;
    let mut r = Reader { bytes: contents, at: 0 };
    skip_actors(&mut r)?;
    let actors = r.at;
    let heads = r.uint()? as usize;
    r.take(heads.checked_mul(32).ok_or("too many heads")?)?;
    let columns = r.at;
    let data = data_len(&read_columns(&mut r)?)?;
    r.take(data)?;
    let mut out = Vec::with_capacity(actors + r.at - columns);
    out.extend_from_slice(&contents[..actors]);
    out.extend_from_slice(&contents[columns..r.at]);
    Ok(out)
}

/// A stored document as `strip` would leave it once loaded and saved for sync, and its
/// heads (sorted), read from its bytes without loading it: only if `stored` is exactly
/// one intact document chunk (its checksum holds) with no column deflated, as the
/// server's compacted snapshots are. `None` otherwise (a snapshot with increments after
/// it, a compressed one): the caller loads the document and saves it for sync.
pub fn strip_stored(stored: &[u8]) -> Option<(Vec<u8>, Vec<ChangeHash>)> {
    let contents = chunk_contents(stored, DOCUMENT, "").ok()?;
    // One chunk: its contents end where the stored bytes do. The checksum covers its
    // type, length and contents.
    let start = stored.len().checked_sub(contents.len())?;
    if stored[start..].as_ptr() != contents.as_ptr()
        || Sha256::new().chain_update(&stored[8..]).finalize()[..4] != stored[4..8]
    {
        return None;
    }
    let mut r = Reader { bytes: contents, at: 0 };
    skip_actors(&mut r).ok()?;
    let count = r.uint().ok()? as usize;
    let mut heads: Vec<ChangeHash> = r
        .take(count.checked_mul(32)?)
        .ok()?
        .chunks_exact(32)
        .map(|h| ChangeHash(h.try_into().expect("32 bytes")))
        .collect();
    heads.sort();
    let columns = read_columns(&mut r).ok()?;
    if columns.iter().any(|((_, spec), _)| spec & 0b1000 != 0) {
        return None;
    }
    strip(stored).ok().map(|shipped| (shipped, heads))
}

/// The document chunk of `stripped` (as `strip` left it) with `heads`. With no heads,
/// Automerge loads it only without checking heads; with the heads its changes end in,
/// sorted as Automerge lists them, it is a document chunk like any other.
pub(super) fn dress(stripped: &[u8], heads: &[ChangeHash]) -> Result<Vec<u8>, String> {
    let mut r = Reader { bytes: stripped, at: 0 };
    skip_actors(&mut r)?;
    let mut contents = Vec::with_capacity(stripped.len() + 1 + 32 * heads.len());
    contents.extend_from_slice(&stripped[..r.at]);
    leb128::write::unsigned(&mut contents, heads.len() as u64).expect("writes to memory");
    for head in heads {
        contents.extend_from_slice(&head.0);
    }
    contents.extend_from_slice(&stripped[r.at..]);
    let mut kind_and_len = vec![DOCUMENT];
    leb128::write::unsigned(&mut kind_and_len, contents.len() as u64).expect("writes to memory");
    let hash = Sha256::new().chain_update(&kind_and_len).chain_update(&contents).finalize();
    let mut chunk = Vec::with_capacity(8 + kind_and_len.len() + contents.len());
    chunk.extend_from_slice(&MAGIC);
    chunk.extend_from_slice(&hash[..4]);
    chunk.extend_from_slice(&kind_and_len);
    chunk.extend_from_slice(&contents);
    Ok(chunk)
}

/// A column of a document: (0 for a change column, 1 for an operation column; its
/// specification), and its length in bytes.
type Column = ((u8, u64), usize);

/// A document as `strip` leaves it: its actors and column lengths (`prefix`), then the
/// columns' data in the order listed.
struct Layout<'a> {
    prefix: &'a [u8],
    columns: Vec<Column>,
    data: &'a [u8],
}

impl<'a> Layout<'a> {
    /// The layout of the document at the start of `bytes`, which holds at least its
    /// prefix; its data are the bytes after the prefix, not checked here.
    fn read(bytes: &'a [u8]) -> Result<Layout<'a>, String> {
        let mut r = Reader { bytes, at: 0 };
        skip_actors(&mut r)?;
        let columns = read_columns(&mut r)?;
        Ok(Layout { prefix: &bytes[..r.at], columns, data: &bytes[r.at..] })
    }

    fn data_len(&self) -> Result<usize, String> {
        data_len(&self.columns)
    }
}

/// The change columns' specifications and lengths, then the operation columns'.
fn read_columns(r: &mut Reader<'_>) -> Result<Vec<Column>, String> {
    let mut columns = Vec::new();
    for kind in 0..2 {
        for _ in 0..r.uint()? {
            let spec = r.uint()?;
            columns.push(((kind, spec), r.uint()? as usize));
        }
    }
    Ok(columns)
}

/// The bytes of data `columns` hold together.
fn data_len(columns: &[Column]) -> Result<usize, String> {
    columns.iter().try_fold(0usize, |sum, (_, len)| sum.checked_add(*len)).ok_or_else(|| "columns too long".into())
}

/// Documents as `strip` left them, in one bundle laid out by column: the number of
/// documents, each document's prefix (actors and column lengths), then for each column
/// in order of (kind, specification) its data from every document that has it.
pub fn bundle(documents: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(documents.iter().map(Vec::len).sum::<usize>() + 8);
    leb128::write::unsigned(&mut out, documents.len() as u64).expect("writes to memory");
    let mut layouts = Vec::with_capacity(documents.len());
    for document in documents {
        let layout = Layout::read(document)?;
        if layout.data_len()? != layout.data.len() {
            return Err("a document's columns do not add up to its data".into());
        }
        out.extend_from_slice(layout.prefix);
        layouts.push(layout);
    }
    // Each document's columns, from where each starts in its data.
    let mut by_column: BTreeMap<(u8, u64), Vec<&[u8]>> = BTreeMap::new();
    for layout in &layouts {
        let mut at = 0;
        for (column, len) in &layout.columns {
            by_column.entry(*column).or_default().push(&layout.data[at..at + len]);
            at += len;
        }
    }
    for parts in by_column.values() {
        for part in parts {
            out.extend_from_slice(part);
        }
    }
    Ok(out)
}

/// The documents of a `bundle`, each as `strip` left it.
pub fn unbundle(bundle: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut r = Reader { bytes: bundle, at: 0 };
    let count = r.uint()? as usize;
    let mut layouts = Vec::with_capacity(count.min(bundle.len()));
    for _ in 0..count {
        let layout = Layout::read(&bundle[r.at..])?;
        r.take(layout.prefix.len())?;
        layouts.push(layout);
    }
    // Where each column's part of the bundle starts.
    let mut starts: BTreeMap<(u8, u64), usize> = BTreeMap::new();
    for layout in &layouts {
        for (column, len) in &layout.columns {
            let total = starts.entry(*column).or_default();
            *total = total.checked_add(*len).ok_or("columns too long")?;
        }
    }
    for len in starts.values_mut() {
        let start = r.at;
        r.take(*len)?;
        *len = start;
    }
    if !r.done() {
        return Err("bytes left over after the documents".into());
    }
    Ok(layouts
        .iter()
        .map(|layout| {
            let mut document = Vec::with_capacity(layout.prefix.len() + layout.data_len().unwrap_or(0));
            document.extend_from_slice(layout.prefix);
            for (column, len) in &layout.columns {
                let at = starts.get_mut(column).expect("every column has a start");
                document.extend_from_slice(&bundle[*at..*at + len]);
                *at += len;
            }
            document
        })
        .collect())
}

fn skip_actors(r: &mut Reader<'_>) -> Result<(), String> {
    for _ in 0..r.uint()? {
        r.bytes_with_len()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;

    use super::super::fixtures::{author, household, visit};
    use super::super::HouseholdDocument;

    /// A household edited on two phones at once: a document with two heads.
    fn with_two_heads() -> HouseholdDocument {
        let mut a = household();
        let saved = a.save();
        let mut b = HouseholdDocument::load(a.id(), &saved, &ActorId::random()).unwrap();
        let id = a.id().to_string();
        a.record_visit(&author(), 5_000, &visit(&id, "甲的走访")).unwrap();
        b.record_visit(&author(), 6_000, &visit(&id, "乙的走访")).unwrap();
        a.apply(b.changes_since(&[])).unwrap();
        assert_eq!(a.heads().len(), 2);
        a
    }

    #[test]
    fn a_document_shipped_without_header_and_heads_loads_with_the_same_heads_and_saves_as_automerge_checks_it() {
        let mut doc = with_two_heads();
        let full = doc.save_uncompressed();
        let shipped = doc.save_for_sync().unwrap();
        assert_eq!(full.len() - shipped.len(), 1 + 2 * 32 + 2 + 4 + 4 + 1 + 2, "heads, their indices, the header");

        let (mut received, saved) = HouseholdDocument::load_from_sync(doc.id(), &shipped, &ActorId::random()).unwrap();
        assert_eq!(received.heads(), doc.heads());
        assert_eq!(received.to_json(), doc.to_json());
        assert_eq!(received.visits().unwrap().len(), 2);
        // What the phone stores loads as any saved document, its heads checked.
        let mut reloaded = HouseholdDocument::load(doc.id(), &saved, &ActorId::random()).unwrap();
        assert_eq!(reloaded.heads(), doc.heads());
        assert_eq!(reloaded.history().len(), doc.history().len());
    }

    #[test]
    fn a_stored_snapshot_ships_as_the_loaded_document_would_and_anything_else_is_left_to_loading() {
        let mut doc = with_two_heads();
        let snapshot = doc.save_uncompressed();
        let (shipped, heads) = super::strip_stored(&snapshot).expect("one uncompressed document chunk");
        assert_eq!(shipped, doc.save_for_sync().unwrap());
        assert_eq!(heads, doc.heads());

        // Left to loading: increments after the snapshot; deflated columns; a flipped byte
        // (the checksum); a cut; a change.
        let id = doc.id().to_string();
        let before = doc.heads();
        doc.record_visit(&author(), 7_000, &visit(&id, &"孩子在家表现良好，家长配合学校工作。".repeat(40))).unwrap();
        let mut with_increment = snapshot.clone();
        for change in doc.changes_since(&before) {
            with_increment.extend_from_slice(change.raw_bytes());
        }
        assert!(super::strip_stored(&with_increment).is_none());
        let compressed = doc.save();
        assert!(compressed.len() < doc.save_uncompressed().len(), "a long note's column is deflated");
        assert!(super::strip_stored(&compressed).is_none());
        assert!(super::strip_stored(&doc.save_uncompressed()).is_some());
        let mut flipped = snapshot.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        assert!(super::strip_stored(&flipped).is_none());
        assert!(super::strip_stored(&snapshot[..snapshot.len() - 1]).is_none());
        assert!(super::strip_stored(doc.changes_since(&before)[0].raw_bytes()).is_none());
    }

    #[test]
    fn documents_bundled_by_column_come_back_as_they_were() {
        let mut with_visits = with_two_heads();
        let mut created_only = household();
        let shipped = vec![with_visits.save_for_sync().unwrap(), created_only.save_for_sync().unwrap()];
        let bundle = super::bundle(&shipped).unwrap();
        assert_eq!(bundle.len(), shipped[0].len() + shipped[1].len() + 1, "only the count is added");
        assert_ne!(&bundle[1..1 + shipped[0].len()], &shipped[0][..], "laid out by column, not document by document");
        assert_eq!(super::unbundle(&bundle).unwrap(), shipped);
        assert_eq!(super::unbundle(&super::bundle(&[]).unwrap()).unwrap(), Vec::<Vec<u8>>::new());

        for cut in [0, 1, bundle.len() / 2, bundle.len() - 1] {
            assert!(super::unbundle(&bundle[..cut]).is_err(), "cut at {cut} of {}", bundle.len());
        }
        let mut longer = bundle.clone();
        longer.push(0);
        assert!(super::unbundle(&longer).unwrap_err().contains("left over"));
    }

    #[test]
    fn a_cut_or_foreign_shipped_document_is_refused() {
        let mut doc = with_two_heads();
        let shipped = doc.save_for_sync().unwrap();
        for cut in [1, 17, shipped.len() / 2, shipped.len() - 1] {
            let refused = HouseholdDocument::load_from_sync(doc.id(), &shipped[..cut], &ActorId::random());
            assert!(refused.is_err(), "cut at {cut} of {}", shipped.len());
        }
        // Not a document chunk: a change, or no chunk at all.
        let change = doc.changes_since(&[]).remove(0);
        assert!(super::strip(change.raw_bytes()).unwrap_err().contains("not a document"));
        assert!(super::strip(b"{\"household\": 1}").unwrap_err().contains("not an Automerge chunk"));
    }
}
