//! The command line as a user meets it: start-up failures with one `error:` line and a
//! sysexits code, help and version, and `tether ctl`'s exit codes.

mod common;
use common::*;
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn agent_fails(extra: &[&str]) -> Failed {
    match Agent::try_start(extra) {
        Ok(a) => panic!("agent started with {extra:?}: {}", a.ready),
        Err(f) => f,
    }
}

#[test]
fn tcp_port_in_use_is_one_error_line() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t0 = Instant::now();
    let f = agent_fails(&["--listen", &addr]);
    assert!(t0.elapsed() < slack(Duration::from_secs(5)));
    let code = f.status.code().expect("exited, not killed");
    assert_ne!(code, 0);
    let errs = error_lines(&f.stderr);
    assert_eq!(errs.len(), 1, "{}", f.stderr);
    assert!(errs[0].contains(&addr), "{}", errs[0]);
    assert_eq!(f.stdout, "", "no ready line");
}

#[test]
fn bad_options_exit_64_with_one_error_line() {
    let long = "k".repeat(300);
    let cases: &[&[&str]] = &[
        &["agent", "--bogus"],
        &["agent", "--max-clients", "17"],
        &["agent", "--max-clients", "0"],
        &["agent", "--listen", "nonsense"],
        &["agent", "--listen", "127.0.0.1"],
        &["agent", "--listen", ""],
        &["agent", "--metrics", "x"],
        &["agent", "--backlog", "x"],
        &["agent", "--interval", "0"],
        &["agent", "--iface", "a/b"],
        // A C1 control (CSI), which Linux allows in a name and some terminals obey.
        &["agent", "--iface", "e\u{9b}2Jx"],
        &["frobnicate"],
        &["ctl", "--bogus", "PING"],
        // ctl's and scan's checks (src/cli.rs), before any socket is opened.
        &["ctl", "-t", "0", "PING"],
        &["ctl", "-t", "-1"],
        &["ctl", "-t", "1e-12", "PING"],
        &["ctl", "-t", "0.0009", "PING"],
        &["ctl", "-s", "/nonexistent", "-c", "127.0.0.1:1", "PING"],
        &["ctl", "GET", &long],
        // -c without a port, or with one that is not a port (no name is looked up).
        &["ctl", "-c", "127.0.0.1", "PING"],
        &["ctl", "-c", "localhost", "PING"],
        &["ctl", "-c", "127.0.0.1:99999", "PING"],
        &["ctl", "-c", "localhost:http", "PING"],
        &["ctl", "-c", "[::1]", "PING"],
        &["scan", "--bogus"],
        &["scan", "-t", "0"],
        &["scan", "-t", "1e9"],
        &["scan", "-t", "1e-12"],
        &["scan", "-i", "a/b"],
        &["scan", "-i", "e\u{1b}[2Jx"],
        &["scan", "--port", "0"],
        &["scan", "--prometheus-sd", ""],
        &["ctl", "-c", "[fe80::1]:4545", "PING"],
        // ctl --publish: only with --dgram, not with -s; --dgram needs its words.
        &["ctl", "--publish", "/tmp/p.sock", "SET", "a", "1"],
        &[
            "ctl",
            "-s",
            "/tmp/t.sock",
            "--publish",
            "/tmp/p.sock",
            "--dgram",
            "SET",
            "a",
            "1",
        ],
        &["ctl", "--dgram"],
        // One address twice (it would fail at bind, as if another program held it).
        &[
            "agent",
            "--no-beacon",
            "--listen",
            "127.0.0.1:4545",
            "--listen",
            "127.0.0.1:4545",
        ],
        &[
            "agent",
            "--no-beacon",
            "--metrics",
            "127.0.0.1",
            "--metrics",
            "127.0.0.1:9545",
        ],
        &[
            "agent",
            "--no-beacon",
            "--listen",
            "127.0.0.1:9545",
            "--metrics",
            "127.0.0.1",
        ],
        // Socket paths: empty (an abstract address), or with a newline (the ready line
        // and systemd's STATUS= would gain a line).
        &["agent", "--no-beacon", "--socket", ""],
        &[
            "agent",
            "--no-beacon",
            "--publish",
            "/tmp/p\nWATCHDOG=trigger",
        ],
        &["ctl", "-s", "", "PING"],
        // A C1 control (CSI) in a socket path: it is shown in the ready line.
        &["agent", "--no-beacon", "--socket", "/tmp/e\u{9b}2J.sock"],
        // A space: the path is one field of the ready line (`unix=PATH beacon=...`).
        &["agent", "--no-beacon", "--socket", "/tmp/my dir/t.sock"],
        &["agent", "--no-beacon", "--publish", "/tmp/p\u{a0}q.sock"],
        &["ctl", "-s", "/tmp/my dir/t.sock", "PING"],
        // @NAME: an abstract address to systemd and socat; tether binds files only.
        &["agent", "--no-beacon", "--socket", "@tether"],
        &["agent", "--no-beacon", "--publish", "@tether-publish"],
        &["ctl", "-s", "@tether", "PING"],
    ];
    for args in cases {
        let t0 = Instant::now();
        let (code, out, err) = run(args);
        assert_eq!(code, 64, "{args:?}: stdout {out:?} stderr {err:?}");
        assert_eq!(error_lines(&err).len(), 1, "{args:?}: {err:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(!out.starts_with("ready"), "{args:?}");
        assert!(t0.elapsed() < slack(Duration::from_secs(5)), "{args:?}");
    }
}

#[test]
fn help_and_version() {
    for sub in ["agent", "ctl", "scan"] {
        let (code, out, err) = run(&[sub, "--help"]);
        assert_eq!(code, 0, "{sub} --help: {err}");
        assert!(
            out.starts_with(&format!("Usage: tether {sub}")),
            "{sub}: {out}"
        );
        // `-h` too; a bare `help` is no subcommand's (ctl sends it: the agent's HELP).
        assert!(out.contains("\n  -h, --help "), "{sub}: {out}");
        assert_eq!(run(&[sub, "-h"]), (0, out, String::new()), "{sub} -h");
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["agent", "ctl", "scan"] {
        assert!(out.contains(sub), "{out}");
    }
    // `tether help` and `tether -h` as well, and before a subcommand, its usage (`tether
    // help ctl` is not the agent's HELP).
    assert!(out.contains("\n  -h, --help, help "), "{out}");
    assert_eq!(run(&["help"]), (0, out.clone(), String::new()));
    assert_eq!(run(&["-h"]), (0, out, String::new()));
    for sub in ["agent", "ctl", "scan"] {
        let usage = run(&[sub, "--help"]);
        for h in ["help", "-h", "--help"] {
            assert_eq!(run(&[h, sub]), usage, "{h} {sub}");
        }
        // What follows the name is that subcommand's to refuse, not "help".
        let want = format!("error: unrecognized argument: extra (see tether {sub} --help)\n");
        if sub != "ctl" {
            assert_eq!(run(&["help", sub, "extra"]), (64, String::new(), want));
        }
    }
    let (code, out, _) = run(&["agent", "--help"]);
    assert_eq!(code, 0);
    for opt in [
        "--listen",
        "--backlog",
        "--max-clients",
        "--idle-timeout",
        "--socket",
        "--token-file",
        "--led",
        "--no-beacon",
    ] {
        assert!(out.contains(opt), "agent --help lacks {opt}");
    }
    assert_eq!(run(&["--version"]), (0, version_line(), String::new()));
    // A command line argh cannot parse: one line in the others' style, naming the
    // subcommand's help.
    for (args, want) in [
        (
            &["agent", "--bogus"][..],
            "error: unrecognized argument: --bogus (see tether agent --help)\n",
        ),
        (
            &["ctl", "-t"],
            "error: no value provided for option '-t' (see tether ctl --help)\n",
        ),
        (
            &["frobnicate"],
            "error: unrecognized argument: frobnicate (see tether --help)\n",
        ),
        (
            &["agent", "help"],
            "error: unrecognized argument: help (see tether agent --help)\n",
        ),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (64, "", want),
            "{args:?}"
        );
    }
    assert_eq!(run(&["-V"]).1, version_line());
}

/// What `tether --version` prints: the version, and the commit HEAD is at (the binary is
/// built again when HEAD moves), `-dirty` when the sources the binary is built from differ
/// from it (build.rs's list, TETHER_SOURCES), when the tree is a git checkout with git at
/// hand.
fn version_line() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .env("TZ", "UTC")
            .env("GIT_OPTIONAL_LOCKS", "0")
            // This tree's git only, as build.rs asks (a tarball inside another checkout).
            .env("GIT_CEILING_DIRECTORIES", root.parent().unwrap())
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&[
        "log",
        "-1",
        "--abbrev=8",
        "--format=%h %cd",
        "--date=format-local:%Y-%m-%d",
    ]);
    let Some((hash, date)) = head.as_deref().and_then(|h| h.split_once(' ')) else {
        return "tether 0.1.0\n".into();
    };
    // build.rs's list of what the binary is built from.
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(env!("TETHER_SOURCES").split(' '));
    let dirty = if git(&status).is_some_and(|s| !s.is_empty()) {
        "-dirty"
    } else {
        ""
    };
    format!("tether 0.1.0 (git {hash}{dirty}, {date})\n")
}

#[test]
fn ctl_exit_codes() {
    let a = Agent::start(&[]);
    // 0: PONG.
    let (code, out, _) = a.ctl(&["PING"]);
    assert_eq!((code, out.as_str()), (0, "PONG\n"));
    let (code, out, _) = a.ctl(&["SET", "room", "kitchen", "north"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"));
    let (code, out, _) = a.ctl(&["get", "room"]);
    assert_eq!((code, out.as_str()), (0, "OK kitchen north\n"));
    // 1: the agent answered ERR.
    let (code, out, _) = a.ctl(&["FOO"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("ERR bad-command "), "{out}");
    let (code, out, _) = a.ctl(&["GET", "missing"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("ERR not-found "), "{out}");
    // No words and an empty stdin: nothing to send, nothing printed, 0.
    let sock = a.unix.to_str().unwrap();
    let (code, out, err) = run(&["ctl", "-s", sock]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    // 64: usage.
    let (code, _, err) = run(&["ctl", "-s", sock, "-t", "0", "PING"]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    let tcp = a.tcp_addr().to_string();
    let (code, _, err) = run(&["ctl", "-s", sock, "-c", &tcp, "PING"]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    // 69: nobody there.
    let dir = temp_dir("ctl");
    let nowhere = dir.join("nope.sock");
    let (code, _, err) = run(&["ctl", "-s", nowhere.to_str().unwrap(), "PING"]);
    assert_eq!(code, 69, "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    let (_held, free) = refusing_port();
    let (code, _, err) = run(&["ctl", "-c", &free.to_string(), "PING"]);
    assert_eq!(code, 69, "{err}");
    // 77: denied over TCP without a token.
    let (code, out, _) = a.ctl_tcp(&["SET", "a", "b"]);
    assert_eq!(code, 77, "{out}");
    assert!(out.starts_with("ERR denied "), "{out}");
    // Over TCP, reading is fine.
    let (code, out, _) = a.ctl_tcp(&["GET", "room"]);
    assert_eq!((code, out.as_str()), (0, "OK kitchen north\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A name that does not resolve: the agent is unreachable (69), not a usage error. Run in
/// a network namespace of its own with only loopback, so that the lookup sends nothing
/// anywhere (the name server is unreachable there, and `.invalid` never resolves).
#[test]
fn ctl_a_host_name_that_does_not_resolve_is_69() {
    if !can_netns() {
        return;
    }
    let ns = Netns::new(format!("tcr{}", std::process::id() % 100_000));
    let mut cmd = tether_cmd_in(Some(&ns), &["ctl", "-c", "nosuchhost.invalid:4545", "PING"]);
    let out = cmd.output_within(slack(Duration::from_secs(30)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert_eq!(out.stdout, b"");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    assert!(err.contains("cannot resolve nosuchhost.invalid"), "{err}");
}

/// A scoped link-local address whose interface is not there: unreachable (69), like
/// `scan -i` with such an interface, not a usage error (it may come up later). Nothing is
/// sent: the name is looked up before any socket.
#[test]
fn ctl_a_scope_interface_that_is_not_there_is_69() {
    let out = tether_cmd(&["ctl", "-c", "[fe80::1%nosuch0]:4545", "PING"])
        .output_within(slack(Duration::from_secs(10)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert_eq!(out.stdout, b"");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    assert!(err.contains("nosuch0: no such interface"), "{err}");
    // What cannot be an interface's name is a usage error, as with scan -i.
    for bad in [
        "[fe80::1%]:4545",
        "[fe80::1%a/b]:4545",
        &format!("[fe80::1%{}]:4545", "e".repeat(32)),
    ] {
        let (code, out, err) = run(&["ctl", "-c", bad, "PING"]);
        assert_eq!((code, out.as_str()), (64, ""), "{bad}: {err}");
        assert!(err.contains("not a valid interface name"), "{bad}: {err}");
    }
}

/// A peer that takes the connection and never answers: 75 after `-t`, and ctl has sent
/// its line and closed. The listener is never accepted from while ctl runs (the kernel
/// completes the connect), so nothing in the test can end the connection early: a holder
/// thread whose read a signal interrupted (EINTR) once closed it, and ctl rightly said 69.
#[test]
fn ctl_times_out_with_75() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t0 = Instant::now();
    let (code, out, err) = run(&["ctl", "-c", &addr, "-t", "0.5", "PING"]);
    let took = t0.elapsed();
    assert_eq!(code, 75, "stdout {out:?} stderr {err:?}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    assert!(took >= Duration::from_millis(450), "gave up after {took:?}");
    assert!(took < slack(Duration::from_secs(5)), "took {took:?}");
    // What each queued connection sent before its end (another test may have connected
    // to this port too, taking it for a free one): ctl's is its line, then its close.
    l.set_nonblocking(true).unwrap();
    let mut sent = Vec::new();
    while let Ok((mut s, _)) = l.accept() {
        s.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 64];
        loop {
            match retrying(|| std::io::Read::read(&mut s, &mut b)) {
                Ok(0) => break sent.push((got, "closed")),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(_) => break sent.push((got, "open")),
            }
        }
    }
    assert!(sent.contains(&(b"PING\n".to_vec(), "closed")), "{sent:?}");
}

#[test]
fn ctl_token_file_auths_first() {
    let dir = temp_dir("ctl-token");
    let tf = dir.join("token");
    std::fs::write(&tf, "hunter2\n").unwrap();
    let a = Agent::start(&["--token-file", tf.to_str().unwrap()]);
    let tcp = a.tcp_addr().to_string();
    let tfs = tf.to_str().unwrap();
    let (code, out, err) = run(&["ctl", "-c", &tcp, "--token-file", tfs, "SET", "a", "b"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    assert_eq!(a.unix().req("GET a"), "OK b");
    // Without the token file the same command is denied.
    let (code, out, _) = run(&["ctl", "-c", &tcp, "DEL", "a"]);
    assert_eq!(code, 77, "{out}");
    // A wrong token: denied too, and ctl reports it.
    let bad = dir.join("bad");
    std::fs::write(&bad, "nope\n").unwrap();
    let (code, out, _) = run(&[
        "ctl",
        "-c",
        &tcp,
        "--token-file",
        bad.to_str().unwrap(),
        "DEL",
        "a",
    ]);
    assert_eq!(code, 77, "{out}");
    assert!(out.starts_with("ERR denied"), "{out}");
    assert_eq!(a.unix().req("GET a"), "OK b");
    // A file the agent would refuse is refused by ctl too, as a configuration error (78)
    // before anything is sent, not as a wrong answer; white space around the token is not
    // part of it (CRLF, indentation).
    let empty = dir.join("empty");
    std::fs::write(&empty, " \r\n").unwrap();
    let long = dir.join("long");
    std::fs::write(&long, "a".repeat(129)).unwrap();
    let missing = dir.join("missing");
    for (f, why) in [
        (&empty, "empty"),
        (&long, "longer than 128 bytes"),
        (
            &missing,
            "missing or unreadable (ENOENT: No such file or directory)",
        ),
    ] {
        let f = f.to_str().unwrap();
        let (code, out, err) = run(&["ctl", "-c", &tcp, "--token-file", f, "DEL", "a"]);
        assert_eq!(code, 78, "{out} {err}");
        assert_eq!(err, format!("error: --token-file {f}: {why}\n"));
    }
    std::fs::write(&tf, "  hunter2\r\n").unwrap();
    let (code, out, err) = run(&["ctl", "-c", &tcp, "--token-file", tfs, "DEL", "a"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    let got = a.unix().req("GET a");
    assert!(got.starts_with("ERR not-found "), "{got}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-t` below a millisecond would be a zero timeout: refused (64) before anything is
/// sent, over Unix and TCP alike; a millisecond itself is fine.
#[test]
fn ctl_timeout_below_a_millisecond_is_refused_before_sending() {
    let a = Agent::start(&[]);
    let sock = a.unix.to_str().unwrap();
    let tcp = a.tcp_addr().to_string();
    for to in [["-s", sock], ["-c", &tcp]] {
        let (code, out, err) = run(&["ctl", "-t", "1e-12", to[0], to[1], "SET", "k", "v"]);
        assert_eq!((code, out.as_str()), (64, ""), "{to:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{to:?}: {err}");
        assert!(err.starts_with("error: -t: "), "{to:?}: {err}");
        // 1 ms is a valid timeout: PONG, or (emulated, slow) a timeout, never a bad option.
        let (code, out, err) = run(&["ctl", "-t", "0.001", to[0], to[1], "PING"]);
        match code {
            0 => assert_eq!(out, "PONG\n"),
            75 => assert!(err.contains("timed out"), "{to:?}: {err}"),
            _ => panic!("{to:?}: -t 0.001 gave {code}: {err}"),
        }
    }
    assert_eq!(a.unix().req("GET k"), "ERR not-found no such fact");
    // Half a second as people type it, and the upper bound.
    for half in [".5", "5."] {
        let (code, out, err) = run(&["ctl", "-t", half, "-s", sock, "PING"]);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "PONG\n", ""),
            "{half}"
        );
    }
    let (code, _, err) = run(&["ctl", "-t", "1000000", "-s", sock, "PING"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("below 1000000 seconds"), "{err}");
}

/// Options go before the command: one after its first word is sent as a word of the
/// command, and ctl says so (`SET room hall -c otherhost:4545` stored "hall -c ..." on the
/// default agent without a word).
#[test]
fn ctl_an_option_after_the_command_is_sent_and_warned_about() {
    let a = Agent::start(&[]);
    let sock = a.unix.to_str().unwrap();
    let (code, out, err) = run(&["ctl", "-s", sock, "SET", "room", "hall", "-t", "2"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    assert_eq!(
        err,
        "warning: -t comes after the command, so it is sent as part of it \
         (ctl's options go before the command)\n"
    );
    assert_eq!(a.unix().req("GET room"), "OK hall -t 2");
    // A word that only looks like one (a value "-5") is no option: nothing said. `-h` is
    // ctl's (its usage), so it is warned about like the others.
    let (code, _, err) = run(&["ctl", "-s", sock, "SET", "t", "-5"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let (code, _, err) = run(&["ctl", "-s", sock, "SET", "t", "-h"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.starts_with("warning: -h comes after the command"),
        "{err}"
    );
    assert_eq!(a.unix().req("GET t"), "OK -h");
}

/// A Unix socket path longer than sun_path holds (107 bytes) is a bad option: 64 and one
/// `error:` line naming the option and the limit, for ctl `-s` and agent `--socket` and
/// `--publish`. A path of exactly 107 bytes works.
#[test]
fn over_long_socket_paths_exit_64() {
    let dir = temp_dir("sock-path");
    let fill = 107 - dir.as_os_str().len() - "/.sock".len();
    let at_limit = dir.join(format!("{}.sock", "s".repeat(fill)));
    let over = dir.join(format!("{}.sock", "s".repeat(fill + 1)));
    assert_eq!(at_limit.as_os_str().len(), 107);
    let over = over.to_str().unwrap();
    let (code, out, err) = run(&["ctl", "-s", over, "PING"]);
    assert_eq!((code, out.as_str()), (64, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: -s: ") && err.contains("107"),
        "{err}"
    );
    for opt in ["--socket", "--publish"] {
        let f = agent_fails(&[opt, over]);
        assert_eq!(f.status.code(), Some(64), "{opt}: {}", f.stderr);
        assert_eq!(f.stderr.lines().count(), 1, "{opt}: {}", f.stderr);
        assert!(
            f.stderr.starts_with(&format!("error: {opt}: ")) && f.stderr.contains("107"),
            "{opt}: {}",
            f.stderr
        );
        assert!(!std::path::Path::new(over).exists(), "{opt}: {over} made");
    }
    let a = Agent::start(&["--socket", at_limit.to_str().unwrap()]);
    assert_eq!(a.unix, at_limit);
    assert_eq!(a.ctl(&["PING"]).1, "PONG\n");
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_argument_that_is_not_utf8_is_one_error_line_not_a_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let latin1 = OsStr::from_bytes(b"/tmp/k\xfcche.sock");
    for args in [
        vec![
            OsStr::new("ctl"),
            OsStr::new("-s"),
            latin1,
            OsStr::new("PING"),
        ],
        vec![
            OsStr::new("ctl"),
            OsStr::new("GET"),
            OsStr::from_bytes(b"\xff"),
        ],
        vec![
            OsStr::new("agent"),
            OsStr::new("--no-beacon"),
            OsStr::new("--socket"),
            latin1,
        ],
        vec![
            OsStr::new("scan"),
            OsStr::new("-i"),
            OsStr::from_bytes(b"\xe90"),
        ],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!((code, out.as_str()), (64, ""), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: argument "), "{args:?}: {err}");
        assert!(err.contains("is not valid UTF-8"), "{args:?}: {err}");
    }
}

#[test]
fn control_characters_in_an_argument_are_not_echoed_to_the_terminal() {
    // The error line quotes what was given; ESC, BEL, CSI and a right-to-left override
    // in it must not reach the terminal (a pasted host name, a file name).
    for (args, code) in [
        (vec!["ctl", "-c", "bo\u{1b}[2Jard:4200", "PING"], 64),
        (vec!["ctl", "-c", "127.0.0.1:42\u{9b}1m", "PING"], 64),
        (vec!["agent", "--no-beacon", "--b\u{1b}[31mogus"], 64),
        (vec!["c\u{202e}lt", "PING"], 64),
    ] {
        let (got, out, err) = run(&args);
        assert_eq!((got, out.as_str()), (code, ""), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("error: "), "{args:?}: {err:?}");
        let line = err.trim_end_matches('\n');
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{args:?}: {err:?}"
        );
        // Shown as `?`, or escaped where the value is quoted (`"42\u{9b}1m"`).
        assert!(
            line.contains('?') || line.contains("\\u{"),
            "{args:?}: {err:?}"
        );
    }
}

#[test]
fn a_socket_group_this_user_may_not_use_is_a_configuration_error() {
    // chgrp(2) needs root or membership: a user outside the group gets 78 and one line
    // before any socket is made (it was 69, "chgrp ...: EPERM", after binding).
    if !can_run_as_nobody() {
        return;
    }
    let dir = temp_dir("group");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let sock = dir.join("t.sock");
    let args = [
        "agent",
        "--no-beacon",
        "--listen",
        "127.0.0.1:0",
        "--socket",
        sock.to_str().unwrap(),
        "--socket-group",
        "root",
    ];
    let out = as_nobody(&args).output_within(slack(Duration::from_secs(30)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert_eq!(
        err,
        "error: --socket-group root: this user is neither root nor in it\n"
    );
    assert!(!sock.exists());
}

#[test]
fn an_xdg_runtime_dir_that_cannot_hold_the_socket_is_passed_over_with_a_warning() {
    // The default socket path of a user is in $XDG_RUNTIME_DIR; one with a newline went
    // into the ready line and systemd's STATUS= as it was. Now /tmp/tether-UID is used,
    // and the agent says why.
    if !can_run_as_nobody() {
        return;
    }
    let fallback = std::path::Path::new("/tmp/tether-65534/tether.sock");
    // What an earlier run that failed half-way may have left (a symlink, a 0777 directory).
    let _ = std::fs::remove_file("/tmp/tether-65534");
    let _ = std::fs::remove_dir_all("/tmp/tether-65534");
    for (xdg, why) in [
        (
            "/run/x\nWATCHDOG=trigger",
            "(not UTF-8, or a space or control character)",
        ),
        ("run/user/65534", "(not an absolute path)"),
        (
            "/run/my dir",
            "(not UTF-8, or a space or control character)",
        ),
    ] {
        let mut cmd = as_nobody(&["agent", "--no-beacon", "--listen", "127.0.0.1:0"]);
        cmd.env("XDG_RUNTIME_DIR", xdg);
        let a = Agent::spawn_command(cmd, temp_dir("xdg"), &[])
            .unwrap_or_else(|f| panic!("{xdg:?}: agent did not start: {}\n{}", f.stdout, f.stderr));
        assert_eq!(a.unix, fallback, "{xdg:?}: {}", a.ready);
        assert_eq!(a.ctl(&["PING"]).1, "PONG\n");
        let (status, err) = a.stop();
        assert!(status.success(), "{err}");
        let warned = err
            .lines()
            .filter(|l| l.contains("XDG_RUNTIME_DIR passed over"))
            .count();
        assert_eq!(warned, 1, "{xdg:?}: {err}");
        assert!(err.contains(why), "{xdg:?}: {err}");
        // The test's own RLIMIT_NOFILE is far above what 16 clients need.
        assert!(!err.contains("RLIMIT_NOFILE"), "{xdg:?}: {err}");
    }
    // One that is usable but cannot be made (no such parent, not this user's): the error
    // names the variable, which the user never typed (it read "create /nonexistent/run:
    // Permission denied" alone).
    let out = as_nobody(&["agent", "--no-beacon", "--listen", "127.0.0.1:0"])
        .env("XDG_RUNTIME_DIR", "/nonexistent/run")
        .output_within(slack(Duration::from_secs(10)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    assert!(
        err.contains("error: create /nonexistent/run: ")
            && err
                .contains("(the default socket, in $XDG_RUNTIME_DIR; --socket PATH sets another)"),
        "{err}"
    );
    // /tmp/tether-UID is made in /tmp, where anyone may make it first: the agent and ctl
    // use it only when it is this user's own directory that nobody else may write in.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new("/tmp/tether-65534");
    let mode = |m: u32| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m));
    let nobody = nix::unistd::Uid::from_raw(65534);
    let decoy = temp_dir("xdg-decoy");
    nix::unistd::chown(&decoy, Some(nobody), None).unwrap();
    for (made_by, why) in [
        ("root, mode 0777", "belongs to uid 0, not 65534"),
        ("nobody, mode 0777", "may be written by others (mode 777)"),
        ("a symlink", "is not a directory"),
    ] {
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_file(dir);
        match made_by {
            "a symlink" => std::os::unix::fs::symlink(&decoy, dir).unwrap(),
            _ => {
                std::fs::create_dir(dir).unwrap();
                mode(0o777).unwrap();
                if made_by.starts_with("nobody") {
                    nix::unistd::chown(dir, Some(nobody), None).unwrap();
                }
            }
        }
        let agent = as_nobody(&["agent", "--no-beacon", "--listen", "127.0.0.1:0"])
            .env_remove("XDG_RUNTIME_DIR")
            .output_within(slack(Duration::from_secs(10)));
        let ctl = as_nobody(&["ctl", "PING"])
            .env_remove("XDG_RUNTIME_DIR")
            .output_within(slack(Duration::from_secs(10)));
        for (who, out) in [("agent", agent), ("ctl", ctl)] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(69), "{who}, {made_by}: {err}");
            let want = format!("error: /tmp/tether-65534 {why}: another user could");
            assert_eq!(error_lines(&err).len(), 1, "{who}, {made_by}: {err}");
            assert!(err.contains(&want), "{who}, {made_by}: {err}");
        }
        assert!(!decoy.join("tether.sock").exists(), "{made_by}");
        // An empty XDG_RUNTIME_DIR is none (the path is /tmp's): not blamed for it.
        let out = as_nobody(&["agent", "--no-beacon", "--listen", "127.0.0.1:0"])
            .env("XDG_RUNTIME_DIR", "")
            .output_within(slack(Duration::from_secs(10)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{made_by}: {err}");
        assert!(
            err.contains(&format!("/tmp/tether-65534 {why}")),
            "{made_by}: {err}"
        );
        assert!(!err.contains("XDG_RUNTIME_DIR"), "{made_by}: {err}");
    }
    let _ = std::fs::remove_file(dir);
    let _ = std::fs::remove_dir_all(&decoy);
}

/// `-v` / `-vv` (one argument, as users type it) turn on the debug lines, e.g. a client's
/// connect; without them, or when `RUST_LOG` is set (it wins), there are none.
#[test]
fn verbose_switches_and_rust_log() {
    // (debug lines, trace lines) of an agent asked PING and, on its Unix socket, a plain
    // AUTH with a made-up token.
    let lines = |extra: &[&str], rust_log: &str| {
        let dir = temp_dir("verbose");
        let mut args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon", "--no-publish"]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let a = Agent::spawn(&args, dir, &[("RUST_LOG", rust_log)]).unwrap_or_else(|f| {
            panic!("{extra:?} RUST_LOG={rust_log}: {:?} {}", f.status, f.stderr)
        });
        assert_eq!(a.ctl(&["PING"]).1.trim(), "PONG");
        a.ctl(&["AUTH", "sw0rdfish"]);
        let (status, err) = a.stop();
        assert!(status.success(), "{err}");
        // A secret is never logged, at any level.
        assert!(!err.contains("sw0rdfish"), "{err}");
        let count = |level: &str| err.lines().filter(|l| l.starts_with(level)).count();
        let traced = err
            .lines()
            .any(|l| l.starts_with("[TRACE") && l.ends_with(": \"PING\" -> \"PONG\""));
        assert_eq!(traced, count("[TRACE") > 0, "{err}");
        (count("[DEBUG"), count("[TRACE"))
    };
    // An empty RUST_LOG is as good as none: the level comes from -v.
    assert_eq!(lines(&[], ""), (0, 0));
    let (debug, trace) = lines(&["-v"], "");
    assert!(debug >= 1 && trace == 0, "{debug} {trace}");
    // -vv: each request too, with its reply.
    let (debug, trace) = lines(&["-vv"], "");
    assert!(debug >= 1 && trace >= 2, "{debug} {trace}");
    let (debug, trace) = lines(&["-v", "-v"], "");
    assert!(debug >= 1 && trace >= 2, "{debug} {trace}");
    assert_eq!(lines(&["-vv"], "info"), (0, 0));
    let (debug, trace) = lines(&[], "debug");
    assert!(debug >= 1 && trace == 0, "{debug} {trace}");
}

/// Runs `tether ARGS` with stdout `out` (stdin /dev/null), bounded: (exit code, stderr).
fn run_with_stdout(args: &[&str], out: std::process::Stdio) -> (i32, String) {
    use std::process::Stdio;
    let mut child = tether_cmd(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = wait_timeout(&mut child, slack(Duration::from_secs(30)));
    (status.code().unwrap_or(-1), err)
}

/// Standard output that cannot be written (a full disk; here /dev/full) is exit 74 and one
/// `error:` line: not a panic with a backtrace (help, version), not a 0 that passes an empty
/// file off as the whole answer (ctl). A reader that has gone (`| head`) is no failure.
#[test]
fn stdout_that_cannot_be_written_is_74_and_one_error_line() {
    let a = Agent::start(&[]);
    let sock = a.unix.to_str().unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let cases: &[&[&str]] = &[
        &["--version"],
        &["--help"],
        &["ctl", "--help"],
        &["ctl", "-s", sock, "PING"],
        &["ctl", "-s", sock, "GET", "nope"],
    ];
    for args in cases {
        let (code, err) = run_with_stdout(args, full().into());
        assert_eq!(code, 74, "{args:?}: {err}");
        assert_eq!(error_lines(&err).len(), 1, "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Commands from a pipe: the same.
    let mut child = tether_cmd(&["ctl", "-s", sock])
        .stdin(std::process::Stdio::piped())
        .stdout(full())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"PING\nGET nope\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    // The reader went away before the reply: nothing to say, the reply's own code.
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let (code, err) = run_with_stdout(&["ctl", "-s", sock, "PING"], std::fs::File::from(w).into());
    assert_eq!((code, err.as_str()), (0, ""));
}

/// HELP is one of the agent's commands, and ctl's words are sent in any case (`ctl ping`):
/// `tether ctl help` sends it too, instead of printing ctl's own usage.
#[test]
fn ctl_help_sends_the_agents_help() {
    let a = Agent::start(&[]);
    let (code, upper, _) = a.ctl(&["HELP"]);
    assert_eq!(code, 0, "{upper}");
    assert!(!upper.starts_with("Usage:"), "{upper}");
    for words in [&["help"][..], &["-t", "5", "help"], &["--raw", "help"]] {
        let (code, out, err) = a.ctl(words);
        assert_eq!((code, &out), (0, &upper), "{words:?}: {err}");
    }
    // ctl's own usage is still --help.
    let (code, out, _) = a.ctl(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Usage: tether ctl"), "{out}");
}

/// A start-up that fails leaves nothing behind: not the socket files, and not the
/// directories it made for them (checked before they are made where it can be: --led,
/// --token-file).
#[test]
fn a_failed_start_leaves_no_directory_behind() {
    let dir = temp_dir("debris");
    let p = |rel: &str| dir.join(rel).to_string_lossy().into_owned();
    let live = Agent::start(&[]);
    let live_publish = live.publish_path().unwrap();
    let cases: Vec<(Vec<String>, i32)> = vec![
        (
            vec![
                "--socket".into(),
                p("a/t.sock"),
                "--led".into(),
                p("no-led"),
            ],
            78,
        ),
        (
            vec![
                "--socket".into(),
                p("b/t.sock"),
                "--publish".into(),
                p("c/d/p.sock"),
                "--token-file".into(),
                p("no-token"),
            ],
            78,
        ),
        (
            vec![
                "--socket".into(),
                p("e/t.sock"),
                "--publish".into(),
                p("e/t.sock"),
            ],
            64,
        ),
        (
            vec![
                "--socket".into(),
                p("f/g/t.sock"),
                "--publish".into(),
                live_publish.to_string_lossy().into_owned(),
            ],
            69,
        ),
    ];
    for (extra, want) in cases {
        let mut args: Vec<String> = ["agent", "--no-beacon", "--listen", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().cloned());
        let (code, out, err) = run(&args);
        assert_eq!(code, want, "{extra:?}: {err}");
        assert_eq!(out, "", "{extra:?}");
        assert_eq!(error_lines(&err).len(), 1, "{extra:?}: {err}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{extra:?} left {left:?}");
    }
    // The live agent's socket is untouched.
    assert_eq!(live.ctl(&["PING"]).1, "PONG\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_agent_keeps_no_descriptor_it_was_started_with() {
    // A starter that passes on a pipe (busybox's start-stop-daemon, a shell's saved
    // descriptors, `x=$(/etc/init.d/tether start)`): kept, its reader would wait for the
    // pipe's end for as long as the agent runs.
    let (r, w) = nix::unistd::pipe().unwrap(); // no close-on-exec: inherited
    let a = Agent::start(&[]);
    let ino = nix::sys::stat::fstat(&w).unwrap().st_ino;
    drop((r, w));
    let pipe = format!("pipe:[{ino}]");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", a.pid())).unwrap();
    let held: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(!held.contains(&pipe), "{pipe} in {held:?}");
    assert_eq!(a.unix().req("PING"), "PONG");
}

/// An LED file that is there but cannot be read at start (a directory here: EISDIR) is
/// not taken for one that is not there: `max_brightness` (else "on" would be 1, dim on a
/// PWM LED) or a `trigger` whose stat fails (a symlink loop: else the trigger is never
/// saved). Like an unwritable LED: waited for, then 78. (Out of fds, ENOMEM or EIO it is
/// 71 at once: tests/limits.rs.)
#[test]
fn an_led_file_there_but_unreadable_at_start_is_78() {
    let dir = temp_dir("led-unreadable");
    let max = dir.join("max");
    std::fs::create_dir_all(max.join("max_brightness")).unwrap();
    std::fs::write(max.join("brightness"), "0\n").unwrap();
    let looped = dir.join("loop");
    std::fs::create_dir_all(&looped).unwrap();
    std::fs::write(looped.join("brightness"), "0\n").unwrap();
    std::os::unix::fs::symlink("trigger", looped.join("trigger")).unwrap();
    let cases = [
        (max.to_string_lossy().into_owned(), "max_brightness"),
        (
            looped.join("brightness").to_string_lossy().into_owned(),
            "trigger",
        ),
    ];
    std::thread::scope(|s| {
        for (led, file) in &cases {
            s.spawn(move || {
                let f = agent_fails(&["--led", led]);
                assert_eq!(f.status.code(), Some(78), "{led}: {}", f.stderr);
                let errs = error_lines(&f.stderr);
                assert_eq!(errs.len(), 1, "{led}: {}", f.stderr);
                assert!(errs[0].contains(file), "{led}: {}", errs[0]);
            });
        }
    });
}

/// An empty path for a file the agent opens (`--led ""`, `--thermal ""`, `--token-file ""`,
/// `--fleet-key ""`) is a bad option, as an empty `--socket` is: 64 and one `error:` line
/// at once, not a 5 s wait for an LED that cannot appear, a 78, or a temperature that is
/// quietly never read.
#[test]
fn an_empty_file_path_is_a_usage_error() {
    for opt in ["--led", "--thermal", "--token-file", "--fleet-key"] {
        let t0 = Instant::now();
        let f = agent_fails(&[opt, ""]);
        assert_eq!(f.status.code(), Some(64), "{opt}: {}", f.stderr);
        assert_eq!(f.stderr, format!("error: {opt}: an empty path\n"), "{opt}");
        assert!(t0.elapsed() < slack(Duration::from_secs(2)), "{opt}");
    }
}

/// A socket path is refused for a bidirectional formatting character too, and the message
/// says so (it named only "a space or a control character", of which U+202E is neither).
#[test]
fn a_socket_path_with_a_bidi_character_is_refused_naming_it() {
    let (code, _, err) = run(&["ctl", "-s", "/tmp/a\u{202e}b.sock", "PING"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bidirectional formatting character"), "{err}");
}

/// A path option whose value was forgotten takes the next option as its path (argh, like
/// getopt, takes any word as the value): `--thermal --no-publish` started an agent with a
/// publish socket and no temperature, `--socket --no-beacon` one that beacons, its socket
/// a file named `--no-beacon`. A path that begins with `-` is refused (64, one line, with
/// the `./-NAME` way to name such a file); nothing starts.
#[test]
fn a_path_option_followed_by_an_option_is_a_usage_error() {
    let f = agent_fails(&["--thermal", "--no-publish"]);
    assert_eq!(f.status.code(), Some(64), "{}", f.stderr);
    assert_eq!(error_lines(&f.stderr).len(), 1, "{}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(f.stderr.starts_with("error: --thermal: "), "{}", f.stderr);
    assert!(f.stderr.contains("./-"), "{}", f.stderr);
    let (code, out, err) = run(&["ctl", "-s", "--raw", "PING"]);
    assert_eq!((code, out.as_str()), (64, ""), "{err}");
    assert!(err.starts_with("error: -s: "), "{err}");
    // Named as a path, such a file is fine.
    let (code, _, err) = run(&["ctl", "-s", "./--raw", "PING"]);
    assert_eq!(code, 69, "{err}");
    // An interface name the same way: `--iface --no-beacon` waited for an interface named
    // `--no-beacon`, beaconing nothing.
    let f = agent_fails(&["--iface", "--no-beacon"]);
    assert_eq!(f.status.code(), Some(64), "{}", f.stderr);
    assert_eq!(
        f.stderr,
        "error: --iface \"--no-beacon\": not a valid interface name\n"
    );
}

/// ctl without `-s` tries this user's agent, then the system's: when neither is there, the
/// error names both (it named only the first, though ctl had looked for both).
#[test]
fn ctl_with_no_agent_at_either_default_names_both_sockets() {
    if !can_run_as_nobody() {
        return;
    }
    if std::path::Path::new("/run/tether/tether.sock").exists() {
        return skip("a system agent's socket is at /run/tether/tether.sock");
    }
    use std::os::unix::fs::PermissionsExt;
    let xdg = temp_dir("xdg-none");
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&xdg, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let out = as_nobody(&["ctl", "PING"])
        .env("XDG_RUNTIME_DIR", &xdg)
        .output_within(slack(Duration::from_secs(10)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert_eq!(
        err,
        format!(
            "error: connect {}/tether.sock: No such file or directory (os error 2) \
             (nor is there /run/tether/tether.sock: is an agent running?)\n",
            xdg.display()
        )
    );
}

/// Standard error whose reader has gone (`tether scan --watch 2>&1 | head -1`, a broken
/// journal stream): the message is lost, the exit code is the one documented. std's
/// `eprintln!` panicked there, and a panic aborts the shipped build (134).
#[test]
fn stderr_without_a_reader_loses_the_message_not_the_exit_code() {
    use std::process::Stdio;
    let nowhere = temp_dir("stderr-gone").join("nope.sock");
    for (args, want) in [
        (vec!["agent", "--bogus"], 64),
        (vec!["ctl", "-s", nowhere.to_str().unwrap(), "PING"], 69),
    ] {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let mut child = tether_cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::from(w))
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut child, slack(Duration::from_secs(30)));
        assert_eq!(status.code(), Some(want), "{args:?}: {status:?}");
    }
}

/// `tether ctl` told "Permission denied" says what keeps this user out: the directory above
/// the socket it may not search, else the socket it may not write to, with mode and group
/// (so an operator knows which group to join), for a connection and for `--dgram` alike.
#[test]
fn ctl_says_what_keeps_this_user_from_the_socket() {
    if !can_run_as_nobody() {
        return;
    }
    let top = temp_dir("denied");
    std::fs::set_permissions(&top, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The agent makes the directory of its socket 0750: nobody may not pass it.
    let sock = top.join("d/tether.sock");
    let a = Agent::start(&["--socket", sock.to_str().unwrap()]);
    let ctl = |args: &[&str]| {
        let out = as_nobody(args).output_within(slack(Duration::from_secs(30)));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = sock.to_str().unwrap();
    let d = top.join("d");
    let publish = top.join("d/publish.sock");
    let closed = |p: &std::path::Path, mode| {
        format!(
            "Permission denied (os error 13); {} (mode {mode}, group root) is closed to this user\n",
            p.display()
        )
    };
    let (code, err) = ctl(&["ctl", "-s", s, "PING"]);
    assert_eq!(code, Some(77), "{err}");
    assert_eq!(err, format!("error: connect {s}: {}", closed(&d, 750)));
    let (code, err) = ctl(&["ctl", "-s", s, "--dgram", "SET", "a", "1"]);
    assert_eq!(code, Some(77), "{err}");
    let p = publish.display();
    assert_eq!(err, format!("error: send {p}: {}", closed(&d, 750)));
    // The directory opened, the sockets (0660, root's group) still keep nobody out.
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, err) = ctl(&["ctl", "-s", s, "PING"]);
    assert_eq!(code, Some(77), "{err}");
    assert_eq!(err, format!("error: connect {s}: {}", closed(&sock, 660)));
    let (code, err) = ctl(&["ctl", "-s", s, "--dgram", "SET", "a", "1"]);
    assert_eq!(code, Some(77), "{err}");
    assert_eq!(err, format!("error: send {p}: {}", closed(&publish, 660)));
    // Nothing of it reached the agent.
    assert_eq!(a.ctl(&["GET", "a"]).1, "ERR not-found no such fact\n");
}
