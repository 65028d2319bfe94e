//! The one digest the crate's ids are made of: event ids, anomaly ids and
//! an intent's parameter fingerprint.

use sha2::{Digest, Sha256};

/// 32 lowercase hex chars (the first 16 bytes of SHA-256) over the given
/// parts, each length-prefixed so that no two splits of the same bytes hash
/// alike. Stored fingerprints and published ids depend on it: never change
/// it.
pub fn digest_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed_and_the_id_is_32_hex_chars() {
        let a = digest_id(&[b"ab", b"c"]);
        assert_ne!(a, digest_id(&[b"a", b"bc"]));
        assert_eq!(a, digest_id(&[b"ab", b"c"]));
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}
