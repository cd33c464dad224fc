//! Board facts from /proc and /sys: uptime, load, memory, temperature, hostname,
//! addresses, and the machine id. Every read goes into a stack buffer; nothing allocates.

use super::{iface, read_small};
use crate::agent::Board;
use crate::limits::{PROC_READ_MAX, TEMP_C_RANGE};

fn first_f32(b: &[u8]) -> Option<f32> {
    let w = b.split(|&c| c == b' ' || c == b'\n').next()?;
    crate::proto::decimal::parse(w).map(|x| x as f32)
}

/// A thermal zone's `temp`: an integer in millidegrees Celsius and a newline, as the kernel
/// writes it (`45000`, `-5000`), within [`TEMP_C_RANGE`]; anything else (a float, an
/// exponent, `nan`, a number out of range) is no temperature.
fn millidegrees(b: &[u8]) -> Option<f32> {
    let w = b.strip_suffix(b"\n").unwrap_or(b);
    let (sign, digits) = match w.strip_prefix(b"-") {
        Some(d) => (-1.0, d),
        None => (1.0, w),
    };
    let c = sign * f64::from(crate::proto::request::parse_u32(digits)?) / 1000.0;
    (TEMP_C_RANGE.0..=TEMP_C_RANGE.1)
        .contains(&c)
        .then_some(c as f32)
}

/// The whole seconds of `/proc/uptime`'s first field (`12345.67 ...`), read as an integer:
/// an f32 has 24 bits, so after 194 days of uptime it would step by 2 s, then 4 s, 8 s.
fn uptime_secs(b: &[u8]) -> Option<u64> {
    let w = b.split(|&c| c == b' ' || c == b'\n').next()?;
    let whole = w.split(|&c| c == b'.').next()?;
    core::str::from_utf8(whole).ok()?.parse().ok()
}

fn meminfo_kb(buf: &[u8], key: &[u8]) -> u64 {
    buf.split(|&c| c == b'\n')
        .find(|l| l.starts_with(key))
        .and_then(|l| {
            l[key.len()..]
                .split(|&c| c == b' ')
                .find(|w| !w.is_empty())
                .and_then(|w| core::str::from_utf8(w).ok()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Reads the board now. Missing files give zeros / None, never an error.
pub fn read(thermal: &str) -> Board {
    let mut b = Board::default();
    let mut buf = [0u8; PROC_READ_MAX];
    if let Some(n) = read_small("/proc/sys/kernel/hostname", &mut buf) {
        // As the kernel holds it (up to 64 bytes), less the line end.
        let name = &buf[..n];
        super::push_lossy(&mut b.host, name.strip_suffix(b"\n").unwrap_or(name));
    }
    if let Some(n) = read_small("/proc/uptime", &mut buf) {
        b.uptime_s = uptime_secs(&buf[..n]).unwrap_or(0);
    }
    if let Some(n) = read_small("/proc/loadavg", &mut buf) {
        let mut w = buf[..n].split(|&c| c == b' ');
        for slot in b.load.iter_mut() {
            *slot = w.next().and_then(first_f32).unwrap_or(0.0);
        }
    }
    if let Some(n) = read_small("/proc/meminfo", &mut buf) {
        b.mem_total_kb = meminfo_kb(&buf[..n], b"MemTotal:");
        b.mem_avail_kb = meminfo_kb(&buf[..n], b"MemAvailable:");
    }
    if let Some(n) = read_small(thermal, &mut buf) {
        b.temp_c = millidegrees(&buf[..n]);
    }
    iface::ipv4_addrs(&mut b.addrs);
    iface::ipv6_addrs(&mut b.addrs);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(first_f32(b"12345.67 999.0\n"), Some(12345.67));
        assert_eq!(millidegrees(b"45000\n"), Some(45.0));
        assert_eq!(millidegrees(b"-5500\n"), Some(-5.5));
        for odd in [
            &b"1e5"[..],
            b"99999999999999999999999",
            b"-300000",
            b"1000001",
            b"+42000",
            b"42000\r\n",
            b" 55000",
            b"nan",
            b"",
            b"-",
            b"45.5",
        ] {
            assert_eq!(millidegrees(odd), None, "{}", String::from_utf8_lossy(odd));
        }
        // Past 2^24 s (194 days) every second still counts.
        assert_eq!(uptime_secs(b"100036455.14 98.0\n"), Some(100036455));
        assert_eq!(uptime_secs(b"100036456.99 98.0\n"), Some(100036456));
        assert_eq!(uptime_secs(b"7 1\n"), Some(7));
        assert_eq!(uptime_secs(b"x.5 1\n"), None);
        let mi = b"MemTotal:        1000 kB\nMemFree: 5 kB\nMemAvailable:     750 kB\n";
        assert_eq!(meminfo_kb(mi, b"MemTotal:"), 1000);
        assert_eq!(meminfo_kb(mi, b"MemAvailable:"), 750);
        assert_eq!(meminfo_kb(mi, b"Nope:"), 0);
    }

    #[test]
    fn reads_this_machine() {
        let b = read("/nonexistent/thermal");
        assert!(b.uptime_s > 0);
        assert!(b.mem_total_kb > 0);
        assert_eq!(b.temp_c, None);
        assert!(!b.addrs.is_empty());
    }
}
