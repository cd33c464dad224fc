//! Shared test harness: start the real `tether` binary (through the cross runner when the
//! tests run under qemu-user), parse its ready line, and talk to it over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tether");

/// The runner cargo uses for this target (`CARGO_TARGET_<TRIPLE>_RUNNER`, else the
/// `runner` of `.cargo/config.toml`), or nothing for a native build.
pub fn runner() -> Vec<String> {
    let target = env!("TETHER_BUILD_TARGET");
    let host = env!("TETHER_BUILD_HOST");
    let var = format!(
        "CARGO_TARGET_{}_RUNNER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    if let Ok(r) = std::env::var(&var) {
        return r.split_whitespace().map(String::from).collect();
    }
    if target == host {
        return Vec::new();
    }
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cargo/config.toml");
    let text = std::fs::read_to_string(cfg).unwrap_or_default();
    let mut in_section = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_section = l == format!("[target.{target}]");
        } else if in_section && l.starts_with("runner") {
            let v = l.split_once('=').map(|x| x.1).unwrap_or("").trim();
            return v
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|w| w.trim().trim_matches('"').to_string())
                .filter(|w| !w.is_empty())
                .flat_map(|w| w.split_whitespace().map(String::from).collect::<Vec<_>>())
                .collect();
        }
    }
    Vec::new()
}

/// True when the binary runs under an emulator: timeouts get more slack.
pub fn emulated() -> bool {
    !runner().is_empty()
}

/// False (after saying why) under qemu-user, whose own descriptors count against the
/// agent's RLIMIT_NOFILE: no fixed limit means the same there.
pub fn fd_limits_are_the_agents() -> bool {
    if emulated() {
        eprintln!("not run under qemu-user: its own descriptors count against RLIMIT_NOFILE; the native suite runs this test");
    }
    !emulated()
}

/// A generous multiple of `d` under emulation.
pub fn slack(d: Duration) -> Duration {
    if emulated() {
        d * 5
    } else {
        d
    }
}

/// `tether ARGS...` as a Command, through the runner.
pub fn tether_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    tether_cmd_in(None, args)
}

/// `tether ARGS...` inside network namespace `netns` (`ip netns exec`), through the runner.
pub fn tether_cmd_in<S: AsRef<std::ffi::OsStr>>(netns: Option<&str>, args: &[S]) -> Command {
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip".into(), "netns".into(), "exec".into(), ns.into()]);
    }
    argv.extend(runner());
    argv.push(BIN.into());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c.args(args);
    c
}

/// `agent --listen 127.0.0.1:0 --socket SOCK EXTRA...` as spawn arguments (add
/// `--no-beacon` to `extra` unless the test runs inside its own network namespace).
pub fn loopback_agent_args(sock: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["agent", "--listen", "127.0.0.1:0", "--socket"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(sock.to_string_lossy().into_owned());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A fresh private directory for one test, `$TMPDIR/tether-test-PID-TAG-N`. A test binary
/// has no hook at its end, so each one removes, when it makes its first, those left by test
/// processes that are gone (every run left hundreds in /tmp).
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dirs_of_gone_runs);
    let d = std::env::temp_dir().join(format!(
        "tether-test-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A loopback TCP port where nothing listens, for as long as the returned socket lives:
/// bound and never listening, so a connect is refused and no other test's listener can
/// take the port meanwhile (a port freed for the purpose could be handed out again).
pub fn refusing_port() -> (std::os::fd::OwnedFd, SocketAddr) {
    use nix::sys::socket::SockaddrIn;
    use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd()).unwrap().port();
    (fd, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Removes `tether-test-PID-...` directories whose process is gone.
fn remove_dirs_of_gone_runs() {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let pid = name.to_str().and_then(|n| {
            let rest = n.strip_prefix("tether-test-")?;
            rest.split('-').next()?.parse::<u32>().ok()
        });
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub struct Agent {
    pub child: Child,
    pub ready: String,
    pub tcp: Vec<SocketAddr>,
    pub unix: PathBuf,
    pub dir: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// What a started agent printed before its ready line, or why it did not start.
pub struct Failed {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Agent {
    /// Starts `tether agent` on loopback with a private socket and no beacon, plus `extra`.
    pub fn start(extra: &[&str]) -> Agent {
        Self::try_start(extra).unwrap_or_else(|f| {
            panic!(
                "agent did not start: {:?}\nstdout: {}\nstderr: {}",
                f.status, f.stdout, f.stderr
            )
        })
    }

    /// Like [`Agent::start`], but a start-up failure is returned, not a panic.
    pub fn try_start(extra: &[&str]) -> Result<Agent, Failed> {
        let dir = temp_dir("agent");
        let sock = dir.join("tether.sock");
        let mut args: Vec<String> = vec!["agent".into()];
        if !extra.contains(&"--listen") {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        if !extra.contains(&"--socket") {
            args.extend(["--socket".into(), sock.to_string_lossy().into_owned()]);
        }
        if !extra.iter().any(|a| *a == "--iface" || *a == "--no-beacon") {
            args.push("--no-beacon".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args, dir, &[])
    }

    /// Spawns with exactly `args` (after `tether`) and waits for the ready line.
    pub fn spawn(args: &[String], dir: PathBuf, env: &[(&str, &str)]) -> Result<Agent, Failed> {
        Self::spawn_in(None, args, dir, env)
    }

    /// Like [`Agent::spawn`], inside network namespace `netns` when given.
    pub fn spawn_in(
        netns: Option<&str>,
        args: &[String],
        dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Agent, Failed> {
        // Beacons may leave only an interface of a namespace the test made.
        let quiet = args.iter().any(|a| a == "--no-beacon" || a == "--iface");
        assert!(
            netns.is_some() || quiet || args.first().is_some_and(|a| a != "agent"),
            "an agent outside the test's own network namespace must not beacon out of this \
             machine's interfaces: add --no-beacon to {args:?}"
        );
        Self::spawn_command(tether_cmd_in(netns, args), dir, env)
    }

    /// Spawns a prepared `tether agent` command (e.g. wrapped in `unshare`) and waits for
    /// the ready line.
    pub fn spawn_command(
        mut cmd: Command,
        dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Agent, Failed> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tether");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the agent never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = rx
            .recv_timeout(slack(Duration::from_secs(10)))
            .unwrap_or_default();
        if !line.starts_with("ready ") {
            let _ = child.kill();
            let status = child.wait().unwrap();
            return Err(Failed {
                status,
                stdout: line,
                stderr: err_thread.join().unwrap_or_default(),
            });
        }
        let ready = line.trim().to_string();
        let mut tcp = Vec::new();
        let mut unix = PathBuf::new();
        for w in ready.split_whitespace() {
            if let Some(v) = w.strip_prefix("tcp=") {
                tcp = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
            } else if let Some(v) = w.strip_prefix("unix=") {
                unix = PathBuf::from(v);
            }
        }
        Ok(Agent {
            child,
            ready,
            tcp,
            unix,
            dir,
            stderr: Some(err_thread),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp[0]
    }

    pub fn tcp(&self) -> Client {
        Client::tcp(self.tcp_addr())
    }

    pub fn unix(&self) -> Client {
        Client::unix(&self.unix)
    }

    /// Runs `tether ctl -s SOCK WORDS...`: (exit code, stdout, stderr).
    pub fn ctl(&self, words: &[&str]) -> (i32, String, String) {
        let mut args: Vec<String> = vec![
            "ctl".into(),
            "-s".into(),
            self.unix.to_string_lossy().into(),
        ];
        args.extend(words.iter().map(|s| s.to_string()));
        run(&args)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc_kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then wait (bounded): the exit status and everything on stderr.
    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with(15)
    }

    /// Sends `sig`, then waits (bounded): the exit status and everything on stderr.
    pub fn stop_with(mut self, sig: i32) -> (ExitStatus, String) {
        self.signal(sig);
        let status = wait_timeout(&mut self.child, slack(Duration::from_secs(10)));
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status, err)
    }

    /// Runs `tether ctl -c TCP_ADDR WORDS...`: (exit code, stdout, stderr).
    pub fn ctl_tcp(&self, words: &[&str]) -> (i32, String, String) {
        let mut args: Vec<String> = vec!["ctl".into(), "-c".into(), self.tcp_addr().to_string()];
        args.extend(words.iter().map(|s| s.to_string()));
        run(&args)
    }

    /// STATS as JSON (over a fresh Unix connection).
    pub fn stats(&self) -> serde_json::Value {
        ok_json(&self.unix().req("STATS"))
    }

    /// The value of the ready line's `key=` field, if it has one.
    pub fn ready_field(&self, key: &str) -> Option<&str> {
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// The publish socket from the ready line's `publish=` (None with `--no-publish`).
    pub fn publish_path(&self) -> Option<PathBuf> {
        self.ready_field("publish").map(PathBuf::from)
    }

    /// Sends one datagram to the agent's publish socket.
    pub fn publish(&self, datagram: &[u8]) {
        let p = self.publish_path().expect("publish= in the ready line");
        let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
        s.send_to(datagram, &p)
            .unwrap_or_else(|e| panic!("send to {}: {e}", p.display()));
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// allocs_since_ready from STATS.
    pub fn allocations(&self) -> u64 {
        let s = self.unix().req("STATS");
        json_u64(&s, "allocs_since_ready").expect("allocs_since_ready in STATS")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn wait_timeout(child: &mut Child, d: Duration) -> ExitStatus {
    let end = Instant::now() + d;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("process did not exit within {d:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Command::output` with a bound: a child still running after `limit` is killed and the
/// test fails, naming it, instead of hanging the whole suite. Stdin is /dev/null, as with
/// `output`.
pub trait OutputBounded {
    fn output_within(&mut self, limit: Duration) -> std::process::Output {
        self.output_within_while(limit, |_| {})
    }

    /// [`OutputBounded::output_within`], doing `meanwhile` with the child (its pid) once it
    /// runs.
    fn output_within_while(
        &mut self,
        limit: Duration,
        meanwhile: impl FnOnce(u32),
    ) -> std::process::Output;

    /// [`OutputBounded::output_within`] a minute (five under emulation).
    fn output_bounded(&mut self) -> std::process::Output {
        self.output_within(slack(Duration::from_secs(60)))
    }
}

/// Reads `r` to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

impl OutputBounded for Command {
    fn output_within_while(
        &mut self,
        limit: Duration,
        meanwhile: impl FnOnce(u32),
    ) -> std::process::Output {
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.get_program()));
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        meanwhile(child.id());
        let status = wait_timeout(&mut child, limit);
        std::process::Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }
}

/// Runs `tether ARGS...` to completion (bounded): (exit code, stdout, stderr).
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = tether_cmd(args).output_within(slack(Duration::from_secs(30)));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Finds `"key":NUMBER` in a one-line JSON reply.
pub fn json_u64(s: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let i = s.find(&pat)? + pat.len();
    let digits: String = s[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// `op` again while it fails with EINTR, as a client should: a socket wait with a timeout
/// (SO_RCVTIMEO, SO_SNDTIMEO) is not restarted by the kernel, and returns EINTR when the
/// process is stopped and continued or frozen, even with no signal handler. Taken for an
/// error, it failed CI runs twice: a flood test in tests/publish.rs, and ctl's timeout test
/// in tests/cli.rs (whose holder thread then closed the connection it was to hold).
pub fn retrying<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// `op` on a socket whose wait ends at `end`: `set` gives the socket what is left as its
/// timeout before each try, so a wait a signal interrupted resumes where [`retrying`]
/// would start it over (and never end, were it interrupted more often than its timeout).
pub fn before<T>(
    end: Instant,
    mut set: impl FnMut(Duration) -> std::io::Result<()>,
    mut op: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    retrying(|| {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        set(left)?;
        op()
    })
}

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    /// Retries a read that a signal interrupted ([`retrying`]).
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        retrying(|| match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        })
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A line-oriented test client with a read timeout.
pub struct Client {
    pub s: Stream,
    buf: Vec<u8>,
}

impl Client {
    pub fn tcp(addr: SocketAddr) -> Client {
        let s =
            TcpStream::connect_timeout(&addr, slack(Duration::from_secs(5))).expect("connect tcp");
        s.set_read_timeout(Some(slack(Duration::from_secs(5))))
            .unwrap();
        Client {
            s: Stream::Tcp(s),
            buf: Vec::new(),
        }
    }

    pub fn unix(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect unix");
        s.set_read_timeout(Some(slack(Duration::from_secs(5))))
            .unwrap();
        Client {
            s: Stream::Unix(s),
            buf: Vec::new(),
        }
    }

    pub fn set_timeout(&self, d: Duration) {
        match &self.s {
            Stream::Tcp(s) => s.set_read_timeout(Some(d)).unwrap(),
            Stream::Unix(s) => s.set_read_timeout(Some(d)).unwrap(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.s.write_all(raw)
    }

    /// The next reply line without its `\n`; Err on EOF, reset or timeout.
    pub fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&l[..l.len() - 1]).into_owned());
            }
            let mut b = [0u8; 4096];
            let n = self.s.read(&mut b)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "EOF",
                ));
            }
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    /// Sends one line and returns the reply line.
    pub fn req(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes()).expect("send");
        self.line()
            .unwrap_or_else(|e| panic!("no reply to {line:?}: {e}"))
    }

    /// The AUTH challenge as a client does it: `AUTH`, then the HMAC of the nonce.
    /// Returns the agent's answer to the second line (`OK` on success).
    pub fn auth(&mut self, token: &str) -> String {
        let r = self.req("AUTH");
        let nonce = r
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("AUTH gave no nonce: {r:?}"));
        assert_eq!(nonce.len(), 32, "{r}");
        self.req(&auth_answer(token.as_bytes(), nonce))
    }

    /// Asserts that the agent closes the connection (an idle timeout) no sooner than
    /// `earliest` and sooner than `latest` after `since`.
    pub fn assert_closed_between(&mut self, since: Instant, earliest: Duration, latest: Duration) {
        assert!(self.closed(), "idle client not closed");
        let took = since.elapsed();
        assert!(took >= earliest, "closed after {took:?}");
        assert!(took < latest, "closed after {took:?}");
    }

    /// True when the agent has closed the connection (EOF or reset) within the timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// An agent started with `--token-file` holding `token_text` (written as is), plus `extra`;
/// also returns the token file's path.
pub fn token_agent(token_text: &str, extra: &[&str]) -> (Agent, PathBuf) {
    let tf = temp_dir("token").join("token");
    std::fs::write(&tf, token_text).unwrap();
    let mut args = vec!["--token-file", tf.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Agent::start(&args), tf)
}

/// `AUTH <hex>` answering challenge `nonce` with `token`: HMAC-SHA256(key = token,
/// message = "tether-auth-v1:" + nonce), computed here with RustCrypto's crates directly.
pub fn auth_answer(token: &[u8], nonce: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(token).unwrap();
    m.update(b"tether-auth-v1:");
    m.update(nonce.as_bytes());
    let tag = m.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("AUTH {hex}")
}

/// Polls `f` every 20 ms until it is true or `d` (already slack-adjusted by the caller
/// or not) has passed; returns the last result.
pub fn wait_for(d: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses an `OK {json}` reply; panics with the reply when it is not one.
pub fn ok_json(reply: &str) -> serde_json::Value {
    let body = reply
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("not an OK reply: {reply:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("bad JSON ({e}): {reply:?}"))
}

/// True when this machine can bind a TCP socket on [::1].
pub fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// The `error: ...` lines of a process's stderr.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

// ---- network namespaces (root) ----

extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
    fn geteuid() -> u32;
}
const CLONE_NEWNET: i32 = 0x4000_0000;

pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True when this process can make network namespaces; otherwise says why and skips,
/// except under CI (`CI=true`), where a missing capability fails the test.
pub fn can_netns() -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { geteuid() } != 0 {
        "network namespace tests need root"
    } else if !Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "`ip netns` unavailable (install iproute2)"
    } else {
        return true;
    };
    skip(why);
    false
}

/// Whether `program --version` runs and succeeds here (quietly); otherwise [`skip`] with
/// `why`, which fails the test under CI.
pub fn have(program: &str, why: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(why);
    }
    ok
}

/// A capability a test needs is missing: under CI (`CI=true`) the test fails, saying
/// which; elsewhere this says SKIP and why, and the caller returns.
pub fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI: {why}"
    );
    eprintln!("SKIP: {why}");
}

/// True when the agent can be run as nobody here (as root); else says why it skips.
pub fn can_run_as_nobody() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip("needs root to run the agent as nobody");
    false
}

/// `tether ARGS` as user nobody, group nogroup, no supplementary groups.
pub fn as_nobody(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    cmd.arg(tether_cmd(args).get_program());
    cmd.args(tether_cmd(args).get_args());
    cmd
}

/// A network namespace a test made, with loopback up; deleted (with its veths and
/// bridges) when dropped, also when the test fails half-way. A stale one of the same name,
/// left by a killed run, is deleted first. Derefs to its name.
pub struct Netns(String);

impl Netns {
    pub fn new(name: impl Into<String>) -> Netns {
        let name = name.into();
        if Path::new(&format!("/run/netns/{name}")).exists() {
            let _ = sh(&["ip", "netns", "del", &name]);
        }
        assert!(sh(&["ip", "netns", "add", &name]), "ip netns add {name}");
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS...`; the test fails if it does.
    pub fn ip(&self, args: &[&str]) {
        let mut argv = vec!["ip", "-n", &self.0];
        argv.extend_from_slice(args);
        assert!(sh(&argv), "{}", argv.join(" "));
    }

    /// Gives `dev` the address `cidr` (broadcast derived) and brings it up.
    pub fn addr_up(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "brd", "+", "dev", dev]);
        self.ip(&["link", "set", dev, "up"]);
    }
}

impl std::ops::Deref for Netns {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

/// A veth pair: `a_dev` in `a`, `b_dev` in `b` (both down, no address).
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    assert!(
        sh(&[
            "ip", "link", "add", a_dev, "netns", a, "type", "veth", "peer", "name", b_dev, "netns",
            b
        ]),
        "veth {a_dev}@{a} -- {b_dev}@{b}"
    );
}

/// One LAN: bridge `br` in `hub` with address `hub_cidr`, and for each member
/// `(namespace, its device, the hub-side device, its cidr)` a veth to the bridge, up.
pub fn bridge_lan(
    hub: &Netns,
    br: &str,
    hub_cidr: &str,
    members: &[(&Netns, String, String, String)],
) {
    hub.ip(&["link", "add", br, "type", "bridge"]);
    hub.addr_up(br, hub_cidr);
    for (ns, dev, outer, cidr) in members {
        veth(ns, dev, hub, outer);
        hub.ip(&["link", "set", outer, "master", br]);
        hub.ip(&["link", "set", outer, "up"]);
        ns.addr_up(dev, cidr);
    }
    for (ns, dev, _, _) in members {
        wait_carrier(ns, dev);
    }
}

/// Waits (at most 5 s) until `dev` in `ns` has a carrier (`LOWER_UP`): a veth gets it a
/// moment after both ends are up, and the agent sends nothing out of a link without one.
pub fn wait_carrier(ns: &str, dev: &str) {
    let carrier = || {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "link", "show", "dev", dev])
            .output_bounded();
        String::from_utf8_lossy(&out.stdout).contains("LOWER_UP")
    };
    assert!(
        wait_for(Duration::from_secs(5), carrier),
        "{dev} in {ns}: no carrier"
    );
}

/// Runs `f` on a thread that has joined network namespace `ns`; sockets it makes live there.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; it only affects this thread.
        let r = unsafe { setns(std::os::fd::AsRawFd::as_raw_fd(&file), CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
}

/// `GET path` over HTTP/1.1 (`Connection: close`) to `addr`, from inside network namespace
/// `ns`: the response's head and body, or None when nothing answers there (yet).
pub fn http_get_in(ns: &str, addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).ok()?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.to_string(), body.to_string()))
    })
    .join()
    .ok()
    .flatten()
}

/// Collects every datagram arriving at `bind` (`0.0.0.0:4546` or `[::]:4546`) in network
/// namespace `ns` for `secs`; returns once the socket is bound. The IPv6 one is IPv6-only,
/// so both can listen on one port at once.
pub fn listen_udp(
    ns: &str,
    bind: &str,
    secs: f64,
) -> std::thread::JoinHandle<Vec<(Vec<u8>, SocketAddr)>> {
    use std::net::UdpSocket;
    let (tx, rx) = mpsc::channel();
    let bind = bind.to_string();
    let h = in_ns(ns, move || {
        let s = match bind.strip_prefix("[::]:") {
            Some(port) => {
                let port = port.parse().expect("a port");
                let fd = tether::sys::udp::open6_any(None, port).expect("bind [::]");
                let s = UdpSocket::from(fd);
                s.set_nonblocking(false).unwrap();
                s
            }
            None => UdpSocket::bind(&bind).expect("bind"),
        };
        tx.send(()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                got.push((buf[..n].to_vec(), from));
            }
        }
        got
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("listener ready");
    h
}

/// The board id in an agent's log (its ready line's `id=`).
pub fn logged_id(log: &str) -> String {
    log.split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id= in the log: {log}"))
        .to_string()
}

/// Starts the agent `cmd(n)` runs with RLIMIT_NOFILE `n` = 4, 5, ... until one starts,
/// each open of the start-up failing in turn. Every start before must fail with one
/// `error:` line that says EMFILE and names what was being opened (one of `names`), exit
/// 69 or 71 (not 78: nothing is wrong with the configuration, and systemd restarts those
/// two), and leave nothing in `dir`. The first that starts: its `n`, and the agent.
pub fn first_start_short_of_fds(
    cmd: impl Fn(u64) -> Command,
    dir: &Path,
    names: &[&str],
) -> (u64, Agent) {
    for n in 4..20 {
        let f = match Agent::spawn_command(cmd(n), dir.to_path_buf(), &[]) {
            Ok(a) => return (n, a),
            Err(f) => f,
        };
        let err = f.stderr.trim_end();
        let code = f.status.code();
        assert!(
            matches!(code, Some(69 | 71)),
            "RLIMIT_NOFILE {n}: exit {code:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "RLIMIT_NOFILE {n}: {err}");
        assert!(err.starts_with("error: "), "RLIMIT_NOFILE {n}: {err}");
        assert!(err.contains("EMFILE"), "RLIMIT_NOFILE {n}: {err}");
        assert!(
            names.iter().any(|what| err.contains(what)),
            "RLIMIT_NOFILE {n}: names none of {names:?}: {err}"
        );
        assert!(
            std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()),
            "RLIMIT_NOFILE {n}: a failed start left files behind"
        );
    }
    panic!("no start-up with up to 19 fds");
}
