//! One control-port client connection (TCP or Unix): its fd, the generation of its slot,
//! its protocol session, and its fixed input and output buffers, with the few operations
//! the run loop needs: [`Conn::read`], [`Conn::next_request`], [`Conn::queue_reply`],
//! [`Conn::flush`] and [`Conn::reset`].
//!
//! Requests are framed in place in the input buffer (`proto::line`) and answers are written
//! straight into the free end of the output buffer: a request's bytes are never copied to a
//! line or scratch buffer. This module moves bytes and keeps indices; it does not poll
//! (the run loop does), parse (`proto`) or answer (`agent`).

use crate::agent::{Outcome, Session, Transport};
use crate::limits::{IN_BUF, OUT_BUF, REPLY_MAX};
use crate::proto::line::{next_line, Frame};
use crate::proto::wbuf::WBuf;
use crate::sys::net::{self, Io as NetIo};
use nix::poll::PollFlags;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

/// One slot's input and output buffers (see [`Conn::buffers`]).
pub type Buffers = (&'static mut [u8], &'static mut [u8]);

pub struct Conn {
    fd: Option<OwnedFd>,
    /// Bumped on every open of this slot: a poll result taken before a slot was reused
    /// in the same turn must not be applied to the new connection.
    generation: u32,
    pub session: Session,
    /// [`IN_BUF`] bytes of [`Conn::buffers`].
    inbuf: &'static mut [u8],
    /// Unframed input is `inbuf[in_start..in_end]`; framed lines are only skipped over,
    /// and the rest moves to the front only when a line is incomplete.
    in_start: usize,
    in_end: usize,
    /// [`OUT_BUF`] bytes of [`Conn::buffers`].
    out: &'static mut [u8],
    out_start: usize,
    out_end: usize,
    pub last_rx: Instant,
    /// A failed AUTH holds the connection's next request until then.
    pub hold_until: Option<Instant>,
    /// The last reply is queued; flush it, then close (and linger).
    pub closing: bool,
    /// The peer has sent everything (EOF: it closed, or half-closed and may still read).
    /// Nothing more is read; complete lines are answered and the connection closes once
    /// their replies are sent ([`Conn::finished`]).
    pub eof: bool,
}

/// What one [`Conn::read`] gave.
pub enum Read {
    /// `n` bytes arrived; `filled` when they filled the room (more may be waiting).
    Got {
        n: usize,
        filled: bool,
    },
    WouldBlock,
    /// EOF or an error: the peer is gone.
    Closed,
}

/// What the next bytes of input hold.
pub enum Next {
    /// A request line (terminator removed), to hand to [`Conn::queue_reply`].
    Line(Range<usize>),
    Incomplete,
    TooLong,
}

/// What [`Conn::flush`] did.
#[derive(PartialEq, Eq)]
pub enum Flushed {
    /// Everything sent; `n` bytes now.
    All(usize),
    /// `n` bytes sent, the rest waits for POLLOUT.
    Partly(usize),
    /// The peer is gone.
    Failed(usize),
}

/// The client table as the core sees it while one connection's buffers are lent out:
/// every other connection, and that one's fd and transport.
pub struct Table<'a> {
    parts: [&'a [Conn]; 2],
    me: Option<(BorrowedFd<'a>, Transport)>,
}

impl<'a> Table<'a> {
    /// The whole table, nothing lent out.
    pub fn all(conns: &'a [Conn]) -> Table<'a> {
        Table {
            parts: [conns, &[]],
            me: None,
        }
    }

    /// Every open connection's fd and transport, in slot order.
    pub fn each(&self, mut f: impl FnMut(BorrowedFd<'_>, Transport)) {
        let open = |c: &'a Conn| c.fd.as_ref().map(|fd| (fd.as_fd(), c.session.transport));
        let (before, after) = (self.parts[0], self.parts[1]);
        before
            .iter()
            .filter_map(open)
            .chain(self.me)
            .chain(after.iter().filter_map(open))
            .for_each(|(fd, t)| f(fd, t));
    }

    /// (tcp, unix) connections open now.
    pub fn counts(&self) -> (usize, usize) {
        let mut c = (0, 0);
        self.each(|_, t| match t {
            Transport::Tcp => c.0 += 1,
            Transport::Unix => c.1 += 1,
        });
        c
    }
}

impl Conn {
    /// The input and output buffers of `n` slots, cut from one zeroed allocation made at
    /// start-up and kept for the life of the process. Zeroed memory this large comes
    /// straight from mmap(2), so a slot's pages become resident only once a client has
    /// used them: sixteen idle slots cost no RSS.
    pub fn buffers(n: usize) -> impl Iterator<Item = Buffers> {
        let all: &'static mut [u8] =
            Box::leak(vec![0u8; n * (IN_BUF + OUT_BUF)].into_boxed_slice());
        all.chunks_exact_mut(IN_BUF + OUT_BUF)
            .map(|b| b.split_at_mut(IN_BUF))
    }

    /// An empty slot over buffers from [`Conn::buffers`].
    pub fn new(now: Instant, (inbuf, out): Buffers) -> Conn {
        Conn {
            fd: None,
            generation: 0,
            session: Session::new(Transport::Tcp),
            inbuf,
            in_start: 0,
            in_end: 0,
            out,
            out_start: 0,
            out_end: 0,
            last_rx: now,
            hold_until: None,
            closing: false,
            eof: false,
        }
    }

    /// Puts a freshly accepted connection into this (free) slot.
    pub fn open(&mut self, fd: OwnedFd, transport: Transport, now: Instant) {
        self.reset();
        self.fd = Some(fd);
        self.generation = self.generation.wrapping_add(1);
        self.session = Session::new(transport);
        self.last_rx = now;
    }

    /// Empties the slot and hands its fd back (to close, or to linger).
    pub fn reset(&mut self) -> Option<OwnedFd> {
        self.in_start = 0;
        self.in_end = 0;
        self.out_start = 0;
        self.out_end = 0;
        self.hold_until = None;
        self.closing = false;
        self.eof = false;
        self.fd.take()
    }

    pub fn is_open(&self) -> bool {
        self.fd.is_some()
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    #[inline(always)]
    pub fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| t > now)
    }

    /// Is its input to be read and answered now?
    #[inline(always)]
    pub fn reading(&self, now: Instant) -> bool {
        !self.closing && !self.eof && !self.held(now) && self.in_end - self.in_start < IN_BUF
    }

    /// After EOF: is every complete line answered (what is left is at most a partial
    /// line, which can never be completed)? Then, with its replies sent, it closes.
    pub fn finished(&self) -> bool {
        self.eof
            && !matches!(
                next_line(&self.inbuf[self.in_start..self.in_end]),
                Frame::Line(..)
            )
    }

    pub fn has_input(&self) -> bool {
        self.in_end > self.in_start
    }

    /// Poll interest: input while it is being read, output while replies wait.
    pub fn interest(&self, now: Instant) -> PollFlags {
        let mut ev = PollFlags::empty();
        if self.reading(now) {
            ev |= PollFlags::POLLIN;
        }
        if self.out_end > self.out_start {
            ev |= PollFlags::POLLOUT;
        }
        ev
    }

    /// Its own deadline: the end of a hold, or of the idle time.
    pub fn deadline(&self, idle: Option<std::time::Duration>) -> Option<Instant> {
        let idle = idle.map(|d| self.last_rx + d);
        match (self.hold_until, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One recv into the free end of the input buffer.
    pub fn read(&mut self, now: Instant) -> Read {
        if self.in_end == IN_BUF && self.in_start > 0 {
            self.compact_in();
        }
        let Some(fd) = &self.fd else {
            return Read::Closed;
        };
        let room = IN_BUF - self.in_end;
        match net::recv(fd.as_fd(), &mut self.inbuf[self.in_end..]) {
            NetIo::Done(n) => {
                self.in_end += n;
                self.last_rx = now;
                Read::Got {
                    n,
                    filled: n == room,
                }
            }
            NetIo::WouldBlock => Read::WouldBlock,
            NetIo::Closed => Read::Closed,
        }
    }

    fn compact_in(&mut self) {
        self.inbuf.copy_within(self.in_start..self.in_end, 0);
        self.in_end -= self.in_start;
        self.in_start = 0;
    }

    /// Frames the next request in place. An incomplete line moves to the front of the
    /// buffer (the only copy, and only of a partial line).
    #[inline(always)]
    pub fn next_request(&mut self) -> Next {
        match next_line(&self.inbuf[self.in_start..self.in_end]) {
            Frame::Line(l, used) => {
                let start = self.in_start;
                self.in_start += used;
                Next::Line(start..start + l.len())
            }
            Frame::Incomplete => {
                if self.in_start == self.in_end {
                    self.in_start = 0;
                    self.in_end = 0;
                } else if self.in_start > 0 {
                    self.compact_in();
                }
                Next::Incomplete
            }
            Frame::TooLong => {
                self.in_start = 0;
                self.in_end = 0;
                Next::TooLong
            }
        }
    }

    /// Room for the largest reply at the free end of the output buffer, moving unsent
    /// bytes to the front when that makes it. False: only a flush can make room.
    #[inline(always)]
    pub fn make_room(&mut self) -> bool {
        if OUT_BUF - self.out_end >= REPLY_MAX {
            return true;
        }
        if self.out_start > 0 {
            self.out.copy_within(self.out_start..self.out_end, 0);
            self.out_end -= self.out_start;
            self.out_start = 0;
        }
        OUT_BUF - self.out_end >= REPLY_MAX
    }

    /// Lets `answer` write the reply to `line` (from [`Conn::next_request`] on connection
    /// `i`) straight into the free end of that connection's output buffer, with its session
    /// and a [`Table`] of every connection (for STATUS and SOCKETS). The caller has made room
    /// ([`Conn::make_room`]) or accepts that a reply which does not fit is cut short.
    pub fn queue_reply(
        conns: &mut [Conn],
        i: usize,
        line: Range<usize>,
        answer: impl FnOnce(&[u8], &mut Session, &mut WBuf<'_>, &Table<'_>) -> Outcome,
    ) -> Outcome {
        let (before, rest) = conns.split_at_mut(i);
        let Some((me, after)) = rest.split_first_mut() else {
            return Outcome::Close;
        };
        let Conn {
            fd,
            session,
            inbuf,
            out,
            out_end,
            ..
        } = me;
        let transport = session.transport;
        let table = Table {
            parts: [before, after],
            me: fd.as_ref().map(|f| (f.as_fd(), transport)),
        };
        let mut w = WBuf::new(&mut out[*out_end..]);
        let line = inbuf.get(line).unwrap_or_default();
        let outcome = answer(line, session, &mut w, &table);
        *out_end += w.len();
        outcome
    }

    /// Queues fixed bytes (an error line the loop itself writes). False when they do not fit.
    pub fn queue_bytes(&mut self, b: &[u8]) -> bool {
        self.make_room();
        let mut w = WBuf::new(&mut self.out[self.out_end..]);
        let ok = w.push_bytes(b).is_ok();
        self.out_end += w.len();
        ok
    }

    pub fn has_output(&self) -> bool {
        self.out_end > self.out_start
    }

    /// Sends queued replies until done or the socket is full.
    pub fn flush(&mut self) -> Flushed {
        let Some(fd) = &self.fd else {
            return Flushed::Failed(0);
        };
        let mut sent = 0;
        while self.out_start < self.out_end {
            match net::send(fd.as_fd(), &self.out[self.out_start..self.out_end]) {
                NetIo::Done(n) => {
                    self.out_start += n;
                    sent += n;
                }
                NetIo::WouldBlock => return Flushed::Partly(sent),
                NetIo::Closed => return Flushed::Failed(sent),
            }
        }
        self.out_start = 0;
        self.out_end = 0;
        Flushed::All(sent)
    }
}
