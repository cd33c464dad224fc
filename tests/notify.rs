//! systemd notification protocol, end to end: the real `tether agent` (through the cross
//! runner when under qemu-user) with $NOTIFY_SOCKET pointing at a datagram socket this test
//! bound, as systemd would for `Type=notify` + `WatchdogSec=`.

mod common;

use common::{loopback_agent_args, slack, temp_dir, Agent};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The test's side of $NOTIFY_SOCKET.
struct Manager {
    sock: UnixDatagram,
    env_value: String,
    dir: PathBuf,
}

impl Manager {
    fn path() -> Manager {
        let dir = temp_dir("notify");
        let p = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&p).unwrap();
        Manager {
            sock,
            env_value: p.to_string_lossy().into_owned(),
            dir,
        }
    }

    fn abstract_ns() -> Manager {
        let dir = temp_dir("notify-abstract");
        let name = format!(
            "tether-test-notify-{}-{}",
            std::process::id(),
            dir.display()
        );
        let name = name.replace('/', "_");
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        Manager {
            sock,
            env_value: format!("@{name}"),
            dir,
        }
    }

    /// The next datagram, or None after `within`.
    fn recv(&self, within: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Every datagram already queued (non-blocking drain).
    fn drain(&self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(m) = self.recv(Duration::from_millis(50)) {
            v.push(m);
        }
        v
    }

    fn start_agent(&self, extra_env: &[(&str, &str)]) -> Agent {
        let dir = temp_dir("notify-agent");
        let sock = dir.join("tether.sock");
        let args = loopback_agent_args(&sock, &["--no-beacon"]);
        let mut env: Vec<(&str, &str)> = vec![("NOTIFY_SOCKET", self.env_value.as_str())];
        env.extend_from_slice(extra_env);
        match Agent::spawn(&args, dir, &env) {
            Ok(a) => a,
            Err(f) => panic!(
                "agent did not start: {:?}\nstdout: {}\nstderr: {}",
                f.status, f.stdout, f.stderr
            ),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// READY=1 + STATUS=<ready line> first, WATCHDOG=1 again and again at about half of
/// WATCHDOG_USEC, STOPPING=1 on SIGTERM, then exit 0.
fn full_cycle(m: Manager) {
    let agent = m.start_agent(&[("WATCHDOG_USEC", "400000")]);
    // The ready line has been read; READY=1 must be the first message.
    let first = m
        .recv(slack(Duration::from_secs(5)))
        .expect("no datagram on NOTIFY_SOCKET after the ready line");
    let mut lines = first.lines();
    assert_eq!(lines.next(), Some("READY=1"), "first message: {first:?}");
    let status = lines
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {first:?}"));
    assert!(!status.is_empty(), "empty STATUS= in {first:?}");
    let unix = agent.unix.to_string_lossy().into_owned();
    assert!(
        status.contains("tcp=127.0.0.1:") && status.contains(&unix),
        "STATUS={status:?} does not describe the ready state {:?}",
        agent.ready
    );

    // WATCHDOG=1 every ~200 ms (half of 400 ms): expect at least 4 within a generous window.
    let start = Instant::now();
    let mut kicks = Vec::new();
    while kicks.len() < 4 && start.elapsed() < slack(Duration::from_secs(4)) {
        if let Some(msg) = m.recv(slack(Duration::from_secs(2))) {
            assert_eq!(msg, "WATCHDOG=1", "unexpected message while running");
            kicks.push(start.elapsed());
        }
    }
    assert!(
        kicks.len() >= 4,
        "only {} WATCHDOG=1 in {:?}",
        kicks.len(),
        start.elapsed()
    );
    // Not a busy loop: 4 kicks at a 200 ms period take at least ~0.5 s.
    assert!(
        kicks[3] >= Duration::from_millis(450),
        "WATCHDOG=1 too often: {kicks:?}"
    );

    let (status, stderr) = agent.stop();
    assert_eq!(status.code(), Some(0), "exit on SIGTERM; stderr: {stderr}");
    let after = m.drain();
    assert!(
        after.iter().any(|s| s.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1 after SIGTERM; got {after:?}"
    );
    assert!(
        after
            .iter()
            .all(|s| s == "WATCHDOG=1" || s.starts_with("STOPPING=1")),
        "unexpected messages around shutdown: {after:?}"
    );
}

#[test]
fn notify_path_socket_ready_watchdog_stopping() {
    full_cycle(Manager::path());
}

#[test]
fn notify_abstract_socket_ready_watchdog_stopping() {
    full_cycle(Manager::abstract_ns());
}

#[test]
fn watchdog_pid_of_another_process_means_no_watchdog() {
    let m = Manager::path();
    // pid 1 is never the agent: systemd meant the watchdog for someone else.
    let agent = m.start_agent(&[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")]);
    let first = m.recv(slack(Duration::from_secs(5))).expect("no READY=1");
    assert!(first.starts_with("READY=1"), "{first:?}");
    assert_eq!(
        m.recv(slack(Duration::from_millis(800))),
        None,
        "WATCHDOG=1 sent although WATCHDOG_PID is not ours"
    );
    let (status, stderr) = agent.stop();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn no_watchdog_without_watchdog_usec() {
    let m = Manager::path();
    let agent = m.start_agent(&[]);
    let first = m.recv(slack(Duration::from_secs(5))).expect("no READY=1");
    assert!(first.starts_with("READY=1"), "{first:?}");
    assert_eq!(m.recv(slack(Duration::from_millis(600))), None);
    let (status, _) = agent.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn unreachable_notify_socket_does_not_stop_the_agent() {
    let dir = temp_dir("notify-missing");
    let sock = dir.join("tether.sock");
    let missing = dir.join("no-such-dir").join("notify.sock");
    let args = loopback_agent_args(&sock, &["--no-beacon"]);
    let missing = missing.to_string_lossy().into_owned();
    let agent = match Agent::spawn(
        &args,
        dir,
        &[
            ("NOTIFY_SOCKET", missing.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    ) {
        Ok(a) => a,
        Err(f) => panic!("agent refused to start: {:?} {}", f.status, f.stderr),
    };
    assert_eq!(agent.unix().req("PING"), "PONG");
    let (status, _) = agent.stop();
    assert_eq!(status.code(), Some(0));
}

/// Under systemd, stderr is a stream socket to journald. A journald that stops reading must
/// cost log lines, not the agent: with the agent's stderr a socket nobody reads (its send
/// buffer made small), 300 connections, each logged twice at `-v`, all get their PONG, with
/// no allocation; and once the socket is read again, the next line says how many lines were
/// dropped.
/// (Before: the agent blocked in write(2) after a few dozen lines and answered nobody.)
#[test]
fn a_journal_that_stops_reading_costs_log_lines_not_the_agent() {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;

    let dir = temp_dir("stuck-journal");
    let (mut journal, agent_end) = UnixStream::pair().unwrap();
    setsockopt(&agent_end, sockopt::SndBuf, &4096).unwrap();
    let args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon", "-v"]);
    /// The agent, killed however the test ends (a failed assertion included).
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = common::tether_cmd(&args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(OwnedFd::from(agent_end)))
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let addr: std::net::SocketAddr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tcp="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tcp= in {ready:?}"));

    let ping = |i: usize| {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(slack(Duration::from_secs(5))))
            .unwrap();
        c.write_all(b"PING\n").unwrap();
        let mut pong = [0u8; 5];
        let got = c.read_exact(&mut pong);
        assert!(
            got.is_ok() && &pong == b"PONG\n",
            "connection {i}: {got:?} {pong:?}"
        );
    };
    for i in 0..300 {
        ping(i);
    }

    // The journal reads again: what is queued, then the next line with the count before it.
    journal.set_nonblocking(true).unwrap();
    let mut log = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = journal.read(&mut buf) {
        if n == 0 {
            break;
        }
        log.extend_from_slice(&buf[..n]);
    }
    journal.set_nonblocking(false).unwrap();
    journal
        .set_read_timeout(Some(slack(Duration::from_secs(5))))
        .unwrap();
    ping(300);
    let mut after = String::new();
    let deadline = Instant::now() + slack(Duration::from_secs(5));
    while !after.contains("connected") && Instant::now() < deadline {
        let n = journal.read(&mut buf).unwrap_or(0);
        after.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Dropping and counting lines allocates nothing either (at -v every connection logs).
    let stats = common::Client::unix(&dir.join("t.sock")).req("STATS");
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        common::json_u64(&stats, "allocs_since_ready"),
        Some(0),
        "{stats}"
    );
    // The last connection's lines may come while the queued ones are read: the note is
    // looked for in everything read.
    let all = String::from_utf8_lossy(&log).into_owned() + &after;
    let dropped: u64 = all
        .lines()
        .find_map(|l| {
            l.strip_prefix("[WARN  tether] ")?
                .split_once(" log line(s) dropped")?
                .0
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no dropped-lines note in {all:?}"));
    assert!(dropped > 100, "{dropped} dropped; after: {after:?}");
    // The note is a line of its own (a line cut short before it: src/sys/stderr.rs's test).
    for l in all.lines().filter(|l| l.contains("log line(s) dropped")) {
        assert!(l.starts_with("[WARN  tether] "), "{l:?}");
    }
    assert!(
        String::from_utf8_lossy(&log).contains("ready"),
        "the first lines went through: {:?}",
        String::from_utf8_lossy(&log)
    );
}
