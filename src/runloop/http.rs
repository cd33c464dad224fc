//! The run loop's HTTP side for `--metrics`: its own small slot table
//! ([`HTTP_SLOTS`]), apart from the control clients, so a scrape flood never takes a
//! control slot and a full control table never blocks a scrape.
//!
//! Only the run loop drives this (poll interest, readiness, timers); bytes are parsed and
//! framed by `proto::http`, the body is `metrics::render`'s. Every buffer is allocated
//! once when metrics are turned on; serving a request allocates nothing.
//!
//! A connection's life: `Head` (reading a request head; [`HTTP_HEAD_TIMEOUT_SECS`] from
//! the connection or the head's first byte) -> `Send` (the whole response is in the slot's
//! buffer; [`HTTP_SEND_TIMEOUT_SECS`] to take it) -> back to `Head` when kept alive (idle
//! up to [`HTTP_KEEPALIVE_SECS`], given up for a new connection when every slot is busy),
//! or out of the slot, to the run loop's lingering connections (write side shut, input
//! dropped until the peer closes), so the last response is not destroyed by a reset.
//!
//! A new connection that finds every slot taken takes one whose connection needs it least
//! (`Http::seat`): a response its peer has taken nothing of, or a request head that has
//! not come (not a byte, or not all of it), within [`HTTP_HEAD_GRACE_MS`]; then kept-alive
//! and idle; then a head still in its grace (the oldest, one that has sent nothing
//! first). It is answered 503 only when every slot has a request in progress. New
//! connections are accepted at once: one left in the listen backlog lets a flood of
//! connects fill it, and the scraper's SYN is dropped (a 1, 3, 7 s wait). The kernel hands
//! a connection over only once its first bytes have come (`net::defer_accept` on the
//! listeners), so silent connects never reach a slot (until the kernel stops waiting,
//! about 7 s), and a scraper's request is there when it is accepted; except under a flood
//! of connects that fills the listen queue, when the kernel hands over its syncookie
//! connections at the handshake's end. A newcomer with no request yet never takes a
//! kept-alive connection's slot. One request per slot is answered per turn.

use crate::limits::{
    HTTP_HEAD_GRACE_MS, HTTP_HEAD_MAX, HTTP_HEAD_TIMEOUT_SECS, HTTP_KEEPALIVE_SECS,
    HTTP_READS_PER_TURN, HTTP_RESP_HEAD_MAX, HTTP_RESP_MAX, HTTP_SEND_TIMEOUT_SECS, HTTP_SLOTS,
};
use crate::metrics::HttpStats;
use crate::proto::http::{
    parse_head, write_error, write_head, Method, Parse, Status, METRICS_CONTENT_TYPE, SHORTEST_HEAD,
};
use crate::proto::wbuf::WBuf;
use crate::sys::net::{self, Io as NetIo};
use nix::errno::Errno;
use nix::poll::PollFlags;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

const HEAD_TIMEOUT: Duration = Duration::from_secs(HTTP_HEAD_TIMEOUT_SECS);
const HEAD_GRACE: Duration = Duration::from_millis(HTTP_HEAD_GRACE_MS);
const KEEPALIVE: Duration = Duration::from_secs(HTTP_KEEPALIVE_SECS);
const SEND_TIMEOUT: Duration = Duration::from_secs(HTTP_SEND_TIMEOUT_SECS);

/// Writes the `/metrics` body; the run loop passes a closure over the agent and its Env.
pub type Render<'r> = dyn FnMut(&mut WBuf<'_>, &HttpStats) -> fmt::Result + 'r;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Send { keep_alive: bool },
}

struct Slot {
    fd: Option<OwnedFd>,
    generation: u32,
    phase: Phase,
    inbuf: [u8; HTTP_HEAD_MAX],
    in_len: usize,
    out: Box<[u8; HTTP_RESP_MAX]>,
    out_start: usize,
    out_end: usize,
    deadline: Instant,
    /// When the clock of the request head awaited started ([`Slot::start_head`]), or
    /// the response being sent last made progress.
    head_since: Instant,
    /// Responses completed on this connection.
    served: u32,
    /// Sent bytes its peer had not taken (SIOCOUTQ) when the socket last took no more:
    /// fewer now means the peer is taking the response, though poll(2) says so only once
    /// half the send buffer is free (on a slow link, seconds later).
    outq: usize,
    /// Bytes of a pipelined request are in `inbuf`, not yet parsed: one request is
    /// answered per slot per turn (a peer pipelining hundreds does not stall the loop
    /// while its socket buffer takes their answers), the next on the following turn.
    queued: bool,
}

/// What a connection in its head phase waits for, with no whole request possibly waiting
/// unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaits {
    /// Kept alive after its answers: the next request, not begun.
    Next,
    /// Its first request, or the rest of one: `got` bytes of it came.
    Head { got: usize },
    /// Room in its socket for the answer to a pipelined request already read
    /// ([`Slot::queued`]): its peer to take the answers sent.
    Room,
}

/// Where a new connection goes ([`Http::seat`]).
enum Seat {
    /// Slot `i`: free, or given up by its connection for the reason given.
    Slot(usize, &'static str),
    /// Every slot has a request in progress.
    Busy,
}

impl Slot {
    fn new(now: Instant) -> Slot {
        Slot {
            fd: None,
            generation: 0,
            phase: Phase::Head,
            inbuf: [0; HTTP_HEAD_MAX],
            in_len: 0,
            out: Box::new([0; HTTP_RESP_MAX]),
            out_start: 0,
            out_end: 0,
            deadline: now,
            head_since: now,
            served: 0,
            queued: false,
            outq: 0,
        }
    }

    /// The clock of a request head starts (at the connection, at a head's first byte, or
    /// when a response is sent with part of the next request already read): the head has
    /// [`HEAD_TIMEOUT`], and after [`HEAD_GRACE`] its slot may go to a new connection.
    fn start_head(&mut self, now: Instant) {
        self.head_since = now;
        self.deadline = now + HEAD_TIMEOUT;
    }

    /// In its head phase with no whole request waiting on the socket (the run loop
    /// accepts before it reads, so a scraper's request is there, unread, when a new
    /// connection wants the slot; fewer than [`SHORTEST_HEAD`] bytes cannot be one):
    /// what it waits for.
    fn awaits(&self) -> Option<Awaits> {
        let fd = self.fd.as_ref()?;
        if self.phase != Phase::Head {
            return None;
        }
        if self.queued {
            return Some(Awaits::Room);
        }
        let unread = net::unread(fd.as_fd());
        if unread >= SHORTEST_HEAD {
            return None;
        }
        let got = self.in_len + unread;
        Some(match got == 0 && self.served > 0 {
            true => Awaits::Next,
            false => Awaits::Head { got },
        })
    }
}

/// What one accept gave.
pub enum Accepted {
    /// Nothing (more) waiting, or an error already handled.
    None,
    /// In a slot. A connection that gave the slot up after an answer is handed back to be
    /// lingered (half-closed, drained) rather than reset; one never answered is closed.
    Slot(Option<OwnedFd>),
    /// Every slot busy: the 503 was sent; the caller lingers the fd, then closes it.
    Refused(OwnedFd),
    /// Out of fds or memory: the caller pauses accepting.
    Pause(Errno),
    /// Would leave too few fds spare (`net::in_fd_reserve`): the 503 was sent; the caller
    /// closes the fd at once and pauses accepting.
    Spare(OwnedFd),
}

/// The HTTP slot table (the listeners are [`super::Devices::metrics`]). Empty (and
/// allocation-free) when `--metrics` is not given.
pub struct Http {
    slots: Vec<Slot>,
    stats: HttpStats,
    /// A connection that has sent its last response, out of its slot: [`Http::ready`]
    /// hands it to the run loop to linger.
    done: Option<OwnedFd>,
}

impl Http {
    pub fn off() -> Http {
        Http {
            slots: Vec::new(),
            stats: HttpStats::default(),
            done: None,
        }
    }

    /// The slot table with its buffers, allocated now (start-up).
    pub fn new(now: Instant) -> Http {
        Http {
            slots: (0..HTTP_SLOTS).map(|_| Slot::new(now)).collect(),
            stats: HttpStats::default(),
            done: None,
        }
    }

    pub fn stats(&self) -> HttpStats {
        HttpStats {
            clients: self.slots.iter().filter(|s| s.fd.is_some()).count(),
            ..self.stats
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Slot `i`'s fd, generation and poll interest, when it is in use.
    pub fn interest(&self, i: usize) -> Option<(BorrowedFd<'_>, u32, PollFlags)> {
        let s = &self.slots[i];
        let fd = s.fd.as_ref()?;
        let ev = match s.phase {
            // Room to send its answer is all a queued request waits for.
            Phase::Head if s.queued => PollFlags::POLLOUT,
            Phase::Head if s.in_len < HTTP_HEAD_MAX => PollFlags::POLLIN,
            Phase::Head => PollFlags::empty(),
            Phase::Send { .. } => PollFlags::POLLOUT,
        };
        Some((fd.as_fd(), s.generation, ev))
    }

    pub fn generation(&self, i: usize) -> u32 {
        self.slots[i].generation
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.fd.is_some())
            .map(|s| s.deadline)
            .min()
    }

    /// Where a new connection would go now: a free slot, else the slot of a connection
    /// that needs it least: one whose peer has closed, with no request of it to answer;
    /// then a response its peer has taken nothing of, or a request head
    /// that has not come, within [`HEAD_GRACE`] (the oldest first: a scraper sends its
    /// request at once and reads its answer, so these are peers holding a slot without
    /// asking, slowloris, or asking without reading); then the kept-alive one idle the
    /// longest; then one pipelining requests, between two answers (HTTP lets a server
    /// close a kept-alive connection there: its client sends the rest again); then a head
    /// still in its grace (the oldest, one that has sent nothing first: the listeners
    /// defer accepts until a connection's first bytes, so one with nothing is a peer the
    /// kernel stopped waiting for; then one with fewer bytes than [`SHORTEST_HEAD`]; one
    /// with a request line's worth last). A slot with a request waiting unread (a
    /// scraper's, just accepted), or sending a response that moves, is never taken.
    ///
    /// All that goes for a newcomer `asking` (a whole request may be waiting on it, as a
    /// scraper's is when it is accepted). One that is not never takes a kept-alive
    /// connection's slot, nor that of a head in its grace with a request line's worth in:
    /// an answered peer that keeps its connection (Prometheus does), or a scraper whose
    /// head came split, is not closed for one that has asked nothing. Such newcomers come under a flood:
    /// its connects fill the listen queue, the kernel answers SYNs with syncookies, and
    /// those connections are handed over at their handshake's end, before any data, even
    /// with `TCP_DEFER_ACCEPT` (a scraper's among them: it still takes a head's slot).
    fn seat(&mut self, now: Instant, asking: bool) -> Seat {
        if let Some(i) = self.slots.iter().position(|s| s.fd.is_none()) {
            return Seat::Slot(i, "");
        }
        self.note_taken(now);
        let mut best: Option<(u8, Instant, usize)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            let graced = s.head_since + HEAD_GRACE > now;
            let gone = || s.fd.as_ref().is_some_and(|f| net::peer_gone(f.as_fd()));
            let rank = match (s.phase, s.awaits()) {
                // Its peer closed, and it has no request to answer (none queued: a peer
                // may pipeline, then shut its side): read in this turn's reads, after the
                // accepts, it would only be closed.
                (Phase::Head, _) if !s.queued && gone() => (0, s.head_since, i),
                (Phase::Send { .. }, _) | (_, Some(Awaits::Room | Awaits::Head { .. }))
                    if !graced =>
                {
                    (1, s.head_since, i)
                }
                (_, Some(Awaits::Next)) => (2, s.deadline, i),
                (_, Some(Awaits::Room)) => (3, s.head_since, i),
                // Nothing, a byte or so of a flood, a request line at least: a head
                // split in segments (a scraper's, on a lossy link).
                (_, Some(Awaits::Head { got: 0 })) => (4, s.head_since, i),
                (_, Some(Awaits::Head { got })) if got < SHORTEST_HEAD => (5, s.head_since, i),
                (_, Some(Awaits::Head { .. })) => (6, s.head_since, i),
                _ => continue,
            };
            let kept = matches!(rank.0, 2 | 3 | 6);
            if (asking || !kept) && best.is_none_or(|b| rank < b) {
                best = Some(rank);
            }
        }
        match best {
            Some((0, _, i)) => Seat::Slot(i, "its peer closed"),
            Some((1, _, i)) => Seat::Slot(
                i,
                "no request head, or nothing of its response taken, within the grace",
            ),
            Some((2, _, i)) => Seat::Slot(i, "kept alive, idle"),
            Some((3, _, i)) => Seat::Slot(i, "pipelining, between answers"),
            Some((_, _, i)) => Seat::Slot(i, "the oldest head, in its grace"),
            None => Seat::Busy,
        }
    }

    /// Answers `conn` 503 (not taken into a slot: `why`) and counts it.
    fn refuse(&mut self, conn: &OwnedFd, why: &str) {
        self.stats.refused += 1;
        log::debug!("http client refused: {why}");
        let mut b = [0u8; HTTP_RESP_HEAD_MAX + 64];
        let mut w = WBuf::new(&mut b);
        if write_error(&mut w, Status::ServiceUnavailable, false, false, false).is_ok() {
            let _ = net::send(conn.as_fd(), w.as_bytes());
        }
    }

    /// A response whose peer has taken some of it since the socket last took no more has
    /// made progress now (its grace starts again), as if poll(2) had said so.
    fn note_taken(&mut self, now: Instant) {
        for s in self.slots.iter_mut() {
            let Some(fd) = &s.fd else { continue };
            if matches!(s.phase, Phase::Send { .. }) {
                let q = net::unsent(fd.as_fd());
                if q < s.outq {
                    s.outq = q;
                    s.head_since = now;
                }
            }
        }
    }

    /// Accepts one connection from `listener` into a free slot (or the slot of a
    /// connection that needs it least, `Http::seat`), else answers it 503.
    pub fn accept_one(&mut self, now: Instant, listener: BorrowedFd<'_>) -> Accepted {
        let conn = match net::accept(listener, true) {
            net::Accept::Conn(c) => c,
            net::Accept::None => return Accepted::None,
            net::Accept::Short(e) => return Accepted::Pause(e),
            net::Accept::Spare(conn) => {
                self.refuse(&conn, "keeping fds spare");
                return Accepted::Spare(conn);
            }
        };
        let asking = net::unread(conn.as_fd()) >= SHORTEST_HEAD;
        let Seat::Slot(i, why) = self.seat(now, asking) else {
            let why = match asking {
                true => "every slot busy",
                false => "no request yet, no slot to spare",
            };
            self.refuse(&conn, why);
            return Accepted::Refused(conn);
        };
        // One never answered has no response to keep from a reset: closed now, not lingered
        // (a flood of them would fill the lingering list for nothing).
        let s = &mut self.slots[i];
        let answered = s.served > 0 || s.phase != Phase::Head;
        let evicted = s.fd.take().filter(|_| answered);
        if !why.is_empty() {
            let to = if answered { "lingering" } else { "closed" };
            log::debug!("http client {i} gives its slot up ({why}; {to})");
        }
        self.close(i, "");
        let s = &mut self.slots[i];
        s.fd = Some(conn);
        s.generation = s.generation.wrapping_add(1);
        s.phase = Phase::Head;
        s.in_len = 0;
        s.out_start = 0;
        s.out_end = 0;
        s.start_head(now);
        s.served = 0;
        log::debug!("http client {i} connected");
        Accepted::Slot(evicted)
    }

    fn close(&mut self, i: usize, why: &str) {
        if self.release(i).is_some() {
            log::debug!("http client {i} closed: {why}");
        }
    }

    /// Empties slot `i` and hands its connection back.
    fn release(&mut self, i: usize) -> Option<OwnedFd> {
        let s = &mut self.slots[i];
        s.in_len = 0;
        s.out_start = 0;
        s.out_end = 0;
        s.phase = Phase::Head;
        s.queued = false;
        s.fd.take()
    }

    /// Poll said slot `i` is ready. Returns a connection that has sent its last response,
    /// for the caller to linger (half-closed, drained).
    pub fn ready(
        &mut self,
        i: usize,
        ev: PollFlags,
        now: Instant,
        render: &mut Render<'_>,
    ) -> Option<OwnedFd> {
        if self.slots[i].fd.is_some() {
            self.serve(i, ev, now, render);
        }
        self.done.take()
    }

    fn serve(&mut self, i: usize, ev: PollFlags, now: Instant, render: &mut Render<'_>) {
        if ev.intersects(PollFlags::POLLOUT) {
            self.flush(i, now);
            // A pipelined request may already be waiting.
            self.process(i, now, render);
        }
        if ev.intersects(PollFlags::POLLIN) {
            self.read(i, now, render);
        }
        if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) && self.slots[i].fd.is_some() {
            self.close(i, "hang-up");
        }
    }

    fn read(&mut self, i: usize, now: Instant, render: &mut Render<'_>) {
        for _ in 0..HTTP_READS_PER_TURN {
            let s = &mut self.slots[i];
            let Some(fd) = &s.fd else { return };
            match s.phase {
                Phase::Send { .. } => return,
                Phase::Head if s.queued || s.in_len >= HTTP_HEAD_MAX => return,
                Phase::Head => {}
            }
            let was_empty = s.in_len == 0;
            match net::recv(fd.as_fd(), &mut s.inbuf[s.in_len..]) {
                NetIo::Done(n) => {
                    s.in_len += n;
                    if was_empty {
                        // A head's clock starts with its first byte.
                        s.start_head(now);
                    }
                    self.process(i, now, render);
                }
                NetIo::WouldBlock => return,
                NetIo::Closed => return self.close(i, "peer closed"),
            }
        }
    }

    /// Answers the first request head complete in slot `i`'s buffer, if there is one;
    /// a pipelined one after it waits for the next turn (`Slot::queued`), and for its
    /// predecessor's response to be fully sent.
    fn process(&mut self, i: usize, now: Instant, render: &mut Render<'_>) {
        let s = &mut self.slots[i];
        if s.fd.is_none() || s.phase != Phase::Head || s.in_len == 0 {
            return;
        }
        s.queued = false;
        let (status, method, keep_alive, http10) = match parse_head(&s.inbuf[..s.in_len]) {
            Parse::Incomplete if s.in_len < HTTP_HEAD_MAX => return,
            Parse::Incomplete => (Status::HeaderTooLarge, Method::Get, false, false),
            Parse::Bad(st) => (st, Method::Get, false, false),
            Parse::Done(r) => {
                s.inbuf.copy_within(r.len..s.in_len, 0);
                s.in_len -= r.len;
                (r.status(), r.method, r.keep_alive, r.http10)
            }
        };
        if status.closes() {
            s.in_len = 0;
        }
        s.queued = s.in_len > 0;
        let head_only = method == Method::Head;
        self.respond(i, status, head_only, keep_alive, http10, render);
        let s = &mut self.slots[i];
        s.deadline = now + SEND_TIMEOUT;
        s.head_since = now;
        self.flush(i, now);
    }

    /// Puts the whole response into slot `i`'s buffer. The body is rendered first, after
    /// room for the head, so the head can say its exact length without a second copy.
    fn respond(
        &mut self,
        i: usize,
        status: Status,
        head_only: bool,
        keep_alive: bool,
        http10: bool,
        render: &mut Render<'_>,
    ) {
        self.stats.requests += 1;
        let stats = self.stats();
        let s = &mut self.slots[i];
        let keep_alive = keep_alive && !status.closes();
        let mut status = status;
        let mut body_len = 0;
        if status == Status::Ok {
            let mut w = WBuf::new(&mut s.out[HTTP_RESP_HEAD_MAX..]);
            match render(&mut w, &stats) {
                Ok(()) => body_len = w.len(),
                // Cannot happen with HTTP_RESP_MAX (see limits.rs and metrics' tests).
                Err(_) => status = Status::ServiceUnavailable,
            }
        }
        let mut head = [0u8; HTTP_RESP_HEAD_MAX];
        let mut w = WBuf::new(&mut head);
        let r = if status == Status::Ok {
            write_head(
                &mut w,
                status,
                METRICS_CONTENT_TYPE,
                body_len,
                keep_alive,
                http10,
            )
        } else {
            body_len = 0;
            write_error(&mut w, status, head_only, keep_alive, http10)
        };
        let keep_alive = keep_alive && !status.closes() && r.is_ok();
        let hl = w.len();
        let start = HTTP_RESP_HEAD_MAX - hl;
        s.out[start..HTTP_RESP_HEAD_MAX].copy_from_slice(&head[..hl]);
        s.out_start = start;
        s.out_end = HTTP_RESP_HEAD_MAX + if head_only { 0 } else { body_len };
        s.phase = Phase::Send { keep_alive };
    }

    fn flush(&mut self, i: usize, now: Instant) {
        let s = &mut self.slots[i];
        let Some(fd) = &s.fd else { return };
        let Phase::Send { keep_alive } = s.phase else {
            return;
        };
        while s.out_start < s.out_end {
            match net::send(fd.as_fd(), &s.out[s.out_start..s.out_end]) {
                NetIo::Done(n) => {
                    s.out_start += n;
                    s.head_since = now;
                }
                NetIo::WouldBlock => {
                    s.outq = net::unsent(fd.as_fd());
                    return;
                }
                NetIo::Closed => return self.close(i, "send failed"),
            }
        }
        s.out_start = 0;
        s.out_end = 0;
        s.served = s.served.saturating_add(1);
        if keep_alive {
            s.phase = Phase::Head;
            if s.in_len == 0 {
                s.deadline = now + KEEPALIVE;
            } else {
                s.start_head(now);
            }
        } else {
            self.done = self.release(i);
            log::debug!("http client {i} closed after its last response (lingering)");
        }
    }

    /// Closes every connection whose deadline has passed.
    pub fn timers(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.fd.is_some() && s.deadline <= now {
                let why = match s.phase {
                    Phase::Head if s.awaits() == Some(Awaits::Next) => "keep-alive timeout",
                    Phase::Head if !s.queued => "request head timeout",
                    // Sending, or a queued request's answer waiting for room.
                    _ => "send timeout (client does not read)",
                };
                self.close(i, why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;

    const GET: &[u8] = b"GET /metrics HTTP/1.1\r\n\r\n";

    /// Slot `i` in use over one end of a socket pair, answered `served` times, with
    /// `inbuf` read (`queued`: a pipelined request among it); the peer's end is returned.
    fn occupy(h: &mut Http, i: usize, served: u32, inbuf: &[u8], queued: bool) -> UnixStream {
        let (ours, peer) = UnixStream::pair().expect("socketpair");
        let s = &mut h.slots[i];
        s.fd = Some(OwnedFd::from(ours));
        s.served = served;
        s.inbuf[..inbuf.len()].copy_from_slice(inbuf);
        s.in_len = inbuf.len();
        s.queued = queued;
        peer
    }

    /// A peer that pipelined requests, then shut its write side: what it asked is read and
    /// queued, so its slot is not one "whose peer closed" (the kernel's queue, empty but
    /// for the end of the stream, says so). A newcomer that asks nothing yet is refused;
    /// one that asks takes the slot kept alive and idle, not the pipeliner's.
    #[test]
    fn a_pipeliner_that_shut_its_side_keeps_its_slot() {
        let now = Instant::now();
        let mut h = Http::new(now);
        let last = HTTP_SLOTS - 1;
        let _idle: Vec<UnixStream> = (0..last)
            .map(|i| occupy(&mut h, i, 1, b"", false))
            .collect();
        let pipeliner = occupy(&mut h, last, 1, &[GET, GET].concat(), true);
        pipeliner.shutdown(Shutdown::Write).expect("shutdown");
        assert!(net::peer_gone(
            h.slots[last].fd.as_ref().expect("fd").as_fd()
        ));
        assert!(matches!(h.seat(now, false), Seat::Busy));
        assert!(matches!(h.seat(now, true), Seat::Slot(i, "kept alive, idle") if i < last));
        // Its queued requests answered, the slot of the peer that closed goes first.
        h.slots[last].queued = false;
        h.slots[last].in_len = 0;
        assert!(matches!(h.seat(now, false), Seat::Slot(i, "its peer closed") if i == last));
    }
}
