//! Eight bytes at a time ("SIMD within a register"): the start of a byte string as one
//! little-endian integer, and where a given byte first occurs in it.
//!
//! Request lines are short (`PING\r\n` is six bytes), so finding a line's end or its
//! command word a byte at a time costs a compare, a branch and a bounds check per byte.
//! One load and a few integer operations find both in the common case; longer input falls
//! back to the plain loops of the callers.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The first `min(8, s.len())` bytes of `s`, byte 0 lowest, zero past the end of `s`.
/// Every byte is read once or twice by an overlapping load of 4 or 8, never one by one.
#[inline(always)]
pub fn head(s: &[u8]) -> u64 {
    if let Some(b) = s.first_chunk::<8>() {
        return u64::from_le_bytes(*b);
    }
    let u32_at = |i: usize| {
        s.get(i..i + 4).map_or(0, |b| {
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })
    };
    match s.len() {
        // 4 to 7 bytes: the first four and the last four, overlapping by 0 to 3 bytes
        // (which are the same bytes, so OR-ing them changes nothing).
        n @ 4.. => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
        n => {
            let mut h = 0;
            let mut i = 0;
            while i < n {
                h |= u64::from(s[i]) << (8 * i);
                i += 1;
            }
            h
        }
    }
}

/// The index (0..8) of the first byte of `x` (byte 0 lowest) equal to `b`.
#[inline(always)]
pub fn find(x: u64, b: u8) -> Option<usize> {
    // A zero byte of y is a match. `(y - LO) & !y & HI` marks every zero byte, and may
    // also mark a 0x01 byte just above one (a borrow), never one below: the lowest mark
    // is exact.
    let y = x ^ (LO * u64::from(b));
    let marks = y.wrapping_sub(LO) & !y & HI;
    (marks != 0).then(|| (marks.trailing_zeros() / 8) as usize)
}

/// `x` with its bytes from `n` on (0..=8) cleared.
#[inline(always)]
pub fn keep(x: u64, n: usize) -> u64 {
    match n {
        0 => 0,
        n if n >= 8 => x,
        n => x & (u64::MAX >> (64 - 8 * n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_reads_up_to_eight_bytes_zero_padded() {
        for n in 0..=12 {
            let s: Vec<u8> = (1..=n as u8).collect();
            let mut want = [0u8; 8];
            for (w, b) in want.iter_mut().zip(&s) {
                *w = *b;
            }
            assert_eq!(head(&s), u64::from_le_bytes(want), "{n} bytes");
        }
    }

    #[test]
    fn find_is_the_first_match() {
        for n in 0..=8 {
            let mut s = [b'a'; 8];
            if n < 8 {
                s[n] = b'\n';
            }
            let x = u64::from_le_bytes(s);
            assert_eq!(find(x, b'\n'), (n < 8).then_some(n));
        }
        // A 0x01 byte right above a match is not a match; the first one still wins.
        assert_eq!(
            find(u64::from_le_bytes(*b"a\n\x0b\n\0\0\0\0"), b'\n'),
            Some(1)
        );
        assert_eq!(find(u64::from_le_bytes(*b"\x01\x00abcdef"), 0), Some(1));
        assert_eq!(
            find(u64::from_le_bytes(*b"\x80\x81\xff\x7f\x20\0\0\0"), b' '),
            Some(4)
        );
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut s = [b.wrapping_add(1); 8];
                s[at] = b;
                assert_eq!(find(u64::from_le_bytes(s), b), Some(at), "byte {b} at {at}");
            }
        }
    }

    #[test]
    fn keep_clears_the_rest() {
        let x = u64::from_le_bytes(*b"abcdefgh");
        assert_eq!(keep(x, 0), 0);
        assert_eq!(keep(x, 3), u64::from_le_bytes(*b"abc\0\0\0\0\0"));
        assert_eq!(keep(x, 8), x);
        assert_eq!(keep(x, 9), x);
    }
}
