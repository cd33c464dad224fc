//! `tether ctl`: send one command, print the one-line reply, exit with a sysexits code
//! (0 ok, 1 the agent answered ERR, 64 usage, 69 unreachable, 75 timeout, 76 not tether's
//! protocol, 77 denied).
//! A client process, so it may allocate and block (with a deadline).

use crate::agent::AUTH_CHALLENGE_PREFIX;
use crate::cli::CtlArgs;
use crate::daemon::{Fatal, EX_UNAVAILABLE, EX_USAGE};
use crate::limits::{AUTH_NONCE_BYTES, LINE_MAX};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub const EX_ERR: u8 = 1;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_NOPERM: u8 = 77;
/// The agent answered something that is not tether's protocol.
pub const EX_PROTOCOL: u8 = 76;

trait Stream: Read + Write {
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
    Fatal {
        code,
        msg: format!("{what}: {e}"),
    }
}

/// Sends `line` and reads one reply line before `deadline`.
fn exchange(s: &mut dyn Stream, line: &str, deadline: Instant) -> Result<String, Fatal> {
    s.write_all(line.as_bytes())
        .and_then(|_| s.write_all(b"\n"))
        .map_err(|e| io_fatal("send", e))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fatal {
                code: EX_TEMPFAIL,
                msg: "timed out waiting for the reply".into(),
            });
        }
        s.set_timeout(left).map_err(|e| io_fatal("socket", e))?;
        match s.read(&mut byte) {
            Ok(0) => {
                return Err(Fatal {
                    code: EX_UNAVAILABLE,
                    msg: "the agent closed the connection without a reply".into(),
                })
            }
            Ok(n) => {
                reply.extend_from_slice(&byte[..n]);
                if let Some(nl) = reply.iter().position(|&b| b == b'\n') {
                    reply.truncate(nl);
                    if reply.last() == Some(&b'\r') {
                        reply.pop();
                    }
                    return Ok(String::from_utf8_lossy(&reply).into_owned());
                }
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
    }
}

/// The AUTH challenge: asks for a nonce, answers HMAC-SHA256(token, "tether-auth-v1:" nonce).
/// The token itself never leaves this process. Returns the agent's last reply line.
fn authenticate(s: &mut dyn Stream, token: &[u8], deadline: Instant) -> Result<String, Fatal> {
    let reply = exchange(s, "AUTH", deadline)?;
    let Some(nonce) = reply.strip_prefix("OK ") else {
        return Ok(reply);
    };
    let mut raw = [0u8; AUTH_NONCE_BYTES];
    if !crate::proto::hex::decode(nonce.as_bytes(), &mut raw) {
        return Err(Fatal {
            code: EX_PROTOCOL,
            msg: format!(
                "AUTH: expected OK and a {}-digit nonce, got {reply:?}",
                2 * AUTH_NONCE_BYTES
            ),
        });
    }
    let tag = crate::crypto::hmac_sha256(token, &[AUTH_CHALLENGE_PREFIX, nonce.as_bytes()]);
    let mut answer = [0u8; 64];
    crate::proto::hex::encode(&tag, &mut answer);
    let line = format!("AUTH {}", String::from_utf8_lossy(&answer));
    exchange(s, &line, deadline)
}

fn exit_for(reply: &str) -> u8 {
    if reply.starts_with("ERR denied") {
        EX_NOPERM
    } else if reply.starts_with("ERR") {
        EX_ERR
    } else {
        0
    }
}

/// `tether ctl --dgram SET key value [ttl=SECS]` / `DEL key`: one datagram to the agent's
/// publish socket (`publish.sock` beside the `-s` socket or the default one), no answer
/// awaited. The line is checked with the agent's own parser first, since nothing comes
/// back: a bad line or another command is a usage error (64). Exit 0 once the datagram is
/// queued; 69 no socket or no agent there; 77 permission denied; 75 the agent's queue is
/// full (the datagram was not sent).
pub fn dgram(args: &CtlArgs) -> Result<u8, Fatal> {
    use crate::proto::request::{parse, Request};
    let usage = |m: String| Fatal {
        code: EX_USAGE,
        msg: m,
    };
    if args.connect.is_some() || args.token_file.is_some() {
        return Err(usage(
            "--dgram goes to the local publish socket: -c and --token-file do not apply".into(),
        ));
    }
    let line = args.words.join(" ");
    match parse(line.as_bytes()) {
        Ok(Request::Set { .. } | Request::Del(_)) => {}
        Ok(_) => {
            return Err(usage(format!(
                "--dgram sends only SET and DEL (nothing comes back); without --dgram: tether ctl {line}"
            )))
        }
        Err(e) => return Err(usage(format!("--dgram {line:?}: {}", e.text))),
    }
    let ctl = args
        .socket
        .clone()
        .unwrap_or_else(crate::sys::unix::default_socket_path);
    let path = ctl.with_file_name("publish.sock");
    let send = || {
        let s = std::os::unix::net::UnixDatagram::unbound()?;
        s.set_nonblocking(true)?;
        s.send_to(format!("{line}\n").as_bytes(), &path)
    };
    match send() {
        Ok(_) => Ok(0),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(Fatal {
            code: EX_TEMPFAIL,
            msg: format!(
                "send {}: the agent's queue is full, not sent",
                path.display()
            ),
        }),
        Err(e) => Err(io_fatal(&format!("send {}", path.display()), e)),
    }
}

/// Runs `tether ctl`; returns the exit code after printing the reply.
/// The addresses `-c HOST:PORT` names. Besides what `ToSocketAddrs` takes, a scoped IPv6
/// address with an interface name, `[fe80::1%eth0]:4545` (as `tether scan` prints it).
pub fn connect_addrs(hp: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    let scoped = hp
        .strip_prefix('[')
        .and_then(|r| r.split_once("]:"))
        .and_then(|(host, port)| Some((host.split_once('%')?, port)));
    if let Some(((ip, scope), port)) = scoped {
        let ip: std::net::Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("{ip}: not an IPv6 address"))?;
        let port: u16 = port.parse().map_err(|_| format!("{port}: not a port"))?;
        let index = match scope.parse::<u32>() {
            Ok(i) => i,
            Err(_) => {
                crate::sys::iface::info(scope)
                    .ok_or_else(|| format!("{scope}: no such interface"))?
                    .index
            }
        };
        return Ok(vec![std::net::SocketAddrV6::new(ip, port, 0, index).into()]);
    }
    hp.to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| e.to_string())
}

pub fn run(args: CtlArgs) -> Result<u8, Fatal> {
    let usage = |m: String| Fatal {
        code: EX_USAGE,
        msg: m,
    };
    if args.words.is_empty() {
        return Err(usage("no command given (try: tether ctl PING)".into()));
    }
    if args.socket.is_some() && args.connect.is_some() {
        return Err(usage("-s and -c exclude each other".into()));
    }
    if args.dgram {
        return dgram(&args);
    }
    if !(args.timeout > 0.0 && args.timeout < 1e6) {
        return Err(usage(format!(
            "-t {}: expected a positive number of seconds",
            args.timeout
        )));
    }
    let line = args.words.join(" ");
    if line.len() > LINE_MAX || line.contains('\n') {
        return Err(usage(format!(
            "the command is longer than {LINE_MAX} bytes or has a newline"
        )));
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let deadline = Instant::now() + timeout;
    let mut stream: Box<dyn Stream> = match &args.connect {
        Some(hp) => {
            let addrs = connect_addrs(hp).map_err(|e| usage(format!("-c {hp}: {e}")))?;
            let mut last = None;
            let mut conn = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        conn = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match (conn, last) {
                (Some(s), _) => Box::new(s),
                (None, Some(e)) => return Err(io_fatal(&format!("connect {hp}"), e)),
                (None, None) => return Err(usage(format!("-c {hp}: no address"))),
            }
        }
        None => {
            let p = args
                .socket
                .clone()
                .unwrap_or_else(crate::sys::unix::default_socket_path);
            let s = UnixStream::connect(&p)
                .map_err(|e| io_fatal(&format!("connect {}", p.display()), e))?;
            Box::new(s)
        }
    };
    if let Some(tf) = &args.token_file {
        let token = std::fs::read(tf).map_err(|e| Fatal {
            code: crate::daemon::EX_CONFIG,
            msg: format!("--token-file {}: {e}", tf.display()),
        })?;
        let reply = authenticate(stream.as_mut(), token.trim_ascii(), deadline)?;
        if reply != "OK" {
            println!("{reply}");
            return Ok(exit_for(&reply).max(EX_ERR));
        }
    }
    let reply = exchange(stream.as_mut(), &line, deadline)?;
    println!("{reply}");
    Ok(exit_for(&reply))
}
