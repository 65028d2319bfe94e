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
    let d = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&d[..16]);
    hex16(&first)
}

/// 16 bytes as 32 lowercase hex chars. `hex::encode` collects them one
/// `char` at a time (about 1,200 instructions, twice per intent); this
/// writes them into a buffer of their size.
pub fn hex16(bytes: &[u8; 16]) -> String {
    let mut out = [0u8; 32];
    // Cannot fail: the buffer is exactly twice the input, and hex digits
    // are ASCII.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex16_is_hex_encode() {
        for bytes in [[0u8; 16], [0xff; 16], *b"0123456789abcdef", [0x0a; 16]] {
            assert_eq!(hex16(&bytes), hex::encode(bytes));
        }
    }

    #[test]
    fn parts_are_length_prefixed_and_the_id_is_32_hex_chars() {
        let a = digest_id(&[b"ab", b"c"]);
        // Pinned: stored fingerprints and published ids depend on it.
        assert_eq!(a, "601d5476e2ccfe2c87a2bba7a3226597");
        assert_ne!(a, digest_id(&[b"a", b"bc"]));
        assert_eq!(a, digest_id(&[b"ab", b"c"]));
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}
