//! Trust on a shared LAN (issue 8): a fleet key signs every datagram, `tether scan
//! --fleet-key` tells signed boards from forged, altered and replayed ones, and boards
//! cloned from one SD-card image (same /etc/machine-id) are shown as two boards.
//!
//! Topology, created and removed by each test (root only; skipped otherwise, failed in CI):
//!
//! ```text
//!   ns b1 10.241.T.1 ─┐
//!   ns b2 10.241.T.2 ─┤
//!   ns b3 10.241.T.3 ─┼── bridge in ns s (the scanner, 10.241.T.100)
//!   ns f  10.241.T.9 ─┘   (f: the forger, only in the signing test)
//! ```
//! Each board runs under `unshare -m` with its own file bind-mounted on /etc/machine-id,
//! which is how a board gets its id; two boards given the same file are clones.

mod common;
use common::*;
use serde_json::Value;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The namespaces of one test; deleted on drop (their veths and the bridge go with them).
struct Lan {
    scanner: Netns,
    boards: Vec<Netns>,
    forger: Option<Netns>,
    /// Third octet of 10.241.T.0/24: one subnet per test.
    subnet: u8,
    dir: PathBuf,
}

impl Lan {
    fn new(tag: &str, subnet: u8, boards: usize, forger: bool) -> Lan {
        let id = std::process::id() % 100_000;
        let ns = |x: &str| Netns::new(format!("tk{tag}{x}{id}"));
        let lan = Lan {
            scanner: ns("s"),
            boards: (1..=boards).map(|i| ns(&format!("b{i}"))).collect(),
            forger: forger.then(|| ns("f")),
            subnet,
            dir: temp_dir(&format!("trust{tag}")),
        };
        let members: Vec<(&Netns, String, String, String)> = lan
            .boards
            .iter()
            .zip(1..)
            .chain(lan.forger.iter().map(|f| (f, 9)))
            .map(|(n, h)| {
                let cidr = format!("{}/24", lan.addr(h));
                (n, lan.ifname(h), format!("p{tag}{h}{id}"), cidr)
            })
            .collect();
        let hub = format!("{}/24", lan.addr(100));
        bridge_lan(&lan.scanner, &format!("br{tag}{id}"), &hub, &members);
        lan
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 241, self.subnet, host)
    }

    /// The interface of host `.N` inside its namespace.
    fn ifname(&self, host: u8) -> String {
        format!("e{}n{host}", self.subnet)
    }

    /// Writes `contents` to a file in the test directory and returns its path.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Starts board `n` (1-based) with `machine_id` bind-mounted on /etc/machine-id.
    fn board(&self, n: usize, machine_id: &Path, extra: &[&str]) -> Agent {
        self.board_as(n, machine_id, None, extra)
    }

    /// [`Lan::board`], with its own host name (a UTS namespace) when given.
    fn board_as(&self, n: usize, machine_id: &Path, host: Option<&str>, extra: &[&str]) -> Agent {
        let dir = temp_dir("trustboard");
        let mut args =
            loopback_agent_args(&dir.join("t.sock"), &["--iface", &self.ifname(n as u8)]);
        if !extra.contains(&"--interval") {
            args.extend(["--interval".to_string(), "1".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &*self.boards[n - 1]]);
        cmd.args([
            "unshare",
            "-m",
            "-u",
            "--propagation",
            "private",
            "sh",
            "-c",
        ]);
        cmd.arg(concat!(
            "mount --bind \"$0\" /etc/machine-id && ",
            // dbus's copy too, where there is one: a board without a usable machine id
            // in /etc would take the host's from there.
            "{ [ ! -e /var/lib/dbus/machine-id ] || mount --bind \"$0\" /var/lib/dbus/machine-id; } && ",
            "{ [ -z \"$BOARD_HOST\" ] || printf %s \"$BOARD_HOST\" > /proc/sys/kernel/hostname; } && ",
            "exec \"$@\""
        ));
        cmd.env("BOARD_HOST", host.unwrap_or(""));
        cmd.arg(machine_id);
        cmd.args(runner()).arg(BIN).args(&args);
        Agent::spawn_command(cmd, dir, &[])
            .unwrap_or_else(|f| panic!("board {n}: {:?} {} {}", f.status, f.stdout, f.stderr))
    }

    /// `tether scan ARGS` in the scanner namespace: (exit code, stdout, stderr).
    fn scan(&self, args: &[&str]) -> (i32, String, String) {
        let out = tether_cmd_in(Some(&self.scanner), &[&["scan"], args].concat()).output_bounded();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `tether scan --json ARGS`: (exit code, rows, stderr).
    fn scan_json(&self, args: &[&str]) -> (i32, Vec<Value>, String) {
        let (code, out, err) = self.scan(&[&["--json"], args].concat());
        let rows: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("scan --json {args:?} gave no JSON ({e}): {out} {err}"));
        (code, rows.as_array().unwrap().clone(), err)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status_id(a: &Agent) -> String {
    ok_json(&a.unix().req("STATUS"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn field<'a>(rows: &'a [Value], k: &str) -> Vec<&'a str> {
    rows.iter().map(|r| r[k].as_str().unwrap_or("?")).collect()
}

/// Captures one beacon sent by each of `from` (in namespace `ns`, port 4546), not a probe
/// answer.
fn capture(ns: &str, from: Vec<Ipv4Addr>) -> Vec<Vec<u8>> {
    capture_where(ns, from, |d| !d.windows(7).any(|w| w == b"\"nonce\""))
        .join()
        .unwrap()
}

/// Listens in namespace `ns` (port 4546), on a thread of its own, for one datagram from
/// each of `from` that `pick` takes; the thread returns them.
fn capture_where(
    ns: &str,
    from: Vec<Ipv4Addr>,
    pick: fn(&[u8]) -> bool,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:4546").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got: Vec<Option<Vec<u8>>> = vec![None; from.len()];
        let end = Instant::now() + slack(Duration::from_secs(6));
        let mut buf = [0u8; 2048];
        while got.iter().any(Option::is_none) && Instant::now() < end {
            if let Ok((n, src)) = s.recv_from(&mut buf) {
                let d = &buf[..n];
                if let Some(i) = from.iter().position(|a| src.ip() == *a) {
                    if d.starts_with(b"{") && pick(d) {
                        got[i] = Some(d.to_vec());
                    }
                }
            }
        }
        got.into_iter()
            .map(|g| g.expect("a beacon from every board"))
            .collect()
    })
}

/// Checks the README's rule: the tag is `,"sig":"<64 hex>"` before the final `}` and is
/// HMAC-SHA256(key, the datagram without those 73 bytes).
fn tag_follows_the_documented_rule(d: &[u8], key: &[u8]) -> bool {
    let n = d.len();
    if n < 74 || !d[n - 74..].starts_with(b",\"sig\":\"") || !d.ends_with(b"\"}") {
        return false;
    }
    let unsigned = [&d[..n - 74], b"}"].concat();
    let tag = tether::crypto::hmac_sha256(key, &[&unsigned]);
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    d[n - 66..n - 2] == *hex.as_bytes()
}

const KEY: &str = "correct-horse-battery-staple-fleet-1";

#[test]
fn fleet_key_signs_and_scan_tells_signed_forged_altered_replayed() {
    if !can_netns() {
        return;
    }
    let lan = Lan::new("g", 71, 3, true);
    let forger = lan.forger.as_deref().unwrap();
    let keyfiles: Vec<PathBuf> = (1..=3)
        .map(|i| lan.file(&format!("key{i}"), &format!("  {KEY}\n")))
        .collect();
    let boards: Vec<Agent> = (1..=3)
        .map(|i| {
            let mid = lan.file(&format!("mid{i}"), &format!("{:032x}\n", 0xabc0 + i));
            lan.board(i, &mid, &["--fleet-key", keyfiles[i - 1].to_str().unwrap()])
        })
        .collect();
    let ids: Vec<String> = boards.iter().map(status_id).collect();
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3
    );

    // What the agents send follows the documented wire rule, run and sig included.
    let got = capture(forger, vec![lan.addr(1), lan.addr(2)]);
    for d in &got {
        assert!(d.len() <= 512);
        assert!(
            tag_follows_the_documented_rule(d, KEY.as_bytes()),
            "{}",
            String::from_utf8_lossy(d)
        );
        let v: Value = serde_json::from_slice(d).unwrap();
        assert_eq!(v["run"].as_str().unwrap().len(), 16, "{v}");
    }
    // A probe answer is signed too, nonce included.
    let answer = in_ns(&lan.scanner, {
        let to = lan.addr(3);
        move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let mut p = b"TETHER? probe-nonce-1".to_vec();
            p.resize(512, b' ');
            s.send_to(&p, (to, 4546)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = retrying(|| s.recv_from(&mut buf)).expect("a probe answer");
            buf[..n].to_vec()
        }
    })
    .join()
    .unwrap();
    assert!(tag_follows_the_documented_rule(&answer, KEY.as_bytes()));
    assert!(String::from_utf8_lossy(&answer).contains("\"nonce\":\"probe-nonce-1\""));

    // The forger, from 10.241.T.9: re-sends board 1's genuine beacon (replayed), sends
    // board 1's beacon with one byte altered, and board 2's with a made-up tag (forged).
    let genuine = got[0].clone();
    let mut altered = genuine.clone();
    let at = altered
        .windows(9)
        .position(|w| w == b"\"uptime\":")
        .unwrap()
        + 9;
    altered[at] = if altered[at] == b'7' { b'8' } else { b'7' };
    let mut made_up = got[1].clone();
    let n = made_up.len();
    made_up[n - 66..n - 2].fill(b'0');
    let bcast = Ipv4Addr::new(10, 241, lan.subnet, 255);
    let until = Instant::now() + slack(Duration::from_secs(9));
    let forging = in_ns(forger, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_broadcast(true).unwrap();
        while Instant::now() < until {
            for d in [&genuine, &altered, &made_up] {
                s.send_to(d, (bcast, 4546)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let scan_key = lan.file("scankey", KEY);
    let key = scan_key.to_str().unwrap();

    // With the key: the three real boards, signed; nothing else listed.
    let (code, rows, err) = lan.scan_json(&["--fleet-key", key, "-t", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        field(&rows, "trust").iter().all(|t| *t == "signed"),
        "{rows:?}"
    );
    let mut addrs = field(&rows, "addr");
    addrs.sort();
    assert_eq!(addrs, ["10.241.71.1", "10.241.71.2", "10.241.71.3"]);
    assert!(rows.iter().all(|r| r["dup_id"] == false));
    assert!(
        err.lines()
            .any(|l| l.starts_with("note: hidden: ") && l.contains(" forged")),
        "{err}"
    );
    // `--watch` says so too (it never did: a forger went unnoticed by a watching scan).
    let mut watch = tether_cmd_in(
        Some(&lan.scanner),
        &["scan", "--watch", "-t", "1", "--fleet-key", key],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(slack(Duration::from_millis(2500)));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("note: hidden: ") && l.contains(" forged")),
        "--watch: {err}"
    );

    // --all shows what the forger sent, from where it really came.
    let (code, rows, err) = lan.scan_json(&["--fleet-key", key, "--all", "-t", "2"]);
    assert_eq!(code, 0, "{err}");
    let has = |trust: &str, id: &str, addr: &str| {
        rows.iter()
            .any(|r| r["trust"] == trust && r["id"] == id && r["addr"] == addr)
    };
    let forger_addr = "10.241.71.9";
    assert!(has("replayed", &ids[0], forger_addr), "{rows:#?}");
    assert!(
        has("forged", &ids[0], forger_addr),
        "altered byte: {rows:#?}"
    );
    assert!(
        has("forged", &ids[1], forger_addr),
        "made-up tag: {rows:#?}"
    );
    assert_eq!(
        field(&rows, "trust")
            .iter()
            .filter(|t| **t == "signed")
            .count(),
        3
    );
    assert!(
        rows.iter().all(|r| r["dup_id"] == false),
        "forgers are not clones"
    );

    // The table has a TRUST column.
    let (code, table, _) = lan.scan(&["--fleet-key", key, "--all", "-t", "1"]);
    assert_eq!(code, 0);
    assert!(table.lines().next().unwrap().ends_with("TRUST"), "{table}");
    assert!(
        table.contains(" forged") && table.contains(" signed"),
        "{table}"
    );
    forging.join().unwrap();

    // Another key: nothing is signed: exit 69 and nothing listed; --all lists them, exit 0.
    let wrong = lan.file("wrong", "a-different-fleet-key-0000");
    let wrong = wrong.to_str().unwrap();
    let (code, rows, err) = lan.scan_json(&["--fleet-key", wrong, "-t", "1"]);
    assert_eq!(code, 69, "{rows:?} {err}");
    assert!(rows.is_empty());
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    let (code, rows, err) = lan.scan_json(&["--fleet-key", wrong, "--all", "-t", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(field(&rows, "trust").iter().all(|t| *t == "forged"));

    // Without a key nothing changes but "trust":"unchecked" (--all changes nothing).
    for args in [&["-t", "1"][..], &["-t", "1", "--all"]] {
        let (code, rows, err) = lan.scan_json(args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(field(&rows, "trust").iter().all(|t| *t == "unchecked"));
    }

    // Signed beacons and signed probe answers touched no heap.
    for b in &boards {
        let stats = b.unix().req("STATS");
        assert_eq!(json_u64(&stats, "allocs_since_ready"), Some(0), "{stats}");
        assert!(json_u64(&stats, "probes_answered").unwrap() >= 3, "{stats}");
        assert!(json_u64(&stats, "beacons_sent").unwrap() >= 3, "{stats}");
    }

    // Rotation: board 1 gets a new key and SIGHUP; a scan with the old key no longer
    // lists it, one with the new key does. A bad key file at SIGHUP keeps the key.
    let new_key = "the-next-fleet-key-2027-rotation";
    std::fs::write(&keyfiles[0], new_key).unwrap();
    boards[0].signal(1);
    std::thread::sleep(Duration::from_millis(300));
    let (_, rows, _) = lan.scan_json(&["--fleet-key", key, "-t", "1.5"]);
    assert!(!field(&rows, "id").contains(&ids[0].as_str()), "{rows:?}");
    assert_eq!(rows.len(), 2);
    let new_file = lan.file("newkey", new_key);
    let new_file = new_file.to_str().unwrap();
    let (code, rows, _) = lan.scan_json(&["--fleet-key", new_file, "-t", "1.5"]);
    assert_eq!((code, field(&rows, "id")), (0, vec![ids[0].as_str()]));
    std::fs::write(&keyfiles[0], "short").unwrap();
    boards[0].signal(1);
    std::thread::sleep(Duration::from_millis(300));
    let (code, rows, _) = lan.scan_json(&["--fleet-key", new_file, "-t", "1.5"]);
    assert_eq!((code, field(&rows, "id")), (0, vec![ids[0].as_str()]));
    // A bad key at SIGHUP is steady-state work too: said without a heap allocation.
    assert_eq!(boards[0].stats()["allocs_since_ready"], 0);
    let mut boards = boards;
    let (status, err) = boards.remove(0).stop();
    assert_eq!(status.code(), Some(0));
    assert!(err.contains("fleet key reloaded"), "{err}");
    assert!(err.contains("keeping the previous fleet key"), "{err}");
}

#[test]
fn clones_are_two_rows_with_dup_id_and_one_warning() {
    if !can_netns() {
        return;
    }
    let lan = Lan::new("c", 72, 3, false);
    let key = lan.file("key", KEY);
    let image = lan.file("mid-image", "5e1f0c10e5e1f0c10e5e1f0c10e5e1f0\n");
    let zeros = lan.file("mid-zeros", &"0".repeat(32));
    let k = ["--fleet-key", key.to_str().unwrap()];
    let a = lan.board(1, &image, &k);
    let b = lan.board(2, &image, &k);
    let c = lan.board(3, &zeros, &k);
    let id = status_id(&a);
    assert_eq!(status_id(&b), id, "same machine-id, same id");

    for args in [
        &["--fleet-key", key.to_str().unwrap(), "-t", "2"][..],
        &["-t", "2"],
    ] {
        let (code, rows, err) = lan.scan_json(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(rows.len(), 3, "{args:?}: {rows:#?}");
        let clones: Vec<&Value> = rows.iter().filter(|r| r["id"] == id.as_str()).collect();
        assert_eq!(clones.len(), 2, "{rows:#?}");
        assert!(clones.iter().all(|r| r["dup_id"] == true), "{rows:#?}");
        assert_ne!(clones[0]["run"], clones[1]["run"]);
        assert_ne!(clones[0]["addr"], clones[1]["addr"]);
        let other = rows.iter().find(|r| r["id"] != id.as_str()).unwrap();
        assert_eq!(other["dup_id"], false);
        let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
        assert_eq!(warnings.len(), 1, "{err}");
        let w = warnings[0];
        assert!(w.contains(&id) && w.contains("/etc/machine-id"), "{w}");
        assert!(w.contains("systemd-machine-id-setup"), "{w}");
    }
    // --watch keeps both clones as rows.
    let mut watch = tether_cmd_in(
        Some(&lan.scanner),
        &["scan", "-t", "1", "--watch", "--json"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let mut out = std::io::BufReader::new(watch.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let rows: Value = serde_json::from_str(&line).unwrap();
        let n = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["id"] == id.as_str())
            .count();
        assert_eq!(n, 2, "{rows}");
    }
    let _ = watch.kill();
    let _ = watch.wait();

    // A placeholder machine-id is none: called out at start, and the id comes from the
    // next source (here the beacon interface's MAC), not from the zeros every board of
    // that image would share.
    let zeros_id = status_id(&c);
    let (_, err) = c.stop();
    assert!(err.contains("no usable machine id"), "{err}");
    assert!(
        err.contains("the board id comes from the beacon interface's MAC"),
        "{err}"
    );
    let hashed_zeros = "1570372731a986b6"; // SHA-256("tether-id-v1:" + 32 zeros): before
    assert_ne!(zeros_id, hashed_zeros);
    let (_, err) = a.stop();
    assert!(!err.contains("no usable machine id"), "{err}");
}

#[test]
fn bad_fleet_key_is_exit_78_for_agent_and_scan() {
    let dir = temp_dir("badkey");
    let short = dir.join("short");
    std::fs::write(&short, "  fifteen-bytes!\n").unwrap();
    let missing = dir.join("missing");
    for key in [&short, &missing] {
        let k = key.to_str().unwrap();
        let args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon", "--fleet-key", k]);
        let (code, out, err) = run(&args);
        assert_eq!(code, 78, "agent --fleet-key {k}: {out} {err}");
        assert_eq!(error_lines(&err).len(), 1, "{err}");
        assert!(err.contains("--fleet-key"), "{err}");
        // scan checks the key before it opens a socket: nothing is sent.
        let (code, _, err) = run(&["scan", "--fleet-key", k, "-t", "0.1"]);
        assert_eq!(code, 78, "scan --fleet-key {k}: {err}");
        assert_eq!(error_lines(&err).len(), 1, "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_sd_with_a_fleet_key_lists_only_signed_boards() {
    if !can_netns() {
        return;
    }
    let lan = Lan::new("p", 73, 2, false);
    let key = lan.file("key", KEY);
    let other = lan.file("other", "a-different-fleet-key-0000");
    let m = ["--metrics", "0.0.0.0:0", "--fleet-key"];
    let boards: Vec<Agent> = [&key, &other]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mid = lan.file(&format!("mid{i}"), &format!("{:032x}\n", 0xd00 + i));
            lan.board(i + 1, &mid, &[&m[..], &[k.to_str().unwrap()]].concat())
        })
        .collect();
    let port = |a: &Agent| {
        let m = a
            .ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("metrics="));
        m.and_then(|m| m.rsplit(':').next()).unwrap().to_string()
    };
    let sd = lan.dir.join("targets.json");
    let sd_arg = sd.to_str().unwrap();
    let targets = |args: &[&str]| {
        let (code, _, err) = lan.scan(&[&["--prometheus-sd", sd_arg, "-t", "2"], args].concat());
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&sd).unwrap()).unwrap();
        let mut t: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["targets"][0].to_string())
            .collect();
        t.sort();
        t
    };
    // Without a key both boards serve metrics and are listed ...
    let signed = format!("\"10.241.73.1:{}\"", port(&boards[0]));
    let forged = format!("\"10.241.73.2:{}\"", port(&boards[1]));
    assert_eq!(targets(&[]), [signed.clone(), forged]);
    // ... with it, only the board signed with that key (board 2 signs with another).
    assert_eq!(targets(&["--fleet-key", key.to_str().unwrap()]), [signed]);
}

#[test]
fn a_flood_of_forged_beacons_does_not_keep_scan_past_its_window() {
    // Every forged beacon costs the scanner an HMAC; a sender faster than that must not
    // keep `tether scan -t 1` reading past its one-second window.
    if !can_netns() {
        return;
    }
    let lan = Lan::new("h", 74, 1, true);
    let forger = lan.forger.as_deref().unwrap();
    let key = lan.file("key", KEY);
    let mid = lan.file("mid", &format!("{:032x}\n", 0xf100d));
    let board = lan.board(1, &mid, &["--fleet-key", key.to_str().unwrap()]);
    let mut forged = capture(forger, vec![lan.addr(1)]).remove(0);
    let n = forged.len();
    forged[n - 66..n - 2].fill(b'0');
    let scanner = std::net::SocketAddr::from((lan.addr(100), 4546));
    let flood_for = slack(Duration::from_secs(8));
    let flood = in_ns(forger, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let end = Instant::now() + flood_for;
        let mut sent = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                sent += u64::from(s.send_to(&forged, scanner).is_ok());
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (code, rows, err) = lan.scan_json(&["--fleet-key", key.to_str().unwrap(), "-t", "1"]);
    let took = t0.elapsed();
    let flooding = !flood.is_finished();
    let sent = flood.join().unwrap();
    eprintln!("scan -t 1 under a flood of {sent} forged beacons took {took:?}");
    assert!(
        took < slack(Duration::from_secs(3)),
        "scan -t 1 took {took:?}"
    );
    assert!(flooding, "the flood ended before the scan did: {took:?}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&rows, "addr"), ["10.241.74.1"], "{rows:?}");
    let stats = board.unix().req("STATS");
    assert_eq!(json_u64(&stats, "allocs_since_ready"), Some(0), "{stats}");
}

#[test]
fn a_non_ascii_host_name_reaches_status_and_scan_intact() {
    // The agent writes JSON in printable ASCII; a UTF-8 host name must come back out of
    // any JSON reader (and scan's own) as the same name, not one escape per byte.
    if !can_netns() {
        return;
    }
    let lan = Lan::new("u", 75, 1, false);
    let mid = lan.file("mid", &format!("{:032x}\n", 0x75));
    let name = "pi-k\u{fc}che-\u{1f600}";
    let board = lan.board_as(1, &mid, Some(name), &[]);
    let status = board.unix().req("STATUS");
    assert!(status.is_ascii(), "{status}");
    assert_eq!(ok_json(&status)["host"], name, "{status}");
    let (code, rows, err) = lan.scan_json(&["-t", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&rows, "host"), [name], "{rows:?}");
    let (code, table, err) = lan.scan(&["-t", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains(name), "{table}");
}

#[test]
fn a_restarted_boards_old_goodbye_re_sent_from_its_address_is_replayed() {
    // A captured goodbye of a board's earlier run, re-sent from the board's own address
    // (the forger takes that address too), must not mark the running board as gone.
    if !can_netns() {
        return;
    }
    let lan = Lan::new("r", 76, 1, true);
    let forger = lan.forger.as_deref().unwrap().to_string();
    let key = lan.file("key", KEY);
    let key = key.to_str().unwrap();
    let mid = lan.file("mid", &format!("{:032x}\n", 0xb7e));
    let board_ip = lan.addr(1);
    // Capture the goodbye board 1 says when it stops.
    let first = lan.board(1, &mid, &["--fleet-key", key]);
    let id = status_id(&first);
    let capture_bye = capture_where(&forger, vec![board_ip], |d| {
        d.windows(10).any(|w| w == b"\"bye\":true")
    });
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = first.stop();
    assert_eq!(status.code(), Some(0));
    let bye = capture_bye.join().unwrap().remove(0);
    // The board runs again: the same id, a new run; beaconing once a minute, so within a
    // scan it is heard only in its answers to the scan's probes (the last by ~0.9 s).
    let board = lan.board(1, &mid, &["--fleet-key", key, "--interval", "60"]);
    assert_eq!(status_id(&board), id);
    lan.forger.as_ref().unwrap().ip(&[
        "addr",
        "add",
        &format!("{board_ip}/32"),
        "dev",
        &lan.ifname(9),
    ]);
    // The old goodbye, from the board's address, 1.2 s into a 2 s scan: after the board's
    // answers, with nothing of the board's own to follow it.
    let bcast = Ipv4Addr::new(10, 241, lan.subnet, 255);
    let at = Instant::now() + Duration::from_millis(1200);
    let replaying = in_ns(&forger, move || {
        let s = UdpSocket::bind((board_ip, 0)).unwrap();
        s.set_broadcast(true).unwrap();
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        s.send_to(&bye, (bcast, 4546)).unwrap();
    });
    let (code, rows, err) = lan.scan_json(&["--fleet-key", key, "--all", "-t", "2"]);
    replaying.join().unwrap();
    assert_eq!(code, 0, "{err}");
    let signed: Vec<&Value> = rows.iter().filter(|r| r["trust"] == "signed").collect();
    assert_eq!(signed.len(), 1, "{rows:#?}");
    assert_eq!(signed[0]["id"], *id, "{rows:#?}");
    assert_eq!(
        signed[0]["state"], "up",
        "the board is marked gone: {rows:#?}"
    );
    // The re-sent goodbye is there with --all, as replayed.
    assert!(
        rows.iter()
            .any(|r| r["trust"] == "replayed" && r["state"] == "bye" && r["id"] == *id),
        "{rows:#?}"
    );
    assert_eq!(
        board.unix().req("PING"),
        "PONG",
        "the board itself is untouched"
    );
}
