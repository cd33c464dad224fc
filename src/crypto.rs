//! HMAC-SHA256 and random bytes, from RustCrypto's `hmac`/`sha2` and `getrandom` (no_std,
//! no heap). Pure apart from [`fill_random`], which asks the kernel (getrandom(2)).
//! Must not touch sockets, files or the clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length (longer keys are hashed): this cannot fail.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    for p in parts {
        m.update(p);
    }
    m
}

/// HMAC-SHA256(key, concatenation of `parts`).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    mac(key, parts).finalize().into_bytes().into()
}

/// True when `tag` is HMAC-SHA256(key, concatenation of `parts`); compared in constant time.
pub fn hmac_verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    mac(key, parts).verify_slice(tag).is_ok()
}

/// Fills `buf` with random bytes from the kernel.
pub fn fill_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
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
        let mut r = [0u8; 16];
        fill_random(&mut r).unwrap();
    }
}
