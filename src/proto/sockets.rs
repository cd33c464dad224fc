//! One item of the SOCKETS reply: what `sys::net::socket_info` read back from a socket,
//! written as a JSON object. Plain data in, bytes out; no I/O, no heap.

use super::json;
use super::wbuf::WBuf;
use core::fmt::{self, Write};

/// A socket as SOCKETS shows it. `None` or -1: the option could not be read.
#[derive(Debug, Default)]
pub struct SocketInfo {
    /// `ip:port`, a Unix path, `(unnamed)`, or `?` when getsockname failed.
    pub addr: heapless::Vec<u8, 128>,
    pub accept_conn: Option<bool>,
    pub reuse_addr: Option<bool>,
    pub rcvbuf: i64,
    pub sndbuf: i64,
    /// SO_BINDTODEVICE; empty when not bound.
    pub device: heapless::Vec<u8, 16>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
