//! `tether scan`: broadcast a probe, collect answers and ordinary beacons, print one row
//! per board (deduplicated by id, sorted by host then id). A client process: it may
//! allocate. `--watch` keeps listening and re-probing, marking boards that said goodbye
//! or went silent.

use crate::cli::{valid_ifname, ScanArgs};
use crate::daemon::{Fatal, EX_UNAVAILABLE, EX_USAGE};
use crate::limits::DATAGRAM_MAX;
use crate::proto::beacon::{self, count_members, fields, unquote};
use crate::proto::json;
use crate::proto::wbuf::WBuf;
use crate::sys::{iface, udp};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// A board heard in this scan.
#[derive(Debug, Clone)]
pub struct Board {
    pub id: String,
    pub host: String,
    pub addr: String,
    pub port: u16,
    /// The metrics port the beacon announced (`"metrics":PORT`), if any.
    pub metrics: Option<u16>,
    pub uptime: u64,
    pub load: f64,
    pub temp_c: Option<f64>,
    pub facts: usize,
    pub seq: u64,
    pub bye: bool,
    pub heard: Instant,
}

/// A JSON string value as text: quotes removed and escapes undone (`\"` is `"`), so a
/// name that needed escaping is not escaped twice when scan writes it out again.
fn text(v: &[u8]) -> String {
    let raw = String::from_utf8_lossy(unquote(v).unwrap_or(v)).into_owned();
    if !raw.contains('\\') {
        return raw;
    }
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = it.by_ref().take(4).collect();
                let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                out.push(ch.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn num<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Decodes a beacon datagram; None unless it is a well-formed tether beacon.
pub fn decode(d: &[u8], from: SocketAddrV4, now: Instant) -> Option<Board> {
    if !beacon::is_beacon(d) {
        return None;
    }
    let mut b = Board {
        id: String::new(),
        host: String::new(),
        addr: from.ip().to_string(),
        port: 0,
        metrics: None,
        uptime: 0,
        load: 0.0,
        temp_c: None,
        facts: 0,
        seq: 0,
        bye: false,
        heard: now,
    };
    let mut version = None;
    for (k, v) in fields(d) {
        match k {
            b"tether" => version = num::<u32>(v),
            b"id" => b.id = text(v),
            b"host" => b.host = text(v),
            b"addr" if v != b"null" => b.addr = text(v),
            b"port" => b.port = num(v).unwrap_or(0),
            b"metrics" => b.metrics = num(v).filter(|&p: &u16| p != 0),
            b"uptime" => b.uptime = num(v).unwrap_or(0),
            b"load" => b.load = num(v).unwrap_or(0.0),
            b"temp_c" => b.temp_c = num(v),
            b"facts" => b.facts = count_members(v),
            b"seq" => b.seq = num(v).unwrap_or(0),
            b"bye" => b.bye = v == b"true",
            _ => {}
        }
    }
    (version == Some(1) && !b.id.is_empty()).then_some(b)
}

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn status(b: &Board, now: Instant, silent_after: Duration) -> &'static str {
    if b.bye {
        "bye"
    } else if now.saturating_duration_since(b.heard) > silent_after {
        "silent"
    } else {
        "up"
    }
}

fn sorted(boards: &BTreeMap<String, Board>) -> Vec<&Board> {
    let mut v: Vec<&Board> = boards.values().collect();
    v.sort_by(|a, b| a.host.cmp(&b.host).then(a.id.cmp(&b.id)));
    v
}

pub fn table(boards: &BTreeMap<String, Board>, now: Instant, silent_after: Duration) -> String {
    let mut s = format!(
        "{:<16} {:<20} {:<15} {:>5} {:>7} {:>5} {:>6} {:>5} {:>6} {}\n",
        "ID", "HOST", "ADDRESS", "PORT", "UPTIME", "LOAD", "TEMP", "FACTS", "SEEN", "STATE"
    );
    for b in sorted(boards) {
        let temp = b.temp_c.map_or("-".to_string(), |t| format!("{t:.1}"));
        let seen = now.saturating_duration_since(b.heard).as_secs_f64();
        s += &format!(
            "{:<16} {:<20} {:<15} {:>5} {:>7} {:>5.2} {:>6} {:>5} {:>5.1}s {}\n",
            b.id,
            b.host,
            b.addr,
            b.port,
            human_secs(b.uptime),
            b.load,
            temp,
            b.facts,
            seen,
            status(b, now, silent_after)
        );
    }
    s
}

pub fn to_json(boards: &BTreeMap<String, Board>, now: Instant, silent_after: Duration) -> String {
    let mut out = String::from("[");
    for (i, b) in sorted(boards).into_iter().enumerate() {
        let mut buf = vec![0u8; 1024];
        let mut w = WBuf::new(&mut buf);
        let _ = (|| -> std::fmt::Result {
            use std::fmt::Write as _;
            w.write_str("{\"id\":")?;
            json::write_str(&mut w, b.id.as_bytes())?;
            w.write_str(",\"host\":")?;
            json::write_str(&mut w, b.host.as_bytes())?;
            w.write_str(",\"addr\":")?;
            json::write_str(&mut w, b.addr.as_bytes())?;
            match b.metrics {
                Some(m) => write!(w, ",\"metrics\":{m}")?,
                None => w.write_str(",\"metrics\":null")?,
            }
            write!(
                w,
                ",\"port\":{},\"uptime\":{},\"load\":{:.2},\"temp_c\":",
                b.port, b.uptime, b.load
            )?;
            json::write_opt_f1(&mut w, b.temp_c.map(|t| t as f32))?;
            write!(
                w,
                ",\"facts\":{},\"seq\":{},\"seen_s\":{:.1},\"state\":\"{}\"}}",
                b.facts,
                b.seq,
                now.saturating_duration_since(b.heard).as_secs_f64(),
                status(b, now, silent_after)
            )
        })();
        if i > 0 {
            out.push(',');
        }
        out.push_str(&String::from_utf8_lossy(w.as_bytes()));
    }
    out.push(']');
    out
}

fn nonce() -> String {
    let mut b = [0u8; 8];
    if crate::sys::read_small("/dev/urandom", &mut b).is_none() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Scanner {
    probe_sock: OwnedFd,
    listen_sock: Option<OwnedFd>,
    port: u16,
    nonce: String,
    /// Probe destinations: see [`probe_targets`].
    targets: Vec<Ipv4Addr>,
}

/// With `-i`, the limited broadcast (the socket is bound to that interface). Without, also
/// every up, non-loopback interface's directed broadcast address: that reaches each LAN
/// even where there is no default route for 255.255.255.255 to follow.
fn probe_targets(iface_given: bool) -> Vec<Ipv4Addr> {
    let mut t = vec![Ipv4Addr::BROADCAST];
    if !iface_given {
        let mut addrs = heapless::Vec::new();
        iface::ipv4_addrs(&mut addrs);
        for (name, _) in &addrs {
            let Some(i) = iface::info(name) else { continue };
            if let Some(b) = i.broadcast.filter(|_| i.up && !i.loopback) {
                if !t.contains(&b) {
                    t.push(b);
                }
            }
        }
    }
    t
}

impl Scanner {
    /// Sends one probe to every target; Err (the last error) only when none went out.
    fn probe(&self) -> Result<(), String> {
        let mut p = [0u8; DATAGRAM_MAX];
        let n = beacon::write_probe(&mut p, self.nonce.as_bytes());
        let mut sent = false;
        let mut last = String::new();
        for &t in &self.targets {
            match udp::send_to(
                self.probe_sock.as_fd(),
                &p[..n],
                SocketAddrV4::new(t, self.port),
            ) {
                Ok(_) => sent = true,
                Err(e) => last = format!("send probe to {t}: {e}"),
            }
        }
        if sent {
            Ok(())
        } else {
            Err(last)
        }
    }

    /// Collects datagrams until `until`.
    fn collect(&self, until: Instant, boards: &mut BTreeMap<String, Board>) {
        let mut buf = [0u8; DATAGRAM_MAX + 1];
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let ms = until
                .saturating_duration_since(now)
                .as_millis()
                .clamp(1, 60_000) as i32;
            let mut fds = vec![PollFd::new(self.probe_sock.as_fd(), PollFlags::POLLIN)];
            if let Some(l) = &self.listen_sock {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            if poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            )
            .is_err()
            {
                continue;
            }
            drop(fds);
            let socks = std::iter::once(&self.probe_sock).chain(self.listen_sock.as_ref());
            for s in socks {
                while let Ok(Some((n, from))) = udp::recv_from(s.as_fd(), &mut buf) {
                    if n > DATAGRAM_MAX {
                        continue;
                    }
                    if let Some(b) = decode(&buf[..n], from, Instant::now()) {
                        boards.insert(b.id.clone(), b);
                    }
                }
            }
        }
    }
}

/// Runs `tether scan`; returns the exit code.
pub fn run(args: ScanArgs) -> Result<u8, Fatal> {
    let usage = |m: String| Fatal {
        code: EX_USAGE,
        msg: m,
    };
    if !(args.timeout > 0.0 && args.timeout < 86400.0) {
        return Err(usage(format!(
            "-t {}: expected a positive number of seconds",
            args.timeout
        )));
    }
    if let Some(i) = &args.iface {
        if !valid_ifname(i) {
            return Err(usage(format!("-i {i:?}: not a valid interface name")));
        }
        if iface::info(i).is_none() {
            return Err(Fatal {
                code: EX_UNAVAILABLE,
                msg: format!("-i {i}: no such interface"),
            });
        }
    }
    let dev = args.iface.as_deref();
    let probe_sock = udp::open(dev, 0).map_err(|(what, e)| Fatal {
        code: EX_UNAVAILABLE,
        msg: format!("scan socket: {what}: {e}"),
    })?;
    // Also hear ordinary beacons (boards that rate-limit our probe still show up).
    let listen_sock = udp::open(dev, args.port).ok();
    let sc = Scanner {
        probe_sock,
        listen_sock,
        port: args.port,
        nonce: nonce(),
        targets: probe_targets(dev.is_some()),
    };
    let wait = Duration::from_secs_f64(args.timeout);
    let silent_after = wait.max(Duration::from_secs(15));
    let mut boards = BTreeMap::new();
    if let Err(e) = sc.probe() {
        eprintln!("warning: {e}; listening for beacons only");
    }
    sc.collect(Instant::now() + wait, &mut boards);
    let mut sd_last = None;
    if let Some(p) = &args.prometheus_sd {
        let text = prometheus_sd(boards.values(), Instant::now(), silent_after);
        update_sd(p, text, &mut sd_last).map_err(|msg| Fatal {
            code: EX_CANTCREAT,
            msg,
        })?;
    }
    if args.watch {
        let mut out = std::io::stdout();
        loop {
            let now = Instant::now();
            if let Some(p) = &args.prometheus_sd {
                let text = prometheus_sd(boards.values(), now, silent_after);
                if let Err(e) = update_sd(p, text, &mut sd_last) {
                    eprintln!("warning: {e}; retrying");
                }
            }
            let shown = if args.json {
                to_json(&boards, now, silent_after) + "\n"
            } else {
                table(&boards, now, silent_after) + "\n"
            };
            if out
                .write_all(shown.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return Ok(0);
            }
            let _ = sc.probe();
            sc.collect(Instant::now() + wait, &mut boards);
        }
    }
    let now = Instant::now();
    if args.json {
        println!("{}", to_json(&boards, now, silent_after));
    } else if !boards.is_empty() {
        print!("{}", table(&boards, now, silent_after));
    }
    if boards.is_empty() && args.prometheus_sd.is_some() {
        // The target file is the product: an empty fleet is a valid answer, not a failure.
        eprintln!(
            "warning: no boards answered within {:.1}s; the target file lists none",
            args.timeout
        );
        return Ok(0);
    }
    if boards.is_empty() {
        eprintln!(
            "error: no boards answered within {:.1}s{}",
            args.timeout,
            dev.map(|d| format!(" on {d}")).unwrap_or_default()
        );
        return Ok(EX_UNAVAILABLE);
    }
    Ok(0)
}

/// sysexits: cannot create an output file (`--prometheus-sd`).
pub const EX_CANTCREAT: u8 = 73;

/// `--prometheus-sd`: Prometheus file_sd JSON listing every board of `boards` that is up
/// (not gone silent, no goodbye) and announces a metrics port, sorted by id (then address):
/// `[{"targets":["ADDR:PORT"],"labels":{"tether_id":"..","tether_host":".."}},...]`.
/// The caller picks the boards (all of them; with a fleet key, the signed ones).
pub fn prometheus_sd<'b>(
    boards: impl IntoIterator<Item = &'b Board>,
    now: Instant,
    silent_after: Duration,
) -> String {
    let mut up: Vec<&Board> = boards
        .into_iter()
        .filter(|b| b.metrics.is_some() && status(b, now, silent_after) == "up")
        .collect();
    up.sort_by(|a, b| a.id.cmp(&b.id).then(a.addr.cmp(&b.addr)));
    let mut out = String::from("[");
    for b in up {
        let Some(port) = b.metrics else { continue };
        let mut buf = vec![0u8; 512];
        let mut w = WBuf::new(&mut buf);
        let r = (|| -> std::fmt::Result {
            use std::fmt::Write as _;
            w.write_str("{\"targets\":[")?;
            json::write_str(&mut w, format!("{}:{port}", b.addr).as_bytes())?;
            w.write_str("],\"labels\":{\"tether_id\":")?;
            json::write_str(&mut w, b.id.as_bytes())?;
            w.write_str(",\"tether_host\":")?;
            json::write_str(&mut w, b.host.as_bytes())?;
            w.write_str("}}")
        })();
        if r.is_err() {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&String::from_utf8_lossy(w.as_bytes()));
    }
    out.push(']');
    out
}

/// Replaces `path` atomically: a temp file in the same directory, written and synced,
/// mode 0644 whatever the umask, then renamed over `path`.
pub fn write_atomic(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Writes the file_sd file when its contents differ from `last`; remembers them.
fn update_sd(
    path: &std::path::Path,
    text: String,
    last: &mut Option<String>,
) -> Result<(), String> {
    if last.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    write_atomic(path, &text).map_err(|e| format!("--prometheus-sd {}: {e}", path.display()))?;
    *last = Some(text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_sd_lists_up_boards_with_metrics_by_id() {
        let now = Instant::now();
        // Boards as `decode` makes them from what agents send.
        let board = |id: &str, metrics: Option<u16>, bye: bool, age: u64| {
            let m = metrics
                .map(|p| format!(",\"metrics\":{p}"))
                .unwrap_or_default();
            let d = format!(
                "{{\"tether\":1,\"id\":\"{id}\",\"host\":\"h-{id}\\\"\",\"addr\":\"10.0.0.1\",\"port\":4545{m},\"bye\":{bye}}}"
            );
            let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 4546);
            decode(d.as_bytes(), from, now - Duration::from_secs(age)).unwrap()
        };
        let mut m = BTreeMap::new();
        for b in [
            board("bb", Some(9545), false, 0),
            board("aa", Some(9100), false, 1),
            board("cc", None, false, 0),
            board("dd", Some(9545), true, 0),
            board("ee", Some(9545), false, 60),
        ] {
            m.insert(b.id.clone(), b);
        }
        let sd = prometheus_sd(m.values().rev(), now, Duration::from_secs(15));
        assert_eq!(
            sd,
            "[{\"targets\":[\"10.0.0.1:9100\"],\"labels\":{\"tether_id\":\"aa\",\"tether_host\":\"h-aa\\\"\"}},\
             {\"targets\":[\"10.0.0.1:9545\"],\"labels\":{\"tether_id\":\"bb\",\"tether_host\":\"h-bb\\\"\"}}]"
        );
        assert_eq!(prometheus_sd([], now, Duration::from_secs(15)), "[]");
    }

    #[test]
    fn atomic_write_is_0644_and_leaves_no_temp_file() {
        let d = std::env::temp_dir().join(format!("tether-sd-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("tether.json");
        write_atomic(&p, "[]").unwrap();
        write_atomic(&p, "[1]").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert!(write_atomic(&d.join("no/such/dir.json"), "[]").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn decodes_what_the_agent_encodes() {
        let f = beacon::Fields {
            id: "00aa",
            host: "pi",
            addr: None,
            iface: "wlan0",
            port: 4545,
            seq: 3,
            uptime: 90000,
            load: 1.5,
            mem_avail_kb: 1,
            temp_c: None,
            metrics: Some(9545),
            bye: true,
            nonce: None,
        };
        let mut out = [0u8; 512];
        let facts = [(b"a".as_slice(), b"1".as_slice()), (b"b", b"2")];
        let n = beacon::encode(&mut out, 512, &f, facts.iter().copied()).unwrap();
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 4546);
        let b = decode(&out[..n], from, Instant::now()).unwrap();
        assert_eq!(
            (b.id.as_str(), b.host.as_str(), b.addr.as_str()),
            ("00aa", "pi", "10.0.0.9")
        );
        assert_eq!(
            (b.port, b.uptime, b.facts, b.seq, b.bye),
            (4545, 90000, 2, 3, true)
        );
        assert_eq!(b.metrics, Some(9545));
        assert!(decode(b"{\"tether\":2,\"id\":\"x\"}", from, Instant::now()).is_none());
        assert!(decode(b"garbage", from, Instant::now()).is_none());
        assert_eq!(human_secs(90000), "1d01h");
    }
}
