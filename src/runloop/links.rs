//! The beacon links' I/O: one [`Link`] state machine per `--iface`, with the sockets it
//! asks for (IPv4 and IPv6, each bound to the interface with SO_BINDTODEVICE). This is
//! the run loop's side of `crate::beacon`: it reads the interface (`sys::iface`), opens
//! and closes sockets (`sys::udp`), reads the board once per batch of datagrams
//! (`sys::board`) and moves bytes; every decision is the state machine's. It calls no
//! poll(2) itself: the run loop polls [`Links::fds`] and calls back. No heap after
//! start-up.

use crate::agent::{Agent, BeaconInfo, BeaconState, Board};
use crate::beacon::{Announced, Common, Families, Family, IfNow, Kind, Link, Signing, Sockets};
use crate::limits::{BEACON_RECV_PER_TURN, DATAGRAM_MAX, MAX_BEACON_IFACES};
use crate::proto::wbuf::WBuf;
use crate::sys::{iface, net, udp};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// One interface: its state machine and the sockets it wants.
struct Entry {
    link: Link,
    /// (socket, ifindex it is bound to) per family.
    v4: Option<(OwnedFd, u32)>,
    v6: Option<(OwnedFd, u32)>,
}

/// Every beacon interface, the sockets, and what their datagrams share.
pub struct Links {
    entries: heapless::Vec<Entry, MAX_BEACON_IFACES>,
    /// Without `--iface`: when the default interface was last looked for (it is looked
    /// for again every interval while there is none or it is not up).
    auto: Option<Instant>,
    port: u16,
    families: Families,
    seed: u32,
    ports: Announced,
    /// 16 hex digits, random per agent start: sent as `run` in every datagram.
    run: heapless::String<16>,
    signing: Option<Signing>,
    /// The sysfs file the board's temperature comes from (`--thermal`).
    thermal: String,
}

impl Links {
    /// Beacons on `ifaces` (at most [`MAX_BEACON_IFACES`]; more are ignored).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        ifaces: &[String],
        port: u16,
        families: Families,
        ports: Announced,
        run: [u8; 8],
        signing: Option<Signing>,
        thermal: String,
    ) -> Links {
        let mut hex = [0u8; 16];
        crate::proto::hex::encode(&run, &mut hex);
        let mut run_s = heapless::String::new();
        let _ = run_s.push_str(core::str::from_utf8(&hex).unwrap_or("0000000000000000"));
        let seed = u32::from_le_bytes([run[0], run[1], run[2], run[3]]);
        let mut links = Links {
            entries: heapless::Vec::new(),
            auto: None,
            port,
            families,
            seed,
            ports,
            run: run_s,
            signing,
            thermal,
        };
        for name in ifaces {
            links.add(now, name);
        }
        links
    }

    fn add(&mut self, now: Instant, name: &str) {
        let seed = self.seed.wrapping_add(self.entries.len() as u32);
        let link = Link::new(now, name, self.port, self.families, seed);
        let _ = self.entries.push(Entry {
            link,
            v4: None,
            v6: None,
        });
    }

    /// No `--iface`: while no interface qualified (a board that boots before its Wi-Fi
    /// associates) or the chosen one is not up (deleted, unplugged, a USB dongle swapped
    /// for one with another name), look for the default one every interval and beacon on
    /// the first that qualifies; the chosen one is kept while it is up.
    pub fn look_for_default(&mut self, now: Instant) {
        self.auto = Some(now);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Interface `i`'s state, as STATUS shows it.
    pub fn state(&self, i: usize) -> Option<(BeaconState, &BeaconInfo)> {
        self.entries.get(i).map(|e| e.link.state())
    }

    /// Opens the sockets now (at start-up), so probes are answered from the ready line
    /// on. The first beacons still go out on the first loop turn.
    pub fn open(&mut self, now: Instant) {
        for e in self.entries.iter_mut() {
            e.refresh(now);
        }
    }

    /// The earliest deadline of all links.
    pub fn next_deadline(&self, interval: Duration) -> Option<Instant> {
        let look = self
            .auto
            .filter(|_| self.entries.is_empty())
            .map(|t| t + interval);
        self.entries
            .iter()
            .map(|e| e.link.poll_timeout(interval))
            .chain(look)
            .min()
    }

    /// The sockets to poll for input, with (link, family) to hand back to [`Links::readable`].
    pub fn fds(&self) -> impl Iterator<Item = (BorrowedFd<'_>, usize, Family)> {
        self.entries.iter().enumerate().flat_map(|(i, e)| {
            let v4 = e.v4.as_ref().map(|(fd, _)| (fd.as_fd(), i, Family::V4));
            let v6 = e.v6.as_ref().map(|(fd, _)| (fd.as_fd(), i, Family::V6));
            v4.into_iter().chain(v6)
        })
    }

    /// Timers: ticks that are due (the interface re-read first), then every datagram due.
    pub fn on_timer(&mut self, now: Instant, interval: Duration, agent: &mut Agent) {
        for e in self.entries.iter_mut() {
            if e.link.tick_due(now, interval) {
                e.refresh(now);
                e.link.on_tick(now);
            } else if e.link.recheck_due(now) {
                e.refresh(now);
            }
        }
        self.choose_default(now, interval);
        self.transmit(now, agent);
    }

    /// Without `--iface`, once an interval while there is no beacon interface or it is
    /// not up: the default one, if another qualifies now (ticked in the next turn).
    fn choose_default(&mut self, now: Instant, interval: Duration) {
        let up = |e: &Entry| e.link.state().0 == BeaconState::Up;
        if self.auto.is_none_or(|t| t + interval > now) || self.entries.first().is_some_and(up) {
            return;
        }
        self.auto = Some(now);
        // Interfaces that cannot be looked at now: again in an interval.
        let Ok(Some(name)) = iface::default_beacon_iface() else {
            return;
        };
        match self.entries.first() {
            Some(e) if e.link.name() == name.as_str() => return,
            Some(e) => log::info!(
                "beacon: {name} qualifies now; beaconing on it instead of {} ({})",
                e.link.name(),
                e.link.state().0.as_str()
            ),
            None => log::info!("beacon: {name} qualifies now; beaconing on it"),
        }
        let old = self.entries.pop().map(|e| e.link.carried());
        self.entries.clear();
        self.add(now, &name);
        if let (Some(c), Some(e)) = (old, self.entries.first_mut()) {
            e.link.carry_on(c);
        }
    }

    /// Socket (`i`, `family`) is readable: reads a bounded number of datagrams.
    pub fn readable(&mut self, now: Instant, i: usize, family: Family, agent: &mut Agent) {
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        let mut buf = [0u8; DATAGRAM_MAX + 1];
        for _ in 0..BEACON_RECV_PER_TURN {
            let Some(fd) = e.sock(family) else { return };
            match udp::recv_from(fd, &mut buf) {
                Ok(Some(r)) => {
                    let d = &buf[..r.len];
                    e.link
                        .on_datagram(now, family, d, r.from, r.local, &mut agent.stats)
                }
                Ok(None) => break,
                Err(err) => {
                    log::debug!("beacon recv: {}", err.desc());
                    break;
                }
            }
        }
        // Answers with no delay drawn go out now; the others at their deadline.
        self.transmit(now, agent);
    }

    /// Shutdown: a goodbye on every link that is up.
    pub fn goodbye(&mut self, now: Instant, agent: &mut Agent) {
        for e in self.entries.iter_mut() {
            e.refresh(now);
            e.link.goodbye();
        }
        self.transmit(now, agent);
    }

    /// SIGHUP: re-read the fleet key, if there is one.
    pub fn reload_key(&mut self) {
        if let Some(s) = self.signing.as_mut() {
            s.reload();
        }
    }

    /// Sends every datagram the links have due, reading the board at most once.
    fn transmit(&mut self, now: Instant, agent: &mut Agent) {
        let mut board: Option<Board> = None;
        let mut out = [0u8; DATAGRAM_MAX];
        for e in self.entries.iter_mut() {
            while let Some(t) = e.link.poll_transmit(now) {
                let b = board.get_or_insert_with(|| crate::sys::board::read(&self.thermal));
                let c = Common {
                    agent,
                    board: b,
                    ports: &self.ports,
                    run: &self.run,
                    key: self.signing.as_ref().map(|s| &s.key),
                };
                let Some(n) = e.link.encode(&t, &c, &mut out) else {
                    agent.stats.datagrams_dropped += 1;
                    continue;
                };
                let Some(fd) = e.sock(t.family) else { continue };
                // An answer's `src` is where the kernel answers from (IP_PKTINFO): when it
                // is not this link's (the address went since the link was last read), the
                // answer would give the prober another interface's address.
                if let Some(a) = t.src.filter(|a| !iface::has_ipv4(e.link.name(), *a)) {
                    log::debug!("no answer on {}: {a} is not its address", e.link.name());
                    agent.stats.datagrams_dropped += 1;
                    continue;
                }
                let src6 = match e.link.source(&t) {
                    Some(IpAddr::V6(a)) => Some(a),
                    _ => None,
                };
                let broadcast = t.kind != Kind::Answer;
                let r = udp::send_to(fd, &out[..n], t.to, broadcast, src6)
                    .map(|_| n)
                    .map_err(|e| e.desc());
                e.link.on_sent(now, &t, r, &mut agent.stats);
            }
        }
    }

    /// SOCKETS entries: one per open socket, or one per link with none open.
    pub fn write_sockets(
        &self,
        w: &mut WBuf<'_>,
        sep: &mut dyn FnMut(&mut WBuf<'_>) -> fmt::Result,
    ) -> fmt::Result {
        for e in &self.entries {
            let mut any = false;
            for fd in [e.sock(Family::V4), e.sock(Family::V6)]
                .into_iter()
                .flatten()
            {
                any = true;
                sep(w)?;
                net::socket_info(fd).write(w, "udp-beacon")?;
            }
            if !any {
                sep(w)?;
                // No socket while the interface is down or absent.
                crate::proto::sockets::write_none(
                    w,
                    "udp-beacon",
                    e.link.name(),
                    e.link.state().0.as_str(),
                )?;
            }
        }
        Ok(())
    }

    /// `NAME:PORT` per interface, comma-separated (the ready line's `beacon=`).
    pub fn ready_field(&self) -> String {
        let v: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{}:{}", e.link.name(), e.link.port()))
            .collect();
        v.join(",")
    }
}

impl Entry {
    fn sock(&self, f: Family) -> Option<BorrowedFd<'_>> {
        let s = match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        s.as_ref().map(|(fd, _)| fd.as_fd())
    }

    /// Re-reads the interface, feeds the state machine and opens or closes sockets as
    /// it asks.
    fn refresh(&mut self, now: Instant) {
        let mut owned = iface::IfName::new();
        let _ = owned.push_str(self.link.name());
        let name = owned.as_str();
        let look = iface::look(name).and_then(|i| {
            let Some(i) = i else { return Ok(None) };
            let (v6, v6_tentative) = iface::link_local_state(name)?;
            Ok(Some(IfNow {
                index: i.index,
                up: i.up,
                running: i.running,
                v4: i.addr,
                broadcast4: i.broadcast,
                v6,
                v6_tentative,
            }))
        });
        // Out of descriptors (or memory) to look with: the interface is as it was, not
        // absent (its working sockets closed); looked at again at the next tick.
        let Ok(now_if) = look else {
            self.link.not_now(now);
            return;
        };
        let mut err = None;
        match self.link.update(now, now_if) {
            Sockets::None => {
                self.v4 = None;
                self.v6 = None;
            }
            Sockets::Keep => return,
            Sockets::Want { index, v4, v6 } => {
                let port = self.link.port();
                // SO_BINDTODEVICE ties a socket to an ifindex: a recreated interface
                // needs new sockets.
                let mut want = |slot: &mut Option<(OwnedFd, u32)>, on: bool, f: Family| {
                    if !on {
                        *slot = None;
                        return;
                    }
                    if slot.as_ref().is_some_and(|(_, i)| *i == index) {
                        return;
                    }
                    *slot = None;
                    let r = match f {
                        Family::V4 => udp::open(Some(name), port),
                        Family::V6 => udp::open6(name, port, index),
                    };
                    match r {
                        Ok(fd) => *slot = Some((fd, index)),
                        Err((what, e)) => {
                            if err.is_none() {
                                err = Some((what, e.desc()));
                            }
                        }
                    }
                };
                want(&mut self.v4, v4, Family::V4);
                want(&mut self.v6, v6, Family::V6);
            }
        }
        let (v4, v6) = (self.v4.is_some(), self.v6.is_some());
        self.link.opened(now, v4, v6, err);
    }
}
