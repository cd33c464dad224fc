//! Board facts: the host name (uname), uptime (CLOCK_BOOTTIME), load and total memory
//! (sysinfo): system calls, so they are there without /proc too, and fewer of them than
//! files to open; memory (/proc/meminfo where it can be read), temperature (/sys),
//! addresses. Every read goes into a stack buffer; nothing allocates.

use super::{iface, read_small};
use crate::agent::Board;
use crate::limits::{PROC_READ_MAX, TEMP_C_RANGE};

/// A load average as /proc/loadavg writes it, from sysinfo's: the kernel keeps it in 11-bit
/// fixed point (sysinfo shifts it to 16 bits, nix divides), and /proc rounds it half up to
/// two decimals (`FIXED_1 / 200` added, then the integer and hundredths of the sum).
fn load_2dp(v: f64) -> f32 {
    let a = (v * 2048.0) as u64 + 10;
    let (int, hundredths) = (a >> 11, ((a & 2047) * 100) >> 11);
    (int as f64 + hundredths as f64 / 100.0) as f32
}

/// A thermal zone's `temp`: an integer in millidegrees Celsius and a newline, as the kernel
/// writes it (`45000`, `-5000`), within [`TEMP_C_RANGE`]; anything else (a float, an
/// exponent, `nan`, a number out of range) is no temperature. Rounded here, in integers, to
/// the tenth every surface shows (half away from zero: 47350 is 47.4, as printf rounds it;
/// an f32 of 47.35 is 47.3499... and showed 47.3), and never -0.0.
fn millidegrees(b: &[u8]) -> Option<f32> {
    let w = b.strip_suffix(b"\n").unwrap_or(b);
    let (sign, digits) = match w.strip_prefix(b"-") {
        Some(d) => (-1.0, d),
        None => (1.0, w),
    };
    let m = crate::proto::request::parse_u32(digits)?;
    let c = sign * f64::from(m) / 1000.0;
    let tenths = f64::from(m / 100 + u32::from(m % 100 >= 50));
    // `+ 0.0`: a reading that rounds to zero is 0.0, not -0.0.
    (TEMP_C_RANGE.0..=TEMP_C_RANGE.1)
        .contains(&c)
        .then_some((sign * tenths / 10.0 + 0.0) as f32)
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

/// Reads the board now. What cannot be read gives zeros / None, never an error.
pub fn read(thermal: &str) -> Board {
    use std::os::unix::ffi::OsStrExt;
    let mut b = Board::default();
    // As the kernel holds it (up to 64 bytes): /proc/sys/kernel/hostname's, this UTS
    // namespace's.
    if let Ok(u) = nix::sys::utsname::uname() {
        super::push_lossy(&mut b.host, u.nodename().as_bytes());
    }
    // /proc/uptime's first field, in whole seconds (sysinfo's uptime rounds up).
    if let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        b.uptime_s = u64::try_from(t.tv_sec()).unwrap_or(0);
    }
    if let Ok(si) = nix::sys::sysinfo::sysinfo() {
        let (l1, l5, l15) = si.load_average();
        b.load = [l1, l5, l15].map(load_2dp);
        b.mem_total_kb = si.ram_total() / 1024;
    }
    // The available memory only /proc/meminfo tells; its total too where it can be read,
    // as it is read anyway (qemu-user cuts sysinfo's byte counts to 32 bits for a 32-bit
    // program on a host with more than 4 GiB; a 32-bit kernel, or a 64-bit one's compat
    // call, scales them instead).
    let mut buf = [0u8; PROC_READ_MAX];
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
        assert_eq!(millidegrees(b"45000\n"), Some(45.0));
        assert_eq!(millidegrees(b"-5500\n"), Some(-5.5));
        // To the tenth shown, half away from zero, whatever the f32 of the exact reading.
        for (raw, shown) in [
            (&b"47250\n"[..], "47.3"),
            (b"47350\n", "47.4"),
            (b"47450\n", "47.5"),
            (b"47349\n", "47.3"),
            (b"-5050\n", "-5.1"),
            (b"-40\n", "0.0"),
            (b"0\n", "0.0"),
        ] {
            let t = millidegrees(raw).unwrap();
            let text = crate::proto::fixed::Fixed(t.into(), 1).to_string();
            assert_eq!(text, shown, "{}", String::from_utf8_lossy(raw));
        }
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
        let mi = b"MemTotal:        1000 kB\nMemFree: 5 kB\nMemAvailable:     750 kB\n";
        assert_eq!(meminfo_kb(mi, b"MemTotal:"), 1000);
        assert_eq!(meminfo_kb(mi, b"MemAvailable:"), 750);
        assert_eq!(meminfo_kb(mi, b"Nope:"), 0);
    }

    /// The kernel's rounding: fixed-point values (n / 2048) to two decimals, half up.
    #[test]
    fn loads_round_as_proc_loadavg_does() {
        for (fixed, text) in [
            (0, "0.00"),
            (10, "0.00"),  // 0.0049 -> 0.00
            (11, "0.01"),  // 0.0054 -> 0.01
            (491, "0.24"), // 0.2397
            (2048, "1.00"),
            (2047, "1.00"),
            (4095, "2.00"),
            (100 * 2048 + 1023, "100.50"),
        ] {
            let v = f64::from(fixed) * 32.0 / 65536.0; // sysinfo's shift, nix's division
            assert_eq!(format!("{:.2}", load_2dp(v)), text, "{fixed}");
        }
    }

    /// The same host name, uptime, loads and total memory as /proc says (read back to back:
    /// retried when a second or a load update falls between the two).
    #[test]
    fn reads_what_proc_says() {
        let proc_view = || {
            let f = |p| std::fs::read_to_string(p).unwrap();
            let host = f("/proc/sys/kernel/hostname").trim_end().to_string();
            let up: u64 = f("/proc/uptime")
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let loads: Vec<String> = f("/proc/loadavg")
                .split(' ')
                .take(3)
                .map(String::from)
                .collect();
            let total = meminfo_kb(f("/proc/meminfo").as_bytes(), b"MemTotal:");
            (host, up, loads, total)
        };
        let ours = |b: &Board| {
            let loads = b.load.iter().map(|l| format!("{l:.2}")).collect();
            (b.host.to_string(), b.uptime_s, loads, b.mem_total_kb)
        };
        let same = (0..20).any(|_| {
            let before = proc_view();
            let b = read("/nonexistent/thermal");
            let after = proc_view();
            before == after && ours(&b) == before
        });
        assert!(
            same,
            "{:?} vs {:?}",
            proc_view(),
            ours(&read("/nonexistent"))
        );
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
