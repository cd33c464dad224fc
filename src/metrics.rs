//! What `/metrics` says: the agent's state in the Prometheus text format (0.0.4), written
//! into a caller's fixed buffer ([`METRICS_BODY_MAX`] bytes always suffice).
//!
//! IO-free like the agent core: readings come from the same [`Env`] the STATUS and STATS
//! replies use (one /proc reading per scrape, no second way of reading the board), the
//! counters from [`Agent::stats`]. It must not touch sockets or the clock; the run loop's
//! HTTP server calls [`render`] and frames the answer with `proto::http`.
//!
//! Names follow the Prometheus conventions: base units (`_seconds`, `_bytes`,
//! `_celsius`), `_total` for counters, `_info` gauges of 1 for text. The README lists them.

use crate::agent::{Agent, BeaconState, Board, Env, REVISION, VERSION};
use crate::proto::fixed::Fixed;
use crate::proto::prom::{family, label_value, single_u64, Kind};
use crate::proto::wbuf::WBuf;
use core::fmt::{self, Write};
use std::time::Instant;

#[cfg(doc)]
use crate::limits::METRICS_BODY_MAX;
use crate::limits::{IFNAME_MAX, MAX_BEACON_IFACES};

/// Counters of the HTTP server itself, kept by the run loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStats {
    /// HTTP clients connected now.
    pub clients: usize,
    /// Requests answered, any status.
    pub requests: u64,
    /// Connections refused with 503 because every HTTP slot was busy.
    pub refused: u64,
}

/// What one scrape reads from the outside world, once, through [`Env`]: the same readings
/// STATUS and STATS use. [`render`] is a pure function of it and the agent.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub board: Board,
    pub beacon: Option<BeaconState>,
    pub beacon_seq: u64,
    /// Every beacon interface (`--iface`), its state and the sequence number of its next
    /// beacon.
    pub links: heapless::Vec<(heapless::String<IFNAME_MAX>, BeaconState, u64), MAX_BEACON_IFACES>,
    /// (tcp, unix) control clients connected now.
    pub clients: (usize, usize),
    pub allocations: u64,
    pub log_lines_dropped: u64,
}

impl Readings {
    pub fn read(env: &mut dyn Env) -> Readings {
        let (beacon, beacon_seq) = {
            let (st, info) = env.beacon();
            (Some(st), info.seq)
        };
        let mut links = heapless::Vec::new();
        while let Some((st, info)) = env.beacons(links.len()) {
            if links.push((info.iface.clone(), st, info.seq)).is_err() {
                break;
            }
        }
        Readings {
            board: env.board(),
            beacon,
            beacon_seq,
            links,
            clients: env.clients(),
            allocations: env.allocations(),
            log_lines_dropped: env.log_lines_dropped(),
        }
    }
}

/// Every STATS counter as (metric name, help, value).
fn counters(agent: &Agent) -> [(&'static str, &'static str, u64); 18] {
    let s = &agent.stats;
    [
        (
            "tether_accepted_total",
            "Control connections accepted (TCP and Unix).",
            s.accepted,
        ),
        (
            "tether_refused_busy_total",
            "Control connections refused with ERR busy (client table full).",
            s.refused_busy,
        ),
        (
            "tether_closed_idle_total",
            "Control connections closed for idleness.",
            s.closed_idle,
        ),
        (
            "tether_closed_too_long_total",
            crate::limit_text!(
                "Control connections closed after a line over ",
                { crate::limits::LINE_MAX },
                " bytes."
            ),
            s.closed_too_long,
        ),
        (
            "tether_closed_slow_total",
            "Control connections closed for not reading their replies.",
            s.closed_slow,
        ),
        (
            "tether_requests_total",
            "Control requests answered (TCP and Unix).",
            s.requests,
        ),
        (
            "tether_errors_total",
            "Control requests answered with ERR.",
            s.errors,
        ),
        (
            "tether_auth_failures_total",
            "Failed AUTH attempts.",
            s.auth_failures,
        ),
        (
            "tether_facts_expired_total",
            "Facts removed because their ttl ran out.",
            s.facts_expired,
        ),
        (
            "tether_beacons_sent_total",
            "Status beacons broadcast.",
            s.beacons_sent,
        ),
        (
            "tether_beacon_errors_total",
            "Status beacons that could not be sent.",
            s.beacon_errors,
        ),
        (
            "tether_probes_answered_total",
            "Scan probes answered.",
            s.probes_answered,
        ),
        (
            "tether_probes_limited_total",
            "Scan probes not answered because of the rate limit.",
            s.probes_limited,
        ),
        (
            "tether_datagrams_dropped_total",
            "UDP datagrams dropped: malformed, from a sender never answered, or answers not sent.",
            s.datagrams_dropped,
        ),
        (
            "tether_published_total",
            "Publish datagrams applied (SET or DEL).",
            s.published,
        ),
        (
            "tether_publish_rejected_total",
            "Publish datagrams refused (not one valid SET or DEL line).",
            s.publish_rejected,
        ),
        (
            "tether_received_bytes_total",
            "Bytes received on control connections and the beacon socket.",
            s.bytes_in,
        ),
        (
            "tether_sent_bytes_total",
            "Bytes sent on control connections and the beacon socket.",
            s.bytes_out,
        ),
    ]
}

const BEACON_STATES: [BeaconState; 4] = [
    BeaconState::Off,
    BeaconState::Up,
    BeaconState::Down,
    BeaconState::Absent,
];

/// Writes the whole `/metrics` body. Err only when `w` is too small (never with
/// [`METRICS_BODY_MAX`] bytes; `tests::worst_case_fits` proves it).
pub fn render(
    w: &mut WBuf<'_>,
    now: Instant,
    agent: &Agent,
    r: &Readings,
    http: &HttpStats,
) -> fmt::Result {
    let b = &r.board;
    family(
        w,
        "tether_build_info",
        Kind::Gauge,
        "tether's version and the commit it was built from, the board id and its hostname; always 1.",
    )?;
    write!(
        w,
        "tether_build_info{{version=\"{VERSION}\",revision=\"{REVISION}\",id="
    )?;
    label_value(w, agent.id().as_bytes())?;
    w.write_str(",host=")?;
    label_value(w, b.host.as_bytes())?;
    w.write_str("} 1\n")?;
    single_u64(
        w,
        "tether_uptime_seconds",
        Kind::Gauge,
        "Time since the board booted.",
        b.uptime_s,
    )?;
    single_u64(
        w,
        "tether_agent_uptime_seconds",
        Kind::Gauge,
        "Time since the agent started.",
        agent.uptime(now).as_secs(),
    )?;
    for ((name, help), v) in [
        ("tether_load1", "Load average over 1 minute."),
        ("tether_load5", "Load average over 5 minutes."),
        ("tether_load15", "Load average over 15 minutes."),
    ]
    .into_iter()
    .zip(b.load)
    {
        family(w, name, Kind::Gauge, help)?;
        // Two decimals, as /proc/loadavg has them (sys::board); a load is never NaN.
        let v = if v.is_finite() { v } else { 0.0 };
        writeln!(w, "{name} {}", Fixed(v.into(), 2))?;
    }
    single_u64(
        w,
        "tether_memory_total_bytes",
        Kind::Gauge,
        "Memory installed (MemTotal).",
        b.mem_total_kb.saturating_mul(1024),
    )?;
    single_u64(
        w,
        "tether_memory_available_bytes",
        Kind::Gauge,
        "Memory available for new work (MemAvailable).",
        b.mem_avail_kb.saturating_mul(1024),
    )?;
    if let Some(t) = b.temp_c.filter(|t| t.is_finite()) {
        family(
            w,
            "tether_temperature_celsius",
            Kind::Gauge,
            "Board temperature (--thermal); absent when unknown.",
        )?;
        writeln!(w, "tether_temperature_celsius {}", Fixed(t.into(), 1))?;
    }
    family(
        w,
        "tether_beacon_state",
        Kind::Gauge,
        "Beacon state: 1 for its state (off, up, down, absent), else 0.",
    )?;
    for s in BEACON_STATES {
        writeln!(
            w,
            "tether_beacon_state{{state=\"{}\"}} {}",
            s.as_str(),
            u8::from(Some(s) == r.beacon)
        )?;
    }
    if !r.links.is_empty() {
        family(
            w,
            "tether_beacon_iface_state",
            Kind::Gauge,
            "Beacon state per --iface interface: 1 for its state (up, down, absent), else 0.",
        )?;
        for (name, st, _) in &r.links {
            for s in &BEACON_STATES[1..] {
                w.write_str("tether_beacon_iface_state{iface=")?;
                label_value(w, name.as_bytes())?;
                writeln!(w, ",state=\"{}\"}} {}", s.as_str(), u8::from(s == st))?;
            }
        }
        family(
            w,
            "tether_beacon_iface_sequence",
            Kind::Gauge,
            "Sequence number of the next beacon, per --iface interface.",
        )?;
        for (name, _, seq) in &r.links {
            w.write_str("tether_beacon_iface_sequence{iface=")?;
            label_value(w, name.as_bytes())?;
            writeln!(w, "}} {seq}")?;
        }
    }
    single_u64(
        w,
        "tether_beacon_interval_seconds",
        Kind::Gauge,
        "Seconds between beacons.",
        u64::from(agent.interval_secs),
    )?;
    single_u64(
        w,
        "tether_beacon_sequence",
        Kind::Gauge,
        "Sequence number of the next beacon.",
        r.beacon_seq,
    )?;
    let (tcp, unix) = r.clients;
    family(
        w,
        "tether_clients",
        Kind::Gauge,
        "Clients connected now, by transport (tcp and unix share --max-clients).",
    )?;
    for (t, n) in [("tcp", tcp), ("unix", unix), ("http", http.clients)] {
        writeln!(w, "tether_clients{{transport=\"{t}\"}} {n}")?;
    }
    single_u64(
        w,
        "tether_clients_max",
        Kind::Gauge,
        "Control client slots (--max-clients).",
        agent.max_clients() as u64,
    )?;
    for (name, help, v) in counters(agent) {
        single_u64(w, name, Kind::Counter, help, v)?;
    }
    single_u64(
        w,
        "tether_http_requests_total",
        Kind::Counter,
        "HTTP requests answered on the metrics port, any status.",
        http.requests,
    )?;
    single_u64(
        w,
        "tether_http_refused_total",
        Kind::Counter,
        "HTTP connections answered 503: every slot busy, or no fd to spare.",
        http.refused,
    )?;
    single_u64(
        w,
        "tether_allocations_since_ready_total",
        Kind::Counter,
        "Heap allocations since the agent became ready (0 in the steady state).",
        r.allocations,
    )?;
    single_u64(
        w,
        "tether_log_lines_dropped_total",
        Kind::Counter,
        "Log lines dropped: stderr did not take them in time.",
        r.log_lines_dropped,
    )?;
    single_u64(
        w,
        "tether_facts",
        Kind::Gauge,
        "Facts stored now.",
        agent.facts.len() as u64,
    )?;
    single_u64(
        w,
        "tether_facts_max",
        Kind::Gauge,
        "Capacity of the fact table.",
        crate::limits::MAX_FACTS as u64,
    )?;
    family(
        w,
        "tether_fact_info",
        Kind::Gauge,
        "One series per stored fact, with its key and value as labels; always 1.",
    )?;
    for f in agent.facts.iter() {
        w.write_str("tether_fact_info{key=")?;
        label_value(w, &f.key)?;
        w.write_str(",value=")?;
        label_value(w, &f.value)?;
        w.write_str("} 1\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Config, Stats};
    use crate::limits::{
        HOST_MAX, KEY_MAX, MAX_FACTS, METRICS_BODY_MAX, METRICS_FIXED_MAX, VALUE_MAX,
    };

    /// Every reading at its widest: a host of bytes that are not UTF-8 (each shown as
    /// U+FFFD, three bytes in a label: wider than an escaped `"`), u64::MAX counters.
    fn worst_readings() -> Readings {
        let mut b = Board::default();
        for _ in 0..HOST_MAX {
            b.host.push(char::REPLACEMENT_CHARACTER).unwrap();
        }
        b.uptime_s = u64::MAX;
        b.load = [f32::MAX; 3];
        b.mem_total_kb = u64::MAX;
        b.mem_avail_kb = u64::MAX;
        b.temp_c = Some(-f32::MAX);
        Readings {
            board: b,
            beacon: Some(BeaconState::Absent),
            beacon_seq: u64::MAX,
            links: (0..MAX_BEACON_IFACES)
                .map(|_| {
                    let mut n = heapless::String::<IFNAME_MAX>::new();
                    while n.push('"').is_ok() {}
                    (n, BeaconState::Absent, u64::MAX)
                })
                .collect(),
            clients: (usize::MAX, usize::MAX),
            allocations: u64::MAX,
            log_lines_dropped: u64::MAX,
        }
    }

    fn worst_agent(now: Instant, facts: usize) -> Agent {
        let cfg = Config {
            max_clients: usize::MAX,
            interval_secs: u32::MAX,
            ..Config::default()
        };
        let mut a = Agent::new(now, &"\\".repeat(32), &cfg);
        let m = u64::MAX;
        a.stats = Stats {
            accepted: m,
            refused_busy: m,
            closed_idle: m,
            closed_too_long: m,
            closed_slow: m,
            requests: m,
            errors: m,
            auth_failures: m,
            facts_expired: m,
            beacons_sent: m,
            beacon_errors: m,
            probes_answered: m,
            probes_limited: m,
            datagrams_dropped: m,
            published: m,
            publish_rejected: m,
            bytes_in: m,
            bytes_out: m,
        };
        // Maximum-length keys, and values of the two printable bytes that need escaping.
        for i in 0..facts {
            let key = format!("{i:02}{}", "k".repeat(KEY_MAX - 2));
            let value: Vec<u8> = (0..VALUE_MAX)
                .map(|j| if j % 2 == 0 { b'\\' } else { b'"' })
                .collect();
            a.facts.set(key.as_bytes(), &value, None).unwrap();
        }
        a
    }

    fn render_into(buf: &mut [u8], agent: &Agent) -> Result<String, usize> {
        let http = HttpStats {
            clients: usize::MAX,
            requests: u64::MAX,
            refused: u64::MAX,
        };
        let mut w = WBuf::new(buf);
        match render(&mut w, Instant::now(), agent, &worst_readings(), &http) {
            Ok(()) => Ok(String::from_utf8(w.as_bytes().to_vec()).unwrap()),
            Err(_) => Err(w.len()),
        }
    }

    #[test]
    fn fixed_part_fits() {
        let a = worst_agent(Instant::now(), 0);
        let mut buf = vec![0u8; METRICS_FIXED_MAX];
        let s = render_into(&mut buf, &a).expect("fixed part fits METRICS_FIXED_MAX");
        assert!(s.contains("tether_temperature_celsius -"), "{s}");
    }

    #[test]
    fn worst_case_fits() {
        let a = worst_agent(Instant::now(), MAX_FACTS);
        assert_eq!(a.facts.len(), MAX_FACTS);
        let mut buf = vec![0u8; METRICS_BODY_MAX];
        let s = render_into(&mut buf, &a).expect("worst case fits METRICS_BODY_MAX");
        assert_eq!(s.matches("tether_fact_info{key=").count(), MAX_FACTS);
        // Every value byte came out escaped.
        let escaped = "\\\\\\\"".repeat(VALUE_MAX / 2);
        assert!(s.contains(&format!("value=\"{escaped}\"}} 1\n")), "{s}");
        // The bound is not slack: at least 90 % of it is used.
        assert!(
            s.len() * 10 >= METRICS_BODY_MAX * 9,
            "{} of {METRICS_BODY_MAX}",
            s.len()
        );
    }

    #[test]
    fn every_beacon_interface_has_its_state() {
        let a = Agent::new(Instant::now(), "abc", &Config::default());
        let name = |n: &str| {
            let mut s = heapless::String::new();
            let _ = s.push_str(n);
            s
        };
        let r = Readings {
            beacon: Some(BeaconState::Up),
            links: [
                (name("eth0"), BeaconState::Up, 41),
                (name("wlan0"), BeaconState::Down, 7),
            ]
            .into_iter()
            .collect(),
            ..Readings::default()
        };
        let mut buf = vec![0u8; METRICS_BODY_MAX];
        let mut w = WBuf::new(&mut buf);
        let http = HttpStats::default();
        render(&mut w, Instant::now(), &a, &r, &http).unwrap();
        let s = String::from_utf8(w.as_bytes().to_vec()).unwrap();
        for line in [
            "tether_beacon_iface_state{iface=\"eth0\",state=\"up\"} 1\n",
            "tether_beacon_iface_state{iface=\"eth0\",state=\"down\"} 0\n",
            "tether_beacon_iface_state{iface=\"wlan0\",state=\"down\"} 1\n",
            "tether_beacon_iface_state{iface=\"wlan0\",state=\"absent\"} 0\n",
            "tether_beacon_iface_sequence{iface=\"eth0\"} 41\n",
            "tether_beacon_iface_sequence{iface=\"wlan0\"} 7\n",
        ] {
            assert!(s.contains(line), "{line} in {s}");
        }
        assert_eq!(
            s.matches("# TYPE tether_beacon_iface_state gauge").count(),
            1
        );
    }

    #[test]
    fn families_are_whole_and_unknown_temperature_is_left_out() {
        let t = Instant::now();
        let cfg = Config {
            max_clients: 16,
            interval_secs: 5,
            ..Config::default()
        };
        let a = Agent::new(t, "abc", &cfg);
        let r = Readings {
            beacon: Some(BeaconState::Up),
            clients: (2, 1),
            ..Readings::default()
        };
        let mut buf = vec![0u8; METRICS_BODY_MAX];
        let mut w = WBuf::new(&mut buf);
        render(&mut w, t, &a, &r, &HttpStats::default()).unwrap();
        let s = std::str::from_utf8(w.as_bytes()).unwrap();
        assert!(!s.contains("temperature"), "{s}");
        assert!(s.contains("tether_beacon_state{state=\"up\"} 1\n"), "{s}");
        assert!(s.contains("tether_beacon_state{state=\"off\"} 0\n"), "{s}");
        assert!(s.contains("tether_clients{transport=\"tcp\"} 2\n"), "{s}");
        assert!(s.contains("tether_facts 0\n"), "{s}");
        // Every sample's family has HELP and TYPE, before it, and each family once.
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for l in s.lines() {
            if let Some(r) = l.strip_prefix("# TYPE ") {
                current = r.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} twice");
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{l}");
                assert!(s.contains(&format!("# HELP {name} ")), "{name}");
            }
        }
    }
}
