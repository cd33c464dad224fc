//! Network interfaces, read with ioctl(2) into fixed buffers (getifaddrs(3) would malloc):
//! the IPv4 address list (SIOCGIFCONF), one interface's flags / index / broadcast / MAC,
//! IPv6 addresses (with their flags: link-local, tentative) from /proc/net/if_inet6, and
//! every interface's name from /proc/net/dev (both read in chunks, whatever their length).
//! Names are the kernel's bytes: looked up as they are, shown as UTF-8 (U+FFFD for a byte
//! that is not).

use crate::limits::{IFNAME_MAX, MAX_ADDRS, PROC_LINE_MAX};
use nix::errno::Errno;
use nix::libc;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

pub type IfName = heapless::String<IFNAME_MAX>;
pub use crate::agent::ShownIfName;

/// A throwaway datagram socket to issue interface ioctls on (never read, but made as
/// every fd of the agent is: non-blocking and close-on-exec). Err: none can be made now
/// ([`super::short`]).
fn ctl_socket() -> Result<Option<OwnedFd>, Errno> {
    use nix::sys::socket::{socket, AddressFamily, SockType};
    let flags = super::net::SOCK_FLAGS;
    match socket(AddressFamily::Inet, SockType::Datagram, flags, None) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if super::short(e) => Err(e),
        Err(_) => Ok(None),
    }
}

/// An interface name as the kernel holds it (up to IFNAMSIZ - 1 bytes, any but NUL, `/`,
/// `:` and white space), to show: see [`super::push_lossy`].
fn display_name<const N: usize>(bytes: &[u8]) -> heapless::String<N> {
    let mut n = heapless::String::new();
    super::push_lossy(&mut n, bytes);
    n
}

/// A NUL-terminated name in a kernel buffer, to show.
fn name_of<const N: usize>(raw: &[libc::c_char]) -> heapless::String<N> {
    let mut bytes = [0u8; libc::IFNAMSIZ];
    let mut n = 0;
    for (d, &c) in bytes.iter_mut().zip(raw.iter().take_while(|&&c| c != 0)) {
        *d = c as u8;
        n += 1;
    }
    display_name(&bytes[..n])
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

/// Reads one interface; None when it does not exist (or cannot be looked at now: see
/// [`look`]).
pub fn info(name: &str) -> Option<IfInfo> {
    look(name).ok().flatten()
}

/// [`info`], or Err when the agent cannot look now (out of descriptors or memory): the
/// interface is then as it was, not absent.
pub fn look(name: &str) -> Result<Option<IfInfo>, Errno> {
    Ok(ctl_socket()?.and_then(|fd| info_with(&fd, name)))
}

/// The interface a command line names (`scan -i`, a scope in `ctl -c`), or one
/// `NAME: ...` line to follow the option: 69 when it is not there (not a typo: it may come
/// up later), 71 when it cannot be looked at now.
pub fn named(name: &str) -> Result<IfInfo, crate::exit::Fatal> {
    use crate::exit::{Fatal, EX_OSERR, EX_UNAVAILABLE};
    match look(name) {
        Ok(Some(i)) => Ok(i),
        Ok(None) => Err(Fatal::new(
            EX_UNAVAILABLE,
            format!("{name}: no such interface"),
        )),
        Err(e) => {
            let e = super::SysError::new("looking it up", e);
            Err(Fatal::new(EX_OSERR, format!("{name}: {e}")))
        }
    }
}

fn info_with(fd: &OwnedFd, name: &str) -> Option<IfInfo> {
    let mut r = ifreq_for(name)?;
    if !ioctl_ifreq(fd, libc::SIOCGIFINDEX as _, &mut r) {
        return None;
    }
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let index = unsafe { r.ifr_ifru.ifru_ifindex } as u32;
    let mut r = ifreq_for(name)?;
    let flags = if ioctl_ifreq(fd, libc::SIOCGIFFLAGS as _, &mut r) {
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        i32::from(unsafe { r.ifr_ifru.ifru_flags })
    } else {
        0
    };
    let addr_of = |req: libc::c_ulong| {
        let mut r = ifreq_for(name)?;
        if !ioctl_ifreq(fd, req, &mut r) {
            return None;
        }
        // SAFETY: the address requests fill a sockaddr member of the union.
        sockaddr_v4(unsafe { &r.ifr_ifru.ifru_addr })
    };
    let mac = {
        let mut r = ifreq_for(name)?;
        if ioctl_ifreq(fd, libc::SIOCGIFHWADDR as _, &mut r) {
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
        // An address added without `brd` reads back as 0.0.0.0: no broadcast address (a
        // probe sent there would go to this host).
        broadcast: if flags & libc::IFF_BROADCAST != 0 {
            addr_of(libc::SIOCGIFBRDADDR as _).filter(|b| !b.is_unspecified())
        } else {
            None
        },
        mac,
    })
}

/// Every interface with an IPv4 address, with that address (SIOCGIFCONF).
pub fn ipv4_addrs(out: &mut heapless::Vec<(ShownIfName, IpAddr), MAX_ADDRS>) {
    let Ok(Some(fd)) = ctl_socket() else { return };
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
            // An address added under a label (`ip addr add ... label eth0:1`) is listed
            // under it; the interface is the name before the colon (no name has one).
            let mut name: ShownIfName = name_of(&r.ifr_name);
            if let Some(i) = name.find(':') {
                name.truncate(i);
            }
            let _ = out.push((name, IpAddr::V4(a)));
        }
    }
}

/// Is `a` an IPv4 address of interface `name` (its first or another, under a label or
/// not)? True when the list was too long to read whole (then it cannot tell).
pub fn has_ipv4(name: &str, a: Ipv4Addr) -> bool {
    let mut all = heapless::Vec::new();
    ipv4_addrs(&mut all);
    all.is_full()
        || all
            .iter()
            .any(|(n, ip)| *ip == IpAddr::V4(a) && n.as_str() == name)
}

/// Calls `f(name, addr, flags)` for every line of /proc/net/if_inet6
/// (`hex32 idx plen scope flags name`). No heap.
fn each_inet6(mut f: impl FnMut(&[u8], Ipv6Addr, u32) -> bool) -> Result<(), Errno> {
    each_line("/proc/net/if_inet6", |line| {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let (Some(hex), Some(flags), Some(name)) = (words.next(), words.nth(3), words.next())
        else {
            return true;
        };
        let mut bytes = [0u8; 16];
        let flags = core::str::from_utf8(flags)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok());
        match flags {
            Some(flags) if hex.len() == 32 && crate::proto::hex::decode_lower(hex, &mut bytes) => {
                f(name, Ipv6Addr::from(bytes), flags)
            }
            _ => true,
        }
    })
}

/// Calls `f` for every line (without its newline) of a /proc file of any length, read in
/// chunks on the stack, until `f` returns false. No heap. Err: it cannot be opened or read
/// now ([`super::unreadable_now`]); a file that is not there has no lines.
fn each_line(path: &str, mut f: impl FnMut(&[u8]) -> bool) -> Result<(), Errno> {
    use std::io::Read;
    // Not now: an error; any other (not there, not allowed): no lines.
    let failed = |e: std::io::Error| {
        let e = super::errno_of(&e);
        if super::unreadable_now(e) {
            Err(e)
        } else {
            Ok(())
        }
    };
    let mut file = match super::open_read(path) {
        Ok(file) => file,
        Err(e) => return failed(e),
    };
    let mut buf = [0u8; 2 * PROC_LINE_MAX];
    // `buf[..held]`: the start of a line whose end has not been read yet.
    let (mut held, mut skipping) = (0, false);
    loop {
        let n = match file.read(&mut buf[held..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return failed(e),
        };
        if n == 0 {
            // The last line, if it has no newline.
            if held > 0 && !skipping {
                f(&buf[..held]);
            }
            return Ok(());
        }
        let end = held + n;
        let mut start = 0;
        while let Some(i) = buf[start..end].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + i];
            if !std::mem::take(&mut skipping) && line.len() <= PROC_LINE_MAX && !f(line) {
                return Ok(());
            }
            start += i + 1;
        }
        buf.copy_within(start..end, 0);
        held = end - start;
        if held > PROC_LINE_MAX {
            // Too long to be a line we read: drop it up to its newline.
            (held, skipping) = (0, true);
        }
    }
}

/// IPv6 addresses from /proc/net/if_inet6.
pub fn ipv6_addrs(out: &mut heapless::Vec<(ShownIfName, IpAddr), MAX_ADDRS>) {
    let _ = each_inet6(|name, a, _| out.push((display_name(name), IpAddr::V6(a))).is_ok());
}

/// Kernel address flags (include/uapi/linux/if_addr.h): not usable as a source yet/ever.
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;

/// The interface's IPv6 link-local address: (the usable one, if any; whether one is
/// still tentative, i.e. duplicate address detection has not finished).
/// Err: /proc/net/if_inet6 cannot be read now ([`super::unreadable_now`]); a kernel without IPv6 (no such
/// file) has none.
pub fn link_local_state(name: &str) -> Result<(Option<Ipv6Addr>, bool), Errno> {
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
    })?;
    Ok((usable, tentative))
}

/// The interface's usable IPv6 link-local address (fe80::/10, duplicate address
/// detection finished), if it has one.
pub fn link_local(name: &str) -> Option<Ipv6Addr> {
    link_local_state(name).ok()?.0
}

/// The name of interface `index` (for a scoped IPv6 address), if it exists.
pub fn name_of_index(index: u32) -> Option<IfName> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    (!p.is_null()).then(|| name_of(&buf))
}

/// Calls `f` with the name of every interface (/proc/net/dev: all of them, in the kernel's
/// order, whatever their addresses) until it returns false. Err: /proc/net/dev cannot be
/// read now ([`super::unreadable_now`]).
fn each_iface(mut f: impl FnMut(&[u8]) -> bool) -> Result<(), Errno> {
    // Two heading lines without a `:`, then `  name: counters…` (a name holds no `:` nor
    // white space).
    each_line("/proc/net/dev", |line| {
        match line.iter().position(|&b| b == b':') {
            Some(i) => f(line[..i].trim_ascii_start()),
            None => true,
        }
    })
}

/// A name an interface may have and tether takes as text (`--iface`, `scan -i`, the
/// default beacon interface): what Linux allows (1 to IFNAMSIZ - 1 bytes, not `.` or
/// `..`, no `/`, `:` or white space) less what cannot be shown as it is
/// ([`super::shows_as_is`]: control characters, ASCII's and C1's, and bidirectional
/// formatting characters), and not beginning with `-`, which ip(8) takes for an option and
/// here is a value left out (`--iface --no-beacon` waited for an interface of that name).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('-')
        && n.len() <= IFNAME_MAX
        && n != "."
        && n != ".."
        && super::shows_as_is(n)
        && !n.contains([' ', '/', ':'])
}

/// The default beacon interface, chosen among all interfaces: the first that is up with
/// a carrier, not loopback, and has an IPv4 broadcast address; otherwise the first up, non-loopback one
/// with an IPv6 link-local address (or one still tentative). A name that is not UTF-8 or
/// not [`valid_name`] (a control character) is passed over. Runs at start-up, and then
/// once per interval while none qualifies (no heap). Err: the interfaces cannot be looked
/// at now ([`super::unreadable_now`]), which is not "none qualifies".
pub fn default_beacon_iface() -> Result<Option<IfName>, Errno> {
    // Up with a carrier (`ip link`'s LOWER_UP): a static eth0 with its cable out is not
    // the default while wlan0 is associated.
    let usable = |n: &str| -> Result<Option<IfInfo>, Errno> {
        Ok(look(n)?.filter(|i| i.up && i.running && !i.loopback))
    };
    let find = |pick: &dyn Fn(&str) -> Result<bool, Errno>| {
        let (mut found, mut failed) = (None, None);
        each_iface(|raw| {
            match core::str::from_utf8(raw) {
                Ok(n) if valid_name(n) => match pick(n) {
                    Ok(true) => found = Some(display_name(raw)),
                    Ok(false) => {}
                    Err(e) => failed = Some(e),
                },
                _ => {}
            }
            found.is_none() && failed.is_none()
        })?;
        failed.map_or(Ok(found), Err)
    };
    let broadcast = |n: &str| Ok(usable(n)?.is_some_and(|i| i.broadcast.is_some()));
    if let Some(n) = find(&broadcast)? {
        return Ok(Some(n));
    }
    find(&|n| {
        let (ll, tentative) = link_local_state(n)?;
        Ok(usable(n)?.is_some() && (ll.is_some() || tentative))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_linux_allows_less_control_characters() {
        for ok in [
            "eth0",
            "wlan0",
            "br-lan",
            "e.1",
            "k\u{fc}che",
            "\u{a0}x",
            "123456789012345",
        ] {
            assert!(valid_name(ok), "{ok:?}");
        }
        let long = "1234567890123456";
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "e\u{1b}[2Jx",
            "a\u{7f}",
            "e\u{9b}2Jx",
            "a\u{85}b",
            long,
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

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

    #[test]
    fn names_keep_their_utf8_and_show_other_bytes_as_replacement_chars() {
        let shown = |b: &[u8]| display_name::<{ crate::limits::IFNAME_SHOWN_MAX }>(b);
        assert_eq!(shown("\u{e9}th0".as_bytes()).as_str(), "\u{e9}th0");
        assert_eq!(shown(b"a\xffb\xc3").as_str(), "a\u{fffd}b\u{fffd}");
        // Never cut as shown: fifteen bytes that are not UTF-8 are fifteen U+FFFD (an
        // IfName, the name to look up, holds five).
        assert_eq!(shown(&[0xff; 15]).as_str(), "\u{fffd}".repeat(15));
        assert_eq!(display_name::<IFNAME_MAX>(&[0xff; 15]).len(), 15);
        let raw: Vec<libc::c_char> = b"\xc3\xa9th0\0junk".iter().map(|&b| b as _).collect();
        assert_eq!(name_of::<IFNAME_MAX>(&raw).as_str(), "\u{e9}th0");
    }

    #[test]
    fn each_line_reads_a_file_of_any_length_in_chunks() {
        let mut want: Vec<Vec<u8>> = (0..400)
            .map(|i| format!("line {i} {}", "x".repeat(i % 97)).into_bytes())
            .collect();
        want.insert(7, vec![b'L'; 3000]);
        want.push(b"last, without a newline".to_vec());
        let path = std::env::temp_dir().join(format!("tether-each-line-{}", std::process::id()));
        std::fs::write(&path, want.join(&b'\n')).unwrap();
        let mut got = Vec::new();
        let _ = each_line(path.to_str().unwrap(), |l| {
            got.push(l.to_vec());
            true
        });
        let mut stopped = 0;
        let _ = each_line(path.to_str().unwrap(), |_| {
            stopped += 1;
            stopped < 3
        });
        std::fs::remove_file(&path).unwrap();
        want.remove(7); // longer than PROC_LINE_MAX: skipped whole
        assert_eq!(got, want);
        assert_eq!(stopped, 3);
    }

    #[test]
    fn every_interface_is_walked_and_loopback_is_never_the_default() {
        let mut names = Vec::new();
        each_iface(|n| {
            names.push(n.to_vec());
            true
        })
        .unwrap();
        assert!(names.iter().any(|n| n == b"lo"), "{names:?}");
        assert_ne!(default_beacon_iface().unwrap().as_deref(), Some("lo"));
    }
}
