//! Load generator for `scripts/bench` and `scripts/soak` (std only; an example, so it adds
//! nothing to the shipped binary).
//!
//! ```text
//! loadgen port                                  print a free loopback TCP port
//! loadgen bench --tether ADDR --tether-pid PID --cref ADDR --cref-pid PID --redis ADDR
//!               --redis-pid PID [--rounds N] [--storm N] [--storm-conc C,C..]
//!               [--storm-rounds N] [--scale F]
//!     interleaved rounds of: 1x1 latency, 8x16 pipelined, 16x1, connect storms; prints
//!     markdown table rows (measure | tether | C poll | tether÷C | redis | tether÷redis |
//!     target | met). The C poll(2) server (benches/c/pingserver.c) is optional.
//! loadgen load --addr ADDR [--conns 8] [--depth 16] [--requests N]
//!     one PING load run against a tether-protocol server (for `perf record`).
//! loadgen storm --addr ADDR [--conc 12] [--count 2000] [--proto tether|c|redis]
//!     one connect storm (against tether unless --proto says otherwise).
//! loadgen scrape --tether ADDR --tether-pid PID --peer ADDR --peer-pid PID [--rounds N]
//!               [--secs S] [--conc C]
//!     `GET /metrics` over kept-alive connections, C concurrent scrapers (default 4), S
//!     seconds per side per round, sides alternating round by round; prints markdown rows
//!     (measure | tether | peer | ratio | target | met): scrapes/s, p50/p99, size, CPU.
//! loadgen soak --tcp ADDR --unix PATH --requests N [--secs S]
//!     mixed requests over short and long TCP and Unix connections with facts churning;
//!     prints counts, exits 1 on any unexpected reply or error.
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Tether,
    /// benches/c/pingserver.c: same line protocol as tether's PING.
    C,
    Redis,
}

impl Proto {
    fn ping(self) -> &'static [u8] {
        match self {
            Proto::Tether | Proto::C => b"PING\n",
            Proto::Redis => b"PING\r\n",
        }
    }
    fn pong(self) -> &'static [u8] {
        match self {
            Proto::Tether | Proto::C => b"PONG\n",
            Proto::Redis => b"+PONG\r\n",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Proto::Tether => "tether",
            Proto::C => "C poll",
            Proto::Redis => "redis",
        }
    }
}

fn args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

fn opt(a: &[String], name: &str) -> Option<String> {
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

fn opt_num<T: std::str::FromStr>(a: &[String], name: &str, dflt: T) -> T {
    opt(a, name).and_then(|v| v.parse().ok()).unwrap_or(dflt)
}

fn die(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(2)
}

fn main() {
    let a = args();
    match a.first().map(String::as_str) {
        Some("port") => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            println!("{}", l.local_addr().unwrap().port());
        }
        Some("bench") => bench(&a),
        Some("load") => {
            let ad: SocketAddr = opt(&a, "--addr")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| die("--addr ADDR required"));
            let (c, d) = (opt_num(&a, "--conns", 8), opt_num(&a, "--depth", 16));
            let r = load(
                ad,
                Proto::Tether,
                c,
                d,
                opt_num(&a, "--requests", 1_000_000),
            );
            println!(
                "{c}x{d}: {} requests in {:.2} s, {:.0} req/s, {} errors",
                r.requests,
                r.secs,
                r.requests as f64 / r.secs,
                r.errors
            );
        }
        Some("storm") => {
            let ad: SocketAddr = opt(&a, "--addr")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| die("--addr ADDR required"));
            let conc = opt_num(&a, "--conc", 12);
            let p = match opt(&a, "--proto").as_deref() {
                None | Some("tether") => Proto::Tether,
                Some("c") => Proto::C,
                Some("redis") => Proto::Redis,
                Some(x) => die(&format!("--proto {x}: expected tether, c or redis")),
            };
            let st = storm(ad, p, opt_num(&a, "--count", 2000), conc);
            println!(
                "storm x{conc}: {:.0} conn/s, {} ok, {} busy, {} failures, slowest connect {:.1} ms, slowest total {:.1} ms {:?}",
                (st.ok + st.busy) as f64 / st.secs,
                st.ok,
                st.busy,
                st.failures,
                st.slowest_connect.as_secs_f64() * 1000.0,
                st.slowest_total.as_secs_f64() * 1000.0,
                st.reasons
            );
        }
        Some("soak") => soak(&a),
        Some("scrape") => scrape_bench(&a),
        _ => {
            die("usage: loadgen port | bench ... | scrape ... | soak ... (see examples/loadgen.rs)")
        }
    }
}

// ---------------------------------------------------------------- /proc

extern "C" {
    fn sysconf(name: i32) -> i64;
}

/// CPU time of `pid` in seconds: the scheduler's nanosecond counts from
/// /proc/PID/task/*/schedstat, summed over its threads (user + system; tether, the C
/// server and redis's event loop are one thread, node_exporter is many), else utime +
/// stime in clock ticks from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>()
        });
    if let Some(ns) = threads.filter(|&ns| ns > 0) {
        return ns as f64 / 1e9;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15 (1-based).
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf(_SC_CLK_TCK) has no preconditions.
    let hz = unsafe { sysconf(2) }.max(1);
    ticks as f64 / hz as f64
}

/// TcpExt ListenOverflows of this network namespace (/proc/net/netstat): handshakes the
/// kernel dropped because a listener's accept queue was full (a connect then waits for a
/// retransmit, 1 s for a SYN). 0 where it cannot be read.
fn listen_overflows() -> u64 {
    let t = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = t.lines();
    while let (Some(head), Some(vals)) = (lines.next(), lines.next()) {
        if let Some(i) = head.split_whitespace().position(|k| k == "ListenOverflows") {
            return vals
                .split_whitespace()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// The pid of `ksoftirqd/N`, N the one CPU `pid` is pinned to (its Cpus_allowed_list), if
/// it is pinned: where the softirq work the server's own system calls leave behind (RCU
/// callbacks freeing its closed sockets) runs when it outgrows an interrupt's exit.
fn ksoftirqd_of(pid: u32) -> Option<u32> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cpu: usize = st
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim()
        .parse()
        .ok()?;
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

// ---------------------------------------------------------------- load runs

struct Run {
    secs: f64,
    requests: u64,
    /// Per-batch round-trip times in ns (per request when depth is 1).
    lat: Vec<u64>,
    errors: u64,
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Reads until `n` reply lines arrived; checks each is exactly `pong`.
fn read_replies(s: &mut impl Read, buf: &mut [u8], n: usize, pong: &[u8]) -> std::io::Result<()> {
    let want = n * pong.len();
    let mut got = 0;
    while got < want {
        let k = s.read(&mut buf[got..want])?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += k;
    }
    if buf[..want].chunks(pong.len()).any(|c| c != pong) {
        return Err(std::io::Error::other("unexpected reply"));
    }
    Ok(())
}

fn load(addr: SocketAddr, p: Proto, conns: usize, depth: usize, total: u64) -> Run {
    let per_conn = (total / conns as u64).max(depth as u64) / depth as u64;
    let barrier = Arc::new(Barrier::new(conns + 1));
    let errors = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for _ in 0..conns {
        let barrier = barrier.clone();
        let errors = errors.clone();
        hs.push(std::thread::spawn(move || {
            let mut lat = Vec::with_capacity(per_conn as usize);
            let mut s = match connect(addr) {
                Ok(s) => s,
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    barrier.wait();
                    return lat;
                }
            };
            let req: Vec<u8> = p.ping().repeat(depth);
            let mut buf = vec![0u8; depth * p.pong().len()];
            barrier.wait();
            for _ in 0..per_conn {
                let t = Instant::now();
                if s.write_all(&req).is_err()
                    || read_replies(&mut s, &mut buf, depth, p.pong()).is_err()
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                lat.push(t.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.join().unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    Run {
        secs,
        requests: lat.len() as u64 * depth as u64,
        lat,
        errors: errors.load(Ordering::Relaxed),
    }
}

#[derive(Default)]
struct Storm {
    secs: f64,
    ok: u64,
    /// `ERR busy`: every client slot was taken (not a failure of the server).
    busy: u64,
    failures: u64,
    slowest_connect: Duration,
    slowest_total: Duration,
    /// Connects that took longer than [`SLOW_CONNECT`] (a SYN retransmit, in practice).
    slow: u64,
    reasons: Vec<String>,
}

/// A connect slower than this counts as stalled (the storm target).
const SLOW_CONNECT: Duration = Duration::from_millis(100);

enum StormErr {
    /// `ERR busy`, after connecting in this long.
    Busy(Duration),
    Fail(String),
}
use StormErr::{Busy, Fail};

/// `count` times connect -> PING -> PONG -> close, `conc` at a time.
fn storm(addr: SocketAddr, p: Proto, count: usize, conc: usize) -> Storm {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Storm::default()));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..conc)
        .map(|_| {
            let next = next.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= count {
                        break;
                    }
                    let t = Instant::now();
                    let r = (|| -> Result<Duration, StormErr> {
                        let mut s = connect(addr).map_err(|e| Fail(format!("connect: {e}")))?;
                        let tc = t.elapsed();
                        s.write_all(p.ping())
                            .map_err(|e| Fail(format!("send: {e}")))?;
                        let mut got = 0;
                        while !buf[..got].contains(&b'\n') && got < buf.len() {
                            match s.read(&mut buf[got..]) {
                                Ok(0) => return Err(Fail("EOF before reply".into())),
                                Ok(k) => got += k,
                                Err(e) => return Err(Fail(format!("recv: {e}"))),
                            }
                        }
                        if buf[..got].starts_with(b"ERR busy") {
                            return Err(Busy(tc));
                        }
                        if &buf[..got] != p.pong() {
                            return Err(Fail(format!(
                                "reply {:?}",
                                String::from_utf8_lossy(&buf[..got]).trim_end()
                            )));
                        }
                        Ok(tc)
                    })();
                    let total = t.elapsed();
                    if std::env::var_os("LOADGEN_SLOW").is_some()
                        && total > Duration::from_millis(100)
                    {
                        eprintln!("slow: connect #{seq} took {total:?}");
                    }
                    let mut o = out.lock().unwrap();
                    o.slowest_total = o.slowest_total.max(total);
                    if let Ok(tc) | Err(Busy(tc)) = r {
                        o.slow += u64::from(tc > SLOW_CONNECT);
                    }
                    match r {
                        Ok(tc) => {
                            o.ok += 1;
                            o.slowest_connect = o.slowest_connect.max(tc);
                        }
                        Err(Busy(tc)) => {
                            o.busy += 1;
                            o.slowest_connect = o.slowest_connect.max(tc);
                        }
                        Err(Fail(e)) => {
                            o.failures += 1;
                            if o.reasons.len() < 5 && !o.reasons.contains(&e) {
                                o.reasons.push(e);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let mut o = std::mem::take(&mut *out.lock().unwrap());
    o.secs = t0.elapsed().as_secs_f64();
    o
}

// ---------------------------------------------------------------- bench

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

#[derive(Default)]
struct Side {
    lat1: Vec<u64>,
    rps_8x16: Vec<f64>,
    rps_16x1: Vec<f64>,
    lat_p99_rounds: Vec<f64>,
    errors: u64,
    cpu: f64,
    cpu_requests: u64,
    /// CPU per request of each round, 8x16 and 16x1 apart (for the per-round ratios).
    cpu_8x16: Vec<f64>,
    cpu_16x1: Vec<f64>,
    storms: Vec<StormAgg>,
    requests: u64,
}

#[derive(Default, Clone)]
struct StormAgg {
    rate: Vec<f64>,
    fail: u64,
    busy: u64,
    slow: u64,
    /// Storms with at least one slow connect.
    slow_storms: u64,
    slowest_connect: Duration,
    slowest_total: Duration,
    reasons: Vec<String>,
    /// Accept-queue overflows in the network namespace during the storms ([`listen_overflows`]).
    overflows: u64,
    /// Storms with at least one overflow.
    overflow_storms: u64,
    /// ksoftirqd's CPU time on the server's CPU, ms, per storm ([`ksoftirqd_of`]).
    softirq_ms: Vec<f64>,
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

fn ratio(t: f64, r: f64) -> String {
    if r > 0.0 && t.is_finite() && r.is_finite() {
        format!("{:.2}", t / r)
    } else {
        "-".into()
    }
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**NO**",
        None => "",
    }
}

fn row(measure: &str, t: f64, r: f64, target: &str, met: Option<bool>) {
    println!(
        "| {measure} | {} | {} | {} | {target} | {} |",
        fmt_num(t),
        fmt_num(r),
        ratio(t, r),
        met_text(met)
    );
}

/// A row of the main table: tether, the C poll(2) server, redis (NaN: not measured).
fn row3(measure: &str, v: [f64; 3], target: &str, met: Option<bool>) {
    println!(
        "| {measure} | {} | {} | {} | {} | {} | {target} | {} |",
        fmt_num(v[0]),
        fmt_num(v[1]),
        ratio(v[0], v[1]),
        fmt_num(v[2]),
        ratio(v[0], v[2]),
        met_text(met)
    );
}

fn bench(a: &[String]) {
    let addr = |n: &str| -> Option<SocketAddr> { opt(a, n).and_then(|v| v.parse().ok()) };
    let need = |n: &str| addr(n).unwrap_or_else(|| die(&format!("{n} ADDR required")));
    let sides: Vec<(Proto, SocketAddr, u32)> = [
        (Proto::Tether, Some(need("--tether")), "--tether-pid"),
        (Proto::C, addr("--cref"), "--cref-pid"),
        (Proto::Redis, Some(need("--redis")), "--redis-pid"),
    ]
    .into_iter()
    .filter_map(|(p, ad, pid)| ad.map(|ad| (p, ad, opt_num(a, pid, 0u32))))
    .collect();
    // Index of each of tether, C, redis in `sides` (C may be absent).
    let slot = |p: Proto| sides.iter().position(|s| s.0 == p);
    let rounds: usize = opt_num(a, "--rounds", 15);
    let scale: f64 = opt_num(a, "--scale", 1.0);
    let storm_n: usize = opt_num(a, "--storm", 2000);
    let storm_rounds: usize = opt_num(a, "--storm-rounds", 5);
    let concs: Vec<usize> = opt(a, "--storm-conc")
        .unwrap_or_else(|| "12,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let n = |x: f64| ((x * scale) as u64).max(1000);
    let mut res: Vec<Side> = sides.iter().map(|_| Side::default()).collect();
    let k = sides.len();

    // Warm-up: every server's caches, the kernel's socket paths, our threads.
    for &(p, ad, _) in &sides {
        let _ = load(ad, p, 1, 1, 2000);
        let _ = load(ad, p, 8, 16, 20_000);
    }
    for round in 0..rounds {
        // Rotate who goes first, so no side always runs on a warmer (or busier) machine.
        for j in 0..k {
            let idx = (round + j) % k;
            let (p, ad, pid) = sides[idx];
            let s = &mut res[idx];
            let c0 = cpu_secs(pid);
            let r = load(ad, p, 1, 1, n(10_000.0));
            s.errors += r.errors;
            s.requests += r.requests;
            let mut l = r.lat.clone();
            l.sort_unstable();
            s.lat_p99_rounds.push(pct(&l, 0.99));
            s.lat1.extend(r.lat);
            let c1 = cpu_secs(pid);
            let r = load(ad, p, 8, 16, n(600_000.0));
            let c2 = cpu_secs(pid);
            s.errors += r.errors;
            s.requests += r.requests;
            s.rps_8x16.push(r.requests as f64 / r.secs);
            s.cpu_8x16.push((c2 - c1) / r.requests.max(1) as f64);
            let r2 = load(ad, p, 16, 1, n(100_000.0));
            let c3 = cpu_secs(pid);
            s.errors += r2.errors;
            s.requests += r2.requests;
            s.rps_16x1.push(r2.requests as f64 / r2.secs);
            s.cpu_16x1.push((c3 - c2) / r2.requests.max(1) as f64);
            s.cpu += c3 - c0;
            s.cpu_requests += l.len() as u64 + r.requests + r2.requests;
            eprintln!(
                "round {} {:6}: 1x1 p99 {:.1} us, 8x16 {:.0} req/s, 16x1 {:.0} req/s",
                round + 1,
                p.name(),
                pct(&l, 0.99) / 1000.0,
                r.requests as f64 / r.secs,
                r2.requests as f64 / r2.secs
            );
        }
    }
    // Connect storms last, interleaved too (TIME_WAIT from one does not hit the other's port).
    for side in res.iter_mut() {
        side.storms = vec![StormAgg::default(); concs.len()];
    }
    // Each server's ksoftirqd, found once (a walk of /proc): the servers stay pinned.
    let softirqd: Vec<Option<u32>> = sides.iter().map(|s| ksoftirqd_of(s.2)).collect();
    for round in 0..storm_rounds {
        for (ci, &conc) in concs.iter().enumerate() {
            for j in 0..k {
                let idx = (round + j) % k;
                let (p, ad, _) = sides[idx];
                let soft = softirqd[idx];
                let (o0, k0) = (listen_overflows(), soft.map(cpu_secs));
                let st = storm(ad, p, storm_n, conc);
                let (o1, k1) = (listen_overflows(), soft.map(cpu_secs));
                let s = &mut res[idx].storms[ci];
                let overflows = o1.saturating_sub(o0);
                s.overflows += overflows;
                s.overflow_storms += u64::from(overflows > 0);
                let soft_ms = k0.zip(k1).map_or(f64::NAN, |(a, b)| (b - a) * 1000.0);
                s.softirq_ms.push(soft_ms);
                s.rate.push((st.ok + st.busy) as f64 / st.secs);
                s.fail += st.failures;
                s.busy += st.busy;
                s.slow += st.slow;
                s.slow_storms += u64::from(st.slow > 0);
                s.slowest_connect = s.slowest_connect.max(st.slowest_connect);
                s.slowest_total = s.slowest_total.max(st.slowest_total);
                for r in st.reasons {
                    if !s.reasons.contains(&r) {
                        s.reasons.push(r);
                    }
                }
                eprintln!(
                    "storm {} x{conc} {:6}: {:.0} conn/s, {} busy, {} failures, slowest connect {:.1} ms, {} over 100 ms, {overflows} accept-queue overflows, ksoftirqd {soft_ms:.1} ms",
                    round + 1,
                    p.name(),
                    (st.ok + st.busy) as f64 / st.secs,
                    st.busy,
                    st.failures,
                    st.slowest_connect.as_secs_f64() * 1000.0,
                    st.slow
                );
            }
        }
    }

    // One figure per side (NaN for a side not measured).
    let fig = |res: &mut Vec<Side>, f: &dyn Fn(&mut Side) -> f64| -> [f64; 3] {
        [Proto::Tether, Proto::C, Proto::Redis].map(|p| match slot(p) {
            Some(i) => f(&mut res[i]),
            None => f64::NAN,
        })
    };
    for s in res.iter_mut() {
        s.lat1.sort_unstable();
    }
    let us = |v: f64| v / 1000.0;
    let p50 = fig(&mut res, &|s| us(pct(&s.lat1, 0.5)));
    let p99 = fig(&mut res, &|s| us(pct(&s.lat1, 0.99)));
    row3("1×1 latency p50, µs", p50, "", None);
    row3(
        "1×1 latency p99, µs (all rounds pooled)",
        p99,
        "≤ redis",
        Some(p99[0] <= p99[2]),
    );
    let p99m = fig(&mut res, &|s| us(median(&mut s.lat_p99_rounds)));
    row3("1×1 latency p99, µs (median of rounds)", p99m, "", None);
    // Throughput against the C server: the median of the per-round ratios (rounds are
    // back to back, so a ratio cancels what the machine did in that round).
    let per_round = |res: &Vec<Side>, f: &dyn Fn(&Side) -> &Vec<f64>, inverse: bool| -> f64 {
        match slot(Proto::C) {
            Some(c) => {
                let mut r: Vec<f64> = f(&res[0])
                    .iter()
                    .zip(f(&res[c]).iter())
                    .map(|(t, c)| if inverse { c / t } else { t / c })
                    .collect();
                median(&mut r)
            }
            None => f64::NAN,
        }
    };
    let want_c = |r: f64, ok: bool| if r.is_finite() { Some(ok) } else { None };
    let r8 = per_round(&res, &|s| &s.rps_8x16, false);
    let t8 = fig(&mut res, &|s| median(&mut s.rps_8x16.clone()));
    row3(
        "8×16 pipelined, req/s (median of rounds)",
        t8,
        "≥ redis (÷ C: per-round rows)",
        Some(t8[0] >= t8[2]),
    );
    let r16 = per_round(&res, &|s| &s.rps_16x1, false);
    let t16 = fig(&mut res, &|s| median(&mut s.rps_16x1.clone()));
    row3(
        "16×1, req/s (median of rounds)",
        t16,
        "≥ redis (÷ C: per-round rows)",
        Some(t16[0] >= t16[2]),
    );
    let cpu = fig(&mut res, &|s| {
        s.cpu * 1000.0 / (s.cpu_requests as f64 / 100_000.0)
    });
    row3(
        "server CPU per 100k requests, ms (schedstat, all three workloads)",
        cpu,
        "≤ C",
        want_c(cpu[1], cpu[0] <= cpu[1]),
    );
    let c8 = per_round(&res, &|s| &s.cpu_8x16, true);
    let c16 = per_round(&res, &|s| &s.cpu_16x1, true);
    println!(
        "| tether ÷ C, median of per-round ratios: 8×16 throughput | {} | | | | | ≥ 1.0 | {} |",
        fmt_num(r8),
        met_text(want_c(r8, r8 >= 1.0))
    );
    println!(
        "| tether ÷ C, median of per-round ratios: 16×1 throughput | {} | | | | | ≥ 1.0 | {} |",
        fmt_num(r16),
        met_text(want_c(r16, r16 >= 1.0))
    );
    println!(
        "| tether ÷ C, median of per-round ratios: CPU per request, 8×16 | {} | | | | | ≤ 1.0 | {} |",
        fmt_num(1.0 / c8),
        met_text(want_c(c8, c8 >= 1.0))
    );
    println!(
        "| tether ÷ C, median of per-round ratios: CPU per request, 16×1 | {} | | | | | ≤ 1.0 | {} |",
        fmt_num(1.0 / c16),
        met_text(want_c(c16, c16 >= 1.0))
    );
    let errs = fig(&mut res, &|s| s.errors as f64);
    row3("load errors (all runs)", errs, "0", Some(errs[0] == 0.0));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (ci, &conc) in concs.iter().enumerate() {
        let what = format!("storm {storm_n}× connect→PING→PONG→close, {conc} at a time, backlog 8");
        let rate = fig(&mut res, &|s| median(&mut s.storms[ci].rate));
        row3(
            &format!("{what}: connects/s (median of {storm_rounds})"),
            rate,
            "",
            None,
        );
        let busy = fig(&mut res, &|s| s.storms[ci].busy as f64);
        // `ERR busy` is right only when more connectors than client slots (16) exist.
        row3(
            &format!("{what}: `ERR busy` answers (all {storm_rounds})"),
            busy,
            if conc <= 16 { "0" } else { "" },
            (conc <= 16).then_some(busy[0] == 0.0),
        );
        let fail = fig(&mut res, &|s| s.storms[ci].fail as f64);
        row3(
            &format!("{what}: other failures (all {storm_rounds})"),
            fail,
            "0",
            Some(fail[0] == 0.0),
        );
        let sc = fig(&mut res, &|s| ms(s.storms[ci].slowest_connect));
        row3(
            &format!("{what}: slowest connect, ms"),
            sc,
            "< 100",
            Some(sc[0] < 100.0),
        );
        let st = fig(&mut res, &|s| ms(s.storms[ci].slowest_total));
        row3(&format!("{what}: slowest connect→reply, ms"), st, "", None);
        let n = storm_n * storm_rounds;
        let slow = fig(&mut res, &|s| s.storms[ci].slow as f64);
        row3(
            &format!("{what}: connects over 100 ms, of {n}"),
            slow,
            "0",
            Some(slow[0] == 0.0),
        );
        let ss = fig(&mut res, &|s| s.storms[ci].slow_storms as f64);
        row3(
            &format!("{what}: storms with a connect over 100 ms, of {storm_rounds}"),
            ss,
            "0",
            Some(ss[0] == 0.0),
        );
        // Why: a stalled connect is one the kernel dropped from a full accept queue.
        let of = fig(&mut res, &|s| s.storms[ci].overflows as f64);
        row3(
            &format!("{what}: accept-queue overflows (TcpExtListenOverflows, all {storm_rounds})"),
            of,
            "",
            None,
        );
        let os = fig(&mut res, &|s| s.storms[ci].overflow_storms as f64);
        row3(
            &format!("{what}: storms with an accept-queue overflow, of {storm_rounds}"),
            os,
            "",
            None,
        );
        let sq = fig(&mut res, &|s| median(&mut s.storms[ci].softirq_ms));
        row3(
            &format!(
                "{what}: ksoftirqd on the server's CPU, ms per storm (median of {storm_rounds})"
            ),
            sq,
            "",
            None,
        );
    }
    println!(
        "REQUESTS tether={} redis={}",
        res[0].requests,
        slot(Proto::Redis).map_or(0, |i| res[i].requests)
    );
    for (i, &(p, _, _)) in sides.iter().enumerate() {
        for (ci, conc) in concs.iter().enumerate() {
            if !res[i].storms[ci].reasons.is_empty() {
                println!(
                    "STORM_FAILURES {} ({conc} at a time): {}",
                    p.name(),
                    res[i].storms[ci].reasons.join("; ")
                );
            }
        }
    }
}

// ---------------------------------------------------------------- soak

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn open(tcp: SocketAddr, unix: &PathBuf, use_unix: bool) -> std::io::Result<Conn> {
        let c = if use_unix {
            let s = UnixStream::connect(unix)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            Conn::Unix(s)
        } else {
            Conn::Tcp(connect(tcp)?)
        };
        Ok(c)
    }
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(b),
            Conn::Unix(s) => s.write_all(b),
        }
    }
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(b),
            Conn::Unix(s) => s.read(b),
        }
    }
}

/// Sends `lines` in one write and reads as many reply lines; returns them.
fn exchange(c: &mut Conn, lines: &[String], buf: &mut Vec<u8>) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    c.write_all(&out)?;
    buf.clear();
    let mut chunk = [0u8; 16384];
    while buf.iter().filter(|&&b| b == b'\n').count() < lines.len() {
        let k = c.read(&mut chunk)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..k]);
    }
    Ok(String::from_utf8_lossy(buf)
        .lines()
        .map(String::from)
        .collect())
}

/// Does `reply` fit `req`? (shape only: the facts change under us).
fn reply_ok(req: &str, reply: &str) -> bool {
    let cmd = req.split(' ').next().unwrap_or("");
    match cmd {
        "PING" => reply == "PONG",
        "SET" => reply == "OK" || reply.starts_with("ERR full"),
        "DEL" | "GET" => reply.starts_with("OK") || reply.starts_with("ERR not-found"),
        "SETTCP" => reply.starts_with("ERR denied"),
        "KEYS" => reply.starts_with("OK"),
        _ => reply.starts_with("OK "),
    }
}

fn soak(a: &[String]) {
    let tcp: SocketAddr = opt(a, "--tcp")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| die("--tcp ADDR required"));
    let unix = PathBuf::from(opt(a, "--unix").unwrap_or_else(|| die("--unix PATH required")));
    let total: u64 = opt_num(a, "--requests", 1_000_000);
    let secs: u64 = opt_num(a, "--secs", 600);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let first_bad = Arc::new(Mutex::new(None::<String>));

    // (kind, count): long TCP readers, long Unix writers, short-connection churners.
    let kinds = [(0u8, 3usize), (1, 2), (2, 3)];
    let mut hs = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (kind, count) in kinds {
        for _ in 0..count {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (done, bad, conns, first_bad, unix) = (
                done.clone(),
                bad.clone(),
                conns.clone(),
                first_bad.clone(),
                unix.clone(),
            );
            hs.push(std::thread::spawn(move || {
                let mut rng = Rng(seed | 1);
                let mut buf = Vec::new();
                let mut conn: Option<Conn> = None;
                let mut left_on_conn = 0u64;
                while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                    if conn.is_none() || left_on_conn == 0 {
                        let use_unix = match kind {
                            0 => false,
                            1 => true,
                            _ => rng.below(2) == 0,
                        };
                        conn = match Conn::open(tcp, &unix, use_unix) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                let mut f = first_bad.lock().unwrap();
                                f.get_or_insert(format!("connect: {e}"));
                                bad.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        };
                        conns.fetch_add(1, Ordering::Relaxed);
                        left_on_conn = match kind {
                            2 => 1 + rng.below(8),
                            _ => 5_000 + rng.below(20_000),
                        };
                    }
                    let is_unix = matches!(conn, Some(Conn::Unix(_)));
                    let depth = 1 + rng.below(if kind == 2 { 3 } else { 16 }) as usize;
                    let mut lines = Vec::with_capacity(depth);
                    for _ in 0..depth {
                        let key = format!("k{}", rng.below(40));
                        let l = match (kind, rng.below(10)) {
                            // Writers: SET with and without ttl (40 keys > 32 slots: the
                            // table fills and answers ERR full), DEL, and full reads.
                            (1, 0..=3) => {
                                format!("SET {key} v{} ttl={}", rng.next() % 1000, 1 + rng.below(3))
                            }
                            (1, 4) => format!("SET {key} value-{}", rng.next() % 100_000),
                            (1, 5 | 6) => format!("DEL {key}"),
                            (1, 7) => "KEYS".into(),
                            (_, 0..=3) => "PING".into(),
                            (_, 4 | 5) => format!("GET {key}"),
                            (_, 6) => "KEYS".into(),
                            (_, 7) => "STATUS".into(),
                            (_, 8) if !is_unix => "SETTCP".into(),
                            (_, 8) => "STATS".into(),
                            _ => "HELP".into(),
                        };
                        lines.push(l);
                    }
                    let wire: Vec<String> = lines
                        .iter()
                        .map(|l| {
                            if l == "SETTCP" {
                                "SET x y".into()
                            } else {
                                l.clone()
                            }
                        })
                        .collect();
                    let c = conn.as_mut().unwrap();
                    match exchange(c, &wire, &mut buf) {
                        Ok(replies) => {
                            for (q, r) in lines.iter().zip(replies.iter()) {
                                if !reply_ok(q, r) {
                                    bad.fetch_add(1, Ordering::Relaxed);
                                    let mut f = first_bad.lock().unwrap();
                                    f.get_or_insert(format!("{q:?} -> {r:?}"));
                                }
                            }
                            done.fetch_add(depth as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            bad.fetch_add(1, Ordering::Relaxed);
                            let mut f = first_bad.lock().unwrap();
                            f.get_or_insert(format!("io: {e}"));
                            conn = None;
                            continue;
                        }
                    }
                    left_on_conn = left_on_conn.saturating_sub(1);
                    if left_on_conn == 0 && kind == 2 && rng.below(2) == 0 {
                        // Half of the short connections say QUIT, the rest just close.
                        let c = conn.as_mut().unwrap();
                        if let Ok(r) = exchange(c, &["QUIT".into()], &mut buf) {
                            if r.first().map(String::as_str) != Some("OK") {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    if left_on_conn == 0 {
                        conn = None;
                    }
                }
            }));
        }
    }
    let t0 = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    let d = done.load(Ordering::Relaxed);
    let b = bad.load(Ordering::Relaxed);
    println!(
        "soak: {d} requests over {} connections in {:.1} s ({:.0} req/s), {b} unexpected",
        conns.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        d as f64 / t0.elapsed().as_secs_f64()
    );
    if let Some(f) = first_bad.lock().unwrap().take() {
        println!("soak: first unexpected: {f}");
    }
    if b > 0 || d < total {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- scrape (HTTP /metrics)

/// Reads one HTTP response to `GET /metrics`; returns the body length. Handles a
/// Content-Length body and a chunked one (Go's net/http, node_exporter, sends chunked).
fn read_http(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    // `buf` holds bytes read past the previous response (none with one request in flight).
    let mut tmp = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(bad("EOF in head"));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(bad(head.lines().next().unwrap_or("?")));
    }
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let mut fill = |buf: &mut Vec<u8>, want: usize| -> std::io::Result<()> {
        while buf.len() < want {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(bad("EOF in body"));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        Ok(())
    };
    if let Some(len) = header("content-length:") {
        let len: usize = len.parse().map_err(|_| bad("Content-Length"))?;
        fill(buf, head_end + len)?;
        buf.drain(..head_end + len);
        return Ok(len);
    }
    if header("transfer-encoding:").as_deref() != Some("chunked") {
        return Err(bad("neither Content-Length nor chunked"));
    }
    let mut at = head_end;
    let mut body = 0;
    loop {
        let line_end = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            let want = buf.len() + 1;
            fill(buf, want)?;
        };
        let size_text = String::from_utf8_lossy(&buf[at..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("chunk size"))?;
        at = line_end + 2;
        fill(buf, at + size + 2)?;
        at += size + 2;
        body += size;
        if size == 0 {
            buf.drain(..at);
            return Ok(body);
        }
    }
}

struct ScrapeRun {
    secs: f64,
    scrapes: u64,
    lat: Vec<u64>,
    bytes: usize,
    errors: u64,
}

/// `conc` scrapers, each on one kept-alive connection, for `secs` seconds.
fn scrape(addr: SocketAddr, conc: usize, secs: f64) -> ScrapeRun {
    let errors = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(conc + 1));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let mut hs = Vec::new();
    for _ in 0..conc {
        let (errors, bytes, barrier, lats) =
            (errors.clone(), bytes.clone(), barrier.clone(), lats.clone());
        hs.push(std::thread::spawn(move || {
            let mut s = connect(addr).ok();
            let mut buf = Vec::new();
            let mut mine = Vec::new();
            barrier.wait();
            let end = Instant::now() + Duration::from_secs_f64(secs);
            while Instant::now() < end {
                let Some(c) = s.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    s = connect(addr).ok();
                    buf.clear();
                    continue;
                };
                let t = Instant::now();
                let r = c
                    .write_all(
                        b"GET /metrics HTTP/1.1\r\nHost: bench\r\nUser-Agent: loadgen\r\n\r\n",
                    )
                    .and_then(|_| read_http(c, &mut buf));
                match r {
                    Ok(n) => {
                        mine.push(t.elapsed().as_nanos() as u64);
                        bytes.store(n, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        s = None;
                    }
                }
            }
            lats.lock().unwrap().extend(mine);
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    let lat = std::mem::take(&mut *lats.lock().unwrap());
    ScrapeRun {
        secs: t0.elapsed().as_secs_f64(),
        scrapes: lat.len() as u64,
        lat,
        bytes: bytes.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// One side's results over all rounds.
#[derive(Default)]
struct ScrapeSide {
    rps: Vec<f64>,
    lat: Vec<u64>,
    bytes: usize,
    errors: u64,
    cpu: f64,
    scrapes: u64,
}

fn scrape_bench(a: &[String]) {
    let addr = |n: &str| -> SocketAddr {
        opt(a, n)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| die(&format!("{n} ADDR required")))
    };
    let (t_addr, p_addr) = (addr("--tether"), addr("--peer"));
    let t_pid: u32 = opt_num(a, "--tether-pid", 0);
    let p_pid: u32 = opt_num(a, "--peer-pid", 0);
    let rounds: usize = opt_num(a, "--rounds", 3);
    let secs: f64 = opt_num(a, "--secs", 5.0);
    let conc: usize = opt_num(a, "--conc", 4);
    let mut sides: [ScrapeSide; 2] = Default::default();
    for round in 0..rounds {
        // Alternate which side goes first, so drift hits both.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (addr, pid) = if side == 0 {
                (t_addr, t_pid)
            } else {
                (p_addr, p_pid)
            };
            let c0 = cpu_secs(pid);
            let r = scrape(addr, conc, secs);
            let c1 = cpu_secs(pid);
            let s = &mut sides[side];
            s.rps.push(r.scrapes as f64 / r.secs);
            s.lat.extend(r.lat);
            s.bytes = r.bytes;
            s.errors += r.errors;
            s.cpu += c1 - c0;
            s.scrapes += r.scrapes;
        }
    }
    for s in sides.iter_mut() {
        s.lat.sort_unstable();
    }
    let [t, p] = &mut sides;
    let ms = |v: &[u64], q: f64| pct(v, q) / 1e6;
    let (tp50, pp50) = (ms(&t.lat, 0.5), ms(&p.lat, 0.5));
    let (tp99, pp99) = (ms(&t.lat, 0.99), ms(&p.lat, 0.99));
    row(
        &format!("scrapes/s, {conc} concurrent kept-alive scrapers (median of {rounds} rounds of {secs} s)"),
        median(&mut t.rps),
        median(&mut p.rps),
        "",
        None,
    );
    row("scrape latency p50, ms", tp50, pp50, "", None);
    row(
        "scrape latency p99, ms",
        tp99,
        pp99,
        "≤ peer",
        Some(tp99 <= pp99),
    );
    row(
        "response size, bytes",
        t.bytes as f64,
        p.bytes as f64,
        "",
        None,
    );
    let per = |s: &ScrapeSide| s.cpu * 1e6 / (s.scrapes.max(1) as f64);
    row("server CPU per scrape, µs", per(t), per(p), "", None);
    row(
        "scrape errors",
        t.errors as f64,
        p.errors as f64,
        "0",
        Some(t.errors == 0),
    );
    println!("SCRAPES tether={} peer={}", t.scrapes, p.scrapes);
}
