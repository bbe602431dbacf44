//! Tokens and enrolment codes: random, 128 bits or more, stored only as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A device token: 256 random bits, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A one-time enrolment code a person can type: 128 random bits as 26 base-32 letters,
/// grouped for reading (e.g. `K7QF-...`).
pub fn new_enrolment_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 17];
    rand::rng().fill_bytes(&mut bytes);
    let letters: Vec<u8> = (0..26)
        .map(|i| {
            let (byte, shift) = (i * 5 / 8, i * 5 % 8);
            let window = (u16::from(bytes[byte]) << 8) | u16::from(bytes[byte + 1]);
            ALPHABET[((window >> (11 - shift)) & 31) as usize]
        })
        .collect();
    letters.chunks(4).map(|c| std::str::from_utf8(c).expect("ascii")).collect::<Vec<_>>().join("-")
}

/// What is stored for a token or code: its SHA-256, hex. Codes are compared without
/// dashes or case.
pub fn hash_secret(secret: &str) -> String {
    let normalised: String = secret.chars().filter(|c| *c != '-' && !c.is_whitespace()).collect::<String>().to_uppercase();
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

/// What is kept of a secret a person chose (the metrics token): its SHA-256, hex, of the
/// text exactly as given (unlike `hash_secret`, which forgives a code's case and dashes).
pub fn hash_chosen_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_long_and_stored_hashed() {
        let a = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_token());
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), a);
    }

    #[test]
    fn enrolment_codes_carry_at_least_128_bits_and_tolerate_typing() {
        let code = new_enrolment_code();
        let letters: String = code.chars().filter(|c| *c != '-').collect();
        assert_eq!(letters.len(), 26, "26 letters of 5 bits = 130 bits: {code}");
        assert_eq!(hash_secret(&code), hash_secret(&letters.to_lowercase()));
    }
}
