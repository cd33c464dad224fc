//! The beacon datagram and the scan probe, both directions. Pure, panic-free on any input.
//!
//! - A **beacon** is one JSON object of at most [`DATAGRAM_MAX`] bytes:
//!   `{"tether":1,"id":..,"host":..,"addr":..,"iface":..,"port":N,"seq":N,"run":"<16 hex>",
//!   "uptime":N,"load":F,"mem_avail_kb":N,"temp_c":F|null[,"metrics":N][,"bye":true][,"nonce":".."],
//!   "facts":{..},"facts_omitted":N[,"sig":"<64 hex>"]}`. Facts that do not fit are left
//!   out whole and counted.
//! - **Signing** (a fleet key): the tag is always the last member, `,"sig":"<64 hex>"`
//!   right before the closing `}`. It is HMAC-SHA256(key, the datagram with exactly those
//!   73 bytes removed), i.e. over the unsigned beacon. [`verify`] classifies a datagram
//!   ([`Trust`]); it is pure and fuzzed.
//! - A **probe** is `TETHER? <nonce>` padded (with spaces or NULs) to 512 bytes. An answer
//!   is never larger than the probe it answers.
//! - [`fields`] walks the top-level members of a JSON object without allocating, for
//!   `tether scan` and the tests.

use super::fixed::Fixed;
use super::wbuf::WBuf;
use super::{hex, json};
use crate::crypto;
use crate::limits::{DATAGRAM_MAX, FLEET_KEY_MAX, FLEET_KEY_MIN};
use core::fmt::Write;
use core::net::IpAddr;

pub const PROBE_PREFIX: &[u8] = b"TETHER? ";
pub use crate::limits::NONCE_MAX;

/// The fixed part of a beacon (facts come separately).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub id: &'a str,
    pub host: &'a str,
    /// The datagram's source address (IPv6 without a scope: a scope is local to a host).
    pub addr: Option<IpAddr>,
    pub iface: &'a str,
    pub port: u16,
    pub seq: u64,
    /// Random per agent start (16 hex digits): tells clones and restarts apart.
    pub run: Option<&'a str>,
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
    // The host name gives way before the beacon does: a long name of characters written
    // as `\uXXXX` escapes (up to 6 bytes each) beside a long interface name, a nonce and a
    // signature would not fit otherwise. Measured without it, then cut (whole characters)
    // to the room left.
    if write_head(&mut w, f, f.host).is_err() || w.remaining() < TAIL_RESERVE {
        w.truncate(0);
        write_head(&mut w, f, "").ok()?;
        let room = (w.remaining() + 2).checked_sub(TAIL_RESERVE)?;
        w.truncate(0);
        write_head(&mut w, f, json::prefix_within(f.host, room)).ok()?;
        if w.remaining() < TAIL_RESERVE {
            return None;
        }
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

/// The fixed fields of a beacon up to the opening of `"facts"`, with `host` for its host.
fn write_head(w: &mut WBuf<'_>, f: &Fields<'_>, host: &str) -> core::fmt::Result {
    w.write_str("{\"tether\":1,\"id\":")?;
    json::write_str(w, f.id.as_bytes())?;
    w.write_str(",\"host\":")?;
    json::write_str(w, host.as_bytes())?;
    match f.addr {
        Some(a) => write!(w, ",\"addr\":\"{a}\"")?,
        None => w.write_str(",\"addr\":null")?,
    }
    w.write_str(",\"iface\":")?;
    json::write_str(w, f.iface.as_bytes())?;
    write!(w, ",\"port\":{},\"seq\":{}", f.port, f.seq)?;
    if let Some(r) = f.run {
        w.write_str(",\"run\":")?;
        json::write_str(w, r.as_bytes())?;
    }
    write!(
        w,
        ",\"uptime\":{},\"load\":{},\"mem_avail_kb\":{},\"temp_c\":",
        f.uptime,
        Fixed(f.load.into(), 2),
        f.mem_avail_kb
    )?;
    json::write_opt_f1(w, f.temp_c)?;
    if let Some(m) = f.metrics {
        write!(w, ",\"metrics\":{m}")?;
    }
    if f.bye {
        w.write_str(",\"bye\":true")?;
    }
    if let Some(n) = f.nonce {
        w.write_str(",\"nonce\":")?;
        json::write_str(w, n)?;
    }
    w.write_str(",\"facts\":{")
}

/// Bytes the tag adds: `,"sig":"` + 64 hex digits + `"` (the closing `}` is shared).
pub const SIG_OVERHEAD: usize = 8 + 64 + 1;
const SIG_HEAD: &[u8] = b",\"sig\":\"";

/// A fleet key: the key file's contents with surrounding whitespace trimmed, between
/// [`FLEET_KEY_MIN`] and [`FLEET_KEY_MAX`] bytes. Fixed size: no heap.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetKey(heapless::Vec<u8, FLEET_KEY_MAX>);

/// Why a key file's contents are not a usable fleet key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Shorter than [`FLEET_KEY_MIN`] bytes after trimming (the length is given).
    Short(usize),
    /// Longer than [`FLEET_KEY_MAX`] bytes after trimming.
    Long,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::Short(n) => write!(
                f,
                "the key is {n} bytes; at least {FLEET_KEY_MIN} are needed (e.g. `head -c 32 /dev/urandom | base64`)"
            ),
            KeyError::Long => write!(f, "the key is longer than {FLEET_KEY_MAX} bytes"),
        }
    }
}

impl FleetKey {
    /// The key in a key file's raw contents.
    pub fn parse(raw: &[u8]) -> Result<FleetKey, KeyError> {
        let k = raw.trim_ascii();
        if k.len() < FLEET_KEY_MIN {
            return Err(KeyError::Short(k.len()));
        }
        heapless::Vec::from_slice(k)
            .map(FleetKey)
            .map_err(|_| KeyError::Long)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FleetKey({} bytes)", self.0.len())
    }
}

/// Appends the tag to the unsigned beacon `out[..n]` (which ends with `}`). Returns the
/// new length, or None when `out` has no room for [`SIG_OVERHEAD`] more bytes.
pub fn sign(out: &mut [u8], n: usize, key: &FleetKey) -> Option<usize> {
    if n == 0 || out.get(n - 1) != Some(&b'}') || out.len() < n + SIG_OVERHEAD {
        return None;
    }
    let tag = crypto::hmac_sha256(key.as_bytes(), &[&out[..n]]);
    let at = n - 1;
    out[at..at + SIG_HEAD.len()].copy_from_slice(SIG_HEAD);
    let h = at + SIG_HEAD.len();
    hex::encode(&tag, &mut out[h..h + 64]);
    out[h + 64..h + 66].copy_from_slice(b"\"}");
    Some(n + SIG_OVERHEAD)
}

/// [`encode`], then [`sign`] when there is a key: facts give way to the tag, so the
/// signed datagram still fits in `max` bytes.
pub fn encode_signed<'f>(
    out: &mut [u8],
    max: usize,
    f: &Fields<'_>,
    facts: impl Iterator<Item = (&'f [u8], &'f [u8])>,
    key: Option<&FleetKey>,
) -> Option<usize> {
    let Some(key) = key else {
        return encode(out, max, f, facts);
    };
    let n = encode(out, max.checked_sub(SIG_OVERHEAD)?, f, facts)?;
    sign(out, n, key)
}

/// How far a datagram can be believed (`tether scan --fleet-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trust {
    /// The tag is valid and the embedded address is the datagram's source.
    Signed,
    /// No tag.
    Unsigned,
    /// A tag that is not the key's (wrong key, altered byte, malformed tag).
    Forged,
    /// A valid tag on a datagram that was re-sent: from another address than the one it
    /// names, answering another scan's nonce, or (decided by the caller, who remembers)
    /// repeating a run's seq.
    Replayed,
    /// No key to check with.
    Unchecked,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Signed => "signed",
            Trust::Unsigned => "unsigned",
            Trust::Forged => "forged",
            Trust::Replayed => "replayed",
            Trust::Unchecked => "unchecked",
        }
    }
}

/// Classifies beacon datagram `d` that arrived from `source`. `nonce` is the scanner's
/// own probe nonce: a signed answer to any other nonce was captured and re-sent.
/// Pure: no I/O, no heap, no panic on any input (fuzzed).
///
/// `source` is compared with the embedded `addr` as an address only: an IPv6 source's
/// scope (the interface it arrived on, local to the receiver) is not part of it.
pub fn verify(d: &[u8], key: &FleetKey, source: IpAddr, nonce: Option<&[u8]>) -> Trust {
    let mut has_sig = false;
    let mut addr = None;
    let mut their_nonce = None;
    for (k, v) in fields(d) {
        match k {
            b"sig" => has_sig = true,
            b"addr" => addr = unquote(v),
            b"nonce" => their_nonce = unquote(v),
            _ => {}
        }
    }
    let n = d.len();
    // A tag in its place counts even when an altered byte broke the JSON around it: one
    // changed byte cannot spoil both the `,"sig":"` head and the `<64 hex>"}` tail.
    let at = n.checked_sub(SIG_OVERHEAD + 1);
    has_sig |= at.is_some_and(|at| {
        d[at..].starts_with(SIG_HEAD)
            || (d[n - 2..] == *b"\"}" && hex::decode_lower(&d[n - 66..n - 2], &mut [0u8; 32]))
    });
    if !has_sig {
        return Trust::Unsigned;
    }
    let Some(at) = at else {
        return Trust::Forged;
    };
    let mut tag = [0u8; 32];
    let well_formed = d[at..].starts_with(SIG_HEAD)
        && d[n - 2..] == *b"\"}"
        && hex::decode_lower(&d[at + SIG_HEAD.len()..n - 2], &mut tag);
    if !well_formed || !crypto::hmac_verify(key.as_bytes(), &[&d[..at], b"}"], &tag) {
        return Trust::Forged;
    }
    let named = addr
        .and_then(|a| core::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<IpAddr>().ok());
    let foreign_nonce = matches!((their_nonce, nonce), (Some(t), Some(o)) if t != o);
    if named != Some(source) || foreign_nonce {
        return Trust::Replayed;
    }
    Trust::Signed
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
            addr: Some(IpAddr::from([10, 9, 8, 7])),
            iface: "eth0",
            port: 4545,
            seq: 7,
            run: Some("00112233aabbccdd"),
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
    fn the_host_gives_way_so_the_longest_fixed_fields_still_fit_a_signed_answer() {
        // Every fixed field at its longest: a 64-byte host of two-byte characters (each
        // written as a 6-byte escape), a 15-byte interface escaped at worst (an `--iface`
        // name has no control character: `é`s, 3 times their bytes,
        // limits::JSON_ESCAPE_TEXT_MAX_FACTOR), the longest IPv6 address and numbers, a
        // 64-byte nonce, `--metrics` and a signature, in a 512-byte answer.
        let nonce = [b'n'; NONCE_MAX];
        let host = "é".repeat(32);
        let iface = format!("{}x", "é".repeat(7));
        assert_eq!(iface.len(), crate::limits::IFNAME_MAX);
        let f = Fields {
            host: &host,
            addr: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
            iface: &iface,
            port: 65535,
            seq: u64::MAX,
            uptime: u64::MAX,
            load: 99999.99,
            mem_avail_kb: u64::MAX,
            temp_c: Some(-273.1),
            metrics: Some(65535),
            nonce: Some(&nonce),
            ..base()
        };
        let key = FleetKey::parse(b"fleet-key-number-one-0123456789").unwrap();
        let mut out = [0u8; DATAGRAM_MAX];
        let facts = [(b"room".as_slice(), b"kitchen".as_slice())];
        let n = encode_signed(
            &mut out,
            DATAGRAM_MAX,
            &f,
            facts.iter().copied(),
            Some(&key),
        )
        .expect("the fixed fields always fit");
        let d = &out[..n];
        let src = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(verify(d, &key, src, Some(&nonce)), Trust::Signed);
        let v: serde_json::Value = serde_json::from_slice(d).unwrap();
        // With the interface escaped at worst, the host gives way whole (with an ASCII
        // name, part of it fits: below); every other field stays.
        let cut = v["host"].as_str().unwrap();
        assert!(host.starts_with(cut) && cut.len() < host.len(), "{cut}");
        assert_eq!(v["iface"], iface.as_str());
        assert_eq!(v["facts_omitted"], 1, "facts give way first");
        // With an ASCII interface name part of the host stays; a host that fits is never
        // cut.
        let ascii = Fields {
            iface: "enx0123456789ab",
            ..f
        };
        let n = encode_signed(&mut out, DATAGRAM_MAX, &ascii, [].into_iter(), Some(&key)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out[..n]).unwrap();
        let cut = v["host"].as_str().unwrap();
        assert!(!cut.is_empty() && host.starts_with(cut), "{cut}");
        let f = Fields {
            host: "pi-küche",
            ..ascii
        };
        let n = encode_signed(&mut out, DATAGRAM_MAX, &f, [].into_iter(), Some(&key)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out[..n]).unwrap();
        assert_eq!(v["host"], "pi-küche");
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
    fn signed_beacons_verify_and_every_change_is_caught() {
        let key = FleetKey::parse(b"  0123456789abcdef-fleet\n").unwrap();
        let other = FleetKey::parse(b"another key, 16+ bytes").unwrap();
        assert_eq!(FleetKey::parse(b" short \n"), Err(KeyError::Short(5)));
        assert_eq!(FleetKey::parse(&[b'k'; 300]), Err(KeyError::Long));
        let src = IpAddr::from([10, 9, 8, 7]);
        let v = [b'v'; 60];
        let keys: Vec<String> = (0..8).map(|i| format!("key{i}")).collect();
        let facts: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_bytes(), &v[..])).collect();
        let mut out = [0u8; 512];
        let n = encode_signed(&mut out, 512, &base(), facts.iter().copied(), Some(&key)).unwrap();
        assert!(n <= 512);
        let d = &out[..n];
        let m: Vec<_> = fields(d).collect();
        assert_eq!(m.last().unwrap().0, b"sig");
        assert_eq!(
            m.iter().find(|x| x.0 == b"run").unwrap().1,
            b"\"00112233aabbccdd\""
        );
        // Facts gave way to the tag, and are counted.
        let omitted = m.iter().find(|x| x.0 == b"facts_omitted").unwrap().1;
        assert_ne!(omitted, b"0");
        // The MAC is over the datagram without the tag: anyone can check it.
        let unsigned = [&d[..n - SIG_OVERHEAD - 1], b"}"].concat();
        let tag = crypto::hmac_sha256(key.as_bytes(), &[&unsigned]);
        let mut hex = [0u8; 64];
        hex::encode(&tag, &mut hex);
        assert_eq!(&d[n - 66..n - 2], &hex);

        assert_eq!(verify(d, &key, src, None), Trust::Signed);
        assert_eq!(verify(d, &other, src, None), Trust::Forged);
        assert_eq!(
            verify(d, &key, IpAddr::from([10, 9, 8, 8]), None),
            Trust::Replayed
        );
        for i in 0..n {
            let mut bad = d.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(verify(&bad, &key, src, None), Trust::Forged, "byte {i}");
        }
        assert_ne!(verify(&d[..n - 1], &key, src, None), Trust::Signed);
        assert_eq!(verify(&unsigned, &key, src, None), Trust::Unsigned);
        // A signed probe answer is only believed by the scan that sent the nonce.
        let f = Fields {
            nonce: Some(b"mine"),
            ..base()
        };
        let n = encode_signed(&mut out, 400, &f, facts.iter().copied(), Some(&key)).unwrap();
        assert!(n <= 400);
        assert_eq!(verify(&out[..n], &key, src, Some(b"mine")), Trust::Signed);
        assert_eq!(
            verify(&out[..n], &key, src, Some(b"theirs")),
            Trust::Replayed
        );
        assert!(encode_signed(&mut out, 250, &f, facts.iter().copied(), Some(&key)).is_none());
    }

    #[test]
    fn ipv6_beacons_sign_their_unscoped_source_address() {
        let key = FleetKey::parse(b"0123456789abcdef-fleet").unwrap();
        let ll: IpAddr = "fe80::5054:ff:fe12:3456".parse().unwrap();
        let f = Fields {
            addr: Some(ll),
            ..base()
        };
        let mut out = [0u8; 512];
        let n = encode_signed(&mut out, 512, &f, core::iter::empty(), Some(&key)).unwrap();
        let d = &out[..n];
        let m: Vec<_> = fields(d).collect();
        let addr = m.iter().find(|x| x.0 == b"addr").unwrap().1;
        assert_eq!(addr, b"\"fe80::5054:ff:fe12:3456\"", "no scope inside");
        assert_eq!(verify(d, &key, ll, None), Trust::Signed);
        let other: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(verify(d, &key, other, None), Trust::Replayed);
        assert_eq!(
            verify(d, &key, IpAddr::from([10, 9, 8, 7]), None),
            Trust::Replayed
        );
    }

    #[test]
    fn a_tag_made_by_another_hmac_implementation_verifies() {
        // fuzz/seeds/verify/signed was signed by Python's hmac module following the
        // README's rule: byte 0 = key length - 16, the key, then the datagram.
        let seed = include_bytes!("../../fuzz/seeds/verify/signed");
        let klen = 16 + usize::from(seed[0]);
        let key = FleetKey::parse(&seed[1..1 + klen]).unwrap();
        let d = &seed[1 + klen..];
        assert_eq!(
            verify(d, &key, IpAddr::from([10, 0, 0, 1]), None),
            Trust::Signed
        );
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
