//! Network interfaces, read with ioctl(2) into fixed buffers (getifaddrs(3) would malloc):
//! the IPv4 address list (SIOCGIFCONF), one interface's flags / index / broadcast / MAC,
//! and IPv6 addresses (with their flags: link-local, tentative) from /proc/net/if_inet6.

use crate::limits::{IFNAME_MAX, MAX_ADDRS};
use nix::libc;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

pub type IfName = heapless::String<IFNAME_MAX>;

/// A throwaway datagram socket to issue interface ioctls on.
fn ctl_socket() -> Option<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()
}

fn name_of(raw: &[libc::c_char]) -> IfName {
    let mut n = IfName::new();
    for &c in raw.iter().take_while(|&&c| c != 0) {
        let _ = n.push(char::from(c as u8));
    }
    n
}

fn ifreq_for(name: &str) -> Option<libc::ifreq> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return None;
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Some(r)
}

fn ioctl_ifreq(fd: &OwnedFd, req: libc::c_ulong, r: &mut libc::ifreq) -> bool {
    // SAFETY: `r` is a valid, initialised ifreq that outlives the call; the request codes
    // used here read or fill exactly one ifreq.
    unsafe { libc::ioctl(fd.as_raw_fd(), req as _, r as *mut libc::ifreq) == 0 }
}

fn sockaddr_v4(sa: &libc::sockaddr) -> Option<Ipv4Addr> {
    if i32::from(sa.sa_family) != libc::AF_INET {
        return None;
    }
    // SAFETY: the family says this sockaddr is a sockaddr_in, which fits in a sockaddr.
    let sin: libc::sockaddr_in =
        unsafe { std::ptr::read_unaligned((sa as *const libc::sockaddr).cast()) };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

/// Everything the beacon needs to know about one interface right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfInfo {
    pub index: u32,
    pub up: bool,
    pub running: bool,
    pub loopback: bool,
    pub addr: Option<Ipv4Addr>,
    pub broadcast: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
}

/// Reads one interface; None when it does not exist.
pub fn info(name: &str) -> Option<IfInfo> {
    let fd = ctl_socket()?;
    let mut r = ifreq_for(name)?;
    if !ioctl_ifreq(&fd, libc::SIOCGIFINDEX as _, &mut r) {
        return None;
    }
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let index = unsafe { r.ifr_ifru.ifru_ifindex } as u32;
    let mut r = ifreq_for(name)?;
    let flags = if ioctl_ifreq(&fd, libc::SIOCGIFFLAGS as _, &mut r) {
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        i32::from(unsafe { r.ifr_ifru.ifru_flags })
    } else {
        0
    };
    let addr_of = |req: libc::c_ulong| {
        let mut r = ifreq_for(name)?;
        if !ioctl_ifreq(&fd, req, &mut r) {
            return None;
        }
        // SAFETY: the address requests fill a sockaddr member of the union.
        sockaddr_v4(unsafe { &r.ifr_ifru.ifru_addr })
    };
    let mac = {
        let mut r = ifreq_for(name)?;
        if ioctl_ifreq(&fd, libc::SIOCGIFHWADDR as _, &mut r) {
            // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
            let sa = unsafe { r.ifr_ifru.ifru_hwaddr };
            let mut m = [0u8; 6];
            for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
                *d = *s as u8;
            }
            (m != [0; 6]).then_some(m)
        } else {
            None
        }
    };
    Some(IfInfo {
        index,
        up: flags & libc::IFF_UP != 0,
        running: flags & libc::IFF_RUNNING != 0,
        loopback: flags & libc::IFF_LOOPBACK != 0,
        addr: addr_of(libc::SIOCGIFADDR as _),
        broadcast: if flags & libc::IFF_BROADCAST != 0 {
            addr_of(libc::SIOCGIFBRDADDR as _)
        } else {
            None
        },
        mac,
    })
}

/// Every interface with an IPv4 address, with that address (SIOCGIFCONF).
pub fn ipv4_addrs(out: &mut heapless::Vec<(IfName, IpAddr), MAX_ADDRS>) {
    let Some(fd) = ctl_socket() else { return };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut reqs: [libc::ifreq; MAX_ADDRS] = unsafe { std::mem::zeroed() };
    let mut conf = libc::ifconf {
        ifc_len: std::mem::size_of_val(&reqs) as libc::c_int,
        ifc_ifcu: libc::__c_anonymous_ifc_ifcu {
            ifcu_req: reqs.as_mut_ptr(),
        },
    };
    // SAFETY: `conf` points at `reqs`, valid for `ifc_len` bytes for the whole call; the
    // kernel writes at most that many bytes and sets `ifc_len` to what it wrote.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFCONF as _, &mut conf) };
    if r != 0 {
        return;
    }
    let n = (conf.ifc_len as usize / std::mem::size_of::<libc::ifreq>()).min(MAX_ADDRS);
    for r in &reqs[..n] {
        // SAFETY: SIOCGIFCONF fills each entry's address member.
        if let Some(a) = sockaddr_v4(unsafe { &r.ifr_ifru.ifru_addr }) {
            let _ = out.push((name_of(&r.ifr_name), IpAddr::V4(a)));
        }
    }
}

/// Calls `f(name, addr, flags)` for every line of /proc/net/if_inet6
/// (`hex32 idx plen scope flags name`). No heap.
fn each_inet6(mut f: impl FnMut(&[u8], Ipv6Addr, u32) -> bool) {
    let mut buf = [0u8; 4096];
    let Some(n) = super::read_small("/proc/net/if_inet6", &mut buf) else {
        return;
    };
    for line in buf[..n].split(|&b| b == b'\n') {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let (Some(hex), Some(flags), Some(name)) = (words.next(), words.nth(3), words.next())
        else {
            continue;
        };
        let mut bytes = [0u8; 16];
        let flags = core::str::from_utf8(flags)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok());
        if hex.len() == 32 && crate::proto::hex::decode_lower(hex, &mut bytes) {
            if let Some(flags) = flags {
                if !f(name, Ipv6Addr::from(bytes), flags) {
                    return;
                }
            }
        }
    }
}

/// IPv6 addresses from /proc/net/if_inet6.
pub fn ipv6_addrs(out: &mut heapless::Vec<(IfName, IpAddr), MAX_ADDRS>) {
    each_inet6(|name, a, _| {
        let mut nm = IfName::new();
        for &c in name {
            let _ = nm.push(char::from(c));
        }
        out.push((nm, IpAddr::V6(a))).is_ok()
    });
}

/// Kernel address flags (include/uapi/linux/if_addr.h): not usable as a source yet/ever.
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;

/// The interface's IPv6 link-local address: (the usable one, if any; whether one is
/// still tentative, i.e. duplicate address detection has not finished).
pub fn link_local_state(name: &str) -> (Option<Ipv6Addr>, bool) {
    let (mut usable, mut tentative) = (None, false);
    each_inet6(|n, a, flags| {
        if n == name.as_bytes() && a.segments()[0] & 0xffc0 == 0xfe80 {
            if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0 {
                usable = Some(a);
                return false;
            }
            tentative |= flags & IFA_F_DADFAILED == 0;
        }
        true
    });
    (usable, tentative)
}

/// The interface's usable IPv6 link-local address (fe80::/10, duplicate address
/// detection finished), if it has one.
pub fn link_local(name: &str) -> Option<Ipv6Addr> {
    link_local_state(name).0
}

/// The name of interface `index` (for a scoped IPv6 address), if it exists.
pub fn name_of_index(index: u32) -> Option<IfName> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    (!p.is_null()).then(|| name_of(&buf))
}

/// The default beacon interface: the first that is up, not loopback, and has an IPv4
/// broadcast address; otherwise the first up, non-loopback one with an IPv6 link-local
/// address.
pub fn default_beacon_iface() -> Option<IfName> {
    let usable = |n: &str| info(n).filter(|i| i.up && !i.loopback);
    let mut v = heapless::Vec::new();
    ipv4_addrs(&mut v);
    if let Some(n) = v
        .iter()
        .map(|(n, _)| n)
        .find(|n| usable(n).is_some_and(|i| i.broadcast.is_some()))
    {
        return Some(n.clone());
    }
    let mut v6 = heapless::Vec::new();
    ipv6_addrs(&mut v6);
    v6.iter()
        .map(|(n, _)| n)
        .find(|n| {
            let (ll, tentative) = link_local_state(n);
            usable(n).is_some() && (ll.is_some() || tentative)
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_flagged() {
        let lo = info("lo").expect("lo exists");
        assert!(lo.loopback && lo.up);
        assert_eq!(lo.addr, Some(Ipv4Addr::LOCALHOST));
        let mut v = heapless::Vec::new();
        ipv4_addrs(&mut v);
        assert!(v
            .iter()
            .any(|(n, a)| n.as_str() == "lo" && *a == IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(info("nosuchif0").is_none());
    }
}
