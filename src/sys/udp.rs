//! Datagram sockets for the beacon and the scanner: SO_BROADCAST (IPv4) or a link-local
//! multicast interface with hop limit 1 (IPv6), and SO_BINDTODEVICE set once, before
//! bind, so traffic enters and leaves through exactly one interface. Addresses in and out
//! are `std::net::SocketAddr`; an IPv6 one carries its scope (interface index).

use super::net::{set_int, SOCK_FLAGS};
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    self, bind, sendto, setsockopt, sockopt, AddressFamily, MsgFlags, SockType, SockaddrIn,
    SockaddrIn6, SockaddrLike,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
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
    // Each datagram's local address to answer from ([`Received::local`]); best effort (an
    // emulator may refuse it; the interface's first address is used then).
    let _ = setsockopt(&fd, sockopt::Ipv4PacketInfo, &true);
    let sa = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    bind(fd.as_raw_fd(), &sa).map_err(|e| ("bind", e))?;
    Ok(fd)
}

/// An IPv6 UDP socket bound to `[::]:port` on one device (IPV6_V6ONLY), sending its
/// multicast out of interface `index` with hop limit 1 (link-local only).
pub fn open6(device: &str, port: u16, index: u32) -> Result<OwnedFd, (&'static str, Errno)> {
    let fd = open6_any(Some(device), port)?;
    set_multicast6(fd.as_fd(), index)?;
    // Our own beacons would only wake us: do not loop them back.
    set_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)
        .map_err(|e| ("IPV6_MULTICAST_LOOP", e))?;
    Ok(fd)
}

/// IPV6_MULTICAST_IF = `index` and IPV6_MULTICAST_HOPS = 1.
pub fn set_multicast6(fd: BorrowedFd<'_>, index: u32) -> Result<(), (&'static str, Errno)> {
    set_int(
        fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_IF,
        index as i32,
    )
    .map_err(|e| ("IPV6_MULTICAST_IF", e))?;
    set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 1)
        .map_err(|e| ("IPV6_MULTICAST_HOPS", e))
}

/// An IPv6 UDP socket (IPV6_V6ONLY, hop limit 1 for multicast) bound to `[::]:port`,
/// tied to `device` when given (`tether scan`; the agent's sockets start from it).
pub fn open6_any(device: Option<&str>, port: u16) -> Result<OwnedFd, (&'static str, Errno)> {
    let fd = socket::socket(AddressFamily::Inet6, SockType::Datagram, SOCK_FLAGS, None)
        .map_err(|e| ("socket", e))?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|e| ("IPV6_V6ONLY", e))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| ("SO_REUSEADDR", e))?;
    // --rcvbuf / --sndbuf (set by the agent at start-up; unset in `tether scan`).
    super::net::apply_buf_sizes(fd.as_fd())?;
    if let Some(d) = device {
        bind_to_device(fd.as_fd(), d).map_err(|e| ("SO_BINDTODEVICE", e))?;
    }
    set_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 1)
        .map_err(|e| ("IPV6_MULTICAST_HOPS", e))?;
    let sa = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    bind(fd.as_raw_fd(), &sa).map_err(|e| ("bind", e))?;
    Ok(fd)
}

/// Asks for a receive buffer of `bytes` (SO_RCVBUFFORCE when permitted, which passes
/// net.core.rmem_max, else SO_RCVBUF); returns what the kernel granted.
pub fn grow_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) -> usize {
    if setsockopt(&fd, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &bytes);
    }
    nix::sys::socket::getsockopt(&fd, sockopt::RcvBuf).unwrap_or(0)
}

/// Sends one datagram to `to`. Over IPv4, SO_BROADCAST is set to `broadcast` first: an
/// answer meant for one peer is sent with it off, so that a source address the kernel
/// routes as a broadcast (a spoofed subnet or secondary-address broadcast, which no check
/// of ours can list in full) is refused (EACCES) instead of reaching the whole LAN.
/// Over IPv6 `src` is the source address (IPV6_PKTINFO): of several link-local addresses
/// the kernel might pick another than the one the datagram names.
pub fn send_to(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    to: SocketAddr,
    broadcast: bool,
    src: Option<Ipv6Addr>,
) -> Result<usize, Errno> {
    if to.is_ipv4() {
        setsockopt(&fd, sockopt::Broadcast, &broadcast)?;
    }
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    loop {
        let r = match (to, src) {
            (SocketAddr::V4(a), _) => sendto(fd.as_raw_fd(), buf, &SockaddrIn::from(a), flags),
            (SocketAddr::V6(a), None) => sendto(fd.as_raw_fd(), buf, &SockaddrIn6::from(a), flags),
            (SocketAddr::V6(a), Some(s)) => send_from6(fd, buf, a, s, flags.bits()),
        };
        match r {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// sendmsg(2) to `to` from `src` (an IPV6_PKTINFO message), by hand with a fixed
/// control buffer: nix's sendmsg builds its control messages in a Vec.
fn send_from6(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    to: SocketAddrV6,
    src: Ipv6Addr,
    flags: libc::c_int,
) -> Result<usize, Errno> {
    let sa = SockaddrIn6::from(to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsghdr and an in6_pktinfo (20 bytes), 8-byte aligned.
    let mut ctl = [0u64; SEND6_CTL_WORDS];
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: src.octets(),
        },
        ipi6_ifindex: 0,
    };
    // SAFETY: all-zero is a valid msghdr; the pointers set below (`sa`, `iov`, `ctl`) stay
    // valid for the call, and the one control message is written within `ctl` (checked at
    // compile time for the target: SEND6_CTL_WORDS).
    let r = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = sa.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = sa.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        let len = std::mem::size_of::<libc::in6_pktinfo>() as u32;
        msg.msg_controllen = libc::CMSG_SPACE(len) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IPV6;
        (*c).cmsg_type = libc::IPV6_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
        libc::sendmsg(fd.as_raw_fd(), &msg, flags)
    };
    Errno::result(r).map(|n| n as usize)
}

// The control buffers, in u64 words (8-byte aligned), and a check at compile time, for the
// target built, that what they must hold fits: a cmsghdr is 16 bytes on 64-bit targets and
// 12 on 32-bit ARM.
const SEND6_CTL_WORDS: usize = 6;
const RECV_CTL_WORDS: usize = 8;
// SAFETY (both): CMSG_SPACE only computes a size.
const _: () = assert!(
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) } as usize
        <= SEND6_CTL_WORDS * 8
);
const _: () = assert!(
    unsafe {
        libc::CMSG_SPACE(std::mem::size_of::<u32>() as u32)
            + libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32)
    } as usize
        <= RECV_CTL_WORDS * 8
);

/// A received source address as std's, with an IPv6 scope kept.
fn storage_to_std(sa: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(sa.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which fits in it.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((sa as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6, which fits in it.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned((sa as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                // As std keeps it: the field as it is (std's own conversions do not swap it).
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A datagram read by [`recv_from`].
pub struct Received {
    /// Its length; `buf` one byte larger than the largest datagram accepted lets the caller
    /// see oversized ones (`len == buf.len()`).
    pub len: usize,
    pub from: SocketAddr,
    /// The socket's count of datagrams the kernel dropped for want of buffer room, when
    /// SO_RXQ_OVFL is on.
    pub dropped: Option<u32>,
    /// The address of ours an answer to `from` goes out from (IP_PKTINFO's `ipi_spec_dst`:
    /// on a link with two subnets, the one `from` is in), when IP_PKTINFO is on.
    pub local: Option<Ipv4Addr>,
}

/// One datagram: Ok(None) when none is waiting. recvmsg(2) by hand with a fixed control
/// buffer: no heap, and no decoder for every kind of message.
pub fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Option<Received>, Errno> {
    loop {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for two messages (SO_RXQ_OVFL's u32, IP_PKTINFO's in_pktinfo), 8-byte aligned.
        let mut ctl = [0u64; RECV_CTL_WORDS];
        // SAFETY: all-zero is a valid msghdr; the pointers set below stay valid for the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut sa as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&ctl) as _;
        // SAFETY: `msg` describes buffers (`sa`, `buf`, `ctl`) that outlive the call.
        let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        let n = match Errno::result(r) {
            Ok(n) => n as usize,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (mut dropped, mut local) = (None, None);
        // SAFETY: CMSG_FIRSTHDR/NXTHDR give headers within `msg_controllen` bytes of
        // `ctl`, which the kernel filled; a payload is read only when the header's
        // cmsg_len covers it (under MSG_CTRUNC the kernel writes a last header whose
        // payload was cut: reading past it would read past `ctl`).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                let len = ((*c).cmsg_len as usize).saturating_sub(data as usize - c as usize);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if len >= 4 => {
                        dropped = Some(std::ptr::read_unaligned(data.cast::<u32>()));
                    }
                    (libc::IPPROTO_IP, libc::IP_PKTINFO)
                        if len >= std::mem::size_of::<libc::in_pktinfo>() =>
                    {
                        let p: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                        let a = Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr));
                        local = (!a.is_unspecified()).then_some(a);
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        match storage_to_std(&sa) {
            Some(from) => {
                return Ok(Some(Received {
                    len: n,
                    from,
                    dropped,
                    local,
                }))
            }
            None => continue,
        }
    }
}
