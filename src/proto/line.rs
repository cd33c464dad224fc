//! Line framing: splits a client's input buffer into request lines.
//!
//! A request is at most [`LINE_MAX`] bytes followed by `\n`; one `\r` right before the
//! `\n` is dropped. The caller keeps the bytes in a fixed buffer of [`IN_BUF`] bytes:
//! when that buffer is full and holds no `\n`, the line is too long.

use super::swar;
use crate::limits::{IN_BUF, LINE_MAX};

#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line (terminator removed) and how many bytes it used up.
    Line(&'a [u8], usize),
    /// No complete line yet; read more.
    Incomplete,
    /// The line exceeds [`LINE_MAX`]: answer `ERR too-long` and close.
    TooLong,
}

#[inline(always)]
pub fn next_line(buf: &[u8]) -> Frame<'_> {
    // A line of up to seven bytes (most requests) ends in the first eight: one load
    // finds it (see `swar`; its zero padding is never a '\n'). Further on, a plain index
    // loop: the binary is built for size, which leaves iterator adaptors as calls.
    let nl = match swar::find(swar::head(buf), b'\n') {
        Some(nl) => nl,
        None => {
            let mut nl = buf.len().min(8);
            while nl < buf.len() && buf[nl] != b'\n' {
                nl += 1;
            }
            nl
        }
    };
    match buf.get(..nl).filter(|_| nl < buf.len()) {
        Some(mut line) => {
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > LINE_MAX {
                Frame::TooLong
            } else {
                Frame::Line(line, nl + 1)
            }
        }
        None if buf.len() >= IN_BUF => Frame::TooLong,
        // 256 bytes without '\r' at the end is already over the limit.
        None if buf.len() > LINE_MAX && buf.last() != Some(&b'\r') => Frame::TooLong,
        None => Frame::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_strips_cr() {
        assert_eq!(next_line(b"PING\r\nX"), Frame::Line(b"PING", 6));
        assert_eq!(next_line(b"PING\nX"), Frame::Line(b"PING", 5));
        assert_eq!(next_line(b"\n"), Frame::Line(b"", 1));
        assert_eq!(next_line(b"PIN"), Frame::Incomplete);
    }

    #[test]
    fn limit_is_255_bytes_either_terminator() {
        let mut l = vec![b'a'; 255];
        l.extend_from_slice(b"\r\n");
        assert_eq!(next_line(&l), Frame::Line(&l[..255], 257));
        let mut l = vec![b'a'; 256];
        assert_eq!(next_line(&l), Frame::TooLong);
        l.push(b'\n');
        assert_eq!(next_line(&l), Frame::TooLong);
        let mut l = vec![b'a'; 255];
        l.push(b'\r');
        assert_eq!(next_line(&l), Frame::Incomplete);
    }
}
