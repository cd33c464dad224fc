//! Stream sockets: TCP listeners (v4 and v6-only), accept, non-blocking send/recv,
//! and reading socket options back for SOCKETS (as a [`SocketInfo`]; the JSON is
//! written by `proto::sockets`, not here). Also the agent's socket buffer sizes
//! (`--rcvbuf` / `--sndbuf`), which every socket-opening function in `sys` applies.

use super::SysError;
use crate::limits::{IFNAMSIZ, SOCKET_ADDR_TEXT_MAX};
use crate::proto::sockets::SocketInfo;
use crate::proto::wbuf::WBuf;
use nix::errno::Errno;
use nix::sys::socket::{
    self, accept4, bind, getsockname, getsockopt, listen, setsockopt, sockopt, AddressFamily,
    Backlog, MsgFlags, SockFlag, SockType, SockaddrStorage,
};
use std::fmt::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

pub const SOCK_FLAGS: SockFlag = SockFlag::SOCK_NONBLOCK.union(SockFlag::SOCK_CLOEXEC);

/// `--rcvbuf` / `--sndbuf`: SO_RCVBUF / SO_SNDBUF for every socket the agent opens
/// (None: the kernel's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufSizes {
    pub rcvbuf: Option<u32>,
    pub sndbuf: Option<u32>,
}

/// RLIMIT_NOFILE's soft limit, read once at start-up ([`note_fd_limit`]); unlimited as
/// `i64::MAX` (also before it is read: `tether ctl` and `tether scan` never read it).
static FD_LIMIT: AtomicI64 = AtomicI64::new(i64::MAX);

/// Reads RLIMIT_NOFILE once, at start-up: from then on [`in_fd_reserve`] tells the
/// connections that would leave fewer than [`crate::limits::FD_RESERVE`] fds free.
pub fn note_fd_limit() {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft != RLIM_INFINITY {
            FD_LIMIT.store(i64::try_from(soft).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }
}

/// The lowest fd number an accepted connection may not keep.
fn fd_ceiling() -> i64 {
    let reserve = i64::try_from(crate::limits::FD_RESERVE).unwrap_or(0);
    FD_LIMIT.load(Ordering::Relaxed).saturating_sub(reserve)
}

/// At start-up, once every listener is open: a warning when RLIMIT_NOFILE leaves fewer fds
/// for connections than `max_clients` (the [`crate::limits::FD_RESERVE`] kept spare), as
/// under `ulimit -n 16`, where the connections beyond it are told `ERR busy`.
pub fn warn_fd_room(max_clients: usize) {
    // The lowest free number, which the next connection gets; none free (EMFILE) is as if
    // the next one were the limit itself.
    let next = match std::fs::File::open("/dev/null") {
        Ok(p) => i64::from(p.as_raw_fd()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => FD_LIMIT.load(Ordering::Relaxed),
        Err(_) => return,
    };
    let room = fd_ceiling().saturating_sub(next);
    if room < i64::try_from(max_clients).unwrap_or(i64::MAX) {
        log::warn!(
            "RLIMIT_NOFILE {} leaves fds for {} connection(s) at once, fewer than --max-clients \
             {max_clients}: the others are told ERR busy (raise it: ulimit -n, LimitNOFILE=)",
            FD_LIMIT.load(Ordering::Relaxed),
            room.max(0)
        );
    }
}

/// Does keeping `fd` (just accepted) leave fewer than [`crate::limits::FD_RESERVE`] fds
/// under RLIMIT_NOFILE? The kernel hands out the lowest free number, so every number
/// below `fd` is taken: at most `limit - 1 - fd` are left.
pub fn in_fd_reserve(fd: BorrowedFd<'_>) -> bool {
    i64::from(fd.as_raw_fd()) >= fd_ceiling()
}

// One process-wide setting, written once at start-up before any socket is opened, and
// read by every opening function here in `sys` (listeners, accepted clients, the publish
// socket, beacon sockets reopened at run time, the notify socket). Process-wide rather
// than an argument because the beacon reopens its sockets itself when an interface is
// recreated. 0 = unset: `tether scan` and `tether ctl` never set it.
static RCVBUF: AtomicU32 = AtomicU32::new(0);
static SNDBUF: AtomicU32 = AtomicU32::new(0);

/// Sets the buffer sizes every socket opened from now on gets (agent start-up only).
pub fn set_buf_sizes(b: BufSizes) {
    RCVBUF.store(b.rcvbuf.unwrap_or(0), Ordering::Relaxed);
    SNDBUF.store(b.sndbuf.unwrap_or(0), Ordering::Relaxed);
}

/// Applies the sizes of [`set_buf_sizes`] to `fd` (nothing when unset). Listeners get them
/// before `listen`, so TCP connections accepted from them inherit them (and a TCP window
/// scale that matches); [`accept`] sets them again because Unix stream connections do not
/// inherit a listener's buffers. Linux doubles the value (its bookkeeping overhead) and
/// caps it at `net.core.rmem_max` / `wmem_max`: getsockopt reports what it kept.
pub fn apply_buf_sizes(fd: BorrowedFd<'_>) -> Result<(), (&'static str, Errno)> {
    let (r, s) = (
        RCVBUF.load(Ordering::Relaxed),
        SNDBUF.load(Ordering::Relaxed),
    );
    if r != 0 {
        setsockopt(&fd, sockopt::RcvBuf, &(r as usize)).map_err(|e| ("SO_RCVBUF", e))?;
    }
    if s != 0 {
        setsockopt(&fd, sockopt::SndBuf, &(s as usize)).map_err(|e| ("SO_SNDBUF", e))?;
    }
    Ok(())
}

/// Logs one warning per option when the kernel kept less than twice the size asked for
/// on `fd` (a start-up check: `net.core.rmem_max` / `wmem_max` cap what SO_RCVBUF and
/// SO_SNDBUF may set, silently).
pub fn warn_capped_buf_sizes(fd: BorrowedFd<'_>) {
    let checks = [
        (
            "--rcvbuf",
            &RCVBUF,
            getsockopt(&fd, sockopt::RcvBuf),
            "rmem_max",
        ),
        (
            "--sndbuf",
            &SNDBUF,
            getsockopt(&fd, sockopt::SndBuf),
            "wmem_max",
        ),
    ];
    for (name, want, got, sysctl) in checks {
        let want = want.load(Ordering::Relaxed) as usize;
        match got {
            Ok(got) if want != 0 && got < 2 * want => log::warn!(
                "{name} {want}: the kernel kept {got} bytes, not {} (raise net.core.{sysctl})",
                2 * want
            ),
            _ => {}
        }
    }
}

/// Whether this kernel has IPv6 at all (an AF_INET6 socket can be made; without it,
/// EAFNOSUPPORT). IPv6 disabled by sysctl still makes sockets.
pub fn ipv6_available() -> bool {
    socket::socket(AddressFamily::Inet6, SockType::Datagram, SOCK_FLAGS, None)
        .map_or_else(|e| e != Errno::EAFNOSUPPORT, |_| true)
}

/// Opens a TCP listener. IPv6 sockets are IPV6_V6ONLY so v4 and v6 can share a port.
///
/// The connections it accepts inherit its buffer sizes and its TCP_NODELAY (set here once,
/// not with a system call per connection). TCP_NODELAY, as redis, nginx and every Go server
/// set it: the agent writes each turn's replies to a client with one send, so Nagle's
/// algorithm has no small writes to merge, only replies to hold back. Without it a reply
/// written while an earlier one is unacknowledged waits for the client's delayed ACK (40 ms
/// on Linux): 1,000 pipelined PINGs in one write were answered in 42 ms instead of 0.2 ms.
pub fn tcp_listen(addr: SocketAddr, backlog: u16) -> Result<OwnedFd, SysError> {
    let fam = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let ctx = |what: &str, e| SysError::new(format!("{what} {addr}"), e);
    let fd =
        socket::socket(fam, SockType::Stream, SOCK_FLAGS, None).map_err(|e| ctx("socket", e))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| ctx("SO_REUSEADDR", e))?;
    apply_buf_sizes(fd.as_fd()).map_err(|(what, e)| ctx(what, e))?;
    // Best effort: connections keep Nagle rather than the agent not starting.
    let _ = setsockopt(&fd, sockopt::TcpNoDelay, &true);
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|e| ctx("IPV6_V6ONLY", e))?;
    }
    let sa = SockaddrStorage::from(addr);
    bind(fd.as_raw_fd(), &sa).map_err(|e| ctx("bind", e))?;
    let bl = Backlog::new(i32::from(backlog)).map_err(|e| ctx("backlog", e))?;
    listen(&fd, bl).map_err(|e| ctx("listen", e))?;
    Ok(fd)
}

/// The address a socket is bound to, as `ip:port` (or None for non-inet sockets).
pub fn local_inet(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    let sa: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(v4) = sa.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    sa.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// What one [`accept`] gave.
pub enum Accept {
    /// None is waiting (or the error was the connection's own, logged at debug level).
    None,
    Conn(OwnedFd),
    /// Accepted, but keeping it would leave fewer than [`crate::limits::FD_RESERVE`] fds
    /// ([`in_fd_reserve`]): to be refused (and accepting paused).
    Spare(OwnedFd),
    /// Out of fds or memory ([`super::short`]): accepting should pause.
    Short(Errno),
}

/// Accepts one connection (non-blocking, close-on-exec), and classifies what came. A TCP
/// connection (`tcp`) has its listener's buffer sizes and TCP_NODELAY already
/// ([`tcp_listen`]); a Unix one gets the sizes here.
pub fn accept(listener: BorrowedFd<'_>, tcp: bool) -> Accept {
    loop {
        match accept4(listener, SOCK_FLAGS) {
            Ok(fd) if in_fd_reserve(fd.as_fd()) => return Accept::Spare(fd),
            Ok(fd) => {
                // Best effort: a client keeps the kernel's sizes rather than being refused.
                if !tcp {
                    let _ = apply_buf_sizes(fd.as_fd());
                }
                return Accept::Conn(fd);
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Accept::None,
            // The peer gave up between SYN and accept: not our problem, try the next one.
            Err(Errno::ECONNABORTED | Errno::EPROTO) => continue,
            Err(e) if super::short(e) => return Accept::Short(e),
            Err(e) => {
                log::debug!("accept: {}", e.desc());
                return Accept::None;
            }
        }
    }
}

/// How many connections wait in a TCP listener's accept queue: TCP_INFO's `tcpi_unacked`,
/// which Linux fills with the queue's length for a listening socket. An accept pass takes
/// that many and stops instead of calling accept4 once more to hear EAGAIN: a failing
/// accept4 costs the kernel nearly what a good one does (it makes the new socket, its inode
/// and its file before it looks at the queue, then frees them, the inode by two RCU
/// callbacks on this CPU). In a connect storm those were half of the server CPU's RCU
/// callbacks (docs/BENCH.md). `None`: not answered (qemu-user does not pass TCP_INFO on).
pub fn accept_queue(listener: BorrowedFd<'_>) -> Option<usize> {
    use nix::libc;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // SAFETY: zeroed, then written by the kernel: every bit pattern is a valid tcp_info.
    let info = unsafe { info.assume_init() };
    // tcpi_unacked is bytes 24..28: a shorter answer does not hold it. The field means the
    // queue's length only for a socket in LISTEN (`tcp_get_info` aliases it there).
    const TCP_LISTEN: u8 = 10; // include/net/tcp_states.h
    let listening = info.tcpi_state == TCP_LISTEN;
    (r == 0 && len >= 28 && listening).then_some(info.tcpi_unacked as usize)
}

/// TCP keepalive, set on a listener (the connections it accepts inherit it): an idle peer
/// gone without a FIN or RST (crashed, rebooted, its NAT entry or Wi-Fi gone) is found dead
/// after [`KEEPALIVE_DEAD_SECS`] and its slot freed. For `--idle-timeout` 0 or longer than
/// that: sixteen such peers would otherwise fill the client table until a restart, or for
/// as long as the timeout. (One gone with a reply unacknowledged is found by the kernel's
/// retransmissions, in about 15 min. TCP_USER_TIMEOUT would shorten that, but it also
/// aborts a live reader that only stopped reading for as long: "read as slowly as it
/// likes" would not hold.) Best effort, as TCP_NODELAY.
///
/// [`KEEPALIVE_DEAD_SECS`]: crate::limits::KEEPALIVE_DEAD_SECS
pub fn keepalive(fd: BorrowedFd<'_>) {
    use crate::limits::{KEEPALIVE_IDLE_SECS, KEEPALIVE_INTERVAL_SECS, KEEPALIVE_PROBES};
    let _ = setsockopt(&fd, sockopt::TcpKeepIdle, &KEEPALIVE_IDLE_SECS);
    let _ = setsockopt(&fd, sockopt::TcpKeepInterval, &KEEPALIVE_INTERVAL_SECS);
    let _ = setsockopt(&fd, sockopt::TcpKeepCount, &KEEPALIVE_PROBES);
    let _ = setsockopt(&fd, sockopt::KeepAlive, &true);
}

/// TCP_DEFER_ACCEPT on a listener: the kernel hands a connection over only once its first
/// bytes have come, or after about `secs` (its SYN-ACK retransmits: 1, 3, 7 s). A peer
/// that connects and says nothing then costs the kernel a request socket, not a slot of
/// ours. For protocols whose client speaks first (HTTP). Best effort, as TCP_NODELAY.
pub fn defer_accept(fd: BorrowedFd<'_>, secs: u64) {
    let secs = i32::try_from(secs).unwrap_or(i32::MAX);
    let _ = set_int(
        fd,
        nix::libc::IPPROTO_TCP,
        nix::libc::TCP_DEFER_ACCEPT,
        secs,
    );
}

/// setsockopt(2) with an int value, for options nix does not wrap.
pub fn set_int(fd: BorrowedFd<'_>, level: i32, opt: i32, v: i32) -> Result<(), Errno> {
    // SAFETY: `v` is a valid c_int that outlives the call; its size is passed.
    let r = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as nix::libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// Outcome of a non-blocking read or write.
pub enum Io {
    Done(usize),
    WouldBlock,
    Closed,
}

pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Io {
    loop {
        match socket::recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) if !buf.is_empty() => return Io::Closed,
            Ok(n) => return Io::Done(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Io::WouldBlock,
            Err(_) => return Io::Closed,
        }
    }
}

/// Has the peer closed (EOF or reset) with nothing left unread? Reads nothing.
pub fn peer_gone(fd: BorrowedFd<'_>) -> bool {
    let mut b = [0u8; 1];
    loop {
        match socket::recv(
            fd.as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => return true,
            Ok(_) | Err(Errno::EAGAIN) => return false,
            Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// How many bytes have arrived on `fd` and are not read yet (FIONREAD); 0 when it
/// cannot tell. Reads nothing.
pub fn unread(fd: BorrowedFd<'_>) -> usize {
    queued(fd, nix::libc::FIONREAD)
}

/// How many bytes sent on `fd` its peer has not read yet (SIOCOUTQ: for TCP, those not
/// acknowledged; for a Unix stream, those not consumed); 0 when it cannot tell.
pub fn unsent(fd: BorrowedFd<'_>) -> usize {
    queued(fd, nix::libc::TIOCOUTQ)
}

/// A socket queue's length in bytes, by an ioctl that writes it as a C int.
fn queued(fd: BorrowedFd<'_>, request: nix::libc::Ioctl) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD and TIOCOUTQ write one c_int to `n`, which is valid and outlives
    // the call.
    let r = unsafe { nix::libc::ioctl(fd.as_raw_fd(), request, &mut n) };
    if r == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Sends without ever raising SIGPIPE.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> Io {
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    written(|| socket::send(fd.as_raw_fd(), buf, flags))
}

/// What a non-blocking write (`op`, again after a signal) came to.
pub fn written(mut op: impl FnMut() -> nix::Result<usize>) -> Io {
    loop {
        match op() {
            Ok(n) => return Io::Done(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Io::WouldBlock,
            Err(_) => return Io::Closed,
        }
    }
}

/// Half-closes the write side so the peer sees EOF after our last reply.
pub fn shutdown_write(fd: BorrowedFd<'_>) {
    let _ = socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Write);
}

/// A goodbye: half-closes `fd` ([`shutdown_write`]) and reads what the peer already sent
/// (up to [`crate::limits::LINGER_SINK`] bytes), so that closing it, now or after a
/// linger, sends a FIN rather than a reset that could destroy the last reply in flight.
pub fn say_goodbye(fd: BorrowedFd<'_>) {
    shutdown_write(fd);
    let _ = recv(fd, &mut [0u8; crate::limits::LINGER_SINK]);
}

/// The device a socket is bound to (SO_BINDTODEVICE), read without allocating.
pub fn bound_device(fd: BorrowedFd<'_>, out: &mut [u8; IFNAMSIZ]) -> usize {
    let mut len = out.len() as nix::libc::socklen_t;
    // SAFETY: `out` is valid for `len` bytes and outlives the call; the kernel writes at
    // most `len` bytes and updates `len`.
    let r = unsafe {
        nix::libc::getsockopt(
            fd.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_BINDTODEVICE,
            out.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return 0;
    }
    let n = (len as usize).min(out.len());
    out[..n].iter().position(|&b| b == 0).unwrap_or(n)
}

/// Reads back what SOCKETS shows of a socket: its address and options (getsockname,
/// getsockopt), without allocating. [`SocketInfo::write`] turns it into JSON.
pub fn socket_info(fd: BorrowedFd<'_>) -> SocketInfo {
    let mut info = SocketInfo::default();
    let mut abuf = [0u8; SOCKET_ADDR_TEXT_MAX];
    let mut a = WBuf::new(&mut abuf);
    let sa: Result<SockaddrStorage, _> = getsockname(fd.as_raw_fd());
    match sa {
        Ok(sa) => {
            if let Some(u) = sa.as_unix_addr() {
                match u.path() {
                    Some(p) => {
                        let _ = a.push_bytes(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
                    }
                    None => {
                        let _ = a.write_str("(unnamed)");
                    }
                }
            } else if let Some(v4) = sa.as_sockaddr_in() {
                // std's formatting, linked anyway (nix's own for every family: 976 bytes).
                let _ = write!(a, "{}", std::net::SocketAddrV4::from(*v4));
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                let _ = write!(a, "{}", std::net::SocketAddrV6::from(*v6));
            }
        }
        Err(_) => {
            let _ = a.write_str("?");
        }
    }
    let _ = info.addr.extend_from_slice(a.as_bytes());
    let fd = &fd.as_fd();
    info.accept_conn = getsockopt(fd, sockopt::AcceptConn).ok();
    info.reuse_addr = getsockopt(fd, sockopt::ReuseAddr).ok();
    let num = |r: nix::Result<usize>| r.map(|v| v as i64).unwrap_or(-1);
    info.rcvbuf = num(getsockopt(fd, sockopt::RcvBuf));
    info.sndbuf = num(getsockopt(fd, sockopt::SndBuf));
    let mut dev = [0u8; IFNAMSIZ];
    let n = bound_device(*fd, &mut dev);
    let _ = info.device.extend_from_slice(&dev[..n]);
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// TCP_INFO on a listener counts the connections waiting for accept(2): the accept
    /// pass takes that many and no more (no accept4 that ends in EAGAIN).
    #[test]
    fn accept_queue_counts_the_waiting_connections() {
        let l = tcp_listen("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        let addr = getsockname::<SockaddrStorage>(l.as_raw_fd()).unwrap();
        let port = addr.as_sockaddr_in().unwrap().port();
        let Some(0) = accept_queue(l.as_fd()) else {
            // qemu-user does not pass TCP_INFO on for its guests (the aarch64 and armv7
            // suites run there): the run loop then accepts until EAGAIN, as it did before.
            // The x86_64 suite runs on the machine's own kernel, which must answer.
            if cfg!(target_arch = "x86_64") {
                panic!("TCP_INFO unanswered: {:?}", accept_queue(l.as_fd()));
            }
            eprintln!("skipped: TCP_INFO not answered here (qemu-user)");
            return;
        };
        let clients: Vec<_> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        // connect(2) returns when the client sends its ACK; the listener's side may take
        // that a moment later (a loaded machine's softirq thread).
        let waiting = |want| {
            for _ in 0..200 {
                if accept_queue(l.as_fd()) == Some(want) {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        };
        assert!(waiting(3), "{:?}", accept_queue(l.as_fd()));
        assert!(matches!(accept(l.as_fd(), true), Accept::Conn(_)));
        assert_eq!(accept_queue(l.as_fd()), Some(2));
        // Not a listener: no answer, and the caller accepts until EAGAIN.
        let c = clients[0].as_fd();
        assert_eq!(accept_queue(c), None);
    }
}
