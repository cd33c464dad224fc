//! The board table of `tether scan`, sans I/O: [`decode`] reads one datagram into a
//! [`Board`], [`Boards::ingest`] classifies it (with `--fleet-key`: `proto::beacon::verify`
//! plus the seq and run memory kept here) and files it under its row, one row per board
//! (its id plus its `run`: two clones sharing a machine-id are two rows, a multi-homed or
//! dual-stack board is one). The clock is an argument; nothing here opens a socket or
//! prints. Fed untrusted LAN datagrams: bounded ([`SCAN_BOARDS_MAX`] rows) and fuzzed
//! (`fuzz/fuzz_targets/scan.rs`).

use crate::limits::{
    SCAN_ADDRS_MAX, SCAN_ADDR_STALE_SECS, SCAN_BOARDS_MAX, SCAN_FORGET_SECS, SCAN_LOAD_MAX,
    SCAN_RUNS_PER_ID, SCAN_SEQS_MAX, TEMP_C_RANGE,
};
use crate::lograte::Unsaid;
use crate::proto::beacon::{self, count_members, fields, unquote, FleetKey, Trust};
use crate::proto::json;
use crate::sys::iface;
use std::net::{IpAddr, SocketAddr};
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
    /// Every address the board was heard at (IPv4 first), as `addr` writes them; one not
    /// heard for [`SCAN_ADDR_STALE_SECS`] while the board was heard at another is dropped
    /// (renumbered by DHCP, a link gone).
    pub addrs: Vec<String>,
    /// When each of `addrs` was last heard, in the same order.
    pub addrs_heard: Vec<Instant>,
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
        addrs_heard: vec![now],
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
    // Facts the board publishes but left out of this datagram (they did not fit): FACTS is
    // the board's count, as STATUS and `tether_facts` give it, not what fitted.
    let mut omitted = 0usize;
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
            b"temp_c" => b.temp_c = reading(v, TEMP_C_RANGE.0, TEMP_C_RANGE.1),
            b"facts" => b.facts = count_members(v),
            b"facts_omitted" => omitted = num(v).unwrap_or(0),
            b"seq" => b.seq = num(v).unwrap_or(0),
            b"run" => b.run = Some(text(v)),
            b"bye" => b.bye = v == b"true",
            _ => {}
        }
    }
    // (At most a board's table: the count of a forged datagram stays a number that fits.)
    b.facts = b
        .facts
        .saturating_add(omitted)
        .min(crate::limits::MAX_FACTS);
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

/// One row's identity: trust class, id, run, and (when the datagram cannot be tied to a
/// run it proves) the source address. A forger's rows never replace a signed board's.
type RowKey = (Trust, String, String, Option<IpAddr>);

/// One run of a board at one address: (id, run, source address).
type RunAt = (String, String, IpAddr);

/// Whether two rows are of one trust class and id: next to each other in the sorted rows,
/// at most [`SCAN_RUNS_PER_ID`] of them.
fn one_id(a: &RowKey, b: &RowKey) -> bool {
    (a.0, &a.1) == (b.0, &b.1)
}

/// Where `k` is (Ok) or belongs (Err) in `v`, kept sorted by key: a small sorted map.
fn find<K: Ord, V>(v: &[(K, V)], k: &K) -> Result<usize, usize> {
    v.binary_search_by(|(x, _)| x.cmp(k))
}

/// Every board heard so far, and what is needed to classify the next datagram.
pub struct Boards {
    key: Option<FleetKey>,
    /// This round's probe nonce, and the round before's (an answer to it may come late):
    /// `--watch` takes a new one each round, so an answer captured earlier carries a
    /// nonce that is no longer this scan's ([`Boards::new_round`]).
    nonces: (String, Option<String>),
    /// The rows, sorted by their [`RowKey`].
    rows: Vec<(RowKey, Board)>,
    /// The newest signed seq heard per (id, run, source address), and when, sorted: an
    /// agent counts each socket's datagrams on its own (one per interface and family), in
    /// the order it sends them. A copy re-sent from another address already fails
    /// `verify`. Kept as long as a silent board's row ([`SCAN_FORGET_SECS`]), also after
    /// its run was replaced: a copy of an earlier run's datagram is then still a copy.
    /// At most [`SCAN_SEQS_MAX`].
    seqs: Vec<(RunAt, (u64, Instant))>,
    /// Ids already warned about as clones (one warning per id while it has a row), sorted;
    /// forgotten with the id's last row, so `--watch` keeps no more of them than rows.
    warned: Vec<String>,
    /// Datagrams of boards past [`SCAN_BOARDS_MAX`] rows, or of an id's runs past
    /// [`SCAN_RUNS_PER_ID`], ignored; and what of them a warning said, at most once a
    /// minute (a lab of clones past the bound is ignored every round).
    ignored: u64,
    ignored_said: Unsaid,
}

impl Boards {
    pub fn new(key: Option<FleetKey>, nonce: String) -> Boards {
        Boards {
            key,
            nonces: (nonce, None),
            rows: Vec::new(),
            seqs: Vec::new(),
            warned: Vec::new(),
            ignored: 0,
            ignored_said: Unsaid::default(),
        }
    }

    /// `--watch`: the next round probes with `nonce`; answers to the last round's probe are
    /// still this scan's, older ones are not.
    pub fn new_round(&mut self, nonce: String) {
        let last = std::mem::replace(&mut self.nonces.0, nonce);
        self.nonces.1 = Some(last);
    }

    /// `--watch`: drops the boards silent for [`SCAN_FORGET_SECS`].
    pub fn forget(&mut self, now: Instant) {
        let forget = Duration::from_secs(SCAN_FORGET_SECS);
        self.rows
            .retain(|(_, r)| now.saturating_duration_since(r.heard) < forget);
        self.seqs
            .retain(|(_, (_, heard))| now.saturating_duration_since(*heard) < forget);
        // (Clones are few: a scan over the rows per warned id, and no sort linked in.)
        let rows = &self.rows;
        self.warned
            .retain(|id| rows.iter().any(|(k, _)| k.1 == *id));
    }

    /// How many seq entries and clone warnings are remembered besides the rows (bounded:
    /// [`SCAN_SEQS_MAX`], and one per id with a row after [`Boards::forget`]).
    pub fn remembered(&self) -> (usize, usize) {
        (self.seqs.len(), self.warned.len())
    }

    /// A warning when datagrams of boards beyond [`SCAN_BOARDS_MAX`] (or of runs beyond
    /// [`SCAN_RUNS_PER_ID`]) were ignored since it was last said, as a [`crate::lograte::Repeat`] allows.
    pub fn ignored_warning(&mut self, now: Instant) -> Option<String> {
        let new = self.ignored_said.take(self.ignored, now)?;
        Some(format!(
            "warning: {new} datagrams ignored: scan keeps at most {SCAN_BOARDS_MAX} boards, and \
             {SCAN_RUNS_PER_ID} runs of one id"
        ))
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
            Err(mut i) => {
                if self.seqs.len() >= SCAN_SEQS_MAX {
                    let oldest = (0..self.seqs.len()).min_by_key(|&j| self.seqs[j].1 .1);
                    if let Some(j) = oldest {
                        self.seqs.remove(j);
                        i -= usize::from(j < i);
                    }
                }
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
            // A probe answer's nonce: this round's, or the last round's for one that came
            // late; `verify` finds any other one `replayed`.
            let theirs = fields(d)
                .find(|(k, _)| *k == b"nonce")
                .and_then(|(_, v)| unquote(v));
            let ours = match &self.nonces {
                (_, Some(last)) if theirs == Some(last.as_bytes()) => last,
                (now, _) => now,
            };
            b.trust = beacon::verify(d, key, from.ip(), Some(ours.as_bytes()));
            b.addr = scoped(from);
            b.addrs = vec![b.addr.clone()];
            if b.trust == Trust::Signed {
                b.answered = theirs.is_some();
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
            // The addresses still heard (an agent beacons on all its links at once, and
            // answers every probe on each), this datagram's now.
            let stale = Duration::from_secs(SCAN_ADDR_STALE_SECS);
            let mut all: Vec<(String, Instant)> = (old.addrs.iter().cloned())
                .zip(old.addrs_heard.iter().copied())
                .filter(|(_, t)| now.saturating_duration_since(*t) < stale)
                .collect();
            // The first few heard: without a key a sender names any `addr` it likes, and
            // a row must not grow with each one.
            for a in b.addrs.drain(..) {
                match all.iter().position(|(x, _)| *x == a) {
                    Some(j) => all[j].1 = now,
                    None if all.len() < SCAN_ADDRS_MAX => all.push((a, now)),
                    None => {}
                }
            }
            // IPv4 first, each family in the order heard.
            let (v4, v6): (Vec<_>, Vec<_>) = all.into_iter().partition(|(a, _)| !a.contains(':'));
            (b.addrs, b.addrs_heard) = v4.into_iter().chain(v6).unzip();
            // `b.addr` is still where this datagram was heard.
            let heard_elsewhere = b.addr != b.addrs[0];
            b.addr = b.addrs[0].clone();
            // A row is reached at `addr`, so its ports are those the datagrams heard at
            // that address named: each family's and each link's beacons name the
            // listeners reachable there (an IPv6 beacon may name no metrics port at all),
            // and a datagram from another address must not pair its ports with `addr`
            // (with a shared fleet key, another board could sign one naming this id).
            if heard_elsewhere {
                b.source = old.source;
                b.port = old.port;
                b.metrics = old.metrics;
            }
            b.answered |= old.answered;
            b.first_heard = old.first_heard;
        }
        match at {
            Ok(i) => self.rows[i].1 = b,
            // A few runs of one id are clones; a thousand are a flood, and every check of
            // a datagram of that id would compare it with each of them.
            Err(i) if self.runs_of(&k, i) >= SCAN_RUNS_PER_ID => self.ignored += 1,
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

    /// How many rows share `k`'s trust class and id, `at` being where `k` belongs (they
    /// are next to each other: rows are sorted by trust, then id).
    fn runs_of(&self, k: &RowKey, at: usize) -> usize {
        let same = |(rk, _): &&(RowKey, Board)| one_id(rk, k);
        let before = self.rows[..at].iter().rev().take_while(same).count();
        before + self.rows[at..].iter().take_while(same).count()
    }

    /// Marks ids carried by boards of different runs (clones); returns the ids not
    /// warned about before, sorted.
    pub fn mark_clones(&mut self) -> Vec<String> {
        // A clone: two believable rows of one id and one trust class whose runs and
        // addresses both differ (so an unsigned sender cannot make a signed board a clone),
        // each heard after the other was first heard: alive at once, where a restart at a
        // new address (another link, another family) is heard only after the old run.
        // Rows of one trust class and id are next to each other, at most
        // [`SCAN_RUNS_PER_ID`] of them: each is compared with its group only.
        let claims = |r: &Board| believable(r.trust) && r.run.is_some();
        // The cheap tests first: a flood of runs that are never heard twice fails on time.
        let clone_of = |r: &Board, o: &Board| {
            o.heard >= r.first_heard
                && r.heard >= o.first_heard
                && o.run != r.run
                && !heard_at_one_address(o, r)
        };
        let dup: Vec<bool> = self
            .rows
            .chunk_by(|(a, _), (b, _)| one_id(a, b))
            .flat_map(|group| {
                group.iter().map(|(_, r)| {
                    claims(r) && group.iter().any(|(_, o)| claims(o) && clone_of(r, o))
                })
            })
            .collect();
        let mut new: Vec<String> = Vec::new();
        // With a key, only signed rows are warned about: the warning tells the operator to
        // give a board a new id, and unsigned datagrams naming a signed board's id (at other
        // addresses, with other runs) would otherwise have it said of that board. Their
        // rows are still marked (`--all` shows them).
        let key = self.key.is_some();
        for ((_, r), dup) in self.rows.iter_mut().zip(dup) {
            r.dup_id = dup;
            let vouched = !key || r.trust == Trust::Signed;
            if let (true, true, Err(at)) = (dup, vouched, self.warned.binary_search(&r.id)) {
                self.warned.insert(at, r.id.clone());
                // In order as `warned` is (no sort: its code would be 2 KiB of the binary).
                let at = new.binary_search(&r.id).unwrap_or_else(|at| at);
                new.insert(at, r.id.clone());
            }
        }
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
pub(super) fn sorted(
    rows: Vec<&Board>,
    cmp: fn(&Board, &Board) -> std::cmp::Ordering,
) -> Vec<&Board> {
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
