//! The agent's log lines on stderr, without ever blocking the poll loop on them.
//!
//! Under systemd, stderr is a stream socket to journald. When journald stops reading (stuck
//! behind a slow SD card, say) that socket fills, and a blocking write(2) of the next log line
//! would stop the whole loop: no client, beacon or scrape served until the watchdog kills the
//! agent, and its successor blocks again at its first line. So when stderr is a socket, each
//! line is sent with `MSG_DONTWAIT` ([`net::send`]): a line the socket cannot take now is
//! dropped and counted, and the next line that goes through is preceded by one saying how
//! many were lost. Any other stderr (a terminal, a file, a pipe) is written as before: its
//! file description may be shared with a shell, so it is never made non-blocking.

use super::net::{self, Io};
use std::fmt::Write as _;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Log lines dropped since the last one that went through.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Whether the last byte that went out ended a line. A line the socket took only part of
/// (the rest dropped) is ended by the note, so the note is not glued to its tail.
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

/// Whether stderr is a socket (journald's stream under systemd, or any other).
pub fn is_socket() -> bool {
    nix::sys::stat::fstat(io::stderr().as_fd()).is_ok_and(|st| {
        let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode);
        kind & nix::sys::stat::SFlag::S_IFMT == nix::sys::stat::SFlag::S_IFSOCK
    })
}

/// A socket log lines are written to without waiting (see the module's text): stderr's,
/// `SocketLog(std::io::stderr())`.
pub struct SocketLog<F: AsFd>(pub F);

/// One line the socket could not take: counted, and reported as written (a short count
/// would have env_logger try the rest at once, which cannot go either).
fn drop_line(len: usize) -> io::Result<usize> {
    DROPPED.fetch_add(1, Relaxed);
    Ok(len)
}

impl<F: AsFd> SocketLog<F> {
    /// Sends what it can of `buf` now: `Ok(None)` when the socket is full.
    fn send_now(&self, buf: &[u8]) -> io::Result<Option<usize>> {
        match net::send(self.0.as_fd(), buf) {
            Io::Done(n) => {
                if let Some(&last) = buf[..n].last() {
                    AT_LINE_START.store(last == b'\n', Relaxed);
                }
                Ok(Some(n))
            }
            Io::WouldBlock => Ok(None),
            Io::Closed => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
}

impl<F: AsFd> io::Write for SocketLog<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let dropped = DROPPED.load(Relaxed);
        if dropped > 0 {
            let mut note = heapless::String::<96>::new();
            let open = if AT_LINE_START.load(Relaxed) {
                ""
            } else {
                "\n"
            };
            let _ = writeln!(
                note,
                "{open}[WARN  tether] {dropped} log line(s) dropped: stderr did not take them in time"
            );
            match self.send_now(note.as_bytes())? {
                // Only a whole note reports them; after part of one the next note says it all.
                Some(n) if n == note.len() => {
                    DROPPED.fetch_sub(dropped, Relaxed);
                }
                Some(_) => {}
                None => return drop_line(buf.len()),
            }
        }
        match self.send_now(buf)? {
            Some(n) => Ok(n),
            None => drop_line(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut log = SocketLog(&writer);
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
