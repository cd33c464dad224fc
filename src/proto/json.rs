//! JSON helpers: string escaping and optional floats into any `fmt::Write` (a
//! [`WBuf`](super::wbuf::WBuf) in the agent), and the one string unescaper the clients
//! share ([`unescape`]: `tether scan` for beacons, `tether ctl`'s pretty printer). The
//! reader `tether scan` uses for beacon members is [`super::beacon::fields`].

use super::fixed::Fixed;
use core::fmt::{self, Write};

/// Writes `s` as a JSON string literal, quotes included, in printable ASCII: a UTF-8
/// character outside it is written as `\uXXXX` (a surrogate pair above U+FFFF), so any JSON
/// reader gets the text back; each sequence that is not valid UTF-8 is written as one
/// `\ufffd` (as `String::from_utf8_lossy` decodes it). Never longer than six bytes per
/// input byte, so any input gives valid one-line JSON within the buffers sized for that:
/// [`crate::limits::JSON_ESCAPE_MAX_FACTOR`] and the factors beside it.
pub fn write_str<W: Write>(w: &mut W, s: &[u8]) -> fmt::Result {
    w.write_char('"')?;
    for chunk in s.utf8_chunks() {
        write_text(w, chunk.valid())?;
        if !chunk.invalid().is_empty() {
            w.write_str("\\ufffd")?;
        }
    }
    w.write_char('"')
}

/// The longest prefix of `s`, in whole characters, that [`write_str`] writes in at most
/// `n` bytes, quotes included (for a field that must give way, such as a beacon's host).
pub fn prefix_within(s: &str, n: usize) -> &str {
    /// Counts what would be written.
    struct Len(usize);
    impl Write for Len {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut len = Len(2);
    for (i, ch) in s.char_indices() {
        let _ = write_text(&mut len, ch.encode_utf8(&mut [0; 4]));
        if len.0 > n {
            return &s[..i];
        }
    }
    s
}

/// The body of [`write_str`] for text that is valid UTF-8.
fn write_text<W: Write>(w: &mut W, t: &str) -> fmt::Result {
    let mut start = 0;
    for (i, ch) in t.char_indices() {
        let esc = match ch {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            ' '..='~' => continue,
            _ => "",
        };
        w.write_str(&t[start..i])?;
        if esc.is_empty() {
            for u in ch.encode_utf16(&mut [0; 2]) {
                write!(w, "\\u{:04x}", u)?;
            }
        } else {
            w.write_str(esc)?;
        }
        start = i + ch.len_utf8();
    }
    w.write_str(&t[start..])
}

/// The text of a JSON string literal's body (what lies between its quotes) with the
/// escapes undone; bytes that are not UTF-8 become U+FFFD. None for a `\u` escape that is
/// not four hex digits naming a character, or a backslash at the end: the caller decides
/// what to show instead. Client side (it allocates).
pub fn unescape(body: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        let ch = match e {
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'u' => {
                let hi = hex4(body.get(i..i + 4)?)?;
                i += 4;
                match hi {
                    // A surrogate pair: the low half must follow as `\uDC00`-`\uDFFF`.
                    0xd800..=0xdbff => {
                        let lo = body.get(i..i + 6).filter(|e| e.starts_with(b"\\u"));
                        let lo = hex4(&lo?[2..]).filter(|lo| (0xdc00..=0xdfff).contains(lo))?;
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
                    }
                    n => char::from_u32(n)?,
                }
            }
            // `\"`, `\\`, `\/` and anything else: the byte itself.
            other => {
                out.push(other);
                continue;
            }
        };
        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Four hex digits (no sign, no spaces) as a number.
fn hex4(h: &[u8]) -> Option<u32> {
    if h.len() != 4 || !h.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(core::str::from_utf8(h).ok()?, 16).ok()
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
    fn prefix_within_cuts_at_whole_characters_by_written_length() {
        for (s, n, want) in [
            ("pi-kitchen", 12, "pi-kitchen"),
            ("pi-kitchen", 11, "pi-kitche"),
            ("pi-kitchen", 2, ""),
            ("pi-kitchen", 0, ""),
            ("küche", 8, "k"),
            ("küche", 9, "kü"),
            ("a\"b", 4, "a"),
            ("a\"b", 5, "a\""),
            ("a😀", 14, "a"),
            ("a😀", 15, "a😀"),
        ] {
            let got = prefix_within(s, n);
            assert_eq!(got, want, "{s:?} in {n}");
            let mut b = [0u8; 64];
            let mut w = WBuf::new(&mut b);
            write_str(&mut w, got.as_bytes()).unwrap();
            assert!(w.len() <= n.max(2), "{s:?} in {n}: {}", w.len());
        }
    }

    #[test]
    fn unescape_undoes_what_write_str_does_and_standard_escapes() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "line\nfeed\r\t",
            "sl/ash",
        ] {
            let lit = esc(s.as_bytes());
            assert_eq!(unescape(&lit.as_bytes()[1..lit.len() - 1]).unwrap(), s);
        }
        let u = |b: &[u8]| unescape(b).unwrap();
        assert_eq!(u(br"\u00e9t\u00E9 \/ \b\f"), "\u{e9}t\u{e9} / \u{8}\u{c}");
        assert_eq!(
            u("\\\u{e9}".as_bytes()),
            "\u{e9}",
            "escaped UTF-8 character"
        );
        assert_eq!(u(b"\xff\xfe"), "\u{fffd}\u{fffd}", "not UTF-8");
        assert_eq!(u(br"\ud83d\ude00!"), "\u{1f600}!", "a surrogate pair");
    }

    #[test]
    fn utf8_text_is_written_as_code_points_any_json_reader_gets_back() {
        for text in ["café", "pi-küche-😀", "日本", "\u{7f}\u{80}"] {
            let lit = esc(text.as_bytes());
            assert!(lit.bytes().all(|b| (0x20..0x7f).contains(&b)), "{lit}");
            let body = &lit.as_bytes()[1..lit.len() - 1];
            assert_eq!(unescape(body).as_deref(), Some(text), "{lit}");
            let other: String = serde_json::from_str(&lit).unwrap();
            assert_eq!(other, text, "serde_json reads {lit}");
        }
        // Not UTF-8: one U+FFFD per bad byte, never more than six bytes out per byte in.
        for bad in [
            &b"\xc3"[..],
            b"\xe2\x82",
            b"\xed\xa0\x80",
            b"\xf5\x80\x80\x80",
            b"a\xc0\xafb",
        ] {
            let lit = esc(bad);
            assert!(lit.len() - 2 <= 6 * bad.len(), "{lit}");
            let got: String = serde_json::from_str(&lit).unwrap();
            // One U+FFFD per invalid sequence, as Rust's (and WHATWG's) lossy decoding
            // does, and as the host name is read (sys::board).
            assert_eq!(got, String::from_utf8_lossy(bad), "{lit}");
        }
    }

    /// The factors the limits budget with are the worst `write_str` does: every character
    /// (and every byte that is not UTF-8) is measured, and the worst of each class is met.
    #[test]
    fn escape_factors_are_the_worst() {
        use crate::limits::{
            JSON_ESCAPE_ASCII_MAX_FACTOR as ASCII, JSON_ESCAPE_MAX_FACTOR as ANY,
            JSON_ESCAPE_TEXT_MAX_FACTOR as TEXT,
        };
        let body = |s: &[u8]| esc(s).len() - 2;
        let (mut any, mut text, mut ascii) = (0, 0, 0);
        for ch in (0..=0x10ffff).filter_map(char::from_u32) {
            let raw = ch.encode_utf8(&mut [0; 4]).len();
            let n = body(ch.encode_utf8(&mut [0; 4]).as_bytes());
            assert!(n <= ANY * raw, "{ch:?}: {n}");
            any = any.max(n / raw);
            if !ch.is_ascii_control() {
                assert!(n <= TEXT * raw, "{ch:?}: {n}");
                text = text.max(n / raw);
            }
            if ch.is_ascii() && !ch.is_ascii_control() {
                assert!(n <= ASCII * raw, "{ch:?}: {n}");
                ascii = ascii.max(n / raw);
            }
        }
        for b in 0x80..=0xffu8 {
            assert!(body(&[b]) <= ANY, "{b:#x}");
        }
        assert_eq!((any, text, ascii), (ANY, TEXT, ASCII));
        // The worst of each: a control byte and a byte that is not UTF-8; `é` and an emoji
        // (a surrogate pair); `"` and `\`.
        assert_eq!(body(b"\x01"), ANY);
        assert_eq!(body(b"\xff"), ANY);
        assert_eq!(body("é".as_bytes()), TEXT * 2);
        assert_eq!(body("😀".as_bytes()), TEXT * 4);
        assert_eq!(body(b"\""), ASCII);
        assert_eq!(body(b"\\"), ASCII);
    }

    #[test]
    fn unescape_refuses_malformed_escapes() {
        for bad in [
            &br"a\u12"[..],
            br"a\u+041b",
            br"a\ud800z",
            br"a\ude00",
            br"a\",
        ] {
            assert_eq!(unescape(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_bytes() {
        assert_eq!(esc(b"plain"), "\"plain\"");
        assert_eq!(esc(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(esc(b"x\x00\xffy"), "\"x\\u0000\\ufffdy\"");
    }
}
