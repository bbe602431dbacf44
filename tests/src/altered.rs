//! Changes altered as a phone in the wrong hands could send them: a few bytes changed
//! and the checksum recomputed, so that the bytes still pass for a change.

use rand::Rng;
use sha2::{Digest, Sha256};

/// `change` with 1-3 bytes after its header altered, and its checksum (the first four
/// bytes of the SHA-256 of everything after the header) recomputed to match.
pub fn altered(change: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut bytes = change.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(8..bytes.len());
        bytes[at] = match rng.random_range(0..3) {
            0 => bytes[at] ^ (1 << rng.random_range(0..8)),
            1 => rng.random(),
            _ => bytes[at].wrapping_add(1),
        };
    }
    let hash = Sha256::digest(&bytes[8..]);
    bytes[4..8].copy_from_slice(&hash[..4]);
    bytes
}
