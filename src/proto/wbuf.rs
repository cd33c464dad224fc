//! A `core::fmt::Write` over a caller's fixed byte buffer that never grows.
//!
//! Overflow is sticky: once a write does not fit, the buffer remembers it and every
//! later write fails, so a half-written reply can be detected and discarded.

use core::fmt;

pub struct WBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> WBuf<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        WBuf {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// A writer that appends to the first `len` bytes of `buf` (all of it if `len` is
    /// larger): [`WBuf::len`] counts those bytes too. Cheaper than a writer over
    /// `&mut buf[len..]`, whose slicing is a call at `opt-level = "z"`.
    #[inline(always)]
    pub fn after(buf: &'a mut [u8], len: usize) -> Self {
        WBuf {
            len: len.min(buf.len()),
            buf,
            overflow: false,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Forget everything from `len` on (used to roll back a partial item).
    pub fn truncate(&mut self, len: usize) {
        if len <= self.len {
            self.len = len;
            self.overflow = false;
        }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    pub fn push_bytes(&mut self, b: &[u8]) -> fmt::Result {
        let end = self.len + b.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) if !self.overflow => {
                // Most pieces are a few bytes: a plain loop, not a call into memcpy.
                for (d, s) in dst.iter_mut().zip(b) {
                    *d = *s;
                }
                self.len = end;
                Ok(())
            }
            _ => {
                self.overflow = true;
                Err(fmt::Error)
            }
        }
    }

    /// [`WBuf::push_bytes`] for a piece whose length is known at compile time (a fixed
    /// reply such as `PONG`): inlined, the copy is a store or two instead of a loop.
    #[inline(always)]
    pub fn push_fixed<const N: usize>(&mut self, b: &[u8; N]) -> fmt::Result {
        match self.buf.get_mut(self.len..self.len + N) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(b);
                self.len += N;
                Ok(())
            }
            _ => self.push_bytes(b),
        }
    }
}

impl fmt::Write for WBuf<'_> {
    #[inline(always)]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_bytes(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn overflow_is_sticky_and_truncate_recovers() {
        let mut b = [0u8; 8];
        let mut w = WBuf::new(&mut b);
        assert!(write!(w, "abcd").is_ok());
        assert!(write!(w, "efghi").is_err());
        assert!(w.overflowed());
        assert!(write!(w, "x").is_err());
        w.truncate(4);
        assert!(write!(w, "xy").is_ok());
        assert_eq!(w.as_bytes(), b"abcdxy");
    }

    #[test]
    fn after_appends_to_what_is_there() {
        let mut b = *b"ab\0\0\0";
        let mut w = WBuf::after(&mut b, 2);
        assert_eq!((w.len(), w.remaining()), (2, 3));
        assert!(write!(w, "cd").is_ok());
        assert!(write!(w, "ef").is_err());
        w.truncate(4);
        assert_eq!(w.as_bytes(), b"abcd");
        assert_eq!(WBuf::after(&mut b, 9).remaining(), 0);
    }

    #[test]
    fn fixed_pieces_fit_exactly_or_overflow_like_any_other() {
        let mut b = [0u8; 8];
        let mut w = WBuf::new(&mut b);
        assert!(w.push_fixed(b"PONG\n").is_ok());
        assert!(w.push_fixed(b"OK\n").is_ok());
        assert_eq!(w.as_bytes(), b"PONG\nOK\n");
        assert!(w.push_fixed(b"!").is_err());
        assert!(w.overflowed());
        w.truncate(5);
        assert!(w.push_fixed(b"PONG\n").is_err(), "4 bytes left");
        assert!(w.overflowed());
        w.truncate(5);
        assert!(w.push_fixed(b"OK\n").is_ok());
        assert_eq!(w.as_bytes(), b"PONG\nOK\n");
    }
}
