//! JSON helpers: string escaping and optional floats into any `fmt::Write` (a
//! [`WBuf`](super::wbuf::WBuf) in the agent), and the one string unescaper the clients
//! share ([`unescape`]: `tether scan` for beacons, `tether ctl`'s pretty printer). The
//! reader `tether scan` uses for beacon members is [`super::beacon::fields`].

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
                let hex = body.get(i..i + 4)?;
                i += 4;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let n = u32::from_str_radix(core::str::from_utf8(hex).ok()?, 16).ok()?;
                char::from_u32(n)?
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
    }

    #[test]
    fn unescape_refuses_malformed_escapes() {
        for bad in [&br"a\u12"[..], br"a\u+041b", br"a\ud800z", br"a\"] {
            assert_eq!(unescape(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_bytes() {
        assert_eq!(esc(b"plain"), "\"plain\"");
        assert_eq!(esc(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(esc(b"x\x00\xffy"), "\"x\\u0000\\u00ffy\"");
    }
}
