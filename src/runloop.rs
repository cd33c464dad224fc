//! The run loop: the agent's only caller of poll(2). It owns every fd and the client table,
//! reads the clock once per turn, moves bytes between sockets and the core, and sleeps
//! exactly until the next deadline. It parses nothing itself: framing and requests are
//! `proto`'s, answers are `agent`'s. The `--metrics` HTTP connections have their own
//! slot table in [`http`] (a submodule: the loop still owns every fd and every poll).

use crate::agent::{Agent, BeaconInfo, BeaconState, Board, Env, Led, Outcome, Session, Transport};
use crate::beacon::Family;
use crate::limits::{IN_BUF, LINE_MAX, MAX_CLIENTS, MAX_LISTENERS, OUT_BUF, REPLY_MAX};
use crate::proto::line::{next_line, Frame};
use crate::proto::reply::{write_err, ErrCode, Error};
use crate::proto::request::parse;
use crate::proto::wbuf::WBuf;
use crate::sys::led::LedFile;
use crate::sys::net::{self, Io as NetIo};
use crate::sys::signals::{Event, Signals};
use crate::sys::unix::UnixListener;
use crate::sys::SysError;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub mod http;
pub mod links;
pub mod publish;

/// Refused and closing connections wait here, read-and-discard, until the peer closes
/// or this long passes: closing a socket with unread input sends RST, which would
/// destroy our last reply (`ERR busy`, `ERR too-long`, QUIT's `OK`) before it is read.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX: usize = 16;
/// Reads per client per turn, so one fast client cannot starve the others.
const READS_PER_TURN: usize = 16;
/// After EMFILE/ENFILE on accept, stop accepting this long instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);
const POLL_MAX: usize = 1
    + MAX_LISTENERS
    + 1
    + 2 * crate::limits::MAX_BEACON_IFACES
    + MAX_CLIENTS
    + LINGER_MAX
    + 1
    + HTTP_POLL
    + PUBLISH_POLL;
/// The publish socket (`--publish`).
const PUBLISH_POLL: usize = 1;
/// The metrics listeners and HTTP slots (`--metrics`).
const HTTP_POLL: usize = crate::limits::MAX_METRICS_LISTENERS + crate::limits::HTTP_SLOTS;

const E_TOO_LONG: Error = Error::new(ErrCode::TooLong, "line exceeds 255 bytes");
const BUSY_LINE: &[u8] = b"ERR busy too many clients\n";
const _: () = assert!(LINE_MAX < IN_BUF);

struct Slot {
    fd: Option<OwnedFd>,
    /// Bumped on every accept into this slot: a poll result taken before a slot was
    /// reused in the same turn must not be applied to the new connection.
    generation: u32,
    session: Session,
    inbuf: [u8; IN_BUF],
    in_len: usize,
    out: [u8; OUT_BUF],
    out_start: usize,
    out_end: usize,
    last_rx: Instant,
    hold_until: Option<Instant>,
    closing: bool,
}

impl Slot {
    fn empty(now: Instant) -> Slot {
        Slot {
            fd: None,
            generation: 0,
            session: Session::new(Transport::Tcp),
            inbuf: [0; IN_BUF],
            in_len: 0,
            out: [0; OUT_BUF],
            out_start: 0,
            out_end: 0,
            last_rx: now,
            hold_until: None,
            closing: false,
        }
    }

    fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| t > now)
    }
}

struct Linger {
    fd: OwnedFd,
    until: Instant,
}

/// The fds and devices the core reaches through [`Env`].
pub struct Io {
    pub tcp: heapless::Vec<(OwnedFd, SocketAddr), MAX_LISTENERS>,
    pub unix: UnixListener,
    pub led: Option<LedFile>,
    pub thermal: String,
    /// The beacon interfaces (empty with `--no-beacon` or no interface to beacon on).
    pub links: links::Links,
    pub off_info: BeaconInfo,
    pub token_file: Option<std::path::PathBuf>,
    /// `--metrics` listeners (their connections are [`RunLoop::http`]'s).
    pub metrics: heapless::Vec<(OwnedFd, SocketAddr), { crate::limits::MAX_METRICS_LISTENERS }>,
    /// `--publish`: the Unix datagram socket for publishers (None: `--no-publish`).
    pub publish: Option<publish::Publish>,
    slots: Vec<Slot>,
    lingering: heapless::Vec<Linger, LINGER_MAX>,
    alloc_base: u64,
    max_clients: usize,
}

impl Io {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        tcp: heapless::Vec<(OwnedFd, SocketAddr), MAX_LISTENERS>,
        unix: UnixListener,
        led: Option<LedFile>,
        thermal: String,
        links: links::Links,
        off_info: BeaconInfo,
        token_file: Option<std::path::PathBuf>,
        max_clients: usize,
    ) -> Io {
        Io {
            tcp,
            unix,
            led,
            thermal,
            links,
            off_info,
            token_file,
            metrics: heapless::Vec::new(),
            publish: None,
            slots: (0..MAX_CLIENTS).map(|_| Slot::empty(now)).collect(),
            lingering: heapless::Vec::new(),
            alloc_base: 0,
            max_clients,
        }
    }
}

impl Env for Io {
    fn board(&mut self) -> Board {
        crate::sys::board::read(&self.thermal)
    }

    fn write_sockets(&mut self, w: &mut WBuf<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |w: &mut WBuf<'_>| {
            if first {
                first = false;
                Ok(())
            } else {
                fmt::Write::write_char(w, ',')
            }
        };
        for (fd, _) in &self.tcp {
            sep(w)?;
            net::socket_info(fd.as_fd()).write(w, "tcp-listen")?;
        }
        sep(w)?;
        net::socket_info(self.unix.fd.as_fd()).write(w, "unix-listen")?;
        if let Some(p) = &self.publish {
            sep(w)?;
            net::socket_info(p.fd()).write(w, "unix-publish")?;
        }
        for (fd, _) in &self.metrics {
            sep(w)?;
            net::socket_info(fd.as_fd()).write(w, "http-listen")?;
        }
        self.links.write_sockets(w, &mut sep)?;
        for s in &self.slots {
            if let Some(fd) = &s.fd {
                sep(w)?;
                let kind = match s.session.transport {
                    Transport::Tcp => "tcp-client",
                    Transport::Unix => "unix-client",
                };
                net::socket_info(fd.as_fd()).write(w, kind)?;
            }
        }
        Ok(())
    }

    fn clients(&self) -> (usize, usize) {
        let mut c = (0, 0);
        for s in self.slots.iter().filter(|s| s.fd.is_some()) {
            match s.session.transport {
                Transport::Tcp => c.0 += 1,
                Transport::Unix => c.1 += 1,
            }
        }
        c
    }

    fn led(&mut self, cmd: Led) -> Result<(), &'static str> {
        match &mut self.led {
            Some(l) => l.set(cmd),
            None => Err("no LED"),
        }
    }

    fn allocations(&self) -> u64 {
        crate::alloc_count::allocations().saturating_sub(self.alloc_base)
    }

    fn random(&mut self, buf: &mut [u8]) -> Result<(), &'static str> {
        crate::crypto::fill_random(buf).map_err(|_| "getrandom failed")
    }

    fn beacon(&self) -> (BeaconState, &BeaconInfo) {
        self.links
            .state(0)
            .unwrap_or((BeaconState::Off, &self.off_info))
    }

    fn beacons(&self, i: usize) -> Option<(BeaconState, &BeaconInfo)> {
        self.links.state(i)
    }
}

#[derive(Clone, Copy)]
enum Tok {
    Signal,
    Tcp(usize),
    Unix,
    Beacon(usize, Family),
    Client(usize, u32),
    /// By fd number: the linger list may shift within a turn.
    Linger(std::os::fd::RawFd),
    HttpListen(usize),
    Http(usize, u32),
    Publish,
}

/// systemd watchdog: send WATCHDOG=1 every `every`.
pub struct Watchdog {
    pub notifier: crate::sys::notify::Notifier,
    pub every: Option<Duration>,
    pub next: Option<Instant>,
}

pub struct RunLoop {
    pub agent: Agent,
    pub io: Io,
    signals: Signals,
    scratch: Box<[u8; REPLY_MAX]>,
    idle: Option<Duration>,
    accept_paused_until: Option<Instant>,
    pub watchdog: Option<Watchdog>,
    /// `--metrics`: the HTTP listeners and their own slot table.
    pub http: http::Http,
}

impl RunLoop {
    pub fn new(agent: Agent, io: Io, signals: Signals, idle: Option<Duration>) -> RunLoop {
        RunLoop {
            agent,
            io,
            signals,
            scratch: Box::new([0; REPLY_MAX]),
            idle,
            accept_paused_until: None,
            watchdog: None,
            http: http::Http::off(),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.agent.interval_secs))
    }

    /// Marks the start of the steady state: allocations are counted from here.
    pub fn mark_ready(&mut self) {
        self.io.alloc_base = crate::alloc_count::allocations();
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut d = self.agent.next_deadline();
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        take(self.io.links.next_deadline(self.interval()));
        take(self.watchdog.as_ref().and_then(|w| w.next));
        take(self.accept_paused_until);
        for s in self.io.slots.iter().filter(|s| s.fd.is_some()) {
            take(s.hold_until);
            take(self.idle.map(|i| s.last_rx + i));
        }
        for l in &self.io.lingering {
            take(Some(l.until));
        }
        take(self.http.next_deadline());
        d.map(|t| t.max(now))
    }

    /// Runs until SIGTERM/SIGINT. Only a failing poll(2) is an error.
    pub fn run(&mut self) -> Result<(), SysError> {
        let mut now = Instant::now();
        loop {
            let timeout = match self.next_deadline(now) {
                None => PollTimeout::NONE,
                Some(t) => {
                    // Round up so we never wake a millisecond early and spin.
                    let us = t.saturating_duration_since(now).as_micros();
                    let ms = us.div_ceil(1000).min(i32::MAX as u128);
                    PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut ready: heapless::Vec<(Tok, PollFlags), POLL_MAX> = heapless::Vec::new();
            {
                let mut fds: heapless::Vec<PollFd<'_>, POLL_MAX> = heapless::Vec::new();
                let mut toks: heapless::Vec<Tok, POLL_MAX> = heapless::Vec::new();
                let mut add = |fd, ev, t| {
                    if fds.push(PollFd::new(fd, ev)).is_ok() {
                        let _ = toks.push(t);
                    }
                };
                add(self.signals.as_fd(), PollFlags::POLLIN, Tok::Signal);
                let accepting = self.accept_paused_until.is_none_or(|t| t <= now);
                if accepting {
                    for (i, (fd, _)) in self.io.tcp.iter().enumerate() {
                        add(fd.as_fd(), PollFlags::POLLIN, Tok::Tcp(i));
                    }
                    add(self.io.unix.fd.as_fd(), PollFlags::POLLIN, Tok::Unix);
                    for (i, (fd, _)) in self.io.metrics.iter().enumerate() {
                        add(fd.as_fd(), PollFlags::POLLIN, Tok::HttpListen(i));
                    }
                }
                for i in 0..self.http.slot_count() {
                    if let Some((fd, gen, ev)) = self.http.interest(i) {
                        add(fd, ev, Tok::Http(i, gen));
                    }
                }
                for (fd, i, f) in self.io.links.fds() {
                    add(fd, PollFlags::POLLIN, Tok::Beacon(i, f));
                }
                if let Some(p) = &self.io.publish {
                    add(p.fd(), PollFlags::POLLIN, Tok::Publish);
                }
                for (i, s) in self.io.slots.iter().enumerate() {
                    let Some(fd) = &s.fd else { continue };
                    let mut ev = PollFlags::empty();
                    if !s.closing && !s.held(now) && s.in_len < IN_BUF {
                        ev |= PollFlags::POLLIN;
                    }
                    if s.out_end > s.out_start {
                        ev |= PollFlags::POLLOUT;
                    }
                    add(fd.as_fd(), ev, Tok::Client(i, s.generation));
                }
                for l in self.io.lingering.iter() {
                    add(
                        l.fd.as_fd(),
                        PollFlags::POLLIN,
                        Tok::Linger(l.fd.as_raw_fd()),
                    );
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(SysError::new("poll", e)),
                }
                for (fd, t) in fds.iter().zip(toks.iter()) {
                    if let Some(ev) = fd.revents().filter(|e| !e.is_empty()) {
                        let _ = ready.push((*t, ev));
                    }
                }
            }
            now = Instant::now();
            let mut stop = false;
            // Accept first: the small backlog is the scarce resource (a full accept queue
            // drops SYNs, which costs the peer a 1 s retransmit). A full client table is
            // rechecked for peers that already hung up (`reap_gone`) before refusing.
            for &(tok, ev) in ready.iter() {
                match tok {
                    Tok::Signal => stop |= self.on_signals(),
                    Tok::Tcp(i) => self.accept_all(now, Some(i)),
                    Tok::Unix => self.accept_all(now, None),
                    Tok::Beacon(i, f) => self.io.links.readable(now, i, f, &mut self.agent),
                    Tok::Publish => {
                        if let Some(p) = self.io.publish.as_mut() {
                            p.readable(now, &mut self.agent);
                        }
                    }
                    Tok::Client(i, gen) => {
                        if self.io.slots[i].generation == gen {
                            self.client_ready(i, ev, now);
                        }
                    }
                    Tok::Linger(fd) => self.linger_readable(fd),
                    Tok::HttpListen(i) => self.accept_http(now, i),
                    Tok::Http(i, gen) => {
                        if self.http.generation(i) == gen {
                            let (agent, io) = (&self.agent, &mut self.io);
                            let mut render = |w: &mut WBuf<'_>, hs: &crate::metrics::HttpStats| {
                                let r = crate::metrics::Readings::read(io);
                                crate::metrics::render(w, now, agent, &r, hs)
                            };
                            self.http.ready(i, ev, now, &mut render);
                        }
                    }
                }
            }
            self.timers(now);
            if stop {
                return Ok(());
            }
        }
    }

    /// Orderly shutdown: goodbye beacon, LED restored, socket file removed.
    pub fn shutdown(&mut self) {
        let now = Instant::now();
        self.agent.shutdown(&mut self.io);
        self.io.links.goodbye(now, &mut self.agent);
        if let Some(w) = &self.watchdog {
            let _ = w.notifier.notify(b"STOPPING=1");
        }
        self.io.unix.remove();
        if let Some(p) = &self.io.publish {
            p.remove();
        }
    }

    fn on_signals(&mut self) -> bool {
        let mut stop = false;
        while let Some(ev) = self.signals.pending() {
            match ev {
                Event::Stop(sig) => {
                    log::info!("{sig}: shutting down");
                    stop = true;
                }
                Event::Reload => {
                    self.reload_token();
                    self.io.links.reload_key();
                }
            }
        }
        stop
    }

    /// Re-reads `--token-file` (SIGHUP). A missing or empty file disables AUTH.
    pub fn reload_token(&mut self) {
        let Some(p) = self.io.token_file.as_ref().and_then(|p| p.to_str()) else {
            return;
        };
        let mut buf = [0u8; crate::limits::TOKEN_MAX + 2];
        match crate::sys::read_small(p, &mut buf) {
            Some(n) if n <= crate::limits::TOKEN_MAX + 1 => {
                self.agent.set_token(Some(&buf[..n]));
                if self.agent.has_token() {
                    log::info!("token reloaded from {p}");
                } else {
                    log::warn!("token file {p} is empty: AUTH disabled");
                }
            }
            Some(_) => {
                log::warn!(
                    "token file {p} is longer than {} bytes: AUTH disabled",
                    crate::limits::TOKEN_MAX
                );
                self.agent.set_token(None);
            }
            None => {
                log::warn!("cannot read token file {p}: AUTH disabled");
                self.agent.set_token(None);
            }
        }
    }

    fn accept_all(&mut self, now: Instant, tcp: Option<usize>) {
        loop {
            let (fd, transport) = match tcp {
                Some(i) => (self.io.tcp[i].0.as_fd(), Transport::Tcp),
                None => (self.io.unix.fd.as_fd(), Transport::Unix),
            };
            let conn = match net::accept(fd) {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    log::warn!("accept: {}: pausing accepts", e.desc());
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => {
                    log::debug!("accept: {}", e.desc());
                    return;
                }
            };
            let (tcp_n, unix_n) = self.io.clients();
            if tcp_n + unix_n >= self.io.max_clients {
                // Before refusing, free the slots of peers that already hung up but whose
                // EOF this turn has not reached yet (their FIN can even trail our SYN).
                self.reap_gone();
            }
            let (tcp_n, unix_n) = self.io.clients();
            let free = self.io.slots.iter().position(|s| s.fd.is_none());
            match free.filter(|_| tcp_n + unix_n < self.io.max_clients) {
                Some(i) => {
                    if transport == Transport::Unix {
                        crate::sys::unix::log_peer(&conn);
                    }
                    let s = &mut self.io.slots[i];
                    s.fd = Some(conn);
                    s.generation = s.generation.wrapping_add(1);
                    s.session = Session::new(transport);
                    s.in_len = 0;
                    s.out_start = 0;
                    s.out_end = 0;
                    s.last_rx = now;
                    s.hold_until = None;
                    s.closing = false;
                    self.agent.stats.accepted += 1;
                    log::debug!("client {i} connected ({transport:?})");
                }
                None => {
                    self.agent.stats.refused_busy += 1;
                    log::debug!("client refused: table full");
                    if let NetIo::Done(n) = net::send(conn.as_fd(), BUSY_LINE) {
                        self.agent.stats.bytes_out += n as u64;
                    }
                    self.linger(conn, now);
                }
            }
        }
    }

    fn reap_gone(&mut self) {
        for i in 0..self.io.slots.len() {
            let s = &self.io.slots[i];
            let gone = s.fd.as_ref().is_some_and(|fd| net::peer_gone(fd.as_fd()));
            if gone && s.in_len == 0 {
                self.close(i, "peer closed");
            }
        }
    }

    /// Half-closes `fd` and keeps it until the peer closes (see [`LINGER`]).
    fn linger(&mut self, fd: OwnedFd, now: Instant) {
        net::shutdown_write(fd.as_fd());
        // Whatever the peer already sent is discarded now; the rest as it comes.
        let _ = net::recv(fd.as_fd(), &mut self.scratch[..]);
        if self.io.lingering.is_full() {
            // Out of linger room: close the oldest.
            self.io.lingering.remove(0);
        }
        let _ = self.io.lingering.push(Linger {
            fd,
            until: now + LINGER,
        });
    }

    fn linger_readable(&mut self, raw: std::os::fd::RawFd) {
        let Some(i) = self
            .io
            .lingering
            .iter()
            .position(|l| l.fd.as_raw_fd() == raw)
        else {
            return;
        };
        let l = &self.io.lingering[i];
        let done = loop {
            match net::recv(l.fd.as_fd(), &mut self.scratch[..]) {
                NetIo::Done(_) => continue,
                NetIo::WouldBlock => break false,
                NetIo::Closed => break true,
            }
        };
        if done {
            self.io.lingering.remove(i);
        }
    }

    fn close(&mut self, i: usize, why: &str) {
        let s = &mut self.io.slots[i];
        if s.fd.take().is_some() {
            log::debug!("client {i} closed: {why}");
        }
        s.in_len = 0;
        s.out_start = 0;
        s.out_end = 0;
        s.closing = false;
        s.hold_until = None;
    }

    fn client_ready(&mut self, i: usize, ev: PollFlags, now: Instant) {
        if self.io.slots[i].fd.is_none() {
            return;
        }
        if ev.intersects(PollFlags::POLLOUT) {
            self.flush(i, now);
        }
        if ev.intersects(PollFlags::POLLIN) {
            self.read_client(i, now);
        }
        if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // Reset or fully closed: what was readable has been answered above; no more
            // replies can reach the peer, and poll would keep reporting this even for a
            // client we are not reading (held, closing): close now, never spin.
            self.close(i, "hang-up");
        }
    }

    fn read_client(&mut self, i: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let s = &mut self.io.slots[i];
            let Some(fd) = &s.fd else { return };
            if s.closing || s.held(now) || s.in_len >= IN_BUF {
                break;
            }
            let room = IN_BUF - s.in_len;
            match net::recv(fd.as_fd(), &mut s.inbuf[s.in_len..]) {
                NetIo::Done(n) => {
                    s.in_len += n;
                    s.last_rx = now;
                    self.agent.stats.bytes_in += n as u64;
                    self.process(i, now);
                    if n < room {
                        break;
                    }
                }
                NetIo::WouldBlock => break,
                NetIo::Closed => {
                    // Answer what was complete before EOF, then go.
                    self.process(i, now);
                    self.flush(i, now);
                    self.close(i, "peer closed");
                    return;
                }
            }
        }
        self.flush(i, now);
    }

    /// Answers every complete line in slot `i`'s input buffer.
    fn process(&mut self, i: usize, now: Instant) {
        loop {
            let s = &mut self.io.slots[i];
            if s.fd.is_none() || s.closing || s.held(now) {
                return;
            }
            s.hold_until = None;
            let mut line = [0u8; IN_BUF];
            let (len, used) = match next_line(&s.inbuf[..s.in_len]) {
                Frame::Incomplete => return,
                Frame::TooLong => {
                    s.in_len = 0;
                    s.closing = true;
                    self.agent.stats.closed_too_long += 1;
                    self.agent.stats.errors += 1;
                    let mut w = WBuf::new(&mut self.scratch[..]);
                    let _ = write_err(&mut w, E_TOO_LONG);
                    let n = w.len();
                    self.queue(i, n, now);
                    return;
                }
                Frame::Line(l, used) => {
                    line[..l.len()].copy_from_slice(l);
                    (l.len(), used)
                }
            };
            s.inbuf.copy_within(used..s.in_len, 0);
            s.in_len -= used;
            let mut session = s.session;
            let mut w = WBuf::new(&mut self.scratch[..]);
            let outcome =
                self.agent
                    .handle(now, &mut session, parse(&line[..len]), &mut self.io, &mut w);
            let n = w.len();
            let s = &mut self.io.slots[i];
            s.session = session;
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => s.closing = true,
                Outcome::HoldUntil(t) => s.hold_until = Some(t),
            }
            if !self.queue(i, n, now) {
                return;
            }
        }
    }

    /// Appends the first `n` bytes of the scratch buffer to slot `i`'s output. A client
    /// whose output buffer cannot take the reply even after a flush is closed.
    fn queue(&mut self, i: usize, n: usize, now: Instant) -> bool {
        let fits = |s: &Slot| OUT_BUF - (s.out_end - s.out_start) >= n;
        if !fits(&self.io.slots[i]) {
            self.flush(i, now);
        }
        let s = &mut self.io.slots[i];
        if s.fd.is_none() {
            return false;
        }
        if !fits(s) {
            self.agent.stats.closed_slow += 1;
            self.close(i, "output buffer full (client does not read)");
            return false;
        }
        if OUT_BUF - s.out_end < n {
            s.out.copy_within(s.out_start..s.out_end, 0);
            s.out_end -= s.out_start;
            s.out_start = 0;
        }
        s.out[s.out_end..s.out_end + n].copy_from_slice(&self.scratch[..n]);
        s.out_end += n;
        true
    }

    fn flush(&mut self, i: usize, now: Instant) {
        let s = &mut self.io.slots[i];
        let Some(fd) = &s.fd else { return };
        while s.out_start < s.out_end {
            match net::send(fd.as_fd(), &s.out[s.out_start..s.out_end]) {
                NetIo::Done(n) => {
                    s.out_start += n;
                    self.agent.stats.bytes_out += n as u64;
                }
                NetIo::WouldBlock => return,
                NetIo::Closed => {
                    self.close(i, "send failed");
                    return;
                }
            }
        }
        s.out_start = 0;
        s.out_end = 0;
        if s.closing {
            if let Some(fd) = s.fd.take() {
                self.close(i, "closing");
                self.linger(fd, now);
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.agent.next_deadline().is_some_and(|t| t <= now) {
            self.agent.on_timer(now, &mut self.io);
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
        }
        let interval = self.interval();
        if self
            .io
            .links
            .next_deadline(interval)
            .is_some_and(|t| t <= now)
        {
            self.io.links.on_timer(now, interval, &mut self.agent);
        }
        if let Some(w) = self.watchdog.as_mut() {
            if let (Some(next), Some(every)) = (w.next, w.every) {
                if next <= now {
                    let _ = w.notifier.notify(b"WATCHDOG=1");
                    w.next = Some(now + every);
                }
            }
        }
        for i in 0..self.io.slots.len() {
            let s = &self.io.slots[i];
            if s.fd.is_none() {
                continue;
            }
            if self.idle.is_some_and(|d| now >= s.last_rx + d) {
                self.agent.stats.closed_idle += 1;
                self.close(i, "idle timeout");
                continue;
            }
            if s.hold_until.is_some_and(|t| t <= now) {
                // A held client's pending lines are answered as soon as the hold ends.
                self.process(i, now);
                self.flush(i, now);
            }
        }
        self.io.lingering.retain(|l| l.until > now);
        self.http.timers(now);
    }

    /// Accepts every waiting connection on metrics listener `li` (see [`http::Http`]).
    fn accept_http(&mut self, now: Instant, li: usize) {
        loop {
            match self.http.accept_one(now, self.io.metrics[li].0.as_fd()) {
                http::Accepted::None => return,
                http::Accepted::Slot(None) => {}
                http::Accepted::Slot(Some(fd)) | http::Accepted::Refused(fd) => {
                    self.linger(fd, now)
                }
                http::Accepted::Pause(e) => {
                    log::warn!("accept (metrics): {}: pausing accepts", e.desc());
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }
}
