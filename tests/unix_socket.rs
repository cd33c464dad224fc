//! The Unix control socket's life cycle: modes, stale sockets, a live agent already on
//! the path, a non-socket file at the path, and removal on SIGTERM / SIGINT.

mod common;
use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn socket_is_0660_in_a_new_0750_directory() {
    let dir = temp_dir("modes");
    let sub = dir.join("run-tether");
    let sock = sub.join("ctl.sock");
    assert!(!sub.exists());
    let a = Agent::start(&["--socket", sock.to_str().unwrap()]);
    assert_eq!(a.unix, sock);
    assert!(
        a.ready.contains(&format!(" unix={} ", sock.display())),
        "{}",
        a.ready
    );
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(mode(&sock), 0o660, "socket mode {:o}", mode(&sock));
    assert_eq!(mode(&sub), 0o750, "directory mode {:o}", mode(&sub));
    assert_eq!(a.unix().req("PING"), "PONG");
    let (st, _) = a.stop();
    assert_eq!(st.code(), Some(0));
    // Two levels made: the outer one as `mkdir -p` would make it, so that another
    // --socket-group's members get through to the socket's own 0750 directory.
    let outer = dir.join("outer");
    let sock = outer.join("inner").join("ctl.sock");
    let a = Agent::start(&["--socket", sock.to_str().unwrap()]);
    assert_eq!(mode(&outer) & 0o005, 0o005, "outer mode {:o}", mode(&outer));
    assert_eq!(mode(&outer.join("inner")), 0o750);
    a.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = temp_dir("stale");
    let sock = dir.join("t.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
    let a = Agent::start(&["--socket", sock.to_str().unwrap()]);
    assert_eq!(a.unix().req("PING"), "PONG");
    let (st, _) = a.stop();
    assert_eq!(st.code(), Some(0));
    assert!(!sock.exists(), "socket not removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The path's lock (`PATH.lock`, flock(2)) is held from before the probe of a stale
/// socket to the bind: an agent that finds it held refuses, even with the socket there
/// stale (another agent is starting: it would unlink that one's fresh socket), and one
/// that gets it does its probe and bind alone, then removes it (no fd kept for it).
#[test]
fn the_paths_lock_keeps_two_starting_agents_apart() {
    use nix::fcntl::{Flock, FlockArg};
    let dir = temp_dir("lock");
    let sock = dir.join("t.sock");
    let lock_path = dir.join("t.sock.lock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let file = std::fs::File::create(&lock_path).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let f = match Agent::try_start(&["--socket", sock.to_str().unwrap()]) {
        Ok(a) => panic!("started while the path's lock was held: {}", a.ready),
        Err(f) => f,
    };
    assert_eq!(f.status.code(), Some(69), "{}", f.stderr);
    let lines = error_lines(&f.stderr);
    assert_eq!(lines.len(), 1, "{}", f.stderr);
    assert!(
        lines[0].contains("another agent is starting on"),
        "{}",
        lines[0]
    );
    // The stale socket is untouched (not the refused agent's to remove).
    assert!(sock.exists());
    drop(held);
    // Free again: the next agent replaces the stale socket and removes the lock file once
    // bound; the socket file goes at exit.
    let a = Agent::start(&["--socket", sock.to_str().unwrap()]);
    assert_eq!(a.unix().req("PING"), "PONG");
    assert!(!lock_path.exists());
    let (st, _) = a.stop();
    assert_eq!(st.code(), Some(0));
    assert!(!sock.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Agents started at once on one stale path: one comes up and owns the path, the others
/// refuse. (Without the lock two could both find the path stale; the later bind unlinked
/// the earlier agent's fresh socket, leaving it up and unreachable.)
#[test]
fn agents_started_at_once_on_a_stale_path_leave_one_owner() {
    let dir = temp_dir("race");
    let sock = dir.join("t.sock");
    for round in 0..10 {
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let starts: Vec<_> = (0..6)
            .map(|_| {
                let sock = sock.to_str().unwrap().to_string();
                std::thread::spawn(move || Agent::try_start(&["--socket", &sock]))
            })
            .collect();
        let results: Vec<_> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        let (up, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
        let up: Vec<Agent> = up.into_iter().flatten().collect();
        let refused: Vec<_> = refused.into_iter().filter_map(|r| r.err()).collect();
        assert_eq!(up.len(), 1, "round {round}: {} agents up", up.len());
        for f in &refused {
            assert_eq!(error_lines(&f.stderr).len(), 1, "{}", f.stderr);
        }
        // The path is the survivor's: a fact set over it is the survivor's fact.
        let mut c = common::Client::unix(&sock);
        assert_eq!(c.req(&format!("SET race {round}")), "OK");
        assert_eq!(
            up[0].tcp().req("GET race"),
            format!("OK {round}"),
            "round {round}"
        );
        drop(c);
        let (st, _) = up.into_iter().next().unwrap().stop();
        assert_eq!(st.code(), Some(0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn live_agent_on_the_path_is_not_displaced() {
    let a = Agent::start(&[]);
    let sock = a.unix.to_str().unwrap().to_string();
    let t0 = Instant::now();
    let second = Agent::try_start(&["--socket", &sock]);
    let took = t0.elapsed();
    let f = match second {
        Ok(_) => panic!("a second agent started on a live socket"),
        Err(f) => f,
    };
    assert_ne!(f.status.code(), Some(0), "{:?}", f.status);
    assert!(
        f.status.code().is_some(),
        "killed, not exited: {:?}",
        f.status
    );
    assert_eq!(
        error_lines(&f.stderr).len(),
        1,
        "want one error line: {}",
        f.stderr
    );
    assert!(took < slack(Duration::from_secs(5)), "took {took:?}");
    // The first agent is untouched and still owns the path.
    assert_eq!(a.unix().req("PING"), "PONG");
    assert_eq!(a.tcp().req("PING"), "PONG");
}

#[test]
fn regular_file_at_the_path_is_never_touched() {
    let dir = temp_dir("regular");
    let p = dir.join("not-a-socket");
    std::fs::write(&p, "precious data\n").unwrap();
    let f = match Agent::try_start(&["--socket", p.to_str().unwrap()]) {
        Ok(_) => panic!("agent started on a regular file"),
        Err(f) => f,
    };
    assert_ne!(f.status.code(), Some(0));
    assert!(f.status.code().is_some(), "{:?}", f.status);
    let errs = error_lines(&f.stderr);
    assert_eq!(errs.len(), 1, "{}", f.stderr);
    assert!(errs[0].contains("not a socket"), "{}", errs[0]);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious data\n");
    let _ = std::fs::remove_dir_all(&dir);
}

fn stops_cleanly_on(sig: i32) {
    let a = Agent::start(&[]);
    let sock = a.unix.clone();
    let mut c = a.unix();
    assert_eq!(c.req("PING"), "PONG");
    assert!(sock.exists());
    let (st, err) = a.stop_with(sig);
    assert_eq!(st.code(), Some(0), "exit on signal {sig}: {st:?}\n{err}");
    assert!(!sock.exists(), "socket file left behind after signal {sig}");
    assert!(error_lines(&err).is_empty(), "{err}");
    assert!(c.closed(), "client not closed at shutdown");
}

#[test]
fn sigterm_removes_the_socket_and_exits_0() {
    stops_cleanly_on(15);
}

#[test]
fn sigint_removes_the_socket_and_exits_0() {
    stops_cleanly_on(2);
}

/// A stopped agent whose accept queue is full: `ctl -t 1` gives up connecting after
/// about a second with 75 and one `error:` line (Linux's connect on a Unix stream socket
/// would otherwise wait for room in the queue forever). Also when ctl itself is stopped
/// and continued meanwhile (Ctrl-Z and `fg`, a freezer): its connect then fails with EINTR
/// and is made again with what is left of the timeout (it said "Interrupted system call").
#[test]
fn ctl_connect_to_a_stopped_agent_times_out_with_75() {
    use nix::sys::signal::Signal;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let a = Agent::start(&["--backlog", "1", "--no-publish"]);
    a.signal(Signal::SIGSTOP as i32);
    // Non-blocking connects until the queue is full (EAGAIN); held open until the end.
    let addr = UnixAddr::new(&a.unix).unwrap();
    let mut held = Vec::new();
    let full = (0..64).any(|_| {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let r = connect(fd.as_raw_fd(), &addr);
        held.push(fd);
        r == Err(nix::errno::Errno::EAGAIN)
    });
    assert!(
        full,
        "the accept queue never filled ({} connects)",
        held.len()
    );
    let sock = a.unix.to_str().unwrap();
    let t0 = Instant::now();
    let out = tether_cmd(&["ctl", "-t", "1", "-s", sock, "PING"]).output_within_while(
        slack(Duration::from_secs(10)),
        |pid| {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(200));
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, Signal::SIGSTOP);
                std::thread::sleep(Duration::from_millis(20));
                let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
            }
        },
    );
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert_eq!(out.stdout, b"", "{err}");
    let errs = error_lines(&err);
    assert_eq!(errs.len(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(errs[0].contains("timed out"), "{err}");
    assert!(took >= Duration::from_millis(900), "gave up after {took:?}");
    assert!(took < slack(Duration::from_secs(5)), "took {took:?}");
    a.signal(Signal::SIGCONT as i32);
    drop(held);
    assert_eq!(a.unix().req("PING"), "PONG");
}

/// A program that sends a batch over the Unix socket and closes without reading a reply
/// (`sendall(); close()`): every request the kernel took is answered, the replies dropped,
/// and the connection closes at the end. Only the first 4 KiB were (412 of 2,000 SETs,
/// every run, nothing counted): the agent closed on the hang-up, or on the failed send of
/// the first replies, with the rest unread. Also when the replies fill the output buffer
/// (STATUS), and with a partial last line (dropped, as at any EOF).
#[test]
fn a_batch_sent_before_closing_is_answered_whole() {
    use std::io::Write;
    let a = Agent::start(&[]);
    let set: String = (1..=2000).map(|i| format!("SET k {i}\n")).collect();
    let status = format!("{}SET k after-status\n", "STATUS\n".repeat(300));
    for (batch, want, earlier) in [
        (set.clone(), "OK 2000", false),
        (status, "OK after-status", false),
        ("SET k whole\nSET k part".to_string(), "OK whole", false),
        // A reply left unread: the close leaves the agent's socket an error (POLLERR)
        // too, which closed it at once (412 of 2,000 answered, in 3 runs of 5: tried 3
        // times).
        (set.clone(), "OK 2000", true),
        (set.clone(), "OK 2000", true),
        (set, "OK 2000", true),
    ] {
        assert_eq!(a.unix().req("SET k before"), "OK");
        let mut s = std::os::unix::net::UnixStream::connect(&a.unix).unwrap();
        if earlier {
            s.write_all(b"PING\n").unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        s.write_all(batch.as_bytes()).unwrap();
        drop(s);
        let mut c = a.unix();
        let done = wait_for(Duration::from_secs(5), || c.req("GET k") == want);
        assert!(done, "GET k: {} (want {want})", c.req("GET k"));
        // The closed client's slot is freed: only this one is open.
        let one = || c.req("SOCKETS").matches("unix-client").count() == 1;
        assert!(
            wait_for(Duration::from_secs(2), one),
            "{}",
            c.req("SOCKETS")
        );
    }
    let stats = a.stats();
    assert_eq!(stats["errors"], 0, "{stats}");
    assert_eq!(stats["allocs_since_ready"], 0, "{stats}");
}

/// `--socket-group` names the directory above the socket that its members cannot pass
/// through (an agent run by a user, its default socket in `$XDG_RUNTIME_DIR`, 0700): a
/// warning at start, the agent starts all the same. None where they get through.
#[test]
fn a_socket_group_shut_out_by_a_directory_is_warned_about() {
    if !nix::unistd::geteuid().is_root() {
        return skip("--socket-group root needs root");
    }
    let dir = temp_dir("group-dirs");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let closed = dir.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    // root may give its sockets to any group, and every system has this one.
    let start = |sock: &std::path::Path| {
        let a = Agent::start(&["--socket", sock.to_str().unwrap(), "--socket-group", "root"]);
        assert_eq!(a.unix().req("PING"), "PONG");
        let (st, err) = a.stop();
        assert_eq!(st.code(), Some(0), "{err}");
        err
    };
    let err = start(&closed.join("t.sock"));
    let want = format!(
        "--socket-group: {} (mode 700) keeps the group from the socket",
        closed.display()
    );
    assert!(err.contains(&want), "{err}");
    // Searchable by others (0711), or by the group (0710, group root): not named.
    for (name, mode) in [("others", 0o711), ("group", 0o710)] {
        let open = dir.join(name);
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(&open, None, Some(nix::unistd::Gid::from_raw(0))).unwrap();
        let err = start(&open.join("t.sock"));
        assert!(!err.contains(&format!("{} (mode", open.display())), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
