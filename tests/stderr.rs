//! A reader of the agent's stderr that stops must cost log lines, not the agent: the real
//! `tether agent` (through the cross runner when under qemu-user) at `-v`, with its stderr
//! a journal socket nobody reads, a pipe nobody reads, or a terminal whose output was
//! stopped (Ctrl-S). 300 connections, each logged twice, all get their PONG with no
//! allocation; and once stderr is read again, the next line says how many lines were
//! dropped. (Before: the agent blocked in write(2) after a few dozen lines and answered
//! nobody.)

mod common;

use common::{loopback_agent_args, slack, temp_dir};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The agent, killed however the test ends (a failed assertion included).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What stands behind the agent's stderr: `agent_end` is given to the agent, `reader` is
/// read by the test once `resume` has been called.
struct Stuck {
    agent_end: OwnedFd,
    reader: File,
    resume: Box<dyn FnOnce()>,
    /// Whether the first lines fit before it stopped taking them.
    takes_some: bool,
    /// Whether the agent runs as nobody (a supervisor's pipe it may not reopen).
    as_nobody: bool,
}

/// Starts `cmd` (a `tether agent`, its log level from its `-v`) with `stderr`, and waits
/// for its ready line: the agent, killed when dropped, and its TCP address.
fn spawn_logging(
    mut cmd: std::process::Command,
    stderr: Stdio,
) -> (KillOnDrop, std::net::SocketAddr) {
    let mut child = cmd
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
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
    (child, addr)
}

/// Everything `reader` has now (non-blocking), appended to `got`.
fn drain(reader: &mut File, got: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = reader.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
}

fn set_nonblocking(fd: impl AsFd) {
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
}

fn stuck_stderr_costs_lines_not_the_agent(tag: &str, stuck: Stuck) {
    let Stuck {
        agent_end,
        mut reader,
        resume,
        takes_some,
        as_nobody,
    } = stuck;
    let dir = temp_dir(tag);
    let args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon", "-v"]);
    let cmd = if as_nobody {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::as_nobody(&args)
    } else {
        common::tether_cmd(&args)
    };
    let (child, addr) = spawn_logging(cmd, Stdio::from(agent_end));

    let ping = |i: usize| {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(slack(Duration::from_secs(5))))
            .unwrap();
        c.write_all(b"PING\n").unwrap();
        let mut pong = [0u8; 5];
        let got = c.read_exact(&mut pong);
        assert!(
            got.is_ok() && &pong == b"PONG\n",
            "{tag}: connection {i}: {got:?} {pong:?}"
        );
    };
    for i in 0..300 {
        ping(i);
    }

    // Stderr is read again: what is queued, then the next line with the count before it.
    resume();
    set_nonblocking(&reader);
    let mut log = Vec::new();
    drain(&mut reader, &mut log);
    ping(300);
    let mut after = Vec::new();
    let deadline = Instant::now() + slack(Duration::from_secs(5));
    while !String::from_utf8_lossy(&after).contains("connected") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        drain(&mut reader, &mut after);
    }
    // Dropping and counting lines allocates nothing either (at -v every connection logs).
    let stats = common::Client::unix(&dir.join("t.sock")).req("STATS");
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        common::json_u64(&stats, "allocs_since_ready"),
        Some(0),
        "{tag}: {stats}"
    );
    // The last connection's lines may come while the queued ones are read: the note is
    // looked for in everything read. (A terminal ends its lines with \r\n.)
    let first = String::from_utf8_lossy(&log).into_owned();
    let all = first.clone() + &String::from_utf8_lossy(&after);
    let lines: Vec<&str> = all.lines().map(|l| l.trim_end_matches('\r')).collect();
    let dropped: u64 = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("[WARN  tether] ")?
                .split_once(" log line(s) dropped")?
                .0
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{tag}: no dropped-lines note in {all:?}"));
    assert!(dropped > 100, "{tag}: {dropped} dropped; all: {all:?}");
    // STATS counts every line dropped since start: those the note reported at least.
    let counted = common::json_u64(&stats, "log_lines_dropped").unwrap_or(0);
    assert!(
        counted >= dropped,
        "{tag}: STATS says {counted}, the note {dropped}"
    );
    // The note is a line of its own (a line cut short before it: src/sys/stderr.rs's test).
    for l in lines.iter().filter(|l| l.contains("log line(s) dropped")) {
        assert!(l.starts_with("[WARN  tether] "), "{tag}: {l:?}");
    }
    if takes_some {
        assert!(
            first.contains("ready"),
            "{tag}: the first lines went through: {first:?}"
        );
    }
}

/// Under systemd, stderr is a stream socket to journald, which may stop reading (stuck
/// behind a slow SD card): its send buffer made small, and not read.
#[test]
fn a_journal_that_stops_reading_costs_log_lines_not_the_agent() {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::os::unix::net::UnixStream;
    let (journal, agent_end) = UnixStream::pair().unwrap();
    setsockopt(&agent_end, sockopt::SndBuf, &4096).unwrap();
    stuck_stderr_costs_lines_not_the_agent(
        "stuck-journal",
        Stuck {
            agent_end: agent_end.into(),
            reader: File::from(OwnedFd::from(journal)),
            resume: Box::new(|| {}),
            takes_some: true,
            as_nobody: false,
        },
    );
}

/// `tether agent -v 2>&1 | tee log` with tee suspended, or a log daemon that stopped
/// reading its pipe: a pipe of one page, not read.
#[test]
fn a_pipe_nobody_reads_costs_log_lines_not_the_agent() {
    stuck_stderr_costs_lines_not_the_agent("stuck-pipe", stuck_pipe(false));
}

/// The same pipe made by a supervisor (root) for an agent it runs as another user (runit's
/// `chpst -u tether`), who may not reopen it through /proc: written when poll(2) says so.
#[test]
fn a_pipe_of_another_user_nobody_reads_costs_log_lines_not_the_agent() {
    if common::can_run_as_nobody() {
        stuck_stderr_costs_lines_not_the_agent("stuck-root-pipe", stuck_pipe(true));
    }
}

/// A pipe of four pages (a poll(2) says a pipe takes more while a page is free), not read.
fn stuck_pipe(as_nobody: bool) -> Stuck {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    fcntl(write_end.as_fd(), FcntlArg::F_SETPIPE_SZ(4 * 4096)).unwrap();
    Stuck {
        agent_end: write_end,
        reader: File::from(read_end),
        resume: Box::new(|| {}),
        takes_some: true,
        as_nobody,
    }
}

/// The agent started by hand on a serial console or a terminal whose output was stopped
/// (Ctrl-S, which is `tcflow(TCOOFF)`): a pseudo-terminal, stopped before the agent starts
/// and started again (Ctrl-Q) after the 300 connections.
#[test]
fn a_stopped_terminal_costs_log_lines_not_the_agent() {
    use nix::sys::termios::{tcflow, FlowArg};
    let pty = nix::pty::openpty(None, None).unwrap();
    tcflow(&pty.slave, FlowArg::TCOOFF).unwrap();
    let slave = pty.slave.try_clone().unwrap();
    stuck_stderr_costs_lines_not_the_agent(
        "stopped-tty",
        Stuck {
            agent_end: pty.slave,
            reader: File::from(pty.master),
            resume: Box::new(move || tcflow(&slave, FlowArg::TCOON).unwrap()),
            takes_some: false,
            as_nobody: false,
        },
    );
}

/// A log file given as stderr without append mode (`2>file`, not `>>`) and emptied by
/// logrotate's copytruncate: the next lines land at its start. They landed at the old
/// offset, after a hole of zero bytes as long as everything logged before.
#[test]
fn a_log_file_emptied_in_place_gets_its_next_lines_at_its_start() {
    let dir = temp_dir("log-file");
    let log = dir.join("tether.log");
    let args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon", "-v"]);
    let (_child, addr) = spawn_logging(
        common::tether_cmd(&args),
        Stdio::from(File::create(&log).unwrap()),
    );
    let ping = || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"PING\n").unwrap();
        let mut pong = [0u8; 5];
        c.read_exact(&mut pong).unwrap();
    };
    ping();
    let before = std::fs::metadata(&log).unwrap().len();
    assert!(before > 0);
    // copytruncate: the file is emptied in place while the agent keeps it open.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    ping();
    let end = Instant::now() + slack(Duration::from_secs(5));
    let mut text = Vec::new();
    while Instant::now() < end {
        text = std::fs::read(&log).unwrap();
        if text.windows(9).any(|w| w == b"connected") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !text.is_empty() && !text.contains(&0),
        "{before} bytes before; now {} bytes, starting {:?}",
        text.len(),
        String::from_utf8_lossy(&text[..text.len().min(80)])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
