//! Random input against the wire layer: about a million inputs (fixed seeds, so a
//! failure replays) through `proto::request::parse` and `proto::line::next_line`, none
//! may panic and every error is from the fixed set; then garbage and NUL bytes against a
//! live agent, which keeps answering.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;
use tether::proto::line::{next_line, Frame};
use tether::proto::request::{parse, valid_key, valid_value, Request};

const CODES: [&str; 8] = [
    "bad-command",
    "bad-argument",
    "not-found",
    "denied",
    "busy",
    "too-long",
    "full",
    "unsupported",
];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "PING",
    "help",
    "STATUS",
    "GET",
    "KEYS",
    "SET",
    "del",
    "INTERVAL",
    "IDENTIFY",
    "STATS",
    "SOCKETS",
    "AUTH",
    "QUIT",
    "ttl=",
    "ttl=5",
    "TTL=0",
    "ttl=31536001",
    "4294967295",
    "4294967296",
    "0",
    "3600",
    "3601",
    "-1",
    "k",
    "a.b-c_d",
    "\r",
    "\n",
    "\0",
    " ",
    "  ",
    "\u{7f}",
    "é",
    "\"",
    "\\",
];

/// Random bytes, or a mix of command words and bytes so the deep paths are reached.
fn input(r: &mut XorShift, buf: &mut Vec<u8>) {
    buf.clear();
    let len = match r.below(4) {
        0 => r.below(8),
        1 => r.below(40),
        2 => r.below(300),
        _ => 250 + r.below(12),
    };
    if r.below(2) == 0 {
        for _ in 0..len {
            buf.push(r.next() as u8);
        }
    } else {
        while buf.len() < len {
            match r.below(3) {
                0 => buf.extend_from_slice(WORDS[r.below(WORDS.len())].as_bytes()),
                1 => buf.push(b' '),
                _ => {
                    let alphabet = b"abcXYZ019_.-/:= ";
                    buf.push(alphabet[r.below(alphabet.len())]);
                }
            }
        }
    }
}

fn check_parse(b: &[u8]) {
    match parse(b) {
        Err(e) => assert!(CODES.contains(&e.code.as_str()), "{:?}", e.code),
        Ok(req) => match req {
            Request::Get(k) | Request::Del(k) => assert!(valid_key(k), "{b:?}"),
            Request::Set { key, value, ttl } => {
                assert!(valid_key(key) && valid_value(value), "{b:?}");
                assert!(ttl.is_none_or(|t| (1..=31_536_000).contains(&t)), "{b:?}");
            }
            Request::Interval(Some(n)) => assert!((1..=3600).contains(&n), "{b:?}"),
            Request::Identify(Some(n)) => assert!(n <= 3600, "{b:?}"),
            Request::Auth(Some(t)) => assert!(
                !t.is_empty() && t[0] != b' ' && t[t.len() - 1] != b' ',
                "{b:?}"
            ),
            _ => {}
        },
    }
}

fn check_frame(b: &[u8]) {
    let nl = b.iter().position(|&c| c == b'\n');
    match next_line(b) {
        Frame::Line(l, used) => {
            let nl = nl.expect("a line without a newline");
            assert_eq!(used, nl + 1);
            assert!(l.len() <= 255);
            assert!(b.starts_with(l));
            assert!(!l.contains(&b'\n'));
            assert!(l.len() == nl || (l.len() + 1 == nl && b[nl - 1] == b'\r'));
        }
        Frame::Incomplete => {
            assert!(nl.is_none(), "{b:?}");
            assert!(b.len() <= 256, "{} bytes incomplete", b.len());
        }
        Frame::TooLong => match nl {
            Some(nl) => assert!(nl > 255, "{b:?}"),
            None => assert!(b.len() > 255),
        },
    }
}

#[test]
fn a_million_random_inputs_never_panic() {
    let mut buf = Vec::with_capacity(512);
    for seed in [0x9e37_79b9_7f4a_7c15u64, 1, 0xdead_beef, 42] {
        let mut r = XorShift(seed);
        // ~1M inputs natively. Under qemu-user a debug build runs 10-50x slower (armv7 with
        // build-std most of all): 40k there keeps the run short; the fuzzers go deeper.
        for _ in 0..if emulated() { 10_000 } else { 250_000 } {
            input(&mut r, &mut buf);
            check_parse(&buf);
            check_frame(&buf);
            // Every frame the splitter yields must also parse without panicking.
            if let Frame::Line(l, _) = next_line(&buf) {
                check_parse(l);
            }
        }
    }
}

#[test]
fn edge_lines() {
    for l in [
        &b""[..],
        b"\n",
        b"\r\n",
        b"\r",
        b"\r\r\n",
        b"PING\r\r\n",
        b"SET k v ttl=",
        b"SET k ttl=1 ttl=1",
        b"SET  k  v  ",
        b"AUTH  ",
        b"\0PING",
        b"PING\0",
        b"IDENTIFY 0000000000",
        b"INTERVAL 00000000001",
    ] {
        check_parse(l);
        check_frame(l);
    }
}

fn reply_shape_ok(l: &str) -> bool {
    if l == "PONG" || l == "OK" || l.starts_with("OK ") {
        return true;
    }
    let mut w = l.splitn(3, ' ');
    w.next() == Some("ERR")
        && w.next().is_some_and(|c| CODES.contains(&c))
        && w.next().is_some_and(|t| !t.is_empty())
}

#[test]
fn garbage_and_nul_bytes_against_a_live_agent() {
    let mut a = Agent::start(&[]);
    let mut r = XorShift(7);
    let mut buf = Vec::new();
    for round in 0..40 {
        let mut s = std::net::TcpStream::connect(a.tcp_addr()).unwrap();
        s.set_read_timeout(Some(slack(Duration::from_secs(3))))
            .unwrap();
        let mut sent = Vec::new();
        for _ in 0..20 {
            input(&mut r, &mut buf);
            // Sprinkle NULs and keep most lines short enough to be answered.
            for b in buf.iter_mut() {
                if r.below(8) == 0 {
                    *b = 0;
                }
            }
            if round % 4 != 0 {
                buf.truncate(200);
            }
            buf.push(b'\n');
            sent.extend_from_slice(&buf);
        }
        // A QUIT at the end closes the connection unless a too-long line did so first.
        sent.extend_from_slice(b"\nQUIT\n");
        let _ = s.write_all(&sent);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        let lines: Vec<&str> = text.lines().collect();
        let requests = sent.iter().filter(|&&c| c == b'\n').count();
        assert!(
            lines.len() <= requests,
            "{} replies to {requests} lines",
            lines.len()
        );
        assert!(got.is_empty() || got.ends_with(b"\n"), "partial reply line");
        for l in &lines {
            assert!(reply_shape_ok(l), "bad reply shape: {l:?}");
        }
        // Another connection is answered.
        assert_eq!(a.tcp().req("PING"), "PONG", "round {round}");
    }
    assert!(a.alive());
    assert_eq!(a.unix().req("PING"), "PONG");
    let (st, _) = a.stop();
    assert_eq!(st.code(), Some(0));
}
