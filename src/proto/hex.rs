//! Lowercase hex, both ways, into and from caller-owned buffers. Pure: no heap, no panics.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `src` as lowercase hex into the front of `dst`; returns the number of hex
/// digits written (`2 * src.len()`, or fewer when `dst` is short: whole bytes only).
pub fn encode(src: &[u8], dst: &mut [u8]) -> usize {
    let mut n = 0;
    for (b, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d[0] = DIGITS[usize::from(b >> 4)];
        d[1] = DIGITS[usize::from(b & 15)];
        n += 2;
    }
    n
}

fn nibble(c: u8, upper_ok: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if upper_ok => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex (either case) that fills `dst` exactly: `src.len()` must be
/// `2 * dst.len()`. Returns false, with `dst` unspecified, otherwise.
pub fn decode(src: &[u8], dst: &mut [u8]) -> bool {
    decode_with(src, dst, true)
}

/// Like [`decode`], but only lowercase digits: one spelling per value, so a signed
/// datagram has exactly one valid byte string (an upper-cased tag is an altered datagram).
pub fn decode_lower(src: &[u8], dst: &mut [u8]) -> bool {
    decode_with(src, dst, false)
}

fn decode_with(src: &[u8], dst: &mut [u8], upper_ok: bool) -> bool {
    if src.len() != 2 * dst.len() {
        return false;
    }
    for (pair, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
        match (nibble(pair[0], upper_ok), nibble(pair[1], upper_ok)) {
            (Some(h), Some(l)) => *d = h << 4 | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut h = [0u8; 8];
        assert_eq!(encode(&[0x00, 0x9f, 0xa0, 0xff], &mut h), 8);
        assert_eq!(&h, b"009fa0ff");
        let mut b = [0u8; 4];
        assert!(decode(b"009FA0ff", &mut b));
        assert_eq!(b, [0x00, 0x9f, 0xa0, 0xff]);
        assert!(!decode(b"009fa0f", &mut b));
        assert!(!decode(b"009fa0fff", &mut b));
        assert!(!decode(b"009fa0fg", &mut b));
        assert!(!decode(b"+09fa0ff", &mut b));
        let mut short = [0u8; 3];
        assert_eq!(encode(&[1, 2], &mut short), 2);
        assert_eq!(&short[..2], b"01");
    }
}
