//! JSON writing helpers: string escaping and optional floats into any `fmt::Write`
//! (a [`WBuf`](super::wbuf::WBuf) in the agent). Writing only: the reader `tether scan`
//! uses for beacons is [`super::beacon::fields`].

use super::fixed::Fixed;
use core::fmt::{self, Write};

/// Writes `s` as a JSON string literal, quotes included. Bytes that are not printable
/// ASCII are written as `\u00XX`, so any input gives valid one-line JSON.
pub fn write_str<W: Write>(w: &mut W, s: &[u8]) -> fmt::Result {
    w.write_char('"')?;
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let esc: Option<&str> = match c {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x20..=0x7e => None,
            _ => Some(""),
        };
        if let Some(e) = esc {
            // The run before `i` is printable ASCII, hence valid UTF-8.
            w.write_str(core::str::from_utf8(&s[start..i]).map_err(|_| fmt::Error)?)?;
            if e.is_empty() {
                write!(w, "\\u{:04x}", c)?;
            } else {
                w.write_str(e)?;
            }
            start = i + 1;
        }
    }
    w.write_str(core::str::from_utf8(&s[start..]).map_err(|_| fmt::Error)?)?;
    w.write_char('"')
}

/// Writes an optional float with one decimal, or `null`.
pub fn write_opt_f1<W: Write>(w: &mut W, v: Option<f32>) -> fmt::Result {
    match v {
        Some(v) if v.is_finite() => write!(w, "{}", Fixed(v.into(), 1)),
        _ => w.write_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wbuf::WBuf;

    fn esc(s: &[u8]) -> String {
        let mut b = [0u8; 256];
        let mut w = WBuf::new(&mut b);
        write_str(&mut w, s).unwrap();
        String::from_utf8(w.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_bytes() {
        assert_eq!(esc(b"plain"), "\"plain\"");
        assert_eq!(esc(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(esc(b"x\x00\xffy"), "\"x\\u0000\\u00ffy\"");
    }
}
