//! One request line -> [`Request`]. Command words are case-insensitive; words are
//! separated by spaces. Arguments are validated here, so the core only ever sees
//! well-formed keys, values and numbers.

use super::reply::{ErrCode, Error};
use super::swar;
use crate::limits::{
    IDENTIFY_MAX_SECS, INTERVAL_MAX_SECS, INTERVAL_MIN_SECS, KEY_MAX, TTL_MAX_SECS, VALUE_MAX,
};

/// `repr(u8)`: a tag byte, so telling the variants apart on the hot path is one compare
/// (the default layout keeps the tag in a niche of a slice pointer and needed several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Request<'a> {
    Ping,
    Help,
    Status,
    Get(&'a [u8]),
    Keys,
    Set {
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<u32>,
    },
    Del(&'a [u8]),
    Interval(Option<u32>),
    Identify(Option<u32>),
    Stats,
    Sockets,
    /// `AUTH` alone asks for a challenge; `AUTH <arg>` answers one (or is a plain token).
    Auth(Option<&'a [u8]>),
    Quit,
}

impl Request<'_> {
    /// Does this request change state (and so need AUTH over TCP)?
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Request::Set { .. }
                | Request::Del(_)
                | Request::Interval(Some(_))
                | Request::Identify(_)
        )
    }
}

#[derive(Clone, Copy)]
enum Cmd {
    Ping,
    Help,
    Status,
    Get,
    Keys,
    Set,
    Del,
    Interval,
    Identify,
    Stats,
    Sockets,
    Auth,
    Quit,
}

/// The command table: one row per command, in the order HELP lists them.
const COMMANDS: [(&str, Cmd); 13] = [
    ("PING", Cmd::Ping),
    ("HELP", Cmd::Help),
    ("STATUS", Cmd::Status),
    ("GET", Cmd::Get),
    ("KEYS", Cmd::Keys),
    ("SET", Cmd::Set),
    ("DEL", Cmd::Del),
    ("INTERVAL", Cmd::Interval),
    ("IDENTIFY", Cmd::Identify),
    ("STATS", Cmd::Stats),
    ("SOCKETS", Cmd::Sockets),
    ("AUTH", Cmd::Auth),
    ("QUIT", Cmd::Quit),
];

/// A command word folded to a number: its first 8 bytes, byte 0 lowest (as
/// [`swar::head`] reads them), each with bit 5 cleared (ASCII upper case for letters).
/// Command names are letters only, at most 8 of them, and a byte folds to a given capital
/// letter only if it is that letter in either case, so a word of the same length with an
/// equal key is the same command, case aside (a longer word never has a command's length).
const fn fold(w: &[u8]) -> u64 {
    let mut k = 0;
    let mut i = 0;
    while i < w.len() && i < 8 {
        k |= ((w[i] & !0x20) as u64) << (8 * i);
        i += 1;
    }
    k
}

/// [`fold`] of the first `n` bytes (at most 8) of a word whose [`swar::head`] is `head`.
#[inline(always)]
fn fold_head(head: u64, n: usize) -> u64 {
    swar::keep(head, n) & !0x2020_2020_2020_2020
}

/// [`COMMANDS`] folded once, at compile time, with their lengths: finding a command
/// compares integers, with no per-byte call.
const FOLDED: [(u64, usize, Cmd); COMMANDS.len()] = {
    let mut t = [(0, 0, Cmd::Ping); COMMANDS.len()];
    let mut i = 0;
    while i < COMMANDS.len() {
        let name = COMMANDS[i].0.as_bytes();
        t[i] = (fold(name), name.len(), COMMANDS[i].1);
        i += 1;
    }
    t
};

/// The HELP payload.
pub const HELP: &str =
    "PING HELP STATUS GET KEYS SET DEL INTERVAL IDENTIFY STATS SOCKETS AUTH QUIT";

const E_EMPTY: Error = Error::new(ErrCode::BadCommand, "empty line");
const E_UNKNOWN: Error = Error::new(ErrCode::BadCommand, "unknown command, try HELP");
const E_NO_ARGS: Error = Error::new(ErrCode::BadArgument, "this command takes no argument");
const E_KEY: Error = Error::new(
    ErrCode::BadArgument,
    crate::limit_text!("key must be 1-", { KEY_MAX }, " bytes of A-Z a-z 0-9 _ . -"),
);
const E_VALUE: Error = Error::new(
    ErrCode::BadArgument,
    crate::limit_text!(
        "value must be 1-",
        { VALUE_MAX },
        " bytes of printable ASCII"
    ),
);
const E_TTL: Error = Error::new(
    ErrCode::BadArgument,
    crate::limit_text!("ttl must be 1-", { TTL_MAX_SECS }, " seconds"),
);
const E_USAGE_GET: Error = Error::new(ErrCode::BadArgument, "usage: GET key");
const E_USAGE_DEL: Error = Error::new(ErrCode::BadArgument, "usage: DEL key");
const E_USAGE_SET: Error = Error::new(ErrCode::BadArgument, "usage: SET key value [ttl=SECS]");
const E_INTERVAL: Error = Error::new(
    ErrCode::BadArgument,
    crate::limit_text!(
        "interval must be ",
        { INTERVAL_MIN_SECS },
        "-",
        { INTERVAL_MAX_SECS },
        " seconds"
    ),
);
const E_IDENTIFY: Error = Error::new(
    ErrCode::BadArgument,
    crate::limit_text!("identify takes 0-", { IDENTIFY_MAX_SECS }, " seconds"),
);

fn trim(s: &[u8]) -> &[u8] {
    let (mut a, mut b) = (0, s.len());
    while a < b && s[a] == b' ' {
        a += 1;
    }
    while b > a && s[b - 1] == b' ' {
        b -= 1;
    }
    &s[a..b]
}

/// Splits off the first space-separated word: (word, rest with leading spaces removed).
fn word(s: &[u8]) -> (&[u8], &[u8]) {
    let mut a = 0;
    while a < s.len() && s[a] == b' ' {
        a += 1;
    }
    let mut b = a;
    while b < s.len() && s[b] != b' ' {
        b += 1;
    }
    (&s[a..b], trim(&s[b..]))
}

/// The command word, its [`fold`], and the rest of the line (trimmed). A line with no
/// space in its first 8 bytes, or one of 8 bytes or fewer (every command, without
/// leading spaces), is split with one load ([`swar`]); anything else by [`word`].
#[inline(always)]
fn command(line: &[u8]) -> (&[u8], u64, &[u8]) {
    let head = swar::head(line);
    let end = match swar::find(head, b' ') {
        Some(n) if n > 0 => n,
        None if line.len() <= 8 => line.len(),
        _ => {
            let (w, rest) = word(line);
            return (w, fold(w), rest);
        }
    };
    let rest = if end == line.len() {
        &[][..]
    } else {
        trim(&line[end..])
    };
    (&line[..end], fold_head(head, end), rest)
}

/// A decimal u32 with no sign, no spaces and no overflow.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(v)
}

pub fn valid_key(k: &[u8]) -> bool {
    !k.is_empty()
        && k.len() <= KEY_MAX
        && k.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

pub fn valid_value(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= VALUE_MAX && v.iter().all(|&c| (0x20..=0x7e).contains(&c))
}

fn one_key(rest: &[u8], usage: Error) -> Result<&[u8], Error> {
    let (k, extra) = word(rest);
    if k.is_empty() || !extra.is_empty() {
        return Err(usage);
    }
    if !valid_key(k) {
        return Err(E_KEY);
    }
    Ok(k)
}

fn opt_number(rest: &[u8], lo: u32, hi: u32, err: Error) -> Result<Option<u32>, Error> {
    let (n, extra) = word(rest);
    if n.is_empty() {
        return Ok(None);
    }
    if !extra.is_empty() {
        return Err(err);
    }
    match parse_u32(n) {
        Some(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
        _ => Err(err),
    }
}

fn parse_set(rest: &[u8]) -> Result<Request<'_>, Error> {
    let (key, mut value) = word(rest);
    if key.is_empty() || value.is_empty() {
        return Err(E_USAGE_SET);
    }
    if !valid_key(key) {
        return Err(E_KEY);
    }
    let mut ttl = None;
    // A last word `ttl=N` is the time to live, not part of the value (`ttl=` alone too: a
    // TTL left out, not a value that ends in "ttl=").
    let last_start = value.iter().rposition(|&b| b == b' ').map_or(0, |i| i + 1);
    let last = &value[last_start..];
    if last.len() >= 4 && last[..4].eq_ignore_ascii_case(b"ttl=") {
        match parse_u32(&last[4..]) {
            Some(t) if (1..=TTL_MAX_SECS).contains(&t) => ttl = Some(t),
            _ => return Err(E_TTL),
        }
        value = trim(&value[..last_start]);
        if value.is_empty() {
            return Err(E_USAGE_SET);
        }
    }
    if !valid_value(value) {
        return Err(E_VALUE);
    }
    Ok(Request::Set { key, value, ttl })
}

/// Parses one request line (terminator already removed).
#[inline(always)]
pub fn parse(line: &[u8]) -> Result<Request<'_>, Error> {
    let (cmd_word, key, rest) = command(line);
    if cmd_word.is_empty() {
        return Err(E_EMPTY);
    }
    let mut i = 0;
    let cmd = loop {
        match FOLDED.get(i) {
            Some(&(k, n, c)) if k == key && n == cmd_word.len() => break c,
            Some(_) => i += 1,
            None => return Err(E_UNKNOWN),
        }
    };
    let no_args = |r: Request<'static>| {
        if rest.is_empty() {
            Ok(r)
        } else {
            Err(E_NO_ARGS)
        }
    };
    match cmd {
        Cmd::Ping => no_args(Request::Ping),
        Cmd::Help => no_args(Request::Help),
        Cmd::Status => no_args(Request::Status),
        Cmd::Keys => no_args(Request::Keys),
        Cmd::Stats => no_args(Request::Stats),
        Cmd::Sockets => no_args(Request::Sockets),
        Cmd::Quit => no_args(Request::Quit),
        Cmd::Get => one_key(rest, E_USAGE_GET).map(Request::Get),
        Cmd::Del => one_key(rest, E_USAGE_DEL).map(Request::Del),
        Cmd::Set => parse_set(rest),
        Cmd::Interval => opt_number(rest, INTERVAL_MIN_SECS, INTERVAL_MAX_SECS, E_INTERVAL)
            .map(Request::Interval),
        Cmd::Identify => opt_number(rest, 0, IDENTIFY_MAX_SECS, E_IDENTIFY).map(Request::Identify),
        Cmd::Auth => Ok(Request::Auth((!rest.is_empty()).then_some(rest))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(l: &[u8]) -> ErrCode {
        parse(l).unwrap_err().code
    }

    #[test]
    fn commands_are_case_insensitive() {
        assert_eq!(parse(b"ping"), Ok(Request::Ping));
        assert_eq!(parse(b"  PiNg  "), Ok(Request::Ping));
        assert_eq!(parse(b"status"), Ok(Request::Status));
        assert_eq!(code(b"PINGX"), ErrCode::BadCommand);
        assert_eq!(code(b""), ErrCode::BadCommand);
        assert_eq!(code(b"PING extra"), ErrCode::BadArgument);
    }

    #[test]
    fn folding_matches_letters_only() {
        for (name, _) in COMMANDS {
            assert!(name.len() <= 8 && name.bytes().all(|b| b.is_ascii_uppercase()));
            assert_eq!(fold(name.as_bytes()), fold(name.to_lowercase().as_bytes()));
        }
        // Bytes one bit 5 away from a letter that are not letters: no match.
        assert_eq!(code(b"P\x09NG"), ErrCode::BadCommand);
        assert_eq!(code(b"\xd0ING"), ErrCode::BadCommand);
        assert_eq!(code(b"PIN"), ErrCode::BadCommand);
        assert_eq!(code(b"PINGPINGPING"), ErrCode::BadCommand);
        // A longer word whose last 8 bytes are a command folds like it; its length differs.
        assert_eq!(code(b"AAAAIDENTIFY"), ErrCode::BadCommand);
        assert_eq!(code(b"xping"), ErrCode::BadCommand);
        // An 8-byte word has no spare bits for its length: a non-letter last byte must
        // not pass for a letter (0xCC is 'L' with bit 7 set).
        assert_eq!(code(b"INTERVA\xcc"), ErrCode::BadCommand);
        assert_eq!(code(b"PING\0"), ErrCode::BadCommand);
        assert_eq!(parse(b"IdEnTiFy"), Ok(Request::Identify(None)));
    }

    #[test]
    fn the_eight_byte_command_split_agrees_with_the_plain_one() {
        // Every line of up to 10 bytes over an alphabet with spaces, letters in both
        // cases, a zero byte (the padding of `swar::head`) and high bytes.
        let alphabet = [b' ', b'p', b'I', b'\0', b'\n', 0xa0, 0xc9, b'g'];
        let mut line = Vec::new();
        for len in 0..=10u32 {
            for n in 0..alphabet.len().pow(len.min(6)) {
                line.clear();
                let mut k = n;
                for i in 0..len as usize {
                    // Past six bytes, one byte more each: lines longer than eight, with a
                    // space right after eight bytes or not.
                    line.push(alphabet[if i < 6 { k } else { n / 5 + i } % alphabet.len()]);
                    k /= alphabet.len();
                }
                let (w, rest) = word(&line);
                assert_eq!(command(&line), (w, fold(w), rest), "{line:?}");
            }
        }
    }

    #[test]
    fn set_with_spaces_and_ttl() {
        assert_eq!(
            parse(b"SET room kitchen   north ttl=30"),
            Ok(Request::Set {
                key: b"room",
                value: b"kitchen   north",
                ttl: Some(30)
            })
        );
        assert_eq!(
            parse(b"set a.b-c_d 1"),
            Ok(Request::Set {
                key: b"a.b-c_d",
                value: b"1",
                ttl: None
            })
        );
        assert_eq!(code(b"SET k"), ErrCode::BadArgument);
        assert_eq!(code(b"SET k ttl=5"), ErrCode::BadArgument);
        assert_eq!(code(b"SET k v ttl=0"), ErrCode::BadArgument);
        assert_eq!(code(b"SET k v ttl=x"), ErrCode::BadArgument);
        assert_eq!(code(b"SET k v ttl="), ErrCode::BadArgument);
        assert_eq!(code(b"SET k v TTL="), ErrCode::BadArgument);
        assert_eq!(code(b"SET k/x v"), ErrCode::BadArgument);
        assert_eq!(
            code(&[b"SET k ".as_slice(), &[b'v'; 65]].concat()),
            ErrCode::BadArgument
        );
        assert_eq!(code(b"SET k v\x01"), ErrCode::BadArgument);
        let long_key = [b"GET ".as_slice(), &[b'k'; 33]].concat();
        assert_eq!(code(&long_key), ErrCode::BadArgument);
    }

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse(b"INTERVAL"), Ok(Request::Interval(None)));
        assert_eq!(parse(b"interval 10"), Ok(Request::Interval(Some(10))));
        assert_eq!(code(b"INTERVAL 0"), ErrCode::BadArgument);
        assert_eq!(code(b"INTERVAL -1"), ErrCode::BadArgument);
        assert_eq!(code(b"INTERVAL 99999999999"), ErrCode::BadArgument);
        assert_eq!(parse(b"IDENTIFY 0"), Ok(Request::Identify(Some(0))));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
    }

    #[test]
    fn mutating_commands() {
        assert!(parse(b"SET a b").unwrap().mutates());
        assert!(parse(b"DEL a").unwrap().mutates());
        assert!(parse(b"INTERVAL 3").unwrap().mutates());
        assert!(!parse(b"INTERVAL").unwrap().mutates());
        assert!(parse(b"IDENTIFY").unwrap().mutates());
        assert!(!parse(b"GET a").unwrap().mutates());
        assert!(!parse(b"AUTH").unwrap().mutates());
    }

    #[test]
    fn auth_alone_asks_for_a_challenge() {
        assert_eq!(parse(b"AUTH"), Ok(Request::Auth(None)));
        assert_eq!(parse(b"auth   "), Ok(Request::Auth(None)));
        assert_eq!(parse(b"AUTH 00ff"), Ok(Request::Auth(Some(b"00ff"))));
        assert_eq!(parse(b"AUTH a b "), Ok(Request::Auth(Some(b"a b"))));
    }
}
