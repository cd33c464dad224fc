//! systemd readiness notification ($NOTIFY_SOCKET), no libsystemd.
//!
//! The protocol (sd_notify(3)): send one `AF_UNIX` datagram of newline-separated
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`. A leading `/` names a path,
//! a leading `@` an abstract-namespace address. Under `Type=notify` the service is "started"
//! after `READY=1`; with `WatchdogSec=` systemd sets `$WATCHDOG_USEC` and expects
//! `WATCHDOG=1` more often than that.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{sendto, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

/// A datagram socket aimed at the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
    addr: UnixAddr,
}

impl Notifier {
    /// None when $NOTIFY_SOCKET is unset/empty. Supports abstract addresses (leading '@').
    ///
    /// Errors: `EAFNOSUPPORT` for an address form this agent does not speak (e.g.
    /// `vsock:`), `ENAMETOOLONG` for a path that does not fit `sockaddr_un`, or the
    /// error of `socket(2)`.
    pub fn from_env() -> nix::Result<Option<Notifier>> {
        Self::from_value(std::env::var_os("NOTIFY_SOCKET").as_deref())
    }

    fn from_value(value: Option<&OsStr>) -> nix::Result<Option<Notifier>> {
        let bytes = match value {
            Some(v) if !v.is_empty() => v.as_bytes(),
            _ => return Ok(None),
        };
        let addr = match bytes.split_first() {
            Some((b'@', name)) => UnixAddr::new_abstract(name)?,
            Some((b'/', _)) => UnixAddr::new(bytes)?,
            _ => return Err(Errno::EAFNOSUPPORT),
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        super::net::apply_buf_sizes(std::os::fd::AsFd::as_fd(&fd)).map_err(|(_, e)| e)?;
        Ok(Some(Notifier { fd, addr }))
    }

    /// Sends one datagram, e.g. b"READY=1\nSTATUS=listening on ..."; never blocks; no heap allocation.
    ///
    /// `EAGAIN` means the manager's queue is full (the message is dropped, as sd_notify
    /// would); a short send cannot happen for a datagram socket.
    pub fn notify(&self, msg: &[u8]) -> nix::Result<()> {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        let sent = sendto(self.fd.as_raw_fd(), msg, &self.addr, flags)?;
        if sent == msg.len() {
            Ok(())
        } else {
            Err(Errno::EMSGSIZE)
        }
    }
}

/// Half of $WATCHDOG_USEC (honouring $WATCHDOG_PID if set: only when it equals our pid), None if unset/invalid.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_from(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

fn parse_u64(v: &OsStr) -> Option<u64> {
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

fn watchdog_from(usec: Option<&OsStr>, pid: Option<&OsStr>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if parse_u64(pid)? != u64::from(own_pid) {
            return None;
        }
    }
    let usec = parse_u64(usec?)?;
    if usec == 0 {
        return None;
    }
    // Half the limit, as sd_watchdog_enabled(3) advises; never under a millisecond (a
    // WATCHDOG_USEC of 1 would make every turn of the loop a watchdog turn: a busy loop).
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn recv(sock: &UnixDatagram) -> Vec<u8> {
        let mut buf = [0u8; 512];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn unset_or_empty_is_none() {
        assert!(Notifier::from_value(None).unwrap().is_none());
        assert!(Notifier::from_value(Some(os(""))).unwrap().is_none());
    }

    #[test]
    fn unsupported_forms_are_errors() {
        assert_eq!(
            Notifier::from_value(Some(os("vsock:2:1234"))).unwrap_err(),
            Errno::EAFNOSUPPORT
        );
        assert_eq!(
            Notifier::from_value(Some(os("relative/path"))).unwrap_err(),
            Errno::EAFNOSUPPORT
        );
        let long = format!("/{}", "x".repeat(200));
        assert_eq!(
            Notifier::from_value(Some(os(&long))).unwrap_err(),
            Errno::ENAMETOOLONG
        );
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("tether-notify-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_value(Some(path.as_os_str()))
            .unwrap()
            .unwrap();
        n.notify(b"READY=1\nSTATUS=listening").unwrap();
        assert_eq!(recv(&server), b"READY=1\nSTATUS=listening");
        n.notify(b"WATCHDOG=1").unwrap();
        assert_eq!(recv(&server), b"WATCHDOG=1");
        drop(server);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!(
            "tether-notify-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_value(Some(os(&format!("@{name}"))))
            .unwrap()
            .unwrap();
        n.notify(b"STOPPING=1").unwrap();
        assert_eq!(recv(&server), b"STOPPING=1");
    }

    #[test]
    fn nobody_listening_is_an_error_not_a_hang() {
        let n = Notifier::from_value(Some(os("/nonexistent-dir-tether/notify.sock")))
            .unwrap()
            .unwrap();
        assert!(n.notify(b"READY=1").is_err());
    }

    #[test]
    fn socket_is_cloexec_and_nonblocking() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
        let n = Notifier::from_value(Some(os("@tether-flags")))
            .unwrap()
            .unwrap();
        let fdflags = FdFlag::from_bits_truncate(fcntl(&n.fd, FcntlArg::F_GETFD).unwrap());
        assert!(fdflags.contains(FdFlag::FD_CLOEXEC));
        let flflags = OFlag::from_bits_truncate(fcntl(&n.fd, FcntlArg::F_GETFL).unwrap());
        assert!(flflags.contains(OFlag::O_NONBLOCK));
    }

    #[test]
    fn watchdog_parsing() {
        let half = Some(Duration::from_millis(200));
        assert_eq!(watchdog_from(Some(os("400000")), None, 42), half);
        assert_eq!(watchdog_from(Some(os("400000")), Some(os("")), 42), half);
        assert_eq!(watchdog_from(Some(os("400000")), Some(os("42")), 42), half);
        assert_eq!(watchdog_from(Some(os("400000")), Some(os("43")), 42), None);
        assert_eq!(watchdog_from(Some(os("400000")), Some(os("x")), 42), None);
        assert_eq!(watchdog_from(None, None, 42), None);
        assert_eq!(watchdog_from(Some(os("")), None, 42), None);
        assert_eq!(watchdog_from(Some(os("0")), None, 42), None);
        let ms = Some(Duration::from_millis(1));
        assert_eq!(
            watchdog_from(Some(os("1")), None, 42),
            ms,
            "not a busy loop"
        );
        assert_eq!(watchdog_from(Some(os("-5")), None, 42), None);
        assert_eq!(watchdog_from(Some(os("abc")), None, 42), None);
    }
}
