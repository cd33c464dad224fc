//! The fixed reply vocabulary. Every reply is exactly one line: `PONG`, `OK`,
//! `OK <payload>` or `ERR <code> <human text>`, ended by `\n`.

use super::wbuf::WBuf;
use crate::limits::LINE_MAX;
use core::fmt::{self, Write};

/// The text of `ERR too-long`.
pub const TOO_LONG_TEXT: &str = crate::limit_text!("line exceeds ", { LINE_MAX }, " bytes");

/// The fixed set of error codes a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrCode {
    BadCommand,
    BadArgument,
    NotFound,
    Denied,
    Busy,
    TooLong,
    Full,
    Unsupported,
}

impl ErrCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrCode::BadCommand => "bad-command",
            ErrCode::BadArgument => "bad-argument",
            ErrCode::NotFound => "not-found",
            ErrCode::Denied => "denied",
            ErrCode::Busy => "busy",
            ErrCode::TooLong => "too-long",
            ErrCode::Full => "full",
            ErrCode::Unsupported => "unsupported",
        }
    }
}

/// An error reply: a code and a fixed human text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    pub code: ErrCode,
    pub text: &'static str,
}

impl Error {
    pub const fn new(code: ErrCode, text: &'static str) -> Self {
        Error { code, text }
    }
}

/// Writes `ERR <code> <text>\n`.
pub fn write_err(w: &mut WBuf<'_>, e: Error) -> fmt::Result {
    writeln!(w, "ERR {} {}", e.code.as_str(), e.text)
}

/// Writes `PONG\n`.
#[inline(always)]
pub fn write_pong(w: &mut WBuf<'_>) -> fmt::Result {
    w.push_fixed(b"PONG\n")
}

/// Writes `OK\n`.
pub fn write_ok(w: &mut WBuf<'_>) -> fmt::Result {
    w.push_fixed(b"OK\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_line_shape() {
        let mut b = [0u8; 64];
        let mut w = WBuf::new(&mut b);
        write_err(&mut w, Error::new(ErrCode::TooLong, TOO_LONG_TEXT)).unwrap();
        assert_eq!(w.as_bytes(), b"ERR too-long line exceeds 255 bytes\n");
    }
}
