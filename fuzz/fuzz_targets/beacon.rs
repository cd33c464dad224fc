//! Beacon and probe decoding (`tether::proto::beacon`) on any datagram: never panics; a
//! parsed probe nonce is printable, bounded, and round-trips through `write_probe`; the
//! field reader of `tether scan` terminates and yields slices of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::limits::DATAGRAM_MAX;
use tether::proto::beacon::{count_members, fields, is_beacon, parse_probe, unquote, write_probe};

fuzz_target!(|d: &[u8]| {
    if let Some(nonce) = parse_probe(d) {
        assert!(!nonce.is_empty() && nonce.iter().all(|c| c.is_ascii_graphic()));
        let mut out = [0u8; DATAGRAM_MAX];
        let n = write_probe(&mut out, nonce);
        assert_eq!(n, DATAGRAM_MAX);
        assert_eq!(parse_probe(&out[..n]), Some(nonce));
    }
    let _ = is_beacon(d);
    let mut count = 0usize;
    for (k, v) in fields(d) {
        count += 1;
        assert!(count <= d.len() + 1, "field reader does not advance");
        let _ = unquote(v);
        let _ = count_members(v);
        let _ = k;
    }
});
