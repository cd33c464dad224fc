//! Prometheus text exposition format (version 0.0.4) writers: `# HELP` / `# TYPE` lines
//! and label values escaped per the format. Pure: writes into a caller's [`WBuf`], no
//! I/O, no heap. What the metrics *are* is `crate::metrics`'s business.

use super::wbuf::WBuf;
use core::fmt::{self, Write};

/// The metric types tether exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Writes `# HELP name help` and `# TYPE name kind`. `help` is tether's own fixed text
/// (no backslash or newline in it, so it needs no escaping).
pub fn family(w: &mut WBuf<'_>, name: &str, kind: Kind, help: &str) -> fmt::Result {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    write!(w, "# HELP {name} {help}\n# TYPE {name} {kind}\n")
}

/// Writes a label value between double quotes, escaping `\` as `\\`, `"` as `\"` and a
/// line feed as `\n` (the format's three escapes). Bytes that are not valid UTF-8 (tether's
/// values are ASCII, but a hostname need not be) are written as U+FFFD, so the output is
/// always valid UTF-8. At worst a byte takes 3 bytes (U+FFFD), an ASCII byte 2.
pub fn label_value(w: &mut WBuf<'_>, v: &[u8]) -> fmt::Result {
    w.write_char('"')?;
    for chunk in v.utf8_chunks() {
        let s = chunk.valid();
        let mut start = 0;
        for (i, c) in s.bytes().enumerate() {
            let esc = match c {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                b'\n' => "\\n",
                _ => continue,
            };
            w.write_str(&s[start..i])?;
            w.write_str(esc)?;
            start = i + 1;
        }
        w.write_str(&s[start..])?;
        if !chunk.invalid().is_empty() {
            w.write_char(char::REPLACEMENT_CHARACTER)?;
        }
    }
    w.write_char('"')
}

/// Writes `name value\n` for an integer sample without labels.
pub fn sample_u64(w: &mut WBuf<'_>, name: &str, v: u64) -> fmt::Result {
    writeln!(w, "{name} {v}")
}

/// One whole family with one unlabelled integer sample.
pub fn single_u64(w: &mut WBuf<'_>, name: &str, kind: Kind, help: &str, v: u64) -> fmt::Result {
    family(w, name, kind, help)?;
    sample_u64(w, name, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(v: &[u8]) -> String {
        let mut b = [0u8; 256];
        let mut w = WBuf::new(&mut b);
        label_value(&mut w, v).unwrap();
        String::from_utf8(w.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn escapes_exactly_the_three() {
        assert_eq!(esc(b"plain 1.5"), "\"plain 1.5\"");
        assert_eq!(esc(b"a\\b\"c\nd"), "\"a\\\\b\\\"c\\nd\"");
        assert_eq!(esc(b"tab\there"), "\"tab\there\"");
        assert_eq!(esc(b"\xff"), "\"\u{fffd}\"");
    }

    /// [`crate::limits::PROM_ESCAPE_MAX_FACTOR`] (any bytes) and
    /// [`crate::limits::PROM_ESCAPE_TEXT_MAX_FACTOR`] (UTF-8 text) are the worst, and met.
    #[test]
    fn escape_factors_are_the_worst() {
        use crate::limits::{PROM_ESCAPE_MAX_FACTOR as ANY, PROM_ESCAPE_TEXT_MAX_FACTOR as TEXT};
        let body = |s: &[u8]| esc(s).len() - 2;
        let mut text = 0;
        for ch in (0..=0x10ffff).filter_map(char::from_u32) {
            let mut b = [0; 4];
            let s = ch.encode_utf8(&mut b);
            let n = body(s.as_bytes());
            assert!(n <= TEXT * s.len(), "{ch:?}: {n}");
            text = text.max(n / s.len());
        }
        assert_eq!(text, TEXT);
        let mut any = 0;
        for b in 0..=0xffu8 {
            assert!(body(&[b]) <= ANY, "{b:#x}");
            any = any.max(body(&[b]));
        }
        assert_eq!(any, ANY);
    }

    #[test]
    fn family_lines() {
        let mut b = [0u8; 256];
        let mut w = WBuf::new(&mut b);
        single_u64(&mut w, "x_total", Kind::Counter, "Things.", 7).unwrap();
        assert_eq!(
            w.as_bytes(),
            b"# HELP x_total Things.\n# TYPE x_total counter\nx_total 7\n"
        );
    }
}
