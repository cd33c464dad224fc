//! The status beacon of one interface as a sans-IO state machine ([`Link`]): no sockets,
//! no clock reads, no heap. It is driven by `now`, by what the interface looks like now
//! ([`Link::update`]), by received datagrams ([`Link::on_datagram`]) and by its own
//! deadline ([`Link::poll_timeout`] / [`Link::on_tick`]); it answers with the sockets it
//! wants open ([`Sockets`]) and the datagrams to send ([`Link::poll_transmit`]).
//!
//! What it decides:
//! - every interval one beacon per open family: IPv4 to `255.255.255.255:port`, IPv6 to
//!   `[ff02::1%iface]:port`; a goodbye on shutdown;
//! - the interface state shown in STATUS: absent, down or up; an interface recreated with
//!   a new index gets new sockets (SO_BINDTODEVICE ties a socket to an index);
//! - probe answers: unicast back to the prober over the family the probe came in on,
//!   never larger than the probe (no amplification), through a token bucket, and each
//!   delayed by a random 1–[`PROBE_ANSWER_DELAY_MAX_MS`] ms so that a LAN full of boards
//!   does not answer a scan in the same instant (RFC 6762 §6 does the same);
//! - rate-limited operator warnings about the interface.
//!
//! The run loop (`runloop::links`) owns the sockets and moves bytes; `sys` opens them;
//! `proto::beacon` encodes the bytes. With a fleet key every datagram is signed (see
//! `proto::beacon`); the `addr` inside is the source address of that datagram, unscoped
//! for IPv6 (a scope is local to each host).

use crate::agent::{Agent, BeaconInfo, BeaconState, Board, Stats};
use crate::limits::{
    secret_buf_len, BEACON_ERROR_MAX, DATAGRAM_MAX, FLAP_LINES, FLAP_WINDOW_SECS, FLEET_KEY_MAX,
    MAX_LISTENERS, MAX_METRICS_LISTENERS, PROBE_ANSWER_DELAY_MAX_MS, PROBE_BURST,
    PROBE_PENDING_MAX, PROBE_PER_SEC,
};
use crate::lograte::LogRate;
use crate::proto::beacon::{self, Fields, FleetKey, NONCE_MAX};
use crate::sys::iface::IfName;
use crate::sys::NoSecret;
use core::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `--beacon-family`: which IP families beacon and answer probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Families {
    V4,
    V6,
    #[default]
    Both,
}

impl Families {
    pub fn parse(s: &str) -> Option<Families> {
        match s {
            "4" => Some(Families::V4),
            "6" => Some(Families::V6),
            "both" => Some(Families::Both),
            _ => None,
        }
    }
    pub fn v4(self) -> bool {
        self != Families::V6
    }
    pub fn v6(self) -> bool {
        self != Families::V4
    }
}

/// An IP family of one of a link's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(a: &SocketAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// What the interface looks like now (read by the run loop through `sys::iface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfNow {
    pub index: u32,
    pub up: bool,
    /// The link has a carrier (`IFF_RUNNING`): a cable plugged in, a Wi-Fi association.
    pub running: bool,
    pub v4: Option<Ipv4Addr>,
    /// Its IPv4 broadcast address (answers are never sent there).
    pub broadcast4: Option<Ipv4Addr>,
    /// A usable (not tentative) IPv6 link-local address.
    pub v6: Option<Ipv6Addr>,
    /// A link-local address still in duplicate address detection (usable in a second or
    /// two): the link looks again after [`RECHECK`] instead of a whole interval.
    pub v6_tentative: bool,
}

/// How soon a link re-reads an interface whose link-local address is still tentative.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The sockets a link wants after [`Link::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sockets {
    /// The interface is gone: close every socket.
    None,
    /// Down: keep what is open, open nothing.
    Keep,
    /// Up: sockets bound to interface `index`, one per wanted family. Sockets bound to
    /// another index (the interface was recreated) must be replaced.
    Want { index: u32, v4: bool, v6: bool },
}

/// What a datagram to send is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Beacon,
    Bye,
    Answer,
}

/// One datagram to send: the run loop encodes it with [`Link::encode`], sends it on the
/// link's socket of `family` and reports with [`Link::on_sent`].
#[derive(Debug, Clone)]
pub struct Transmit {
    pub family: Family,
    pub to: SocketAddr,
    pub kind: Kind,
    /// At most this many bytes (a probe answer is never larger than its probe).
    pub max: usize,
    pub nonce: heapless::Vec<u8, NONCE_MAX>,
    /// An answer's source address when the kernel named it (the probe's `local`).
    pub src: Option<Ipv4Addr>,
}

/// A probe answer waiting for its random delay.
#[derive(Debug, Clone)]
struct Pending {
    due: Instant,
    t: Transmit,
}

/// The fleet key and the file it came from (re-read on SIGHUP).
pub struct Signing {
    pub path: PathBuf,
    pub key: FleetKey,
}

/// Why a fleet key file holds no key ([`load_key`]); shown after `--fleet-key PATH: `.
#[derive(Debug)]
pub enum KeyFileError {
    File(NoSecret),
    Key(beacon::KeyError),
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // How to make a key is the useful answer to an empty file.
            KeyFileError::File(NoSecret::Empty) => beacon::KeyError::Short(0).fmt(f),
            KeyFileError::File(e) => e.fmt(f),
            KeyFileError::Key(e) => e.fmt(f),
        }
    }
}

impl KeyFileError {
    /// The exit code when start-up (agent or scan) stops on it: see
    /// [`NoSecret::exit_code`]; a key that is not one is the configuration's (78).
    pub fn exit_code(&self) -> u8 {
        match self {
            KeyFileError::File(e) => e.exit_code(),
            KeyFileError::Key(_) => crate::exit::EX_CONFIG,
        }
    }
}

/// Reads a fleet key file (`--fleet-key`): its contents with surrounding white space
/// trimmed ([`crate::sys::read_secret`]), [`crate::limits::FLEET_KEY_MIN`]..=[`FLEET_KEY_MAX`]
/// bytes. No heap, also when it fails (SIGHUP re-reads it in the steady state). `wait`: a
/// pipe's writer is waited for (scan's, not the agent's: [`crate::sys::read_secret`]).
pub fn load_key(path: &Path, wait: bool) -> Result<FleetKey, KeyFileError> {
    let mut buf = [0u8; secret_buf_len(FLEET_KEY_MAX)];
    let raw =
        crate::sys::read_secret(path, &mut buf, FLEET_KEY_MAX, wait).map_err(KeyFileError::File)?;
    raw.accept_with(path, FleetKey::parse)
        .map_err(KeyFileError::Key)
}

/// `--fleet-key PATH: why`, the text of a fleet key file that holds no key.
pub fn key_file_message(path: &Path, e: &KeyFileError) -> String {
    format!("--fleet-key {}: {e}", path.display())
}

impl Signing {
    /// SIGHUP: re-reads the key file; a bad file keeps the old key.
    pub fn reload(&mut self) {
        match load_key(&self.path, false) {
            Ok(k) if k == self.key => log::info!("fleet key {}: unchanged", self.path.display()),
            Ok(k) => {
                self.key = k;
                log::info!("fleet key reloaded from {}", self.path.display());
            }
            Err(e) => {
                let p = self.path.display();
                log::warn!("--fleet-key {p}: {e}: keeping the previous fleet key");
            }
        }
    }
}

/// The ports a beacon announces: those of a listener a peer reaches at the beacon's own
/// address. IPv6 listeners are IPV6_V6ONLY, so `0.0.0.0` serves IPv4 only and `[::]` IPv6
/// only, and one on a specific address serves that address only: `--metrics 0.0.0.0:9545`
/// alone must not put a port into IPv6 beacons (scan would list `[fe80::…%eth0]:9545`,
/// which refuses), nor `[fd00::3]:9545` into beacons from `fe80::…`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announced {
    ctl: heapless::Vec<SocketAddr, MAX_LISTENERS>,
    metrics: heapless::Vec<SocketAddr, MAX_METRICS_LISTENERS>,
}

impl Announced {
    /// The control and metrics listeners, by their real addresses.
    pub fn new(
        ctl: impl IntoIterator<Item = SocketAddr>,
        metrics: impl IntoIterator<Item = SocketAddr>,
    ) -> Announced {
        Announced {
            ctl: ctl.into_iter().take(MAX_LISTENERS).collect(),
            metrics: metrics.into_iter().take(MAX_METRICS_LISTENERS).collect(),
        }
    }

    /// (control port, metrics port) for a beacon over `f` from `addr` (the link's address
    /// of that family, when it has one): a listener on that family's unspecified address
    /// or on `addr`. Control falls back to the first listener (a beacon always names a
    /// port; [`Announced::serves`] tells start-up to warn); metrics to none.
    pub fn ports(&self, f: Family, addr: Option<IpAddr>) -> (u16, Option<u16>) {
        let at = |list: &[SocketAddr]| {
            list.iter()
                .find(|l| Family::of(l) == f && (l.ip().is_unspecified() || Some(l.ip()) == addr))
                .map(|l| l.port())
        };
        let first = self.ctl.first().map_or(0, |l| l.port());
        (at(&self.ctl).unwrap_or(first), at(&self.metrics))
    }

    /// Whether some control listener of family `f` is reachable from the LAN (not on
    /// loopback): without one, that family's beacons name a port its peers cannot reach.
    pub fn serves(&self, f: Family) -> bool {
        self.ctl
            .iter()
            .any(|l| Family::of(l) == f && !l.ip().is_loopback())
    }
}

/// What every link's datagrams share: the board's identity and announced ports.
pub struct Common<'a> {
    pub agent: &'a Agent,
    pub board: &'a Board,
    pub ports: &'a Announced,
    pub run: &'a str,
    pub key: Option<&'a FleetKey>,
}

/// ff02::1, all nodes on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The beacon of one interface. See the module docs.
pub struct Link {
    families: Families,
    info: BeaconInfo,
    state: BeaconState,
    /// False until the interface was first looked at: that look reports its state even
    /// when it is the initial one (an `--iface` absent from the start is warned about).
    looked: bool,
    /// The index the sockets are (to be) bound to, when up.
    index: Option<u32>,
    addr4: Option<Ipv4Addr>,
    broadcast4: Option<Ipv4Addr>,
    addr6: Option<Ipv6Addr>,
    last_tick: Option<Instant>,
    /// When the first beacon is due (start-up).
    first_due: Instant,
    /// Token bucket for probe answers: (tokens, last refill).
    bucket: (u32, Instant),
    last_warn: crate::lograte::Repeat,
    /// Beacons (or goodbyes) queued for each family, sent by [`Link::poll_transmit`].
    queued: [Option<Kind>; 2],
    pending: heapless::Vec<Pending, PROBE_PENDING_MAX>,
    /// When to re-read the interface before the next tick (a tentative address).
    recheck: Option<Instant>,
    /// xorshift32 state for the answer delay (seeded from the run id: no syscall).
    rng: u32,
    /// The next sequence number per family: each stream of datagrams out of one socket
    /// counts +1 (a scanner remembers seqs per source address).
    seq: [u64; 2],
    /// Debug lines about dropped datagrams, rate-limited.
    log: LogRate,
    /// Lines about changes of state, rate-limited ([`FLAP_LINES`]).
    changes: LogRate,
    /// The family whose failed send `last_error` tells, when that is what it tells: that
    /// family's next beacon ends it; the other family's does not (a family whose socket
    /// cannot be opened stays explained while the other one beacons).
    send_failed: Option<Family>,
}

/// What outlives a link that another replaces (no `--iface`: the default interface
/// changed, [`Link::carry_on`]).
pub struct Carried {
    seq: [u64; 2],
    changes: LogRate,
}

fn fam_ix(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Link {
    pub fn new(now: Instant, iface: &str, port: u16, families: Families, seed: u32) -> Link {
        let mut name = IfName::new();
        let _ = name.push_str(iface);
        Link {
            families,
            info: BeaconInfo {
                iface: name,
                port,
                ..BeaconInfo::default()
            },
            state: BeaconState::Absent,
            looked: false,
            index: None,
            addr4: None,
            broadcast4: None,
            addr6: None,
            last_tick: None,
            first_due: now,
            bucket: (PROBE_BURST, now),
            last_warn: crate::lograte::Repeat::default(),
            queued: [None, None],
            pending: heapless::Vec::new(),
            rng: seed | 1,
            seq: [0, 0],
            recheck: None,
            log: LogRate::new(now),
            changes: LogRate::per(now, Duration::from_secs(FLAP_WINDOW_SECS), FLAP_LINES),
            send_failed: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.info.iface
    }

    /// This link replaced by another: what the new one carries on ([`Link::carry_on`]).
    pub fn carried(self) -> Carried {
        Carried {
            seq: self.seq,
            changes: self.changes,
        }
    }

    /// Carries on where the replaced link stopped: its sequence numbers (a scanner holds
    /// a run to ever higher ones per source address: starting at 0 again, a board that
    /// came back to an address within the scanner's memory would read as replayed and be
    /// hidden) and its budget of lines about changes (two interfaces flapping in turn are
    /// one flap).
    pub fn carry_on(&mut self, c: Carried) {
        self.seq = c.seq;
        self.info.seq = c.seq[0].max(c.seq[1]);
        self.changes = c.changes;
    }

    pub fn port(&self) -> u16 {
        self.info.port
    }

    pub fn state(&self) -> (BeaconState, &BeaconInfo) {
        (self.state, &self.info)
    }

    /// The next moment this link needs the loop: its next beacon or a delayed answer.
    pub fn poll_timeout(&self, interval: Duration) -> Instant {
        let tick = self.last_tick.map_or(self.first_due, |t| t + interval);
        let tick = self.recheck.map_or(tick, |r| r.min(tick));
        self.pending.iter().map(|p| p.due).fold(tick, Instant::min)
    }

    /// True when the periodic beacon is due.
    pub fn tick_due(&self, now: Instant, interval: Duration) -> bool {
        self.last_tick.map_or(self.first_due, |t| t + interval) <= now
    }

    /// True when the interface should be re-read before the next tick.
    pub fn recheck_due(&self, now: Instant) -> bool {
        self.recheck.is_some_and(|r| r <= now)
    }

    /// The interface could not be looked at now (out of descriptors): it is as it was, and
    /// a recheck that was due is tried again a [`RECHECK`] later (not at once: that would
    /// spin until a descriptor frees).
    pub fn not_now(&mut self, now: Instant) {
        self.recheck = self.recheck.map(|_| now + RECHECK);
    }

    /// The interface as it is now; returns the sockets wanted.
    pub fn update(&mut self, now: Instant, i: Option<IfNow>) -> Sockets {
        self.recheck = i
            .filter(|i| i.up && i.v6.is_none() && i.v6_tentative && self.families.v6())
            .map(|_| now + RECHECK);
        let Some(i) = i else {
            self.index = None;
            self.addr4 = None;
            self.broadcast4 = None;
            self.addr6 = None;
            self.clear_error();
            self.set_state(now, BeaconState::Absent);
            return Sockets::None;
        };
        self.addr4 = i.v4;
        self.broadcast4 = i.broadcast4;
        self.addr6 = i.v6;
        if !i.up || !i.running {
            // Without a carrier (cable out, Wi-Fi not associated) a beacon reaches nobody:
            // down too, as lldpd sends only on running interfaces.
            self.set_down(now, if i.up { "no carrier" } else { "" }, false);
            if self.index.is_some_and(|x| x != i.index) {
                // The name is another interface's now (renamed, recreated): the sockets
                // are bound to the old one, which must not answer in this one's name.
                self.index = None;
                return Sockets::None;
            }
            return Sockets::Keep;
        }
        self.index = Some(i.index);
        let v6 = self.families.v6() && i.v6.is_some();
        // Only from an address of this link: without one the kernel would take another
        // interface's as the source (a VPN's or an uplink's address told to the LAN).
        let v4 = self.families.v4() && i.v4.is_some();
        Sockets::Want {
            index: i.index,
            v4,
            v6,
        }
    }

    /// The run loop's report after reconciling its sockets with [`Sockets`]: which
    /// families are open now, or the first error opening one.
    pub fn opened(&mut self, now: Instant, v4: bool, v6: bool, err: Option<(&str, &str)>) {
        let families_changed = (self.info.v4, self.info.v6) != (v4, v6);
        self.info.v4 = v4;
        self.info.v6 = v6;
        if self.index.is_some() && (v4 || v6) {
            if self.state == BeaconState::Up && families_changed {
                // Up already, and a family came or went (IPv6 once its link-local address
                // passed duplicate address detection): said as when it came up.
                self.say_change(now);
            }
            self.set_state(now, BeaconState::Up);
            match err {
                // One family failed (a kernel without IPv6, or qemu-user, which has no
                // IPV6_MULTICAST_IF): beacon on the other, show why, retry each interval.
                Some((what, e)) => self.set_error(now, what, e),
                None => self.clear_error(),
            }
        } else if let Some((what, e)) = err {
            let mut why = heapless::String::<BEACON_ERROR_MAX>::new();
            let _ = write!(why, "{what}: {e}");
            self.set_down(now, &why, true);
        } else if self.index.is_some() {
            // Up, but no address to send from yet (DHCP, duplicate address detection).
            let why = match (self.families.v4(), self.families.v6()) {
                (true, true) => "no IPv4 or IPv6 link-local address: waiting",
                (true, false) => "no IPv4 address: waiting",
                _ => "no IPv6 link-local address: waiting",
            };
            self.set_down(now, why, false);
        }
    }

    /// The periodic tick: queues one beacon per open family (call after [`Link::update`]
    /// and the socket report).
    pub fn on_tick(&mut self, now: Instant) {
        self.last_tick = Some(now);
        if self.changes.overdue(now) {
            // A flap that settled: the count, and the state it settled in, are said.
            self.say_change(now);
        }
        self.queue(Kind::Beacon);
    }

    /// Shutdown: queues a goodbye per open family.
    pub fn goodbye(&mut self) {
        self.pending.clear();
        self.queue(Kind::Bye);
    }

    fn queue(&mut self, k: Kind) {
        if self.state != BeaconState::Up {
            return;
        }
        self.queued = [self.info.v4.then_some(k), self.info.v6.then_some(k)];
    }

    /// A datagram dropped: counted in STATS, and said at debug level within the budget of
    /// lines a peer can cause ([`LogRate`]).
    fn drop_datagram(
        &mut self,
        now: Instant,
        stats: &mut Stats,
        what: &str,
        len: usize,
        from: SocketAddr,
    ) {
        stats.datagrams_dropped += 1;
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        if let Some(hidden) = self.log.take(now) {
            log::debug!("dropped {what} ({len} bytes) from {from}");
            if hidden > 0 {
                log::debug!("({hidden} more dropped datagrams not logged)");
            }
        }
    }

    /// One datagram that arrived on this link's socket of `family`. Probes schedule a
    /// delayed answer; other boards' beacons are ignored; anything else is counted.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        family: Family,
        d: &[u8],
        from: SocketAddr,
        local: Option<Ipv4Addr>,
        stats: &mut Stats,
    ) {
        stats.bytes_in += d.len() as u64;
        if d.len() > DATAGRAM_MAX {
            return self.drop_datagram(now, stats, "oversized datagram", d.len(), from);
        }
        let Some(nonce) = beacon::parse_probe(d) else {
            // Other boards' beacons arrive here too: not an error.
            if !beacon::is_beacon(d) {
                self.drop_datagram(now, stats, "malformed datagram", d.len(), from);
            }
            return;
        };
        if !self.answerable(from) {
            // Spoofed: an answer there would reach every host (one datagram, N answers).
            return self.drop_datagram(
                now,
                stats,
                "probe from a non-unicast sender",
                d.len(),
                from,
            );
        }
        // The same probe heard again while its answer waits (scan sends each probe to
        // 255.255.255.255 and to the subnet's broadcast address, and both arrive): one
        // answer, one token, so a scanner's probes cost half the rate limit.
        if self
            .pending
            .iter()
            .any(|p| p.t.to == from && p.t.nonce[..] == *nonce)
        {
            return;
        }
        if self.pending.is_full() || !self.take_token(now) {
            stats.probes_limited += 1;
            return;
        }
        // At least 1 ms: a copy of the probe read in the next turn still finds it waiting.
        let delay = 1 + u64::from(self.next_rand()) % PROBE_ANSWER_DELAY_MAX_MS;
        let t = Transmit {
            family,
            to: from,
            kind: Kind::Answer,
            max: d.len(),
            nonce: heapless::Vec::from_slice(nonce).unwrap_or_default(),
            src: local,
        };
        let _ = self.pending.push(Pending {
            due: now + Duration::from_millis(delay),
            t,
        });
    }

    /// Does an answer to `from` reach that one sender? Not when the source is a broadcast
    /// (the limited one or this link's), multicast or unspecified address, or port 0:
    /// probes name their sender, and only the SPEC's "unicast to the sender" is answered.
    fn answerable(&self, from: SocketAddr) -> bool {
        from.port() != 0
            && match from.ip() {
                IpAddr::V4(a) => {
                    !(a.is_unspecified()
                        || a.is_broadcast()
                        || a.is_multicast()
                        || Some(a) == self.broadcast4)
                }
                IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
            }
    }

    /// The next datagram to send now, if any: due answers first, then queued beacons.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(i) = self.pending.iter().position(|p| p.due <= now) {
            return Some(self.pending.swap_remove(i).t);
        }
        for f in [Family::V4, Family::V6] {
            if let Some(kind) = self.queued[fam_ix(f)].take() {
                let to = match f {
                    Family::V4 => {
                        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, self.info.port))
                    }
                    Family::V6 => SocketAddr::V6(SocketAddrV6::new(
                        ALL_NODES,
                        self.info.port,
                        0,
                        self.index.unwrap_or(0),
                    )),
                };
                return Some(Transmit {
                    family: f,
                    to,
                    kind,
                    max: DATAGRAM_MAX,
                    nonce: heapless::Vec::new(),
                    src: None,
                });
            }
        }
        None
    }

    /// The address `t` names as the board's, which is the one it leaves from: for an
    /// IPv4 answer the one the kernel answers the prober from (on a link with two subnets,
    /// a renumbering, the prober's), else the interface's first (IPv4) or the link-local
    /// address in use (IPv6, which the run loop sets as the source: the kernel might pick
    /// another of several).
    pub fn source(&self, t: &Transmit) -> Option<IpAddr> {
        match t.family {
            Family::V4 => t.src.or(self.addr4).map(IpAddr::V4),
            Family::V6 => self.addr6.map(IpAddr::V6),
        }
    }

    /// Encodes `t` into `out`; None when it cannot fit (then it is dropped).
    pub fn encode(&self, t: &Transmit, c: &Common<'_>, out: &mut [u8]) -> Option<usize> {
        let addr = self.source(t);
        let (port, metrics) = c.ports.ports(t.family, addr);
        let f = Fields {
            id: c.agent.id(),
            host: &c.board.host,
            addr,
            iface: &self.info.iface,
            port,
            metrics,
            seq: self.seq[fam_ix(t.family)],
            run: Some(c.run),
            uptime: c.board.uptime_s,
            load: c.board.load[0],
            mem_avail_kb: c.board.mem_avail_kb,
            temp_c: c.board.temp_c,
            bye: t.kind == Kind::Bye,
            nonce: (t.kind == Kind::Answer).then_some(&t.nonce[..]),
        };
        let facts = c
            .agent
            .facts
            .iter()
            .map(|f| (f.key.as_slice(), f.value.as_slice()));
        beacon::encode_signed(out, t.max, &f, facts, c.key)
    }

    /// The outcome of sending `t` (`n` bytes); the family's seq advances on success.
    pub fn on_sent(
        &mut self,
        now: Instant,
        t: &Transmit,
        r: Result<usize, &'static str>,
        stats: &mut Stats,
    ) {
        match (r, t.kind) {
            (Ok(n), kind) => {
                self.seq[fam_ix(t.family)] += 1;
                self.info.seq = self.seq[0].max(self.seq[1]);
                stats.bytes_out += n as u64;
                if kind == Kind::Answer {
                    stats.probes_answered += 1;
                } else {
                    stats.beacons_sent += 1;
                    if self.send_failed == Some(t.family) {
                        self.clear_error();
                    }
                }
            }
            (Err(e), Kind::Answer) => {
                // A probe that got no answer after all (a spoofed broadcast source: EACCES).
                stats.datagrams_dropped += 1;
                log::debug!("probe answer to {}: {e}", t.to);
            }
            (Err(e), _) => {
                stats.beacon_errors += 1;
                self.set_error(now, "send", e);
                self.send_failed = Some(t.family);
            }
        }
    }

    fn next_rand(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let (tokens, last) = self.bucket;
        let ms = now.saturating_duration_since(last).as_millis() as u64;
        let gained = ms * u64::from(PROBE_PER_SEC) / 1000;
        let (mut tokens, last) = if gained > 0 {
            let t = (u64::from(tokens) + gained).min(u64::from(PROBE_BURST)) as u32;
            // Advance by the time the gained tokens took, so fractions are not lost.
            (
                t,
                last + Duration::from_millis(gained * 1000 / u64::from(PROBE_PER_SEC)),
            )
        } else {
            (tokens, last)
        };
        let ok = tokens > 0;
        if ok {
            tokens -= 1;
        }
        self.bucket = (tokens, last);
        ok
    }

    /// No error in effect (STATUS `last_error` empty).
    fn clear_error(&mut self) {
        self.info.last_error.clear();
        self.send_failed = None;
    }

    fn set_error(&mut self, now: Instant, what: &str, e: &str) {
        self.clear_error();
        let _ = write!(self.info.last_error, "{what}: {e}");
        self.warn(now);
    }

    /// Warnings about the interface are rate-limited: one per state change, then as a
    /// [`crate::lograte::Repeat`] allows (1, 2, 4 ... minutes apart, at most an hour).
    fn warn(&mut self, now: Instant) {
        if self.last_warn.due(now) {
            if self.info.last_error.is_empty() {
                log::warn!(
                    "beacon on {}: interface {}; retrying every interval",
                    self.info.iface,
                    self.state.as_str()
                );
            } else {
                log::warn!(
                    "beacon on {}: {}; retrying every interval",
                    self.info.iface,
                    self.info.last_error
                );
            }
        }
    }

    /// Down, and why (empty: the interface is down). Said when the state or the reason
    /// changes; again as a [`crate::lograte::Repeat`] allows only when
    /// `repeat` (an error), not while the link merely waits (STATUS shows it meanwhile).
    fn set_down(&mut self, now: Instant, why: &str, repeat: bool) {
        let down = self.state == BeaconState::Down && self.looked;
        if down && self.info.last_error == why {
            if repeat {
                self.warn(now);
            }
            return;
        }
        self.clear_error();
        let _ = self.info.last_error.push_str(why);
        match down {
            // Down already, for another reason.
            true => self.say_change(now),
            false => self.set_state(now, BeaconState::Down),
        }
    }

    /// A change of state or reason, said within the link's budget: a link that flaps
    /// writes [`FLAP_LINES`] lines per [`FLAP_WINDOW_SECS`] and how many changes it left
    /// out, not a line per change (37,000 a day for a marginal Wi-Fi link).
    fn say_change(&mut self, now: Instant) {
        let Some(hidden) = self.changes.take(now) else {
            self.last_warn.said(now);
            return;
        };
        if hidden > 0 {
            log::warn!(
                "beacon on {}: {hidden} more changes of state not logged: the interface flaps",
                self.info.iface
            );
        }
        self.last_warn.reset();
        match self.state {
            BeaconState::Up => self.say_up(),
            _ => self.warn(now),
        }
    }

    fn set_state(&mut self, now: Instant, s: BeaconState) {
        if s != BeaconState::Up {
            self.queued = [None, None];
        }
        if s == self.state && self.looked {
            return;
        }
        self.looked = true;
        self.state = s;
        if s == BeaconState::Up {
            self.clear_error();
        }
        self.say_change(now);
    }

    fn say_up(&self) {
        log::info!(
            "beacon on {}: up, sending to{}{}, port {}",
            self.info.iface,
            if self.info.v4 { " 255.255.255.255" } else { "" },
            if self.info.v6 { " ff02::1" } else { "" },
            self.info.port
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Config;

    const IV: Duration = Duration::from_secs(5);

    fn up(index: u32) -> Option<IfNow> {
        Some(IfNow {
            index,
            up: true,
            running: true,
            v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            broadcast4: Some(Ipv4Addr::new(10, 0, 0, 255)),
            v6: Some("fe80::1".parse().unwrap()),
            v6_tentative: false,
        })
    }

    /// Applies `update` as the run loop would, with every open succeeding.
    fn drive(l: &mut Link, now: Instant, i: Option<IfNow>) -> Sockets {
        let s = l.update(now, i);
        match s {
            Sockets::None => l.opened(now, false, false, None),
            Sockets::Keep => {}
            Sockets::Want { v4, v6, .. } => l.opened(now, v4, v6, None),
        }
        s
    }

    fn drain(l: &mut Link, now: Instant) -> Vec<Transmit> {
        std::iter::from_fn(|| l.poll_transmit(now)).collect()
    }

    fn probe(nonce: &str) -> Vec<u8> {
        let mut p = [0u8; DATAGRAM_MAX];
        let n = beacon::write_probe(&mut p, nonce.as_bytes());
        p[..n].to_vec()
    }

    #[test]
    fn states_absent_down_up_recreated() {
        let t0 = Instant::now();
        let mut l = Link::new(t0, "eth0", 4546, Families::Both, 7);
        assert_eq!(l.state().0, BeaconState::Absent);
        assert_eq!(drive(&mut l, t0, None), Sockets::None);
        assert_eq!(l.state().0, BeaconState::Absent);
        l.on_tick(t0);
        assert!(drain(&mut l, t0).is_empty(), "absent: nothing sent");
        let s = drive(&mut l, t0, up(3));
        assert_eq!(
            s,
            Sockets::Want {
                index: 3,
                v4: true,
                v6: true
            }
        );
        assert_eq!(l.state().0, BeaconState::Up);
        l.on_tick(t0);
        let tx = drain(&mut l, t0);
        assert_eq!(tx.len(), 2);
        assert_eq!(tx[0].to, "255.255.255.255:4546".parse().unwrap());
        assert_eq!(
            tx[1].to,
            SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 4546, 0, 3))
        );
        // Down: sockets kept, nothing sent.
        let mut down = up(3);
        down.as_mut().unwrap().up = false;
        assert_eq!(drive(&mut l, t0, down), Sockets::Keep);
        assert_eq!(l.state().0, BeaconState::Down);
        l.on_tick(t0);
        assert!(drain(&mut l, t0).is_empty());
        // Recreated with a new index: new sockets on the new index.
        assert!(matches!(
            drive(&mut l, t0, up(9)),
            Sockets::Want { index: 9, .. }
        ));
        assert_eq!(l.state().0, BeaconState::Up);
        // Renamed away, and a new interface, down, took the name within one interval:
        // the sockets (bound to index 9) go; they would answer in the new one's name.
        let mut other = up(12);
        other.as_mut().unwrap().up = false;
        assert_eq!(drive(&mut l, t0, other), Sockets::None);
        assert_eq!(l.state().0, BeaconState::Down);
        assert!(matches!(
            drive(&mut l, t0, up(12)),
            Sockets::Want { index: 12, .. }
        ));
        // An open error: down, with the error shown.
        l.update(t0, up(9));
        l.opened(t0, false, false, Some(("bind", "Address in use")));
        assert_eq!(l.state().0, BeaconState::Down);
        assert_eq!(l.state().1.last_error.as_str(), "bind: Address in use");
    }

    #[test]
    fn one_family_failing_leaves_the_other_beaconing() {
        let t0 = Instant::now();
        let mut l = Link::new(t0, "eth0", 4546, Families::Both, 7);
        l.update(t0, up(3));
        l.opened(
            t0,
            true,
            false,
            Some(("IPV6_MULTICAST_IF", "Protocol not available")),
        );
        assert_eq!(l.state().0, BeaconState::Up);
        assert_eq!(
            l.state().1.last_error.as_str(),
            "IPV6_MULTICAST_IF: Protocol not available"
        );
        l.on_tick(t0);
        let tx = drain(&mut l, t0);
        assert_eq!(tx.len(), 1, "IPv4 only");
        assert_eq!(tx[0].to, "255.255.255.255:4546".parse().unwrap());
        // The IPv4 beacon that went out does not hide why IPv6 is not beaconing.
        let mut st = Stats::default();
        l.on_sent(t0, &tx[0], Ok(300), &mut st);
        assert_eq!(
            l.state().1.last_error.as_str(),
            "IPV6_MULTICAST_IF: Protocol not available"
        );
        l.goodbye();
        assert_eq!(drain(&mut l, t0).len(), 1, "a goodbye over IPv4");
        // The retry that works clears the error.
        l.update(t0, up(3));
        l.opened(t0, true, true, None);
        assert_eq!(l.state().1.last_error.as_str(), "");
    }

    #[test]
    fn no_carrier_is_down_and_each_reason_is_said_once() {
        let t0 = Instant::now();
        let mut l = Link::new(t0, "eth0", 4546, Families::Both, 7);
        drive(&mut l, t0, up(1));
        assert_eq!(l.state().0, BeaconState::Up);
        let unplugged = up(1).map(|i| IfNow {
            running: false,
            ..i
        });
        assert_eq!(drive(&mut l, t0, unplugged), Sockets::Keep);
        assert_eq!(l.state().0, BeaconState::Down);
        assert_eq!(l.state().1.last_error.as_str(), "no carrier");
        l.on_tick(t0);
        assert!(l.poll_transmit(t0).is_none(), "no beacon without a carrier");
        assert_eq!(l.last_warn.last(), Some(t0));
        // Still unplugged a minute later: not said again (STATUS shows it).
        let later = t0 + Duration::from_secs(crate::limits::WARN_EVERY_SECS + 1);
        drive(&mut l, later, unplugged);
        assert_eq!(l.last_warn.last(), Some(t0));
        // Another reason (the interface set down) is said.
        let down = up(1).map(|i| IfNow {
            up: false,
            running: false,
            ..i
        });
        drive(&mut l, later, down);
        assert_eq!(l.last_warn.last(), Some(later));
        assert_eq!(l.state().1.last_error.as_str(), "");
        drive(&mut l, later, up(1));
        assert_eq!(l.state().0, BeaconState::Up);
        l.on_tick(later);
        assert!(
            l.poll_transmit(later).is_some(),
            "beacons again with the carrier"
        );
    }

    #[test]
    fn a_flapping_link_says_a_few_changes_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = Link::new(t0, "wlan0", 4546, Families::Both, 7);
        let down = up(1).map(|i| IfNow { up: false, ..i });
        for k in 0..50u32 {
            let t = t0 + Duration::from_secs(u64::from(k));
            drive(&mut l, t, if k % 2 == 0 { up(1) } else { down });
        }
        // 50 changes in 50 s: FLAP_LINES said, the rest counted; once the window has
        // passed, the next tick says how many and the state the link settled in, though
        // it does not change again.
        let later = t0 + Duration::from_secs(FLAP_WINDOW_SECS);
        assert!(!l.changes.overdue(later - Duration::from_secs(1)));
        assert!(l.changes.overdue(later));
        l.on_tick(later);
        assert!(!l.changes.overdue(later));
        // Beacons still follow the link whether or not its changes are said.
        assert_eq!(l.state().0, BeaconState::Down);
        drive(&mut l, later, up(1));
        assert_eq!(l.state().0, BeaconState::Up);
    }

    #[test]
    fn families_and_ipv6_only_links() {
        let t0 = Instant::now();
        let only6_if = IfNow {
            index: 2,
            up: true,
            running: true,
            v4: None,
            broadcast4: None,
            v6: Some("fe80::2".parse().unwrap()),
            v6_tentative: false,
        };
        let only6 = Some(only6_if);
        let mut l = Link::new(t0, "v6", 4546, Families::Both, 1);
        let want = |v4, v6| Sockets::Want { index: 2, v4, v6 };
        assert_eq!(l.update(t0, only6), want(false, true));
        // IPv4 only from an IPv4 address of the link (the kernel would lend it another
        // interface's): `--beacon-family 4` on an IPv6-only link waits, and says why.
        let mut l4 = Link::new(t0, "v6", 4546, Families::V4, 1);
        assert_eq!(drive(&mut l4, t0, only6), want(false, false));
        assert_eq!(l4.state().0, BeaconState::Down);
        assert_eq!(l4.state().1.last_error.as_str(), "no IPv4 address: waiting");
        let mut l6 = Link::new(t0, "v4", 4546, Families::V6, 1);
        let no6_if = IfNow {
            v6: None,
            ..only6_if
        };
        let no6 = Some(no6_if);
        assert_eq!(l6.update(t0, no6), want(false, false));
        // Neither address yet: nothing goes out.
        assert_eq!(drive(&mut l, t0, no6), want(false, false));
        assert_eq!(
            l.state().1.last_error.as_str(),
            "no IPv4 or IPv6 link-local address: waiting"
        );
        assert_eq!(
            l.poll_timeout(IV),
            t0,
            "no recheck without a tentative address"
        );
        // One in duplicate address detection: looked at again after RECHECK, not a
        // whole interval; once usable, no more rechecks.
        let dad = Some(IfNow {
            v6_tentative: true,
            ..no6_if
        });
        l.on_tick(t0);
        assert_eq!(l.update(t0, dad), want(false, false));
        assert_eq!(l.poll_timeout(IV), t0 + RECHECK);
        assert!(!l.recheck_due(t0) && l.recheck_due(t0 + RECHECK));
        assert!(!l.tick_due(t0 + RECHECK, IV), "a recheck is not a beacon");
        // A recheck that could not look (out of descriptors) waits a RECHECK again: due
        // at once, the loop would spin until a descriptor frees.
        l.not_now(t0 + RECHECK);
        assert!(!l.recheck_due(t0 + RECHECK));
        assert_eq!(l.poll_timeout(IV), t0 + 2 * RECHECK);
        assert_eq!(l.update(t0 + RECHECK, only6), want(false, true));
        assert_eq!(l.poll_timeout(IV), t0 + IV);
        // --beacon-family 4 never waits for IPv6.
        assert_eq!(l4.update(t0, dad), want(false, false));
        assert!(l4.recheck.is_none());
    }

    #[test]
    fn deadlines_follow_the_interval_and_delayed_answers() {
        let t0 = Instant::now();
        let mut l = Link::new(t0, "eth0", 4546, Families::Both, 12345);
        assert_eq!(l.poll_timeout(IV), t0, "first beacon at once");
        assert!(l.tick_due(t0, IV));
        drive(&mut l, t0, up(1));
        l.on_tick(t0);
        drain(&mut l, t0);
        assert_eq!(l.poll_timeout(IV), t0 + IV);
        assert!(!l.tick_due(t0 + IV - Duration::from_millis(1), IV));
        assert!(l.tick_due(t0 + IV, IV));
        // A probe: answered after 1-250 ms, not before its deadline.
        let mut st = Stats::default();
        let from: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let t1 = t0 + Duration::from_secs(1);
        let p = probe("n1");
        l.on_datagram(t1, Family::V4, &p, from, None, &mut st);
        let due = l.poll_timeout(IV);
        assert!(due >= t1 && due <= t1 + Duration::from_millis(PROBE_ANSWER_DELAY_MAX_MS));
        if due > t1 {
            assert!(
                l.poll_transmit(t1).is_none(),
                "no answer before its deadline"
            );
        }
        let a = l.poll_transmit(due).expect("answer due");
        assert_eq!((a.kind, a.to, a.max), (Kind::Answer, from, p.len()));
        assert_eq!(&a.nonce[..], b"n1");
        assert_eq!(l.poll_timeout(IV), t0 + IV);
        // Delays vary between probes (not every board at the same instant).
        let mut delays = std::collections::BTreeSet::new();
        for i in 0..8u64 {
            let t = t1 + Duration::from_secs(10 + i);
            l.on_datagram(t, Family::V6, &p, from, None, &mut st);
            delays.insert(l.pending[0].due - t);
            drain(&mut l, t + Duration::from_secs(1));
        }
        assert!(delays.len() > 1, "{delays:?}");
    }

    #[test]
    fn probes_from_no_single_sender_are_not_answered() {
        // A spoofed broadcast or multicast source would make every board answer every
        // host (SPEC: the answer goes by unicast to the sender).
        let t0 = Instant::now();
        let mut l = Link::new(t0, "eth0", 4546, Families::Both, 5);
        drive(&mut l, t0, up(1));
        let mut st = Stats::default();
        let p = probe("x");
        let spoofed = [
            "10.0.0.255:40000",
            "255.255.255.255:40000",
            "0.0.0.0:40000",
            "224.0.0.1:40000",
            "10.0.0.9:0",
            "[ff02::1]:40000",
            "[::]:40000",
        ];
        for from in spoofed {
            let fam = if from.starts_with('[') {
                Family::V6
            } else {
                Family::V4
            };
            l.on_datagram(t0, fam, &p, from.parse().unwrap(), None, &mut st);
        }
        assert_eq!(st.datagrams_dropped, spoofed.len() as u64);
        assert!(drain(&mut l, t0 + Duration::from_secs(1)).is_empty());
        // The board's neighbour on the same subnet is answered.
        let from: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        l.on_datagram(t0, Family::V4, &p, from, None, &mut st);
        let tx = drain(&mut l, t0 + Duration::from_secs(2));
        assert_eq!(tx.len(), 1);
        assert_eq!(tx[0].to, from);
    }

    #[test]
    fn probes_are_rate_limited_and_garbage_counted() {
        let t0 = Instant::now();
        let mut l = Link::new(t0, "eth0", 4546, Families::Both, 5);
        drive(&mut l, t0, up(1));
        let mut st = Stats::default();
        let from: SocketAddr = "[fe80::9%1]:40000".parse().unwrap();
        // The same probe twice while its answer waits (to two broadcast addresses): one.
        l.on_datagram(t0, Family::V6, &probe("twice"), from, None, &mut st);
        l.on_datagram(t0, Family::V6, &probe("twice"), from, None, &mut st);
        assert_eq!((l.pending.len(), st.probes_limited), (1, 0));
        for i in 0..20 {
            l.on_datagram(
                t0,
                Family::V6,
                &probe(&format!("x{i}")),
                from,
                None,
                &mut st,
            );
        }
        assert_eq!(st.probes_limited, 21 - u64::from(PROBE_BURST));
        l.on_datagram(t0, Family::V4, b"garbage", from, None, &mut st);
        l.on_datagram(
            t0,
            Family::V4,
            &[b'x'; DATAGRAM_MAX + 1],
            from,
            None,
            &mut st,
        );
        l.on_datagram(t0, Family::V4, b"{\"tether\":1}", from, None, &mut st);
        assert_eq!(st.datagrams_dropped, 2);
        let later = t0 + Duration::from_secs(1);
        let tx = drain(&mut l, later);
        assert_eq!(tx.len(), PROBE_BURST as usize);
        assert!(tx.iter().all(|t| t.family == Family::V6 && t.to == from));
    }

    #[test]
    fn encodes_no_larger_than_the_probe_with_the_source_address() {
        let t0 = Instant::now();
        let cfg = Config {
            max_clients: 16,
            interval_secs: 5,
            led: false,
            plain_auth: false,
        };
        let agent = Agent::new(t0, "00aa", &cfg);
        let mut board = Board::default();
        let _ = board.host.push_str("pi");
        let key = FleetKey::parse(b"a fleet key of some length").unwrap();
        let mut l = Link::new(t0, "eth0", 4546, Families::Both, 5);
        drive(&mut l, t0, up(1));
        let mut st = Stats::default();
        let from: SocketAddr = "[fe80::9%1]:40000".parse().unwrap();
        let p = probe("nn");
        l.on_datagram(t0, Family::V6, &p[..300], from, None, &mut st);
        let t = l.poll_transmit(t0 + Duration::from_secs(1)).unwrap();
        let c = Common {
            agent: &agent,
            board: &board,
            // Metrics over IPv4 only: this IPv6 answer names no metrics port.
            ports: &Announced::new([sa("0.0.0.0:4545"), sa("[::]:4545")], [sa("0.0.0.0:9545")]),
            run: "0011223344556677",
            key: Some(&key),
        };
        let mut out = [0u8; DATAGRAM_MAX];
        let n = l.encode(&t, &c, &mut out).unwrap();
        assert!(n <= 300);
        let text = std::str::from_utf8(&out[..n]).unwrap();
        assert!(
            text.contains("\"port\":4545,") && !text.contains("metrics"),
            "{text}"
        );
        let src: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(
            beacon::verify(&out[..n], &key, src, Some(b"nn")),
            beacon::Trust::Signed
        );
        l.on_sent(t0, &t, Ok(n), &mut st);
        assert_eq!((st.probes_answered, l.state().1.seq), (1, 1));
        // A send error is shown and counted.
        l.on_tick(t0);
        let b = l.poll_transmit(t0).unwrap();
        l.on_sent(t0, &b, Err("Network is unreachable"), &mut st);
        assert_eq!(st.beacon_errors, 1);
        assert_eq!(
            l.state().1.last_error.as_str(),
            "send: Network is unreachable"
        );
        // The other family's next beacon leaves it shown; the same family's ends it.
        l.on_tick(t0);
        let next = drain(&mut l, t0);
        let (same, other): (Vec<_>, Vec<_>) = next.iter().partition(|t| t.family == b.family);
        assert_eq!((same.len(), other.len()), (1, 1));
        l.on_sent(t0, other[0], Ok(300), &mut st);
        assert_eq!(
            l.state().1.last_error.as_str(),
            "send: Network is unreachable"
        );
        l.on_sent(t0, same[0], Ok(300), &mut st);
        assert_eq!(l.state().1.last_error.as_str(), "");
        // Goodbye: one per open family.
        l.goodbye();
        let bye = drain(&mut l, t0);
        assert_eq!(bye.len(), 2);
        assert!(bye.iter().all(|t| t.kind == Kind::Bye));
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Each beacon names the ports a peer reaches at the beacon's address: IPv6
    /// listeners serve IPv6 only (IPV6_V6ONLY), one on a specific address that address
    /// only, loopback ones nobody on the LAN.
    #[test]
    fn beacons_announce_the_ports_their_family_reaches() {
        let (v4, v6) = (Family::V4, Family::V6);
        let (ip4, ll) = (Some(sa("10.0.0.5:0").ip()), Some(sa("[fe80::5]:0").ip()));
        let at = |a: &Announced| (a.ports(v4, ip4), a.ports(v6, ll));
        // The defaults: control on both families, metrics as the package sets them.
        let both = [sa("0.0.0.0:4545"), sa("[::]:4545")];
        let a = Announced::new(both, [sa("0.0.0.0:9545"), sa("[::]:9545")]);
        assert_eq!(at(&a), ((4545, Some(9545)), (4545, Some(9545))));
        assert!(a.serves(v4) && a.serves(v6));
        // Metrics on IPv4 only: IPv6 beacons name none (a scrape there would be refused).
        let a = Announced::new(both, [sa("0.0.0.0:9545")]);
        assert_eq!(at(&a), ((4545, Some(9545)), (4545, None)));
        // Port 0 picked a port per family: each family names its own.
        let a = Announced::new(both, [sa("0.0.0.0:34669"), sa("[::]:38829")]);
        assert_eq!((at(&a).0 .1, at(&a).1 .1), (Some(34669), Some(38829)));
        // A specific address serves beacons from that address only.
        let a = Announced::new(
            [sa("10.0.0.5:4545"), sa("[fd00::3]:4545")],
            [sa("10.0.0.5:9545"), sa("[fd00::3]:9545")],
        );
        assert_eq!(at(&a), ((4545, Some(9545)), (4545, None)));
        assert_eq!(
            a.ports(v6, Some(sa("[fd00::3]:0").ip())),
            (4545, Some(9545))
        );
        // Loopback is skipped; control falls back to the first listener (and start-up
        // warns: no control listener serves IPv4), metrics to none.
        let a = Announced::new(
            [sa("127.0.0.1:5000"), sa("[::]:4545")],
            [sa("127.0.0.1:9545")],
        );
        assert_eq!(at(&a), ((5000, None), (4545, None)));
        assert!(!a.serves(v4) && a.serves(v6));
    }
}
