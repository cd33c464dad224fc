//! Capacities and bad peers: the fact table's limits, over-long lines, clients that do
//! not read, a full client table, idle clients, resets mid-reply, connect bursts.
//! One client's misbehaviour never ends the agent or slows the others.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

#[test]
fn fact_table_is_32_entries_and_full_loses_nothing() {
    let a = Agent::start(&[]);
    let mut c = a.unix();
    let key = |i: usize| format!("key{i:02}.{}", "x".repeat(i % 20));
    let val = |i: usize| format!("value {i} :{}", "~".repeat(i));
    for i in 0..32 {
        assert_eq!(
            c.req(&format!("SET {} {}", key(i), val(i))),
            "OK",
            "fact {i}"
        );
    }
    let r = c.req("SET one-too-many v");
    assert!(r.starts_with("ERR full "), "{r}");
    let r = c.req("SET another v ttl=5");
    assert!(r.starts_with("ERR full "), "{r}");
    for i in 0..32 {
        assert_eq!(c.req(&format!("GET {}", key(i))), format!("OK {}", val(i)));
    }
    assert!(c.req("GET one-too-many").starts_with("ERR not-found "));
    let keys = c.req("KEYS");
    assert_eq!(keys.split(' ').count(), 33, "{keys}");
    let s = ok_json(&c.req("STATUS"));
    assert_eq!(s["facts"].as_object().unwrap().len(), 32, "{s}");
    assert_eq!(s["facts"][key(31)], val(31), "{s}");
    // Replacing a stored fact needs no new slot; deleting one frees a slot.
    assert_eq!(c.req(&format!("SET {} new", key(3))), "OK");
    assert_eq!(c.req(&format!("GET {}", key(3))), "OK new");
    assert_eq!(c.req(&format!("DEL {}", key(4))), "OK");
    assert_eq!(c.req("SET one-too-many v"), "OK");
    assert!(c.req("SET and-another v").starts_with("ERR full "));
}

#[test]
fn bad_keys_and_values_are_bad_arguments() {
    let a = Agent::start(&[]);
    let mut c = a.unix();
    let k32 = "K".repeat(32);
    let v64 = "v".repeat(64);
    assert_eq!(c.req(&format!("SET {k32} {v64}")), "OK");
    assert_eq!(c.req(&format!("GET {k32}")), format!("OK {v64}"));
    assert_eq!(
        c.req("SET printable !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
        "OK"
    );
    let bad = [
        format!("SET {}x v", k32),
        format!("SET k {}x", v64),
        "SET k/x v".into(),
        "SET k:x v".into(),
        "SET kä v".into(),
        "SET k v\u{1}x".into(),
        "SET k v\tx".into(),
        "SET k vä".into(),
        "SET k".into(),
        "SET".into(),
        "SET k v ttl=0".into(),
        "SET k v ttl=-1".into(),
        "SET k v ttl=soon".into(),
        "SET k ttl=5".into(),
        format!("GET {}x", k32),
        "GET".into(),
        "GET a b".into(),
        "DEL a/b".into(),
    ];
    for b in &bad {
        let r = c.req(b);
        assert!(r.starts_with("ERR bad-argument "), "{b:?}: {r}");
    }
    // Nothing was stored by the refused SETs.
    assert_eq!(c.req("KEYS"), format!("OK {k32} printable"));
    // Raw bytes that are not UTF-8 are refused the same way.
    c.send(b"SET k \xff\xfe\n").unwrap();
    let r = c.line().unwrap();
    assert!(r.starts_with("ERR bad-argument "), "{r}");
}

#[test]
fn too_long_line_is_refused_and_closed_others_are_served() {
    let a = Agent::start(&[]);
    let mut other = a.tcp();
    assert_eq!(other.req("PING"), "PONG");
    for line in ["A".repeat(300), format!("{}PING", " ".repeat(252))] {
        let mut c = a.tcp();
        c.send(format!("{line}\n").as_bytes()).unwrap();
        let r = c.line().unwrap();
        assert!(r.starts_with("ERR too-long "), "{r}");
        assert!(c.closed(), "connection not closed after ERR too-long");
        assert_eq!(other.req("PING"), "PONG");
    }
    // Without any newline at all: refused once 256 bytes have come.
    let mut c = a.unix();
    c.send(&[b'z'; 256]).unwrap();
    let r = c.line().unwrap();
    assert!(r.starts_with("ERR too-long "), "{r}");
    assert!(c.closed());
    let s = a.stats();
    assert_eq!(s["closed_too_long"], 3);
    // Each was answered with ERR: three errors among the requests (the three PINGs, the
    // three lines too long and this STATS), not errors beyond them.
    assert_eq!(
        (&s["requests"], &s["errors"]),
        (&7.into(), &3.into()),
        "{s}"
    );
}

/// Sets SO_LINGER {on, 0}: close() then sends RST instead of FIN.
fn set_rst_on_close(s: &TcpStream) {
    let l = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::Linger, &l).unwrap();
}

#[test]
fn client_that_never_reads_is_closed_others_are_served() {
    // Its requests are no longer read once its replies back up; it is closed when it has
    // taken none of them for the idle time (at least 10 s: REPLY_STALL_MIN_SECS).
    let a = Agent::start(&["--idle-timeout", "2"]);
    let mut other = a.tcp();
    assert_eq!(other.req("PING"), "PONG");
    let mut hog = TcpStream::connect(a.tcp_addr()).unwrap();
    // A small receive window so the agent's buffers fill quickly.
    nix::sys::socket::setsockopt(&hog.as_fd(), nix::sys::socket::sockopt::RcvBuf, &4096).unwrap();
    hog.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let chunk = "STATUS\n".repeat(500);
    let deadline = Instant::now() + slack(Duration::from_secs(20));
    let mut sent = 0usize;
    let mut worst = Duration::ZERO;
    let closed = loop {
        if Instant::now() > deadline {
            break false;
        }
        match retrying(|| hog.write(chunk.as_bytes())) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true, // reset or broken pipe: the agent closed us
        }
        let t = Instant::now();
        assert_eq!(other.req("PING"), "PONG");
        worst = worst.max(t.elapsed());
        if a.stats()["closed_slow"].as_u64().unwrap() > 0 {
            break true;
        }
    };
    assert!(closed, "non-reading client not closed after {sent} bytes");
    assert!(
        worst < slack(Duration::from_millis(500)),
        "others waited {worst:?}"
    );
    assert!(wait_for(slack(Duration::from_secs(3)), || a.stats()
        ["closed_slow"]
        .as_u64()
        .unwrap()
        >= 1));
    assert_eq!(other.req("PING"), "PONG");
    assert_eq!(a.unix().req("PING"), "PONG");
}

#[test]
fn reset_mid_reply_never_kills_the_agent() {
    let mut a = Agent::start(&[]);
    for round in 0..20 {
        let s = TcpStream::connect(a.tcp_addr()).unwrap();
        set_rst_on_close(&s);
        let mut w = &s;
        w.write_all("STATUS\n".repeat(200).as_bytes()).unwrap();
        if round % 2 == 0 {
            // Let the agent start answering first.
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(s);
        // Same over Unix: close with unread replies.
        let mut u = a.unix();
        u.send("SOCKETS\n".repeat(100).as_bytes()).unwrap();
        drop(u);
    }
    assert!(a.alive(), "agent died");
    // The 40 aborted peers may still hold slots until the agent has seen their resets (under
    // qemu-user on a loaded machine that takes a moment): a new client may briefly get
    // `ERR busy`, but must get PONG as soon as they are gone, well within 5 s.
    let mut last = String::new();
    let served = wait_for(slack(Duration::from_secs(5)), || {
        last = a.tcp().req("PING");
        last == "PONG"
    });
    assert!(served, "no PONG after the resets: last reply {last:?}");
    assert_eq!(a.unix().req("PING"), "PONG");
    let (st, _) = a.stop();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn client_beyond_max_clients_is_told_busy_and_closed() {
    let a = Agent::start(&["--max-clients", "2"]);
    let mut c1 = a.tcp();
    let mut c2 = a.unix();
    assert_eq!(c1.req("PING"), "PONG");
    assert_eq!(c2.req("PING"), "PONG");
    for mut third in [a.tcp(), a.unix()] {
        let r = third.line().expect("a reply to the third client");
        assert!(r.starts_with("ERR busy "), "{r}");
        assert!(third.closed(), "third client not closed");
    }
    // ctl shows it and exits 75 (try again later), not 1 as for an ERR to its command.
    let (code, out, _) = a.ctl(&["PING"]);
    assert_eq!(code, 75, "{out}");
    assert!(out.starts_with("ERR busy "), "{out}");
    assert_eq!(c1.req("PING"), "PONG");
    let s = ok_json(&c2.req("STATS"));
    assert_eq!(s["refused_busy"], 3, "{s}");
    // A freed slot is usable again.
    drop(c1);
    assert!(wait_for(slack(Duration::from_secs(3)), || {
        a.tcp().req("PING") == "PONG"
    }));
}

#[test]
fn idle_client_is_closed_after_the_timeout() {
    let a = Agent::start(&["--idle-timeout", "1"]);
    // Closed by the agent about a second after `since`, its last request.
    let closed_on_time = |c: &mut Client, since: Instant| {
        c.assert_closed_between(
            since,
            Duration::from_millis(800),
            slack(Duration::from_secs(3)),
        )
    };
    let mut c = a.tcp();
    c.set_timeout(slack(Duration::from_secs(5)));
    assert_eq!(c.req("PING"), "PONG");
    closed_on_time(&mut c, Instant::now());
    // A client that keeps talking is not idle, and one that connects while it talks
    // still times out on time (the loop does not recompute client deadlines per request:
    // a new client must bring the next sweep forward).
    let mut busy = a.unix();
    let mut late: Option<(Client, Instant)> = None;
    for i in 0..6 {
        assert_eq!(busy.req("PING"), "PONG");
        std::thread::sleep(Duration::from_millis(300));
        if i == 1 {
            let mut c = a.tcp();
            c.set_timeout(slack(Duration::from_secs(5)));
            assert_eq!(c.req("PING"), "PONG");
            late = Some((c, Instant::now()));
        }
    }
    assert_eq!(busy.req("PING"), "PONG");
    let (mut c, since) = late.unwrap();
    closed_on_time(&mut c, since);
    let s = ok_json(&busy.req("STATS"));
    assert_eq!(s["closed_idle"].as_u64(), Some(2), "{s}");
}

#[test]
fn burst_of_200_connects_against_backlog_8_all_get_pong() {
    let a = Agent::start(&["--backlog", "8"]);
    let addr = a.tcp_addr();
    // 12 connectors in parallel (more than the accept queue holds, so some SYNs wait
    // for a retry). Each ends with QUIT, which frees its slot before the client even
    // reads the OK: at most 12 clients are held, fewer than the table's 16.
    // (A client that merely closes keeps its slot until the agent reads its EOF.)
    let threads: Vec<_> = (0..12)
        .map(|t| {
            std::thread::spawn(move || {
                let n = 200 / 12 + usize::from(t < 200 % 12);
                let mut pongs = 0;
                for _ in 0..n {
                    let mut c = Client::tcp(addr);
                    c.send(b"PING\nQUIT\n").unwrap();
                    let r = c.line().unwrap();
                    if r == "PONG" {
                        pongs += 1;
                        assert_eq!(c.line().unwrap(), "OK");
                        assert!(c.closed());
                    } else {
                        eprintln!("burst: {r}");
                    }
                }
                pongs
            })
        })
        .collect();
    let pongs: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(pongs, 200);
    let s = a.stats();
    assert!(s["accepted"].as_u64().unwrap() >= 200, "{s}");
    assert_eq!(s["refused_busy"], 0, "{s}");
}

#[test]
fn simultaneous_burst_overflowing_the_backlog_is_served() {
    // 16 clients connect at once against backlog 2 (some SYNs wait for a retry) and
    // stay connected: all of them fit the table and all get PONG.
    let a = Agent::start(&["--backlog", "2"]);
    let addr = a.tcp_addr();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(15));
    let threads: Vec<_> = (0..15)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let mut c = Client::tcp(addr);
                let r = c.req("PING");
                (r, c)
            })
        })
        .collect();
    let clients: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (r, _) in &clients {
        assert_eq!(r, "PONG");
    }
    let s = a.stats();
    assert_eq!(s["refused_busy"], 0, "{s}");
    assert_eq!(s["accepted"], 16, "{s}");
}

/// Regression: a client that had already closed, but whose EOF the agent had not read yet
/// in that loop turn, still held its slot, so a fresh connect got `ERR busy`.
#[test]
fn closed_clients_never_cause_busy() {
    let a = Agent::start(&["--max-clients", "4"]);
    let addr = a.tcp_addr();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut busy = 0;
                for _ in 0..50 {
                    let mut c = Client::tcp(addr);
                    if c.req("PING") != "PONG" {
                        busy += 1;
                    }
                    // dropped here without QUIT: a plain close
                }
                busy
            })
        })
        .collect();
    let busy: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        busy, 0,
        "{busy} of 200 connects were refused with at most 4 open at once"
    );
}

/// Issue 12: more connectors than the backlog holds, as many as `--max-clients`, each
/// connect→PING→PONG→close. A connection accepted while answered ones still hold every
/// slot waits for the end of the loop turn (when their hang-ups free the slots) instead of
/// being refused, and accepting never waits for a slot.
#[test]
fn connectors_beyond_the_backlog_are_all_answered_issue_12() {
    let a = Agent::start(&["--backlog", "1", "--max-clients", "6"]);
    let addr = a.tcp_addr();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut refused, mut slowest) = (0, Duration::ZERO);
                for _ in 0..150 {
                    let t = Instant::now();
                    let mut c = Client::tcp(addr);
                    slowest = slowest.max(t.elapsed());
                    if c.req("PING") != "PONG" {
                        refused += 1;
                    }
                }
                (refused, slowest)
            })
        })
        .collect();
    let (mut refused, mut slowest) = (0, Duration::ZERO);
    for t in threads {
        let (r, s) = t.join().unwrap();
        refused += r;
        slowest = slowest.max(s);
    }
    assert_eq!(
        refused, 0,
        "{refused} of 900 connects were not answered PONG"
    );
    // A SYN dropped by a full accept queue costs 1 s; how often that happens depends on
    // how fast this machine schedules the agent (scripts/bench measures it), so it is
    // reported, not asserted.
    eprintln!("slowest connect: {slowest:?}");
    assert_eq!(a.stats()["refused_busy"].as_u64(), Some(0));
}

#[test]
fn out_of_fds_pauses_accepts_says_so_once_and_recovers() {
    // RLIMIT_NOFILE 24: the agent's own fds plus a few clients. Forty connections wait in
    // the accept queue (backlog 64) while the agent is out of fds (short of EMFILE: at the
    // 4 it keeps spare): accepting pauses (200 ms at a time) instead of spinning, and the
    // log says so once, not every pause.
    let dir = temp_dir("emfile");
    let args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon", "--backlog", "64"]);
    let a = agent_with_nofile(24, dir, &args);
    let held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(a.tcp_addr()).unwrap())
        .collect();
    std::thread::sleep(slack(Duration::from_secs(2)));
    drop(held);
    // The fds come back: a new client is served.
    pong_within(&a, slack(Duration::from_secs(5)));
    let (status, err) = a.stop();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("keeping 4 fds spare under RLIMIT_NOFILE: pausing accepts")
            .count(),
        1,
        "one warning while out of fds: {err}"
    );
    // Said at start-up: 24 fds cannot hold 16 clients beside the agent's own.
    assert_eq!(
        err.matches("RLIMIT_NOFILE 24 leaves fds for ").count(),
        1,
        "{err}"
    );
}

/// A new TCP client of `a` that got its PONG, trying until `d` has passed (while the agent
/// waits for fds to come back).
fn pong_within(a: &Agent, d: Duration) -> Client {
    let end = Instant::now() + d;
    loop {
        let mut c = Client::tcp(a.tcp_addr());
        c.set_timeout(slack(Duration::from_millis(500)));
        if c.send(b"PING\n").is_ok() && c.line().is_ok_and(|l| l == "PONG") {
            return c;
        }
        assert!(Instant::now() < end, "no PONG after the connections closed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn short_of_fds_at_start_up_the_agent_names_what_it_was_opening_or_starts_as_itself() {
    if !fd_limits_are_the_agents() {
        return;
    }
    // Out of fds while reading /etc/machine-id, the agent used to fall back to the host
    // name's id and announce another board (a machine without /etc/machine-id reads no
    // file for its id: tests/links_netns.rs has the case of the MAC's); opening --led, it waited 5 s for udev and
    // exited 78. The first that starts also says it has no fds
    // for clients (every fd in use: the check's own probe cannot open).
    let dir = temp_dir("fd-start");
    let publish = dir.join("p.sock");
    let led = dir.with_extension("led");
    std::fs::write(&led, "0\n").unwrap();
    let extra = [
        "--no-beacon",
        "--metrics",
        "127.0.0.1:0",
        "--publish",
        publish.to_str().unwrap(),
        "--led",
        led.to_str().unwrap(),
    ];
    let args = loopback_agent_args(&dir.join("t.sock"), &extra);
    let (_, err) = Agent::spawn_command(tether_cmd_in(None, &args), dir.clone(), &[])
        .unwrap_or_else(|f| panic!("{}", f.stderr))
        .stop();
    let id = logged_id(&err);
    let names = [
        "signalfd",
        "--listen",
        "--metrics",
        led.to_str().unwrap(),
        dir.to_str().unwrap(),
        "for the board id",
    ];
    let (n, a) = first_start_short_of_fds(|n| nofile_cmd(n, &args), &dir, &names);
    let (status, err) = a.stop();
    let _ = std::fs::remove_file(&led);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(logged_id(&err), id, "RLIMIT_NOFILE {n}: {err}");
    let warning = format!("RLIMIT_NOFILE {n} leaves fds for ");
    assert!(err.contains(&warning), "{err}");
}

#[test]
fn short_of_fds_a_token_file_is_not_a_bad_one_at_start_up_nor_at_sighup() {
    if !fd_limits_are_the_agents() {
        return;
    }
    // A token file that cannot be read for want of fds used to be "missing or unreadable":
    // at start-up exit 78, which systemd does not restart (RestartPreventExitStatus), and
    // at SIGHUP AUTH turned off (TCP read-only, every session revoked) until the next
    // SIGHUP. Now 71 with the errno, and SIGHUP keeps the token it had.
    let dir = temp_dir("fd-token");
    let tf = dir.with_extension("token");
    std::fs::write(&tf, "fd-token-secret-0123\n").unwrap();
    std::fs::set_permissions(&tf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let extra = ["--no-beacon", "--token-file", tf.to_str().unwrap()];
    let args = loopback_agent_args(&dir.join("t.sock"), &extra);
    let names = [
        "signalfd",
        "--listen",
        "--token-file",
        dir.to_str().unwrap(),
        "for the board id",
    ];
    let (n, a) = first_start_short_of_fds(|n| nofile_cmd(n, &args), &dir, &names);
    // The first limit that starts leaves no fd free: the reload cannot open the file.
    a.signal(1);
    std::thread::sleep(slack(Duration::from_millis(300)));
    let (status, log) = a.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = std::fs::remove_file(&tf);
    assert!(
        log.contains(
            "cannot be read now (EMFILE: Too many open files); keeping the previous token"
        ),
        "RLIMIT_NOFILE {n}: {log}"
    );
    assert!(!log.contains("AUTH disabled"), "RLIMIT_NOFILE {n}: {log}");
}

/// `tether agent ARGS` with RLIMIT_NOFILE set to `n` (soft and hard) in the child.
fn agent_with_nofile(n: u64, dir: std::path::PathBuf, args: &[String]) -> Agent {
    Agent::spawn_command(nofile_cmd(n, args), dir, &[]).unwrap_or_else(|f| panic!("{}", f.stderr))
}

/// The command for `tether agent ARGS` with RLIMIT_NOFILE `n` (soft and hard).
fn nofile_cmd(n: u64, args: &[String]) -> std::process::Command {
    let mut cmd = tether_cmd_in(None, args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let lim = nix::libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            match nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    cmd
}

#[test]
fn connections_never_take_the_last_fds_status_and_sighup_still_read_their_files() {
    // RLIMIT_NOFILE 24 and forty connections waiting: the clients must not use up every
    // fd, or STATUS answers an empty host, uptime 0 and no memory (it cannot open /proc),
    // and a SIGHUP reads no token file and turns AUTH off until the next SIGHUP.
    let dir = temp_dir("fd-reserve");
    let tf = dir.join("token");
    std::fs::write(&tf, "fd-reserve-token\n").unwrap();
    let args = loopback_agent_args(
        &dir.join("t.sock"),
        &[
            "--no-beacon",
            "--backlog",
            "64",
            "--token-file",
            tf.to_str().unwrap(),
        ],
    );
    let a = agent_with_nofile(24, dir, &args);
    let mut first = a.tcp();
    assert_eq!(first.req("PING"), "PONG");
    let held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(a.tcp_addr()).unwrap())
        .collect();
    std::thread::sleep(slack(Duration::from_millis(800)));
    let s = first.req("STATUS");
    let v: serde_json::Value = serde_json::from_str(s.strip_prefix("OK ").unwrap()).unwrap();
    assert!(
        v["uptime"].as_u64().unwrap() > 0,
        "uptime 0 while out of fds: {s}"
    );
    assert!(v["memory"]["total_kb"].as_u64().unwrap() > 0, "{s}");
    assert!(!v["host"].as_str().unwrap().is_empty(), "{s}");
    a.signal(nix::libc::SIGHUP);
    std::thread::sleep(slack(Duration::from_millis(300)));
    drop(held);
    // The token survived the SIGHUP: a new connection authenticates.
    let mut c = pong_within(&a, slack(Duration::from_secs(5)));
    assert_eq!(c.auth("fd-reserve-token"), "OK");
    assert_eq!(c.req("SET k v"), "OK");
    assert_eq!(json_u64(&c.req("STATS"), "allocs_since_ready"), Some(0));
    let (status, err) = a.stop();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("AUTH disabled"), "{err}");
}

#[test]
fn connections_past_the_fd_reserve_are_told_busy_not_reset() {
    // RLIMIT_NOFILE 24 and forty connections, each with its request sent: on the control
    // port those the agent has no fd for are told `ERR busy`, on the metrics port `503`,
    // each closed cleanly (unread input used to turn the close into a reset), and counted.
    for metrics in [false, true] {
        let dir = temp_dir("fd-busy");
        let mut extra = vec!["--no-beacon", "--backlog", "64"];
        if metrics {
            extra.extend(["--metrics", "127.0.0.1:0"]);
        }
        let a = agent_with_nofile(
            24,
            dir.clone(),
            &loopback_agent_args(&dir.join("t.sock"), &extra),
        );
        let (addr, req, busy_reply): (std::net::SocketAddr, &[u8], &str) = if metrics {
            let m = (a.ready.split_whitespace())
                .find_map(|w| w.strip_prefix("metrics="))
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("no metrics= in {}", a.ready));
            (
                m,
                b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
                "HTTP/1.1 503 ",
            )
        } else {
            (a.tcp_addr(), b"PING\n", "ERR busy ")
        };
        let mut held: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(req).unwrap();
                s
            })
            .collect();
        std::thread::sleep(slack(Duration::from_millis(1500)));
        let (mut busy, mut reset) = (0, 0);
        for s in &mut held {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut b = [0u8; 64];
            match std::io::Read::read(s, &mut b) {
                Ok(n) if b[..n].starts_with(busy_reply.as_bytes()) => busy += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset += 1,
                _ => {}
            }
        }
        assert!(busy >= 1, "metrics {metrics}: none told busy");
        assert_eq!(reset, 0, "metrics {metrics}: {reset} reset, {busy} busy");
        drop(held);
        let mut c = pong_within(&a, slack(Duration::from_secs(10)));
        let counted = if metrics {
            // A scrape, once the slots the held connections had are free again.
            let scrape = || {
                let mut s = TcpStream::connect(addr).ok()?;
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
                let mut body = String::new();
                std::io::Read::read_to_string(&mut s, &mut body).ok()?;
                (body.lines())
                    .find_map(|l| l.strip_prefix("tether_http_refused_total "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            };
            let mut n = None;
            wait_for(slack(Duration::from_secs(5)), || {
                n = scrape();
                n.is_some()
            });
            n
        } else {
            json_u64(&c.req("STATS"), "refused_busy")
        };
        assert!(
            counted.is_some_and(|n| n >= busy),
            "metrics {metrics}: {counted:?} counted, {busy} told busy"
        );
        let (status, err) = a.stop();
        assert_eq!(status.code(), Some(0), "{err}");
    }
}

#[test]
fn a_thermal_path_that_is_a_fifo_does_not_stop_the_agent_and_a_long_one_is_refused() {
    // A FIFO would block open(2) until someone writes to it: every file the agent reads
    // after start-up is opened non-blocking, so STATUS has no temperature and the agent
    // and its other clients go on.
    let dir = temp_dir("fifo");
    let fifo = dir.join("temp");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let a = Agent::start(&["--thermal", fifo.to_str().unwrap()]);
    let mut c = a.unix();
    let s = c.req("STATUS");
    assert!(s.contains("\"temp_c\":null"), "{s}");
    assert_eq!(a.tcp().req("PING"), "PONG");
    let stats = c.req("STATS");
    assert_eq!(json_u64(&stats, "allocs_since_ready"), Some(0), "{stats}");
    // A path so long that opening it would allocate on every read: refused at start.
    let long = format!("/{}", "t".repeat(400));
    let Err(f) = Agent::try_start(&["--thermal", &long]) else {
        panic!("started with a 401-byte --thermal");
    };
    assert_eq!(f.status.code(), Some(64), "{}", f.stderr);
    assert_eq!(
        f.stderr,
        "error: --thermal: the path is 401 bytes, over the 360 this option allows\n"
    );
}

/// A client that reads its replies slowly but steadily is never taken for one that stopped
/// reading, even with a short idle timeout: over TCP its reading shows only when its window
/// reopens (64 KiB at a time over loopback), and after its requests are all read (it
/// half-closed, `nc -N host port < file | slow consumer`) nothing it sends moves the idle
/// clock. Both cut such a client off with replies lost: at 1 s the first reply was not even
/// half way.
#[test]
fn a_slow_steady_reader_gets_every_reply() {
    let a = Agent::start(&["--idle-timeout", "1", "--sndbuf", "4096"]);
    let readers: Vec<_> = [a.tcp(), a.unix()]
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let n = 300;
                c.send("STATUS\nPING\n".repeat(n).as_bytes()).unwrap();
                match &c.s {
                    Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
                    Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
                }
                for i in 0..2 * n {
                    let l = c
                        .line()
                        .unwrap_or_else(|e| panic!("reply {i} of {}: {e}", 2 * n));
                    let want = ["OK {\"id\":", "PONG"][i % 2];
                    assert!(l.starts_with(want), "reply {i}: {l}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(c.line().is_err(), "no EOF after the last reply");
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let stats = a.stats();
    assert_eq!(stats["closed_slow"], 0, "{stats}");
}

/// A client that half-closed (`nc -N host port < file`) after its requests were all read,
/// with replies still waiting in the agent, keeps its slot: a connect that finds the table
/// full is told `ERR busy`, and the client gets every reply. It was taken for a client
/// that had gone and closed to seat the newcomer, its replies cut off mid-line (13 of 16
/// over the Unix socket, 17 of 22 over TCP). The window (every request read, replies not
/// all out) moves with the kernel's buffers, so a range of batch sizes is tried.
#[test]
fn a_half_closed_client_keeps_its_slot_until_its_replies_are_out() {
    use nix::sys::socket::{self as ns, sockopt};
    let a = Agent::start(&["--max-clients", "1", "--sndbuf", "4096"]);
    let addr = a.tcp_addr();
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("{addr}")
    };
    for n in (10..=30).step_by(2) {
        for unix in [true, false] {
            let mut s = if unix {
                let u = std::os::unix::net::UnixStream::connect(&a.unix).unwrap();
                Stream::Unix(u)
            } else {
                // A small receive window, as a slow device has: replies wait in the agent.
                let fd = ns::socket(
                    ns::AddressFamily::Inet,
                    ns::SockType::Stream,
                    ns::SockFlag::SOCK_CLOEXEC,
                    None,
                )
                .unwrap();
                ns::setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
                ns::connect(fd.as_raw_fd(), &ns::SockaddrIn::from(v4)).unwrap();
                Stream::Tcp(TcpStream::from(fd))
            };
            s.write_all("STATUS\n".repeat(n).as_bytes()).unwrap();
            match &s {
                Stream::Tcp(t) => t.shutdown(std::net::Shutdown::Write).unwrap(),
                Stream::Unix(u) => u.shutdown(std::net::Shutdown::Write).unwrap(),
            }
            std::thread::sleep(Duration::from_millis(150));
            // Seated (the agent had closed the first) or refused: either way, not at the
            // first client's cost.
            let mut b = Client::tcp(addr);
            b.set_timeout(Duration::from_millis(300));
            let _ = b.line();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            let lines = got
                .split(|&c| c == b'\n')
                .filter(|l| l.starts_with(b"OK {"))
                .count();
            let how = if unix { "Unix" } else { "TCP" };
            assert_eq!(lines, n, "{how}, {n} STATUS: {} bytes", got.len());
            assert!(
                got.ends_with(b"\n"),
                "{how}, {n} STATUS: the last reply is cut"
            );
        }
    }
}

/// Once a client has taken every waiting reply, the idle time runs from then: it was
/// closed only at the stall limit set while its replies waited (10 s, against
/// `--idle-timeout 1`).
#[test]
fn the_idle_time_runs_from_the_last_waiting_reply() {
    let a = Agent::start(&["--idle-timeout", "1", "--sndbuf", "4096"]);
    // Over the Unix socket, where --sndbuf bounds what the kernel holds for the client (over
    // loopback TCP its receive window alone would hold every reply).
    let mut c = a.unix();
    let n = 200;
    c.send("STATUS\n".repeat(n).as_bytes()).unwrap();
    // Past the idle time while the replies wait: the stall limit is what is due.
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..n {
        c.line().unwrap_or_else(|e| panic!("reply {i}: {e}"));
    }
    let drained = Instant::now();
    c.set_timeout(Duration::from_secs(15));
    assert!(c.closed(), "not closed");
    let after = drained.elapsed();
    // Not `slack`ed: the stall limit it was closed at is 10 s from the first waiting
    // reply (8.5 s after the last), and an emulated agent is as punctual with a timer.
    assert!(
        after < Duration::from_secs(5),
        "closed {after:?} after its last reply, with --idle-timeout 1"
    );
}

#[test]
fn pipelining_past_the_output_buffer_waits_for_the_client_to_read() {
    // 400 STATUS and SOCKETS replies (about 600 bytes each) do not fit a 16 KiB output
    // buffer plus a 1 KiB socket buffer, and the client reads only after sending them all,
    // and then slowly (`nc -N < file | slow consumer`). It was closed, most replies lost:
    // now the agent stops reading it while its replies wait (back-pressure), and every
    // reply comes, whole and in order; none is `ERR busy reply too large`.
    let a = Agent::start(&["--sndbuf", "1024"]);
    for mut c in [a.unix(), a.tcp()] {
        let n = 200;
        c.send("STATUS\nSOCKETS\n".repeat(n).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..2 * n {
            let l = c.line().unwrap_or_else(|e| panic!("reply {i}: {e}"));
            let want = ["OK {\"id\":", "OK {\"sockets\":"][i % 2];
            assert!(l.starts_with(want), "reply {i}: {l}");
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert_eq!(c.req("PING"), "PONG");
    }
    let stats = a.stats();
    assert_eq!(stats["closed_slow"], 0, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
}

#[test]
fn sockets_lists_every_socket_at_its_widest_in_one_line() {
    // The longest socket paths there can be, of the character JSON escaping lengthens most
    // in a path (`é`, written `\u00e9`: 3 times its bytes, limits::JSON_ESCAPE_TEXT_MAX_FACTOR),
    // four TCP and two HTTP listeners, the publish socket and a full table of Unix clients:
    // SOCKETS answers with all of them in one OK line (limits::SOCKETS_REPLY_MAX). The paths
    // are relative (the agent runs in the test's directory), so that all their 107 bytes are
    // `é`s; the clients connect through a short symlink.
    let dir = temp_dir("widest");
    let name = |first: &str| format!("{first}{}", "é".repeat(53));
    let (sock, publish) = (name("s"), name("p"));
    assert_eq!((sock.len(), publish.len()), (107, 107));
    #[rustfmt::skip]
    let args: Vec<String> = [
        "agent", "--no-beacon", "--socket", &sock, "--publish", &publish,
        "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
        "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
        "--metrics", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
    ]
    .map(String::from)
    .into();
    let mut cmd = tether_cmd(&args);
    cmd.current_dir(&dir);
    let a = Agent::spawn_command(cmd, dir.clone(), &[])
        .unwrap_or_else(|f| panic!("agent did not start: {:?}\n{}", f.status, f.stderr));
    let link = dir.join("s");
    std::os::unix::fs::symlink(&sock, &link).unwrap();
    let mut others: Vec<Client> = (0..15).map(|_| Client::unix(&link)).collect();
    for c in &mut others {
        assert_eq!(c.req("PING"), "PONG");
    }
    let mut c = Client::unix(&link);
    let reply = c.req("SOCKETS");
    let s = ok_json(&reply);
    let items = s["sockets"].as_array().unwrap();
    let count = |kind: &str| items.iter().filter(|i| i["kind"] == kind).count();
    assert_eq!(count("tcp-listen"), 4, "{reply}");
    assert_eq!(count("http-listen"), 2, "{reply}");
    assert_eq!(count("unix-listen"), 1, "{reply}");
    assert_eq!(count("unix-publish"), 1, "{reply}");
    assert_eq!(count("unix-client"), 16, "{reply}");
    for i in items.iter().filter(|i| i["kind"] == "unix-client") {
        assert_eq!(i["addr"], sock.as_str(), "{i}");
    }
    // Each path written in printable ASCII, 321 bytes with its quotes: the control socket's
    // 17 times (its listener and 16 clients), the publish socket's once.
    let escaped = format!("\"s{}\"", "\\u00e9".repeat(53));
    assert_eq!(reply.matches(&escaped).count(), 17, "{reply}");
    assert_eq!(reply.matches(&escaped.replacen('s', "p", 1)).count(), 1);
    assert!(reply.is_ascii());
    // 18 items of about 447 bytes and 6 listeners; the 8 beacon sockets a board may have
    // besides (not here: --no-beacon) take it past the old 10240 (limits::REPLY_MAX).
    assert!(reply.len() > 18 * 440, "{} bytes", reply.len());
    assert!(reply.len() <= tether::limits::SOCKETS_REPLY_MAX);
    drop(c);
    drop(others);
    let (status, _) = a.stop();
    assert!(status.success(), "{status:?}");
}

/// `ss -tno` of the agent's side of its established TCP connections: one line each.
fn agent_side(a: &Agent) -> Vec<String> {
    let port = format!("( sport = :{} )", a.tcp_addr().port());
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", &port])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().map(str::to_string).collect()
}

#[test]
fn without_a_short_idle_timeout_tcp_keepalive_finds_a_vanished_peer() {
    // A peer gone without a FIN or RST (crashed, its Wi-Fi gone) would hold its slot for
    // good with --idle-timeout 0 (or for a day with 86400): the kernel probes it after 60 s
    // idle, every 10 s, and drops it after 6 unanswered. With a short idle timeout (the
    // default 60 s), that timeout does the work.
    for (args, keepalive) in [
        (&["--idle-timeout", "0"][..], true),
        (&["--idle-timeout", "86400"][..], true),
        (&[][..], false),
    ] {
        let a = Agent::start(args);
        let mut c = a.tcp();
        assert_eq!(c.req("PING"), "PONG");
        let lines = agent_side(&a);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let timer = lines[0].contains("timer:(keepalive,");
        assert_eq!(timer, keepalive, "{args:?}: {lines:?}");
        if keepalive {
            // The first probe within a minute (ss shows the time left: "1min" or "58sec").
            let left = lines[0].split("timer:(keepalive,").nth(1).unwrap();
            let secs: String = left.chars().take_while(char::is_ascii_digit).collect();
            let within = left.starts_with("1min") || (30..=60).contains(&secs.parse().unwrap_or(0));
            assert!(within, "{left}");
        }
    }
}
