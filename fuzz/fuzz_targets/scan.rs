//! `tether scan`'s board table (`tether::scan::Boards`), fed what a LAN can send: any
//! sequence of datagrams (raw bytes, or beacons as an agent or a forger would encode them,
//! signed with the fleet key, another key or none) from four sources, over time, with
//! `--watch`'s forgetting and every listing in between. Never panics; the table and what
//! it remembers stay bounded; with a key only `signed` rows are listed and each is filed
//! at its own source; the JSON listing and the Prometheus target file are valid JSON.
//!
//! Input: byte 0 bit 0 = scan with a fleet key; then records. A record is an op byte:
//! bits 0-1 the source, bits 2-3 the time step (0, 1 s, 20 s, past `SCAN_FORGET_SECS`,
//! which also runs `forget`), bit 4 = list afterwards, bit 5 = a new `--watch` round (a
//! new probe nonce) first, bit 7 = a beacon encoded from the
//! next 4 bytes (below), else a raw datagram of the next byte's length. Beacon bytes: id
//! (1 of 6), run (1 of 4), seq, and flags: bye, metrics, the embedded address (none, the
//! source, another, an IPv6 one), this round's nonce, the round before's, signed with the
//! key, signed with another key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};
use tether::limits::{
    DATAGRAM_MAX, SCAN_ADDRS_MAX, SCAN_BOARDS_MAX, SCAN_FORGET_SECS, SCAN_SEQS_MAX,
};
use tether::proto::beacon::{encode_signed, Fields, FleetKey, Trust};
use tether::scan::{prometheus_sd, scoped, table, to_json, Boards};

/// The probe nonce of `--watch` round `r`.
fn nonce(r: u32) -> String {
    format!("{r:016x}")
}

fn source(i: u8) -> SocketAddr {
    match i & 3 {
        0 => SocketAddr::from(([10, 0, 0, 1], 4546)),
        1 => SocketAddr::from(([10, 0, 0, 2], 4546)),
        2 => SocketAddr::from(([10, 0, 0, 3], 4546)),
        _ => SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
            4546,
            0,
            0,
        )),
    }
}

/// A beacon as an agent (or a forger) encodes it, from 4 input bytes.
fn beacon(
    round: u32,
    b: &[u8],
    from: SocketAddr,
    key: &FleetKey,
    other: &FleetKey,
    out: &mut [u8],
) -> Option<usize> {
    const IDS: [&str; 6] = ["aa", "bb", "cc", "dd", "ee", "ff"];
    const RUNS: [&str; 4] = ["r0", "r1", "r2", "r3"];
    let (id, run, seq, fl) = (b[0], b[1], b[2], b[3]);
    let (this_round, last_round) = (nonce(round), nonce(round.wrapping_sub(1)));
    let addr = match (fl >> 2) & 3 {
        0 => None,
        1 => Some(from.ip()),
        2 => Some(IpAddr::from([10, 0, 0, 9])),
        _ => Some(IpAddr::from(Ipv6Addr::LOCALHOST)),
    };
    let f = Fields {
        id: IDS[usize::from(id) % IDS.len()],
        host: "pi",
        addr,
        iface: "eth0",
        port: 4545,
        seq: u64::from(seq),
        run: Some(RUNS[usize::from(run) % RUNS.len()]),
        uptime: u64::from(seq),
        load: 0.5,
        mem_avail_kb: 1,
        temp_c: None,
        metrics: (fl & 2 != 0).then_some(9545),
        bye: fl & 1 != 0,
        nonce: match fl & 0x30 {
            0x10 => Some(this_round.as_bytes()),
            0x20 => Some(last_round.as_bytes()),
            _ => None,
        },
    };
    let k = match fl & 0xc0 {
        0x40 => Some(key),
        0x80 => Some(other),
        _ => None,
    };
    encode_signed(out, DATAGRAM_MAX, &f, std::iter::empty(), k)
}

fn check_listings(bs: &mut Boards, keyed: bool, now: Instant) {
    let _ = bs.mark_clones();
    let _ = bs.ignored_warning(now);
    let _ = bs.hidden(false);
    let all = bs.shown(true);
    assert!(all.len() <= SCAN_BOARDS_MAX);
    assert!(all.iter().all(|b| b.addrs.len() <= SCAN_ADDRS_MAX));
    assert!(all
        .iter()
        .all(|b| b.addrs.len() == b.addrs_heard.len() && !b.addrs.is_empty()));
    let shown = bs.shown(false);
    for b in shown.iter().filter(|_| keyed) {
        // Signed, and filed at the addresses it was heard from.
        assert_eq!(b.trust, Trust::Signed);
        assert!(b.addrs.contains(&b.addr), "{:?}", b.addrs);
        assert!(
            b.addrs
                .iter()
                .all(|a| (0..4).any(|i| *a == scoped(source(i)))),
            "{:?}",
            b.addrs
        );
    }
    let silent = Duration::from_secs(15);
    let _ = table(&all, now, silent, keyed);
    let j: serde_json::Value = serde_json::from_str(&to_json(&all, now, silent)).expect("--json");
    assert_eq!(j.as_array().map(Vec::len), Some(all.len()));
    let sd: serde_json::Value =
        serde_json::from_str(&prometheus_sd(shown, now, silent)).expect("target file");
    assert!(sd.is_array());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let key = FleetKey::parse(b"the fleet key, long enough").expect("key");
    let other = FleetKey::parse(b"a forger's guess at the key").expect("key");
    let keyed = mode & 1 != 0;
    let mut round = 0u32;
    let mut bs = Boards::new(keyed.then(|| key.clone()), nonce(round));
    let t0 = Instant::now();
    let mut now = t0;
    let mut out = [0u8; DATAGRAM_MAX];
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let from = source(op);
        now += match (op >> 2) & 3 {
            0 => Duration::ZERO,
            1 => Duration::from_secs(1),
            2 => Duration::from_secs(20),
            _ => Duration::from_secs(SCAN_FORGET_SECS + 1),
        };
        if (op >> 2) & 3 == 3 {
            bs.forget(now);
        }
        if op & 0x20 != 0 {
            round += 1;
            bs.new_round(nonce(round));
        }
        if op & 0x80 != 0 {
            if rest.len() < 4 {
                return;
            }
            let (b, tail) = rest.split_at(4);
            rest = tail;
            if let Some(n) = beacon(round, b, from, &key, &other, &mut out) {
                bs.ingest(&out[..n], from, now);
            }
        } else {
            let Some((&len, tail)) = rest.split_first() else {
                return;
            };
            let len = usize::from(len).min(tail.len());
            let (d, tail) = tail.split_at(len);
            rest = tail;
            bs.ingest(d, from, now);
        }
        let (seqs, _) = bs.remembered();
        assert!(seqs <= SCAN_SEQS_MAX);
        if op & 0x10 != 0 {
            check_listings(&mut bs, keyed, now);
        }
    }
    check_listings(&mut bs, keyed, now);
    bs.forget(now + Duration::from_secs(SCAN_FORGET_SECS));
    assert!(bs.shown(true).is_empty());
    assert_eq!(bs.remembered(), (0, 0));
});
