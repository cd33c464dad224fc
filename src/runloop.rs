//! The run loop: the agent's only caller of poll(2). It owns every fd and the client table,
//! reads the clock once per turn, moves bytes between sockets and the core, and sleeps
//! exactly until the next deadline. It parses nothing itself: framing and requests are
//! `proto`'s, answers are `agent`'s. It maps poll results to events on the control
//! connections ([`conn::Conn`]: buffers, framing in place, replies written in place), the
//! listeners, the beacon and the deadline sources ([`Timer`]). The `--metrics` HTTP
//! connections have their own slot table in [`http`] (a submodule: the loop still owns
//! every fd and every poll).

use crate::agent::{Agent, BeaconInfo, BeaconState, Board, Env, Led, Outcome, Transport};
use crate::beacon::Family;
use crate::limits::{
    secret_buf_len, ACCEPTS_PER_TURN, ACCEPT_PAUSE_MS, ACCEPT_WAITING_MAX, HTTP_SLOTS, LINGER_MAX,
    LINGER_SECS, LINGER_SINK, MAX_CLIENTS, MAX_LISTENERS, QUICK_POLLS, READS_PER_TURN, TOKEN_MAX,
};
use crate::proto::reply::{write_err, ErrCode, Error, TOO_LONG_TEXT};
use crate::proto::request::parse;
use crate::proto::wbuf::WBuf;
use crate::sys::led::LedFile;
use crate::sys::net::{self, Io as NetIo};
use crate::sys::signals::{Event, Signals};
use crate::sys::unix::UnixListener;
use crate::sys::SysError;
use conn::{Conn, Expired, Flushed, Read, Stop, Table};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

pub mod conn;
pub mod http;
pub mod links;
pub mod publish;

/// Refused and closing connections wait here, read-and-discard, until the peer closes
/// or [`LINGER_SECS`] pass: closing a socket with unread input sends RST, which would
/// destroy our last reply (`ERR busy`, `ERR too-long`, QUIT's `OK`) before it is read.
const LINGER: Duration = Duration::from_secs(LINGER_SECS);
/// After EMFILE/ENFILE on accept, stop accepting this long instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(ACCEPT_PAUSE_MS);
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
const HTTP_POLL: usize = crate::limits::MAX_METRICS_LISTENERS + HTTP_SLOTS;

const E_TOO_LONG: Error = Error::new(ErrCode::TooLong, TOO_LONG_TEXT);
const BUSY_LINE: &[u8] = b"ERR busy too many clients\n";
/// Why accepting pauses short of EMFILE ([`net::in_fd_reserve`]).
const FDS_SPARE: &str = crate::limit_text!(
    "keeping ",
    { crate::limits::FD_RESERVE },
    " fds spare under RLIMIT_NOFILE"
);

struct Linger {
    fd: OwnedFd,
    until: Instant,
    /// A metrics connection: at most [`HTTP_SLOTS`] of them linger, so connections
    /// evicted from their HTTP slots as fast as a flood comes never push the control
    /// port's out.
    http: bool,
}

/// How many accept4 calls a pass over readable TCP listener `l` makes: as many as its
/// queue holds ([`net::accept_queue`]; one at least, since poll(2) found it readable), or, where
/// the kernel does not say, until EAGAIN. What arrives meanwhile is the next turn's.
fn accepts_due(l: BorrowedFd<'_>) -> usize {
    net::accept_queue(l).map_or(ACCEPTS_PER_TURN, |n| n.clamp(1, ACCEPTS_PER_TURN))
}

/// The listeners and devices the core reaches through [`Env`] (the client connections
/// are [`RunLoop`]'s own table).
pub struct Devices {
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
    alloc_base: u64,
    max_clients: usize,
}

impl Devices {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        _now: Instant,
        tcp: heapless::Vec<(OwnedFd, SocketAddr), MAX_LISTENERS>,
        unix: UnixListener,
        led: Option<LedFile>,
        thermal: String,
        links: links::Links,
        off_info: BeaconInfo,
        token_file: Option<std::path::PathBuf>,
        max_clients: usize,
    ) -> Devices {
        Devices {
            tcp,
            unix,
            led,
            thermal,
            links,
            off_info,
            token_file,
            metrics: heapless::Vec::new(),
            publish: None,
            alloc_base: 0,
            max_clients,
        }
    }

    /// The (first) beacon's state as STATUS shows it.
    pub fn beacon_state(&self) -> (BeaconState, &BeaconInfo) {
        self.links
            .state(0)
            .unwrap_or((BeaconState::Off, &self.off_info))
    }
}

/// What the core reaches through [`Env`]: the devices and a view of the client table.
struct Host<'a> {
    dev: &'a mut Devices,
    clients: &'a Table<'a>,
}

impl Env for Host<'_> {
    fn board(&mut self) -> Board {
        crate::sys::board::read(&self.dev.thermal)
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
        let d = &*self.dev;
        for (fd, _) in &d.tcp {
            sep(w)?;
            net::socket_info(fd.as_fd()).write(w, "tcp-listen")?;
        }
        sep(w)?;
        net::socket_info(d.unix.fd.as_fd()).write(w, "unix-listen")?;
        if let Some(p) = &d.publish {
            sep(w)?;
            net::socket_info(p.fd()).write(w, "unix-publish")?;
        }
        for (fd, _) in &d.metrics {
            sep(w)?;
            net::socket_info(fd.as_fd()).write(w, "http-listen")?;
        }
        d.links.write_sockets(w, &mut sep)?;
        let mut r = Ok(());
        self.clients.each(|fd, t| {
            let kind = match t {
                Transport::Tcp => "tcp-client",
                Transport::Unix => "unix-client",
            };
            r = r
                .and_then(|_| sep(w))
                .and_then(|_| net::socket_info(fd).write(w, kind));
        });
        r
    }

    fn clients(&self) -> (usize, usize) {
        self.clients.counts()
    }

    fn led(&mut self, cmd: Led) -> Result<(), &'static str> {
        match &mut self.dev.led {
            Some(l) => l.set(cmd),
            None => Err("no LED"),
        }
    }

    fn allocations(&self) -> u64 {
        crate::alloc_count::allocations().saturating_sub(self.dev.alloc_base)
    }

    fn log_lines_dropped(&self) -> u64 {
        crate::sys::stderr::lines_dropped()
    }

    fn random(&mut self, buf: &mut [u8]) -> Result<(), &'static str> {
        crate::crypto::fill_random(buf).map_err(|_| "getrandom failed")
    }

    fn beacon(&self) -> (BeaconState, &BeaconInfo) {
        self.dev.beacon_state()
    }

    fn beacons(&self, i: usize) -> Option<(BeaconState, &BeaconInfo)> {
        self.dev.links.state(i)
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

/// Every source of a deadline, named once: [`RunLoop::deadline`] says when each is due
/// and [`RunLoop::fire`] what happens then (as quinn-proto's `Timer`). A new source is a
/// new variant, and both matches must answer for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The core's own: fact TTLs, IDENTIFY blinking, AUTH bookkeeping.
    Agent,
    Beacon,
    /// systemd `WATCHDOG=1`.
    Watchdog,
    /// Accepting resumes after EMFILE and friends.
    AcceptPause,
    /// A client's AUTH hold ends or its idle time runs out.
    Clients,
    /// A lingering connection is given up.
    Linger,
    /// `--metrics` HTTP timeouts.
    Http,
}

impl Timer {
    const ALL: [Timer; 7] = [
        Timer::Agent,
        Timer::Beacon,
        Timer::Watchdog,
        Timer::AcceptPause,
        Timer::Clients,
        Timer::Linger,
        Timer::Http,
    ];
}

/// systemd watchdog: send WATCHDOG=1 every `every`.
pub struct Watchdog {
    pub notifier: crate::sys::notify::Notifier,
    pub every: Option<Duration>,
    pub next: Option<Instant>,
}

pub struct RunLoop {
    pub agent: Agent,
    pub io: Devices,
    conns: Box<[Conn]>,
    lingering: heapless::Vec<Linger, LINGER_MAX>,
    signals: Signals,
    idle: Option<Duration>,
    accept_paused_until: Option<Instant>,
    /// When running out of fds was last said in the log ([`RunLoop::pause_accepts`]).
    accept_warned: crate::lograte::Repeat,
    /// When [`Timer::Clients`] runs next: never later than the earliest hold end or idle
    /// timeout of an open client. Reading from a client only moves its idle timeout later,
    /// so this is not recomputed per request or per turn: a new client, a hold, or the
    /// last waiting reply of a client taken (its stall limit gives way to the idle time)
    /// can bring it earlier ([`RunLoop::client_due`]), and the timer itself, when it runs,
    /// makes it exact again.
    clients_due: Option<Instant>,
    /// How many of the next turns may poll only the clients and the TCP listeners, without
    /// waiting ([`QUICK_POLLS`] after a turn that found a client ready, 0 after one that
    /// found none).
    quick_polls: u8,
    /// Accepted this turn while every slot was taken: seated (or refused) at its end.
    waiting: heapless::Vec<(OwnedFd, Transport), ACCEPT_WAITING_MAX>,
    pub watchdog: Option<Watchdog>,
    /// `--metrics`: the HTTP listeners and their own slot table.
    pub http: http::Http,
}

impl RunLoop {
    /// `buffers`: the client slots' ([`Conn::buffers`], made by the caller: a RunLoop is
    /// large, and a `Result<RunLoop, _>` made here took another copy's worth of stack,
    /// resident for good).
    pub fn new(
        agent: Agent,
        io: Devices,
        signals: Signals,
        idle: Option<Duration>,
        buffers: impl Iterator<Item = conn::Buffers>,
    ) -> RunLoop {
        let now = Instant::now();
        RunLoop {
            agent,
            io,
            conns: buffers
                .take(MAX_CLIENTS)
                .map(|b| Conn::new(now, b))
                .collect(),
            lingering: heapless::Vec::new(),
            signals,
            idle,
            accept_paused_until: None,
            accept_warned: crate::lograte::Repeat::default(),
            clients_due: None,
            quick_polls: 0,
            waiting: heapless::Vec::new(),
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

    /// (tcp, unix) clients connected now.
    pub fn clients(&self) -> (usize, usize) {
        Table::all(&self.conns).counts()
    }

    /// When `t` is next due, if at all.
    #[inline(always)]
    fn deadline(&self, t: Timer) -> Option<Instant> {
        match t {
            Timer::Agent => self.agent.next_deadline(),
            Timer::Beacon => self.io.links.next_deadline(self.interval()),
            Timer::Watchdog => self.watchdog.as_ref().and_then(|w| w.next),
            Timer::AcceptPause => self.accept_paused_until,
            Timer::Clients => self.clients_due,
            Timer::Linger => self.lingering.iter().map(|l| l.until).min(),
            Timer::Http => self.http.next_deadline(),
        }
    }

    /// `t` is due: do its work.
    fn fire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Agent => {
                let mut host = Host {
                    dev: &mut self.io,
                    clients: &Table::all(&self.conns),
                };
                self.agent.on_timer(now, &mut host);
            }
            Timer::Beacon => {
                let interval = self.interval();
                self.io.links.on_timer(now, interval, &mut self.agent);
            }
            Timer::Watchdog => {
                if let Some(w) = self.watchdog.as_mut() {
                    let _ = w.notifier.notify(b"WATCHDOG=1");
                    w.next = w.every.map(|e| now + e);
                }
            }
            Timer::AcceptPause => self.accept_paused_until = None,
            Timer::Clients => {
                for i in 0..self.conns.len() {
                    let c = &mut self.conns[i];
                    let Some(fd) = c.fd() else {
                        continue;
                    };
                    match c.expired(now, self.idle) {
                        // A request that came after this turn's poll is not idleness: the
                        // next turn reads and answers it (closing over it would reset the
                        // connection and lose it, as a client polling at the idle timeout
                        // saw now and then).
                        Expired::Idle if c.reading(now) && net::unread(fd) > 0 => c.last_rx = now,
                        Expired::Idle => {
                            self.agent.stats.closed_idle += 1;
                            self.close(i, "idle timeout");
                        }
                        // Its socket took nothing, but the client read some of what the
                        // kernel holds for it (a TCP window opens in large steps): slow,
                        // not stopped.
                        Expired::Stalled if c.read_meanwhile(now) => {}
                        Expired::Stalled => {
                            self.agent.stats.closed_slow += 1;
                            self.close(i, "replies not read (client stopped reading)");
                        }
                        Expired::No => {}
                    }
                    let c = &self.conns[i];
                    if c.is_open() && c.session.hold_until.is_some_and(|t| t <= now) {
                        // A held client's pending lines are answered as soon as the hold ends.
                        self.conns[i].session.hold_until = None;
                        self.process(i, now);
                        self.flush(i, now);
                    }
                }
                // Exact again: from here on it only moves later (see `clients_due`).
                self.clients_due = self
                    .conns
                    .iter()
                    .filter(|c| c.is_open())
                    .filter_map(|c| c.deadline(self.idle))
                    .min();
            }
            Timer::Linger => self.lingering.retain(|l| l.until > now),
            Timer::Http => self.http.timers(now),
        }
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        Timer::ALL
            .iter()
            .filter_map(|&t| self.deadline(t))
            .min()
            .map(|t| t.max(now))
    }

    fn timers(&mut self, now: Instant) {
        for t in Timer::ALL {
            if self.deadline(t).is_some_and(|d| d <= now) {
                self.fire(t, now);
            }
        }
    }

    /// Runs until SIGTERM/SIGINT. Only a failing poll(2) is an error.
    pub fn run(&mut self) -> Result<(), SysError> {
        let mut now = Instant::now();
        loop {
            let due = self.next_deadline(now);
            // A quick poll: while clients keep the loop busy, most turns poll only them and
            // the TCP listeners (a full accept queue drops SYNs), and do not wait. Without a
            // timeout poll(2) reads no clock, and it registers no wait-queue entries, and
            // the fds that are rarely ready (the Unix listener, the signalfd, the publish
            // and beacon sockets, scrapes) cost nothing on those turns. A quick poll that
            // finds no client ready is followed by a full one, which may wait.
            let quick = self.quick_polls > 0;
            let timeout = match due {
                _ if quick => PollTimeout::ZERO,
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
                // Busy fds first: poll(2) stops registering wait-queue entries after the
                // first fd it finds ready, so clients with input spare the listeners and the
                // signalfd, which are rarely ready, that work on every turn. (They are still
                // handled first: see the accept pass below.)
                for (i, c) in self.conns.iter().enumerate() {
                    if let Some(fd) = c.fd() {
                        add(fd, c.interest(now), Tok::Client(i, c.generation()));
                    }
                }
                let accepting = self.accepting(now);
                if accepting {
                    for (i, (fd, _)) in self.io.tcp.iter().enumerate() {
                        add(fd.as_fd(), PollFlags::POLLIN, Tok::Tcp(i));
                    }
                }
                if !quick {
                    for l in self.lingering.iter() {
                        add(
                            l.fd.as_fd(),
                            PollFlags::POLLIN,
                            Tok::Linger(l.fd.as_raw_fd()),
                        );
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
                    if accepting {
                        add(self.io.unix.fd.as_fd(), PollFlags::POLLIN, Tok::Unix);
                    }
                    if accepting {
                        for (i, (fd, _)) in self.io.metrics.iter().enumerate() {
                            add(fd.as_fd(), PollFlags::POLLIN, Tok::HttpListen(i));
                        }
                    }
                    add(self.signals.as_fd(), PollFlags::POLLIN, Tok::Signal);
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(SysError::new("poll", e)),
                }
                let mut busy = false;
                for (fd, t) in fds.iter().zip(toks.iter()) {
                    if let Some(ev) = fd.revents().filter(|e| !e.is_empty()) {
                        busy |= matches!(t, Tok::Client(..));
                        let _ = ready.push((*t, ev));
                    }
                }
                self.quick_polls = match busy {
                    false => 0,
                    true if quick => self.quick_polls - 1,
                    true => QUICK_POLLS,
                };
            }
            now = Instant::now();
            // Facts whose TTL has passed go before any request of this turn is answered
            // (or a beacon or a scrape is written): GET never sees an expired fact. The
            // other timers run at the end of the turn (below). `due` is the earliest of all:
            // the agent's own deadline is looked up only in a turn where one is due.
            if due.is_some_and(|d| d <= now)
                && self.deadline(Timer::Agent).is_some_and(|d| d <= now)
            {
                self.fire(Timer::Agent, now);
            }
            let mut stop = false;
            // Accept first: the small backlog is the scarce resource (a full accept queue
            // drops SYNs, which costs the peer a 1 s retransmit). A full client table is
            // rechecked for peers that already hung up (`reap_gone`) before refusing.
            for &(tok, _) in ready.iter() {
                match tok {
                    Tok::Signal => stop |= self.on_signals(),
                    // A pause begun by an earlier listener this turn holds for the rest.
                    Tok::Tcp(_) | Tok::Unix | Tok::HttpListen(_) if !self.accepting(now) => {}
                    Tok::Tcp(i) => self.accept_all(now, Some(i)),
                    Tok::Unix => self.accept_all(now, None),
                    Tok::HttpListen(i) => self.accept_http(now, i),
                    _ => {}
                }
            }
            for &(tok, ev) in ready.iter() {
                match tok {
                    Tok::Signal | Tok::Tcp(_) | Tok::Unix | Tok::HttpListen(_) => {}
                    Tok::Beacon(i, f) => self.io.links.readable(now, i, f, &mut self.agent),
                    Tok::Publish => {
                        if let Some(p) = self.io.publish.as_mut() {
                            p.readable(now, &mut self.agent);
                        }
                    }
                    Tok::Client(i, gen) => {
                        if self.conns[i].generation() == gen {
                            self.client_ready(i, ev, now);
                        }
                    }
                    Tok::Linger(fd) => self.linger_readable(fd),
                    Tok::Http(i, gen) => {
                        if self.http.generation(i) == gen {
                            let (agent, io, conns) = (&self.agent, &mut self.io, &self.conns);
                            let mut render = |w: &mut WBuf<'_>, hs: &crate::metrics::HttpStats| {
                                let mut host = Host {
                                    dev: io,
                                    clients: &Table::all(conns),
                                };
                                let r = crate::metrics::Readings::read(&mut host);
                                crate::metrics::render(w, now, agent, &r, hs)
                            };
                            if let Some(fd) = self.http.ready(i, ev, now, &mut render) {
                                self.linger(fd, now, true);
                            }
                        }
                    }
                }
            }
            self.seat_waiting(now);
            // Work done this turn only sets deadlines after `now` (a hold, an idle time, a
            // pause), so timers wait for the turn whose poll was cut short by one.
            if due.is_some_and(|d| d <= now) {
                self.timers(now);
            }
            if stop {
                return Ok(());
            }
        }
    }

    /// Orderly shutdown: goodbye beacon, LED restored, socket file removed.
    pub fn shutdown(&mut self) {
        let now = Instant::now();
        let mut host = Host {
            dev: &mut self.io,
            clients: &Table::all(&self.conns),
        };
        self.agent.shutdown(&mut host);
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

    /// Re-reads `--token-file` (SIGHUP). A missing, empty or too long file disables AUTH;
    /// one that cannot be read now (out of fds, an I/O error) keeps the token as it was.
    /// When the token changed (or went), the TCP connections authenticated with the old
    /// one are no longer: revoking a token that leaked also ends the sessions it opened.
    pub fn reload_token(&mut self) {
        let Some(path) = self.io.token_file.as_ref() else {
            return;
        };
        let mut buf = [0u8; secret_buf_len(TOKEN_MAX)];
        let r =
            crate::sys::read_secret(path, &mut buf, TOKEN_MAX, false).map(|s| s.accept_token(path));
        let p = path.display();
        if let Err(e @ crate::sys::NoSecret::Unreadable(errno)) = r {
            if crate::sys::unreadable_now(errno) {
                log::warn!("token file {p}: {e}; keeping the previous token");
                return;
            }
        }
        let changed = self.agent.set_token(r.ok());
        match r {
            Ok(_) if !changed => log::info!("token file {p}: unchanged"),
            Ok(_) => log::info!("token reloaded from {p}"),
            Err(e) => log::warn!("token file {p}: {e}; AUTH disabled"),
        }
        if !changed {
            return;
        }
        let mut revoked = 0;
        for c in self.conns.iter_mut().filter(|c| c.is_open()) {
            if c.session.transport == Transport::Tcp && c.session.authed {
                c.session.authed = false;
                revoked += 1;
            }
        }
        if revoked > 0 {
            log::info!(
                "{revoked} TCP connection(s) authenticated with the old token must AUTH again"
            );
        }
    }

    fn accepting(&self, now: Instant) -> bool {
        self.accept_paused_until.is_none_or(|t| t <= now)
    }

    fn accept_all(&mut self, now: Instant, tcp: Option<usize>) {
        let passes = match tcp {
            Some(i) => accepts_due(self.io.tcp[i].0.as_fd()),
            None => ACCEPTS_PER_TURN,
        };
        for _ in 0..passes {
            let (fd, transport) = match tcp {
                Some(i) => (self.io.tcp[i].0.as_fd(), Transport::Tcp),
                None => (self.io.unix.fd.as_fd(), Transport::Unix),
            };
            let conn = match net::accept(fd, transport == Transport::Tcp) {
                net::Accept::Conn(c) => c,
                net::Accept::None => return,
                net::Accept::Short(e) => {
                    self.pause_accepts(now, "", e.desc());
                    return;
                }
                net::Accept::Spare(conn) => {
                    self.tell_busy(&conn, "keeping fds spare");
                    self.refuse_for_fds(now, "", conn);
                    return;
                }
            };
            if self.waiting.is_empty() {
                if let Some(i) = self.free_slot() {
                    self.seat(i, conn, transport, now);
                    continue;
                }
            }
            // No slot now: the connection waits for the end of the turn, by when this
            // turn's hang-ups have freed their slots. Accepting never waits for a slot,
            // so the kernel's accept queue (the backlog) is always drained.
            if self.waiting.is_full() {
                self.seat_waiting(now);
            }
            let _ = self.waiting.push((conn, transport));
        }
    }

    /// Out of fds or memory: accepting stops for [`ACCEPT_PAUSE`]. Said in the log the first
    /// time and then as a [`crate::lograte::Repeat`] allows while it lasts (it can last as
    /// long as something else holds the fds: one line every 200 ms would flood the journal).
    fn pause_accepts(&mut self, now: Instant, what: &str, why: &str) {
        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
        if self.accept_warned.due(now) {
            log::warn!("accept{what}: {why}: pausing accepts");
        }
    }

    /// A connection not taken into a slot (`why`): told `ERR busy` and counted; the caller
    /// closes or lingers it.
    fn tell_busy(&mut self, conn: &OwnedFd, why: &str) {
        self.agent.stats.refused_busy += 1;
        log::debug!("client refused: {why}");
        if let NetIo::Done(n) = net::send(conn.as_fd(), BUSY_LINE) {
            self.agent.stats.bytes_out += n as u64;
        }
    }

    /// A connection (its refusal already written) that would leave fewer than
    /// [`crate::limits::FD_RESERVE`] fds free: closed now (lingering would keep the fd),
    /// and accepting pauses as for EMFILE. So while the agent is this short of fds, one
    /// queued connection per [`ACCEPT_PAUSE`] is told `ERR busy` (or 503); the rest wait.
    fn refuse_for_fds(&mut self, now: Instant, what: &str, conn: OwnedFd) {
        net::say_goodbye(conn.as_fd());
        drop(conn);
        self.pause_accepts(now, what, FDS_SPARE);
    }

    /// A client deadline at `t`: [`Timer::Clients`] runs no later.
    fn client_due(&mut self, t: Instant) {
        self.clients_due = Some(self.clients_due.map_or(t, |d| d.min(t)));
    }

    /// A free client slot, within `--max-clients`.
    fn free_slot(&self) -> Option<usize> {
        let (tcp_n, unix_n) = self.clients();
        let free = self.conns.iter().position(|c| !c.is_open());
        free.filter(|_| tcp_n + unix_n < self.io.max_clients)
    }

    fn seat(&mut self, i: usize, conn: OwnedFd, transport: Transport, now: Instant) {
        if transport == Transport::Unix {
            crate::sys::unix::log_peer(&conn);
        }
        self.conns[i].open(conn, transport, now);
        if let Some(t) = self.conns[i].deadline(self.idle) {
            self.client_due(t);
        }
        self.agent.stats.accepted += 1;
        log::debug!("client {i} connected ({transport:?})");
    }

    /// End of a turn: every waiting connection gets a slot, or `ERR busy` when the table
    /// is truly full: checked again for peers that already hung up but whose EOF has not
    /// been read yet (their FIN can even trail our SYN).
    fn seat_waiting(&mut self, now: Instant) {
        let mut reaped = false;
        while !self.waiting.is_empty() {
            let (conn, transport) = self.waiting.remove(0);
            if self.free_slot().is_none() && !reaped {
                self.reap_gone();
                reaped = true;
            }
            match self.free_slot() {
                Some(i) => self.seat(i, conn, transport, now),
                None => {
                    self.tell_busy(&conn, "table full");
                    self.linger(conn, now, false);
                }
            }
        }
    }

    /// Closes the clients whose peer has closed (or half-closed) and that have nothing
    /// left to answer or send. One with replies waiting keeps its slot: a half-closed
    /// peer (`nc -N`) still reads them.
    fn reap_gone(&mut self) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let gone = c.fd().is_some_and(net::peer_gone);
            if gone && !c.has_input() && !c.has_output() {
                self.close(i, "peer closed");
            }
        }
    }

    /// Half-closes `fd` (a metrics connection when `http`) and keeps it until the peer
    /// closes (see [`LINGER`]).
    fn linger(&mut self, fd: OwnedFd, now: Instant, http: bool) {
        // Whatever the peer already sent is discarded now; the rest as it comes.
        net::say_goodbye(fd.as_fd());
        let l = &self.lingering;
        let share_full = http && l.iter().filter(|l| l.http).count() >= HTTP_SLOTS;
        if share_full || l.is_full() {
            // Out of linger room (or the metrics share of it): close the oldest.
            let oldest = l.iter().position(|l| l.http || !share_full).unwrap_or(0);
            self.lingering.remove(oldest);
        }
        let _ = self.lingering.push(Linger {
            fd,
            until: now + LINGER,
            http,
        });
    }

    fn linger_readable(&mut self, raw: std::os::fd::RawFd) {
        let Some(i) = self.lingering.iter().position(|l| l.fd.as_raw_fd() == raw) else {
            return;
        };
        // As many reads a turn as a client gets, no more: a peer that keeps sending must
        // not hold the loop here. Its linger deadline ends it.
        let mut sink = [0u8; LINGER_SINK];
        for _ in 0..READS_PER_TURN {
            match net::recv(self.lingering[i].fd.as_fd(), &mut sink) {
                NetIo::Done(_) => {}
                NetIo::WouldBlock => return,
                NetIo::Closed => {
                    self.lingering.remove(i);
                    return;
                }
            }
        }
    }

    fn close(&mut self, i: usize, why: &str) {
        if self.conns[i].reset().is_some() {
            log::debug!("client {i} closed: {why}");
        }
    }

    fn client_ready(&mut self, i: usize, ev: PollFlags, now: Instant) {
        if !self.conns[i].is_open() {
            return;
        }
        if ev.intersects(PollFlags::POLLOUT) {
            self.flush(i, now);
        }
        if ev.intersects(PollFlags::POLLIN) {
            self.read_client(i, now);
        }
        if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // Reset or fully closed: no more replies can reach the peer, and poll would
            // keep reporting this even for a client we are not reading (held, closing):
            // close now, never spin. Unless it left requests to read (`Conn::unheard`):
            // then each turn reads more of them until their end. Also on POLLERR: a Unix
            // peer that closed with replies unread leaves ECONNRESET pending, which recv
            // returns only once the requests before it are read.
            if self.conns[i].unheard(now) {
                // Lines a full output buffer held back, then the end if that was all.
                self.process(i, now);
                self.send(i, now);
            } else {
                self.close(i, "hang-up");
            }
        }
    }

    fn read_client(&mut self, i: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let c = &mut self.conns[i];
            if !c.is_open() {
                return;
            }
            if !c.reading(now) {
                break;
            }
            match c.read(now) {
                Read::Got { n, filled } => {
                    self.agent.stats.bytes_in += n as u64;
                    self.process(i, now);
                    if !filled {
                        break;
                    }
                }
                Read::WouldBlock => break,
                Read::Closed => {
                    // EOF (or a reset: then the flush below fails). A peer that only
                    // half-closed still reads: every complete line is answered, and the
                    // connection closes when the replies are out (see `flush`).
                    self.conns[i].eof = true;
                    self.process(i, now);
                    break;
                }
            }
        }
        self.flush(i, now);
    }

    /// Answers every complete line in connection `i`'s input buffer, writing the replies
    /// straight into its output buffer.
    fn process(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        if !c.answering(now) {
            return;
        }
        c.session.hold_until = None;
        loop {
            let (agent, io) = (&mut self.agent, &mut self.io);
            let stop = Conn::answer(&mut self.conns, i, |line, session, w, t| {
                let mut host = Host {
                    dev: io,
                    clients: t,
                };
                agent.handle(now, session, parse(line), &mut host, w)
            });
            let c = &mut self.conns[i];
            match stop {
                Stop::Incomplete => return,
                Stop::Full => {
                    // The largest reply may not fit: send what waits first. When the socket
                    // takes too little of it, the client reads slower than it asks: the
                    // rest of its lines wait (back-pressure, `Conn::backed_up`) until a
                    // flush makes room.
                    if !self.send(i, now) || !self.conns[i].make_room() {
                        return;
                    }
                }
                Stop::TooLong => {
                    c.closing = true;
                    self.agent.stats.closed_too_long += 1;
                    // Answered (with ERR), so a request as every other: `errors` counts
                    // requests answered with ERR and stays within `requests`.
                    self.agent.stats.requests += 1;
                    self.agent.stats.errors += 1;
                    // `ERR <code> <text>\n`: the longest code is 12 bytes.
                    let mut b = [0u8; TOO_LONG_TEXT.len() + 18];
                    let mut w = WBuf::new(&mut b);
                    let _ = write_err(&mut w, E_TOO_LONG);
                    if !c.queue_bytes(w.as_bytes()) {
                        self.agent.stats.closed_slow += 1;
                        self.close(i, "output buffer full (client does not read)");
                    }
                    return;
                }
                // Only `Continue` reads on: a closing or held connection answers nothing
                // more this turn.
                Stop::Outcome(Outcome::Continue) => {}
                Stop::Outcome(Outcome::Close) => {
                    c.closing = true;
                    return;
                }
                Stop::Outcome(Outcome::Hold) => {
                    if let Some(t) = c.session.hold_until {
                        self.client_due(t);
                    }
                    return;
                }
                // Not with room for the largest reply, which `answer` makes sure of.
                Stop::Outcome(Outcome::NoRoom) => {
                    self.agent.stats.closed_slow += 1;
                    self.close(i, "output buffer full");
                    return;
                }
            }
        }
    }

    /// Sends connection `i`'s queued replies ([`RunLoop::send`]). One that was backed up
    /// and has room now answers the lines that waited, and sends those replies too.
    fn flush(&mut self, i: usize, now: Instant) {
        loop {
            let backed_up = self.conns[i].backed_up();
            if !self.send(i, now) || !backed_up || self.conns[i].backed_up() {
                return;
            }
            self.process(i, now);
        }
    }

    /// Sends connection `i`'s queued replies; a closing one that has sent its last reply
    /// is closed and lingered, a failed one closed. False when it is closed (or was).
    fn send(&mut self, i: usize, now: Instant) -> bool {
        let c = &mut self.conns[i];
        if !c.is_open() {
            return false;
        }
        let waited = c.replies_waiting();
        let f = c.flush(now);
        let (Flushed::All(n) | Flushed::Partly(n) | Flushed::Failed(n)) = f;
        self.agent.stats.bytes_out += n as u64;
        match f {
            Flushed::Failed(_) if self.conns[i].unheard(now) => return true,
            Flushed::Failed(_) => self.close(i, "send failed"),
            Flushed::All(_) if self.conns[i].closing => {
                if let Some(fd) = self.conns[i].reset() {
                    log::debug!("client {i} closed: closing");
                    self.linger(fd, now, false);
                }
            }
            Flushed::All(_) if self.conns[i].finished() => self.close(i, "peer closed"),
            // The last waiting reply went: the idle time runs from now, which can be
            // sooner than the stall limit the timer was set for.
            Flushed::All(_) if waited => {
                if let Some(t) = self.conns[i].deadline(self.idle) {
                    self.client_due(t);
                }
                return true;
            }
            _ => return true,
        }
        false
    }

    /// Accepts every waiting connection on metrics listener `li` (see [`http::Http`]).
    fn accept_http(&mut self, now: Instant, li: usize) {
        for _ in 0..accepts_due(self.io.metrics[li].0.as_fd()) {
            match self.http.accept_one(now, self.io.metrics[li].0.as_fd()) {
                http::Accepted::None => return,
                http::Accepted::Slot(None) => {}
                http::Accepted::Slot(Some(fd)) | http::Accepted::Refused(fd) => {
                    self.linger(fd, now, true)
                }
                http::Accepted::Pause(e) => {
                    self.pause_accepts(now, " (metrics)", e.desc());
                    return;
                }
                http::Accepted::Spare(fd) => {
                    self.refuse_for_fds(now, " (metrics)", fd);
                    return;
                }
            }
        }
    }
}
