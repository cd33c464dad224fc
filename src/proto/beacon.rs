//! The beacon datagram and the scan probe, both directions. Pure, panic-free on any input.
//!
//! - A **beacon** is one JSON object of at most [`DATAGRAM_MAX`] bytes:
//!   `{"tether":1,"id":..,"host":..,"addr":..,"iface":..,"port":N,"seq":N,"uptime":N,
//!   "load":F,"mem_avail_kb":N,"temp_c":F|null[,"bye":true][,"nonce":".."],"facts":{..},
//!   "facts_omitted":N}`. Facts that do not fit are left out whole and counted.
//! - A **probe** is `TETHER? <nonce>` padded (with spaces or NULs) to 512 bytes. An answer
//!   is never larger than the probe it answers.
//! - [`fields`] walks the top-level members of a JSON object without allocating, for
//!   `tether scan` and the tests.

use super::json;
use super::wbuf::WBuf;
use crate::limits::DATAGRAM_MAX;
use core::fmt::Write;

pub const PROBE_PREFIX: &[u8] = b"TETHER? ";
/// Longest nonce echoed back in an answer.
pub const NONCE_MAX: usize = 64;

/// The fixed part of a beacon (facts come separately).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub id: &'a str,
    pub host: &'a str,
    pub addr: Option<core::net::Ipv4Addr>,
    pub iface: &'a str,
    pub port: u16,
    pub seq: u64,
    pub uptime: u64,
    pub load: f32,
    pub mem_avail_kb: u64,
    pub temp_c: Option<f32>,
    /// `"metrics":PORT`: the HTTP port serving `/metrics` (`--metrics`), when announced.
    pub metrics: Option<u16>,
    pub bye: bool,
    pub nonce: Option<&'a [u8]>,
}

/// Room kept free while adding facts, for `},"facts_omitted":NN}`.
const TAIL_RESERVE: usize = 24;

/// Encodes a beacon into `out`, using at most `max` bytes (≤ [`DATAGRAM_MAX`]).
/// Returns the length, or None when even the fixed fields do not fit.
pub fn encode<'f>(
    out: &mut [u8],
    max: usize,
    f: &Fields<'_>,
    facts: impl Iterator<Item = (&'f [u8], &'f [u8])>,
) -> Option<usize> {
    let cap = max.min(DATAGRAM_MAX).min(out.len());
    let mut w = WBuf::new(&mut out[..cap]);
    let head = (|| {
        w.write_str("{\"tether\":1,\"id\":")?;
        json::write_str(&mut w, f.id.as_bytes())?;
        w.write_str(",\"host\":")?;
        json::write_str(&mut w, f.host.as_bytes())?;
        match f.addr {
            Some(a) => write!(w, ",\"addr\":\"{a}\"")?,
            None => w.write_str(",\"addr\":null")?,
        }
        w.write_str(",\"iface\":")?;
        json::write_str(&mut w, f.iface.as_bytes())?;
        write!(
            w,
            ",\"port\":{},\"seq\":{},\"uptime\":{},\"load\":{:.2},\"mem_avail_kb\":{},\"temp_c\":",
            f.port, f.seq, f.uptime, f.load, f.mem_avail_kb
        )?;
        json::write_opt_f1(&mut w, f.temp_c)?;
        if let Some(m) = f.metrics {
            write!(w, ",\"metrics\":{m}")?;
        }
        if f.bye {
            w.write_str(",\"bye\":true")?;
        }
        if let Some(n) = f.nonce {
            w.write_str(",\"nonce\":")?;
            json::write_str(&mut w, n)?;
        }
        w.write_str(",\"facts\":{")
    })();
    if head.is_err() || w.remaining() < TAIL_RESERVE {
        return None;
    }
    let mut omitted = 0u32;
    let mut first = true;
    for (k, v) in facts {
        let mark = w.len();
        let r = (|| {
            if !first {
                w.write_char(',')?;
            }
            json::write_str(&mut w, k)?;
            w.write_char(':')?;
            json::write_str(&mut w, v)
        })();
        if r.is_err() || w.remaining() < TAIL_RESERVE {
            w.truncate(mark);
            omitted += 1;
        } else {
            first = false;
        }
    }
    write!(w, "}},\"facts_omitted\":{omitted}}}").ok()?;
    Some(w.len())
}

/// The nonce of a probe datagram, or None when `d` is not a probe.
pub fn parse_probe(d: &[u8]) -> Option<&[u8]> {
    let rest = d.strip_prefix(PROBE_PREFIX)?;
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(rest.len());
    let nonce = &rest[..end];
    let printable = nonce
        .iter()
        .all(|&c| c.is_ascii_graphic() && c != b'"' && c != b'\\');
    (!nonce.is_empty() && nonce.len() <= NONCE_MAX && printable).then_some(nonce)
}

/// Writes a probe for `nonce`, padded with spaces to [`DATAGRAM_MAX`] bytes.
pub fn write_probe(out: &mut [u8; DATAGRAM_MAX], nonce: &[u8]) -> usize {
    out.fill(b' ');
    let n = nonce.len().min(NONCE_MAX);
    out[..PROBE_PREFIX.len()].copy_from_slice(PROBE_PREFIX);
    out[PROBE_PREFIX.len()..PROBE_PREFIX.len() + n].copy_from_slice(&nonce[..n]);
    DATAGRAM_MAX
}

/// Does this datagram look like a beacon (as opposed to garbage)?
pub fn is_beacon(d: &[u8]) -> bool {
    d.starts_with(b"{\"tether\":")
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the JSON string starting at `s[i] == '"'`.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// End (exclusive) of the JSON value starting at `s[i]`. Nesting is bounded.
fn value_end(s: &[u8], i: usize, depth: u8) -> Option<usize> {
    match *s.get(i)? {
        b'"' => string_end(s, i),
        open @ (b'{' | b'[') => {
            if depth > 8 {
                return None;
            }
            let close = if open == b'{' { b'}' } else { b']' };
            let mut j = skip_ws(s, i + 1);
            if s.get(j) == Some(&close) {
                return Some(j + 1);
            }
            loop {
                if open == b'{' {
                    if s.get(j) != Some(&b'"') {
                        return None;
                    }
                    j = skip_ws(s, string_end(s, j)?);
                    if s.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(s, j + 1);
                }
                j = skip_ws(s, value_end(s, j, depth + 1)?);
                match s.get(j) {
                    Some(b',') => j = skip_ws(s, j + 1),
                    Some(c) if *c == close => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            let mut j = i;
            while j < s.len() && !matches!(s[j], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Iterates the top-level members of a JSON object: (raw key without quotes, raw value).
/// Stops (returns None) at the first syntax error.
pub fn fields(s: &[u8]) -> Fieldsiter<'_> {
    let i = skip_ws(s, 0);
    let ok = s.get(i) == Some(&b'{');
    Fieldsiter {
        s,
        i: if ok { skip_ws(s, i + 1) } else { s.len() },
        done: !ok,
    }
}

pub struct Fieldsiter<'a> {
    s: &'a [u8],
    i: usize,
    done: bool,
}

impl<'a> Iterator for Fieldsiter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let s = self.s;
        let res = (|| {
            let i = self.i;
            if s.get(i) == Some(&b'}') {
                return None;
            }
            if s.get(i) != Some(&b'"') {
                return None;
            }
            let kend = string_end(s, i)?;
            let key = &s[i + 1..kend - 1];
            let j = skip_ws(s, kend);
            if s.get(j) != Some(&b':') {
                return None;
            }
            let vstart = skip_ws(s, j + 1);
            let vend = value_end(s, vstart, 0)?;
            let mut k = skip_ws(s, vend);
            match s.get(k) {
                Some(b',') => k = skip_ws(s, k + 1),
                Some(b'}') => {}
                _ => return None,
            }
            self.i = k;
            Some((key, &s[vstart..vend]))
        })();
        if res.is_none() {
            self.done = true;
        }
        res
    }
}

/// A string value without its quotes (escapes left as they are).
pub fn unquote(v: &[u8]) -> Option<&[u8]> {
    v.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

/// Counts the members of a JSON object value.
pub fn count_members(v: &[u8]) -> usize {
    fields(v).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base<'a>() -> Fields<'a> {
        Fields {
            id: "0123456789abcdef",
            host: "pi-kitchen",
            addr: Some(core::net::Ipv4Addr::new(10, 9, 8, 7)),
            iface: "eth0",
            port: 4545,
            seq: 7,
            uptime: 1234,
            load: 0.25,
            mem_avail_kb: 345678,
            temp_c: Some(48.3),
            metrics: Some(9545),
            bye: false,
            nonce: None,
        }
    }

    #[test]
    fn encodes_and_walks_back() {
        let mut out = [0u8; 512];
        let facts = [(b"room".as_slice(), b"kitchen".as_slice())];
        let n = encode(&mut out, 512, &base(), facts.iter().copied()).unwrap();
        let d = &out[..n];
        assert!(is_beacon(d));
        let m: Vec<_> = fields(d).collect();
        let get = |k: &[u8]| m.iter().find(|(kk, _)| *kk == k).map(|x| x.1);
        assert_eq!(get(b"tether"), Some(b"1".as_slice()));
        assert_eq!(get(b"addr"), Some(b"\"10.9.8.7\"".as_slice()));
        assert_eq!(get(b"seq"), Some(b"7".as_slice()));
        assert_eq!(get(b"temp_c"), Some(b"48.3".as_slice()));
        assert_eq!(get(b"metrics"), Some(b"9545".as_slice()));
        assert_eq!(get(b"facts"), Some(b"{\"room\":\"kitchen\"}".as_slice()));
        assert_eq!(get(b"facts_omitted"), Some(b"0".as_slice()));
        assert_eq!(count_members(get(b"facts").unwrap()), 1);
    }

    #[test]
    fn facts_that_do_not_fit_are_left_out_whole() {
        let v = [b'v'; 64];
        let keys: Vec<String> = (0..32).map(|i| format!("key{i:02}")).collect();
        let facts: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_bytes(), &v[..])).collect();
        let mut out = [0u8; 512];
        let n = encode(&mut out, 512, &base(), facts.iter().copied()).unwrap();
        assert!(n <= 512);
        let d = &out[..n];
        let m: Vec<_> = fields(d).collect();
        let facts_v = m.iter().find(|(k, _)| *k == b"facts").unwrap().1;
        let kept = count_members(facts_v);
        let omitted = m.iter().find(|(k, _)| *k == b"facts_omitted").unwrap().1;
        assert!((1..32).contains(&kept));
        assert_eq!(
            core::str::from_utf8(omitted).unwrap(),
            (32 - kept).to_string()
        );
        // Every kept value is whole.
        for (_, val) in fields(facts_v) {
            assert_eq!(val.len(), 66);
        }
        // A smaller budget (a short probe) still gives valid, smaller JSON.
        let n2 = encode(&mut out, 300, &base(), facts.iter().copied()).unwrap();
        assert!(n2 <= 300);
        assert!(fields(&out[..n2]).any(|(k, _)| k == b"facts_omitted"));
        assert!(encode(&mut out, 100, &base(), facts.iter().copied()).is_none());
    }

    #[test]
    fn probes() {
        let mut p = [0u8; 512];
        let n = write_probe(&mut p, b"abc123");
        assert_eq!(n, 512);
        assert_eq!(parse_probe(&p), Some(b"abc123".as_slice()));
        assert_eq!(parse_probe(b"TETHER? x\0\0\0"), Some(b"x".as_slice()));
        assert_eq!(parse_probe(b"TETHER? "), None);
        assert_eq!(parse_probe(b"HELLO"), None);
        assert_eq!(parse_probe(b"TETHER? a\"b"), None);
    }

    #[test]
    fn walker_survives_garbage() {
        for s in [
            &b"{"[..],
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\":{\"b\":[1,2,{\"c\":\"\\\"\"}]},\"d\":true}",
            b"{\"a\":\"\\",
            b"[[[[[[[[[[[[[[[[[[[[",
            b"{\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}",
        ] {
            let _ = fields(s).count();
        }
        let v: Vec<_> = fields(b"{\"a\":{\"b\":[1,2,{\"c\":\"\\\"\"}]},\"d\":true}").collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], (b"d".as_slice(), b"true".as_slice()));
    }
}
