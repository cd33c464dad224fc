//! `tether ctl`: talk to an agent the way chronyc, wpa_cli or redis-cli do.
//! - With command words: send that one command, print the reply, exit.
//! - With none, stdin a terminal: a `tether> ` prompt on one connection (authenticated
//!   once with `--token-file`) until `quit`, `exit` or EOF.
//! - With none, stdin not a terminal: one command per input line, one reply per line;
//!   the exit status is the first failure's, or, when the session is cut short (no
//!   reply, no agent), its reason's.
//!
//! Exit codes ([`crate::exit`]): 0 ok, 1 the agent answered ERR, 64 usage, 69
//! unreachable, 75 timeout, 76 not tether's protocol, 77 denied, 78 unreadable token file.
//! STATUS, STATS and SOCKETS print as indented text when stdout is a terminal (see
//! [`pretty`]), as the agent's one-line `OK {json}` with `--raw` or into a pipe.
//! Whatever ctl prints of the peer's text, on a terminal or not, has its control characters
//! [`escaped`]: an agent sends only printable text, and a stranger's control sequences
//! must not reach a terminal, whether ctl's own or one that shows a log of its output.
//! A client process, so it may allocate and block (with a deadline).

pub mod pretty;

use crate::agent::AUTH_CHALLENGE_PREFIX;
use crate::cli::CtlArgs;
use crate::exit::{
    escaped, stdout_written, to_stdout, Fatal, EX_ERR, EX_IOERR, EX_NOPERM, EX_PROTOCOL,
    EX_TEMPFAIL, EX_UNAVAILABLE,
};
use crate::limits::{
    secret_buf_len, AUTH_NONCE_BYTES, CTL_QUOTE_MAX, CTL_REPLY_LINE_MAX, LINE_MAX, TOKEN_MAX,
};
use crate::proto::reply::{ErrCode, TOO_LONG_TEXT};
use nix::errno::Errno;
use std::io::{BufRead, ErrorKind, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

trait Stream: Read + Write + AsFd {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()>;
}
impl Stream for UnixStream {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}
impl Stream for TcpStream {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

fn io_fatal(what: &str, e: std::io::Error) -> Fatal {
    let code = match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => EX_TEMPFAIL,
        ErrorKind::PermissionDenied => EX_NOPERM,
        _ => EX_UNAVAILABLE,
    };
    Fatal::new(code, format!("{what}: {e}"))
}

/// [`io_fatal`] for the Unix socket at `path`: a "Permission denied" also names what keeps
/// this user out and its group ([`crate::sys::unix::closed_to_me`]).
fn unix_fatal(what: &str, path: &Path, e: std::io::Error) -> Fatal {
    let denied = e.kind() == ErrorKind::PermissionDenied;
    let mut f = io_fatal(what, e);
    if let Some((p, mode, gid)) = denied
        .then(|| crate::sys::unix::closed_to_me(path))
        .flatten()
    {
        let group = crate::sys::unix::group_name(gid);
        f.msg += &format!(
            "; {} (mode {mode:o}, group {group}) is closed to this user",
            p.display()
        );
    }
    f
}

/// Is `reply` one of the protocol's: `PONG`, `OK`, `OK <payload>` or `ERR <code> <text>`?
fn is_reply(reply: &str) -> bool {
    matches!(reply, "PONG" | "OK") || reply.starts_with("OK ") || reply.starts_with("ERR ")
}

/// `reply` for an error line: its first [`CTL_QUOTE_MAX`] characters, [`escaped`], in
/// quotes, and `...` after them when there was more.
fn quoted(reply: &str) -> String {
    let cut = reply
        .char_indices()
        .nth(CTL_QUOTE_MAX)
        .map_or(reply.len(), |(i, _)| i);
    let more = if cut < reply.len() { "..." } else { "" };
    format!("\"{}\"{more}", escaped(&reply[..cut]))
}

/// The peer answered `line` with `got` (a reply [`quoted`], or what was wrong with it),
/// which is not what a tether agent answers (76).
fn not_protocol(line: &str, expected: &str, got: &str) -> Fatal {
    let command = line.split_ascii_whitespace().next().unwrap_or_default();
    Fatal::new(
        EX_PROTOCOL,
        format!("{command}: expected {expected}, got {got} (not tether's protocol)"),
    )
}

/// Sends `line` and reads one reply line before `deadline`. A line that is not one of
/// the protocol's replies ([`is_reply`]), or is longer than any an agent sends
/// ([`CTL_REPLY_LINE_MAX`]), is an error (76): the peer is not a tether agent.
fn exchange(s: &mut dyn Stream, line: &[u8], deadline: Instant) -> Result<String, Fatal> {
    const EXPECTED: &str = "PONG, OK or ERR";
    let shown = || String::from_utf8_lossy(line);
    // One write: the line end sent on its own waited, over TCP, for the agent's delayed
    // ACK of the line (Nagle's algorithm): 40 ms a command from a pipe (1,000 lines: 44 s).
    let mut msg = Vec::with_capacity(line.len() + 1);
    msg.extend_from_slice(line);
    msg.push(b'\n');
    s.write_all(&msg).map_err(|e| io_fatal("send", e))?;
    let mut buf = [0u8; CTL_REPLY_LINE_MAX];
    let mut len = 0;
    let end = loop {
        if len == buf.len() {
            let start = String::from_utf8_lossy(&buf);
            let got = format!(
                "no line end in {CTL_REPLY_LINE_MAX} bytes, {}",
                quoted(&start)
            );
            return Err(not_protocol(&shown(), EXPECTED, &got));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fatal {
                code: EX_TEMPFAIL,
                msg: "timed out waiting for the reply".into(),
            });
        }
        s.set_timeout(left).map_err(|e| io_fatal("socket", e))?;
        match s.read(&mut buf[len..]) {
            Ok(0) => {
                return Err(Fatal {
                    code: EX_UNAVAILABLE,
                    msg: "the agent closed the connection without a reply".into(),
                })
            }
            Ok(n) => {
                // Only the bytes just read: those before them held no line end.
                if let Some(nl) = buf[len..len + n].iter().position(|&b| b == b'\n') {
                    break len + nl;
                }
                len += n;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Fatal {
                    code: EX_TEMPFAIL,
                    msg: "timed out waiting for the reply".into(),
                })
            }
            Err(e) => return Err(io_fatal("receive", e)),
        }
    };
    let reply = &buf[..end];
    let reply = reply.strip_suffix(b"\r").unwrap_or(reply);
    let reply = String::from_utf8_lossy(reply).into_owned();
    if !is_reply(&reply) {
        return Err(not_protocol(&shown(), EXPECTED, &quoted(&reply)));
    }
    Ok(reply)
}

/// The AUTH challenge: asks for a nonce, answers HMAC-SHA256(token, "tether-auth-v1:" nonce).
/// The token itself never leaves this process. Returns the agent's last reply line.
fn authenticate(s: &mut dyn Stream, token: &[u8], deadline: Instant) -> Result<String, Fatal> {
    let reply = exchange(s, b"AUTH", deadline)?;
    if reply.starts_with("ERR ") {
        return Ok(reply);
    }
    // Anything but `OK <nonce>` (a bare `OK` too) is not an agent's answer: going on would
    // send the commands unauthenticated to whatever this is (76).
    let mut raw = [0u8; AUTH_NONCE_BYTES];
    let nonce = reply.strip_prefix("OK ").unwrap_or_default();
    if !crate::proto::hex::decode(nonce.as_bytes(), &mut raw) {
        let expected = format!("OK and a {}-digit nonce, or ERR", 2 * AUTH_NONCE_BYTES);
        return Err(not_protocol("AUTH", &expected, &quoted(&reply)));
    }
    let tag = crate::crypto::hmac_sha256(token, &[AUTH_CHALLENGE_PREFIX, nonce.as_bytes()]);
    let mut answer = [0u8; 64];
    crate::proto::hex::encode(&tag, &mut answer);
    let line = [b"AUTH ".as_slice(), &answer].concat();
    exchange(s, &line, deadline)
}

/// The exit code for a reply [`exchange`] returned: 0 for `PONG` and `OK`, 77 for
/// `ERR denied`, 75 for `ERR busy` (a full table, the AUTH throttle: try again later), 1
/// for any other `ERR`.
fn exit_for(reply: &str) -> u8 {
    let Some(e) = reply.strip_prefix("ERR ") else {
        return 0;
    };
    match e.split(' ').next() {
        Some(c) if c == ErrCode::Denied.as_str() => EX_NOPERM,
        Some(c) if c == ErrCode::Busy.as_str() => EX_TEMPFAIL,
        _ => EX_ERR,
    }
}

/// `tether ctl --dgram SET key value [ttl=SECS]` / `DEL key`: one datagram to the agent's
/// publish socket (`publish.sock` beside the `-s` socket or the default one), no answer
/// awaited. [`CtlArgs::validate`] has checked the line with the agent's own parser, since
/// nothing comes back. Exit 0 once the datagram is queued; 69 no socket or no agent
/// there; 77 permission denied; 75 the agent's queue is full (the datagram was not sent).
pub fn dgram(args: &CtlArgs) -> Result<u8, Fatal> {
    let line = args.words.join(" ");
    let path = match &args.publish {
        Some(p) => p.clone(),
        None => unix_path(args)?.with_file_name("publish.sock"),
    };
    let send = || {
        let s = std::os::unix::net::UnixDatagram::unbound()?;
        s.set_nonblocking(true)?;
        s.send_to(format!("{line}\n").as_bytes(), &path)
    };
    match send() {
        Ok(_) => Ok(0),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(Fatal::new(
            EX_TEMPFAIL,
            format!(
                "send {}: the agent's queue is full, not sent",
                path.display()
            ),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound && args.publish.is_none() => Err(io_fatal(
            &format!(
                "send {} (an agent's --publish elsewhere: give it to --publish)",
                path.display()
            ),
            e,
        )),
        Err(e) => Err(unix_fatal(&format!("send {}", path.display()), &path, e)),
    }
}

/// The addresses `-c HOST:PORT` names: an IP address and port (IPv6 in brackets, also
/// scoped with an interface name, `[fe80::1%eth0]:4545`, as `tether scan` prints it), or a
/// host name and port, which the system resolver looks up (as long as resolv.conf's
/// `timeout` and `attempts` let it: `-t` cannot bound it without a thread). A malformed
/// value is a usage error (64), a scope that is no interface name too; a name that does not
/// resolve, or a scope interface that is not there, leaves the agent unreachable (69).
pub fn connect_addrs(hp: &str) -> Result<Vec<std::net::SocketAddr>, Fatal> {
    let usage = |e: String| Fatal::usage(format!("-c {hp:?}: {e}"));
    let scoped = hp
        .strip_prefix('[')
        .and_then(|r| r.split_once("]:"))
        .and_then(|(host, port)| Some((host.split_once('%')?, port)));
    if let Some(((ip, scope), port)) = scoped {
        let ip: std::net::Ipv6Addr = ip
            .parse()
            .map_err(|_| usage(format!("{ip}: not an IPv6 address")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| usage(format!("{port:?}: not a port")))?;
        let index = match scope.parse::<u32>() {
            Ok(i) => i,
            Err(_) if !crate::sys::iface::valid_name(scope) => {
                return Err(usage(format!("{scope:?}: not a valid interface name")));
            }
            Err(_) => {
                crate::sys::iface::named(scope)
                    .map_err(|f| Fatal::new(f.code, format!("-c {hp:?}: {}", f.msg)))?
                    .index
            }
        };
        return Ok(vec![std::net::SocketAddrV6::new(ip, port, 0, index).into()]);
    }
    // A link-local address is one on every link: which one, only its interface says (the
    // connect would fail with EINVAL).
    let scoped = |a: std::net::SocketAddr| match a {
        // fe80::/10 (`Ipv6Addr::is_unicast_link_local` is newer than the MSRV, 1.82)
        std::net::SocketAddr::V6(v6)
            if v6.ip().segments()[0] & 0xffc0 == 0xfe80 && v6.scope_id() == 0 =>
        {
            let ip = v6.ip();
            Err(usage(format!(
                "{ip} is link-local: give its interface, e.g. [{ip}%eth0]:PORT"
            )))
        }
        _ => Ok(a),
    };
    if let Ok(a) = hp.parse() {
        return scoped(a).map(|a| vec![a]);
    }
    if hp.starts_with('[') && !hp.contains("]:") {
        return Err(usage("expected [IPv6 address]:PORT".into()));
    }

    // What is not an IP address and port must be HOST:PORT, checked before any lookup.
    let Some((host, port)) = hp.rsplit_once(':') else {
        return Err(usage("expected HOST:PORT".into()));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| usage(format!("{port:?}: not a port")))?;
    if host
        .split_once('%')
        .is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok())
    {
        // A scoped IPv6 address without brackets (`fe80::1%eth0:4545`), as getaddrinfo
        // took it: the bracketed form's rules.
        return connect_addrs(&format!("[{host}]:{port}"));
    }
    // An IPv6 address in brackets with a good port parsed above: this one is not. A host
    // name is letters, digits, `-`, `_` and dots (a Unicode name in its `xn--` form): what
    // else the resolver would be asked is a typo or a paste, not a board.
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ip = host.parse::<std::net::IpAddr>().ok();
    if let Some(ip) = ip {
        scoped((ip, port).into())?;
    }
    if host.is_empty() || !(ip.is_some() || host.chars().all(name_char)) {
        // `::1`, `fe80::1`: an IPv6 address alone (its last group taken for a port).
        if hp.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(usage("expected [IPv6 address]:PORT".into()));
        }
        return Err(usage(format!("{host}: not a host name or IP address")));
    }
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| {
            Fatal::new(
                EX_UNAVAILABLE,
                format!("-c {hp:?}: cannot resolve {host}: {e}"),
            )
        })
}

/// The agent's Unix socket: `-s`, else ctl's default ([`crate::sys::unix::ctl_socket_path`]), whose
/// directory must be this user's own ([`crate::sys::unix::check_fallback_dir`]): 69.
fn unix_path(args: &CtlArgs) -> Result<PathBuf, Fatal> {
    let p = (args.socket.clone()).unwrap_or_else(crate::sys::unix::ctl_socket_path);
    crate::sys::unix::check_fallback_dir(&p).map_err(|e| Fatal::new(EX_UNAVAILABLE, e))?;
    Ok(p)
}

/// Connects to the Unix stream socket at `path` within `timeout`. Linux's connect on a
/// Unix stream socket waits while the listener's accept queue is full (an agent that is
/// stopped or wedged): forever by default, at most SO_SNDTIMEO when that is set, and then
/// fails with EAGAIN, which is said here as the timeout it is (as TCP's connect says it).
/// A stop and continue (Ctrl-Z, `fg`) ends that wait with EINTR: the connect is made again
/// (Linux allows it on a Unix socket) with what is left of the timeout.
fn connect_unix(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let s = UnixStream::from(fd);
    let (addr, end) = (UnixAddr::new(path)?, Instant::now() + timeout);
    loop {
        // At least 1 ms: a zero timeout is refused, and is no timeout to the kernel.
        let left = end.saturating_duration_since(Instant::now());
        s.set_timeout(left.max(Duration::from_millis(1)))?;
        match nix::sys::socket::connect(s.as_raw_fd(), &addr) {
            Ok(()) => return Ok(s),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "connection timed out",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects to `-c HOST:PORT` over TCP, else to the Unix socket (`-s` or the default).
fn connect(args: &CtlArgs, timeout: Duration) -> Result<(Box<dyn Stream>, String), Fatal> {
    match &args.connect {
        Some(hp) => {
            let addrs = connect_addrs(hp)?;
            let mut last = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        // Each command is one write of a whole line: nothing for Nagle to
                        // merge, only a wait for an ACK to add.
                        let _ = s.set_nodelay(true);
                        return Ok((Box::new(s), hp.clone()));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) => io_fatal(&format!("connect {hp}"), e),
                None => Fatal::new(EX_UNAVAILABLE, format!("-c {hp:?}: no address")),
            })
        }
        None => {
            let p = unix_path(args)?;
            let s = connect_unix(&p, timeout).map_err(|e| {
                // The default found neither this user's agent nor the system's: say both.
                let system = crate::sys::unix::SYSTEM_SOCKET;
                let neither = e.kind() == ErrorKind::NotFound
                    && args.socket.is_none()
                    && p.as_os_str() != system;
                let mut f = unix_fatal(&format!("connect {}", p.display()), &p, e);
                if neither {
                    f.msg += &format!(" (nor is there {system}: is an agent running?)");
                }
                f
            })?;
            Ok((Box::new(s), p.display().to_string()))
        }
    }
}

/// `--token-file`, read before anything is sent, with the agent's own checks, so that a
/// file it would refuse is refused here too (78). None over the Unix socket: everything is
/// allowed there without AUTH (the file is still checked), and an agent without a token
/// would refuse the challenge.
fn read_token<'b>(args: &CtlArgs, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Fatal> {
    let Some(tf) = &args.token_file else {
        return Ok(None);
    };
    let token = crate::sys::read_secret(tf, buf, TOKEN_MAX, true)
        .map_err(|e| Fatal::new(e.exit_code(), format!("--token-file {}: {e}", tf.display())))?;
    Ok(Some(token.accept(tf)).filter(|_| args.connect.is_some()))
}

/// Answers the AUTH challenge with `token` ([`read_token`]). `Some(code)` when the agent
/// refused (its reply is printed, [`escaped`]), None when authenticated or without a token.
fn login(s: &mut dyn Stream, token: Option<&[u8]>, timeout: Duration) -> Result<Option<u8>, Fatal> {
    let Some(token) = token else {
        return Ok(None);
    };
    let reply = authenticate(s, token, Instant::now() + timeout)?;
    if reply == "OK" {
        return Ok(None);
    }
    to_stdout(&format!("{}\n", escaped(&reply)))?;
    Ok(Some(exit_for(&reply).max(EX_ERR)))
}

/// The commands whose `OK {json}` reply is shown as indented text on a terminal.
fn is_json_command(line: &str) -> bool {
    let word = line.split_ascii_whitespace().next().unwrap_or("");
    ["STATUS", "STATS", "SOCKETS"]
        .iter()
        .any(|c| c.eq_ignore_ascii_case(word))
}

/// Prints one reply: indented text for STATUS/STATS/SOCKETS when `pretty`, else as it
/// came; either way with control characters [`escaped`].
fn show(out: &mut impl Write, line: &str, reply: &str, pretty: bool) -> std::io::Result<()> {
    let text = reply
        .strip_prefix("OK ")
        .filter(|_| pretty && is_json_command(line))
        .and_then(pretty::render);
    match text {
        Some(t) => out.write_all(t.as_bytes()),
        None => writeln!(out, "{}", escaped(reply)),
    }?;
    out.flush()
}

/// What the agent would answer to a line it cannot take; said here instead of sending
/// the line, because the agent would also close the connection.
fn too_long_reply() -> String {
    format!(
        "ERR {} {TOO_LONG_TEXT} (not sent)",
        ErrCode::TooLong.as_str()
    )
}

/// One input line as it is (any bytes), less its line end (`\n` or `\r\n`); None at EOF.
/// Of a line longer than the protocol allows only its start is kept (enough to tell: more
/// than [`LINE_MAX`] bytes), so a file without line ends (`< /dev/zero`) costs no memory.
/// A read error (a directory, an I/O error) is one (74), not the end of the commands.
fn read_line(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, Fatal> {
    let mut raw = Vec::new();
    let mut any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fatal::new(EX_IOERR, format!("reading standard input: {e}"))),
        };
        if buf.is_empty() {
            break;
        }
        any = true;
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        let keep = chunk.len().min((LINE_MAX + 2).saturating_sub(raw.len()));
        raw.extend_from_slice(&chunk[..keep]);
        let used = end.map_or(chunk.len(), |e| e + 1);
        input.consume(used);
        if end.is_some() {
            break;
        }
    }
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    Ok(any.then_some(raw))
}

/// The connection of a prompt or pipe session, reopened (and authenticated again) when
/// the agent has closed it between two commands: an idle session outlives the agent's
/// `--idle-timeout`, and an agent restart.
struct Session<'a> {
    args: &'a CtlArgs,
    token: Option<&'a [u8]>,
    timeout: Duration,
    stream: Box<dyn Stream>,
}

impl Session<'_> {
    /// Sends one command and returns the reply. A connection found closed before the
    /// command is sent is reopened first; the command itself is never sent twice.
    fn send(&mut self, line: &[u8]) -> Result<String, Fatal> {
        if crate::sys::net::peer_gone(self.stream.as_fd()) {
            crate::say!("(the agent closed the connection; reconnecting)");
            let (mut stream, _) = connect(self.args, self.timeout)?;
            if let Some(code) = login(stream.as_mut(), self.token, self.timeout)? {
                return Err(Fatal::new(code, "AUTH refused on reconnecting"));
            }
            self.stream = stream;
        }
        exchange(self.stream.as_mut(), line, Instant::now() + self.timeout)
    }
}

/// The prompt: one command per line, until `quit`, `exit` or EOF. ERR replies are shown
/// and the session goes on; a connection that cannot be reopened ends it.
fn interactive(mut s: Session<'_>, to: &str, pretty: bool) -> Result<u8, Fatal> {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let banner = "HELP lists the commands, quit or Ctrl-D leaves";
    if !stdout_written(writeln!(out, "connected to {to}; {banner}"))? {
        return Ok(0);
    }
    loop {
        if !stdout_written(out.write_all(b"tether> ").and_then(|_| out.flush()))? {
            return Ok(0);
        }
        let Some(raw) = read_line(&mut input)? else {
            stdout_written(writeln!(out))?;
            return Ok(0);
        };
        let line = String::from_utf8_lossy(&raw);
        // As from a file: blank lines and `#` comments (a pasted script) are not sent.
        if line.trim().is_empty() || line.trim().starts_with('#') {
            continue;
        }
        if ["quit", "exit"]
            .iter()
            .any(|q| q.eq_ignore_ascii_case(line.trim()))
        {
            return Ok(0);
        }
        let reply = if raw.len() > LINE_MAX {
            too_long_reply()
        } else {
            s.send(&raw)?
        };
        if !stdout_written(show(&mut out, &line, &reply, pretty))? {
            return Ok(0);
        }
    }
}

/// Commands from a pipe or file: one per line, sent as it is (blank lines and `#`
/// comments skipped), one reply per line. Every line is answered; the status is the first
/// failure's. A session cut short (no reply, no agent) is its reason's: lines went unsent.
fn batch(mut s: Session<'_>, input: &mut impl BufRead, pretty: bool) -> Result<u8, Fatal> {
    let mut out = std::io::stdout().lock();
    let mut first_failure = None;
    while let Some(raw) = read_line(input)? {
        let line = String::from_utf8_lossy(&raw);
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let reply = if raw.len() > LINE_MAX {
            too_long_reply()
        } else {
            s.send(&raw)?
        };
        let code = exit_for(&reply);
        if code != 0 && first_failure.is_none() {
            first_failure = Some(code);
        }
        // stdout closed (`| head`): nobody reads the rest.
        if !stdout_written(show(&mut out, &line, &reply, pretty))? {
            break;
        }
        // The agent closes after QUIT's OK (it ignores spaces around the command).
        if line.trim_matches(' ').eq_ignore_ascii_case("QUIT") {
            break;
        }
    }
    Ok(first_failure.unwrap_or(0))
}

/// Runs `tether ctl` (`args` checked by [`CtlArgs::validate`], which gave `timeout`: the
/// limit for connecting and for each reply); returns the exit code.
pub fn run(args: CtlArgs, timeout: Duration) -> Result<u8, Fatal> {
    if args.dgram {
        return dgram(&args);
    }
    let pretty = !args.raw && std::io::stdout().is_terminal();
    let stdin_tty = std::io::stdin().is_terminal();
    let mut buf = [0u8; secret_buf_len(TOKEN_MAX)];
    let token = read_token(&args, &mut buf)?;
    let (mut stream, to) = connect(&args, timeout)?;
    if let Some(code) = login(stream.as_mut(), token, timeout)? {
        return Ok(code);
    }
    if args.words.is_empty() {
        let s = Session {
            args: &args,
            token,
            timeout,
            stream,
        };
        return if stdin_tty {
            interactive(s, &to, pretty)
        } else {
            batch(s, &mut std::io::stdin().lock(), pretty)
        };
    }
    let line = args.words.join(" ");
    let reply = exchange(stream.as_mut(), line.as_bytes(), Instant::now() + timeout)?;
    stdout_written(show(&mut std::io::stdout().lock(), &line, &reply, pretty))?;
    Ok(exit_for(&reply))
}

#[cfg(test)]
mod tests {
    use super::connect_addrs;
    use crate::exit::EX_USAGE;

    #[test]
    fn a_malformed_connect_value_is_usage_before_any_lookup() {
        for hp in [
            "127.0.0.1",
            "localhost",
            "localhost:",
            "localhost:http",
            "localhost:65536",
            ":4545",
            "[::1]",
            "[::1]:x",
            "[nope]:4545",
            "[fe80::1%lo]:99999",
            "[fe80::zz%lo]:4545",
            // Never a host name: not asked of the resolver (which may ask the network).
            "bo\u{1b}[2Jard:4200",
            "two words:4545",
            "board/1:4545",
            "kitchen,pi:4545",
            // Link-local without its interface (the connect would be EINVAL).
            "fe80::1:4545",
            "[fe80::1]:4545",
            "[febf::1]:4545",
        ] {
            let e = connect_addrs(hp).expect_err(hp);
            assert_eq!(e.code, EX_USAGE, "{hp}: {}", e.msg);
            assert!(e.msg.starts_with(&format!("-c {hp:?}: ")), "{}", e.msg);
        }
        for hp in ["[::1]", "::1", "fe80::1"] {
            let e = connect_addrs(hp).expect_err("no port");
            assert_eq!(e.msg, format!("-c {hp:?}: expected [IPv6 address]:PORT"));
        }
        for (hp, want) in [
            ("127.0.0.1:4545", "127.0.0.1:4545"),
            ("[::1]:4545", "[::1]:4545"),
            // As std's ToSocketAddrs takes it: the last colon ends the host.
            ("::1:4545", "[::1]:4545"),
            ("fe80::1%1:4545", "[fe80::1%1]:4545"),
            ("fe80::1%lo:4545", "[fe80::1%1]:4545"),
        ] {
            let got = connect_addrs(hp).map(|a| a[0].to_string());
            assert_eq!(got.map_err(|e| e.msg), Ok(want.to_string()), "{hp}");
        }
    }
}
