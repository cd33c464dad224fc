//! The agent's log lines on stderr, without ever blocking the poll loop on them.
//!
//! Under systemd, stderr is a stream socket to journald. When journald stops reading (stuck
//! behind a slow SD card, say) that socket fills, and a blocking write(2) of the next log line
//! would stop the whole loop: no client, beacon or scrape served until the watchdog kills the
//! agent, and its successor blocks again at its first line. A pipe whose reader stopped (a
//! suspended `| tee`, a stuck log daemon) or a terminal whose output was stopped (Ctrl-S on
//! a serial console) does the same. So each line is written without waiting: to a socket
//! with `MSG_DONTWAIT` ([`net::send`]), to a pipe or terminal through a file description
//! of the agent's own, opened non-blocking from `/proc/self/fd/2` (stderr's own may be
//! shared with a shell, which a non-blocking one would break), or where that cannot be (no
//! /proc, or a supervisor's pipe the agent, run as another user, may not open) written only
//! when poll(2) says it takes more. A line that cannot go now is dropped and counted, and
//! the next line that goes through is preceded by one saying how many were lost. A regular
//! file is written as before: it never waits for a reader. It is put in append mode (a
//! rc.local's `2>/var/log/tether.log`, not `>>`): logrotate's copytruncate empties it, and
//! each line still lands at the end, not at the old offset after a hole of zero bytes.

use super::net::{self, Io};
use crate::limits::{LOG_DROPPED_NOTE_MAX, LOG_LINE_MAX, LOG_POLLED_WRITE_MAX};
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Log lines dropped since the last one that went through.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Log lines dropped since start (STATS `log_lines_dropped`).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Whether the last byte that went out ended a line. A line stderr took only part of
/// (the rest dropped) is ended by the note, so the note is not glued to its tail.
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

/// Log lines dropped since start because stderr did not take them in time.
pub fn lines_dropped() -> u64 {
    DROPPED_TOTAL.load(Relaxed)
}

/// How a [`Log`] writes a line without waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// `fd` is a socket: send(2) with `MSG_DONTWAIT`.
    Send,
    /// `fd` is a non-blocking file description of the log's own: write(2).
    Write,
    /// `fd` is a pipe or terminal shared with others that this user may not reopen (a
    /// supervisor's pipe, for an agent run as `tether`): written only when poll(2) says it
    /// takes more, at most [`LOG_POLLED_WRITE_MAX`] bytes at a time (what a pipe with room
    /// for more always takes whole).
    Poll,
}

/// Log lines written without waiting (see the module's text).
pub struct Log<F: AsFd> {
    fd: F,
    how: How,
}

/// Stderr as a [`Log`], or `None` when it is a regular file (or cannot be told), which is
/// written as usual. A pipe or terminal is reopened non-blocking from /proc; where that
/// cannot be (no /proc, or this user is not the pipe's or terminal's owner), it is polled.
pub fn nonblocking() -> Option<Log<OwnedFd>> {
    let stderr = io::stderr();
    let stderr = stderr.as_fd();
    let kind = SFlag::from_bits_truncate(fstat(stderr).ok()?.st_mode) & SFlag::S_IFMT;
    let how = match kind {
        SFlag::S_IFSOCK => How::Send,
        SFlag::S_IFIFO | SFlag::S_IFCHR => {
            let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
            if let Ok(fd) = open("/proc/self/fd/2", flags, Mode::empty()) {
                return Some(Log {
                    fd,
                    how: How::Write,
                });
            }
            How::Poll
        }
        SFlag::S_IFREG => {
            use nix::fcntl::{fcntl, FcntlArg};
            let fl = OFlag::from_bits_truncate(fcntl(stderr, FcntlArg::F_GETFL).ok()?);
            let _ = fcntl(stderr, FcntlArg::F_SETFL(fl | OFlag::O_APPEND));
            return None;
        }
        _ => return None,
    };
    let fd = stderr.try_clone_to_owned().ok()?;
    Some(Log { fd, how })
}

/// One line that could not be written: counted, and reported as written (a short count
/// would have env_logger try the rest at once, which cannot go either).
fn drop_line(len: usize) -> io::Result<usize> {
    DROPPED.fetch_add(1, Relaxed);
    DROPPED_TOTAL.fetch_add(1, Relaxed);
    Ok(len)
}

impl<F: AsFd> Log<F> {
    /// Writes what it can of `buf` now: `None` when nothing could go (full, or gone).
    fn put(&self, buf: &[u8]) -> Option<usize> {
        let fd = self.fd.as_fd();
        let io = match self.how {
            How::Send => net::send(fd, buf),
            How::Write => net::written(|| nix::unistd::write(fd, buf)),
            How::Poll if writable(fd) => {
                let part = &buf[..buf.len().min(LOG_POLLED_WRITE_MAX)];
                net::written(|| nix::unistd::write(fd, part))
            }
            How::Poll => Io::WouldBlock,
        };
        match io {
            Io::Done(n) => {
                if let Some(&last) = buf[..n].last() {
                    AT_LINE_START.store(last == b'\n', Relaxed);
                }
                Some(n)
            }
            Io::WouldBlock | Io::Closed => None,
        }
    }
}

/// Whether `fd` takes more now (an error or hang-up counts: the write then says it).
fn writable(fd: BorrowedFd<'_>) -> bool {
    let mut p = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut p, PollTimeout::ZERO), Ok(1..))
}

impl<F: AsFd> io::Write for Log<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let dropped = DROPPED.load(Relaxed);
        if dropped > 0 {
            let mut note = heapless::String::<LOG_DROPPED_NOTE_MAX>::new();
            let open = if AT_LINE_START.load(Relaxed) {
                ""
            } else {
                "\n"
            };
            let _ = writeln!(
                note,
                "{open}[WARN  tether] {dropped} log line(s) dropped: stderr did not take them in time"
            );
            match self.put(note.as_bytes()) {
                // Only a whole note reports them; after part of one the next note says it all.
                Some(n) if n == note.len() => {
                    DROPPED.fetch_sub(dropped, Relaxed);
                }
                Some(_) => {}
                None => return drop_line(buf.len()),
            }
        }
        match self.put(buf) {
            Some(n) => Ok(n),
            None => drop_line(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The agent's logger: env_logger's filter (`RUST_LOG`, `-v`), and each line formatted on
/// the stack, at most [`LOG_LINE_MAX`] bytes (a longer one is cut and ends in `...`), so
/// that no log line allocates, however long a path or a peer's text in it (env_logger's
/// own line buffer grew to the longest line yet: a SIGHUP naming a long path allocated).
/// Under systemd, to a pipe or a terminal: written without waiting ([`nonblocking`]); to a
/// regular file (the init script's log): as usual, each line beginning with the UTC time
/// ([`Utc`]: a file, unlike the journal, stamps nothing itself).
pub struct Logger {
    filter: env_logger::Logger,
    out: std::sync::Mutex<Out>,
}

enum Out {
    Nonblocking(Log<OwnedFd>),
    /// A regular file (or stderr that cannot be told): the time first.
    Stamped,
}

/// One log line being formatted: what fits in [`LOG_LINE_MAX`] bytes, and whether more
/// was cut.
struct Line {
    buf: [u8; LOG_LINE_MAX],
    len: usize,
    cut: bool,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = LOG_LINE_MAX - CUT.len() - 1 - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self.cut |= n < s.len();
        Ok(())
    }
}

/// How a cut line ends.
const CUT: &[u8] = b"...";

impl Logger {
    /// Installs it as the `log` crate's logger (once, at start-up).
    pub fn install(filter: env_logger::Logger) {
        let out = match nonblocking() {
            Some(log) => Out::Nonblocking(log),
            None => Out::Stamped,
        };
        log::set_max_level(filter.filter());
        let logger = Logger {
            filter,
            out: std::sync::Mutex::new(out),
        };
        let _ = log::set_boxed_logger(Box::new(logger));
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        use std::fmt::Write as _;
        use std::io::Write as _;
        if !self.filter.matches(record) {
            return;
        }
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let mut line = Line {
            buf: [0; LOG_LINE_MAX],
            len: 0,
            cut: false,
        };
        if let (Out::Stamped, Some(now)) = (&*out, Utc::now()) {
            let _ = write!(line, "{now} ");
        }
        let (level, target) = (record.level(), record.target());
        let _ = write!(line, "[{level:<5} {target}] {}", record.args());
        if line.cut {
            line.buf[line.len..line.len + CUT.len()].copy_from_slice(CUT);
            line.len += CUT.len();
        }
        line.buf[line.len] = b'\n';
        let bytes = &line.buf[..=line.len];
        let _ = match &mut *out {
            Out::Nonblocking(log) => log.write_all(bytes),
            Out::Stamped => io::stderr().write_all(bytes),
        };
    }

    fn flush(&self) {}
}

/// A moment in UTC as the lines of a log file begin with it (`2026-12-02T21:53:52Z`): a
/// file, unlike the journal, stamps nothing itself. Seconds since 1970.
pub struct Utc(pub u64);

impl Utc {
    /// Now, from CLOCK_REALTIME through nix, not `std::time::SystemTime`: on the 32-bit ARM
    /// boards std's clock call is musl's 32-bit-time_t one, which fails (EOVERFLOW) past
    /// 2038-01-19 03:14:07 UTC, and std unwraps it: the agent logging to a file died there
    /// (SIGILL, the size-tuned build's abort) at its first line, in the emulated Pi 2B.
    /// nix's is the 64-bit one there (`--cfg libc_unstable_musl_v1_2`, .cargo/config.toml);
    /// built without that, a time it cannot say is `None` and the line goes out unstamped.
    pub fn now() -> Option<Utc> {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).ok()?;
        u64::try_from(t.tv_sec()).ok().map(Utc)
    }
}

impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (days, secs) = (self.0 / 86_400, self.0 % 86_400);
        // Days since 1970-01-01 to a civil date: Howard Hinnant's civil_from_days, in
        // 400-year eras counted from 0000-03-01.
        let z = days as i64 + 719_468;
        let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let (h, min, s) = (secs / 3_600, secs / 60 % 60, secs % 60);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_longer_than_its_buffer_is_cut_at_a_character() {
        use std::fmt::Write as _;
        let mut line = Line {
            buf: [0; LOG_LINE_MAX],
            len: 0,
            cut: false,
        };
        let _ = write!(line, "{}", "é".repeat(LOG_LINE_MAX));
        assert!(line.cut);
        assert!(line.len < LOG_LINE_MAX - CUT.len());
        assert!(std::str::from_utf8(&line.buf[..line.len]).is_ok());
        // What fits goes in whole.
        let mut short = Line {
            buf: [0; LOG_LINE_MAX],
            len: 0,
            cut: false,
        };
        let _ = write!(short, "[INFO  tether] {}", 1 + 1);
        assert_eq!(
            (&short.buf[..short.len], short.cut),
            (&b"[INFO  tether] 2"[..], false)
        );
    }

    #[test]
    fn utc_is_the_civil_date_and_time() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (1_798_848_000, "2027-01-02T00:00:00Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
        ] {
            assert_eq!(Utc(secs).to_string(), text);
        }
    }
    use nix::sys::socket::{setsockopt, sockopt};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A line the socket takes only part of (a long one into a small buffer): the rest is
    /// dropped and counted, and once the reader reads again the note starts a line of its
    /// own, not glued to that tail; then the count is back to zero.
    #[test]
    fn a_cut_line_is_ended_before_the_note() {
        let (writer, mut reader) = UnixStream::pair().unwrap();
        setsockopt(&writer, sockopt::SndBuf, &4096).unwrap();
        writer.set_nonblocking(true).unwrap();
        let mut log = Log {
            fd: &writer,
            how: How::Send,
        };
        let long = [b'x'; 64 * 1024];
        let mut partial = false;
        for _ in 0..64 {
            let n = log.write(&long).unwrap();
            partial |= n < long.len();
            if n < long.len() {
                // as write_all would: the rest, which cannot go now
                assert_eq!(log.write(&long[n..]).unwrap(), long.len() - n);
                break;
            }
        }
        assert!(partial, "the socket never took part of a line");
        assert!(DROPPED.load(Relaxed) >= 1);
        reader.set_nonblocking(true).unwrap();
        // Everything the socket holds now, appended to `got`.
        let drain = |reader: &mut UnixStream, got: &mut Vec<u8>| {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        };
        let mut got = Vec::new();
        drain(&mut reader, &mut got);
        log.write_all(b"[INFO  tether] next\n").unwrap();
        drain(&mut reader, &mut got);
        let text = String::from_utf8_lossy(&got);
        let note = text
            .lines()
            .find(|l| l.contains("log line(s) dropped"))
            .unwrap_or_else(|| {
                panic!(
                    "no note in the last 200 bytes: {:?}",
                    &text[text.len().saturating_sub(200)..]
                )
            });
        assert!(note.starts_with("[WARN  tether] "), "{note:?}");
        assert!(text.ends_with("[INFO  tether] next\n"));
        assert_eq!(DROPPED.load(Relaxed), 0);
    }
}
