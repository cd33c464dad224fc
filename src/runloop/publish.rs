//! The publish socket (`--publish`): a Unix datagram socket where programs on the board
//! drop one `SET key value [ttl=SECS]` or `DEL key` line per datagram, and get nothing
//! back. The core applies each datagram ([`Agent::publish`]); this module only reads them
//! (a bounded number per loop turn, so a flood cannot starve the control port: the
//! rest stay queued in the kernel for the next turn) and logs, at debug level and
//! rate-limited, who sent what (SO_PASSCRED). Owned by the run loop, like every fd.

use crate::agent::Agent;
use crate::limits::{PUBLISH_DGRAM_MAX, PUBLISH_PER_TURN};
use crate::lograte::LogRate;
use crate::proto::line::{next_line, Frame};
use crate::sys::unix::{self, Dgram, UnixListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

pub struct Publish {
    pub sock: UnixListener,
    /// Debug lines, rate-limited.
    log: LogRate,
}

impl Publish {
    pub fn new(sock: UnixListener, now: Instant) -> Publish {
        Publish {
            sock,
            log: LogRate::new(now),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.fd.as_fd()
    }

    /// Reads and applies at most [`PUBLISH_PER_TURN`] datagrams.
    pub fn readable(&mut self, now: Instant, agent: &mut Agent) {
        // One byte more than the largest valid datagram: a longer one is seen truncated.
        let mut buf = [0u8; PUBLISH_DGRAM_MAX + 1];
        for _ in 0..PUBLISH_PER_TURN {
            let d = match unix::recv_dgram(self.sock.fd.as_fd(), &mut buf) {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    log::debug!("publish socket: recvmsg: {}", e.desc());
                    return;
                }
            };
            let res = if d.truncated || d.len > PUBLISH_DGRAM_MAX {
                agent.stats.publish_rejected += 1;
                Err(crate::agent::E_PUBLISH_LINE.text)
            } else {
                agent.publish(now, &buf[..d.len]).map_err(|e| e.text)
            };
            if log::log_enabled!(log::Level::Debug) {
                self.log(now, &d, &buf[..d.len.min(PUBLISH_DGRAM_MAX)], res);
            }
        }
    }

    /// One debug line per datagram, rate-limited ([`LogRate`]).
    fn log(&mut self, now: Instant, d: &Dgram, bytes: &[u8], res: Result<(), &str>) {
        let Some(hidden) = self.log.take(now) else {
            return;
        };
        let (pid, uid) = d.cred.unwrap_or((-1, u32::MAX));
        // Less its line end only, as the agent framed it: a trailing tab or CR may be
        // what its reason names (it showed `SET k v\t` as "SET k v").
        let bytes = match next_line(bytes) {
            Frame::Line(l, used) if used == bytes.len() => l,
            _ => bytes,
        };
        let line = core::str::from_utf8(bytes).unwrap_or("(not UTF-8)");
        match res {
            Ok(()) => log::debug!("published by pid={pid} uid={uid}: {line:?}"),
            Err(why) => {
                log::debug!("publish datagram from pid={pid} uid={uid} dropped: {why}: {line:?}")
            }
        }
        if hidden > 0 {
            log::debug!("({hidden} more publish datagrams not logged)");
        }
    }

    /// Removes the socket file (clean shutdown), if it is still ours.
    pub fn remove(&self) {
        self.sock.remove();
    }
}
