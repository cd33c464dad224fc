//! `tether scan`: broadcast a probe, collect answers and ordinary beacons, print one row
//! per board (sorted by host, id, address). A client process: it may allocate. `--watch`
//! keeps listening and re-probing, marking boards that said goodbye or went silent.
//!
//! The parts: `boards` is the table and the trust rules, sans I/O (every datagram goes
//! through [`Boards::ingest`]); `render` turns its rows into the table, `--json` and the
//! Prometheus target file; this file owns the sockets, the clock and the files.

mod boards;
mod render;
#[cfg(test)]
mod tests;

pub use boards::{decode, scoped, Board, Boards};
pub use render::{prometheus_sd, table, to_json};

use crate::cli::ScanArgs;
use crate::exit::{
    printable, stdout_written, to_stdout, Fatal, EX_CANTCREAT, EX_OSERR, EX_UNAVAILABLE,
};
use crate::limits::{BEACON_RECV_PER_TURN, DATAGRAM_MAX, SCAN_PROBES, SCAN_RCVBUF};
use crate::lograte::Unsaid;
use crate::proto::beacon;
use crate::proto::fixed::Fixed;
use crate::sys::{iface, udp};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// The one warning line for a cloned id (shown [`printable`]).
fn clone_warning(id: &str) -> String {
    let id = printable(id);
    format!(
        "warning: id {id} is carried by more than one board (different runs at different \
         addresses): likely cloned /etc/machine-id (one SD-card image); on each clone run \
         `rm /etc/machine-id && systemd-machine-id-setup`, then restart tether"
    )
}

/// 16 random hex digits for the probe.
fn nonce() -> Result<String, Fatal> {
    let mut b = [0u8; 8];
    crate::crypto::fill_random(&mut b).map_err(|e| Fatal {
        code: EX_OSERR,
        msg: format!("getrandom: {e}"),
    })?;
    let mut hex = [0u8; 16];
    crate::proto::hex::encode(&b, &mut hex);
    Ok(String::from_utf8_lossy(&hex).into_owned())
}

struct Scanner {
    /// Probes go out of these and answers come back to them; ordinary beacons arrive
    /// on the listening ones (port `port`). Every one counts kernel drops (SO_RXQ_OVFL).
    socks: Vec<Sock>,
    port: u16,
    /// `-i`'s interface.
    dev: Option<String>,
    /// IPv4 probe destinations: see [`probe_targets`].
    targets: Vec<Ipv4Addr>,
    /// IPv6: ff02::1 scoped to each interface with a link-local address.
    targets6: Vec<u32>,
    /// `-i`'s interface index when the sockets were bound to it (SO_BINDTODEVICE holds
    /// the index: a recreated interface needs new sockets), and what earlier sockets dropped.
    index: Option<u32>,
    dropped_before: u64,
}

struct Sock {
    fd: OwnedFd,
    /// Sends the probe (IPv4 or IPv6), or only listens.
    probe: Option<Family>,
    /// The kernel's running count of datagrams dropped on this socket (SO_RXQ_OVFL).
    dropped: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
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

/// The interfaces to probe over IPv6 (their indexes): `-i`'s, else every up,
/// non-loopback interface with a link-local address.
fn probe_targets6(dev: Option<&str>) -> Vec<u32> {
    let mut names: Vec<String> = match dev {
        Some(d) => vec![d.to_string()],
        None => {
            let mut v = heapless::Vec::new();
            iface::ipv6_addrs(&mut v);
            v.iter().map(|(n, _)| n.to_string()).collect()
        }
    };
    names.dedup();
    let mut t = Vec::new();
    for n in names {
        let Some(i) = iface::info(&n).filter(|i| i.up && !i.loopback) else {
            continue;
        };
        if iface::link_local(&n).is_some() && !t.contains(&i.index) {
            t.push(i.index);
        }
    }
    t
}

impl Scanner {
    /// Opens the sockets of both families (a family that cannot open is left out: an
    /// IPv4-only or IPv6-only host still scans). Err only when no probe socket opened.
    fn open(dev: Option<&str>, port: u16) -> Result<Scanner, String> {
        let mut sc = Scanner {
            socks: Vec::new(),
            port,
            dev: dev.map(str::to_string),
            targets: Vec::new(),
            targets6: Vec::new(),
            index: dev.and_then(iface::info).map(|i| i.index),
            dropped_before: 0,
        };
        let mut last = sc.add(udp::open(dev, 0), Some(Family::V4)).err();
        // Also hear ordinary beacons (boards that rate-limit our probe still show up).
        let _ = sc.add(udp::open(dev, port), None);
        if let Err(e) = sc.refresh() {
            last = Some(e);
        }
        if !sc.socks.iter().any(|s| s.probe.is_some()) {
            return Err(last.unwrap_or_default());
        }
        Ok(sc)
    }

    /// Keeps socket `r` (`probe`: which family it probes, None for one that listens);
    /// Err says why it could not be opened.
    fn add(
        &mut self,
        r: Result<OwnedFd, (&'static str, nix::errno::Errno)>,
        probe: Option<Family>,
    ) -> Result<(), String> {
        let fd = r.map_err(|(what, e)| format!("scan socket: {what}: {e}"))?;
        let _ = udp::grow_rcvbuf(fd.as_fd(), SCAN_RCVBUF);
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RxqOvfl, &1);
        self.socks.push(Sock {
            fd,
            probe,
            dropped: 0,
        });
        Ok(())
    }

    /// Looks at the interfaces (at the start, and before each `--watch` round): an
    /// interface that came up since (its directed broadcast address, or an IPv6 link-local
    /// address past duplicate address detection) is probed from then on, and the IPv6
    /// sockets open with the first IPv6 link. Err: the IPv6 probe socket could not open.
    fn refresh(&mut self) -> Result<(), String> {
        let dev = self.dev.as_deref();
        self.targets = probe_targets(dev.is_some());
        self.targets6 = probe_targets6(dev);
        let has6 = self.socks.iter().any(|s| s.probe == Some(Family::V6));
        if self.targets6.is_empty() || has6 {
            return Ok(());
        }
        // The listening one only with the probe one: never twice.
        let probe = udp::open6_any(self.dev.as_deref(), 0);
        self.add(probe, Some(Family::V6))?;
        let listen = udp::open6_any(self.dev.as_deref(), self.port);
        let _ = self.add(listen, None);
        Ok(())
    }

    /// Sends one probe to every target; Err (the last error) only when none went out.
    fn probe(&self, nonce: &str) -> Result<(), String> {
        let mut p = [0u8; DATAGRAM_MAX];
        let n = beacon::write_probe(&mut p, nonce.as_bytes());
        let mut sent = false;
        let mut last = String::new();
        for s in &self.socks {
            let to: Vec<SocketAddr> = match s.probe {
                None => continue,
                Some(Family::V4) => self
                    .targets
                    .iter()
                    .map(|&t| SocketAddr::V4(SocketAddrV4::new(t, self.port)))
                    .collect(),
                Some(Family::V6) => self
                    .targets6
                    .iter()
                    .map(|&i| {
                        SocketAddr::V6(SocketAddrV6::new(crate::beacon::ALL_NODES, self.port, 0, i))
                    })
                    .collect(),
            };
            for t in to {
                match udp::send_to(s.fd.as_fd(), &p[..n], t, true, None) {
                    Ok(_) => sent = true,
                    Err(e) => last = format!("send probe to {t}: {e}"),
                }
            }
        }
        if sent {
            Ok(())
        } else {
            Err(last)
        }
    }

    /// Collects datagrams until `until`, probing again at each of `reprobe` (the
    /// instants still to come).
    fn collect(
        &mut self,
        until: Instant,
        boards: &mut Boards,
        nonce: &str,
        reprobe: &mut Vec<Instant>,
    ) {
        let mut buf = [0u8; DATAGRAM_MAX + 1];
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            if reprobe.first().is_some_and(|&t| t <= now) {
                reprobe.remove(0);
                let _ = self.probe(nonce);
            }
            let next = reprobe.first().map_or(until, |&t| t.min(until));
            let ms = next
                .saturating_duration_since(now)
                .as_millis()
                .clamp(1, 60_000) as i32;
            let mut fds: Vec<PollFd<'_>> = self
                .socks
                .iter()
                .map(|s| PollFd::new(s.fd.as_fd(), PollFlags::POLLIN))
                .collect();
            if poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            )
            .is_err()
            {
                continue;
            }
            drop(fds);
            // A bounded number per socket, then back to the clock: a LAN flooded faster
            // than the datagrams are checked must not keep the scan past its window.
            for s in self.socks.iter_mut() {
                for _ in 0..BEACON_RECV_PER_TURN {
                    let Ok(Some(udp::Received {
                        len: n,
                        from,
                        dropped,
                        ..
                    })) = udp::recv_from(s.fd.as_fd(), &mut buf)
                    else {
                        break;
                    };
                    if let Some(d) = dropped {
                        s.dropped = s.dropped.max(d);
                    }
                    if n > DATAGRAM_MAX {
                        continue;
                    }
                    boards.ingest(&buf[..n], from, Instant::now());
                }
            }
        }
    }

    /// One round: probes with `nonce` (again at [`reprobe_times`]), collects for `wait`,
    /// then says what it found that needs saying (clones, boards ignored). Returns why the
    /// probe could not be sent, if it could not (beacons are still heard).
    fn round(&mut self, boards: &mut Boards, nonce: &str, wait: Duration) -> Option<String> {
        let unsent = self.probe(nonce).err();
        let mut reprobe = reprobe_times(Instant::now(), wait);
        self.collect(Instant::now() + wait, boards, nonce, &mut reprobe);
        warn_clones(boards);
        unsent
    }

    /// `--watch -i`: when the interface is there again under another index (deleted and
    /// recreated), sockets bound to it anew; the old ones would hear and send nothing.
    fn rebind(&mut self) {
        let Some(dev) = self.dev.clone() else { return };
        let index = iface::info(&dev).map(|i| i.index);
        if index.is_none() || index == self.index {
            return;
        }
        if let Ok(mut n) = Scanner::open(Some(&dev), self.port) {
            n.dropped_before = self.dropped();
            *self = n;
            crate::say!("note: -i {dev}: the interface was recreated; listening on it again");
        }
    }

    /// Answers the kernel dropped for want of buffer room, over all sockets.
    fn dropped(&self) -> u64 {
        let now: u64 = self.socks.iter().map(|s| u64::from(s.dropped)).sum();
        now + self.dropped_before
    }
}

/// When to probe again within a window of `wait` after `start`: [`SCAN_PROBES`] probes
/// in all, spread over the first half, so the answers to the last still arrive in time.
fn reprobe_times(start: Instant, wait: Duration) -> Vec<Instant> {
    (1..SCAN_PROBES)
        .map(|k| start + wait / 2 * k / SCAN_PROBES.max(1))
        .collect()
}

/// The line that says the kernel dropped `n` datagrams scan could not read in time.
fn dropped_warning(n: u64) -> String {
    format!(
        "warning: the kernel dropped {n} answers (receive buffer full); some boards may be missing"
    )
}

/// Prints one `warning:` line per newly found cloned id, and one when boards past
/// [`SCAN_BOARDS_MAX`](crate::limits::SCAN_BOARDS_MAX) were ignored.
fn warn_clones(boards: &mut Boards) {
    for id in boards.mark_clones() {
        crate::say!("{}", clone_warning(&id));
    }
    if let Some(w) = boards.ignored_warning(Instant::now()) {
        crate::say!("{w}");
    }
}

/// Runs `tether scan` (`args` checked by [`ScanArgs::validate`], which gave `wait`);
/// returns the exit code.
pub fn run(args: ScanArgs, wait: Duration) -> Result<u8, Fatal> {
    let key = match &args.fleet_key {
        Some(p) => Some(crate::beacon::load_key(p, true).map_err(|e| Fatal {
            code: e.exit_code(),
            msg: crate::beacon::key_file_message(p, &e),
        })?),
        None => None,
    };
    if let Some(i) = &args.iface {
        iface::named(i).map_err(|f| Fatal::new(f.code, format!("-i {}", f.msg)))?;
    }
    if let Some(p) = &args.prometheus_sd {
        check_sd_writable(p)?;
    }
    let dev = args.iface.as_deref();
    let mut sc = Scanner::open(dev, args.port).map_err(|msg| Fatal {
        code: EX_UNAVAILABLE,
        msg,
    })?;
    let checked = key.is_some();
    let nonce = nonce()?;
    let mut boards = Boards::new(key, nonce.clone());
    let silent_after = wait.max(Duration::from_secs(15));
    let mut unsent = sc.round(&mut boards, &nonce, wait);
    if let Some(e) = &unsent {
        crate::say!("warning: {e}; listening for beacons only");
    }
    let mut sd_last = None;
    if let Some(p) = &args.prometheus_sd {
        let text = prometheus_sd(boards.shown(false), Instant::now(), silent_after);
        update_sd(p, text, &mut sd_last).map_err(|msg| Fatal {
            code: EX_CANTCREAT,
            msg,
        })?;
    }
    if args.watch {
        let mut out = std::io::stdout();
        let mut dropped_said = Unsaid::default();
        // Said when it changes, not every round: what the key hid, and why the target
        // file cannot be written.
        let mut hidden_said = None;
        let mut sd_said = None;
        loop {
            let now = Instant::now();
            boards.forget(now);
            if let Some(p) = &args.prometheus_sd {
                let text = prometheus_sd(boards.shown(false), now, silent_after);
                let r = update_sd(p, text, &mut sd_last);
                match (&r, &sd_said) {
                    (Err(e), _) if sd_said.as_ref() != Some(e) => {
                        crate::say!("warning: {e}; retrying")
                    }
                    (Ok(()), Some(_)) => {
                        crate::say!("note: --prometheus-sd {}: written again", p.display())
                    }
                    _ => {}
                }
                sd_said = r.err();
            }
            let hidden = boards.hidden(args.all);
            if hidden.is_some() && hidden != hidden_said {
                crate::say!("note: {}", hidden.as_deref().unwrap_or_default());
            }
            hidden_said = hidden;
            let rows = boards.shown(args.all);
            let shown = if args.json {
                to_json(&rows, now, silent_after) + "\n"
            } else {
                table(&rows, now, silent_after, checked) + "\n"
            };
            if !stdout_written(out.write_all(shown.as_bytes()).and_then(|_| out.flush()))? {
                return Ok(0);
            }
            // A new nonce each round: an answer captured before is then not this scan's.
            let nonce = self::nonce()?;
            boards.new_round(nonce.clone());
            // (An IPv6 socket that cannot open now is tried again next round.)
            sc.rebind();
            let _ = sc.refresh();
            // Said when it changes (a link down, or back), not every round.
            let e = sc.round(&mut boards, &nonce, wait);
            match (&e, &unsent) {
                (Some(w), _) if unsent.as_ref() != Some(w) => {
                    crate::say!("warning: {w}; listening for beacons only")
                }
                (None, Some(_)) => crate::say!("note: probes sent again"),
                _ => {}
            }
            unsent = e;
            // What the kernel dropped since it was last said, as a Repeat allows (a minute, then ever longer).
            if let Some(n) = dropped_said.take(sc.dropped(), Instant::now()) {
                crate::say!("{}", dropped_warning(n));
            }
        }
    }
    if sc.dropped() > 0 {
        crate::say!("{}", dropped_warning(sc.dropped()));
    }
    let now = Instant::now();
    let rows = boards.shown(args.all);
    if args.json {
        to_stdout(&(to_json(&rows, now, silent_after) + "\n"))?;
    } else if !rows.is_empty() {
        to_stdout(&table(&rows, now, silent_after, checked))?;
    }
    if rows.is_empty() {
        // Under 0.1 s in milliseconds: `-t 0.04` did not wait "0.0s".
        let decimals = if args.timeout < 0.1 { 3 } else { 1 };
        let within = format!(
            "within {}s{}",
            Fixed(args.timeout, decimals),
            dev.map(|d| format!(" on {d}")).unwrap_or_default()
        );
        let what = match boards.hidden(args.all) {
            Some(h) => format!("no signed board answered {within}; {h}"),
            None => format!("no boards answered {within}"),
        };
        if args.prometheus_sd.is_some() {
            // The target file is the product: an empty fleet is a valid answer, not a
            // failure.
            crate::say!("warning: {what}; the target file lists none");
            return Ok(0);
        }
        crate::say!("error: {what}");
        return Ok(EX_UNAVAILABLE);
    }
    if let Some(h) = boards.hidden(args.all) {
        crate::say!("note: {h}");
    }
    Ok(0)
}

/// Which file a path names, and which version of it: device, inode, size and mtime (a
/// file written over in place, `echo [] >PATH`, keeps its inode).
type FileId = (u64, u64, u64, i64, i64);

fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}

/// Replaces `path` atomically: a temp file in the same directory, written and synced,
/// mode 0644 whatever the umask, then renamed over `path`. Returns which file `path` now
/// names.
pub fn write_atomic(path: &std::path::Path, contents: &str) -> std::io::Result<FileId> {
    let (tmp, mut f) = create_beside(path)?;
    let res = (|| {
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        let id = file_id(&f.metadata()?);
        std::fs::rename(&tmp, path)?;
        Ok(id)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The temporary file [`write_atomic`] writes before it renames it to `path`: created new
/// (mode 0644) in `path`'s directory, never through what is already there (O_EXCL: a
/// symlink planted at the name is not followed; another name is tried).
fn create_beside(path: &std::path::Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a directory",
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut n = 0u32;
    let (tmp, f) = loop {
        let tmp = dir.join(format!(
            ".{}.tmp.{}.{n}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let open = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp);
        match open {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 64 => n += 1,
            r => break (tmp, r?),
        }
    };
    if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(0o644)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, f))
}

/// `--prometheus-sd`: whether the file can be written, found out before any probe is sent
/// (by making the temporary file and removing it: the file Prometheus reads is untouched).
fn check_sd_writable(path: &std::path::Path) -> Result<(), Fatal> {
    let (tmp, _) = create_beside(path).map_err(|e| Fatal {
        code: EX_CANTCREAT,
        msg: sd_error(path, e),
    })?;
    let _ = std::fs::remove_file(tmp);
    Ok(())
}

/// What a failed write of the target file says (one wording for the check and the writes).
fn sd_error(path: &std::path::Path, e: std::io::Error) -> String {
    format!("--prometheus-sd {}: {e}", path.display())
}

/// Writes the target file when its text changed, or when the file there is not the one
/// last written (deleted, replaced, or written over): not every round (an SD card wears).
fn update_sd(
    path: &std::path::Path,
    text: String,
    last: &mut Option<(String, FileId)>,
) -> Result<(), String> {
    if let Some((t, id)) = last {
        let there = std::fs::symlink_metadata(path).ok().map(|m| file_id(&m));
        if *t == text && there == Some(*id) {
            return Ok(());
        }
    }
    let id = write_atomic(path, &text).map_err(|e| sd_error(path, e))?;
    *last = Some((text, id));
    Ok(())
}
