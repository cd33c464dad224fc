//! The agent core: board state, facts, counters, and the answer to every request.
//!
//! IO-free and clock-free: the run loop passes `now` in, and everything that touches the
//! outside world (reading /proc, getsockopt on the sockets, the LED, randomness for AUTH
//! challenges) goes through the [`Env`] trait, which the run loop implements over `sys` and tests implement with fakes.
//! Replies are written into a caller's fixed buffer; nothing here allocates.

use crate::facts::Facts;
use crate::limits::{
    AUTH_FAILS_PER_SEC, AUTH_FAIL_DELAY_MS, AUTH_NONCE_BYTES, AUTH_NONCE_SECS, BEACON_ERROR_MAX,
    HOST_SHOWN_MAX, IDENTIFY_DEFAULT_SECS, IDENTIFY_HALF_PERIOD_MS, ID_MAX, IFNAME_MAX,
    IFNAME_SHOWN_MAX, MAX_ADDRS, REPLY_MAX, TOKEN_MAX,
};
use crate::proto::fixed::Fixed;
use crate::proto::line::{next_line, Frame};
use crate::proto::reply::{write_err, write_ok, write_pong, ErrCode, Error};
use crate::proto::request::{parse, Request, HELP};
use crate::proto::wbuf::WBuf;
use crate::proto::{hex, json};
use core::fmt::{self, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (8 hex digits, `-dirty` when what it is built from
/// differs from it), as `tether --version` names it; empty when not built from git.
pub const REVISION: &str = env!("TETHER_REVISION");

/// Which socket a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
}

/// The prefix of the message a challenge answer signs: HMAC-SHA256(token, prefix || nonce hex).
pub const AUTH_CHALLENGE_PREFIX: &[u8] = b"tether-auth-v1:";

/// A nonce handed out by `AUTH` alone: answerable once, on its own connection, until `until`.
#[derive(Debug, Clone, Copy)]
pub struct Challenge {
    /// The nonce as sent: lowercase hex.
    pub nonce: [u8; 2 * AUTH_NONCE_BYTES],
    pub until: Instant,
}

/// Per-connection protocol state the core needs (fixed size, no heap).
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub transport: Transport,
    pub authed: bool,
    /// The outstanding AUTH challenge, if any. Expiry is checked when it is answered.
    pub challenge: Option<Challenge>,
    /// A failed AUTH holds the connection's next request until then.
    pub hold_until: Option<Instant>,
}

impl Session {
    pub fn new(transport: Transport) -> Self {
        Session {
            transport,
            authed: false,
            challenge: None,
            hold_until: None,
        }
    }

    /// Is the connection held now (see [`Session::hold_until`])?
    #[inline(always)]
    pub fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| t > now)
    }

    fn may_mutate(&self) -> bool {
        self.transport == Transport::Unix || self.authed
    }
}

/// What the run loop does with the connection after a reply: one byte (matched once per
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Continue,
    /// Flush the reply, then close.
    Close,
    /// Process nothing more from this client until its [`Session::hold_until`] (failed AUTH).
    Hold,
    /// The reply did not fit `out`, which had less room than [`REPLY_MAX`]: nothing was
    /// written (the run loop closes a client that lets its replies pile up so).
    NoRoom,
}

/// A snapshot of the board, read by the run loop from /proc and /sys.
#[derive(Debug, Clone, Default)]
pub struct Board {
    /// The kernel's up to [`crate::limits::HOST_MAX`] bytes as text (never cut: [`HOST_SHOWN_MAX`]).
    pub host: heapless::String<HOST_SHOWN_MAX>,
    pub uptime_s: u64,
    pub load: [f32; 3],
    pub mem_total_kb: u64,
    pub mem_avail_kb: u64,
    pub temp_c: Option<f32>,
    pub addrs: heapless::Vec<(ShownIfName, IpAddr), MAX_ADDRS>,
}

/// The LED commands the core gives while IDENTIFY runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Led {
    On,
    Off,
    /// Put back whatever the LED showed before IDENTIFY began.
    Restore,
}

/// Beacon state as shown in STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconState {
    Off,
    Up,
    Down,
    Absent,
}

impl BeaconState {
    pub fn as_str(self) -> &'static str {
        match self {
            BeaconState::Off => "off",
            BeaconState::Up => "up",
            BeaconState::Down => "down",
            BeaconState::Absent => "absent",
        }
    }
}

/// An interface name as shown (STATUS `addresses`): the kernel's bytes, each sequence that
/// is not UTF-8 as U+FFFD, never cut ([`IFNAME_SHOWN_MAX`]).
pub type ShownIfName = heapless::String<IFNAME_SHOWN_MAX>;

/// One interface's beacon as shown in STATUS (`beacon`, `beacons`).
#[derive(Debug, Clone, Default)]
pub struct BeaconInfo {
    pub iface: heapless::String<IFNAME_MAX>,
    pub port: u16,
    pub seq: u64,
    pub last_error: heapless::String<BEACON_ERROR_MAX>,
    /// Families beaconing right now (sockets open).
    pub v4: bool,
    pub v6: bool,
}

/// Everything the core asks of the outside world.
pub trait Env {
    fn board(&mut self) -> Board;
    /// Writes the SOCKETS payload's array items (comma-separated JSON objects).
    fn write_sockets(&mut self, w: &mut WBuf<'_>) -> fmt::Result;
    /// (tcp clients, unix clients) connected now.
    fn clients(&self) -> (usize, usize);
    fn led(&mut self, cmd: Led) -> Result<(), &'static str>;
    /// Heap allocations since the agent became ready.
    fn allocations(&self) -> u64;
    /// Log lines dropped since start: stderr did not take them in time.
    fn log_lines_dropped(&self) -> u64 {
        0
    }
    fn beacon(&self) -> (BeaconState, &BeaconInfo);
    /// Beacon interface `i` (STATUS `beacons`); None past the last.
    fn beacons(&self, _i: usize) -> Option<(BeaconState, &BeaconInfo)> {
        None
    }
    /// Fills `buf` with unpredictable bytes (getrandom(2) in the agent).
    fn random(&mut self, buf: &mut [u8]) -> Result<(), &'static str>;
}

/// Counters shown by STATS.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub accepted: u64,
    pub refused_busy: u64,
    pub closed_idle: u64,
    pub closed_too_long: u64,
    pub closed_slow: u64,
    pub requests: u64,
    pub errors: u64,
    pub auth_failures: u64,
    pub facts_expired: u64,
    pub beacons_sent: u64,
    pub beacon_errors: u64,
    pub probes_answered: u64,
    pub probes_limited: u64,
    pub datagrams_dropped: u64,
    /// Publish socket (`--publish`): datagrams applied, and datagrams refused.
    pub published: u64,
    pub publish_rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

struct Identify {
    until: Instant,
    next_toggle: Instant,
    on: bool,
}

/// Agent settings the core needs, fixed at start (the token can be reloaded).
#[derive(Debug, Default)]
pub struct Config {
    pub max_clients: usize,
    pub interval_secs: u32,
    pub led: bool,
    /// `--plain-auth`: also accept `AUTH <token>` in clear over TCP.
    pub plain_auth: bool,
}

pub struct Agent {
    pub facts: Facts,
    pub stats: Stats,
    pub interval_secs: u32,
    id: heapless::String<ID_MAX>,
    token: Option<heapless::Vec<u8, TOKEN_MAX>>,
    led: bool,
    plain_auth: bool,
    identify: Option<Identify>,
    max_clients: usize,
    started: Instant,
    /// The failed AUTHs over TCP and over the Unix socket ([`Agent::fails`]).
    auth_fails: [Fails; 2],
    /// Started with `--token-file` (so no token means the file went bad at a SIGHUP).
    pub token_file: bool,
}

/// When the last [`AUTH_FAILS_PER_SEC`] failed AUTHs of one transport were: another is
/// checked only when the oldest of them is a second old. One per transport: a TCP guesser
/// cannot lock out `tether ctl` on the board, and on the board nobody guesses the token
/// faster than over the network.
#[derive(Clone, Copy, Default)]
struct Fails {
    at: [Option<Instant>; AUTH_FAILS_PER_SEC],
    oldest: usize,
}

impl Fails {
    fn full(&self, now: Instant) -> bool {
        let second = Duration::from_secs(1);
        self.at[self.oldest].is_some_and(|t| now.saturating_duration_since(t) < second)
    }

    fn record(&mut self, now: Instant) {
        self.at[self.oldest] = Some(now);
        self.oldest = (self.oldest + 1) % AUTH_FAILS_PER_SEC;
    }
}

const E_DENIED: Error = Error::new(
    ErrCode::Denied,
    "authenticate first (AUTH, then AUTH <hmac of the nonce>)",
);
/// Over TCP without `--token-file`: no AUTH can succeed, so none is offered.
const E_READ_ONLY: Error = Error::new(
    ErrCode::Denied,
    "read-only over TCP: this agent has no --token-file (change it over its Unix socket)",
);
/// As [`E_READ_ONLY`], with a `--token-file` that a SIGHUP found bad (AUTH is off).
const E_READ_ONLY_BAD_TOKEN: Error = Error::new(
    ErrCode::Denied,
    "read-only over TCP: this agent's --token-file was bad at its last reload (see its log; change it over its Unix socket)",
);
const E_AUTH: Error = Error::new(ErrCode::Denied, "bad token");
const E_AUTH_WRONG: Error = Error::new(ErrCode::Denied, "wrong answer to the challenge");
const E_AUTH_NO_NONCE: Error = Error::new(
    ErrCode::Denied,
    "no challenge outstanding on this connection (send AUTH first)",
);
const E_AUTH_EXPIRED: Error = Error::new(
    ErrCode::Denied,
    "the challenge expired (send AUTH for a new one)",
);
const E_AUTH_PLAIN: Error = Error::new(
    ErrCode::Denied,
    "plain AUTH <token> is off over TCP (send AUTH for a challenge, then AUTH <its HMAC in 64 hex digits>; agent --plain-auth allows it)",
);
const E_NO_RANDOM: Error = Error::new(ErrCode::Busy, "no randomness for a challenge, try later");
const E_AUTH_BUSY: Error = Error::new(ErrCode::Busy, "too many failed AUTH, try later");
const E_FULL: Error = Error::new(ErrCode::Full, "fact table is full");
const E_NOT_FOUND: Error = Error::new(ErrCode::NotFound, "no such fact");
const E_NO_LED: Error = Error::new(ErrCode::Unsupported, "no LED configured (--led)");
const E_TOO_BIG: Error = Error::new(ErrCode::Busy, "reply too large");
const E_PUBLISH_ONLY: Error = Error::new(
    ErrCode::BadCommand,
    "only SET and DEL can be published (the publish socket answers nothing)",
);
/// A publish datagram that is not one line of at most LINE_MAX bytes (too long, cut
/// short by the socket, or more than one line).
pub const E_PUBLISH_LINE: Error = Error::new(
    ErrCode::TooLong,
    crate::limit_text!(
        "a datagram must be one line of at most ",
        { crate::limits::LINE_MAX },
        " bytes"
    ),
);

impl Agent {
    pub fn new(now: Instant, id: &str, cfg: &Config) -> Self {
        let mut sid = heapless::String::new();
        for c in id.chars().take(ID_MAX) {
            let _ = sid.push(c);
        }
        Agent {
            facts: Facts::new(),
            stats: Stats::default(),
            interval_secs: cfg.interval_secs,
            id: sid,
            token: None,
            led: cfg.led,
            plain_auth: cfg.plain_auth,
            identify: None,
            max_clients: cfg.max_clients,
            started: now,
            auth_fails: [Fails::default(); 2],
            token_file: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `--max-clients`, the control table's configured size.
    pub fn max_clients(&self) -> usize {
        self.max_clients
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Sets the AUTH token, a token file's secret as [`crate::sys::read_secret`] gives it
    /// (trimmed, 1..=TOKEN_MAX bytes), or clears it (None: AUTH disabled). True when that
    /// changed it.
    pub fn set_token(&mut self, token: Option<&[u8]>) -> bool {
        let token = token.and_then(|t| heapless::Vec::from_slice(t).ok());
        let changed = token != self.token;
        self.token = token;
        changed
    }

    /// Why TCP is read-only when there is no token.
    fn read_only(&self) -> Error {
        if self.token_file {
            E_READ_ONLY_BAD_TOKEN
        } else {
            E_READ_ONLY
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Answers one request line's worth of parsed input. The reply (exactly one line) is
    /// written into `out`. If it does not fit: when `out` had room for [`REPLY_MAX`] bytes,
    /// `out` holds `ERR busy reply too large`; with less room, nothing and [`Outcome::NoRoom`].
    pub fn handle(
        &mut self,
        now: Instant,
        session: &mut Session,
        req: Result<Request<'_>, Error>,
        env: &mut dyn Env,
        out: &mut WBuf<'_>,
    ) -> Outcome {
        self.stats.requests += 1;
        let start = out.len();
        let small = out.remaining() < REPLY_MAX;
        let (res, outcome) = match req {
            Err(e) => (Err(e), Outcome::Continue),
            Ok(Request::Ping) => {
                // An overflow is sticky: it is seen in `out` below.
                let _ = write_pong(out);
                (Ok(()), Outcome::Continue)
            }
            Ok(r) if r.mutates() && !session.may_mutate() => {
                let e = if self.token.is_some() {
                    E_DENIED
                } else {
                    self.read_only()
                };
                (Err(e), Outcome::Continue)
            }
            Ok(Request::Auth(_)) if self.token.is_none() && !session.may_mutate() => {
                (Err(self.read_only()), Outcome::Continue)
            }
            Ok(r) => self.answer(now, session, r, env, out),
        };
        if res.is_ok() && !out.overflowed() {
            return outcome;
        }
        // An answer that overflowed `out` is no answer, whatever error its writer turned the
        // overflow into.
        let res = match res {
            _ if out.overflowed() => {
                out.truncate(start);
                if small {
                    return Outcome::NoRoom;
                }
                Err(E_TOO_BIG)
            }
            r => r,
        };
        if let Err(e) = res {
            out.truncate(start);
            self.stats.errors += 1;
            // An ERR line is short: it always fits a buffer that can hold any reply.
            if write_err(out, e).is_err() {
                out.truncate(start);
                return Outcome::NoRoom;
            }
        }
        outcome
    }

    /// The reply to a well-formed, permitted request. Never inlined: [`Agent::handle`] is
    /// inlined into the run loop's per-line loop, and the optimiser would otherwise set
    /// up the state of every command there once per batch of lines (PING, the one that
    /// comes in batches, is answered in `handle` itself).
    #[inline(never)]
    fn answer(
        &mut self,
        now: Instant,
        session: &mut Session,
        req: Request<'_>,
        env: &mut dyn Env,
        out: &mut WBuf<'_>,
    ) -> (Result<(), Error>, Outcome) {
        let ok = |r: fmt::Result| (r.map_err(|_| E_TOO_BIG), Outcome::Continue);
        let ok_or = |r: Result<(), Error>| (r, Outcome::Continue);
        match req {
            Request::Ping => ok(write_pong(out)),
            Request::Help => ok(writeln!(out, "OK {HELP}")),
            Request::Quit => (write_ok(out).map_err(|_| E_TOO_BIG), Outcome::Close),
            Request::Status => ok(self.write_status(now, env, out)),
            Request::Stats => ok(self.write_stats(env, out)),
            Request::Sockets => ok((|| {
                out.write_str("OK {\"sockets\":[")?;
                env.write_sockets(out)?;
                out.write_str("]}\n")
            })()),
            Request::Keys => ok((|| {
                out.write_str("OK")?;
                for f in self.facts.iter() {
                    out.write_char(' ')?;
                    out.push_bytes(&f.key)?;
                }
                out.write_char('\n')
            })()),
            Request::Get(k) => match self.facts.get(k) {
                Some(f) => ok((|| {
                    out.write_str("OK ")?;
                    out.push_bytes(&f.value)?;
                    out.write_char('\n')
                })()),
                None => (Err(E_NOT_FOUND), Outcome::Continue),
            },
            Request::Set { key, value, ttl } => match self.set_fact(now, key, value, ttl) {
                Ok(()) => ok(write_ok(out)),
                Err(e) => (Err(e), Outcome::Continue),
            },
            Request::Del(k) => match self.del_fact(k) {
                Ok(()) => ok(write_ok(out)),
                Err(e) => (Err(e), Outcome::Continue),
            },
            Request::Interval(None) => ok(writeln!(out, "OK {}", self.interval_secs)),
            Request::Interval(Some(s)) => {
                self.interval_secs = s;
                ok(writeln!(out, "OK {s}"))
            }
            Request::Identify(secs) => match self.identify(now, secs, env) {
                Ok(()) => ok(write_ok(out)),
                Err(e) => (Err(e), Outcome::Continue),
            },
            Request::Auth(None) => ok_or(self.challenge(now, session, env, out)),
            Request::Auth(Some(given)) => self.auth(now, session, given, out),
        }
    }

    /// `SET key value [ttl=SECS]` (control connections and the publish socket).
    fn set_fact(
        &mut self,
        now: Instant,
        key: &[u8],
        value: &[u8],
        ttl: Option<u32>,
    ) -> Result<(), Error> {
        let expires = ttl.map(|t| now + Duration::from_secs(u64::from(t)));
        self.facts.set(key, value, expires).map_err(|_| E_FULL)
    }

    /// `DEL key` (control connections and the publish socket).
    fn del_fact(&mut self, key: &[u8]) -> Result<(), Error> {
        if self.facts.del(key) {
            Ok(())
        } else {
            Err(E_NOT_FOUND)
        }
    }

    /// One datagram from the publish socket: exactly one `SET key value [ttl=SECS]` or
    /// `DEL key` line in the control protocol's syntax, optionally ended by `\n` or `\r\n`.
    /// Nothing is answered; the result says why a datagram was refused (for the log) and
    /// is counted in STATS (`published` / `publish_rejected`). `DEL` of a fact that is
    /// not there counts as published: the fact is gone, as the sender asked.
    pub fn publish(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Error> {
        let res = match next_line(datagram) {
            // One line and its terminator, nothing after it.
            Frame::Line(l, used) if used == datagram.len() => Ok(l),
            // No terminator at all.
            Frame::Incomplete if datagram.len() <= crate::limits::LINE_MAX => Ok(datagram),
            _ => Err(E_PUBLISH_LINE),
        }
        .and_then(|line| match parse(line)? {
            Request::Set { key, value, ttl } => self.set_fact(now, key, value, ttl),
            Request::Del(k) => match self.del_fact(k) {
                Err(e) if e.code == ErrCode::NotFound => Ok(()),
                r => r,
            },
            _ => Err(E_PUBLISH_ONLY),
        });
        match res {
            Ok(()) => self.stats.published += 1,
            Err(_) => self.stats.publish_rejected += 1,
        }
        res
    }

    /// The failed AUTHs of `transport`.
    fn fails(&mut self, transport: Transport) -> &mut Fails {
        &mut self.auth_fails[usize::from(transport == Transport::Unix)]
    }

    /// `AUTH` alone: a fresh nonce for this connection, replacing any outstanding one.
    fn challenge(
        &mut self,
        now: Instant,
        session: &mut Session,
        env: &mut dyn Env,
        out: &mut WBuf<'_>,
    ) -> Result<(), Error> {
        session.challenge = None;
        let mut raw = [0u8; AUTH_NONCE_BYTES];
        env.random(&mut raw).map_err(|_| E_NO_RANDOM)?;
        let mut nonce = [0u8; 2 * AUTH_NONCE_BYTES];
        hex::encode(&raw, &mut nonce);
        session.challenge = Some(Challenge {
            nonce,
            until: now + Duration::from_secs(AUTH_NONCE_SECS),
        });
        out.write_str("OK ")
            .and_then(|_| out.push_bytes(&nonce))
            .and_then(|_| out.write_char('\n'))
            .map_err(|_| E_TOO_BIG)
    }

    /// `AUTH <arg>`: the answer to this connection's challenge, or (on the Unix socket, or
    /// over TCP with `--plain-auth`) the token itself. Any answer uses up the challenge.
    fn auth(
        &mut self,
        now: Instant,
        session: &mut Session,
        given: &[u8],
        out: &mut WBuf<'_>,
    ) -> (Result<(), Error>, Outcome) {
        let challenge = session.challenge.take();
        // A limit on failures per second shared by every client of the transport, so
        // reconnecting does not buy more guesses.
        let tcp = session.transport == Transport::Tcp;
        if self.fails(session.transport).full(now) {
            return (Err(E_AUTH_BUSY), Outcome::Continue);
        }
        let plain_ok = self.plain_auth || !tcp;
        let mut tag = [0u8; 32];
        let is_answer = hex::decode(given, &mut tag);
        let live = challenge.filter(|c| now < c.until);
        let verdict = match (&self.token, live) {
            (Some(t), Some(c))
                if is_answer
                    && crate::crypto::hmac_verify(t, &[AUTH_CHALLENGE_PREFIX, &c.nonce], &tag) =>
            {
                Ok(())
            }
            (Some(t), _) if plain_ok && ct_eq(t, given) => Ok(()),
            _ if !is_answer && plain_ok => Err(E_AUTH),
            _ if !is_answer => Err(E_AUTH_PLAIN),
            _ if challenge.is_none() => Err(E_AUTH_NO_NONCE),
            _ if live.is_none() => Err(E_AUTH_EXPIRED),
            _ => Err(E_AUTH_WRONG),
        };
        match verdict {
            Ok(()) => {
                session.authed = true;
                (write_ok(out).map_err(|_| E_TOO_BIG), Outcome::Continue)
            }
            Err(e) => {
                self.fails(session.transport).record(now);
                self.stats.auth_failures += 1;
                session.hold_until = Some(now + Duration::from_millis(AUTH_FAIL_DELAY_MS));
                (Err(e), Outcome::Hold)
            }
        }
    }

    fn identify(
        &mut self,
        now: Instant,
        secs: Option<u32>,
        env: &mut dyn Env,
    ) -> Result<(), Error> {
        if !self.led {
            return Err(E_NO_LED);
        }
        let secs = secs.unwrap_or(IDENTIFY_DEFAULT_SECS);
        if secs == 0 {
            self.stop_identify(env);
            return Ok(());
        }
        // Why, as the LED said it (the trigger that names none, the file not writable).
        env.led(Led::On)
            .map_err(|why| Error::new(ErrCode::Unsupported, why))?;
        self.identify = Some(Identify {
            until: now + Duration::from_secs(u64::from(secs)),
            next_toggle: now + Duration::from_millis(IDENTIFY_HALF_PERIOD_MS),
            on: true,
        });
        Ok(())
    }

    /// Ends a blink and puts the LED back. Also when none blinks (`IDENTIFY 0`, shutdown):
    /// a restore that failed at the end of the last one is tried again (and is nothing
    /// when there is nothing to put back).
    fn stop_identify(&mut self, env: &mut dyn Env) {
        self.identify = None;
        if self.led {
            if let Err(e) = env.led(Led::Restore) {
                log::warn!("identify: restoring the LED failed: {e}");
            }
        }
    }

    /// The earliest time the core wants [`Agent::on_timer`] called.
    pub fn next_deadline(&self) -> Option<Instant> {
        let led = self.identify.as_ref().map(|i| i.next_toggle.min(i.until));
        match (self.facts.next_expiry(), led) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires facts and drives the IDENTIFY blink.
    pub fn on_timer(&mut self, now: Instant, env: &mut dyn Env) {
        self.stats.facts_expired += self.facts.expire(now) as u64;
        if let Some(id) = self.identify.as_mut() {
            if now >= id.until {
                self.stop_identify(env);
            } else if now >= id.next_toggle {
                id.on = !id.on;
                id.next_toggle = now + Duration::from_millis(IDENTIFY_HALF_PERIOD_MS);
                let _ = env.led(if id.on { Led::On } else { Led::Off });
            }
        }
    }

    /// Called once on shutdown: puts the LED back.
    pub fn shutdown(&mut self, env: &mut dyn Env) {
        self.stop_identify(env);
    }

    /// Writes the facts as a JSON object body `"k":"v",...` (no braces).
    pub fn write_facts(&self, w: &mut WBuf<'_>) -> fmt::Result {
        for (i, f) in self.facts.iter().enumerate() {
            if i > 0 {
                w.write_char(',')?;
            }
            json::write_str(w, &f.key)?;
            w.write_char(':')?;
            json::write_str(w, &f.value)?;
        }
        Ok(())
    }

    /// One beacon interface as STATUS shows it (`beacon`, each of `beacons`).
    fn write_beacon(&self, w: &mut WBuf<'_>, state: BeaconState, info: &BeaconInfo) -> fmt::Result {
        w.write_str("{\"state\":")?;
        json::write_str(w, state.as_str().as_bytes())?;
        w.write_str(",\"iface\":")?;
        if info.iface.is_empty() {
            w.write_str("null")?;
        } else {
            json::write_str(w, info.iface.as_bytes())?;
        }
        write!(
            w,
            ",\"port\":{},\"interval\":{},\"seq\":{},\"families\":[{}],\"last_error\":",
            info.port,
            self.interval_secs,
            info.seq,
            // Beaconing now: a down interface keeps its sockets, but sends nothing.
            match (state == BeaconState::Up, info.v4, info.v6) {
                (true, true, true) => "4,6",
                (true, true, false) => "4",
                (true, false, true) => "6",
                _ => "",
            }
        )?;
        if info.last_error.is_empty() {
            w.write_str("null")?;
        } else {
            json::write_str(w, info.last_error.as_bytes())?;
        }
        w.write_char('}')
    }

    fn write_status(&self, now: Instant, env: &mut dyn Env, w: &mut WBuf<'_>) -> fmt::Result {
        let b = env.board();
        w.write_str("OK {\"id\":")?;
        json::write_str(w, self.id.as_bytes())?;
        w.write_str(",\"host\":")?;
        json::write_str(w, b.host.as_bytes())?;
        write!(
            w,
            ",\"version\":\"{VERSION}\",\"revision\":\"{REVISION}\",\"uptime\":{},\"agent_uptime\":{},\"load\":{},\"loadavg\":[{},{},{}]",
            b.uptime_s,
            self.uptime(now).as_secs(),
            Fixed(b.load[0].into(), 2),
            Fixed(b.load[0].into(), 2),
            Fixed(b.load[1].into(), 2),
            Fixed(b.load[2].into(), 2)
        )?;
        write!(
            w,
            ",\"memory\":{{\"total_kb\":{},\"avail_kb\":{}}},\"mem_avail_kb\":{},\"temp_c\":",
            b.mem_total_kb, b.mem_avail_kb, b.mem_avail_kb
        )?;
        json::write_opt_f1(w, b.temp_c)?;
        // The spec's name for the same reading (`temp_c` is the beacon's name).
        w.write_str(",\"temperature\":")?;
        json::write_opt_f1(w, b.temp_c)?;
        w.write_str(",\"addresses\":[")?;
        for (i, (name, addr)) in b.addrs.iter().enumerate() {
            if i > 0 {
                w.write_char(',')?;
            }
            w.write_str("{\"iface\":")?;
            json::write_str(w, name.as_bytes())?;
            write!(w, ",\"addr\":\"{addr}\"}}")?;
        }
        let (state, info) = env.beacon();
        w.write_str("],\"beacon\":")?;
        self.write_beacon(w, state, info)?;
        w.write_str(",\"beacons\":[")?;
        let mut i = 0;
        while let Some((state, info)) = env.beacons(i) {
            if i > 0 {
                w.write_char(',')?;
            }
            self.write_beacon(w, state, info)?;
            i += 1;
        }
        w.write_char(']')?;
        w.write_str(",\"facts\":{")?;
        self.write_facts(w)?;
        let (tcp, unix) = env.clients();
        writeln!(
            w,
            "}},\"clients\":{{\"tcp\":{tcp},\"unix\":{unix},\"total\":{},\"max\":{}}}}}",
            tcp + unix,
            self.max_clients
        )
    }

    fn write_stats(&self, env: &mut dyn Env, w: &mut WBuf<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            w,
            "OK {{\"accepted\":{},\"refused_busy\":{},\"closed_idle\":{},\"closed_too_long\":{},\"closed_slow\":{},\"requests\":{},\"errors\":{},\"auth_failures\":{},",
            s.accepted, s.refused_busy, s.closed_idle, s.closed_too_long, s.closed_slow, s.requests, s.errors, s.auth_failures
        )?;
        write!(
            w,
            "\"published\":{},\"publish_rejected\":{},",
            s.published, s.publish_rejected
        )?;
        writeln!(
            w,
            "\"facts_expired\":{},\"beacons_sent\":{},\"beacon_errors\":{},\"probes_answered\":{},\"probes_limited\":{},\"datagrams_dropped\":{},\"log_lines_dropped\":{},\"bytes_in\":{},\"bytes_out\":{},\"allocs_since_ready\":{}}}",
            s.facts_expired,
            s.beacons_sent,
            s.beacon_errors,
            s.probes_answered,
            s.probes_limited,
            s.datagrams_dropped,
            env.log_lines_dropped(),
            s.bytes_in,
            s.bytes_out,
            env.allocations()
        )
    }
}

/// Constant-time comparison: the time taken depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    core::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::request::parse;

    #[derive(Default)]
    struct FakeEnv {
        leds: std::vec::Vec<Led>,
        beacon: BeaconInfo,
        /// Deterministic "randomness": each call fills with the next counter value.
        draws: u8,
        no_random: bool,
        /// The board to show instead of the default one.
        board: Option<Board>,
        /// STATUS `beacons`.
        beacons: std::vec::Vec<(BeaconState, BeaconInfo)>,
    }

    impl Env for FakeEnv {
        fn board(&mut self) -> Board {
            if let Some(b) = &self.board {
                return b.clone();
            }
            let mut b = Board::default();
            let _ = b.host.push_str("pi");
            b.temp_c = Some(41.25);
            b
        }
        fn beacons(&self, i: usize) -> Option<(BeaconState, &BeaconInfo)> {
            self.beacons.get(i).map(|(s, b)| (*s, b))
        }
        fn write_sockets(&mut self, w: &mut WBuf<'_>) -> fmt::Result {
            w.write_str("{\"kind\":\"fake\"}")
        }
        fn clients(&self) -> (usize, usize) {
            (1, 2)
        }
        fn led(&mut self, cmd: Led) -> Result<(), &'static str> {
            self.leds.push(cmd);
            Ok(())
        }
        fn allocations(&self) -> u64 {
            0
        }
        fn beacon(&self) -> (BeaconState, &BeaconInfo) {
            (BeaconState::Off, &self.beacon)
        }
        fn random(&mut self, buf: &mut [u8]) -> Result<(), &'static str> {
            if self.no_random {
                return Err("no entropy");
            }
            self.draws += 1;
            buf.fill(self.draws);
            Ok(())
        }
    }

    fn agent(now: Instant, led: bool) -> Agent {
        agent_with(now, led, false)
    }

    fn agent_with(now: Instant, led: bool, plain_auth: bool) -> Agent {
        let cfg = Config {
            max_clients: 16,
            interval_secs: 5,
            led,
            plain_auth,
        };
        Agent::new(now, "abc", &cfg)
    }

    /// Asks for a challenge; returns the nonce and the right `AUTH <answer>` line for `token`.
    fn challenge(
        a: &mut Agent,
        now: Instant,
        s: &mut Session,
        token: &[u8],
        env: &mut FakeEnv,
    ) -> (String, String) {
        let r = run(a, now, s, "AUTH", env);
        let nonce = r.strip_prefix("OK ").unwrap().trim_end().to_string();
        assert_eq!(nonce.len(), 32, "{r}");
        assert!(nonce
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        (nonce.clone(), answer(token, &nonce))
    }

    fn answer(token: &[u8], nonce: &str) -> String {
        let tag = crate::crypto::hmac_sha256(token, &[b"tether-auth-v1:", nonce.as_bytes()]);
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("AUTH {hex}")
    }

    fn run(a: &mut Agent, now: Instant, s: &mut Session, line: &str, env: &mut FakeEnv) -> String {
        let mut buf = [0u8; 8192];
        let mut w = WBuf::new(&mut buf);
        a.handle(now, s, parse(line.as_bytes()), env, &mut w);
        String::from_utf8(w.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn tcp_is_read_only_until_auth() {
        let t = Instant::now();
        let mut a = agent(t, false);
        a.set_token(Some(b"s3cret"));
        let mut env = FakeEnv::default();
        let mut s = Session::new(Transport::Tcp);
        assert!(run(&mut a, t, &mut s, "SET a 1", &mut env).starts_with("ERR denied "));
        assert!(run(&mut a, t, &mut s, "INTERVAL 9", &mut env).starts_with("ERR denied "));
        assert_eq!(run(&mut a, t, &mut s, "INTERVAL", &mut env), "OK 5\n");
        assert!(run(&mut a, t, &mut s, "AUTH nope", &mut env).starts_with("ERR denied "));
        let t = t + Duration::from_secs(1);
        let (_, good) = challenge(&mut a, t, &mut s, b"s3cret", &mut env);
        assert_eq!(run(&mut a, t, &mut s, &good, &mut env), "OK\n");
        assert_eq!(run(&mut a, t, &mut s, "SET a 1", &mut env), "OK\n");
        assert_eq!(run(&mut a, t, &mut s, "get a", &mut env), "OK 1\n");
        let mut u = Session::new(Transport::Unix);
        assert_eq!(run(&mut a, t, &mut u, "DEL a", &mut env), "OK\n");
        assert!(run(&mut a, t, &mut u, "DEL a", &mut env).starts_with("ERR not-found "));
    }

    #[test]
    fn challenge_good_wrong_reused_expired_and_absent() {
        let t = Instant::now();
        let mut a = agent(t, false);
        a.set_token(Some(b"s3cret"));
        let mut env = FakeEnv::default();
        let mut s = Session::new(Transport::Tcp);
        // Good answer.
        let (nonce, good) = challenge(&mut a, t, &mut s, b"s3cret", &mut env);
        assert_eq!(nonce, "01".repeat(16));
        assert_eq!(run(&mut a, t, &mut s, &good, &mut env), "OK\n");
        // The same answer again: the nonce was used up.
        let mut s = Session::new(Transport::Tcp);
        let r = run(&mut a, t, &mut s, &good, &mut env);
        assert_eq!(
            r,
            "ERR denied no challenge outstanding on this connection (send AUTH first)\n"
        );
        assert!(!s.authed);
        // Wrong answer (signed with another token), then the right one for the used nonce.
        let (nonce, _) = challenge(&mut a, t, &mut s, b"s3cret", &mut env);
        let r = run(&mut a, t, &mut s, &answer(b"guess", &nonce), &mut env);
        assert_eq!(r, "ERR denied wrong answer to the challenge\n");
        let r = run(&mut a, t, &mut s, &answer(b"s3cret", &nonce), &mut env);
        assert!(r.starts_with("ERR denied no challenge outstanding"), "{r}");
        // Expired: valid strictly less than 30 s.
        let (_, late) = challenge(&mut a, t, &mut s, b"s3cret", &mut env);
        let t30 = t + Duration::from_secs(AUTH_NONCE_SECS);
        let r = run(&mut a, t30, &mut s, &late, &mut env);
        assert_eq!(
            r,
            "ERR denied the challenge expired (send AUTH for a new one)\n"
        );
        let (_, in_time) = challenge(&mut a, t30, &mut s, b"s3cret", &mut env);
        let just = t30 + Duration::from_millis(29_999);
        assert_eq!(run(&mut a, just, &mut s, &in_time, &mut env), "OK\n");
        assert_eq!(a.stats.auth_failures, 4);
        // Uppercase hex of the right tag is still the right tag.
        let mut u = Session::new(Transport::Tcp);
        let (_, good) = challenge(&mut a, just, &mut u, b"s3cret", &mut env);
        assert_eq!(
            run(&mut a, just, &mut u, &good.to_uppercase(), &mut env),
            "OK\n"
        );
    }

    #[test]
    fn a_nonce_belongs_to_its_connection_and_a_new_one_replaces_it() {
        let t = Instant::now();
        let mut a = agent(t, false);
        a.set_token(Some(b"s3cret"));
        let mut env = FakeEnv::default();
        let (mut s1, mut s2) = (Session::new(Transport::Tcp), Session::new(Transport::Tcp));
        let (_, for_s1) = challenge(&mut a, t, &mut s1, b"s3cret", &mut env);
        let r = run(&mut a, t, &mut s2, &for_s1, &mut env);
        assert!(r.starts_with("ERR denied no challenge outstanding"), "{r}");
        let (_, old) = challenge(&mut a, t, &mut s2, b"s3cret", &mut env);
        let (_, new) = challenge(&mut a, t, &mut s2, b"s3cret", &mut env);
        assert!(run(&mut a, t, &mut s2, &old, &mut env).starts_with("ERR denied wrong answer"));
        let (_, new2) = challenge(&mut a, t, &mut s2, b"s3cret", &mut env);
        assert_ne!(new, new2);
        assert_eq!(run(&mut a, t, &mut s2, &new2, &mut env), "OK\n");
        assert_eq!(run(&mut a, t, &mut s1, &for_s1, &mut env), "OK\n");
    }

    #[test]
    fn plain_token_is_refused_over_tcp_unless_plain_auth() {
        let t = Instant::now();
        let mut env = FakeEnv::default();
        let mut a = agent(t, false);
        a.set_token(Some(b"s3cret"));
        let mut s = Session::new(Transport::Tcp);
        let r = run(&mut a, t, &mut s, "AUTH s3cret", &mut env);
        assert!(
            r.starts_with("ERR denied plain AUTH <token> is off over TCP"),
            "{r}"
        );
        assert!(!s.authed);
        // The Unix socket is local: the token crosses no network, so plain AUTH works there.
        let mut u = Session::new(Transport::Unix);
        assert_eq!(run(&mut a, t, &mut u, "AUTH s3cret", &mut env), "OK\n");
        let mut p = agent_with(t, false, true);
        p.set_token(Some(b"s3cret"));
        let mut s = Session::new(Transport::Tcp);
        assert_eq!(
            run(&mut p, t, &mut s, "AUTH nope", &mut env),
            "ERR denied bad token\n"
        );
        let t = t + Duration::from_secs(1);
        assert_eq!(run(&mut p, t, &mut s, "AUTH s3cret", &mut env), "OK\n");
        // With --plain-auth the challenge still works.
        let mut s = Session::new(Transport::Tcp);
        let (_, good) = challenge(&mut p, t, &mut s, b"s3cret", &mut env);
        assert_eq!(run(&mut p, t, &mut s, &good, &mut env), "OK\n");
    }

    #[test]
    fn no_token_or_no_randomness_never_authenticates() {
        let t = Instant::now();
        let mut a = agent(t, false);
        let mut env = FakeEnv::default();
        let mut s = Session::new(Transport::Tcp);
        // Without a token no challenge is offered, and no answer (nor the empty token) is
        // taken; a mutating request says why, and none of it counts as a failed AUTH.
        let read_only = "ERR denied read-only over TCP: this agent has no --token-file";
        for line in ["AUTH", "AUTH ", "AUTH 00", "SET k v"] {
            let r = run(&mut a, t, &mut s, line, &mut env);
            assert!(r.starts_with(read_only), "{line}: {r}");
        }
        assert!(s.challenge.is_none() && !s.authed);
        assert_eq!(a.stats.auth_failures, 0);
        a.set_token(Some(b"s3cret"));
        env.no_random = true;
        let r = run(&mut a, t, &mut s, "AUTH", &mut env);
        assert_eq!(r, "ERR busy no randomness for a challenge, try later\n");
        assert!(s.challenge.is_none());
    }

    #[test]
    fn auth_failures_are_rate_limited_globally() {
        let t = Instant::now();
        let mut a = agent(t, false);
        a.set_token(Some(b"tok"));
        let mut env = FakeEnv::default();
        for _ in 0..AUTH_FAILS_PER_SEC {
            let mut s = Session::new(Transport::Tcp);
            assert!(run(&mut a, t, &mut s, "AUTH x", &mut env).starts_with("ERR denied"));
        }
        let mut s = Session::new(Transport::Tcp);
        let (_, good) = challenge(&mut a, t, &mut s, b"tok", &mut env);
        assert!(run(&mut a, t, &mut s, &good, &mut env).starts_with("ERR busy"));
        // The refused answer used up its nonce too.
        let later = t + Duration::from_secs(1);
        let r = run(&mut a, later, &mut s, &good, &mut env);
        assert!(r.starts_with("ERR denied no challenge"), "{r}");
        let later = later + Duration::from_secs(1);
        let (_, good) = challenge(&mut a, later, &mut s, b"tok", &mut env);
        assert_eq!(run(&mut a, later, &mut s, &good, &mut env), "OK\n");
    }

    /// At most five failures are checked in any second, not five per calendar-like window:
    /// a fixed window let nine through in 50 ms across its edge.
    #[test]
    fn auth_failures_are_limited_in_any_second() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let mut a = agent(t, false);
        a.set_token(Some(b"tok"));
        let mut env = FakeEnv::default();
        let mut fail = |a: &mut Agent, ms| {
            let mut s = Session::new(Transport::Tcp);
            run(a, at(ms), &mut s, "AUTH x", &mut env)
        };
        for ms in [0, 950, 950, 950, 950] {
            assert!(fail(&mut a, ms).starts_with("ERR denied"), "{ms}");
        }
        // The one at 0 is a second old: one more is checked, then none until 1950.
        assert!(fail(&mut a, 1000).starts_with("ERR denied"));
        assert!(fail(&mut a, 1000).starts_with("ERR busy"));
        assert!(fail(&mut a, 1949).starts_with("ERR busy"));
        assert!(fail(&mut a, 1950).starts_with("ERR denied"));
        assert_eq!(a.stats.auth_failures, 7);
    }

    #[test]
    fn publish_takes_one_set_or_del_line_and_counts() {
        let t = Instant::now();
        let mut a = agent(t, false);
        for ok in [
            &b"SET temp 21.5"[..],
            b"SET temp 22\n",
            b"set hum 40 ttl=60\r\n",
            b"DEL gone",
            b"SET x 1",
            b"del x\n",
        ] {
            assert_eq!(
                a.publish(t, ok),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        assert_eq!(a.facts.get(b"temp").unwrap().value.as_slice(), b"22");
        assert!(a.facts.get(b"x").is_none());
        let long = [b'a'; 256];
        for bad in [
            &b""[..],
            b"\n",
            b"PING",
            b"STATUS\n",
            b"INTERVAL 9",
            b"SET a 1\nSET b 2\n",
            b"SET a 1\nDEL a",
            b"SET bad/key 1",
            b"SET k",
            b"\xff\xfe",
            &long,
        ] {
            assert!(
                a.publish(t, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!((a.stats.published, a.stats.publish_rejected), (6, 11));
        assert_eq!(a.interval_secs, 5);
        // The ttl works as over the control socket.
        a.on_timer(t + Duration::from_secs(61), &mut FakeEnv::default());
        assert!(a.facts.get(b"hum").is_none());
        // A full table refuses, and keeps what it has.
        for i in 0..crate::limits::MAX_FACTS {
            let _ = a.publish(t, format!("SET f{i} v").as_bytes());
        }
        assert_eq!(
            a.publish(t, b"SET one more").map_err(|e| e.code),
            Err(ErrCode::Full)
        );
        assert_eq!(a.facts.get(b"temp").unwrap().value.as_slice(), b"22");
    }

    #[test]
    fn ct_eq_matches_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn status_is_one_json_line() {
        let t = Instant::now();
        let mut a = agent(t, false);
        let mut env = FakeEnv::default();
        let mut u = Session::new(Transport::Unix);
        run(&mut a, t, &mut u, "SET q \"quoted\\\"", &mut env);
        let s = run(&mut a, t, &mut u, "STATUS", &mut env);
        assert!(s.starts_with("OK {\"id\":\"abc\",\"host\":\"pi\""), "{s}");
        assert!(
            (s.contains("\"temp_c\":41.2,\"temperature\":41.2,")
                || s.contains("\"temp_c\":41.3,\"temperature\":41.3,")),
            "{s}"
        );
        assert!(
            s.contains("\"facts\":{\"q\":\"\\\"quoted\\\\\\\"\"}"),
            "{s}"
        );
        assert!(
            s.contains("\"clients\":{\"tcp\":1,\"unix\":2,\"total\":3,\"max\":16}"),
            "{s}"
        );
        assert_eq!(s.matches('\n').count(), 1);
    }

    /// STATUS with everything at its widest and every name of the characters its escaping
    /// lengthens most: control characters where the kernel gives the name (host, the
    /// addresses' interfaces), `é` in `--iface` names (3 times its bytes), `"` and `\` in
    /// facts and errors, numbers at their widest.
    #[test]
    fn status_at_its_widest_fits() {
        use crate::limits::{
            BEACON_ERROR_MAX, KEY_MAX, MAX_BEACON_IFACES, MAX_FACTS, STATUS_REPLY_MAX, VALUE_MAX,
        };
        let t = Instant::now();
        let cfg = Config {
            max_clients: usize::MAX,
            interval_secs: u32::MAX,
            led: false,
            plain_auth: false,
        };
        let mut a = Agent::new(t, &"\u{1}".repeat(ID_MAX), &cfg);
        for i in 0..MAX_FACTS {
            let key = format!("{i:02}{}", "k".repeat(KEY_MAX - 2));
            let value: std::vec::Vec<u8> = (0..VALUE_MAX)
                .map(|j| if j % 2 == 0 { b'\\' } else { b'"' })
                .collect();
            a.facts.set(key.as_bytes(), &value, None).unwrap();
        }
        let mut b = Board::default();
        // The widest the kernel's names can be shown: each of their bytes a control
        // character (`\u0001` escaped), as wide as a U+FFFD (`\ufffd`) for a byte that is
        // not UTF-8 (the text may hold three times as many bytes, never more characters).
        for _ in 0..crate::limits::HOST_MAX {
            b.host.push('\u{1}').unwrap();
        }
        b.uptime_s = u64::MAX;
        b.load = [-f32::MAX; 3];
        b.mem_total_kb = u64::MAX;
        b.mem_avail_kb = u64::MAX;
        b.temp_c = Some(-f32::MAX);
        let v6: IpAddr = [0xffff_u16; 8].into();
        while !b.addrs.is_full() {
            let mut name = heapless::String::new();
            for _ in 0..IFNAME_MAX {
                name.push('\u{1}').unwrap();
            }
            b.addrs.push((name, v6)).unwrap();
        }
        let mut info = BeaconInfo {
            port: u16::MAX,
            seq: u64::MAX,
            v4: true,
            v6: true,
            ..BeaconInfo::default()
        };
        while info.iface.push('é').is_ok() {}
        while info.last_error.push('"').is_ok() {}
        assert_eq!(info.last_error.len(), BEACON_ERROR_MAX);
        let mut env = FakeEnv {
            board: Some(b),
            beacon: info.clone(),
            ..FakeEnv::default()
        };
        for i in 0..MAX_BEACON_IFACES {
            let state = [BeaconState::Up, BeaconState::Absent][i % 2];
            env.beacons.push((state, info.clone()));
        }
        let mut buf = vec![0u8; STATUS_REPLY_MAX];
        let mut w = WBuf::new(&mut buf);
        let mut u = Session::new(Transport::Unix);
        let r = a.handle(t, &mut u, parse(b"STATUS"), &mut env, &mut w);
        assert_eq!(r, Outcome::Continue);
        let s = core::str::from_utf8(w.as_bytes()).unwrap();
        assert!(s.starts_with("OK {"), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s[3..]).unwrap();
        assert_eq!(v["facts"].as_object().unwrap().len(), MAX_FACTS);
        assert_eq!(v["beacons"].as_array().unwrap().len(), MAX_BEACON_IFACES);
        // More than the bound of escaping that at most doubles a name allowed.
        assert!(s.len() > 10240, "{}", s.len());
    }

    #[test]
    fn identify_blinks_then_restores() {
        let t = Instant::now();
        let mut a = agent(t, true);
        let mut env = FakeEnv::default();
        let mut u = Session::new(Transport::Unix);
        assert_eq!(run(&mut a, t, &mut u, "IDENTIFY 1", &mut env), "OK\n");
        let mut now = t;
        while let Some(d) = a.next_deadline() {
            now = d;
            a.on_timer(now, &mut env);
        }
        assert_eq!(now, t + Duration::from_secs(1));
        assert_eq!(env.leds.first(), Some(&Led::On));
        assert_eq!(env.leds.last(), Some(&Led::Restore));
        assert!(env.leds.contains(&Led::Off));
        let mut b = agent(t, false);
        assert!(run(&mut b, t, &mut u, "IDENTIFY", &mut env).starts_with("ERR unsupported "));
        // A restore that failed (the LED layer keeps what it saved) is tried again at
        // shutdown and at `IDENTIFY 0`, though no blink runs then.
        env.leds.clear();
        a.shutdown(&mut env);
        assert_eq!(run(&mut a, now, &mut u, "IDENTIFY 0", &mut env), "OK\n");
        assert_eq!(env.leds, [Led::Restore, Led::Restore]);
    }
}
