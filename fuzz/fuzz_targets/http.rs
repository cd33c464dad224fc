//! `tether::proto::http::parse_head` on any bytes, fed the way the run loop feeds it: the
//! slot's HTTP_HEAD_MAX buffer filled in chunks, parsed after each chunk, complete heads
//! consumed from the front (keep-alive, pipelining). Checks the parser's contract.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::limits::HTTP_HEAD_MAX;
use tether::proto::http::{parse_head, write_error, Parse, Status};
use tether::proto::wbuf::WBuf;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, mut rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 128) + 1;
    let mut buf = [0u8; HTTP_HEAD_MAX];
    let mut len = 0;
    while !rest.is_empty() {
        let n = chunk.min(rest.len()).min(HTTP_HEAD_MAX - len);
        buf[len..len + n].copy_from_slice(&rest[..n]);
        len += n;
        rest = &rest[n..];
        loop {
            match parse_head(&buf[..len]) {
                Parse::Done(r) => {
                    assert!(r.len >= 2 && r.len <= len);
                    assert_eq!(buf[r.len - 1], b'\n');
                    let st = r.status();
                    let mut out = [0u8; 512];
                    let mut w = WBuf::new(&mut out);
                    assert!(write_error(&mut w, st, false, r.keep_alive, r.http10).is_ok());
                    if !r.keep_alive {
                        return;
                    }
                    buf.copy_within(r.len..len, 0);
                    len -= r.len;
                }
                Parse::Bad(s) => {
                    assert!(matches!(s, Status::BadRequest | Status::VersionNotSupported));
                    return;
                }
                Parse::Incomplete if len == HTTP_HEAD_MAX => return, // 431
                Parse::Incomplete => break,
            }
        }
    }
});
