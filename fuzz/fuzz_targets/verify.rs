//! The fleet-key verifier (`tether::proto::beacon::verify`, what `tether scan --fleet-key`
//! runs on every datagram) on any input: never panics; a datagram signed with the key is
//! never `forged` or `unsigned`; one changed byte in it always makes it `forged`.
//!
//! Input: byte 0 picks the key length (16..=47), then the key, then the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;

use tether::limits::DATAGRAM_MAX;
use tether::proto::beacon::{sign, verify, FleetKey, Trust, SIG_OVERHEAD};

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let klen = 16 + usize::from(k % 32);
    if rest.len() < klen {
        return;
    }
    let (raw_key, d) = rest.split_at(klen);
    let Ok(key) = FleetKey::parse(raw_key) else {
        return;
    };
    let src = std::net::IpAddr::from([10, 0, 0, 1]);
    let _ = verify(d, &key, src, None);
    let _ = verify(d, &key, src, Some(b"nonce"));

    // Sign the input as if it were an unsigned beacon, then check the verdicts.
    if d.last() != Some(&b'}') || d.len() + SIG_OVERHEAD > DATAGRAM_MAX {
        return;
    }
    let mut out = [0u8; DATAGRAM_MAX];
    out[..d.len()].copy_from_slice(d);
    let n = sign(&mut out, d.len(), &key).expect("room was checked");
    let t = verify(&out[..n], &key, src, None);
    assert!(matches!(t, Trust::Signed | Trust::Replayed), "{t:?}");
    let i = usize::from(k) * 7 % n;
    out[i] ^= 0x20;
    assert_eq!(verify(&out[..n], &key, src, None), Trust::Forged, "byte {i}");
});
