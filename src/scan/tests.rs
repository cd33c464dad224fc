//! Unit tests of `tether scan`: the board table, what it prints, the target file.

use super::render::human_secs;
use super::*;
use crate::limits::{
    SCAN_ADDRS_MAX, SCAN_BOARDS_MAX, SCAN_FORGET_SECS, SCAN_RUNS_PER_ID, SCAN_SEQS_MAX,
};
use crate::proto::beacon::{self, FleetKey, Trust};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[test]
fn prometheus_sd_lists_up_boards_with_metrics_by_id() {
    let now = Instant::now();
    // Boards as `decode` makes them from what agents send.
    let board = |id: &str, metrics: Option<u16>, bye: bool, age: u64| {
        let m = metrics
            .map(|p| format!(",\"metrics\":{p}"))
            .unwrap_or_default();
        let d = format!(
            "{{\"tether\":1,\"id\":\"{id}\",\"host\":\"h-{id}\\\"\",\"addr\":\"10.0.0.1\",\"port\":4545{m},\"bye\":{bye}}}"
        );
        let from = SocketAddr::from(([10, 0, 0, 1], 4546));
        decode(d.as_bytes(), from, now - Duration::from_secs(age)).unwrap()
    };
    let mut m = BTreeMap::new();
    for b in [
        board("bb", Some(9545), false, 0),
        board("aa", Some(9100), false, 1),
        board("cc", None, false, 0),
        board("dd", Some(9545), true, 0),
        board("ee", Some(9545), false, 60),
    ] {
        m.insert(b.id.clone(), b);
    }
    let sd = prometheus_sd(m.values().rev(), now, Duration::from_secs(15));
    assert_eq!(
        sd,
        "[{\"targets\":[\"10.0.0.1:9100\"],\"labels\":{\"tether_id\":\"aa\",\"tether_host\":\"h-aa\\\"\"}},\
         {\"targets\":[\"10.0.0.1:9545\"],\"labels\":{\"tether_id\":\"bb\",\"tether_host\":\"h-bb\\\"\"}}]"
    );
    assert_eq!(prometheus_sd([], now, Duration::from_secs(15)), "[]");
}

/// An empty directory of this test process's own for a target-file test.
fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tether-sd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn atomic_write_is_0644_and_leaves_no_temp_file() {
    let d = fresh_dir("unit");
    let p = d.join("tether.json");
    write_atomic(&p, "[]").unwrap();
    write_atomic(&p, "[1]").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    assert!(write_atomic(&d.join("no/such/dir.json"), "[]").is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--watch` puts back a target file someone wrote over in place (same inode): it was
/// checked by inode alone, and the file kept the stranger's text until the set changed.
#[test]
fn a_target_file_written_over_in_place_is_written_again() {
    let d = fresh_dir("inplace");
    let p = d.join("tether.json");
    let mut last = None;
    update_sd(&p, "[1]".into(), &mut last).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&p, "[]").unwrap();
    update_sd(&p, "[1]".into(), &mut last).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]");
    std::fs::remove_dir_all(&d).unwrap();
}

/// The temporary name is predictable, so someone who may write in the directory could
/// plant a symlink there: it is not followed (the file it named was emptied and made
/// 0644), another name is used.
#[test]
fn atomic_write_never_writes_through_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let d = fresh_dir("link");
    let precious = d.join("precious");
    std::fs::write(&precious, "precious").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
    for n in 0..3 {
        let planted = d.join(format!(".x.json.tmp.{}.{n}", std::process::id()));
        std::os::unix::fs::symlink(&precious, planted).unwrap();
    }
    let p = d.join("x.json");
    write_atomic(&p, "[]").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "[]");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious");
    let mode = std::fs::metadata(&precious).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--watch` writes the file when its text changes, and also when the file is gone or is
/// not the one written (deleted, or its directory made anew): it stayed missing while the
/// boards stayed the same.
#[test]
fn the_target_file_is_written_again_when_it_went() {
    let d = fresh_dir("again");
    let p = d.join("t.json");
    let mut last = None;
    update_sd(&p, "[1]".into(), &mut last).unwrap();
    let m0 = std::fs::metadata(&p).unwrap().modified().unwrap();
    // Unchanged: not written again.
    std::thread::sleep(Duration::from_millis(20));
    update_sd(&p, "[1]".into(), &mut last).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), m0);
    std::fs::remove_file(&p).unwrap();
    update_sd(&p, "[1]".into(), &mut last).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]");
    std::fs::write(&p, "something else").unwrap();
    std::fs::rename(&p, d.join("moved")).unwrap();
    std::fs::write(&p, "edited").unwrap();
    update_sd(&p, "[1]".into(), &mut last).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn decodes_what_the_agent_encodes() {
    let f = beacon::Fields {
        id: "00aa",
        host: "pi",
        addr: None,
        iface: "wlan0",
        port: 4545,
        seq: 3,
        run: Some("0123456789abcdef"),
        uptime: 90000,
        load: 1.5,
        mem_avail_kb: 1,
        temp_c: None,
        metrics: Some(9545),
        bye: true,
        nonce: None,
    };
    let mut out = [0u8; 512];
    let facts = [(b"a".as_slice(), b"1".as_slice()), (b"b", b"2")];
    let n = beacon::encode(&mut out, 512, &f, facts.iter().copied()).unwrap();
    let from = SocketAddr::from(([10, 0, 0, 9], 4546));
    let b = decode(&out[..n], from, Instant::now()).unwrap();
    assert_eq!(
        (b.id.as_str(), b.host.as_str(), b.addr.as_str()),
        ("00aa", "pi", "10.0.0.9")
    );
    assert_eq!(
        (b.port, b.uptime, b.facts, b.seq, b.bye),
        (4545, 90000, 2, 3, true)
    );
    assert_eq!(b.metrics, Some(9545));
    // Facts left out of the datagram (they did not fit) still count: FACTS is what the
    // board publishes, as its STATUS says.
    let v = [b'v'; 64];
    let keys: Vec<String> = (0..32).map(|i| format!("key{i:02}")).collect();
    let many: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_bytes(), &v[..])).collect();
    let n = beacon::encode(&mut out, 512, &f, many.iter().copied()).unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.contains("\"facts_omitted\":"), "{text}");
    let b = decode(&out[..n], from, Instant::now()).unwrap();
    assert_eq!(b.facts, 32, "{text}");
    assert!(decode(b"{\"tether\":2,\"id\":\"x\"}", from, Instant::now()).is_none());
    assert!(decode(b"garbage", from, Instant::now()).is_none());
    assert_eq!(human_secs(90000), "1d01h");
}

fn datagram(id: &str, run: &str, addr: [u8; 4], seq: u64, key: Option<&FleetKey>) -> Vec<u8> {
    datagram_as(id, run, addr, seq, key, false, None)
}

/// A datagram as an agent sends it: a goodbye or not, answering a probe's nonce or not.
fn datagram_as(
    id: &str,
    run: &str,
    addr: impl Into<IpAddr>,
    seq: u64,
    key: Option<&FleetKey>,
    bye: bool,
    nonce: Option<&str>,
) -> Vec<u8> {
    let f = beacon::Fields {
        bye,
        nonce: nonce.map(str::as_bytes),
        ..fields(id, run, addr.into(), seq)
    };
    encoded(&f, key)
}

/// What an agent `id` of run `run` at `addr` puts in its beacon number `seq`.
fn fields<'a>(id: &'a str, run: &'a str, addr: IpAddr, seq: u64) -> beacon::Fields<'a> {
    beacon::Fields {
        id,
        host: "pi",
        addr: Some(addr),
        iface: "eth0",
        port: 4545,
        seq,
        run: Some(run),
        uptime: 1,
        load: 0.0,
        mem_avail_kb: 1,
        temp_c: None,
        metrics: None,
        bye: false,
        nonce: None,
    }
}

/// `f` as the datagram an agent sends, signed with `key` if given.
fn encoded(f: &beacon::Fields<'_>, key: Option<&FleetKey>) -> Vec<u8> {
    let mut out = [0u8; 512];
    let n = beacon::encode_signed(&mut out, 512, f, std::iter::empty(), key).unwrap();
    out[..n].to_vec()
}

fn from(a: [u8; 4]) -> SocketAddr {
    SocketAddr::from((a, 4546))
}

/// The fleet's key in these tests (a forger's is made apart, where one is needed).
fn fleet_key() -> FleetKey {
    FleetKey::parse(b"the fleet key, long enough").unwrap()
}

#[test]
fn rows_are_per_board_clones_are_flagged_once() {
    let now = Instant::now();
    let mut bs = Boards::new(None, "n".into());
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    bs.ingest(&datagram("id1", "run-a", a, 1, None), from(a), now);
    bs.ingest(&datagram("id1", "run-a", a, 2, None), from(a), now);
    // The same run from a second address: one multi-homed board.
    bs.ingest(&datagram("id1", "run-a", b, 3, None), from(b), now);
    assert_eq!(bs.shown(false).len(), 1);
    assert!(bs.mark_clones().is_empty());
    // Another run at another address: a clone; both rows, warned once.
    let c = [10, 0, 0, 3];
    bs.ingest(&datagram("id1", "run-b", c, 1, None), from(c), now);
    assert_eq!(bs.mark_clones(), vec!["id1".to_string()]);
    assert!(bs.mark_clones().is_empty(), "one warning per id");
    let rows = bs.shown(false);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.dup_id && r.trust == Trust::Unchecked));
    let j = to_json(&rows, now, Duration::from_secs(15));
    assert!(j.contains("\"trust\":\"unchecked\",\"dup_id\":true"), "{j}");
    // A restart at the same address replaces the old run's row.
    let mut bs = Boards::new(None, "n".into());
    bs.ingest(&datagram("id2", "old", a, 9, None), from(a), now);
    bs.ingest(&datagram("id2", "new", a, 0, None), from(a), now);
    assert!(bs.mark_clones().is_empty());
    assert_eq!(bs.shown(false).len(), 1);
}

/// A datagram of `head`, `fill` repeated to 512 bytes, `tail` (as a forger sends it).
fn filled(head: &[u8], fill: u8, tail: &[u8]) -> Vec<u8> {
    let mut d = head.to_vec();
    d.resize(512 - tail.len(), fill);
    d.extend_from_slice(tail);
    d
}

#[test]
fn scan_json_is_valid_however_much_the_strings_escape() {
    let now = Instant::now();
    let (head, tail) = (
        b"{\"tether\":1,\"id\":\"f0f0\",\"host\":\"".as_slice(),
        b"\",\"addr\":\"10.9.0.66\",\"port\":4545,\"seq\":1,\"run\":\"00aa\"}".as_slice(),
    );
    let n = 512 - head.len() - tail.len();
    // Raw control bytes (6 bytes each once escaped) and bytes that are not UTF-8.
    for (fill, host) in [(1u8, "\u{1}"), (0xff, "\u{fffd}")] {
        let mut b = decode(&filled(head, fill, tail), from([10, 9, 0, 66]), now).unwrap();
        assert_eq!(b.host, host.repeat(n));
        let rows = [&b];
        let v: serde_json::Value =
            serde_json::from_str(&to_json(&rows, now, Duration::from_secs(15))).unwrap();
        assert_eq!(v[0]["host"], host.repeat(n));
        assert_eq!(
            (v[0]["id"].as_str(), v[0]["port"].as_u64()),
            (Some("f0f0"), Some(4545))
        );
        // Far longer than any datagram: still whole.
        b.id = "\u{7f}\u{1b}".repeat(2000);
        b.run = Some("\u{fffd}\"\\".repeat(2000));
        let rows = [&b, &b];
        let v: serde_json::Value =
            serde_json::from_str(&to_json(&rows, now, Duration::from_secs(15))).unwrap();
        assert_eq!(v[1]["id"], b.id.as_str());
        assert_eq!(v[1]["run"], b.run.as_deref().unwrap());
        assert_eq!(v[1]["host"], host.repeat(n));
        // The file_sd file too: such a board is listed, not left out.
        b.metrics = Some(9100);
        let sd = prometheus_sd([&b], now, Duration::from_secs(15));
        let v: serde_json::Value = serde_json::from_str(&sd).unwrap();
        assert_eq!(v[0]["labels"]["tether_id"], b.id.as_str());
        assert_eq!(v[0]["labels"]["tether_host"], host.repeat(n));
    }
}

#[test]
fn only_whole_beacons_with_a_port_are_boards() {
    let (now, a) = (Instant::now(), from([10, 0, 0, 1]));
    let d = datagram(
        "c0ffee00c0ffee00",
        "1111111111111111",
        [10, 0, 0, 1],
        7,
        None,
    );
    assert_eq!(decode(&d, a, now).unwrap().port, 4545);
    let mut spaced = d.clone();
    spaced.extend_from_slice(b" \r\n");
    assert!(
        decode(&spaced, a, now).is_some(),
        "trailing whitespace is allowed"
    );
    // A real beacon cut anywhere (at 100 bytes the reviewer's case) is not a board.
    for k in 0..d.len() {
        assert!(decode(&d[..k], a, now).is_none(), "{k}");
    }
    for bad in [
        b"{\"tether\":1,\"id\":\"badfacts00000000\",\"host\":\"brokenfacts\",\"facts\":{{{{"
            .as_slice(),
        b"{\"tether\":1,\"id\":\"garbageafterid00\"XXXXXXXXXXXXXXX",
        b"{\"tether\":1,\"id\":\"x\",\"port\":4545,}",
        b"{\"tether\":1,\"id\":\"x\",\"port\":4545,\"a\":1 junk 4545}",
        b"{\"tether\":1,\"id\":\"x\",\"port\":4545}}",
        b"{\"tether\":1,\"id\":\"x\",\"port\":4545} x",
        b"{\"tether\":1,\"id\":\"x\",\"host\":\"no port\"}",
        b"{\"tether\":1,\"id\":\"x\",\"port\":0}",
        b"{\"tether\":1,\"id\":\"x\",\"port\":65536}",
    ] {
        let shown = String::from_utf8_lossy(bad);
        assert!(decode(bad, a, now).is_none(), "{shown}");
    }
    let mut bs = Boards::new(None, "n".into());
    bs.ingest(&d[..100], a, now);
    assert!(bs.shown(true).is_empty());
}

#[test]
fn the_table_shows_control_characters_as_question_marks() {
    let (now, a) = (Instant::now(), from([10, 9, 0, 66]));
    let sent = |id: &str, host: &[u8], addr: &str| {
        let mut d = format!("{{\"tether\":1,\"id\":\"{id}\",\"host\":\"").into_bytes();
        d.extend_from_slice(host);
        d.extend_from_slice(format!("\",\"addr\":\"{addr}\",\"port\":4545}}").as_bytes());
        decode(&d, a, now).unwrap()
    };
    let esc = sent("f3", b"x\x1b[2J\x1b]0;pwned\x07", "10.9.0.66");
    let row = sent(
        "f2",
        b"evil\nf9dc1469d10fd16e pi-kitchen 192.168.1.23 4545",
        "1\\u009b0",
    );
    let kind = sent(
        "a\\u007fb\\u0085",
        "pi-k\u{fc}che-\u{1f600}".as_bytes(),
        "10.9.0.67",
    );
    let t = table(&[&esc, &row, &kind], now, Duration::from_secs(15), false);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 4, "a header and one line per board: {t}");
    let controls = t.chars().filter(|c| c.is_control());
    assert!(controls.eq(['\n'; 4]), "only the line ends: {t:?}");
    assert!(lines[1].starts_with("f3               x?[2J?]0;pwned?  "));
    // HOST is as wide as the longest (row 2's), so ADDRESS stays in one column.
    let col = |l: &str, s: &str| l.chars().count() - l[l.find(s).unwrap()..].chars().count();
    assert_eq!(
        col(lines[1], "10.9.0.66"),
        col(lines[3], "10.9.0.67"),
        "{t}"
    );
    assert_eq!(col(lines[0], "ADDRESS"), col(lines[1], "10.9.0.66"), "{t}");
    assert!(
        t.lines().all(|l| l == l.trim_end()),
        "padding left at a line's end: {t:?}"
    );
    // White space too: a host cannot show columns of its own.
    assert!(lines[2].starts_with("f2               evil?f9dc1469d10fd16e?pi-kitchen?192"));
    // An `addr` that is not an IP address is not shown: the source address is.
    assert!(lines[2].contains(" 10.9.0.66 "), "{t}");
    assert!(
        lines[3].starts_with("a?b?             pi-k\u{fc}che-\u{1f600} "),
        "{t}"
    );
    assert_eq!(
        clone_warning("a\u{1b}]0;x\u{7}").split_whitespace().nth(2),
        Some("a?]0;x?")
    );
}

#[test]
fn with_a_key_only_signed_rows_show_and_forgers_stay_apart() {
    let now = Instant::now();
    let key = fleet_key();
    let bad = FleetKey::parse(b"a forger's guess at the key").unwrap();
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    let (a, f) = ([10, 0, 0, 1], [10, 0, 0, 66]);
    let genuine = datagram("id1", "r", a, 1, Some(&key));
    bs.ingest(&genuine, from(a), now);
    // Forged (wrong key) and replayed (re-sent from elsewhere, or the same seq again).
    bs.ingest(&datagram("id1", "r", a, 2, Some(&bad)), from(f), now);
    bs.ingest(&genuine, from(f), now);
    bs.ingest(&genuine, from(a), now);
    bs.ingest(&datagram("id9", "q", f, 1, None), from(f), now);
    assert!(bs.mark_clones().is_empty());
    let shown = bs.shown(false);
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].trust, Trust::Signed);
    let all: Vec<&str> = bs.shown(true).iter().map(|r| r.trust.as_str()).collect();
    // One replayed row per source: the re-sent copy elsewhere, the repeat at home.
    assert_eq!(all.len(), 5, "{all:?}");
    for t in ["signed", "forged", "replayed", "unsigned"] {
        assert!(all.contains(&t), "{all:?}");
    }
    assert_eq!(
        bs.hidden(false).as_deref(),
        Some("hidden: 1 unsigned, 1 forged, 2 replayed (--all shows them)")
    );
    assert_eq!(bs.hidden(true), None);
    let t = table(&bs.shown(true), now, Duration::from_secs(15), true);
    assert!(t.lines().next().unwrap().ends_with(" TRUST"), "{t}");
}

#[test]
fn unbelievable_readings_are_unknown_and_the_json_stays_valid() {
    let now = Instant::now();
    let beacon = |load: &str, temp: &str| {
        let d = format!(
            "{{\"tether\":1,\"id\":\"x\",\"port\":4545,\"load\":{load},\"temp_c\":{temp}}}"
        );
        decode(d.as_bytes(), from([10, 9, 0, 1]), now).unwrap()
    };
    for (load, temp) in [
        ("1e999", "-1e999"),
        ("1e300", "1e300"),
        ("-1", "-300"),
        ("NaN", "inf"),
    ] {
        let b = beacon(load, temp);
        assert_eq!((b.load, b.temp_c), (None, None), "{load} {temp}");
        let j = to_json(&[&b], now, Duration::from_secs(15));
        assert!(
            j.contains("\"load\":null,") && j.contains("\"temp_c\":null,"),
            "{j}"
        );
        let t = table(&[&b], now, Duration::from_secs(15), false);
        assert!(t.lines().nth(1).is_some_and(|l| l.len() < 120), "{t}");
    }
    let b = beacon("0.25", "48.3");
    assert_eq!((b.load, b.temp_c), (Some(0.25), Some(48.3)));
}

#[test]
fn a_flood_of_made_up_ids_fills_a_bounded_table_and_is_said_once() {
    let now = Instant::now();
    let mut bs = Boards::new(None, "n".into());
    for i in 0..SCAN_BOARDS_MAX + 10 {
        bs.ingest(
            &datagram(&format!("{i:016x}"), "r", [10, 9, 0, 1], 1, None),
            from([10, 9, 0, 1]),
            now,
        );
    }
    assert_eq!(bs.shown(true).len(), SCAN_BOARDS_MAX);
    let w = bs.ignored_warning(now).unwrap();
    assert!(w.contains(" 10 datagrams"), "{w}");
    assert_eq!(bs.ignored_warning(now), None, "said once");
    // More are ignored every round: said again a minute later, with their count.
    let d = datagram("more", "r", [10, 9, 0, 1], 1, None);
    bs.ingest(&d, from([10, 9, 0, 1]), now);
    assert_eq!(bs.ignored_warning(now + Duration::from_secs(5)), None);
    bs.ingest(&d, from([10, 9, 0, 1]), now);
    let w = bs.ignored_warning(now + Duration::from_secs(60)).unwrap();
    assert!(w.contains(" 2 datagrams"), "{w}");
    // --watch forgets the silent ones, and then there is room again.
    bs.forget(now + Duration::from_secs(SCAN_FORGET_SECS));
    assert!(bs.shown(true).is_empty());
    bs.ingest(
        &datagram("new", "r", [10, 9, 0, 1], 1, None),
        from([10, 9, 0, 1]),
        now,
    );
    assert_eq!(bs.shown(true).len(), 1);
}

/// `--watch` runs for months: besides its rows, what scan remembers stays bounded.
#[test]
fn what_a_watch_remembers_stays_bounded() {
    let t = Instant::now();
    let key = fleet_key();
    let a = [10, 9, 0, 1];
    // A key holder at one address restarting without end: one row, and seq entries up to
    // the bound, the ones heard longest ago going first.
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    let at = |i: usize| t + Duration::from_millis(i as u64);
    for i in 0..SCAN_SEQS_MAX + 10 {
        bs.ingest(
            &datagram("id", &format!("r{i}"), a, 1, Some(&key)),
            from(a),
            at(i),
        );
    }
    assert_eq!(
        (bs.shown(true).len(), bs.remembered().0),
        (1, SCAN_SEQS_MAX)
    );
    let newest = datagram("id", &format!("r{}", SCAN_SEQS_MAX + 9), a, 1, Some(&key));
    bs.ingest(&newest, from(a), at(SCAN_SEQS_MAX + 10));
    assert!(
        bs.hidden(false).unwrap().contains("1 replayed"),
        "still remembered"
    );
    // Clone pairs of ever new ids (no key needed to send them): each id is warned about
    // once while it has rows, and forgotten with them.
    let mut bs = Boards::new(None, "n".into());
    for round in 0..3u64 {
        let now = t + Duration::from_secs(round * SCAN_FORGET_SECS);
        bs.forget(now);
        for i in 0..100 {
            let id = format!("{round}-{i}");
            bs.ingest(&datagram(&id, "x", a, 1, None), from(a), now);
            bs.ingest(
                &datagram(&id, "y", [10, 9, 0, 2], 1, None),
                from([10, 9, 0, 2]),
                now,
            );
        }
        assert_eq!(bs.mark_clones().len(), 100);
        assert_eq!(bs.mark_clones(), Vec::<String>::new(), "said once");
        assert_eq!(bs.remembered().1, 100);
    }
    bs.forget(t + Duration::from_secs(3 * SCAN_FORGET_SECS));
    assert_eq!(bs.remembered(), (0, 0));
    // One board's id and run sent naming ever new addresses: the row keeps the first few.
    for i in 0..=255 {
        let d = datagram("id", "r", [10, 9, 1, i], 1, None);
        bs.ingest(&d, from([10, 9, 1, i]), t);
    }
    let rows = bs.shown(true);
    assert_eq!((rows.len(), rows[0].addrs.len()), (1, SCAN_ADDRS_MAX));
    assert_eq!(rows[0].addr, "10.9.1.0");
}

/// One id claimed by ever new runs from ever new addresses (clones, or a flood of them):
/// at most SCAN_RUNS_PER_ID rows of it, the rest counted, so no datagram of that id is
/// compared with a thousand rows; the clone warning is said once.
#[test]
fn one_id_keeps_a_few_runs() {
    let now = Instant::now();
    let mut bs = Boards::new(None, "n".into());
    for i in 0..1000u32 {
        let a = [10, 9, (i >> 8) as u8, i as u8];
        bs.ingest(&datagram("id", &format!("r{i}"), a, 1, None), from(a), now);
    }
    bs.ingest(
        &datagram("other", "r", [10, 8, 0, 1], 1, None),
        from([10, 8, 0, 1]),
        now,
    );
    assert_eq!(bs.shown(true).len(), SCAN_RUNS_PER_ID + 1);
    assert_eq!(bs.mark_clones(), vec!["id".to_string()]);
    let w = bs.ignored_warning(now).unwrap();
    assert!(
        w.contains(&format!(" {} datagrams ignored", 1000 - SCAN_RUNS_PER_ID)),
        "{w}"
    );
}

/// `--watch` probes with a new nonce each round: an answer to the last round's probe is
/// still this scan's; one captured rounds ago is `replayed`, even after its run's seq
/// memory was forgotten.
#[test]
fn each_round_has_its_nonce() {
    let t = Instant::now();
    let key = fleet_key();
    let k = Some(&key);
    let a = [10, 9, 0, 1];
    let mut bs = Boards::new(Some(key.clone()), "n1".into());
    let captured = datagram_as("id", "old", a, 7, k, false, Some("n1"));
    bs.ingest(&captured, from(a), t);
    bs.new_round("n2".into());
    let late = datagram_as("id", "old", a, 8, k, false, Some("n1"));
    bs.ingest(&late, from(a), t);
    let rows = bs.shown(false);
    assert_eq!(
        (rows.len(), rows[0].answered),
        (1, true),
        "late answer is this scan's"
    );
    bs.new_round("n3".into());
    // Silent past the forgetting: rows and seq memory gone, a new run of the board is up.
    let later = t + Duration::from_secs(SCAN_FORGET_SECS + 1);
    bs.forget(later);
    bs.ingest(
        &datagram_as("id", "new", a, 0, k, false, Some("n3")),
        from(a),
        later,
    );
    bs.ingest(&captured, from(a), later);
    let rows = bs.shown(false);
    assert_eq!((rows.len(), rows[0].run.as_deref()), (1, Some("new")));
    assert!(bs.hidden(false).unwrap().contains("1 replayed"));
}

/// With a key an unsigned sender cannot make a signed board a clone, nor have one warned
/// about (two unsigned runs of its id at two more addresses); two signed boards of one id
/// at two addresses still are, and two unsigned ones are marked (`--all`) but not warned
/// about: the key vouches for neither.
#[test]
fn with_a_key_only_rows_of_one_trust_class_are_clones() {
    let now = Instant::now();
    let key = fleet_key();
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    let (a, b, c, d) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 0, 4]);
    bs.ingest(&datagram("id1", "r1", a, 1, Some(&key)), from(a), now);
    bs.ingest(&datagram("id1", "fake", b, 1, None), from(b), now);
    assert!(bs.mark_clones().is_empty());
    bs.ingest(&datagram("id1", "fake2", d, 1, None), from(d), now);
    assert!(bs.mark_clones().is_empty());
    assert!(bs
        .shown(true)
        .iter()
        .all(|r| !r.dup_id || r.trust == Trust::Unsigned));
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    bs.ingest(&datagram("id1", "r1", a, 1, Some(&key)), from(a), now);
    bs.ingest(&datagram("id1", "fake", b, 1, None), from(b), now);
    bs.ingest(&datagram("id1", "r2", c, 1, Some(&key)), from(c), now);
    bs.ingest(&datagram("id2", "u1", a, 1, None), from(a), now);
    bs.ingest(&datagram("id2", "u2", d, 1, None), from(d), now);
    assert_eq!(bs.mark_clones(), vec!["id1".to_string()]);
    let dup: Vec<(&str, &str, bool)> = bs
        .shown(true)
        .iter()
        .map(|r| (r.id.as_str(), r.trust.as_str(), r.dup_id))
        .collect();
    assert!(dup.contains(&("id1", "unsigned", false)), "{dup:?}");
    assert_eq!(dup.iter().filter(|x| x.2).count(), 4, "{dup:?}");
}

/// A full table of rows the key rejects gives way to signed boards.
#[test]
fn forged_rows_never_keep_a_signed_board_out() {
    let now = Instant::now();
    let key = fleet_key();
    let bad = FleetKey::parse(b"a forger's guess at the key").unwrap();
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    let f = [10, 9, 0, 66];
    for i in 0..SCAN_BOARDS_MAX + 5 {
        let id = format!("{i:016x}");
        bs.ingest(&datagram(&id, "r", f, 1, Some(&bad)), from(f), now);
    }
    let a = [10, 9, 0, 1];
    bs.ingest(&datagram("mine", "r", a, 1, Some(&key)), from(a), now);
    let shown = bs.shown(false);
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].id, "mine");
    assert_eq!(bs.shown(true).len(), SCAN_BOARDS_MAX);
    // Unsigned rows cannot push signed ones out, nor forged ones each other.
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    for i in 0..SCAN_BOARDS_MAX {
        let id = format!("{i:016x}");
        bs.ingest(&datagram(&id, "r", a, 1, Some(&key)), from(a), now);
    }
    bs.ingest(&datagram("u", "r", f, 1, None), from(f), now);
    assert_eq!(bs.shown(false).len(), SCAN_BOARDS_MAX);
    assert!(bs.ignored_warning(now).is_some());
}

/// An earlier run's datagram re-sent from the board's own address (its goodbye, or a
/// beacon once the current run has answered this scan's probe) is `replayed` and leaves
/// the current row alone; a real restart (goodbye, then the new run) replaces it.
#[test]
fn an_earlier_runs_datagram_does_not_replace_the_current_run() {
    let now = Instant::now();
    let key = fleet_key();
    let k = Some(&key);
    let a = [10, 0, 0, 1];
    let mut bs = Boards::new(Some(key.clone()), "n1".into());
    bs.ingest(&datagram("id", "new", a, 5, k), from(a), now);
    bs.ingest(
        &datagram_as("id", "old", a, 99, k, true, None),
        from(a),
        now,
    );
    let row = |bs: &Boards| {
        let v = bs.shown(false);
        assert_eq!(v.len(), 1, "one signed row");
        (v[0].run.clone().unwrap(), v[0].bye, v[0].seq)
    };
    assert_eq!(row(&bs), ("new".into(), false, 5));
    assert!(bs.hidden(false).unwrap().contains("1 replayed"));
    // Once the current run answered this scan's probe, an older run's beacon is stale.
    bs.ingest(
        &datagram_as("id", "new", a, 6, k, false, Some("n1")),
        from(a),
        now,
    );
    bs.ingest(&datagram("id", "old", a, 98, k), from(a), now);
    assert_eq!(row(&bs), ("new".into(), false, 6));
    // A seq older than the newest heard from that run is a copy too.
    bs.ingest(&datagram("id", "new", a, 3, k), from(a), now);
    assert_eq!(row(&bs), ("new".into(), false, 6));
    // A restart: the current run says goodbye, then the next run begins.
    bs.ingest(&datagram_as("id", "new", a, 7, k, true, None), from(a), now);
    assert_eq!(row(&bs), ("new".into(), true, 7));
    bs.ingest(&datagram("id", "next", a, 0, k), from(a), now);
    assert_eq!(row(&bs), ("next".into(), false, 0));
    // A crash (no goodbye): the new run's beacon replaces a run that has not answered
    // this scan's probe, and its answer replaces one that has.
    let mut bs = Boards::new(Some(key.clone()), "n2".into());
    bs.ingest(&datagram("id", "r1", a, 4, k), from(a), now);
    bs.ingest(&datagram("id", "r2", a, 0, k), from(a), now);
    assert_eq!(row(&bs).0, "r2");
    bs.ingest(
        &datagram_as("id", "r2", a, 1, k, false, Some("n2")),
        from(a),
        now,
    );
    bs.ingest(&datagram("id", "r3", a, 0, k), from(a), now);
    assert_eq!(row(&bs).0, "r2", "held back until it answers a probe");
    bs.ingest(
        &datagram_as("id", "r3", a, 1, k, false, Some("n2")),
        from(a),
        now,
    );
    assert_eq!(row(&bs).0, "r3");
    assert_eq!(
        bs.hidden(false),
        None,
        "what was held back is not left as replayed"
    );
}

#[test]
fn an_unusable_addr_leaves_the_source_and_an_id_is_a_string() {
    let now = Instant::now();
    let src = from([10, 9, 0, 7]);
    let with = |addr: &str| {
        let d = format!("{{\"tether\":1,\"id\":\"x\",\"port\":4545,\"addr\":\"{addr}\"}}");
        decode(d.as_bytes(), src, now).unwrap().addr
    };
    for bad in [
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "fe80::1",
    ] {
        assert_eq!(with(bad), "10.9.0.7", "{bad}");
    }
    assert_eq!(with("10.9.0.8"), "10.9.0.8");
    assert!(decode(b"{\"tether\":1,\"id\":12345,\"port\":4545}", src, now).is_none());
}

#[test]
fn a_long_address_widens_its_column_and_rows_stay_in_line() {
    let now = Instant::now();
    let mut b = decode(
        b"{\"tether\":1,\"id\":\"x\",\"port\":4545}",
        from([10, 9, 0, 7]),
        now,
    )
    .unwrap();
    b.addr = "fe80::a8c1:abff:fe12:3456%vx-b".into();
    let short = decode(
        b"{\"tether\":1,\"id\":\"y\",\"port\":4545}",
        from([10, 9, 0, 8]),
        now,
    )
    .unwrap();
    let t = table(&[&b, &short], now, Duration::from_secs(15), false);
    let at: Vec<usize> = t.lines().map(|l| l.find(" 4545 ").unwrap_or(0)).collect();
    let head = t.lines().next().unwrap().find(" PORT ").unwrap();
    assert!(at.iter().skip(1).all(|&p| p == head), "{t}");
}

/// A board heard over IPv4 and IPv6 is one board at both: a restart first heard over
/// the other family replaces it (no clone), and an earlier run's goodbye re-sent from
/// the address of the other family is `replayed`.
#[test]
fn a_board_heard_at_two_addresses_restarts_as_one_board() {
    let now = Instant::now();
    let key = fleet_key();
    let k = Some(&key);
    let v4 = [10, 0, 0, 1];
    let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let from6 = SocketAddr::V6(SocketAddrV6::new(ll, 4546, 0, 0));
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    let hear = |bs: &mut Boards, run: &str, seq: u64, v6: bool, bye: bool, nonce| match v6 {
        false => bs.ingest(
            &datagram_as("id", run, v4, seq, k, bye, nonce),
            from(v4),
            now,
        ),
        true => bs.ingest(&datagram_as("id", run, ll, seq, k, bye, nonce), from6, now),
    };
    hear(&mut bs, "b", 1, false, false, Some("n"));
    hear(&mut bs, "b", 1, true, false, Some("n"));
    assert_eq!(bs.shown(false).len(), 1, "one board, two addresses");
    // An old run's goodbye over IPv6: replayed, the board stays up.
    hear(&mut bs, "a", 50, true, true, None);
    let rows = bs.shown(false);
    assert_eq!(
        (rows.len(), rows[0].run.as_deref(), rows[0].bye),
        (1, Some("b"), false)
    );
    // A restart after a crash, heard first over IPv6 (answering the probe).
    hear(&mut bs, "c", 0, true, false, Some("n"));
    assert!(bs.mark_clones().is_empty(), "a restart is not a clone");
    let rows = bs.shown(false);
    assert_eq!((rows.len(), rows[0].run.as_deref()), (1, Some("c")));
    hear(&mut bs, "c", 0, false, false, Some("n"));
    assert!(bs.mark_clones().is_empty());
    assert_eq!(bs.shown(false).len(), 1);
}

/// Each family's beacons name the ports reachable over it: a dual-stack board whose IPv6
/// beacons name no metrics port stays in the target file at its IPv4 address, whichever
/// family was heard last; a board heard only over IPv6 without one is not listed.
#[test]
fn a_dual_stack_board_keeps_its_ipv4_ports() {
    let now = Instant::now();
    let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let beacon = |id: &str, addr: IpAddr, metrics: Option<u16>| {
        encoded(
            &beacon::Fields {
                metrics,
                ..fields(id, "r", addr, 1)
            },
            None,
        )
    };
    let from6 = SocketAddr::V6(SocketAddrV6::new(ll, 4546, 0, 0));
    let v4 = IpAddr::from([10, 0, 0, 1]);
    let mut bs = Boards::new(None, "n".into());
    bs.ingest(&beacon("dual", v4, Some(9545)), from([10, 0, 0, 1]), now);
    bs.ingest(&beacon("dual", ll.into(), None), from6, now);
    bs.ingest(&beacon("v6only", ll.into(), None), from6, now);
    let sd = prometheus_sd(bs.shown(false), now, Duration::from_secs(15));
    assert!(
        sd.contains("\"10.0.0.1:9545\"") && !sd.contains("v6only"),
        "{sd}"
    );
    assert_eq!(bs.shown(false).len(), 2);
    // Renumbered by DHCP: once the old address has not been heard for a minute while the
    // board was, the row is at the new one (and so is its target).
    let (v4b, at) = (IpAddr::from([10, 0, 0, 42]), |s| {
        now + Duration::from_secs(s)
    });
    bs.ingest(&beacon("dual", ll.into(), None), from6, at(30));
    bs.ingest(
        &beacon("dual", v4b, Some(9545)),
        from([10, 0, 0, 42]),
        at(30),
    );
    let dual = |bs: &Boards| {
        let b = bs
            .shown(false)
            .into_iter()
            .find(|b| b.id == "dual")
            .unwrap();
        (b.addr.clone(), b.addrs.len(), b.metrics)
    };
    assert_eq!(
        dual(&bs),
        ("10.0.0.1".into(), 3, Some(9545)),
        "30 s: both kept"
    );
    bs.ingest(
        &beacon("dual", v4b, Some(9545)),
        from([10, 0, 0, 42]),
        at(61),
    );
    assert_eq!(dual(&bs), ("10.0.0.42".into(), 2, Some(9545)));
    let sd = prometheus_sd(bs.shown(false), at(61), Duration::from_secs(15));
    assert!(
        sd.contains("\"10.0.0.42:9545\"") && !sd.contains("10.0.0.1:"),
        "{sd}"
    );
    // IPv4 gone: heard over IPv6 only, where it serves no metrics: no target.
    bs.ingest(&beacon("dual", ll.into(), None), from6, at(200));
    assert_eq!(dual(&bs), ("fe80::1".into(), 1, None));
}

/// `--watch` keeps one nonce: a probe answer of a run that has since restarted, re-sent
/// later in the same watch, is a copy (the seq memory outlives the replaced run's row).
#[test]
fn in_a_watch_an_earlier_runs_answer_stays_a_copy_after_a_restart() {
    let now = Instant::now();
    let key = fleet_key();
    let k = Some(&key);
    let a = [10, 0, 0, 1];
    let mut bs = Boards::new(Some(key.clone()), "w".into());
    let captured = datagram_as("id", "b", a, 5, k, false, Some("w"));
    bs.ingest(&captured, from(a), now);
    bs.ingest(&datagram_as("id", "b", a, 6, k, true, None), from(a), now);
    bs.ingest(
        &datagram_as("id", "c", a, 0, k, false, Some("w")),
        from(a),
        now,
    );
    bs.forget(now + Duration::from_secs(2));
    bs.ingest(&captured, from(a), now + Duration::from_secs(3));
    let rows = bs.shown(false);
    assert_eq!((rows.len(), rows[0].run.as_deref()), (1, Some("c")));
    assert!(bs.hidden(false).unwrap().contains("1 replayed"));
    // Silent for SCAN_FORGET_SECS, a run is forgotten with its row.
    bs.forget(now + Duration::from_secs(SCAN_FORGET_SECS + 10));
    assert!(bs.shown(true).is_empty() && bs.remembered() == (0, 0));
}

/// A run heard only after another run of its id went quiet, at an address the old one
/// was never heard at (a restart onto another link or family), is not a clone; heard
/// while the old run still is, it is.
#[test]
fn a_restart_at_a_new_address_is_not_a_clone_two_live_runs_are() {
    let t = Instant::now();
    let (a, b) = ([10, 0, 0, 1], [10, 0, 1, 1]);
    let mut bs = Boards::new(None, "n".into());
    bs.ingest(&datagram("id", "old", a, 1, None), from(a), t);
    bs.ingest(
        &datagram("id", "old", a, 2, None),
        from(a),
        t + Duration::from_secs(1),
    );
    bs.ingest(
        &datagram("id", "new", b, 0, None),
        from(b),
        t + Duration::from_secs(2),
    );
    assert!(bs.mark_clones().is_empty(), "one run after the other");
    assert!(bs.shown(true).iter().all(|r| !r.dup_id));
    bs.ingest(
        &datagram("id", "old", a, 3, None),
        from(a),
        t + Duration::from_secs(3),
    );
    assert_eq!(bs.mark_clones(), vec!["id".to_string()], "both alive");
}

/// A row's ports are those named at its address: a datagram of the same board (id and run)
/// from another address, signed or not, adds that address to `addrs` but does not pair its
/// ports with `addr` (a review had a key holder at another address name port 22 for a
/// signed board at its own address, and Prometheus's target became ADDR:22).
#[test]
fn ports_come_from_the_datagrams_heard_at_the_rows_address() {
    let now = Instant::now();
    let key = fleet_key();
    let mut bs = Boards::new(Some(key.clone()), "n".into());
    let (a, m) = ([10, 0, 0, 1], [10, 0, 0, 9]);
    let own = beacon::Fields {
        metrics: Some(9545),
        ..fields("id1", "r1", a.into(), 1)
    };
    bs.ingest(&encoded(&own, Some(&key)), from(a), now);
    let other = beacon::Fields {
        port: 22,
        metrics: Some(22),
        ..fields("id1", "r1", m.into(), 2)
    };
    bs.ingest(&encoded(&other, Some(&key)), from(m), now);
    let rows = bs.shown(false);
    assert_eq!(rows.len(), 1);
    let r = rows[0];
    assert_eq!((r.addr.as_str(), r.addrs.len()), ("10.0.0.1", 2));
    assert_eq!((r.port, r.metrics), (4545, Some(9545)), "{:?}", r.addrs);
    // Heard again at its address, with other listeners: those are taken.
    let moved = beacon::Fields {
        port: 4600,
        ..fields("id1", "r1", a.into(), 3)
    };
    bs.ingest(&encoded(&moved, Some(&key)), from(a), now);
    assert_eq!(bs.shown(false)[0].port, 4600);
}
