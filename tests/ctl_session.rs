//! `tether ctl` as operators use chronyc or redis-cli (issue 11, item 4): a prompt on a
//! terminal (driven here through a real pseudo-terminal from openpty(3)), one command per
//! line from a pipe or file, and STATUS/STATS/SOCKETS as indented text on a terminal.

mod common;

use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `tether ARGS...` with stdin, stdout and stderr on a fresh pseudo-terminal: the child
/// sees a terminal, the test types into and reads from the master side.
struct Tty {
    child: Child,
    master: File,
    output: mpsc::Receiver<Vec<u8>>,
    /// Everything read so far, `\r` removed (the terminal turns `\n` into `\r\n`).
    seen: String,
}

impl Tty {
    fn spawn(args: &[&str]) -> Tty {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty writes two fds into the two ints; the name, termios and winsize
        // pointers may be null.
        let r = unsafe {
            nix::libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened by openpty and are owned by nobody else.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut cmd = tether_cmd(args);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().expect("spawn tether ctl");
        // The parent's copies of the slave must go, or the master never sees EOF/EIO.
        drop(cmd);
        let master = File::from(master);
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Tty {
            child,
            master,
            output,
            seen: String::new(),
        }
    }

    /// Waits until the output holds `text` after position `from`; returns the position
    /// just past it. Panics with everything seen when it does not come.
    fn expect_after(&mut self, from: usize, text: &str) -> usize {
        let end = Instant::now() + slack(Duration::from_secs(10));
        loop {
            if let Some(i) = self.seen[from..].find(text) {
                return from + i + text.len();
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(b) => self.seen += &String::from_utf8_lossy(&b).replace('\r', ""),
                Err(_) => panic!("{text:?} never came; the terminal showed:\n{}", self.seen),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\n").unwrap();
    }

    fn exit_code(&mut self) -> i32 {
        wait_timeout(&mut self.child, slack(Duration::from_secs(10)))
            .code()
            .unwrap_or(-1)
    }
}

#[test]
fn interactive_prompt_keeps_one_authenticated_connection() {
    let (a, tf) = token_agent("s3cret\n", &[]);
    let tcp = a.tcp_addr().to_string();
    let mut t = Tty::spawn(&["ctl", "-c", &tcp, "--token-file", tf.to_str().unwrap()]);
    let mut at = t.expect_after(0, &format!("connected to {tcp}"));
    at = t.expect_after(at, "tether> ");
    // SET over TCP needs AUTH: it works because the session authenticated once.
    t.type_line("SET room kitchen");
    at = t.expect_after(at, "SET room kitchen\nOK\ntether> ");
    // An ERR is shown and the session goes on.
    t.type_line("BOGUS");
    at = t.expect_after(at, "ERR bad-command");
    at = t.expect_after(at, "tether> ");
    t.type_line("");
    t.type_line("ping");
    at = t.expect_after(at, "PONG\ntether> ");
    // STATUS is indented text on a terminal, not the one-line JSON.
    t.type_line("STATUS");
    at = t.expect_after(at, "\nid: ");
    at = t.expect_after(at, "\nfacts:\n  room: kitchen\n");
    at = t.expect_after(at, "tether> ");
    // One connection for the whole session, and no failed AUTH.
    t.type_line("STATS");
    let stats_from = at;
    at = t.expect_after(at, "tether> ");
    let stats = &t.seen[stats_from..at];
    assert!(stats.contains("\naccepted: 1\n"), "{stats}");
    assert!(stats.contains("\nauth_failures: 0\n"), "{stats}");
    assert!(!stats.contains('{'), "{stats}");
    t.type_line("quit");
    assert_eq!(t.exit_code(), 0, "{}", t.seen);
    assert_eq!(a.stats()["accepted"], 2, "the session and this STATS");
}

#[test]
fn an_idle_prompt_reconnects_and_authenticates_again() {
    let (a, tf) = token_agent("s3cret\n", &["--idle-timeout", "1"]);
    let tcp = a.tcp_addr().to_string();
    let mut t = Tty::spawn(&["ctl", "-c", &tcp, "--token-file", tf.to_str().unwrap()]);
    let mut at = t.expect_after(0, "tether> ");
    t.type_line("SET a 1");
    at = t.expect_after(at, "OK\ntether> ");
    // The operator thinks longer than the agent's --idle-timeout.
    assert!(wait_for(slack(Duration::from_secs(5)), || a.stats()
        ["closed_idle"]
        == 1));
    t.type_line("SET a 2");
    at = t.expect_after(
        at,
        "(the agent closed the connection; reconnecting)\nOK\ntether> ",
    );
    t.type_line("GET a");
    t.expect_after(at, "OK 2\ntether> ");
    t.type_line("exit");
    assert_eq!(t.exit_code(), 0, "{}", t.seen);
    assert_eq!(a.stats()["auth_failures"], 0);
}

#[test]
fn interactive_prompt_leaves_on_eof() {
    let a = Agent::start(&[]);
    let mut t = Tty::spawn(&["ctl", "-s", a.unix.to_str().unwrap()]);
    let at = t.expect_after(0, "tether> ");
    t.master.write_all(&[4]).unwrap(); // Ctrl-D: EOF at the start of a line
                                       // The prompt's line is ended, so the shell's prompt starts on a fresh line.
    t.expect_after(at, "\n");
    assert_eq!(t.exit_code(), 0, "{}", t.seen);
}

#[test]
fn one_command_on_a_terminal_is_pretty_unless_raw() {
    let a = Agent::start(&[]);
    let sock = a.unix.to_str().unwrap();
    let mut t = Tty::spawn(&["ctl", "-s", sock, "SOCKETS"]);
    t.expect_after(0, "sockets:\n  - kind: tcp-listen\n    addr: 127.0.0.1:");
    assert_eq!(t.exit_code(), 0);
    assert!(!t.seen.contains("tether> "), "{}", t.seen);

    let mut t = Tty::spawn(&["ctl", "-s", sock, "--raw", "STATUS"]);
    t.expect_after(0, "OK {\"id\":");
    assert_eq!(t.exit_code(), 0);
    assert_eq!(t.seen.lines().count(), 1, "{}", t.seen);
}

#[test]
fn on_a_terminal_an_empty_reply_is_none_and_a_non_json_one_is_shown_as_it_came() {
    let (sock, _) = fake_peer("OK {}");
    let mut t = Tty::spawn(&["ctl", "-s", sock.to_str().unwrap(), "STATUS"]);
    t.expect_after(0, "(none)\n");
    assert_eq!(t.exit_code(), 0);

    let (sock, _) = fake_peer(r#"OK {"a":NaN,"b":01}"#);
    let mut t = Tty::spawn(&["ctl", "-s", sock.to_str().unwrap(), "STATS"]);
    t.expect_after(0, "OK {\"a\":NaN,\"b\":01}\n");
    assert_eq!(t.exit_code(), 0);
}

/// `tether ctl ARGS... < FILE` with stdout a pipe: (exit code, stdout, stderr).
fn ctl_from_file(args: &[&str], commands: impl AsRef<[u8]>) -> (i32, String, String) {
    let f = temp_dir("ctl-batch").join("commands");
    std::fs::write(&f, commands).unwrap();
    let mut c = tether_cmd(args);
    c.stdin(File::open(&f).unwrap());
    let out = c.output().expect("run tether ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_file_of_commands_gets_one_reply_per_line_and_the_first_failure() {
    let a = Agent::start(&[]);
    let sock = a.unix.to_str().unwrap();
    let long = format!("SET k {}", "x".repeat(300));
    let commands = format!(
        "# comments and blank lines are skipped\nSET room kitchen\n\nGET room\nGET missing\n\
         {long}\nSTATUS\nPING\r\nKEYS\n"
    );
    let (code, out, err) = ctl_from_file(&["ctl", "-s", sock], &commands);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err, "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert_eq!(lines[0], "OK");
    assert_eq!(lines[1], "OK kitchen");
    assert!(lines[2].starts_with("ERR not-found "), "{out}");
    assert!(lines[3].starts_with("ERR too-long "), "{out}");
    // Into a pipe, STATUS stays the raw one-line JSON.
    assert_eq!(ok_json(lines[4])["facts"]["room"], "kitchen");
    assert_eq!(lines[5], "PONG");
    assert_eq!(lines[6], "OK room");
    // All on one connection (plus the STATS below).
    assert_eq!(a.stats()["accepted"], 2);

    // The first failure decides: denied (77) before a plain ERR (1).
    let tcp = a.tcp_addr().to_string();
    let (code, out, _) = ctl_from_file(&["ctl", "-c", &tcp], "SET a b\nGET nope\nPING\n");
    assert_eq!(code, 77, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    // All good: 0; QUIT ends the batch (the agent closes after it).
    let (code, out, _) = ctl_from_file(&["ctl", "-s", sock], "PING\nQUIT\nPING\n");
    assert_eq!((code, out.as_str()), (0, "PONG\nOK\n"));
}

/// A pipe session cut short (the agent stopped answering) exits with the reason's code (75
/// here), not the code of an ERR answered before it: the lines after it were never sent
/// or never answered, which a script must not take for "every line answered, one ERR".
#[test]
fn a_pipe_session_cut_short_exits_with_its_reason_not_an_earlier_err() {
    use std::io::BufRead;
    let a = Agent::start(&[]);
    let mut ctl = std::process::Command::new(BIN)
        .args(["ctl", "-s", a.unix.to_str().unwrap(), "-t", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = ctl.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(ctl.stdout.take().unwrap());
    stdin.write_all(b"GET nope\n").unwrap();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("ERR not-found "), "{first}");
    a.signal(19); // SIGSTOP
    stdin.write_all(b"PING\nKEYS\n").unwrap();
    drop(stdin);
    let out = ctl.wait_with_output().unwrap();
    a.signal(18); // SIGCONT
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "stderr: {err}");
    assert_eq!(err, "error: timed out waiting for the reply\n");
}

/// Nagle's algorithm against the agent's delayed ACK: ctl wrote a line and its `\n` in two
/// writes, and over TCP the `\n` waited for the agent to acknowledge the line, which it
/// delays (40 ms on Linux) since nothing answers half a line: 150 commands took 6 s over
/// TCP and 12 ms over the Unix socket. Not a speed test: the threshold is far above what
/// either transport takes (even under qemu-user) and below one delayed ACK per line.
#[test]
fn a_file_of_commands_over_tcp_waits_for_no_delayed_ack() {
    let a = Agent::start(&[]);
    let tcp = a.tcp_addr().to_string();
    let n = 150;
    let t0 = Instant::now();
    let (code, out, err) = ctl_from_file(&["ctl", "-c", &tcp], "PING\n".repeat(n));
    let took = t0.elapsed();
    assert_eq!((code, out.lines().count()), (0, n), "{out}{err}");
    assert!(
        took < Duration::from_secs(3),
        "{n} commands from a file over TCP took {took:?} (one delayed ACK per line is 6 s)"
    );
}

#[test]
fn no_agent_ends_the_batch_with_69() {
    let a = Agent::start(&[]);
    let sock = a.unix.to_string_lossy().into_owned();
    let (status, _) = a.stop();
    assert!(status.success());
    let (code, out, err) = ctl_from_file(&["ctl", "-s", &sock], "PING\n");
    assert_eq!((code, out.as_str()), (69, ""), "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
}

/// A stand-in for an agent on a Unix socket in a fresh directory: answers every line of
/// every connection with `reply` and reports each line it got, without its `\n`.
fn fake_peer(reply: &str) -> (std::path::PathBuf, mpsc::Receiver<String>) {
    let sock = temp_dir("fake-peer").join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    (
        sock,
        serve_fake(move || listener.accept().map(|(c, _)| c), reply),
    )
}

/// [`fake_peer`] on a loopback TCP port.
fn fake_tcp_peer(reply: &str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    serve_fake(move || listener.accept().map(|(c, _)| c), reply);
    addr
}

/// A fake peer's thread: every connection `accept` gives is [`answer`]ed with `reply`.
fn serve_fake<S>(
    mut accept: impl FnMut() -> std::io::Result<S> + Send + 'static,
    reply: &str,
) -> mpsc::Receiver<String>
where
    S: Send,
    for<'a> &'a S: std::io::Read + std::io::Write,
{
    let (reply, (tx, rx)) = (format!("{reply}\n"), mpsc::channel());
    std::thread::spawn(move || {
        while let Ok(c) = accept() {
            answer(&c, &reply, &tx);
        }
    });
    rx
}

/// A fake peer's connection: every line answered with `reply` and reported on `tx`.
fn answer<S>(conn: &S, reply: &str, tx: &mpsc::Sender<String>)
where
    for<'a> &'a S: std::io::Read + std::io::Write,
{
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(conn);
    let mut line = Vec::new();
    while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
        line.clear();
        let mut w = conn;
        if w.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
}

/// `tether ctl -c ADDR --token-file F PING` against a [`fake_tcp_peer`] that answers the
/// AUTH challenge (and anything else) with `reply`: (exit code, stdout, stderr).
fn ping_with_token(reply: &str) -> (i32, String, String) {
    let tf = temp_dir("fake-token").join("token");
    std::fs::write(&tf, "s3cret\n").unwrap();
    let addr = fake_tcp_peer(reply).to_string();
    run(&[
        "ctl",
        "-c",
        &addr,
        "--token-file",
        tf.to_str().unwrap(),
        "PING",
    ])
}

#[test]
fn a_peer_that_does_not_speak_tethers_protocol_is_76() {
    for (reply, code) in [
        ("SSH-2.0-OpenSSH_9.2p1", 76),
        ("HTTP/1.0 400 Bad Request", 76),
        ("PONGS", 76),
        ("OKAY", 76),
        ("", 76),
        ("PONG", 0),
        ("OK", 0),
        ("OK {\"a\":1}", 0),
        ("ERR bad-command no such command", 1),
        ("ERR denied read only", 77),
    ] {
        let (sock, _) = fake_peer(reply);
        let sock = sock.to_str().unwrap();
        let (got, out, err) = run(&["ctl", "-s", sock, "PING"]);
        assert_eq!(got, code, "{reply:?}: {out}{err}");
        if code == 76 {
            // Not shown as if it were an answer: one error line, the reply quoted in it.
            assert_eq!(out, "", "{reply:?}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert_eq!(error_lines(&err).len(), 1, "{err}");
            assert!(err.contains("not tether's protocol"), "{err}");
            assert!(err.contains(&format!("{reply:?}")), "{err}");
        } else {
            assert_eq!((out, err), (format!("{reply}\n"), String::new()));
        }
    }

    // A pipe session ends at the first such reply: nothing more is sent to that peer.
    let (sock, got) = fake_peer("HTTP/1.0 400 Bad Request");
    let sock = sock.to_str().unwrap();
    let (code, out, err) = ctl_from_file(&["ctl", "-s", sock], "PING\nSET a b\n");
    assert_eq!((code, out.as_str()), (76, ""), "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    assert_eq!(got.try_iter().collect::<Vec<_>>(), ["PING"]);

    // The AUTH challenge answered by something else than tether: 76 too, a bare `OK` as
    // well (an agent answers `OK <nonce>`; going on would send the command unauthenticated).
    for reply in ["SSH-2.0-OpenSSH_9.2p1", "OK", "PONG"] {
        let (code, out, err) = ping_with_token(reply);
        assert_eq!((code, out.as_str()), (76, ""), "{reply}: {err}");
        assert_eq!(error_lines(&err).len(), 1, "{err}");
        assert!(err.starts_with("error: AUTH: expected "), "{err}");
        assert!(err.ends_with("(not tether's protocol)\n"), "{err}");
    }
}

#[test]
fn a_file_of_commands_is_sent_as_is_less_its_line_ends() {
    let (sock, got) = fake_peer("OK");
    let (code, out, err) = ctl_from_file(
        &["ctl", "-s", sock.to_str().unwrap()],
        "PING\t\n  GET a  \nPING\r\n\n \t\n# a comment\nKEYS",
    );
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "OK\nOK\nOK\nOK\n", "")
    );
    assert_eq!(
        got.try_iter().collect::<Vec<_>>(),
        ["PING\t", "  GET a  ", "PING", "KEYS"]
    );
    // Bytes that are not UTF-8 are sent as they are: 200 of Latin-1 `é` are 200 bytes, not
    // 600 of U+FFFD (which were refused here as too long).
    let mut latin1 = b"SET name ".to_vec();
    latin1.extend([0xe9; 200]);
    latin1.push(b'\n');
    let (code, out, err) = ctl_from_file(&["ctl", "-s", sock.to_str().unwrap()], &latin1);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "OK\n", ""));
    let got: Vec<String> = got.try_iter().collect();
    assert_eq!(got, [format!("SET name {}", "\u{fffd}".repeat(200))]);
}

/// A file without line ends (`tether ctl < /dev/zero`, a binary piped by mistake) was read
/// whole into memory, one line, until the board ran out of it. Only a line's start is kept
/// now: the endless line is refused as too long, and the next line is sent.
#[test]
fn an_endless_line_costs_ctl_no_memory() {
    use nix::sys::resource::{getrusage, UsageWho};
    let a = Agent::start(&[]);
    let mut c = tether_cmd(&["ctl", "-s", a.unix.to_str().unwrap()]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mb = 256;
    let feed = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..mb {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(b"\nPING\n").unwrap();
    });
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with("ERR too-long "), "{out}");
    assert!(out.ends_with("\nPONG\n"), "{out}");
    // The largest child this test process has waited for (the agents of the tests beside
    // this one use about a megabyte; under qemu-user some tens).
    let kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    assert!(kib < 128 * 1024, "ctl took {kib} KiB for a {mb} MiB line");
}

/// A standard input ctl cannot read (a directory, an I/O error) is not an empty file:
/// exit 74, one error line, nothing sent.
#[test]
fn unreadable_standard_input_is_74() {
    let (sock, got) = fake_peer("OK");
    let mut c = tether_cmd(&["ctl", "-s", sock.to_str().unwrap()]);
    c.stdin(File::open(temp_dir("ctl-stdin-dir")).unwrap());
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert_eq!(
        error_lines(&err),
        ["error: reading standard input: Is a directory (os error 21)"]
    );
    assert_eq!(got.try_iter().count(), 0);
}

/// The options `tether SUB --help` lists: each option's names (`-s`, `--socket`) and
/// whether it takes a value (its usage line shows `<...>` after it).
fn help_options(sub: &str) -> Vec<(Vec<String>, bool)> {
    let (code, help, err) = run(&[sub, "--help"]);
    assert_eq!(code, 0, "{err}");
    let usage = help.lines().next().unwrap();
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let names: Vec<String> = l
                .split("  ")
                .next()
                .unwrap()
                .split(", ")
                .filter(|n| n.starts_with('-'))
                .map(String::from)
                .collect();
            let takes_value = usage.contains(&format!("[{} <", names[0]));
            (names, takes_value)
        })
        .collect()
}

/// What board/tether.bash-completion offers for each of `lines` (the words of a command
/// line, the last one being completed): one line of candidates, space-separated, each.
fn complete(lines: &[Vec<String>]) -> Vec<String> {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/board/tether.bash-completion");
    let mut script = format!(". {file}\n");
    for words in lines {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        script += &format!(
            "COMP_WORDS=({}); COMP_CWORD={}; COMPREPLY=(); _tether; echo \"${{COMPREPLY[*]}}\"\n",
            quoted.join(" "),
            words.len() - 1
        );
    }
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .current_dir(temp_dir("completion"))
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let got: Vec<String> = text.lines().map(String::from).collect();
    assert_eq!(got.len(), lines.len(), "{text}");
    got
}

#[test]
fn bash_completion_knows_every_option_and_which_take_a_value() {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for sub in ["agent", "ctl", "scan"] {
        let opts = help_options(sub);
        let mut all: Vec<&str> = opts
            .iter()
            .flat_map(|(n, _)| n)
            .map(String::as_str)
            .collect();
        all.sort();
        let offered = &complete(&[words(&["tether", sub, "-"])])[0];
        let mut offered: Vec<&str> = offered.split(' ').collect();
        offered.sort();
        assert_eq!(offered, all, "tether {sub} -<TAB>");

        // After an option that takes a value, no option names: the value comes next
        // (file names, interfaces, or nothing to offer). And ctl's command words still
        // come after the option and its value.
        for (names, _) in opts.iter().filter(|o| o.1) {
            for name in names {
                let mut lines = vec![words(&["tether", sub, name, ""])];
                if sub == "ctl" {
                    lines.push(words(&["tether", sub, name, "x", "PI"]));
                }
                let got = complete(&lines);
                assert!(
                    got[0].split(' ').all(|c| !c.starts_with('-')),
                    "tether {sub} {name} <TAB> offers {:?}",
                    got[0]
                );
                if sub == "ctl" {
                    assert_eq!(got[1], "PING", "tether ctl {name} x PI<TAB>");
                }
            }
        }
    }
}

#[test]
fn the_example_options_file_and_the_man_page_explain_every_agent_option() {
    // board/tether.default.example says it explains every option (README, man page,
    // RASPBERRY-PI.md, PACKAGING.md point to it); the unit and the init script pass
    // --socket themselves.
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/board/tether.default.example")).unwrap();
    let man = std::fs::read_to_string(format!("{root}/board/tether.1")).unwrap();
    for (names, _) in help_options("agent") {
        let long = names.iter().find(|n| n.starts_with("--")).unwrap();
        if long == "--help" {
            continue;
        }
        if long != "--socket" {
            let explained = example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                names.iter().any(|n| l.starts_with(&format!("{n} ")))
            });
            assert!(
                explained,
                "board/tether.default.example does not explain {long}"
            );
        }
        assert!(
            man.contains(&long.replace('-', "\\-")),
            "board/tether.1 does not name {long}"
        );
    }
}

/// Peer text with C0 controls (ESC, BEL, CR), DEL and a UTF-8 encoded C1 control (CSI,
/// which some terminals obey as ESC `[`), around text that must stay as it is.
const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31mred\r\u{7f} café ✓ 温度";
/// [`HOSTILE`] as ctl shows it: every control escaped, the rest intact.
const ESCAPED: &str = "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{9b}31mred\\r\\u{7f} café ✓ 温度";

/// Has `s` no control character but the line end?
fn controls_escaped(s: &str) -> bool {
    s.chars().all(|c| c == '\n' || !c.is_control())
}

#[test]
fn control_characters_from_the_peer_are_escaped_into_a_pipe() {
    for (reply, code) in [
        (format!("OK {HOSTILE}"), 0),
        (format!("ERR not-found {HOSTILE}"), 1),
        (format!("ERR denied {HOSTILE}"), 77),
        // STATUS into a pipe is the raw JSON line: escaped too.
        (format!("OK {{\"a\":\"{HOSTILE}\"}}"), 0),
    ] {
        let (sock, _) = fake_peer(&reply);
        let (got, out, err) = run(&["ctl", "-s", sock.to_str().unwrap(), "STATUS"]);
        assert_eq!(got, code, "{reply:?}: {out}{err}");
        assert!(out.contains(ESCAPED), "{reply:?}: {out:?}");
        assert!(controls_escaped(&out), "{reply:?}: {out:?}");
        assert_eq!(out.lines().count(), 1, "{out:?}");
    }

    // A pipe session: every reply.
    let (sock, _) = fake_peer(&format!("OK {HOSTILE}"));
    let (code, out, _) = ctl_from_file(&["ctl", "-s", sock.to_str().unwrap()], "GET a\nKEYS\n");
    assert_eq!(code, 0);
    assert_eq!(out, format!("OK {ESCAPED}\nOK {ESCAPED}\n"));

    // The reply to a refused AUTH, printed before ctl exits.
    let (code, out, err) = ping_with_token(&format!("ERR denied {HOSTILE}"));
    assert_eq!(code, 77, "{out}{err}");
    assert_eq!(out, format!("ERR denied {ESCAPED}\n"));

    // Not tether's protocol: the error line quotes the reply escaped, as before.
    let (sock, _) = fake_peer(&format!("HTTP/1.0 {HOSTILE}"));
    let (code, out, err) = run(&["ctl", "-s", sock.to_str().unwrap(), "PING"]);
    assert_eq!((code, out.as_str()), (76, ""), "{err}");
    assert!(err.contains(ESCAPED), "{err:?}");
    assert!(controls_escaped(&err), "{err:?}");
}

#[test]
fn control_characters_from_the_peer_are_escaped_on_a_terminal() {
    let json = format!("OK {{\"a\":\"{HOSTILE}\"}}");
    for (reply, args) in [
        (format!("OK {HOSTILE}"), &["GET", "x"][..]),
        (format!("ERR not-found {HOSTILE}"), &["GET", "x"][..]),
        // --raw: the JSON line as it came, but escaped.
        (json.clone(), &["--raw", "STATUS"][..]),
        // STATUS whose JSON does not parse is shown as it came, escaped.
        (format!("OK {{{HOSTILE}"), &["STATUS"][..]),
    ] {
        let (sock, _) = fake_peer(&reply);
        let mut argv = vec!["ctl", "-s", sock.to_str().unwrap()];
        argv.extend_from_slice(args);
        let mut t = Tty::spawn(&argv);
        t.expect_after(0, ESCAPED);
        t.exit_code();
        assert!(controls_escaped(&t.seen), "{reply:?}: {:?}", t.seen);
    }

    // The prompt.
    let (sock, _) = fake_peer(&format!("OK {HOSTILE}"));
    let mut t = Tty::spawn(&["ctl", "-s", sock.to_str().unwrap()]);
    let at = t.expect_after(0, "tether> ");
    t.type_line("GET x");
    t.expect_after(at, &format!("OK {ESCAPED}\ntether> "));
    t.type_line("quit");
    assert_eq!(t.exit_code(), 0, "{}", t.seen);
    assert!(controls_escaped(&t.seen), "{:?}", t.seen);
}

/// A peer on a Unix socket that answers the first line of its first connection with
/// `OK ` and then `x` for ever, until ctl hangs up.
fn endless_peer() -> std::path::PathBuf {
    let sock = temp_dir("endless-peer").join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut line = [0u8; 256];
        let _ = conn.read(&mut line);
        let chunk = [b'x'; 65536];
        let _ = conn.write_all(b"OK ");
        while conn.write_all(&chunk).is_ok() {}
    });
    sock
}

/// `tether ctl -s SOCK -t 20 GET k` against a peer answering `reply`: (exit code, stdout
/// length, stderr, time taken).
fn get_from(reply: &str) -> (i32, usize, String, Duration) {
    let (sock, _) = fake_peer(reply);
    let t0 = Instant::now();
    let (code, out, err) = run(&["ctl", "-s", sock.to_str().unwrap(), "-t", "20", "GET", "k"]);
    (code, out.len(), err, t0.elapsed())
}

/// ctl's one error line for a reply that is not tether's protocol: short, whatever came.
fn assert_short_protocol_error(what: &str, err: &str) {
    assert_eq!(err.lines().count(), 1, "{what}: {err:.200}");
    assert_eq!(error_lines(err).len(), 1, "{what}: {err:.200}");
    assert!(err.contains("not tether's protocol"), "{what}: {err:.200}");
    assert!(
        err.len() < 200,
        "{what}: an error line of {} bytes",
        err.len()
    );
}

#[test]
fn a_reply_line_longer_than_an_agent_can_send_is_not_tethers_protocol() {
    // No agent sends more in one line than its output buffer holds, `\n` included: a line
    // that long is taken whole, a longer one is refused (76) as soon as it is seen to be.
    let most = tether::limits::OUT_BUF;
    let (code, out, err, _) = get_from(&format!("OK {}", "x".repeat(most - 4)));
    assert_eq!((code, out, err.as_str()), (0, most, ""));
    for n in [most - 3, 2_000_000] {
        let reply = format!("OK {}", "x".repeat(n));
        let (code, out, err, took) = get_from(&reply);
        let what = format!("a line of {} bytes", reply.len() + 1);
        assert_eq!((code, out), (76, 0), "{what}: {err:.200}");
        assert_short_protocol_error(&what, &err);
        assert!(err.contains("\"OK xxxxxxxx"), "{err}");
        assert!(took < slack(Duration::from_secs(2)), "{what}: {took:?}");
    }
}

#[test]
fn a_long_reply_that_is_not_the_protocol_is_quoted_short() {
    let (code, out, err, _) = get_from(&format!("HTTP/1.0 200 OK {}", "y".repeat(5000)));
    assert_eq!((code, out), (76, 0), "{err:.200}");
    assert_short_protocol_error("5 kB of HTTP", &err);
    assert!(err.contains("\"HTTP/1.0 200 OK yyyy"), "{err}");
}

#[test]
fn a_reply_line_that_never_ends_is_refused_before_the_timeout() {
    let sock = endless_peer();
    let t0 = Instant::now();
    let (code, out, err) = run(&["ctl", "-s", sock.to_str().unwrap(), "-t", "10", "GET", "k"]);
    let took = t0.elapsed();
    assert_eq!((code, out.len()), (76, 0), "{err:.200}");
    assert_short_protocol_error("an endless line", &err);
    assert!(took < slack(Duration::from_secs(2)), "{took:?}");
}

/// A file-valued option completes through directories: bash is told its candidates are
/// file names (`compopt -o filenames`), so a directory gets its '/'. Without it
/// `tether ctl -s /run/teth<TAB>` gave `/run/tether ` and completion stopped there.
#[test]
fn bash_completion_completes_file_values_through_directories() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/board/tether.bash-completion");
    let dir = temp_dir("completion-dirs");
    std::fs::create_dir(dir.join("sockdir")).unwrap();
    for (sub, opt) in [
        ("ctl", "-s"),
        ("ctl", "--token-file"),
        ("agent", "--socket"),
        ("agent", "--fleet-key"),
        ("agent", "--thermal"),
        ("agent", "--led"),
        ("scan", "--prometheus-sd"),
        ("ctl", "--publish"),
    ] {
        // compopt works only inside a real completion; here it says what it was asked.
        let script = format!(
            ". {file}; compopt() {{ echo \"compopt $*\"; }}\n\
             COMP_WORDS=(tether {sub} {opt} sockd); COMP_CWORD=3; _tether; \
             echo \"${{COMPREPLY[*]}}\""
        );
        let out = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &script])
            .current_dir(&dir)
            .output()
            .expect("run bash");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text, "compopt -o filenames\nsockdir\n",
            "tether {sub} {opt} sockd<TAB>"
        );
    }
}
