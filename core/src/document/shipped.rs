//! A whole document as a sync response carries it: Automerge's document chunk without
//! what the receiving phone rebuilds from the rest.
//!
//! Left out are the chunk's header (magic bytes, checksum, type, length: the message
//! frames the document already) and its heads with their indices. The heads are the
//! hashes of the document's last changes, which loading the document computes again,
//! and their 32 random bytes each are the one part of a document that zstd cannot shrink:
//! about 5.5% of a coordinator's first sync. The response's `documents_digest` lets the
//! phone check that the heads it computed are the server's.

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use super::claimed::{Reader, MAGIC};

/// The chunk type of a document.
const DOCUMENT: u8 = 0;

/// The document chunk `saved` (as `save_nocompress` writes it) without its header, its
/// heads and the heads' indices after its columns.
pub(super) fn strip(saved: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader { bytes: saved, at: 0 };
    if r.take(4)? != MAGIC {
        return Err("not an Automerge chunk".into());
    }
    r.take(4)?; // checksum
    if r.take(1)?[0] != DOCUMENT {
        return Err("not a document chunk".into());
    }
    let len = r.uint()? as usize;
    let contents = r.take(len)?;
    let mut r = Reader { bytes: contents, at: 0 };
    skip_actors(&mut r)?;
    let actors = r.at;
    let heads = r.uint()? as usize;
    r.take(heads.checked_mul(32).ok_or("too many heads")?)?;
    let columns = r.at;
    let mut data = 0usize;
    // The change columns' specifications and lengths, then the operation columns'.
    for _ in 0..2 {
        for _ in 0..r.uint()? {
            r.uint()?;
            data = data.checked_add(r.uint()? as usize).ok_or("columns too long")?;
        }
    }
    r.take(data)?;
    let mut out = Vec::with_capacity(actors + r.at - columns);
    out.extend_from_slice(&contents[..actors]);
    out.extend_from_slice(&contents[columns..r.at]);
    Ok(out)
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
