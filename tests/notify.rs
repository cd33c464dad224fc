//! systemd notification protocol, end to end: the real `tether agent` (through the cross
//! runner when under qemu-user) with $NOTIFY_SOCKET pointing at a datagram socket this test
//! bound, as systemd would for `Type=notify` + `WatchdogSec=`.

mod common;

use common::{before, loopback_agent_args, slack, temp_dir, Agent};
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
        let set = |d| self.sock.set_read_timeout(Some(d));
        let mut buf = [0u8; 4096];
        match before(Instant::now() + within, set, || self.sock.recv(&mut buf)) {
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
