//! The smallest HTTP/1.1 server side tether needs for `/metrics`: parse a request head
//! from bytes, pick the status, write a response head. Pure: no I/O, no clock, no heap,
//! no panics on any input (fuzzed by `fuzz/fuzz_targets/http.rs`). The run loop owns the
//! sockets, the buffers and the timeouts; this module only reads and writes bytes.
//!
//! What is accepted (RFC 9112, the parts a scraper uses):
//! - `METHOD SP TARGET SP HTTP/1.x`, then `Name: value` header lines, then an empty line;
//!   lines end in CRLF or a bare LF; empty lines before the request line are skipped.
//! - A malformed request line or header line is a 400 as soon as that line is complete,
//!   without waiting for the rest of the head. `HTTP/d.d` other than 1.0/1.1 is a 505.
//! - `Connection: close` / `keep-alive` as in HTTP/1.1 (1.0 closes unless asked not to).
//! - Requests with a body (`Content-Length` > 0, `Transfer-Encoding`) are answered and the
//!   connection closed: a scrape never has a body, and skipping one is not worth the code.

use super::wbuf::WBuf;
use core::fmt::{self, Write};

/// The one resource served.
pub const METRICS_PATH: &[u8] = b"/metrics";
/// The Prometheus text exposition format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of error bodies.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// The shortest request head a client can send (`GET / HTTP/1.0` and its blank line):
/// fewer bytes waiting on a connection cannot be a whole request.
pub const SHORTEST_HEAD: usize = b"GET / HTTP/1.0\r\n\r\n".len();
/// The `Allow` header value sent with 405.
pub const ALLOW: &str = "GET, HEAD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

/// The statuses tether answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeaderTooLarge,
    ServiceUnavailable,
    VersionNotSupported,
}

impl Status {
    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeaderTooLarge => 431,
            Status::ServiceUnavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeaderTooLarge => "Request Header Fields Too Large",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    /// The short text body of an error response.
    pub const fn body(self) -> &'static str {
        match self {
            Status::Ok => "",
            Status::BadRequest => "400 bad request\n",
            Status::NotFound => "404 not found: try /metrics\n",
            Status::MethodNotAllowed => "405 method not allowed: GET or HEAD\n",
            Status::HeaderTooLarge => {
                crate::limit_text!(
                    "431 request head larger than ",
                    { crate::limits::HTTP_HEAD_MAX },
                    " bytes\n"
                )
            }
            Status::ServiceUnavailable => "503 too many HTTP clients, retry\n",
            Status::VersionNotSupported => "505 only HTTP/1.0 and HTTP/1.1\n",
        }
    }

    /// After this status the connection is closed whatever the client asked.
    pub const fn closes(self) -> bool {
        matches!(
            self,
            Status::BadRequest
                | Status::HeaderTooLarge
                | Status::ServiceUnavailable
                | Status::VersionNotSupported
        )
    }
}

/// A complete, well-formed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path (without query) is `/metrics`.
    pub metrics: bool,
    /// HTTP/1.0 (answers then say `Connection: keep-alive` when they keep it).
    pub http10: bool,
    /// Keep the connection for another request after the answer.
    pub keep_alive: bool,
    /// Bytes of the buffer the head used, blank line included.
    pub len: usize,
}

impl Request {
    /// The status this request gets: 404 for any other path, else 405 for any other method.
    pub fn status(&self) -> Status {
        match (self.metrics, self.method) {
            (false, _) => Status::NotFound,
            (true, Method::Other) => Status::MethodNotAllowed,
            (true, _) => Status::Ok,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// No complete head yet, and nothing wrong so far. The caller answers 431 when its
    /// full buffer still gives this.
    Incomplete,
    Done(Request),
    /// Answer with this status and close.
    Bad(Status),
}

/// RFC 9110 `tchar`: the bytes of a method or a header name.
fn tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// The next line of `buf` from `at`: (line without CR/LF, index after its LF).
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let nl = rest.iter().position(|&c| c == b'\n')?;
    let l = &rest[..nl];
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    Some((l, at + nl + 1))
}

fn parse_version(v: &[u8]) -> Result<bool, Status> {
    match v {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Err(Status::VersionNotSupported)
        }
        _ => Err(Status::BadRequest),
    }
}

/// Is the request target's path `/metrics`? Accepts origin form (`/metrics?x`) and
/// absolute form (`http://host:port/metrics`).
fn is_metrics(target: &[u8]) -> bool {
    let mut t = target;
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            t = match rest.iter().position(|&c| c == b'/') {
                Some(i) => &rest[i..],
                None => b"/",
            };
        }
    }
    let end = t
        .iter()
        .position(|&c| c == b'?' || c == b'#')
        .unwrap_or(t.len());
    &t[..end] == METRICS_PATH
}

fn parse_request_line(l: &[u8]) -> Result<(Method, bool, bool), Status> {
    let mut parts = l.split(|&c| c == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if m.is_empty() || !m.iter().all(|&c| tchar(c)) {
        return Err(Status::BadRequest);
    }
    if t.is_empty() || !t.iter().all(|&c| c.is_ascii_graphic() || c >= 0x80) {
        return Err(Status::BadRequest);
    }
    let http10 = parse_version(v)?;
    let method = match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };
    Ok((method, is_metrics(t), http10))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses the request head at the start of `buf` (see the module docs for the rules).
pub fn parse_head(buf: &[u8]) -> Parse {
    // Empty lines before the request line are ignored (RFC 9112 2.2), a few at most.
    let mut at = 0;
    for _ in 0..4 {
        match buf.get(at..) {
            Some([b'\r', b'\n', ..]) => at += 2,
            Some([b'\n', ..]) => at += 1,
            _ => break,
        }
    }
    let Some((first, mut at)) = line(buf, at) else {
        return Parse::Incomplete;
    };
    let (method, metrics, http10) = match parse_request_line(first) {
        Ok(x) => x,
        Err(s) => return Parse::Bad(s),
    };
    let (mut close, mut keep) = (false, false);
    let mut body = false;
    loop {
        let Some((l, next)) = line(buf, at) else {
            return Parse::Incomplete;
        };
        at = next;
        if l.is_empty() {
            break;
        }
        // No whitespace before the colon, no obsolete line folding.
        let Some(colon) = l.iter().position(|&c| c == b':') else {
            return Parse::Bad(Status::BadRequest);
        };
        let (name, value) = (&l[..colon], trim_ows(&l[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&c| tchar(c)) {
            return Parse::Bad(Status::BadRequest);
        }
        if !value
            .iter()
            .all(|&c| c == b'\t' || (b' '..=b'~').contains(&c) || c >= 0x80)
        {
            return Parse::Bad(Status::BadRequest);
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for tok in value.split(|&c| c == b',').map(trim_ows) {
                close |= tok.eq_ignore_ascii_case(b"close");
                keep |= tok.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Parse::Bad(Status::BadRequest);
            }
            body |= value.iter().any(|&c| c != b'0');
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            body = true;
        }
    }
    let keep_alive = !close && !body && (!http10 || keep);
    Parse::Done(Request {
        method,
        metrics,
        http10,
        keep_alive,
        len: at,
    })
}

/// Writes a response head: status line, `Content-Type`, the exact `Content-Length`,
/// `Allow` for 405, and `Connection` when it differs from the version's default.
pub fn write_head(
    w: &mut WBuf<'_>,
    status: Status,
    content_type: &str,
    content_len: usize,
    keep_alive: bool,
    http10: bool,
) -> fmt::Result {
    write!(
        w,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_len}\r\n",
        status.code(),
        status.reason()
    )?;
    if status == Status::MethodNotAllowed {
        write!(w, "Allow: {ALLOW}\r\n")?;
    }
    if !keep_alive {
        w.write_str("Connection: close\r\n")?;
    } else if http10 {
        w.write_str("Connection: keep-alive\r\n")?;
    }
    w.write_str("\r\n")
}

/// Writes a whole error response (head and short text body; the body is left out for
/// HEAD requests, the `Content-Length` still says how long it would be).
pub fn write_error(
    w: &mut WBuf<'_>,
    status: Status,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
) -> fmt::Result {
    let body = status.body();
    let keep = keep_alive && !status.closes();
    write_head(w, status, TEXT_CONTENT_TYPE, body.len(), keep, http10)?;
    if !head_only {
        w.write_str(body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(s: &[u8]) -> Request {
        match parse_head(s) {
            Parse::Done(r) => r,
            p => panic!("{:?}: {p:?}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn scrape_requests() {
        let r = done(b"GET /metrics HTTP/1.1\r\nHost: x:9545\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\nGET");
        assert_eq!(r.method, Method::Get);
        assert!(r.metrics && r.keep_alive && !r.http10);
        assert_eq!(r.status(), Status::Ok);
        assert!(r.len < 200);
        let r = done(b"HEAD /metrics?x=1 HTTP/1.0\n\n");
        assert_eq!(
            (r.method, r.metrics, r.keep_alive),
            (Method::Head, true, false)
        );
        let r = done(b"\r\nGET http://a:1/metrics HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.metrics && r.keep_alive && r.http10);
        let r = done(b"GET /metrics HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
        assert!(!r.keep_alive);
        let r = done(b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert!(!r.keep_alive);
    }

    #[test]
    fn statuses() {
        for (head, want) in [
            (
                &b"POST /metrics HTTP/1.1\r\n\r\n"[..],
                Status::MethodNotAllowed,
            ),
            (b"get /metrics HTTP/1.1\r\n\r\n", Status::MethodNotAllowed),
            (b"GET / HTTP/1.1\r\n\r\n", Status::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Status::NotFound),
            (b"DELETE /x HTTP/1.1\r\n\r\n", Status::NotFound),
        ] {
            assert_eq!(done(head).status(), want);
        }
    }

    #[test]
    fn malformed_is_400_as_soon_as_a_line_is_complete() {
        for bad in [
            &b"GARBAGE\r\n"[..],
            b"GET /metrics\r\n",
            b"GET  /metrics HTTP/1.1\r\n",
            b"GET /metrics HTTP/1.1 x\r\n",
            b"GET /metrics HTTX/1.1\r\n",
            b"GET /met\x01rics HTTP/1.1\r\n",
            b"G\rT /metrics HTTP/1.1\r\n",
            b"GET /metrics HTTP/1.1\r\nNo colon here\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n",
            b"GET /metrics HTTP/1.1\r\nName : x\r\n",
            b"GET /metrics HTTP/1.1\r\n: x\r\n",
            b"GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n",
            b"GET /metrics HTTP/1.1\r\nA: b\x00c\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 1 2\r\n",
        ] {
            assert_eq!(
                parse_head(bad),
                Parse::Bad(Status::BadRequest),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_head(b"GET /metrics HTTP/2.0\r\n"),
            Parse::Bad(Status::VersionNotSupported)
        );
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        let full = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
        for n in 0..full.len() {
            assert_eq!(parse_head(&full[..n]), Parse::Incomplete, "{n}");
        }
        assert!(matches!(parse_head(full), Parse::Done(_)));
    }

    #[test]
    fn response_heads() {
        let mut b = [0u8; 512];
        let mut w = WBuf::new(&mut b);
        write_head(&mut w, Status::Ok, METRICS_CONTENT_TYPE, 1234, true, false).unwrap();
        assert_eq!(
            w.as_bytes(),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 1234\r\n\r\n"
        );
        let mut w = WBuf::new(&mut b);
        write_error(&mut w, Status::MethodNotAllowed, false, true, false).unwrap();
        let s = core::str::from_utf8(w.as_bytes()).unwrap();
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{s}");
        assert!(s.contains("\r\nAllow: GET, HEAD\r\n"), "{s}");
        assert!(s.ends_with(Status::MethodNotAllowed.body()), "{s}");
        let mut w = WBuf::new(&mut b);
        write_error(&mut w, Status::HeaderTooLarge, true, true, false).unwrap();
        let s = core::str::from_utf8(w.as_bytes()).unwrap();
        assert!(
            s.contains("Connection: close\r\n") && s.ends_with("\r\n\r\n"),
            "{s}"
        );
    }

    #[test]
    fn random_mutations_never_panic() {
        // xorshift: deterministic, no dev-dependency. The fuzz target goes further.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n";
        let alphabet = b"\r\n :/GETHPx0\t\x00\xff";
        for _ in 0..20_000 {
            let mut v = seed.to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % v.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => v[at] = c,
                    1 => v.insert(at, c),
                    _ => {
                        v.remove(at);
                    }
                }
            }
            if let Parse::Done(r) = parse_head(&v) {
                assert!(r.len <= v.len() && v[r.len - 1] == b'\n');
            }
        }
    }
}
