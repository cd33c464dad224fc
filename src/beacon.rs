//! The status beacon: every interval, one datagram out of one named interface; probes
//! answered by unicast, never larger than the probe, through a token bucket; a goodbye
//! on shutdown. The interface may vanish, go down, come back or be recreated with a new
//! index: each tick re-reads it and reopens the socket when its index changed.
//!
//! With a fleet key every datagram (beacon, probe answer, goodbye) is signed (see
//! `proto::beacon`); the key is re-read on SIGHUP, and a bad file then keeps the old key.
//!
//! Driven by the run loop through [`crate::runloop::Beacon`]; sockets through `sys::udp`,
//! bytes through `proto::beacon`. No heap after start-up.

use crate::agent::{Agent, BeaconInfo, BeaconState, Board};
use crate::limits::{DATAGRAM_MAX, FLEET_KEY_MAX, PROBE_BURST, PROBE_PER_SEC, WARN_EVERY_SECS};
use crate::proto::beacon::{self, Fields, FleetKey};
use crate::proto::wbuf::WBuf;
use crate::sys::{iface, net, udp};
use core::fmt::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Datagrams read per readable event, so a flood costs bounded work per loop turn.
const RECV_PER_TURN: usize = 32;

/// Reads a fleet key file (`--fleet-key`): its contents with surrounding whitespace
/// trimmed, [`crate::limits::FLEET_KEY_MIN`]..=[`FLEET_KEY_MAX`] bytes. No heap on success.
pub fn load_key(path: &Path) -> Result<FleetKey, String> {
    let mut buf = [0u8; FLEET_KEY_MAX + 64];
    let n = path
        .to_str()
        .and_then(|p| crate::sys::read_small(p, &mut buf))
        .ok_or_else(|| format!("--fleet-key {}: missing or unreadable", path.display()))?;
    // A full buffer means the file may go on: too long either way.
    let key = if n == buf.len() {
        Err(beacon::KeyError::Long)
    } else {
        FleetKey::parse(&buf[..n])
    };
    key.map_err(|e| format!("--fleet-key {}: {e}", path.display()))
}

/// The fleet key and the file it came from (re-read on SIGHUP).
pub struct Signing {
    pub path: PathBuf,
    pub key: FleetKey,
}

pub struct Beacon {
    iface: iface::IfName,
    port: u16,
    ctl_port: u16,
    /// Announced as `"metrics":PORT` (`--metrics`).
    metrics_port: Option<u16>,
    sock: Option<(OwnedFd, u32)>,
    state: BeaconState,
    info: BeaconInfo,
    last_tick: Option<Instant>,
    /// When the first beacon is due (start-up).
    first_due: Instant,
    /// Token bucket for probe answers: (tokens, last refill).
    bucket: (u32, Instant),
    last_warn: Option<Instant>,
    /// 16 hex digits, random per agent start: sent as `run` in every datagram.
    run: heapless::String<16>,
    signing: Option<Signing>,
}

impl Beacon {
    pub fn new(
        now: Instant,
        iface: &str,
        port: u16,
        ctl_port: u16,
        run: [u8; 8],
        signing: Option<Signing>,
    ) -> Beacon {
        let mut hex = [0u8; 16];
        crate::proto::hex::encode(&run, &mut hex);
        let mut run = heapless::String::new();
        let _ = run.push_str(core::str::from_utf8(&hex).unwrap_or("0000000000000000"));
        let mut name = iface::IfName::new();
        let _ = name.push_str(iface);
        let info = BeaconInfo {
            iface: name.clone(),
            port,
            ..BeaconInfo::default()
        };
        Beacon {
            iface: name,
            port,
            ctl_port,
            metrics_port: None,
            sock: None,
            state: BeaconState::Absent,
            info,
            last_tick: None,
            first_due: now,
            bucket: (PROBE_BURST, now),
            last_warn: None,
            run,
            signing,
        }
    }

    /// The metrics port the beacon announces (None: no `"metrics"` field).
    pub fn set_metrics_port(&mut self, port: Option<u16>) {
        self.metrics_port = port;
    }

    /// Opens the socket now (at start-up), so probes are answered from the ready line on.
    /// The first beacon still goes out on the first loop turn.
    pub fn open(&mut self, now: Instant) {
        let _ = self.refresh(now);
    }

    fn set_error(&mut self, now: Instant, what: &str, e: nix::errno::Errno) {
        self.info.last_error.clear();
        let _ = write!(self.info.last_error, "{what}: {}", e.desc());
        self.warn(now);
    }

    /// Warnings about the interface are rate-limited: one per state change, then at
    /// most one per [`WARN_EVERY_SECS`].
    fn warn(&mut self, now: Instant) {
        let due = self.last_warn.is_none_or(|t| {
            now.saturating_duration_since(t) >= Duration::from_secs(WARN_EVERY_SECS)
        });
        if due {
            self.last_warn = Some(now);
            if self.info.last_error.is_empty() {
                log::warn!(
                    "beacon on {}: interface {}; retrying every interval",
                    self.iface,
                    self.state.as_str()
                );
            } else {
                log::warn!(
                    "beacon on {}: {}; retrying every interval",
                    self.iface,
                    self.info.last_error
                );
            }
        }
    }

    fn set_state(&mut self, now: Instant, s: BeaconState) {
        if s == self.state {
            return;
        }
        self.state = s;
        if s == BeaconState::Up {
            self.info.last_error.clear();
            self.last_warn = None;
            log::info!(
                "beacon on {}: up, sending to 255.255.255.255:{}",
                self.iface,
                self.port
            );
        } else {
            self.last_warn = None;
            self.warn(now);
        }
    }

    /// Re-reads the interface and (re)opens the socket if needed. Returns its IPv4 address.
    fn refresh(&mut self, now: Instant) -> Option<Option<Ipv4Addr>> {
        let Some(info) = iface::info(&self.iface) else {
            self.sock = None;
            self.set_state(now, BeaconState::Absent);
            return None;
        };
        if !info.up {
            self.set_state(now, BeaconState::Down);
            return None;
        }
        // SO_BINDTODEVICE ties the socket to an ifindex: a recreated interface needs a new one.
        if self.sock.as_ref().is_none_or(|(_, idx)| *idx != info.index) {
            self.sock = None;
            match udp::open(Some(&self.iface), self.port) {
                Ok(fd) => self.sock = Some((fd, info.index)),
                Err((what, e)) => {
                    self.set_state(now, BeaconState::Down);
                    self.set_error(now, what, e);
                    return None;
                }
            }
        }
        self.set_state(now, BeaconState::Up);
        Some(info.addr)
    }

    /// The fixed beacon fields as of now; callers set `bye` / `nonce` as needed.
    fn fields<'a>(
        &'a self,
        agent: &'a Agent,
        board: &'a Board,
        addr: Option<Ipv4Addr>,
    ) -> Fields<'a> {
        Fields {
            id: agent.id(),
            host: &board.host,
            addr,
            iface: &self.iface,
            port: self.ctl_port,
            metrics: self.metrics_port,
            seq: self.info.seq,
            run: Some(&self.run),
            uptime: board.uptime_s,
            load: board.load[0],
            mem_avail_kb: board.mem_avail_kb,
            temp_c: board.temp_c,
            bye: false,
            nonce: None,
        }
    }

    /// Encodes `f` with the agent's facts into `out`, at most `max` bytes, signed when
    /// there is a fleet key.
    fn encode(&self, out: &mut [u8], max: usize, f: &Fields<'_>, agent: &Agent) -> Option<usize> {
        let facts = agent
            .facts
            .iter()
            .map(|f| (f.key.as_slice(), f.value.as_slice()));
        let key = self.signing.as_ref().map(|s| &s.key);
        beacon::encode_signed(out, max, f, facts, key)
    }

    fn send(
        &mut self,
        now: Instant,
        agent: &mut Agent,
        board: &Board,
        addr: Option<Ipv4Addr>,
        bye: bool,
    ) {
        let mut out = [0u8; DATAGRAM_MAX];
        let f = Fields {
            bye,
            ..self.fields(agent, board, addr)
        };
        let Some(n) = self.encode(&mut out, DATAGRAM_MAX, &f, agent) else {
            return;
        };
        let Some((fd, _)) = &self.sock else { return };
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.port);
        match udp::send_to(fd.as_fd(), &out[..n], to) {
            Ok(_) => {
                self.info.seq += 1;
                agent.stats.beacons_sent += 1;
                agent.stats.bytes_out += n as u64;
                if !self.info.last_error.is_empty() {
                    self.info.last_error.clear();
                }
            }
            Err(e) => {
                agent.stats.beacon_errors += 1;
                self.set_error(now, "send", e);
            }
        }
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
}

impl crate::runloop::Beacon for Beacon {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|(fd, _)| fd.as_fd())
    }

    fn next_deadline(&self, interval: Duration) -> Option<Instant> {
        Some(self.last_tick.map_or(self.first_due, |t| t + interval))
    }

    fn on_timer(&mut self, now: Instant, agent: &mut Agent, board: &mut dyn FnMut() -> Board) {
        self.last_tick = Some(now);
        if let Some(addr) = self.refresh(now) {
            let b = board();
            self.send(now, agent, &b, addr, false);
        }
    }

    fn on_readable(&mut self, now: Instant, agent: &mut Agent, board: &mut dyn FnMut() -> Board) {
        let mut buf = [0u8; DATAGRAM_MAX + 1];
        let mut board_cache: Option<Board> = None;
        for _ in 0..RECV_PER_TURN {
            let Some((fd, _)) = &self.sock else { return };
            let (n, from) = match udp::recv_from(fd.as_fd(), &mut buf) {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    log::debug!("beacon recv: {}", e.desc());
                    return;
                }
            };
            agent.stats.bytes_in += n as u64;
            let d = &buf[..n];
            if n > DATAGRAM_MAX {
                agent.stats.datagrams_dropped += 1;
                log::debug!("dropped oversized datagram from {from}");
                continue;
            }
            let Some(nonce) = beacon::parse_probe(d) else {
                // Other boards' beacons arrive here too: not an error.
                if !beacon::is_beacon(d) {
                    agent.stats.datagrams_dropped += 1;
                    log::debug!("dropped malformed datagram ({n} bytes) from {from}");
                }
                continue;
            };
            if !self.take_token(now) {
                agent.stats.probes_limited += 1;
                continue;
            }
            let mut nonce_copy = [0u8; beacon::NONCE_MAX];
            let nl = nonce.len();
            nonce_copy[..nl].copy_from_slice(nonce);
            let addr = iface::info(&self.iface).and_then(|i| i.addr);
            let b = board_cache.get_or_insert_with(&mut *board);
            let mut out = [0u8; DATAGRAM_MAX];
            // Never answer with more bytes than the probe carried (no amplification).
            let f = Fields {
                nonce: Some(&nonce_copy[..nl]),
                ..self.fields(agent, b, addr)
            };
            let Some(len) = self.encode(&mut out, n, &f, agent) else {
                agent.stats.datagrams_dropped += 1;
                continue;
            };
            let Some((fd, _)) = &self.sock else { return };
            match udp::send_to(fd.as_fd(), &out[..len], from) {
                Ok(_) => {
                    self.info.seq += 1;
                    agent.stats.probes_answered += 1;
                    agent.stats.bytes_out += len as u64;
                }
                Err(e) => log::debug!("probe answer to {from}: {}", e.desc()),
            }
        }
    }

    fn goodbye(&mut self, now: Instant, agent: &mut Agent, board: &mut dyn FnMut() -> Board) {
        if let Some(addr) = self.refresh(now) {
            let b = board();
            self.send(now, agent, &b, addr, true);
        }
    }

    fn state(&self) -> (BeaconState, &BeaconInfo) {
        (self.state, &self.info)
    }

    fn reload_key(&mut self) {
        let Some(s) = self.signing.as_mut() else {
            return;
        };
        match load_key(&s.path) {
            Ok(k) if k == s.key => log::info!("fleet key {}: unchanged", s.path.display()),
            Ok(k) => {
                s.key = k;
                log::info!("fleet key reloaded from {}", s.path.display());
            }
            Err(e) => log::warn!("{e}: keeping the previous fleet key"),
        }
    }

    fn write_socket(&self, w: &mut WBuf<'_>) -> core::fmt::Result {
        match &self.sock {
            Some((fd, _)) => net::socket_info(fd.as_fd()).write(w, "udp-beacon"),
            None => {
                w.write_str("{\"kind\":\"udp-beacon\",\"addr\":null,\"state\":")?;
                crate::proto::json::write_str(w, self.state.as_str().as_bytes())?;
                w.write_char('}')
            }
        }
    }
}
