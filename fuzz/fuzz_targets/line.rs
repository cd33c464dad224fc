//! `tether::proto::line::next_line` on any byte stream, driven the way the run loop drives
//! it: a fixed IN_BUF input buffer filled in chunks, complete lines consumed from the front,
//! each line handed to the request parser. Checks the framing contract on every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::limits::{IN_BUF, LINE_MAX};
use tether::proto::line::{next_line, Frame};
use tether::proto::request::parse;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so chunk boundaries vary too.
    let Some((&chunk, mut rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let mut buf = [0u8; IN_BUF];
    let mut len = 0;
    while !rest.is_empty() {
        let n = chunk.min(rest.len()).min(IN_BUF - len);
        buf[len..len + n].copy_from_slice(&rest[..n]);
        len += n;
        rest = &rest[n..];
        loop {
            match next_line(&buf[..len]) {
                Frame::Line(l, used) => {
                    assert!(l.len() <= LINE_MAX);
                    assert!(used >= 1 && used <= len && used <= l.len() + 2);
                    assert_eq!(buf[used - 1], b'\n');
                    assert!(!l.contains(&b'\n'));
                    let _ = parse(l);
                    buf.copy_within(used..len, 0);
                    len -= used;
                }
                Frame::Incomplete => {
                    assert!(len < IN_BUF && !buf[..len].contains(&b'\n'));
                    break;
                }
                Frame::TooLong => {
                    // The run loop answers ERR too-long and closes: the stream ends here.
                    assert!(len > LINE_MAX);
                    return;
                }
            }
        }
    }
});
