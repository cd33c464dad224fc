//! The one place tether touches cryptography: thin wrappers over RustCrypto's `sha2` and
//! `hmac` (no_std, no allocation) and `getrandom` (the kernel's getrandom(2)).
//! Never hand-written crypto. Pure apart from `fill_random`; no heap, no clock, no sockets.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn mac_over(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts a key of any length (RFC 2104 hashes a long one), so this cannot fail.
    let mut m = <HmacSha256 as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    m
}

/// HMAC-SHA256(key, concatenation of `parts`).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    mac_over(key, parts).finalize().into_bytes().into()
}

/// Whether `tag` is HMAC-SHA256(key, concatenation of `parts`), compared in constant time
/// (the `hmac` crate's `verify_slice`). A tag of the wrong length is simply false.
pub fn hmac_verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    mac_over(key, parts).verify_slice(tag).is_ok()
}

/// Fills `buf` from the kernel's CSPRNG (getrandom(2)).
pub fn fill_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_standard_vectors() {
        assert_eq!(
            hex(&sha256(&[b""])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(&[b"a", b"bc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let tag = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex(&tag), want);
        assert!(hmac_verify(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &tag
        ));
        let mut bad = tag;
        bad[31] ^= 1;
        assert!(!hmac_verify(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &bad
        ));
        assert!(!hmac_verify(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &tag[..31]
        ));
        assert!(!hmac_verify(
            b"Jeff",
            &[b"what do ya want for nothing?"],
            &tag
        ));
    }

    #[test]
    fn hmac_rfc4231_case_6_long_key() {
        // RFC 4231 test case 6: a 131-byte key is hashed first.
        let key = [0xaau8; 131];
        let tag = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex(&tag),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn random_bytes_differ() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
