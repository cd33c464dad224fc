//! One item of the SOCKETS reply: what `sys::net::socket_info` read back from a socket,
//! written as a JSON object. Plain data in, bytes out; no I/O, no heap.

use super::json;
use super::wbuf::WBuf;
use crate::limits::{IFNAME_MAX, SOCKET_ADDR_TEXT_MAX};
use core::fmt::{self, Write};

/// A socket as SOCKETS shows it. `None` or -1: the option could not be read.
#[derive(Debug, Default)]
pub struct SocketInfo {
    /// `ip:port`, a Unix path, `(unnamed)`, or `?` when getsockname failed.
    pub addr: heapless::Vec<u8, SOCKET_ADDR_TEXT_MAX>,
    pub accept_conn: Option<bool>,
    pub reuse_addr: Option<bool>,
    pub rcvbuf: i64,
    pub sndbuf: i64,
    /// SO_BINDTODEVICE; empty when not bound.
    pub device: heapless::Vec<u8, IFNAME_MAX>,
}

fn flag(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    }
}

impl SocketInfo {
    /// `{"kind":..,"addr":..,"accept_conn":..,"reuse_addr":..,"rcvbuf":..,"sndbuf":..,"device":..}`
    pub fn write(&self, w: &mut WBuf<'_>, kind: &str) -> fmt::Result {
        w.write_str("{\"kind\":")?;
        json::write_str(w, kind.as_bytes())?;
        w.write_str(",\"addr\":")?;
        json::write_str(w, &self.addr)?;
        write!(
            w,
            ",\"accept_conn\":{},\"reuse_addr\":{},\"rcvbuf\":{},\"sndbuf\":{},\"device\":",
            flag(self.accept_conn),
            flag(self.reuse_addr),
            self.rcvbuf,
            self.sndbuf
        )?;
        if self.device.is_empty() {
            w.write_str("null")?;
        } else {
            json::write_str(w, &self.device)?;
        }
        w.write_char('}')
    }
}

/// A socket that is not open, for what would have one (a beacon interface down or absent):
/// the same keys, null where a socket would answer, `device` and why (`state`).
pub fn write_none(w: &mut WBuf<'_>, kind: &str, device: &str, state: &str) -> fmt::Result {
    w.write_str("{\"kind\":")?;
    json::write_str(w, kind.as_bytes())?;
    w.write_str(
        ",\"addr\":null,\"accept_conn\":null,\"reuse_addr\":null,\"rcvbuf\":null,\
         \"sndbuf\":null,\"device\":",
    )?;
    json::write_str(w, device.as_bytes())?;
    w.write_str(",\"state\":")?;
    json::write_str(w, state.as_bytes())?;
    w.write_char('}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::BeaconState;
    use crate::limits::{IFNAME_MAX, SOCKETS_NET_ITEM_MAX, SOCKETS_UNIX_ITEM_MAX, SOCK_PATH_MAX};

    fn written(f: impl FnOnce(&mut WBuf<'_>) -> fmt::Result) -> usize {
        let mut b = [0u8; 1024];
        let mut w = WBuf::new(&mut b);
        f(&mut w).unwrap();
        w.len()
    }

    /// The worst names for each escaping: `é` (`\u00e9`, 3 times its bytes) and an emoji
    /// (a surrogate pair, 3 times) for text; `"` (twice) as the old bound assumed; and for a
    /// device name as the kernel may hold it, control bytes and bytes that are not UTF-8
    /// (`\u0001`, `\ufffd`: 6 times).
    fn worst_texts(len: usize) -> [Vec<u8>; 3] {
        let fill = |unit: &str| {
            let mut s = unit.repeat(len / unit.len());
            s.push_str(&"/".repeat(len - s.len()));
            s.into_bytes()
        };
        [fill("é"), fill("😀"), fill("\"")]
    }

    #[test]
    fn items_fit_their_bounds() {
        let worst = |addr: &[u8], device: &[u8]| {
            let mut s = SocketInfo {
                accept_conn: Some(false),
                reuse_addr: Some(false),
                rcvbuf: i32::MIN.into(),
                sndbuf: i32::MIN.into(),
                ..SocketInfo::default()
            };
            s.addr.extend_from_slice(addr).unwrap();
            s.device.extend_from_slice(device).unwrap();
            s
        };
        let mut widest = 0;
        for path in worst_texts(SOCK_PATH_MAX) {
            assert_eq!(path.len(), SOCK_PATH_MAX);
            let unix = worst(&path, b"");
            for kind in ["unix-listen", "unix-publish", "unix-client"] {
                let n = written(|w| unix.write(w, kind));
                assert!(n <= SOCKETS_UNIX_ITEM_MAX, "{kind}: {n}");
                widest = widest.max(n);
            }
        }
        // `/` and 53 `é`: 319 bytes of path.
        assert!(widest > 128 + 2 + 2 * SOCK_PATH_MAX, "{widest}");
        let v6 = std::net::SocketAddrV6::new([0xffff; 8].into(), 65535, 0, u32::MAX).to_string();
        assert_eq!(v6.len(), 58, "{v6}");
        let [e, emoji, quote] = worst_texts(IFNAME_MAX);
        let devices = [
            vec![1; IFNAME_MAX],
            vec![0xff; IFNAME_MAX],
            e.clone(),
            emoji.clone(),
            quote.clone(),
        ];
        for device in &devices {
            let net = worst(v6.as_bytes(), device);
            for kind in ["tcp-listen", "http-listen", "udp-beacon", "tcp-client"] {
                let n = written(|w| net.write(w, kind));
                assert!(n <= SOCKETS_NET_ITEM_MAX, "{kind}: {n}");
            }
        }
        // A link without a socket names it by its `--iface` name: text without a control
        // character.
        for device in [e, emoji, quote] {
            let device = String::from_utf8(device).unwrap();
            for state in [
                BeaconState::Off,
                BeaconState::Up,
                BeaconState::Down,
                BeaconState::Absent,
            ] {
                let n = written(|w| write_none(w, "udp-beacon", &device, state.as_str()));
                assert!(n <= SOCKETS_NET_ITEM_MAX, "{state:?}: {n}");
            }
        }
    }

    #[test]
    fn writes_one_json_object() {
        let mut s = SocketInfo {
            accept_conn: Some(true),
            rcvbuf: 4,
            sndbuf: -1,
            ..SocketInfo::default()
        };
        s.addr.extend_from_slice(b"/run/a\"b").unwrap();
        let mut b = [0u8; 256];
        let mut w = WBuf::new(&mut b);
        s.write(&mut w, "unix-listen").unwrap();
        assert_eq!(
            core::str::from_utf8(w.as_bytes()).unwrap(),
            "{\"kind\":\"unix-listen\",\"addr\":\"/run/a\\\"b\",\"accept_conn\":true,\
             \"reuse_addr\":null,\"rcvbuf\":4,\"sndbuf\":-1,\"device\":null}"
        );
        s.device.extend_from_slice(b"eth0").unwrap();
        let mut w = WBuf::new(&mut b);
        s.write(&mut w, "udp-beacon").unwrap();
        assert!(w.as_bytes().ends_with(b"\"device\":\"eth0\"}"));
    }
}
