//! One control-port client connection (TCP or Unix): its fd, the generation of its slot,
//! its protocol session, and its fixed input and output buffers, with the few operations
//! the run loop needs: [`Conn::read`], [`Conn::answer`], [`Conn::flush`] and
//! [`Conn::reset`].
//!
//! Requests are framed in place in the input buffer (`proto::line`) and answers are written
//! straight into the free end of the output buffer: a request's bytes are never copied to a
//! line or scratch buffer. [`Conn::answer`] goes through every complete line of a batch in
//! one pass, with the connection's buffers and session borrowed once. This module moves
//! bytes and keeps indices; it does not poll (the run loop does), parse (`proto`) or
//! answer (`agent`).

use crate::agent::{Outcome, Session, Transport};
use crate::limits::{IN_BUF, OUT_BUF, REPLY_MAX, REPLY_STALL_MIN_SECS, TRACE_REPLY_MAX};
use crate::proto::line::{next_line, Frame};
use crate::proto::wbuf::WBuf;
use crate::sys::net::{self, Io as NetIo};
use nix::poll::PollFlags;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long waiting replies may go untaken: the idle time, at least [`REPLY_STALL_MIN_SECS`].
fn stall_limit(idle: Duration) -> Duration {
    idle.max(Duration::from_secs(REPLY_STALL_MIN_SECS))
}

/// One slot's input and output buffers (see [`Conn::buffers`]).
pub type Buffers = (&'static mut [u8], &'static mut [u8]);

pub struct Conn {
    fd: Option<OwnedFd>,
    /// Bumped on every open of this slot: a poll result taken before a slot was reused
    /// in the same turn must not be applied to the new connection.
    generation: u32,
    pub session: Session,
    /// [`IN_BUF`] bytes of [`Conn::buffers`]: the bytes in use are not framed yet. Framed
    /// lines are only skipped over; the rest moves to the front only when a line is
    /// incomplete.
    input: Bytes,
    /// [`OUT_BUF`] bytes of [`Conn::buffers`]: the bytes in use wait to be sent.
    output: Bytes,
    /// When it last sent something, or took the last of its waiting replies: the idle time
    /// runs from here while no reply waits.
    pub last_rx: Instant,
    /// Replies wait (the socket took only part of them): since when the client has shown
    /// no sign of reading (the socket took no byte, and its queue of sent bytes the client
    /// has not read got no shorter), and that queue's length then. The idle time later (see
    /// [`stall_limit`]) it is closed as one that stopped reading, as one that stopped
    /// sending is.
    waiting: Option<(Instant, usize)>,
    /// The last reply is queued; flush it, then close (and linger).
    pub closing: bool,
    /// The peer has sent everything (EOF: it closed, or half-closed and may still read).
    /// Nothing more is read; complete lines are answered and the connection closes once
    /// their replies are sent ([`Conn::finished`]).
    pub eof: bool,
    /// The peer closed without reading its replies, leaving requests unread (see
    /// [`Conn::unheard`]): they are read and answered, the replies dropped.
    unheard: bool,
}

/// One of a connection's buffers: `buf[start..end]` is in use.
struct Bytes {
    buf: &'static mut [u8],
    start: usize,
    end: usize,
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

/// Why [`Conn::answer`] stopped answering.
pub enum Stop {
    /// Every complete line is answered: what is left is at most part of one.
    Incomplete,
    /// A line longer than the protocol allows (the input is dropped).
    TooLong,
    /// The output buffer has no room for the largest reply: flush, then go on.
    Full,
    /// A reply's outcome other than [`Outcome::Continue`].
    Outcome(Outcome),
}

/// What [`Conn::expired`] found.
#[derive(PartialEq, Eq)]
pub enum Expired {
    No,
    /// Sent nothing for the idle time.
    Idle,
    /// Took none of its waiting replies for the idle time (at least [`REPLY_STALL_MIN_SECS`]).
    Stalled,
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
    /// The input and output buffers of `n` slots, cut from one mapping of zeroed pages
    /// made at start-up and kept for the life of the process ([`crate::sys::zeroed_pages`]):
    /// a slot's pages become resident only once a client has used them, so sixteen idle
    /// slots cost no RSS. Err: no memory for them (ENOMEM).
    pub fn buffers(n: usize) -> Result<impl Iterator<Item = Buffers>, nix::errno::Errno> {
        let all = crate::sys::zeroed_pages(n * (IN_BUF + OUT_BUF))?;
        Ok(all
            .chunks_exact_mut(IN_BUF + OUT_BUF)
            .map(|b| b.split_at_mut(IN_BUF)))
    }

    /// An empty slot over buffers from [`Conn::buffers`].
    pub fn new(now: Instant, (inbuf, out): Buffers) -> Conn {
        Conn {
            fd: None,
            generation: 0,
            session: Session::new(Transport::Tcp),
            input: Bytes {
                buf: inbuf,
                start: 0,
                end: 0,
            },
            output: Bytes {
                buf: out,
                start: 0,
                end: 0,
            },
            last_rx: now,
            waiting: None,
            closing: false,
            eof: false,
            unheard: false,
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
        (self.input.start, self.input.end) = (0, 0);
        (self.output.start, self.output.end) = (0, 0);
        self.session.hold_until = None;
        self.waiting = None;
        self.closing = false;
        self.eof = false;
        self.unheard = false;
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

    /// Is its input to be read and answered now?
    #[inline(always)]
    pub fn reading(&self, now: Instant) -> bool {
        !self.closing
            && !self.eof
            && !self.backed_up()
            && !self.session.held(now)
            && self.input.end - self.input.start < IN_BUF
    }

    /// Are its complete lines to be answered now (not closing, held or backed up)?
    pub fn answering(&self, now: Instant) -> bool {
        self.is_open() && !self.closing && !self.backed_up() && !self.session.held(now)
    }

    /// Back-pressure: the unsent replies leave no room for the largest reply, even moved to
    /// the front (a flush left them: the socket takes no more), so nothing is read or
    /// answered until a flush makes room. The requests wait in the kernel and the client's
    /// send blocks: a client may pipeline as much as it likes and read as slowly as it
    /// likes.
    #[inline(always)]
    pub fn backed_up(&self) -> bool {
        !self.output.has_room()
    }

    /// After EOF: is every complete line answered (what is left is at most a partial
    /// line, which can never be completed)? Then, with its replies sent, it closes.
    pub fn finished(&self) -> bool {
        self.eof && !self.has_line()
    }

    /// Is a complete line waiting to be answered?
    fn has_line(&self) -> bool {
        matches!(next_line(self.input.unframed()), Frame::Line(..))
    }

    pub fn has_input(&self) -> bool {
        self.input.end > self.input.start
    }

    pub fn has_output(&self) -> bool {
        self.output.end > self.output.start
    }

    /// Poll interest: input while it is being read, output while replies wait.
    pub fn interest(&self, now: Instant) -> PollFlags {
        let mut ev = PollFlags::empty();
        if self.reading(now) {
            ev |= PollFlags::POLLIN;
        }
        if self.has_output() {
            ev |= PollFlags::POLLOUT;
        }
        ev
    }

    /// Its own deadline: the end of a hold, or of the idle time (while replies wait: the
    /// time they may wait untaken).
    pub fn deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        match (self.session.hold_until, self.quiet_until(idle)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When it will have been quiet too long: the idle time after it last sent something,
    /// or (while replies wait) [`stall_limit`] after it last showed it reads them.
    fn quiet_until(&self, idle: Option<Duration>) -> Option<Instant> {
        idle.map(|d| match self.waiting {
            Some((t, _)) => t + stall_limit(d),
            None => self.last_rx + d,
        })
    }

    /// Has it been quiet too long at `now`, and how?
    pub fn expired(&self, now: Instant, idle: Option<Duration>) -> Expired {
        match self.quiet_until(idle) {
            Some(t) if now >= t && self.waiting.is_some() => Expired::Stalled,
            Some(t) if now >= t => Expired::Idle,
            _ => Expired::No,
        }
    }

    /// Do replies wait for the client to read them (the stall clock runs)?
    pub fn replies_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// [`Expired::Stalled`]: has the client read from its socket since the clock started
    /// (the kernel has fewer of our bytes queued)? Then the clock starts again.
    pub fn read_meanwhile(&mut self, now: Instant) -> bool {
        let (Some((_, queued)), Some(fd)) = (self.waiting, self.fd()) else {
            return false;
        };
        let q = net::unsent(fd);
        self.waiting = Some((now, q));
        q < queued
    }

    /// Its peer takes no more replies (a send failed, or poll said it hung up): does it
    /// still have requests to answer? A Unix stream peer that sent a batch and closed
    /// without reading (`sendall(); close()`) leaves its requests readable, and the kernel
    /// has taken them: they are read and answered as any are, the replies dropped, and
    /// the connection closes at their end (its EOF). The replies waiting are dropped now.
    /// False, so close it now, for TCP
    /// (a peer that closed before reading resets the connection), for a connection
    /// closing or held, and when nothing is left.
    pub fn unheard(&mut self, now: Instant) -> bool {
        let Some(fd) = self.fd() else {
            return false;
        };
        if self.session.transport != Transport::Unix
            || self.closing
            || self.session.held(now)
            || !(self.has_line() || net::unread(fd) > 0)
        {
            return false;
        }
        self.unheard = true;
        (self.output.start, self.output.end) = (0, 0);
        self.waiting = None;
        true
    }

    /// One recv into the free end of the input buffer.
    pub fn read(&mut self, now: Instant) -> Read {
        let Some(fd) = &self.fd else {
            return Read::Closed;
        };
        let input = &mut self.input;
        if input.end == IN_BUF && input.start > 0 {
            input.compact();
        }
        let room = IN_BUF - input.end;
        match net::recv(fd.as_fd(), &mut input.buf[input.end..]) {
            NetIo::Done(n) => {
                input.end += n;
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

    /// Room for the largest reply at the free end of the output buffer, moving unsent
    /// bytes to the front when that makes it. False: only a flush can make room.
    pub fn make_room(&mut self) -> bool {
        self.output.make_room()
    }

    /// Answers connection `i`'s complete request lines, each framed in place in its input
    /// buffer, with `answer`, which writes the reply straight into the free end of its
    /// output buffer and is given its session and a [`Table`] of every connection (for
    /// STATUS and SOCKETS). Stops before a line when the output buffer has no room for the
    /// largest reply ([`Stop::Full`]).
    #[inline(always)]
    pub fn answer(
        conns: &mut [Conn],
        i: usize,
        mut answer: impl FnMut(&[u8], &mut Session, &mut WBuf<'_>, &Table<'_>) -> Outcome,
    ) -> Stop {
        let (before, rest) = conns.split_at_mut(i);
        let Some((me, after)) = rest.split_first_mut() else {
            return Stop::Outcome(Outcome::Close);
        };
        let Conn {
            fd,
            session,
            input,
            output,
            ..
        } = me;
        let table = Table {
            parts: [before, after],
            me: fd.as_ref().map(|f| (f.as_fd(), session.transport)),
        };
        loop {
            if !output.make_room() {
                return Stop::Full;
            }
            let line = match input.next() {
                Frame::Line(l, _) => l,
                Frame::Incomplete => {
                    input.settle(false);
                    return Stop::Incomplete;
                }
                Frame::TooLong => {
                    input.settle(true);
                    return Stop::TooLong;
                }
            };
            let start = output.end;
            let mut w = WBuf::after(output.buf, output.end);
            let outcome = answer(line, session, &mut w, &table);
            output.end = w.len();
            // -vv: each request and the start of its reply, escaped, allocating nothing.
            if log::log_enabled!(log::Level::Trace) {
                let reply = &output.buf[start..output.end];
                let reply = reply.strip_suffix(b"\n").unwrap_or(reply);
                // AUTH's argument may be the token itself (plain AUTH on the Unix socket).
                let word = line.trim_ascii_start().get(..4);
                let auth = word.is_some_and(|w| w.eq_ignore_ascii_case(b"AUTH"));
                fn text(b: &[u8]) -> &str {
                    core::str::from_utf8(b).unwrap_or("(not UTF-8)")
                }
                let line = if auth { "AUTH (not shown)" } else { text(line) };
                let reply = text(&reply[..reply.len().min(TRACE_REPLY_MAX)]);
                log::trace!("client {i}: {line:?} -> {reply:?}");
            }
            if outcome != Outcome::Continue {
                return Stop::Outcome(outcome);
            }
        }
    }

    /// Queues fixed bytes (an error line the loop itself writes). False when they do not fit.
    pub fn queue_bytes(&mut self, b: &[u8]) -> bool {
        let out = &mut self.output;
        out.make_room();
        let mut w = WBuf::after(out.buf, out.end);
        let ok = w.push_bytes(b).is_ok();
        out.end = w.len();
        ok
    }

    /// Sends queued replies until done or the socket is full. While replies wait, a send
    /// that takes bytes starts the stall clock again (see `waiting`); when the last goes,
    /// the idle time starts.
    pub fn flush(&mut self, now: Instant) -> Flushed {
        let Some(fd) = &self.fd else {
            return Flushed::Failed(0);
        };
        let out = &mut self.output;
        if self.unheard {
            (out.start, out.end) = (0, 0);
        }
        let mut sent = 0;
        while out.start < out.end {
            match net::send(fd.as_fd(), &out.buf[out.start..out.end]) {
                NetIo::Done(n) => {
                    out.start += n;
                    sent += n;
                }
                NetIo::WouldBlock => {
                    if sent > 0 || self.waiting.is_none() {
                        self.waiting = Some((now, net::unsent(fd.as_fd())));
                    }
                    return Flushed::Partly(sent);
                }
                NetIo::Closed => return Flushed::Failed(sent),
            }
        }
        (out.start, out.end) = (0, 0);
        if self.waiting.take().is_some() {
            self.last_rx = now;
        }
        Flushed::All(sent)
    }
}

impl Bytes {
    /// Moves the bytes in use to the front.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Input: the bytes not framed yet.
    #[inline(always)]
    fn unframed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Input: frames the next request in place and skips over it. After
    /// [`Frame::Incomplete`] or [`Frame::TooLong`], call [`Bytes::settle`].
    #[inline(always)]
    fn next(&mut self) -> Frame<'_> {
        let Bytes { buf, start, end } = self;
        let frame = next_line(&buf[*start..*end]);
        if let Frame::Line(_, used) = frame {
            *start += used;
        }
        frame
    }

    /// Input, after the last complete line: an incomplete one moves to the front of the
    /// buffer (the only copy, and only of a partial line); a line too long is dropped with
    /// everything after it.
    fn settle(&mut self, too_long: bool) {
        if too_long || self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 {
            self.compact();
        }
    }

    /// Output: see [`Conn::make_room`].
    #[inline(always)]
    fn make_room(&mut self) -> bool {
        if OUT_BUF - self.end >= REPLY_MAX {
            return true;
        }
        if !self.has_room() {
            return false;
        }
        self.compact();
        true
    }

    /// Output: room for the largest reply once the unsent bytes are moved to the front?
    #[inline(always)]
    fn has_room(&self) -> bool {
        OUT_BUF - (self.end - self.start) >= REPLY_MAX
    }
}
