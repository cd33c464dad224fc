//! `tether scan`: broadcast a probe, collect answers and ordinary beacons, print one row
//! per board (sorted by host, id, address). A client process: it may allocate. `--watch`
//! keeps listening and re-probing, marking boards that said goodbye or went silent.
//!
//! Rows are per board, not per id: a board is its id plus its `run` (random per agent
//! start), so two clones sharing a machine-id are two rows (`dup_id`), a multi-homed board
//! is one. With `--fleet-key` each datagram is classified by `proto::beacon::verify` (plus
//! the seq memory kept here) and only `signed` boards are listed unless `--all`.

use crate::cli::ScanArgs;
use crate::exit::{
    printable, stdout_written, to_stdout, Fatal, EX_CANTCREAT, EX_CONFIG, EX_OSERR, EX_UNAVAILABLE,
};
use crate::limits::{
    BEACON_RECV_PER_TURN, DATAGRAM_MAX, SCAN_BOARDS_MAX, SCAN_FORGET_SECS, SCAN_LOAD_MAX,
    SCAN_PROBES, SCAN_RCVBUF, SCAN_TEMP_C,
};
use crate::proto::beacon::{self, count_members, fields, unquote, FleetKey, Trust};
use crate::proto::fixed::Fixed;
use crate::proto::json;
use crate::sys::{iface, udp};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// A board heard in this scan.
#[derive(Debug, Clone)]
pub struct Board {
    pub id: String,
    pub host: String,
    /// The embedded `addr` without a key (as before); the datagram's source with one.
    /// Over IPv6 always the scoped source, `fe80::…%IFACE` (reachable as it is). A board
    /// heard over both families shows its IPv4 address here.
    pub addr: String,
    /// Every address the board was heard at (IPv4 first), as `addr` writes them.
    pub addrs: Vec<String>,
    /// The datagram's source address (IPv6 without its scope).
    pub source: IpAddr,
    pub port: u16,
    /// The metrics port the beacon announced (`"metrics":PORT`), if any.
    pub metrics: Option<u16>,
    pub uptime: u64,
    /// None when the beacon had none, or not a believable one (see [`SCAN_LOAD_MAX`]).
    pub load: Option<f64>,
    pub temp_c: Option<f64>,
    pub facts: usize,
    pub seq: u64,
    pub run: Option<String>,
    pub bye: bool,
    pub heard: Instant,
    /// When the row was first heard: two runs of one id are clones only while both are
    /// heard ([`Boards::mark_clones`]), not one after the other (a restart).
    pub first_heard: Instant,
    pub trust: Trust,
    /// Another board (another run, another address) carries the same id: a clone.
    pub dup_id: bool,
    /// With a key: this run has answered one of this scan's probes (a signed datagram with
    /// this scan's nonce), so it was alive after the scan began ([`Boards::ingest`]).
    pub answered: bool,
}

/// A JSON string value as text: quotes removed and escapes undone (`\"` is `"`), so a
/// name that needed escaping is not escaped twice when scan writes it out again. With a
/// malformed escape, the text as it came.
fn text(v: &[u8]) -> String {
    let body = unquote(v).unwrap_or(v);
    json::unescape(body).unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn num<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A measurement: a finite number within `lo..=hi`, else unknown (`1e999`, `NaN` and
/// a 300-digit load are not a board's).
fn reading(v: &[u8], lo: f64, hi: f64) -> Option<f64> {
    crate::proto::decimal::parse(v).filter(|x| (lo..=hi).contains(x))
}

/// True when `d` is one whole JSON object: [`fields`] (which stops at the first syntax
/// error) reads its members up to the closing `}`, and only whitespace follows.
fn whole_object(d: &[u8]) -> bool {
    let trim = |s: &[u8]| -> usize {
        let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
        s.iter().rposition(|c| !ws(c)).map_or(0, |i| i + 1)
    };
    let Some(body) = d[..trim(d)].strip_suffix(b"}") else {
        return false;
    };
    let body = &body[..trim(body)];
    // The last member read must end where the body does (the same place, not the same
    // bytes): a syntax error after it would leave something in between.
    fields(d)
        .last()
        .is_some_and(|(_, v)| v.as_ptr_range().end == body.as_ptr_range().end)
}

/// Decodes a beacon datagram; None unless it is a well-formed tether beacon: one whole
/// JSON object of version 1 with an id and a port. Its trust is [`Trust::Unchecked`] until
/// [`Boards::ingest`] checks it.
pub fn decode(d: &[u8], from: SocketAddr, now: Instant) -> Option<Board> {
    if !beacon::is_beacon(d) || !whole_object(d) {
        return None;
    }
    let mut b = Board {
        id: String::new(),
        host: String::new(),
        addr: scoped(from),
        addrs: Vec::new(),
        source: from.ip(),
        port: 0,
        metrics: None,
        uptime: 0,
        load: None,
        temp_c: None,
        facts: 0,
        seq: 0,
        run: None,
        bye: false,
        heard: now,
        first_heard: now,
        trust: Trust::Unchecked,
        dup_id: false,
        answered: false,
    };
    let mut version = None;
    for (k, v) in fields(d) {
        match k {
            b"tether" => version = num::<u32>(v),
            b"id" if v.first() == Some(&b'"') => b.id = text(v),
            b"host" => b.host = text(v),
            // A host's own IPv4 address, or the source stays: this text becomes a
            // Prometheus target, and a loopback, unspecified, broadcast or multicast one (or
            // an IPv6 one in an IPv4 datagram) would aim Prometheus at itself or nowhere.
            b"addr" if from.is_ipv4() => {
                if let Ok(IpAddr::V4(ip)) = text(v).parse::<IpAddr>() {
                    if !(ip.is_loopback()
                        || ip.is_unspecified()
                        || ip.is_broadcast()
                        || ip.is_multicast())
                    {
                        b.addr = ip.to_string();
                    }
                }
            }
            b"port" => b.port = num(v).unwrap_or(0),
            b"metrics" => b.metrics = num(v).filter(|&p: &u16| p != 0),
            b"uptime" => b.uptime = num(v).unwrap_or(0),
            b"load" => b.load = reading(v, 0.0, SCAN_LOAD_MAX),
            b"temp_c" => b.temp_c = reading(v, SCAN_TEMP_C.0, SCAN_TEMP_C.1),
            b"facts" => b.facts = count_members(v),
            b"seq" => b.seq = num(v).unwrap_or(0),
            b"run" => b.run = Some(text(v)),
            b"bye" => b.bye = v == b"true",
            _ => {}
        }
    }
    b.addrs.push(b.addr.clone());
    (version == Some(1) && !b.id.is_empty() && b.port != 0).then_some(b)
}

/// A source address as a user can reach it: IPv4 as is, IPv6 link-local with the
/// receiving interface's name as its scope (`fe80::1%eth0`).
pub fn scoped(from: SocketAddr) -> String {
    match from {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) if a.scope_id() != 0 => match iface::name_of_index(a.scope_id()) {
            Some(n) => format!("{}%{n}", a.ip()),
            None => format!("{}%{}", a.ip(), a.scope_id()),
        },
        SocketAddr::V6(a) => a.ip().to_string(),
    }
}

/// `addr:port` for a URL or a connect string: IPv6 in brackets.
fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// One row's identity: trust class, id, run, and (when the datagram cannot be tied to a
/// run it proves) the source address. A forger's rows never replace a signed board's.
type RowKey = (Trust, String, String, Option<IpAddr>);

/// One run of a board at one address: (id, run, source address).
type RunAt = (String, String, IpAddr);

/// Where `k` is (Ok) or belongs (Err) in `v`, kept sorted by key: a small sorted map.
fn find<K: Ord, V>(v: &[(K, V)], k: &K) -> Result<usize, usize> {
    v.binary_search_by(|(x, _)| x.cmp(k))
}

/// Every board heard so far, and what is needed to classify the next datagram.
pub struct Boards {
    key: Option<FleetKey>,
    nonce: String,
    /// The rows, sorted by their [`RowKey`].
    rows: Vec<(RowKey, Board)>,
    /// The newest signed seq heard per (id, run, source address), and when, sorted: an
    /// agent counts each socket's datagrams on its own (one per interface and family), in
    /// the order it sends them. A copy re-sent from another address already fails
    /// `verify`. Kept as long as a silent board's row ([`SCAN_FORGET_SECS`]), also after
    /// its run was replaced: a copy of an earlier run's datagram is then still a copy.
    seqs: Vec<(RunAt, (u64, Instant))>,
    /// Ids already warned about as clones (one warning per id per run of scan), sorted.
    warned: Vec<String>,
    /// Datagrams of boards past [`SCAN_BOARDS_MAX`] rows, ignored; and how many of them
    /// were already said in a warning.
    ignored: u64,
    ignored_said: u64,
}

impl Boards {
    pub fn new(key: Option<FleetKey>, nonce: String) -> Boards {
        Boards {
            key,
            nonce,
            rows: Vec::new(),
            seqs: Vec::new(),
            warned: Vec::new(),
            ignored: 0,
            ignored_said: 0,
        }
    }

    /// `--watch`: drops the boards silent for [`SCAN_FORGET_SECS`].
    pub fn forget(&mut self, now: Instant) {
        let forget = Duration::from_secs(SCAN_FORGET_SECS);
        self.rows
            .retain(|(_, r)| now.saturating_duration_since(r.heard) < forget);
        self.seqs
            .retain(|(_, (_, heard))| now.saturating_duration_since(*heard) < forget);
    }

    /// A warning when datagrams of boards beyond [`SCAN_BOARDS_MAX`] were ignored since
    /// the last one.
    pub fn ignored_warning(&mut self) -> Option<String> {
        let new = self.ignored - self.ignored_said;
        self.ignored_said = self.ignored;
        (new > 0).then(|| {
            format!(
                "warning: more than {SCAN_BOARDS_MAX} boards heard: {new} datagrams of further ones ignored"
            )
        })
    }

    /// True when this signed (id, run, source) datagram is not newer than the newest one
    /// heard from there: a copy, re-sent (a LAN does not reorder one socket's datagrams).
    fn seen_before(&mut self, b: &Board, run: &str) -> bool {
        let k = (b.id.clone(), run.to_string(), b.source);
        match find(&self.seqs, &k) {
            Ok(i) if b.seq <= self.seqs[i].1 .0 => true,
            Ok(i) => {
                self.seqs[i].1 = (b.seq, b.heard);
                false
            }
            Err(i) => {
                self.seqs.insert(i, (k, (b.seq, b.heard)));
                false
            }
        }
    }

    /// Whether signed `b` (a run not seen from its address before) is stale: another run
    /// of its id is heard at that address, and `b` is a goodbye (a goodbye ends only the
    /// run it names: an agent that restarts says it before its new run begins), or that
    /// other run has answered this scan's probe and `b` has not (a restart shows in the
    /// new run's answer to the next probe). A copy of an earlier run's datagram, re-sent
    /// from the board's own address, never replaces the board's current row.
    fn stale_run(&self, b: &Board) -> bool {
        self.rows.iter().any(|(k, r)| {
            k.0 == Trust::Signed
                && another_run_of_one_board(r, b)
                && (b.bye || (r.answered && !r.bye && !b.answered))
        })
    }

    /// Classifies one datagram from `from` and files it under its row.
    pub fn ingest(&mut self, d: &[u8], from: SocketAddr, now: Instant) {
        let Some(mut b) = decode(d, from, now) else {
            return;
        };
        if let Some(key) = &self.key {
            b.trust = beacon::verify(d, key, from.ip(), Some(self.nonce.as_bytes()));
            b.addr = scoped(from);
            b.addrs = vec![b.addr.clone()];
            if b.trust == Trust::Signed {
                b.answered = fields(d)
                    .any(|(k, v)| k == b"nonce" && unquote(v) == Some(self.nonce.as_bytes()));
                let run = b.run.clone().unwrap_or_default();
                if self.seen_before(&b, &run) || self.stale_run(&b) {
                    b.trust = Trust::Replayed;
                }
            }
        }
        let tied_to_run = b.run.is_some() && !matches!(b.trust, Trust::Forged | Trust::Replayed);
        let group = (!tied_to_run).then_some(b.source);
        if tied_to_run {
            // The same id from the same address under a new run is a restart, not a clone.
            // A run that answers this scan's probe is current: its datagrams held back as
            // stale before (a restart after a crash, heard before the next probe) were not.
            self.rows.retain(|(k, r)| {
                let restart = k.0 == b.trust && another_run_of_one_board(r, &b);
                let held_back = b.answered
                    && k.0 == Trust::Replayed
                    && (r.id == b.id && r.run == b.run)
                    && heard_at_one_address(r, &b);
                !(restart || held_back)
            });
        }
        let mut k = (
            b.trust,
            b.id.clone(),
            b.run.clone().unwrap_or_default(),
            group,
        );
        if !tied_to_run {
            // Rows that cannot be tied to a run are per source address; the same datagram
            // stream heard over the other family (IPv4 and IPv6 of one sender) joins the
            // row of that family unless the row has another address of this family.
            let v4 = b.source.is_ipv4();
            let other = self.rows.iter().find(|(rk, r)| {
                (rk.0, &rk.1, &rk.2) == (k.0, &k.1, &k.2)
                    && rk.3.is_some_and(|s| s.is_ipv4() != v4)
                    && r.addrs
                        .iter()
                        .filter(|a| a.contains(':') != v4)
                        .all(|a| *a == b.addr)
            });
            if let Some((rk, _)) = other {
                k = rk.clone();
            }
        }
        let at = find(&self.rows, &k);
        // The same board heard at another address (another family or link): one row
        // listing every address, its IPv4 one in `addr`.
        if let Ok(i) = at {
            let old = &self.rows[i].1;
            let mut all: Vec<String> = old.addrs.clone();
            for a in b.addrs.drain(..) {
                if !all.contains(&a) {
                    all.push(a);
                }
            }
            // IPv4 first, each family in the order heard.
            let (v4, v6): (Vec<String>, Vec<String>) =
                all.into_iter().partition(|a| !a.contains(':'));
            b.addrs = v4;
            b.addrs.extend(v6);
            b.addr = b.addrs[0].clone();
            if old.source.is_ipv4() && !b.source.is_ipv4() {
                b.source = old.source;
            }
            b.answered |= old.answered;
            b.first_heard = old.first_heard;
        }
        match at {
            Ok(i) => self.rows[i].1 = b,
            Err(_) if self.rows.len() >= SCAN_BOARDS_MAX => {
                // Full: a signed board takes the place of a row the key did not confirm
                // (forged and replayed ones first, then unsigned; the one heard longest
                // ago), so a flood of made-up ids never keeps a fleet's boards out.
                let victim = match k.0 {
                    Trust::Signed => self
                        .rows
                        .iter()
                        .enumerate()
                        .filter(|(_, (rk, _))| rk.0 != Trust::Signed)
                        .min_by_key(|(_, (rk, r))| (rk.0 == Trust::Unsigned, r.heard))
                        .map(|(i, _)| i),
                    _ => None,
                };
                match victim {
                    Some(v) => {
                        self.rows.remove(v);
                        if let Err(i) = find(&self.rows, &k) {
                            self.rows.insert(i, (k, b));
                        }
                    }
                    None => self.ignored += 1,
                }
            }
            Err(i) => self.rows.insert(i, (k, b)),
        }
    }

    /// Marks ids carried by boards of different runs (clones); returns the ids not
    /// warned about before, sorted.
    pub fn mark_clones(&mut self) -> Vec<String> {
        // A clone: two believable rows of one id and one trust class whose runs and
        // addresses both differ (so an unsigned sender cannot make a signed board a clone),
        // each heard after the other was first heard: alive at once, where a restart at a
        // new address (another link, another family) is heard only after the old run.
        let claims = |r: &Board| believable(r.trust) && r.run.is_some();
        let rows = &self.rows;
        let dup: Vec<bool> = rows
            .iter()
            .map(|(_, r)| {
                claims(r)
                    && rows.iter().any(|(_, o)| {
                        claims(o)
                            && o.trust == r.trust
                            && o.id == r.id
                            && o.run != r.run
                            && !heard_at_one_address(o, r)
                            && o.heard >= r.first_heard
                            && r.heard >= o.first_heard
                    })
            })
            .collect();
        let mut new: Vec<String> = Vec::new();
        for ((_, r), dup) in self.rows.iter_mut().zip(dup) {
            r.dup_id = dup;
            if let (true, Err(at)) = (dup, self.warned.binary_search(&r.id)) {
                self.warned.insert(at, r.id.clone());
                new.push(r.id.clone());
            }
        }
        new.sort();
        new
    }

    /// The rows to print: with a key only signed boards unless `all`.
    pub fn shown(&self, all: bool) -> Vec<&Board> {
        let v = self
            .rows
            .iter()
            .map(|(_, b)| b)
            .filter(|b| all || self.key.is_none() || b.trust == Trust::Signed)
            .collect();
        sorted(v, |a, b| {
            a.host
                .cmp(&b.host)
                .then(a.id.cmp(&b.id))
                .then(a.source.cmp(&b.source))
                .then(a.trust.cmp(&b.trust))
        })
    }

    /// What a key hid from the listing, e.g. `hidden: 1 forged, 2 replayed (--all shows
    /// them)`; None when nothing was hidden.
    pub fn hidden(&self, all: bool) -> Option<String> {
        if all || self.key.is_none() {
            return None;
        }
        let mut list = String::new();
        for t in [
            Trust::Unsigned,
            Trust::Forged,
            Trust::Replayed,
            Trust::Unchecked,
        ] {
            let n = self.rows.iter().filter(|(k, _)| k.0 == t).count();
            if n > 0 {
                if !list.is_empty() {
                    list.push_str(", ");
                }
                list += &format!("{n} {}", t.as_str());
            }
        }
        (!list.is_empty()).then(|| format!("hidden: {list} (--all shows them)"))
    }
}

/// `rows` in `cmp`'s order (stable: ties keep their order). One sort for every listing,
/// by binary insertion: a few thousand rows at most, and far less code than `sort_by`.
fn sorted(rows: Vec<&Board>, cmp: fn(&Board, &Board) -> std::cmp::Ordering) -> Vec<&Board> {
    let mut v: Vec<&Board> = Vec::with_capacity(rows.len());
    for r in rows {
        let at = v.partition_point(|x| cmp(x, r).is_le());
        v.insert(at, r);
    }
    v
}

/// Whether `a` and `b` were heard at an address in common: one board (a restart, a copy
/// of its datagram), however many addresses and families it is heard at; a clone is
/// another board, at none of them.
fn heard_at_one_address(a: &Board, b: &Board) -> bool {
    a.source == b.source || a.addrs.iter().any(|x| b.addrs.contains(x))
}

/// Whether `a` is another run of `b`'s board: its id, another run, heard at an address in
/// common (a restart, in either order).
fn another_run_of_one_board(a: &Board, b: &Board) -> bool {
    a.id == b.id && a.run != b.run && heard_at_one_address(a, b)
}

/// Rows whose id can be taken at its word for clone detection.
fn believable(t: Trust) -> bool {
    matches!(t, Trust::Signed | Trust::Unsigned | Trust::Unchecked)
}

/// The one warning line for a cloned id (shown [`printable`]).
fn clone_warning(id: &str) -> String {
    let id = printable(id);
    format!(
        "warning: id {id} is carried by more than one board (different runs at different \
         addresses): likely cloned /etc/machine-id (one SD-card image); on each clone run \
         `rm /etc/machine-id && systemd-machine-id-setup`, then restart tether"
    )
}

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn status(b: &Board, now: Instant, silent_after: Duration) -> &'static str {
    if b.bye {
        "bye"
    } else if now.saturating_duration_since(b.heard) > silent_after {
        "silent"
    } else {
        "up"
    }
}

/// The table; with a key a TRUST column is added at the end. Text a board sent (id, host,
/// address) is shown [`printable`].
pub fn table(rows: &[&Board], now: Instant, silent_after: Duration, trust: bool) -> String {
    // ADDRESS as wide as its longest (a scoped IPv6 address is ~30 characters), so rows
    // stay in line.
    let aw = rows
        .iter()
        .map(|b| printable(&b.addr).chars().count())
        .fold(15, usize::max);
    let mut s = format!(
        "{:<16} {:<20} {:<aw$} {:>5} {:>7} {:>5} {:>6} {:>5} {:>6} {:<6}{}\n",
        "ID",
        "HOST",
        "ADDRESS",
        "PORT",
        "UPTIME",
        "LOAD",
        "TEMP",
        "FACTS",
        "SEEN",
        "STATE",
        if trust { " TRUST" } else { "" }
    );
    let shown = |v: Option<f64>, decimals| v.map_or("-".into(), |v| Fixed(v, decimals).to_string());
    for b in rows {
        let seen = now.saturating_duration_since(b.heard).as_secs_f64();
        s += &format!(
            "{:<16} {:<20} {:<aw$} {:>5} {:>7} {:>5} {:>6} {:>5} {:>5}s {:<6}{}\n",
            printable(&b.id),
            printable(&b.host),
            printable(&b.addr),
            b.port,
            human_secs(b.uptime),
            shown(b.load, 2),
            shown(b.temp_c, 1),
            b.facts,
            Fixed(seen, 1),
            status(b, now, silent_after),
            if trust {
                format!(" {}", b.trust.as_str())
            } else {
                String::new()
            }
        );
    }
    s
}

/// The rows as a JSON array, one object per board. Written straight into the String, which
/// grows: every row is whole however long its strings are once escaped.
pub fn to_json(rows: &[&Board], now: Instant, silent_after: Duration) -> String {
    let mut w = String::from("[");
    for (i, b) in rows.iter().enumerate() {
        if i > 0 {
            w.push(',');
        }
        // Writing to a String cannot fail.
        let _ = (|| -> std::fmt::Result {
            use std::fmt::Write as _;
            w.write_str("{\"id\":")?;
            json::write_str(&mut w, b.id.as_bytes())?;
            w.write_str(",\"host\":")?;
            json::write_str(&mut w, b.host.as_bytes())?;
            w.write_str(",\"addr\":")?;
            json::write_str(&mut w, b.addr.as_bytes())?;
            w.write_str(",\"addrs\":[")?;
            for (i, a) in b.addrs.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                json::write_str(&mut w, a.as_bytes())?;
            }
            w.write_char(']')?;
            match b.metrics {
                Some(m) => write!(w, ",\"metrics\":{m}")?,
                None => w.write_str(",\"metrics\":null")?,
            }
            write!(w, ",\"port\":{},\"uptime\":{},\"load\":", b.port, b.uptime)?;
            match b.load {
                Some(l) => write!(w, "{}", Fixed(l, 2))?,
                None => w.write_str("null")?,
            }
            w.write_str(",\"temp_c\":")?;
            json::write_opt_f1(&mut w, b.temp_c.map(|t| t as f32))?;
            write!(w, ",\"facts\":{},\"seq\":{},\"run\":", b.facts, b.seq)?;
            match &b.run {
                Some(r) => json::write_str(&mut w, r.as_bytes())?,
                None => w.write_str("null")?,
            }
            write!(
                w,
                ",\"seen_s\":{},\"state\":\"{}\",\"trust\":\"{}\",\"dup_id\":{}}}",
                Fixed(now.saturating_duration_since(b.heard).as_secs_f64(), 1),
                status(b, now, silent_after),
                b.trust.as_str(),
                b.dup_id
            )
        })();
    }
    w.push(']');
    w
}

/// 16 random hex digits for the probe.
fn nonce() -> Result<String, Fatal> {
    let mut b = [0u8; 8];
    crate::crypto::fill_random(&mut b).map_err(|e| Fatal {
        code: EX_OSERR,
        msg: format!("getrandom: {e}"),
    })?;
    let mut hex = [0u8; 16];
    crate::proto::hex::encode(&b, &mut hex);
    Ok(String::from_utf8_lossy(&hex).into_owned())
}

struct Scanner {
    /// Probes go out of these and answers come back to them; ordinary beacons arrive
    /// on the listening ones (port `port`). Every one counts kernel drops (SO_RXQ_OVFL).
    socks: Vec<Sock>,
    port: u16,
    /// IPv4 probe destinations: see [`probe_targets`].
    targets: Vec<Ipv4Addr>,
    /// IPv6: ff02::1 scoped to each interface with a link-local address.
    targets6: Vec<u32>,
}

struct Sock {
    fd: OwnedFd,
    /// Sends the probe (IPv4 or IPv6), or only listens.
    probe: Option<Family>,
    /// The kernel's running count of datagrams dropped on this socket (SO_RXQ_OVFL).
    dropped: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// With `-i`, the limited broadcast (the socket is bound to that interface). Without, also
/// every up, non-loopback interface's directed broadcast address: that reaches each LAN
/// even where there is no default route for 255.255.255.255 to follow.
fn probe_targets(iface_given: bool) -> Vec<Ipv4Addr> {
    let mut t = vec![Ipv4Addr::BROADCAST];
    if !iface_given {
        let mut addrs = heapless::Vec::new();
        iface::ipv4_addrs(&mut addrs);
        for (name, _) in &addrs {
            let Some(i) = iface::info(name) else { continue };
            if let Some(b) = i.broadcast.filter(|_| i.up && !i.loopback) {
                if !t.contains(&b) {
                    t.push(b);
                }
            }
        }
    }
    t
}

/// The interfaces to probe over IPv6 (their indexes): `-i`'s, else every up,
/// non-loopback interface with a link-local address.
fn probe_targets6(dev: Option<&str>) -> Vec<u32> {
    let mut names: Vec<String> = match dev {
        Some(d) => vec![d.to_string()],
        None => {
            let mut v = heapless::Vec::new();
            iface::ipv6_addrs(&mut v);
            v.iter().map(|(n, _)| n.to_string()).collect()
        }
    };
    names.dedup();
    let mut t = Vec::new();
    for n in names {
        let Some(i) = iface::info(&n).filter(|i| i.up && !i.loopback) else {
            continue;
        };
        if iface::link_local(&n).is_some() && !t.contains(&i.index) {
            t.push(i.index);
        }
    }
    t
}

impl Scanner {
    /// Opens the sockets of both families (a family that cannot open is left out: an
    /// IPv4-only or IPv6-only host still scans). Err only when no probe socket opened.
    fn open(dev: Option<&str>, port: u16) -> Result<Scanner, String> {
        let mut socks = Vec::new();
        let mut last = String::new();
        let mut add = |r: Result<OwnedFd, (&'static str, nix::errno::Errno)>,
                       probe: Option<Family>| match r {
            Ok(fd) => {
                let _ = udp::grow_rcvbuf(fd.as_fd(), SCAN_RCVBUF);
                let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RxqOvfl, &1);
                socks.push(Sock {
                    fd,
                    probe,
                    dropped: 0,
                });
            }
            Err((what, e)) if probe.is_some() => last = format!("scan socket: {what}: {e}"),
            Err(_) => {}
        };
        add(udp::open(dev, 0), Some(Family::V4));
        // Also hear ordinary beacons (boards that rate-limit our probe still show up).
        add(udp::open(dev, port), None);
        let targets6 = probe_targets6(dev);
        if !targets6.is_empty() {
            add(udp::open6_any(dev, 0), Some(Family::V6));
            add(udp::open6_any(dev, port), None);
        }
        if !socks.iter().any(|s| s.probe.is_some()) {
            return Err(last);
        }
        Ok(Scanner {
            socks,
            port,
            targets: probe_targets(dev.is_some()),
            targets6,
        })
    }

    /// Sends one probe to every target; Err (the last error) only when none went out.
    fn probe(&self, nonce: &str) -> Result<(), String> {
        let mut p = [0u8; DATAGRAM_MAX];
        let n = beacon::write_probe(&mut p, nonce.as_bytes());
        let mut sent = false;
        let mut last = String::new();
        for s in &self.socks {
            let to: Vec<SocketAddr> = match s.probe {
                None => continue,
                Some(Family::V4) => self
                    .targets
                    .iter()
                    .map(|&t| SocketAddr::V4(SocketAddrV4::new(t, self.port)))
                    .collect(),
                Some(Family::V6) => self
                    .targets6
                    .iter()
                    .map(|&i| {
                        SocketAddr::V6(SocketAddrV6::new(crate::beacon::ALL_NODES, self.port, 0, i))
                    })
                    .collect(),
            };
            for t in to {
                match udp::send_to(s.fd.as_fd(), &p[..n], t, true) {
                    Ok(_) => sent = true,
                    Err(e) => last = format!("send probe to {t}: {e}"),
                }
            }
        }
        if sent {
            Ok(())
        } else {
            Err(last)
        }
    }

    /// Collects datagrams until `until`, probing again at each of `reprobe` (the
    /// instants still to come).
    fn collect(
        &mut self,
        until: Instant,
        boards: &mut Boards,
        nonce: &str,
        reprobe: &mut Vec<Instant>,
    ) {
        let mut buf = [0u8; DATAGRAM_MAX + 1];
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            if reprobe.first().is_some_and(|&t| t <= now) {
                reprobe.remove(0);
                let _ = self.probe(nonce);
            }
            let next = reprobe.first().map_or(until, |&t| t.min(until));
            let ms = next
                .saturating_duration_since(now)
                .as_millis()
                .clamp(1, 60_000) as i32;
            let mut fds: Vec<PollFd<'_>> = self
                .socks
                .iter()
                .map(|s| PollFd::new(s.fd.as_fd(), PollFlags::POLLIN))
                .collect();
            if poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            )
            .is_err()
            {
                continue;
            }
            drop(fds);
            // A bounded number per socket, then back to the clock: a LAN flooded faster
            // than the datagrams are checked must not keep the scan past its window.
            for s in self.socks.iter_mut() {
                for _ in 0..BEACON_RECV_PER_TURN {
                    let Ok(Some((n, from, dropped))) = udp::recv_counting(s.fd.as_fd(), &mut buf)
                    else {
                        break;
                    };
                    if let Some(d) = dropped {
                        s.dropped = s.dropped.max(d);
                    }
                    if n > DATAGRAM_MAX {
                        continue;
                    }
                    boards.ingest(&buf[..n], from, Instant::now());
                }
            }
        }
    }

    /// Answers the kernel dropped for want of buffer room, over all sockets.
    fn dropped(&self) -> u64 {
        self.socks.iter().map(|s| u64::from(s.dropped)).sum()
    }
}

/// When to probe again within a window of `wait` after `start`: [`SCAN_PROBES`] probes
/// in all, spread over the first half, so the answers to the last still arrive in time.
fn reprobe_times(start: Instant, wait: Duration) -> Vec<Instant> {
    (1..SCAN_PROBES)
        .map(|k| start + wait / 2 * k / SCAN_PROBES.max(1))
        .collect()
}

/// Prints one `warning:` line per newly found cloned id, and one when boards past
/// [`SCAN_BOARDS_MAX`] were ignored.
fn warn_clones(boards: &mut Boards) {
    for id in boards.mark_clones() {
        eprintln!("{}", clone_warning(&id));
    }
    if let Some(w) = boards.ignored_warning() {
        eprintln!("{w}");
    }
}

/// Runs `tether scan` (`args` checked by [`ScanArgs::validate`], which gave `wait`);
/// returns the exit code.
pub fn run(args: ScanArgs, wait: Duration) -> Result<u8, Fatal> {
    let key = match &args.fleet_key {
        Some(p) => Some(crate::beacon::load_key(p).map_err(|msg| Fatal {
            code: EX_CONFIG,
            msg,
        })?),
        None => None,
    };
    if let Some(i) = &args.iface {
        if iface::info(i).is_none() {
            return Err(Fatal {
                code: EX_UNAVAILABLE,
                msg: format!("-i {i}: no such interface"),
            });
        }
    }
    if let Some(p) = &args.prometheus_sd {
        check_sd_writable(p)?;
    }
    let dev = args.iface.as_deref();
    let mut sc = Scanner::open(dev, args.port).map_err(|msg| Fatal {
        code: EX_UNAVAILABLE,
        msg,
    })?;
    let checked = key.is_some();
    let nonce = nonce()?;
    let mut boards = Boards::new(key, nonce.clone());
    let silent_after = wait.max(Duration::from_secs(15));
    if let Err(e) = sc.probe(&nonce) {
        eprintln!("warning: {e}; listening for beacons only");
    }
    let mut reprobe = reprobe_times(Instant::now(), wait);
    sc.collect(Instant::now() + wait, &mut boards, &nonce, &mut reprobe);
    warn_clones(&mut boards);
    let mut sd_last = None;
    if let Some(p) = &args.prometheus_sd {
        let text = prometheus_sd(boards.shown(false), Instant::now(), silent_after);
        update_sd(p, text, &mut sd_last).map_err(|msg| Fatal {
            code: EX_CANTCREAT,
            msg,
        })?;
    }
    if args.watch {
        let mut out = std::io::stdout();
        loop {
            let now = Instant::now();
            boards.forget(now);
            if let Some(p) = &args.prometheus_sd {
                let text = prometheus_sd(boards.shown(false), now, silent_after);
                if let Err(e) = update_sd(p, text, &mut sd_last) {
                    eprintln!("warning: {e}; retrying");
                }
            }
            let rows = boards.shown(args.all);
            let shown = if args.json {
                to_json(&rows, now, silent_after) + "\n"
            } else {
                table(&rows, now, silent_after, checked) + "\n"
            };
            if !stdout_written(out.write_all(shown.as_bytes()).and_then(|_| out.flush()))? {
                return Ok(0);
            }
            let _ = sc.probe(&nonce);
            let mut reprobe = reprobe_times(Instant::now(), wait);
            sc.collect(Instant::now() + wait, &mut boards, &nonce, &mut reprobe);
            warn_clones(&mut boards);
        }
    }
    if sc.dropped() > 0 {
        eprintln!(
            "warning: the kernel dropped {} answers (receive buffer full); some boards may be missing",
            sc.dropped()
        );
    }
    let now = Instant::now();
    let rows = boards.shown(args.all);
    if args.json {
        to_stdout(&(to_json(&rows, now, silent_after) + "\n"))?;
    } else if !rows.is_empty() {
        to_stdout(&table(&rows, now, silent_after, checked))?;
    }
    if rows.is_empty() && args.prometheus_sd.is_some() {
        // The target file is the product: an empty fleet is a valid answer, not a failure.
        eprintln!(
            "warning: no boards answered within {}s; the target file lists none",
            Fixed(args.timeout, 1)
        );
        return Ok(0);
    }
    if rows.is_empty() {
        let within = format!(
            "within {}s{}",
            Fixed(args.timeout, 1),
            dev.map(|d| format!(" on {d}")).unwrap_or_default()
        );
        match boards.hidden(args.all) {
            Some(h) => eprintln!("error: no signed board answered {within}; {h}"),
            None => eprintln!("error: no boards answered {within}"),
        }
        return Ok(EX_UNAVAILABLE);
    }
    if let Some(h) = boards.hidden(args.all) {
        eprintln!("note: {h}");
    }
    Ok(0)
}

/// `--prometheus-sd`: Prometheus file_sd JSON listing every board of `boards` that is up
/// (not gone silent, no goodbye) and announces a metrics port, sorted by id (then address):
/// `[{"targets":["ADDR:PORT"],"labels":{"tether_id":"..","tether_host":".."}},...]`.
/// The caller picks the boards (all of them; with a fleet key, the signed ones).
pub fn prometheus_sd<'b>(
    boards: impl IntoIterator<Item = &'b Board>,
    now: Instant,
    silent_after: Duration,
) -> String {
    let up = sorted(
        boards
            .into_iter()
            .filter(|b| b.metrics.is_some() && status(b, now, silent_after) == "up")
            .collect(),
        |a, b| a.id.cmp(&b.id).then(a.addr.cmp(&b.addr)),
    );
    let mut w = String::from("[");
    for b in up {
        let Some(port) = b.metrics else { continue };
        if w.len() > 1 {
            w.push(',');
        }
        // Into the String as in `to_json`: it grows, so no board is left out.
        let _ = (|| -> std::fmt::Result {
            use std::fmt::Write as _;
            w.write_str("{\"targets\":[")?;
            json::write_str(&mut w, host_port(&b.addr, port).as_bytes())?;
            w.write_str("],\"labels\":{\"tether_id\":")?;
            json::write_str(&mut w, b.id.as_bytes())?;
            w.write_str(",\"tether_host\":")?;
            json::write_str(&mut w, b.host.as_bytes())?;
            w.write_str("}}")
        })();
    }
    w.push(']');
    w
}

/// Replaces `path` atomically: a temp file in the same directory, written and synced,
/// mode 0644 whatever the umask, then renamed over `path`.
pub fn write_atomic(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let (tmp, mut f) = create_beside(path)?;
    let res = (|| {
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The temporary file [`write_atomic`] writes before it renames it to `path`: created
/// (mode 0644) in `path`'s directory.
fn create_beside(path: &std::path::Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a directory",
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(0o644)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, f))
}

/// `--prometheus-sd`: whether the file can be written, found out before any probe is sent
/// (by making the temporary file and removing it: the file Prometheus reads is untouched).
fn check_sd_writable(path: &std::path::Path) -> Result<(), Fatal> {
    let (tmp, _) = create_beside(path).map_err(|e| Fatal {
        code: EX_CANTCREAT,
        msg: sd_error(path, e),
    })?;
    let _ = std::fs::remove_file(tmp);
    Ok(())
}

/// What a failed write of the target file says (one wording for the check and the writes).
fn sd_error(path: &std::path::Path, e: std::io::Error) -> String {
    format!("--prometheus-sd {}: {e}", path.display())
}

fn update_sd(
    path: &std::path::Path,
    text: String,
    last: &mut Option<String>,
) -> Result<(), String> {
    if last.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    write_atomic(path, &text).map_err(|e| sd_error(path, e))?;
    *last = Some(text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn prometheus_sd_lists_up_boards_with_metrics_by_id() {
        let now = Instant::now();
        // Boards as `decode` makes them from what agents send.
        let board = |id: &str, metrics: Option<u16>, bye: bool, age: u64| {
            let m = metrics
                .map(|p| format!(",\"metrics\":{p}"))
                .unwrap_or_default();
            let d = format!(
                "{{\"tether\":1,\"id\":\"{id}\",\"host\":\"h-{id}\\\"\",\"addr\":\"10.0.0.1\",\"port\":4545{m},\"bye\":{bye}}}"
            );
            let from = SocketAddr::from(([10, 0, 0, 1], 4546));
            decode(d.as_bytes(), from, now - Duration::from_secs(age)).unwrap()
        };
        let mut m = BTreeMap::new();
        for b in [
            board("bb", Some(9545), false, 0),
            board("aa", Some(9100), false, 1),
            board("cc", None, false, 0),
            board("dd", Some(9545), true, 0),
            board("ee", Some(9545), false, 60),
        ] {
            m.insert(b.id.clone(), b);
        }
        let sd = prometheus_sd(m.values().rev(), now, Duration::from_secs(15));
        assert_eq!(
            sd,
            "[{\"targets\":[\"10.0.0.1:9100\"],\"labels\":{\"tether_id\":\"aa\",\"tether_host\":\"h-aa\\\"\"}},\
             {\"targets\":[\"10.0.0.1:9545\"],\"labels\":{\"tether_id\":\"bb\",\"tether_host\":\"h-bb\\\"\"}}]"
        );
        assert_eq!(prometheus_sd([], now, Duration::from_secs(15)), "[]");
    }

    #[test]
    fn atomic_write_is_0644_and_leaves_no_temp_file() {
        let d = std::env::temp_dir().join(format!("tether-sd-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("tether.json");
        write_atomic(&p, "[]").unwrap();
        write_atomic(&p, "[1]").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert!(write_atomic(&d.join("no/such/dir.json"), "[]").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn decodes_what_the_agent_encodes() {
        let f = beacon::Fields {
            id: "00aa",
            host: "pi",
            addr: None,
            iface: "wlan0",
            port: 4545,
            seq: 3,
            run: Some("0123456789abcdef"),
            uptime: 90000,
            load: 1.5,
            mem_avail_kb: 1,
            temp_c: None,
            metrics: Some(9545),
            bye: true,
            nonce: None,
        };
        let mut out = [0u8; 512];
        let facts = [(b"a".as_slice(), b"1".as_slice()), (b"b", b"2")];
        let n = beacon::encode(&mut out, 512, &f, facts.iter().copied()).unwrap();
        let from = SocketAddr::from(([10, 0, 0, 9], 4546));
        let b = decode(&out[..n], from, Instant::now()).unwrap();
        assert_eq!(
            (b.id.as_str(), b.host.as_str(), b.addr.as_str()),
            ("00aa", "pi", "10.0.0.9")
        );
        assert_eq!(
            (b.port, b.uptime, b.facts, b.seq, b.bye),
            (4545, 90000, 2, 3, true)
        );
        assert_eq!(b.metrics, Some(9545));
        assert!(decode(b"{\"tether\":2,\"id\":\"x\"}", from, Instant::now()).is_none());
        assert!(decode(b"garbage", from, Instant::now()).is_none());
        assert_eq!(human_secs(90000), "1d01h");
    }

    fn datagram(id: &str, run: &str, addr: [u8; 4], seq: u64, key: Option<&FleetKey>) -> Vec<u8> {
        datagram_as(id, run, addr, seq, key, false, None)
    }

    /// A datagram as an agent sends it: a goodbye or not, answering a probe's nonce or not.
    fn datagram_as(
        id: &str,
        run: &str,
        addr: impl Into<IpAddr>,
        seq: u64,
        key: Option<&FleetKey>,
        bye: bool,
        nonce: Option<&str>,
    ) -> Vec<u8> {
        let f = beacon::Fields {
            id,
            host: "pi",
            addr: Some(addr.into()),
            iface: "eth0",
            port: 4545,
            seq,
            run: Some(run),
            uptime: 1,
            load: 0.0,
            mem_avail_kb: 1,
            temp_c: None,
            metrics: None,
            bye,
            nonce: nonce.map(str::as_bytes),
        };
        let mut out = [0u8; 512];
        let n = beacon::encode_signed(&mut out, 512, &f, std::iter::empty(), key).unwrap();
        out[..n].to_vec()
    }

    fn from(a: [u8; 4]) -> SocketAddr {
        SocketAddr::from((a, 4546))
    }

    /// The fleet's key in these tests (a forger's is made apart, where one is needed).
    fn fleet_key() -> FleetKey {
        FleetKey::parse(b"the fleet key, long enough").unwrap()
    }

    #[test]
    fn rows_are_per_board_clones_are_flagged_once() {
        let now = Instant::now();
        let mut bs = Boards::new(None, "n".into());
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        bs.ingest(&datagram("id1", "run-a", a, 1, None), from(a), now);
        bs.ingest(&datagram("id1", "run-a", a, 2, None), from(a), now);
        // The same run from a second address: one multi-homed board.
        bs.ingest(&datagram("id1", "run-a", b, 3, None), from(b), now);
        assert_eq!(bs.shown(false).len(), 1);
        assert!(bs.mark_clones().is_empty());
        // Another run at another address: a clone; both rows, warned once.
        let c = [10, 0, 0, 3];
        bs.ingest(&datagram("id1", "run-b", c, 1, None), from(c), now);
        assert_eq!(bs.mark_clones(), vec!["id1".to_string()]);
        assert!(bs.mark_clones().is_empty(), "one warning per id");
        let rows = bs.shown(false);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.dup_id && r.trust == Trust::Unchecked));
        let j = to_json(&rows, now, Duration::from_secs(15));
        assert!(j.contains("\"trust\":\"unchecked\",\"dup_id\":true"), "{j}");
        // A restart at the same address replaces the old run's row.
        let mut bs = Boards::new(None, "n".into());
        bs.ingest(&datagram("id2", "old", a, 9, None), from(a), now);
        bs.ingest(&datagram("id2", "new", a, 0, None), from(a), now);
        assert!(bs.mark_clones().is_empty());
        assert_eq!(bs.shown(false).len(), 1);
    }

    /// A datagram of `head`, `fill` repeated to 512 bytes, `tail` (as a forger sends it).
    fn filled(head: &[u8], fill: u8, tail: &[u8]) -> Vec<u8> {
        let mut d = head.to_vec();
        d.resize(512 - tail.len(), fill);
        d.extend_from_slice(tail);
        d
    }

    #[test]
    fn scan_json_is_valid_however_much_the_strings_escape() {
        let now = Instant::now();
        let (head, tail) = (
            b"{\"tether\":1,\"id\":\"f0f0\",\"host\":\"".as_slice(),
            b"\",\"addr\":\"10.9.0.66\",\"port\":4545,\"seq\":1,\"run\":\"00aa\"}".as_slice(),
        );
        let n = 512 - head.len() - tail.len();
        // Raw control bytes (6 bytes each once escaped) and bytes that are not UTF-8.
        for (fill, host) in [(1u8, "\u{1}"), (0xff, "\u{fffd}")] {
            let mut b = decode(&filled(head, fill, tail), from([10, 9, 0, 66]), now).unwrap();
            assert_eq!(b.host, host.repeat(n));
            let rows = [&b];
            let v: serde_json::Value =
                serde_json::from_str(&to_json(&rows, now, Duration::from_secs(15))).unwrap();
            assert_eq!(v[0]["host"], host.repeat(n));
            assert_eq!(
                (v[0]["id"].as_str(), v[0]["port"].as_u64()),
                (Some("f0f0"), Some(4545))
            );
            // Far longer than any datagram: still whole.
            b.id = "\u{7f}\u{1b}".repeat(2000);
            b.run = Some("\u{fffd}\"\\".repeat(2000));
            let rows = [&b, &b];
            let v: serde_json::Value =
                serde_json::from_str(&to_json(&rows, now, Duration::from_secs(15))).unwrap();
            assert_eq!(v[1]["id"], b.id.as_str());
            assert_eq!(v[1]["run"], b.run.as_deref().unwrap());
            assert_eq!(v[1]["host"], host.repeat(n));
            // The file_sd file too: such a board is listed, not left out.
            b.metrics = Some(9100);
            let sd = prometheus_sd([&b], now, Duration::from_secs(15));
            let v: serde_json::Value = serde_json::from_str(&sd).unwrap();
            assert_eq!(v[0]["labels"]["tether_id"], b.id.as_str());
            assert_eq!(v[0]["labels"]["tether_host"], host.repeat(n));
        }
    }

    #[test]
    fn only_whole_beacons_with_a_port_are_boards() {
        let (now, a) = (Instant::now(), from([10, 0, 0, 1]));
        let d = datagram(
            "c0ffee00c0ffee00",
            "1111111111111111",
            [10, 0, 0, 1],
            7,
            None,
        );
        assert_eq!(decode(&d, a, now).unwrap().port, 4545);
        let mut spaced = d.clone();
        spaced.extend_from_slice(b" \r\n");
        assert!(
            decode(&spaced, a, now).is_some(),
            "trailing whitespace is allowed"
        );
        // A real beacon cut anywhere (at 100 bytes the reviewer's case) is not a board.
        for k in 0..d.len() {
            assert!(decode(&d[..k], a, now).is_none(), "{k}");
        }
        for bad in [
            b"{\"tether\":1,\"id\":\"badfacts00000000\",\"host\":\"brokenfacts\",\"facts\":{{{{"
                .as_slice(),
            b"{\"tether\":1,\"id\":\"garbageafterid00\"XXXXXXXXXXXXXXX",
            b"{\"tether\":1,\"id\":\"x\",\"port\":4545,}",
            b"{\"tether\":1,\"id\":\"x\",\"port\":4545,\"a\":1 junk 4545}",
            b"{\"tether\":1,\"id\":\"x\",\"port\":4545}}",
            b"{\"tether\":1,\"id\":\"x\",\"port\":4545} x",
            b"{\"tether\":1,\"id\":\"x\",\"host\":\"no port\"}",
            b"{\"tether\":1,\"id\":\"x\",\"port\":0}",
            b"{\"tether\":1,\"id\":\"x\",\"port\":65536}",
        ] {
            let shown = String::from_utf8_lossy(bad);
            assert!(decode(bad, a, now).is_none(), "{shown}");
        }
        let mut bs = Boards::new(None, "n".into());
        bs.ingest(&d[..100], a, now);
        assert!(bs.shown(true).is_empty());
    }

    #[test]
    fn the_table_shows_control_characters_as_question_marks() {
        let (now, a) = (Instant::now(), from([10, 9, 0, 66]));
        let sent = |id: &str, host: &[u8], addr: &str| {
            let mut d = format!("{{\"tether\":1,\"id\":\"{id}\",\"host\":\"").into_bytes();
            d.extend_from_slice(host);
            d.extend_from_slice(format!("\",\"addr\":\"{addr}\",\"port\":4545}}").as_bytes());
            decode(&d, a, now).unwrap()
        };
        let esc = sent("f3", b"x\x1b[2J\x1b]0;pwned\x07", "10.9.0.66");
        let row = sent(
            "f2",
            b"evil\nf9dc1469d10fd16e pi-kitchen 192.168.1.23 4545",
            "1\\u009b0",
        );
        let kind = sent(
            "a\\u007fb\\u0085",
            "pi-k\u{fc}che-\u{1f600}".as_bytes(),
            "10.9.0.67",
        );
        let t = table(&[&esc, &row, &kind], now, Duration::from_secs(15), false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "a header and one line per board: {t}");
        let controls = t.chars().filter(|c| c.is_control());
        assert!(controls.eq(['\n'; 4]), "only the line ends: {t:?}");
        assert!(lines[1].starts_with("f3               x?[2J?]0;pwned?      10.9.0.66 "));
        assert!(lines[2].starts_with("f2               evil?f9dc1469d10fd16e pi-kitchen"));
        // An `addr` that is not an IP address is not shown: the source address is.
        assert!(lines[2].contains(" 10.9.0.66 "), "{t}");
        assert!(
            lines[3].starts_with("a?b?             pi-k\u{fc}che-\u{1f600} "),
            "{t}"
        );
        assert_eq!(
            clone_warning("a\u{1b}]0;x\u{7}").split_whitespace().nth(2),
            Some("a?]0;x?")
        );
    }

    #[test]
    fn with_a_key_only_signed_rows_show_and_forgers_stay_apart() {
        let now = Instant::now();
        let key = fleet_key();
        let bad = FleetKey::parse(b"a forger's guess at the key").unwrap();
        let mut bs = Boards::new(Some(key.clone()), "n".into());
        let (a, f) = ([10, 0, 0, 1], [10, 0, 0, 66]);
        let genuine = datagram("id1", "r", a, 1, Some(&key));
        bs.ingest(&genuine, from(a), now);
        // Forged (wrong key) and replayed (re-sent from elsewhere, or the same seq again).
        bs.ingest(&datagram("id1", "r", a, 2, Some(&bad)), from(f), now);
        bs.ingest(&genuine, from(f), now);
        bs.ingest(&genuine, from(a), now);
        bs.ingest(&datagram("id9", "q", f, 1, None), from(f), now);
        assert!(bs.mark_clones().is_empty());
        let shown = bs.shown(false);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].trust, Trust::Signed);
        let all: Vec<&str> = bs.shown(true).iter().map(|r| r.trust.as_str()).collect();
        // One replayed row per source: the re-sent copy elsewhere, the repeat at home.
        assert_eq!(all.len(), 5, "{all:?}");
        for t in ["signed", "forged", "replayed", "unsigned"] {
            assert!(all.contains(&t), "{all:?}");
        }
        assert_eq!(
            bs.hidden(false).as_deref(),
            Some("hidden: 1 unsigned, 1 forged, 2 replayed (--all shows them)")
        );
        assert_eq!(bs.hidden(true), None);
        let t = table(&bs.shown(true), now, Duration::from_secs(15), true);
        assert!(t.lines().next().unwrap().ends_with(" TRUST"), "{t}");
    }

    #[test]
    fn unbelievable_readings_are_unknown_and_the_json_stays_valid() {
        let now = Instant::now();
        let beacon = |load: &str, temp: &str| {
            let d = format!(
                "{{\"tether\":1,\"id\":\"x\",\"port\":4545,\"load\":{load},\"temp_c\":{temp}}}"
            );
            decode(d.as_bytes(), from([10, 9, 0, 1]), now).unwrap()
        };
        for (load, temp) in [
            ("1e999", "-1e999"),
            ("1e300", "1e300"),
            ("-1", "-300"),
            ("NaN", "inf"),
        ] {
            let b = beacon(load, temp);
            assert_eq!((b.load, b.temp_c), (None, None), "{load} {temp}");
            let j = to_json(&[&b], now, Duration::from_secs(15));
            assert!(
                j.contains("\"load\":null,") && j.contains("\"temp_c\":null,"),
                "{j}"
            );
            let t = table(&[&b], now, Duration::from_secs(15), false);
            assert!(t.lines().nth(1).is_some_and(|l| l.len() < 120), "{t}");
        }
        let b = beacon("0.25", "48.3");
        assert_eq!((b.load, b.temp_c), (Some(0.25), Some(48.3)));
    }

    #[test]
    fn a_flood_of_made_up_ids_fills_a_bounded_table_and_is_said_once() {
        let now = Instant::now();
        let mut bs = Boards::new(None, "n".into());
        for i in 0..SCAN_BOARDS_MAX + 10 {
            bs.ingest(
                &datagram(&format!("{i:016x}"), "r", [10, 9, 0, 1], 1, None),
                from([10, 9, 0, 1]),
                now,
            );
        }
        assert_eq!(bs.shown(true).len(), SCAN_BOARDS_MAX);
        let w = bs.ignored_warning().unwrap();
        assert!(w.contains(" 10 datagrams"), "{w}");
        assert_eq!(bs.ignored_warning(), None, "said once");
        // --watch forgets the silent ones, and then there is room again.
        bs.forget(now + Duration::from_secs(SCAN_FORGET_SECS));
        assert!(bs.shown(true).is_empty());
        bs.ingest(
            &datagram("new", "r", [10, 9, 0, 1], 1, None),
            from([10, 9, 0, 1]),
            now,
        );
        assert_eq!(bs.shown(true).len(), 1);
    }

    /// With a key an unsigned sender cannot make a signed board a clone; two signed boards
    /// of one id at two addresses still are, and so are two unsigned ones (`--all`).
    #[test]
    fn with_a_key_only_rows_of_one_trust_class_are_clones() {
        let now = Instant::now();
        let key = fleet_key();
        let mut bs = Boards::new(Some(key.clone()), "n".into());
        let (a, b, c, d) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 0, 4]);
        bs.ingest(&datagram("id1", "r1", a, 1, Some(&key)), from(a), now);
        bs.ingest(&datagram("id1", "fake", b, 1, None), from(b), now);
        assert!(bs.mark_clones().is_empty());
        assert!(bs.shown(true).iter().all(|r| !r.dup_id));
        bs.ingest(&datagram("id1", "r2", c, 1, Some(&key)), from(c), now);
        bs.ingest(&datagram("id2", "u1", a, 1, None), from(a), now);
        bs.ingest(&datagram("id2", "u2", d, 1, None), from(d), now);
        assert_eq!(bs.mark_clones(), vec!["id1".to_string(), "id2".to_string()]);
        let dup: Vec<(&str, &str, bool)> = bs
            .shown(true)
            .iter()
            .map(|r| (r.id.as_str(), r.trust.as_str(), r.dup_id))
            .collect();
        assert!(dup.contains(&("id1", "unsigned", false)), "{dup:?}");
        assert_eq!(dup.iter().filter(|x| x.2).count(), 4, "{dup:?}");
    }

    /// A full table of rows the key rejects gives way to signed boards.
    #[test]
    fn forged_rows_never_keep_a_signed_board_out() {
        let now = Instant::now();
        let key = fleet_key();
        let bad = FleetKey::parse(b"a forger's guess at the key").unwrap();
        let mut bs = Boards::new(Some(key.clone()), "n".into());
        let f = [10, 9, 0, 66];
        for i in 0..SCAN_BOARDS_MAX + 5 {
            let id = format!("{i:016x}");
            bs.ingest(&datagram(&id, "r", f, 1, Some(&bad)), from(f), now);
        }
        let a = [10, 9, 0, 1];
        bs.ingest(&datagram("mine", "r", a, 1, Some(&key)), from(a), now);
        let shown = bs.shown(false);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].id, "mine");
        assert_eq!(bs.shown(true).len(), SCAN_BOARDS_MAX);
        // Unsigned rows cannot push signed ones out, nor forged ones each other.
        let mut bs = Boards::new(Some(key.clone()), "n".into());
        for i in 0..SCAN_BOARDS_MAX {
            let id = format!("{i:016x}");
            bs.ingest(&datagram(&id, "r", a, 1, Some(&key)), from(a), now);
        }
        bs.ingest(&datagram("u", "r", f, 1, None), from(f), now);
        assert_eq!(bs.shown(false).len(), SCAN_BOARDS_MAX);
        assert!(bs.ignored_warning().is_some());
    }

    /// An earlier run's datagram re-sent from the board's own address (its goodbye, or a
    /// beacon once the current run has answered this scan's probe) is `replayed` and leaves
    /// the current row alone; a real restart (goodbye, then the new run) replaces it.
    #[test]
    fn an_earlier_runs_datagram_does_not_replace_the_current_run() {
        let now = Instant::now();
        let key = fleet_key();
        let k = Some(&key);
        let a = [10, 0, 0, 1];
        let mut bs = Boards::new(Some(key.clone()), "n1".into());
        bs.ingest(&datagram("id", "new", a, 5, k), from(a), now);
        bs.ingest(
            &datagram_as("id", "old", a, 99, k, true, None),
            from(a),
            now,
        );
        let row = |bs: &Boards| {
            let v = bs.shown(false);
            assert_eq!(v.len(), 1, "one signed row");
            (v[0].run.clone().unwrap(), v[0].bye, v[0].seq)
        };
        assert_eq!(row(&bs), ("new".into(), false, 5));
        assert!(bs.hidden(false).unwrap().contains("1 replayed"));
        // Once the current run answered this scan's probe, an older run's beacon is stale.
        bs.ingest(
            &datagram_as("id", "new", a, 6, k, false, Some("n1")),
            from(a),
            now,
        );
        bs.ingest(&datagram("id", "old", a, 98, k), from(a), now);
        assert_eq!(row(&bs), ("new".into(), false, 6));
        // A seq older than the newest heard from that run is a copy too.
        bs.ingest(&datagram("id", "new", a, 3, k), from(a), now);
        assert_eq!(row(&bs), ("new".into(), false, 6));
        // A restart: the current run says goodbye, then the next run begins.
        bs.ingest(&datagram_as("id", "new", a, 7, k, true, None), from(a), now);
        assert_eq!(row(&bs), ("new".into(), true, 7));
        bs.ingest(&datagram("id", "next", a, 0, k), from(a), now);
        assert_eq!(row(&bs), ("next".into(), false, 0));
        // A crash (no goodbye): the new run's beacon replaces a run that has not answered
        // this scan's probe, and its answer replaces one that has.
        let mut bs = Boards::new(Some(key.clone()), "n2".into());
        bs.ingest(&datagram("id", "r1", a, 4, k), from(a), now);
        bs.ingest(&datagram("id", "r2", a, 0, k), from(a), now);
        assert_eq!(row(&bs).0, "r2");
        bs.ingest(
            &datagram_as("id", "r2", a, 1, k, false, Some("n2")),
            from(a),
            now,
        );
        bs.ingest(&datagram("id", "r3", a, 0, k), from(a), now);
        assert_eq!(row(&bs).0, "r2", "held back until it answers a probe");
        bs.ingest(
            &datagram_as("id", "r3", a, 1, k, false, Some("n2")),
            from(a),
            now,
        );
        assert_eq!(row(&bs).0, "r3");
        assert_eq!(
            bs.hidden(false),
            None,
            "what was held back is not left as replayed"
        );
    }

    #[test]
    fn an_unusable_addr_leaves_the_source_and_an_id_is_a_string() {
        let now = Instant::now();
        let src = from([10, 9, 0, 7]);
        let with = |addr: &str| {
            let d = format!("{{\"tether\":1,\"id\":\"x\",\"port\":4545,\"addr\":\"{addr}\"}}");
            decode(d.as_bytes(), src, now).unwrap().addr
        };
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fe80::1",
        ] {
            assert_eq!(with(bad), "10.9.0.7", "{bad}");
        }
        assert_eq!(with("10.9.0.8"), "10.9.0.8");
        assert!(decode(b"{\"tether\":1,\"id\":12345,\"port\":4545}", src, now).is_none());
    }

    #[test]
    fn a_long_address_widens_its_column_and_rows_stay_in_line() {
        let now = Instant::now();
        let mut b = decode(
            b"{\"tether\":1,\"id\":\"x\",\"port\":4545}",
            from([10, 9, 0, 7]),
            now,
        )
        .unwrap();
        b.addr = "fe80::a8c1:abff:fe12:3456%vx-b".into();
        let short = decode(
            b"{\"tether\":1,\"id\":\"y\",\"port\":4545}",
            from([10, 9, 0, 8]),
            now,
        )
        .unwrap();
        let t = table(&[&b, &short], now, Duration::from_secs(15), false);
        let at: Vec<usize> = t.lines().map(|l| l.find(" 4545 ").unwrap_or(0)).collect();
        let head = t.lines().next().unwrap().find(" PORT ").unwrap();
        assert!(at.iter().skip(1).all(|&p| p == head), "{t}");
    }

    /// A board heard over IPv4 and IPv6 is one board at both: a restart first heard over
    /// the other family replaces it (no clone), and an earlier run's goodbye re-sent from
    /// the address of the other family is `replayed`.
    #[test]
    fn a_board_heard_at_two_addresses_restarts_as_one_board() {
        let now = Instant::now();
        let key = fleet_key();
        let k = Some(&key);
        let v4 = [10, 0, 0, 1];
        let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
        let from6 = SocketAddr::V6(SocketAddrV6::new(ll, 4546, 0, 0));
        let mut bs = Boards::new(Some(key.clone()), "n".into());
        let hear = |bs: &mut Boards, run: &str, seq: u64, v6: bool, bye: bool, nonce| match v6 {
            false => bs.ingest(
                &datagram_as("id", run, v4, seq, k, bye, nonce),
                from(v4),
                now,
            ),
            true => bs.ingest(&datagram_as("id", run, ll, seq, k, bye, nonce), from6, now),
        };
        hear(&mut bs, "b", 1, false, false, Some("n"));
        hear(&mut bs, "b", 1, true, false, Some("n"));
        assert_eq!(bs.shown(false).len(), 1, "one board, two addresses");
        // An old run's goodbye over IPv6: replayed, the board stays up.
        hear(&mut bs, "a", 50, true, true, None);
        let rows = bs.shown(false);
        assert_eq!(
            (rows.len(), rows[0].run.as_deref(), rows[0].bye),
            (1, Some("b"), false)
        );
        // A restart after a crash, heard first over IPv6 (answering the probe).
        hear(&mut bs, "c", 0, true, false, Some("n"));
        assert!(bs.mark_clones().is_empty(), "a restart is not a clone");
        let rows = bs.shown(false);
        assert_eq!((rows.len(), rows[0].run.as_deref()), (1, Some("c")));
        hear(&mut bs, "c", 0, false, false, Some("n"));
        assert!(bs.mark_clones().is_empty());
        assert_eq!(bs.shown(false).len(), 1);
    }

    /// `--watch` keeps one nonce: a probe answer of a run that has since restarted, re-sent
    /// later in the same watch, is a copy (the seq memory outlives the replaced run's row).
    #[test]
    fn in_a_watch_an_earlier_runs_answer_stays_a_copy_after_a_restart() {
        let now = Instant::now();
        let key = fleet_key();
        let k = Some(&key);
        let a = [10, 0, 0, 1];
        let mut bs = Boards::new(Some(key.clone()), "w".into());
        let captured = datagram_as("id", "b", a, 5, k, false, Some("w"));
        bs.ingest(&captured, from(a), now);
        bs.ingest(&datagram_as("id", "b", a, 6, k, true, None), from(a), now);
        bs.ingest(
            &datagram_as("id", "c", a, 0, k, false, Some("w")),
            from(a),
            now,
        );
        bs.forget(now + Duration::from_secs(2));
        bs.ingest(&captured, from(a), now + Duration::from_secs(3));
        let rows = bs.shown(false);
        assert_eq!((rows.len(), rows[0].run.as_deref()), (1, Some("c")));
        assert!(bs.hidden(false).unwrap().contains("1 replayed"));
        // Silent for SCAN_FORGET_SECS, a run is forgotten with its row.
        bs.forget(now + Duration::from_secs(SCAN_FORGET_SECS + 10));
        assert!(bs.shown(true).is_empty() && bs.seqs.is_empty());
    }

    /// A run heard only after another run of its id went quiet, at an address the old one
    /// was never heard at (a restart onto another link or family), is not a clone; heard
    /// while the old run still is, it is.
    #[test]
    fn a_restart_at_a_new_address_is_not_a_clone_two_live_runs_are() {
        let t = Instant::now();
        let (a, b) = ([10, 0, 0, 1], [10, 0, 1, 1]);
        let mut bs = Boards::new(None, "n".into());
        bs.ingest(&datagram("id", "old", a, 1, None), from(a), t);
        bs.ingest(
            &datagram("id", "old", a, 2, None),
            from(a),
            t + Duration::from_secs(1),
        );
        bs.ingest(
            &datagram("id", "new", b, 0, None),
            from(b),
            t + Duration::from_secs(2),
        );
        assert!(bs.mark_clones().is_empty(), "one run after the other");
        assert!(bs.shown(true).iter().all(|r| !r.dup_id));
        bs.ingest(
            &datagram("id", "old", a, 3, None),
            from(a),
            t + Duration::from_secs(3),
        );
        assert_eq!(bs.mark_clones(), vec!["id".to_string()], "both alive");
    }
}
