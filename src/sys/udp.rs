//! Datagram sockets for the beacon and the scanner: SO_BROADCAST, and SO_BINDTODEVICE set
//! once, before bind, so traffic enters and leaves through exactly one interface.

use super::net::SOCK_FLAGS;
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    self, bind, recvfrom, sendto, setsockopt, sockopt, AddressFamily, MsgFlags, SockType,
    SockaddrIn,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// SO_BINDTODEVICE without allocating (nix's wrapper takes an OsString). Unprivileged on
/// an unbound socket since Linux 5.7; a second call would need CAP_NET_RAW, so call once.
pub fn bind_to_device(fd: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let mut buf = [0u8; libc::IFNAMSIZ];
    if name.is_empty() || name.len() >= buf.len() {
        return Err(Errno::EINVAL);
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `buf` is valid for its whole length, NUL-terminated, and outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            buf.as_ptr().cast(),
            (name.len() + 1) as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// A UDP socket bound to `0.0.0.0:port`, optionally tied to one device, with
/// SO_BROADCAST and SO_REUSEADDR (agent and scanner may share the beacon port).
pub fn open(device: Option<&str>, port: u16) -> Result<OwnedFd, (&'static str, Errno)> {
    let fd = socket::socket(AddressFamily::Inet, SockType::Datagram, SOCK_FLAGS, None)
        .map_err(|e| ("socket", e))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(|e| ("SO_BROADCAST", e))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| ("SO_REUSEADDR", e))?;
    // --rcvbuf / --sndbuf (set by the agent at start-up; unset in `tether scan`).
    super::net::apply_buf_sizes(fd.as_fd())?;
    if let Some(d) = device {
        bind_to_device(fd.as_fd(), d).map_err(|e| ("SO_BINDTODEVICE", e))?;
    }
    let sa = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    bind(fd.as_raw_fd(), &sa).map_err(|e| ("bind", e))?;
    Ok(fd)
}

pub fn send_to(fd: BorrowedFd<'_>, buf: &[u8], to: SocketAddrV4) -> Result<usize, Errno> {
    let sa = SockaddrIn::from(to);
    loop {
        match sendto(
            fd.as_raw_fd(),
            buf,
            &sa,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// One datagram: Ok(None) when none is waiting. `buf` one byte larger than the largest
/// datagram you accept lets the caller see oversized ones (n == buf.len()).
pub fn recv_from(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<Option<(usize, SocketAddrV4)>, Errno> {
    loop {
        match recvfrom::<SockaddrIn>(fd.as_raw_fd(), buf) {
            Ok((n, Some(sa))) => return Ok(Some((n, SocketAddrV4::new(sa.ip(), sa.port())))),
            Ok((_, None)) => continue,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}
