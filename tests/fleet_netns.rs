//! Scan at fleet scale (issue 10 item 7): 250 boards on one bridged LAN, each an agent in
//! its own network namespace; `tether scan -t 2` must list all 250, three runs of three.
//! Root only; skipped otherwise (fails under CI).
//!
//! `TETHER_FLEET_BOARDS=N` changes the fleet size and turns the test into a measurement
//! (`scripts/bench` runs it with 1,000): it then prints `found/expected` and the scan time
//! per run instead of asserting.
//!
//! ```text
//!   ns tfs… (scanner): br0 10.250.0.1/16 ── vhI ─veth─ eth0 10.250.x.y/16 (ns tfbI…, agent I)
//! ```

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const DEFAULT_BOARDS: usize = 250;

struct Fleet {
    scanner: String,
    boards: Vec<String>,
    agents: Vec<Child>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in self.agents.iter_mut() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let mut batch = String::new();
        for ns in self.boards.iter().chain([&self.scanner]) {
            batch += &format!("netns del {ns}\n");
        }
        let _ = ip_batch(None, &batch);
    }
}

/// Runs `ip [-n NS] -batch -` with `cmds` (one `ip` process for many commands).
fn ip_batch(ns: Option<&str>, cmds: &str) -> bool {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(["-force", "-batch", "-"]).stdin(Stdio::piped());
    let Ok(mut child) = c.spawn() else {
        return false;
    };
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(cmds.as_bytes());
    child.wait().map(|s| s.success()).unwrap_or(false)
}

fn board_addr(i: usize) -> String {
    format!("10.250.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// Builds the LAN and starts one agent per board, in parallel.
fn fleet(n: usize) -> Fleet {
    let id = std::process::id() % 100_000;
    let scanner = format!("tfs{id}");
    let boards: Vec<String> = (0..n).map(|i| format!("tfb{id}x{i}")).collect();
    let mut f = Fleet {
        scanner: scanner.clone(),
        boards: boards.clone(),
        agents: Vec::new(),
    };
    let mut b = format!("netns add {scanner}\n");
    for ns in &boards {
        b += &format!("netns add {ns}\n");
    }
    assert!(ip_batch(None, &b), "netns add");
    let mut b = String::from(
        "link set lo up\nlink add br0 type bridge\naddr add 10.250.0.1/16 brd + dev br0\nlink set br0 up\n",
    );
    for (i, ns) in boards.iter().enumerate() {
        b += &format!(
            "link add vh{i} type veth peer name eth0 netns {ns}\nlink set vh{i} master br0 up\n"
        );
    }
    assert!(ip_batch(Some(&scanner), &b), "bridge and veths");
    for (i, ns) in boards.iter().enumerate() {
        let cmds = format!(
            "link set lo up\naddr add {}/16 brd + dev eth0\nlink set eth0 up\n",
            board_addr(i)
        );
        assert!(ip_batch(Some(ns), &cmds), "configure {ns}");
    }
    let dir = temp_dir("fleet");
    // Start every agent, then read every ready line: start-up runs in parallel.
    for (i, ns) in boards.iter().enumerate() {
        let sock = dir.join(format!("b{i}.sock"));
        let args = [
            "agent",
            "--listen",
            "0.0.0.0:4545",
            "--socket",
            sock.to_str().unwrap(),
            "--iface",
            "eth0",
            "--interval",
            "600",
            "--beacon-family",
            "4",
            "--no-publish",
        ];
        let mut c = tether_cmd_in(Some(ns), &args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env("RUST_LOG", "error");
        f.agents.push(c.spawn().expect("spawn agent"));
    }
    for (i, a) in f.agents.iter_mut().enumerate() {
        let mut line = String::new();
        let mut r = BufReader::new(a.stdout.take().unwrap());
        let _ = r.read_line(&mut line);
        assert!(line.starts_with("ready "), "board {i}: {line:?}");
        // The pipe stays open in a thread so the agent never sees EPIPE.
        std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
    }
    f
}

#[test]
fn scan_lists_every_board_of_a_250_board_lan() {
    if !can_netns() {
        return;
    }
    let n: usize = std::env::var("TETHER_FLEET_BOARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BOARDS);
    let measure = n != DEFAULT_BOARDS;
    let t0 = Instant::now();
    let f = fleet(n);
    eprintln!("fleet: {n} boards up in {:.1}s", t0.elapsed().as_secs_f64());
    for run in 1..=3 {
        let t = Instant::now();
        let out = tether_cmd_in(
            Some(&f.scanner),
            &["scan", "-i", "br0", "-t", "2", "--json"],
        )
        .output_bounded();
        let secs = t.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&out.stderr);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("scan --json is not JSON ({e}): {err}"));
        let rows = rows.as_array().expect("a plain list");
        let mut addrs: Vec<String> = rows
            .iter()
            .map(|r| r["addr"].as_str().unwrap().to_string())
            .collect();
        addrs.sort();
        addrs.dedup();
        println!(
            "fleet: run {run}: found {}/{n} boards, scan took {secs:.2}s{}",
            addrs.len(),
            err.lines()
                .find(|l| l.starts_with("warning: the kernel dropped"))
                .map(|l| format!(" ({l})"))
                .unwrap_or_default()
        );
        if !measure {
            assert_eq!(addrs.len(), n, "run {run}: {err}");
            for i in [0, n / 2, n - 1] {
                assert!(addrs.contains(&board_addr(i)), "board {i} missing");
            }
        }
    }
    drop(f);
    eprintln!("fleet: whole test {:.1}s", t0.elapsed().as_secs_f64());
}
