//! `tether agent --metrics` (issue 9) on loopback, as a scraper and a hostile client see it:
//! status codes and headers, keep-alive and `Connection: close`, the 2 KiB head limit,
//! the head timeout, the separate HTTP slot table, silent (slowloris) connections giving
//! their slots up to scrapers after a grace, `promtool check metrics` on the output
//! (with a full fact table of maximum-length keys and values that need escaping), and no
//! heap allocation over 1,000 scrapes.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts an agent with one metrics listener on a free loopback port.
fn agent_with_metrics(extra: &[&str]) -> (Agent, SocketAddr) {
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let a = Agent::start(&args);
    let m = metrics_addrs(&a.ready);
    assert_eq!(m.len(), 1, "{}", a.ready);
    (a, m[0])
}

/// The `metrics=` addresses of a ready line.
fn metrics_addrs(ready: &str) -> Vec<SocketAddr> {
    ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .map(|v| v.split(',').map(|s| s.parse().unwrap()).collect())
        .unwrap_or_default()
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, slack(Duration::from_secs(5))).expect("connect");
    s.set_read_timeout(Some(slack(Duration::from_secs(10))))
        .unwrap();
    s
}

/// Reads one response (head, then exactly Content-Length body bytes unless `head_only`).
fn read_resp(s: &mut TcpStream, head_only: bool) -> Resp {
    try_read_resp(s, head_only).unwrap_or_else(|e| panic!("{e}"))
}

/// [`read_resp`], with what went wrong (EOF, reset, timeout) as an `Err` instead of a panic.
fn try_read_resp(s: &mut TcpStream, head_only: bool) -> Result<Resp, String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = retrying(|| s.read(&mut b)).map_err(|e| format!("read response head: {e}"))?;
        if n != 1 {
            return Err(format!(
                "EOF inside a response head: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.push(b[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let mut r = Resp {
        status,
        head,
        body: Vec::new(),
    };
    if !head_only {
        let len: usize = r
            .header("Content-Length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        r.body = vec![0; len];
        s.read_exact(&mut r.body)
            .map_err(|e| format!("read body: {e}"))?;
    }
    Ok(r)
}

fn request(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    read_resp(&mut s, raw.starts_with(b"HEAD "))
}

fn get(addr: SocketAddr) -> Resp {
    request(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// True when the server closes `s` (EOF or reset) within `d` (of the last bytes it sent).
fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    let mut b = [0u8; 4096];
    loop {
        let set = |d| s.set_read_timeout(Some(d));
        match before(Instant::now() + d, set, || (&*s).read(&mut b)) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn get_and_head_answer_the_exposition_format() {
    let (a, m) = agent_with_metrics(&[]);
    // After SPEC's fields and the publish socket: the line ends in metrics=.
    let publish = a.publish_path().expect("publish=");
    let want = format!(
        " beacon=off publish={} metrics=127.0.0.1:",
        publish.display()
    );
    assert!(a.ready.contains(&want), "{}", a.ready);
    let r = get(m);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.head);
    assert_eq!(
        r.header("Content-Type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = r.text();
    for name in [
        "tether_build_info{version=\"0.1.0\",revision=\"",
        "tether_uptime_seconds ",
        "tether_requests_total ",
        "tether_facts 0\n",
        "# TYPE tether_fact_info gauge\n",
        "tether_load1 ",
        "tether_memory_available_bytes ",
        "tether_beacon_state{state=\"off\"} 1\n",
        "tether_clients{transport=\"http\"} 1\n",
        "tether_allocations_since_ready_total 0\n",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let status = ok_json(&a.unix().req("STATUS"));
    let id = status["id"].as_str().unwrap();
    assert!(body.contains(&format!(",id=\"{id}\",")), "{body}");
    // HEAD: the same head, the same exact length, no body.
    let mut s = connect(m);
    s.write_all(b"HEAD /metrics HTTP/1.1\r\n\r\n").unwrap();
    let h = read_resp(&mut s, true);
    assert_eq!(h.status, 200);
    let len: usize = h.header("Content-Length").unwrap().parse().unwrap();
    assert!(len.abs_diff(r.body.len()) < 64, "{len} vs {}", r.body.len());
    // The next response on the same connection starts right after the head: no body sent.
    s.write_all(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut s, false).status, 404);
}

/// `--thermal`: what the kernel writes (integer millidegrees) is the temperature, in STATUS
/// and in /metrics; anything else in the file (an exponent, a float, a number far out of
/// range) is no temperature: `null` in STATUS, the family left out of /metrics.
#[test]
fn the_thermal_file_is_read_as_the_kernel_writes_it() {
    let dir = temp_dir("thermal");
    let file = dir.join("temp");
    let path = file.to_str().unwrap().to_string();
    for (text, want) in [
        ("47500\n", Some("47.5")),
        ("-5000\n", Some("-5.0")),
        ("1e5\n", None),
        ("99999999999999999999999\n", None),
        ("45.5\n", None),
    ] {
        std::fs::write(&file, text).unwrap();
        let (a, m) = agent_with_metrics(&["--thermal", &path]);
        let status = ok_json(&a.unix().req("STATUS"));
        let body = get(m).text();
        let line = body
            .lines()
            .find(|l| l.starts_with("tether_temperature_celsius "));
        match want {
            Some(c) => {
                assert_eq!(status["temp_c"].to_string(), c, "{text:?}");
                assert_eq!(
                    line,
                    Some(format!("tether_temperature_celsius {c}").as_str())
                );
            }
            None => {
                assert!(status["temp_c"].is_null(), "{text:?}: {status}");
                assert_eq!(line, None, "{text:?}");
            }
        }
        a.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_codes_for_other_methods_paths_and_malformed_heads() {
    let (_a, m) = agent_with_metrics(&[]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
        let r = request(m, format!("{method} /metrics HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(r.status, 405, "{method}: {}", r.head);
        assert_eq!(
            r.header("Allow").as_deref(),
            Some("GET, HEAD"),
            "{}",
            r.head
        );
    }
    for path in ["/", "/metric", "/metrics/x", "/favicon.ico"] {
        let r = request(m, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(r.status, 404, "{path}: {}", r.head);
    }
    assert_eq!(request(m, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n").status, 200);
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        let mut s = connect(m);
        s.write_all(bad).unwrap();
        let r = read_resp(&mut s, false);
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            r.head
        );
        assert_eq!(r.header("Connection").as_deref(), Some("close"));
        assert!(closed_within(&mut s, slack(Duration::from_secs(3))));
    }
}

#[test]
fn a_head_over_2_kib_gets_431_and_the_connection_closes() {
    let (a, m) = agent_with_metrics(&[]);
    let mut s = connect(m);
    let mut raw = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    raw.resize(3000, b'a');
    // The peer may reset while we still write: the answer must arrive anyway.
    let _ = s.write_all(&raw);
    let r = read_resp(&mut s, false);
    assert_eq!(r.status, 431, "{}", r.head);
    assert_eq!(r.header("Connection").as_deref(), Some("close"));
    assert!(closed_within(&mut s, slack(Duration::from_secs(3))));
    // Exactly 2048 bytes of head is still fine.
    let mut raw = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    raw.resize(2048 - 4, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(request(m, &raw).status, 200);
    assert_eq!(a.unix().req("PING"), "PONG");
}

#[test]
fn a_slow_head_is_closed_within_seconds() {
    let (a, m) = agent_with_metrics(&[]);
    let t = Instant::now();
    let mut one_byte = connect(m);
    one_byte.write_all(b"G").unwrap();
    let mut partial = connect(m);
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: slow")
        .unwrap();
    assert!(closed_within(&mut partial, slack(Duration::from_secs(9))));
    assert!(closed_within(&mut one_byte, slack(Duration::from_secs(2))));
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(4), "closed too early: {took:?}");
    // Meanwhile and afterwards, scrapes and control requests are served.
    assert_eq!(get(m).status, 200);
    assert_eq!(a.unix().req("PING"), "PONG");
}

#[test]
fn keep_alive_pipelining_and_connection_close() {
    let (_a, m) = agent_with_metrics(&[]);
    let mut s = connect(m);
    for _ in 0..3 {
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let r = read_resp(&mut s, false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), None, "{}", r.head);
    }
    // Three pipelined requests, the last one asking to close.
    s.write_all(
        b"GET /metrics HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_resp(&mut s, false).status, 200);
    assert_eq!(read_resp(&mut s, true).status, 200);
    let last = read_resp(&mut s, false);
    assert_eq!(last.status, 404);
    assert_eq!(last.header("Connection").as_deref(), Some("close"));
    assert!(closed_within(&mut s, slack(Duration::from_secs(3))));
    // Clients that got their `Connection: close` answer but keep their end open do not
    // hold the 4 HTTP slots against the next scrapers.
    let open: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(m);
            s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap();
            assert_eq!(read_resp(&mut s, false).status, 200);
            s
        })
        .collect();
    drop(open);
    // HTTP/1.0 closes unless asked to keep alive.
    let mut s = connect(m);
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut s, false).status, 200);
    assert!(closed_within(&mut s, slack(Duration::from_secs(3))));
    let mut s = connect(m);
    s.write_all(b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, false);
    assert_eq!(r.header("Connection").as_deref(), Some("keep-alive"));
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut s, false).status, 200);
}

#[test]
fn a_scrape_flood_never_takes_control_slots_and_a_full_control_table_never_blocks_a_scrape() {
    let (a, m) = agent_with_metrics(&[]);
    // Fill the control table (16 clients) ...
    let mut ctl: Vec<Client> = (0..16).map(|_| a.tcp()).collect();
    for c in ctl.iter_mut() {
        assert_eq!(c.req("PING"), "PONG");
    }
    let mut extra = a.tcp();
    assert!(extra.line().unwrap().starts_with("ERR busy"));
    // ... and scrapes still work.
    for _ in 0..5 {
        assert_eq!(get(m).status, 200);
    }
    drop(ctl);
    // Hold every HTTP slot with half-sent heads: the control port serves a full table of
    // clients meanwhile.
    let mut holders: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(m);
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    let ok = wait_for(slack(Duration::from_secs(5)), || {
        let mut cs: Vec<Client> = (0..16).map(|_| a.tcp()).collect();
        cs.iter_mut().all(|c| c.req("PING") == "PONG")
    });
    assert!(
        ok,
        "the control port has its 16 slots during a scrape flood"
    );
    // A new scrape takes the slot of the head held the longest once its grace is over
    // (that holder is closed); finishing the other held heads gets them answered.
    assert_eq!(get(m).status, 200);
    let mut got: Vec<String> = holders
        .iter_mut()
        .map(|h| {
            let _ = h.write_all(b"\r\n");
            match try_read_resp(h, false) {
                Ok(r) => r.status.to_string(),
                Err(_) => "closed".to_string(),
            }
        })
        .collect();
    got.sort();
    assert_eq!(got, ["200", "200", "200", "closed"]);
    // Kept-alive idle connections give their slot up to a new scraper.
    assert_eq!(get(m).status, 200);
    let body = get(m).text();
    assert!(body.contains("tether_http_refused_total 0\n"), "{body}");
}

/// Opens `n` connections to `m` that send the first byte of a request head and stop,
/// accepted by the agent (the control port answering shows it has had a turn since).
fn stalled(a: &Agent, m: SocketAddr, n: usize) -> Vec<TcpStream> {
    let held = (0..n)
        .map(|_| {
            let mut s = connect(m);
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    assert_eq!(a.unix().req("PING"), "PONG");
    held
}

/// The kernel hands the agent a connection only once its first bytes have come
/// (TCP_DEFER_ACCEPT): connections that send nothing never take a slot.
#[test]
fn silent_connections_take_no_slot() {
    let (a, m) = agent_with_metrics(&[]);
    let held: Vec<TcpStream> = (0..8).map(|_| connect(m)).collect();
    assert_eq!(a.unix().req("PING"), "PONG");
    let t = Instant::now();
    let r = get(m);
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(took < slack(Duration::from_millis(300)), "took {took:?}");
    let body = r.text();
    assert!(
        body.contains("tether_clients{transport=\"http\"} 1\n"),
        "{body}"
    );
    drop(held);
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

#[test]
fn four_stalled_heads_do_not_shut_scrapes_out() {
    let (a, m) = agent_with_metrics(&[]);
    // Four connections that send one byte and no more take every HTTP slot (slowloris). A
    // real scrape waits at most the grace of the youngest (500 ms) for the slot of the
    // oldest, far from their 5 s head timeout, instead of being refused 503.
    let mut held = stalled(&a, m, 4);
    let t = Instant::now();
    let r = get(m);
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(took < slack(Duration::from_millis(1500)), "took {took:?}");
    eprintln!("scrape against 4 stalled heads: {took:?}");
    // The oldest stalled head lost its slot (closed); the next one did not.
    assert!(closed_within(&mut held[0], slack(Duration::from_secs(1))));
    assert!(!closed_within(&mut held[1], Duration::from_millis(100)));
    // Once past their grace, a scrape takes a stalled one's slot at once.
    std::thread::sleep(Duration::from_millis(600));
    let t = Instant::now();
    assert_eq!(get(m).status, 200);
    let took = t.elapsed();
    assert!(took < slack(Duration::from_millis(300)), "took {took:?}");
    eprintln!("scrape against stalled heads past their grace: {took:?}");
    let body = get(m).text();
    assert!(body.contains("tether_http_refused_total 0\n"), "{body}");
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

#[test]
fn scrapes_succeed_while_stalling_peers_reconnect_in_a_loop() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (a, m) = agent_with_metrics(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicUsize::new(0));
    // Four attackers, each holding one connection that sent a byte and stopped, and opening
    // the next as soon as the agent closes it (a slot taken from it, a 503, or the head
    // timeout). A byte, as silent ones never reach the agent.
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, connects) = (stop.clone(), connects.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(m) else {
                        continue;
                    };
                    connects.fetch_add(1, Ordering::Relaxed);
                    let _ = s.write_all(b"G");
                    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    let mut b = [0u8; 256];
                    while !stop.load(Ordering::Relaxed) {
                        match s.read(&mut b) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect();
    // Every slot an attacker's before the first scrape (the agent has had a turn since).
    assert!(wait_for(slack(Duration::from_secs(5)), || {
        connects.load(Ordering::Relaxed) >= 4
    }));
    assert_eq!(a.unix().req("PING"), "PONG");
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = get(m);
        took.push(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.head);
    }
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        t.join().unwrap();
    }
    eprintln!(
        "scrapes against 4 reconnecting stalling peers: {took:?}, {} attacker connects",
        connects.load(Ordering::Relaxed)
    );
    assert!(
        took.iter().all(|t| *t < slack(Duration::from_millis(1500))),
        "{took:?}"
    );
    // The attackers lost slots and came back: the scrapes took their slots.
    assert!(connects.load(Ordering::Relaxed) > 4);
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

#[test]
fn a_request_in_progress_keeps_its_slot_while_stalled_ones_give_theirs_up() {
    let (a, m) = agent_with_metrics(&[]);
    // Three stalled heads, past their grace ...
    let mut idle = stalled(&a, m, 3);
    std::thread::sleep(Duration::from_millis(600));
    // ... and a scraper in the middle of its request head (within its grace).
    let mut scraper = connect(m);
    scraper.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    assert_eq!(a.unix().req("PING"), "PONG");
    // Three newcomers take the stalled ones' slots, the oldest first: never the scraper's.
    let mut newcomers = Vec::new();
    for old in idle.iter_mut() {
        let mut n = connect(m);
        n.write_all(b"G").unwrap();
        newcomers.push(n);
        assert!(closed_within(old, slack(Duration::from_secs(1))));
    }
    scraper.write_all(b"Host: t\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut scraper, false).status, 200);
    for n in newcomers.iter_mut() {
        n.write_all(b"ET /metrics HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_resp(n, false).status, 200);
    }
    // Requests already sent keep their slots too (see the kept-alive test below); the
    // scraper, kept alive and idle, is still served on its connection.
    scraper.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let body = read_resp(&mut scraper, false).text();
    assert!(body.contains("tether_http_refused_total 0\n"), "{body}");
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

/// The state letter of process `pid` in /proc (S asleep, T stopped, R running, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Stops the agent (SIGSTOP) asleep in poll, its turn over: not between two reads of a
/// connection. What is sent before SIGCONT all comes in one turn.
fn stop_asleep_in_poll(a: &Agent) {
    let state = || proc_state(a.pid());
    let asleep = wait_for(slack(Duration::from_secs(5)), || state() == Some('S'));
    assert!(asleep, "the agent does not go back to poll: {:?}", state());
    a.signal(19); // SIGSTOP
    let stopped = wait_for(slack(Duration::from_secs(5)), || state() == Some('T'));
    assert!(stopped, "the agent did not stop: {:?}", state());
}

#[test]
fn a_kept_alive_request_already_sent_keeps_its_slot_and_the_newcomer_gets_503() {
    let (a, m) = agent_with_metrics(&[]);
    const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\n\r\n";
    // Four kept-alive connections, each answered once: every slot is idle.
    let mut kept: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(m);
            s.write_all(SCRAPE).unwrap();
            assert_eq!(read_resp(&mut s, false).status, 200);
            s
        })
        .collect();
    // While the agent is stopped, each sends its next scrape and a fifth connects and
    // sends one too: when it runs again, the next request of all four is already there
    // (unread, in the kernel) in the same turn as the newcomer.
    stop_asleep_in_poll(&a);
    for s in kept.iter_mut() {
        s.write_all(SCRAPE).unwrap();
    }
    let mut newcomer = connect(m);
    newcomer.write_all(SCRAPE).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    a.signal(18); // SIGCONT

    // Every slot has a request in progress: the four are answered, the newcomer refused.
    let outcome = |s: &mut TcpStream| match try_read_resp(s, false) {
        Ok(r) => r.status.to_string(),
        Err(e) => e,
    };
    let got: Vec<String> = kept
        .iter_mut()
        .chain([&mut newcomer])
        .map(outcome)
        .collect();
    assert_eq!(got, ["200", "200", "200", "200", "503"]);
    // Idle again, the kept-alive connections give a slot up to the next scraper.
    assert_eq!(get(m).status, 200);
    let body = get(m).text();
    assert!(body.contains("tether_http_refused_total 1\n"), "{body}");
}

/// A kept-alive scraper (Prometheus keeps its connection) was closed for any newcomer,
/// one that had asked nothing too: under a flood of connects, whose syncookie
/// connections come before their data even with TCP_DEFER_ACCEPT, it lost its connection
/// to them (measured: 18 times in 20 s, once a failed scrape). Such a newcomer now takes
/// a head's slot, never an answered connection's, and is refused when there is none.
#[test]
fn a_kept_alive_scraper_keeps_its_slot_against_connects_that_ask_nothing() {
    let (a, m) = agent_with_metrics(&[]);
    const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\n\r\n";
    let kept_alive = || {
        let mut s = connect(m);
        s.write_all(SCRAPE).unwrap();
        assert_eq!(read_resp(&mut s, false).status, 200);
        s
    };
    let mut scraper = kept_alive();
    // Three stalled heads beside it, then eight more, each taking the oldest head's slot.
    let mut heads = stalled(&a, m, 3);
    let newer = stalled(&a, m, 8);
    for h in heads.iter_mut() {
        assert!(closed_within(h, slack(Duration::from_secs(1))));
    }
    scraper.write_all(SCRAPE).unwrap();
    assert_eq!(read_resp(&mut scraper, false).status, 200);
    // While the agent is stopped, the three heads in slots close and a scraper connects:
    // the turn after, its accept comes before the reads that find them closed. It takes a
    // closed one's slot, not the kept-alive scraper's.
    stop_asleep_in_poll(&a);
    drop(newer);
    let mut first = connect(m);
    first.write_all(SCRAPE).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    a.signal(18); // SIGCONT
    assert_eq!(read_resp(&mut first, false).status, 200);
    scraper.write_all(SCRAPE).unwrap();
    assert_eq!(read_resp(&mut scraper, false).status, 200);
    // Every slot kept alive and idle: one that asks nothing yet is refused, and a scrape
    // takes the slot idle the longest (the first's).
    let mut others: Vec<TcpStream> = (0..2).map(|_| kept_alive()).collect();
    others.push(scraper);
    let mut nothing = connect(m);
    nothing.write_all(b"G").unwrap();
    assert_eq!(read_resp(&mut nothing, false).status, 503);
    assert_eq!(get(m).status, 200);
    assert!(closed_within(&mut first, slack(Duration::from_secs(1))));
    for s in others.iter_mut() {
        s.write_all(SCRAPE).unwrap();
        assert_eq!(read_resp(s, false).status, 200);
    }
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

/// A scraper on a slow link, reading its answer a little at a time, under a flood of
/// connects sending a byte each. Its progress was seen only when poll(2) said the socket
/// took more, once half its send buffer had drained (over a second here), so a newcomer
/// took its slot mid-response for "nothing taken within the grace", and the scrape was cut.
/// The bytes its peer has taken are now read from the kernel (SIOCOUTQ).
#[test]
fn a_slow_reader_keeps_its_slot_under_a_flood() {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::os::fd::AsRawFd;
    let _load = one_load_at_a_time();
    let (a, m) = agent_with_metrics(&["--sndbuf", "1024"]);
    // A body of about 9 KB: more than the agent's send buffer and the reader's receive
    // buffer hold together.
    let mut u = a.unix();
    for i in 0..32 {
        let v = "v".repeat(60);
        assert_eq!(u.req(&format!("SET slow.reader.fact.{i:02} {v}")), "OK");
    }
    let flood = flood(m, ONE_BYTE_FLOOD);
    std::thread::sleep(Duration::from_millis(500));
    // The receive buffer set before connecting, so the window it offers is that small.
    let mut s = {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
        let SocketAddr::V4(v4) = m else {
            unreachable!()
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::RcvBuf, &1024).unwrap();
        connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap();
        TcpStream::from(fd)
    };
    s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // About 2.5 KB a second: a window of about 600 bytes opens every quarter second, half
    // the send buffer (2.3 KB) drains in about a second.
    let t = Instant::now();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    let end = loop {
        match retrying(|| s.read(&mut b)) {
            Ok(0) => break "EOF".to_string(),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) => break e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    flood.end();
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    eprintln!(
        "slow reader under a one-byte flood: {} bytes in {:?}, then {end}",
        got.len(),
        t.elapsed()
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(len > 8000, "{head}");
    assert_eq!(
        body.len(),
        len,
        "cut after {} of {len} body bytes",
        body.len()
    );
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

/// A scraper whose request head comes in two segments 200 ms apart (a lossy link, a
/// client that writes its request line and headers apart), under a flood of connects
/// sending a byte each: its slot went to the flood's newcomers, the oldest head in its
/// grace, within 60 ms. A head with a request line's worth in now keeps its grace against
/// newcomers that have asked nothing.
#[test]
fn a_split_head_keeps_its_slot_under_a_one_byte_flood() {
    let _load = one_load_at_a_time();
    let (a, m) = agent_with_metrics(&[]);
    let flood = flood(m, ONE_BYTE_FLOOD);
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<_> = (0..5)
        .map(|_| {
            let mut s = connect(m);
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let _ = s.write_all(b"Host: board\r\nConnection: close\r\n\r\n");
            try_read_resp(&mut s, false).map(|r| r.status)
        })
        .collect();
    flood.end();
    assert!(got.iter().all(|r| r == &Ok(200)), "{got:?}");
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

/// promtool from Debian's `prometheus` package; under CI its absence is a failure.
fn promtool() -> Option<&'static str> {
    let why = "promtool is missing (Debian package `prometheus`; scripts/test installs it)";
    have("promtool", why).then_some("promtool")
}

/// `promtool check metrics` on `body`: (success, everything it printed).
fn promtool_check(tool: &str, body: &[u8]) -> (bool, String) {
    let mut c = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    let out = c.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn promtool_finds_nothing_even_with_a_full_table_of_escaped_facts() {
    let Some(tool) = promtool() else { return };
    let (a, m) = agent_with_metrics(&[]);
    let (ok, out) = promtool_check(tool, &get(m).body);
    assert!(ok && out.trim().is_empty(), "promtool: {out}");
    // 32 facts, 32-byte keys, 64-byte values of the printable bytes that need escaping.
    let mut u = a.unix();
    let value: String = "\\\"".repeat(32);
    assert_eq!(value.len(), 64);
    for i in 0..32 {
        let key = format!(
            "k{i:02}.{}",
            "x_-".repeat(10).chars().take(28).collect::<String>()
        );
        assert_eq!(key.len(), 32);
        assert_eq!(u.req(&format!("SET {key} {value}")), "OK", "{key}");
    }
    assert!(u.req("SET one.more x").starts_with("ERR full"));
    let r = get(m);
    assert_eq!(r.status, 200);
    let body = r.text();
    assert_eq!(
        r.header("Content-Length").unwrap(),
        r.body.len().to_string()
    );
    assert_eq!(body.matches("tether_fact_info{key=").count(), 32);
    assert!(body.contains("tether_facts 32\n"), "{body}");
    let escaped = "\\\\\\\"".repeat(32);
    assert!(
        body.contains(&format!(
            "key=\"k00.x_-x_-x_-x_-x_-x_-x_-x_-x_-x\",value=\"{escaped}\"}} 1\n"
        )),
        "{body}"
    );
    let (ok, out) = promtool_check(tool, &r.body);
    assert!(ok && out.trim().is_empty(), "promtool: {out}\n{body}");
    // A value with the other printable characters too.
    assert_eq!(
        u.req("SET k00.x_-x_-x_-x_-x_-x_-x_-x_-x_-x a{b}=c,d #e\\nf'g"),
        "OK"
    );
    let (ok, out) = promtool_check(tool, &get(m).body);
    assert!(ok && out.trim().is_empty(), "promtool: {out}");
}

#[test]
fn a_thousand_scrapes_allocate_nothing() {
    let (a, m) = agent_with_metrics(&[]);
    let mut u = a.unix();
    u.req("SET room kitchen");
    u.req("SET quote a\"b\\c");
    let before = a.allocations();
    // Keep-alive scrapes, fresh connections, HEAD and error statuses.
    let mut s = connect(m);
    for i in 0..1000 {
        match i % 10 {
            0..=5 => {
                s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
                assert_eq!(read_resp(&mut s, false).status, 200);
            }
            6 => assert_eq!(get(m).status, 200),
            7 => assert_eq!(request(m, b"HEAD /metrics HTTP/1.1\r\n\r\n").status, 200),
            8 => assert_eq!(request(m, b"GET /x HTTP/1.1\r\n\r\n").status, 404),
            _ => assert_eq!(request(m, b"junk\r\n\r\n").status, 400),
        }
    }
    assert_eq!(a.allocations(), before, "allocs_since_ready moved");
    assert_eq!(before, 0);
}

#[test]
fn two_listeners_and_bad_metrics_options() {
    let a = Agent::start(&["--metrics", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let m = metrics_addrs(&a.ready);
    assert_eq!(m.len(), 2, "{}", a.ready);
    for addr in &m {
        assert_eq!(get(*addr).status, 200);
    }
    // SOCKETS lists both listeners.
    let socks = ok_json(&a.unix().req("SOCKETS"));
    let http: Vec<&serde_json::Value> = socks["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "http-listen")
        .collect();
    assert_eq!(http.len(), 2, "{socks}");
    for (s, addr) in http.iter().zip(&m) {
        assert_eq!(s["addr"], addr.to_string().as_str(), "{socks}");
        assert_eq!(s["accept_conn"], true);
    }
    let f = Agent::try_start(&["--metrics", "nonsense"])
        .err()
        .expect("refused");
    assert_eq!(f.status.code(), Some(64));
    assert_eq!(error_lines(&f.stderr).len(), 1, "{}", f.stderr);
    let f = Agent::try_start(&[
        "--metrics",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ])
    .err()
    .expect("refused");
    assert_eq!(f.status.code(), Some(64));
    // A taken port: one clear error line, exit 69.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let f = Agent::try_start(&["--metrics", &port])
        .err()
        .expect("refused");
    assert_eq!(f.status.code(), Some(69), "{}", f.stderr);
    let e = error_lines(&f.stderr);
    assert!(e.len() == 1 && e[0].contains("--metrics"), "{}", f.stderr);
    // Without --metrics the ready line has no metrics field.
    let plain = Agent::start(&[]);
    assert!(!plain.ready.contains("metrics="), "{}", plain.ready);
}

/// The ```yaml block that follows `<!-- NAME -->` in the README.
fn readme_block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marker = format!("<!-- {name} -->\n```yaml\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README lacks {marker}"))
        + marker.len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_string()
}

fn promtool_ok(tool: &str, args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output_bounded();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_readme_prometheus_config_and_alert_rules_are_valid_and_fire() {
    let Some(tool) = promtool() else { return };
    let dir = temp_dir("promtool");
    std::fs::write(dir.join("prometheus.yml"), readme_block("prometheus.yml")).unwrap();
    std::fs::write(
        dir.join("tether.rules.yml"),
        readme_block("tether.rules.yml"),
    )
    .unwrap();
    let out = promtool_ok(tool, &["check", "config", "prometheus.yml"], &dir);
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
    let out = promtool_ok(tool, &["check", "rules", "tether.rules.yml"], &dir);
    assert!(out.contains("SUCCESS: 3 rules found"), "{out}");
    // The rules fire as the README says: a board whose target left (stale `up`) is silent,
    // once however many addresses it had, also when another board took its address; one
    // that moved to another address is not; one listed but not answering (`up` 0, ever or
    // since a while) fails its scrapes and is not silent; one above 80 °C for 5 minutes
    // is hot; a healthy board raises nothing.
    std::fs::write(
        dir.join("tests.yml"),
        r#"rule_files: [tether.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="tether",instance="10.0.0.1:9545",tether_id="a",tether_host="pi-a"}'
        values: '1 1 1 stale'
      - series: 'up{job="tether",instance="10.0.0.1:36531",tether_id="a",tether_host="pi-a"}'
        values: '1 stale'
      - series: 'up{job="tether",instance="10.0.0.1:9545",tether_id="e",tether_host="pi-e"}'
        values: '_ _ _ _ 1x8'
      - series: 'up{job="tether",instance="10.0.0.2:9545",tether_id="b",tether_host="pi-b"}'
        values: '1x12'
      - series: 'tether_temperature_celsius{job="tether",instance="10.0.0.2:9545",tether_id="b",tether_host="pi-b"}'
        values: '70 85x11'
      - series: 'up{job="tether",instance="10.0.0.3:9545",tether_id="c",tether_host="pi-c"}'
        values: '1 1 1 stale'
      - series: 'up{job="tether",instance="[fe80::3%eth0]:9545",tether_id="c",tether_host="pi-c"}'
        values: '_ _ _ 1x9'
      - series: 'up{job="tether",instance="10.0.0.4:9545",tether_id="d",tether_host="pi-d"}'
        values: '0x12'
      - series: 'up{job="tether",instance="10.0.0.6:9545",tether_id="f",tether_host="pi-f"}'
        values: '1 1 1 0x10'
    alert_rule_test:
      - eval_time: 2m
        alertname: TetherBoardSilent
        exp_alerts: []
      - eval_time: 6m
        alertname: TetherBoardSilent
        exp_alerts:
          - exp_labels: {tether_id: a, tether_host: pi-a, severity: warning}
            exp_annotations: {summary: "tether board pi-a (a) stopped answering"}
      - eval_time: 10m
        alertname: TetherBoardSilent
        exp_alerts:
          - exp_labels: {tether_id: a, tether_host: pi-a, severity: warning}
            exp_annotations: {summary: "tether board pi-a (a) stopped answering"}
      - eval_time: 3m
        alertname: TetherScrapeFailing
        exp_alerts: []
      - eval_time: 6m
        alertname: TetherScrapeFailing
        exp_alerts:
          - exp_labels: {job: tether, instance: "10.0.0.4:9545", tether_id: d, tether_host: pi-d, severity: warning}
            exp_annotations: {summary: "tether board pi-d (10.0.0.4:9545) is listed but its /metrics does not answer"}
      - eval_time: 10m
        alertname: TetherScrapeFailing
        exp_alerts:
          - exp_labels: {job: tether, instance: "10.0.0.4:9545", tether_id: d, tether_host: pi-d, severity: warning}
            exp_annotations: {summary: "tether board pi-d (10.0.0.4:9545) is listed but its /metrics does not answer"}
          - exp_labels: {job: tether, instance: "10.0.0.6:9545", tether_id: f, tether_host: pi-f, severity: warning}
            exp_annotations: {summary: "tether board pi-f (10.0.0.6:9545) is listed but its /metrics does not answer"}
      - eval_time: 4m
        alertname: TetherBoardHot
        exp_alerts: []
      - eval_time: 8m
        alertname: TetherBoardHot
        exp_alerts:
          - exp_labels: {job: tether, instance: "10.0.0.2:9545", tether_id: b, tether_host: pi-b, severity: warning}
            exp_annotations: {summary: "tether board pi-b is at 85.0 °C"}
"#,
    )
    .unwrap();
    promtool_ok(tool, &["test", "rules", "tests.yml"], &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host name that is not UTF-8 (the kernel takes any bytes, here 60 Latin-1 `é`s and
/// `-pi`, set in a UTS namespace of the agent's own): STATUS and the `host` label show each
/// byte that is not UTF-8 as U+FFFD and the whole name (it was cut after 21 of them: the
/// name's 64 bytes held only 21 three-byte characters).
#[test]
fn a_host_name_that_is_not_utf8_is_shown_whole() {
    use std::os::unix::ffi::OsStrExt;
    if !can_netns() {
        // The same need: root, to make a UTS namespace.
        return;
    }
    let dir = temp_dir("host-bytes");
    let extra = ["--no-beacon", "--metrics", "127.0.0.1:0"];
    let args = loopback_agent_args(&dir.join("t.sock"), &extra);
    let mut host = vec![0xe9u8; 60];
    host.extend_from_slice(b"-pi");
    let mut cmd = Command::new("unshare");
    cmd.args(["-u", "sh", "-c"]);
    cmd.arg("printf %s \"$BOARD_HOST\" > /proc/sys/kernel/hostname && exec \"$@\"");
    cmd.arg("sh")
        .env("BOARD_HOST", std::ffi::OsStr::from_bytes(&host));
    cmd.args(runner()).arg(BIN).args(&args);
    let a = Agent::spawn_command(cmd, dir, &[])
        .unwrap_or_else(|f| panic!("{:?} {} {}", f.status, f.stdout, f.stderr));
    let want = format!("{}-pi", "\u{fffd}".repeat(60));
    let s = ok_json(&a.unix().req("STATUS"));
    assert_eq!(s["host"], want.as_str(), "{s}");
    let m = metrics_addrs(&a.ready);
    let body = get(m[0]).text();
    let label = format!("host=\"{want}\"");
    assert!(body.contains(&label), "{body}");
    let (code, err) = a.stop();
    assert_eq!(code.code(), Some(0), "{err}");
}

/// One scrape on a new connection, as Prometheus' first scrape does; its status line or
/// what went wrong, and how long it took. `limit` is the scrape timeout.
fn scrape(m: SocketAddr, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    let r = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&m, limit)?;
        s.set_read_timeout(Some(
            limit
                .saturating_sub(t.elapsed())
                .max(Duration::from_millis(1)),
        ))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("EOF")
            .to_string())
    })();
    (r.unwrap_or_else(|e| format!("error: {e}")), t.elapsed())
}

/// Held by the tests that flood or hog an agent (each takes a core): one at a time, so
/// none of them starves another's agent into answers a quiet machine never gives.
static LOADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_load_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    LOADS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A flood of connects from one host ([`flood`]).
#[derive(Clone, Copy, Debug)]
struct Flood {
    /// Sent once connected, then nothing more (empty: silent).
    first: &'static [u8],
    /// A connect this often.
    every: Duration,
    /// Each connection held this long (the flood's fds: `hold / every`).
    hold: Duration,
}

/// Connects at most every 20 ms, each sending one byte, held 1 s: the flood the slow
/// reader and the split head hold their slots under.
const ONE_BYTE_FLOOD: Flood = Flood {
    first: b"G",
    every: Duration::from_millis(20),
    hold: Duration::from_secs(1),
};

/// Threads loading an agent (a [`flood`], [`pipelining_hogs`]) until ended, or dropped
/// (a test that fails leaves none running).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `n` threads each running `f` with the stop flag.
    fn start(n: usize, f: impl Fn(Arc<AtomicBool>) + Clone + Send + 'static) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (f, stop) = (f.clone(), stop.clone());
                std::thread::spawn(move || f(stop))
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the threads and waits for them.
    fn end(self) {}
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Floods `m` until ended. Non-blocking connects: the kernel retries a SYN when the
/// agent's backlog is full, as a flooding host's would.
fn flood(m: SocketAddr, f: Flood) -> Load {
    Load::start(1, move |stop| {
        use nix::sys::socket::{
            connect, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn,
        };
        use std::os::fd::AsRawFd;
        let SocketAddr::V4(v4) = m else {
            unreachable!()
        };
        let mut held = std::collections::VecDeque::new();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let flags = SockFlag::SOCK_NONBLOCK;
            let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None).unwrap();
            let _ = connect(fd.as_raw_fd(), &SockaddrIn::from(v4));
            held.push_back((Instant::now(), fd, f.first.is_empty()));
            for (_, fd, sent) in held.iter_mut().filter(|h| !h.2) {
                // Fails (ENOTCONN) until the handshake is done: tried again next time.
                *sent = send(fd.as_raw_fd(), f.first, MsgFlags::MSG_NOSIGNAL).is_ok();
            }
            while held.front().is_some_and(|h| h.0.elapsed() >= f.hold) {
                held.pop_front();
            }
            next += f.every;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}

/// `n` scrapes on new connections, 50 ms apart, under `f`: each answered 200 within
/// `within` (at most 10 s, the scrape timeout).
fn scrapes_under_flood(f: Flood, n: usize, within: Duration) {
    let _load = one_load_at_a_time();
    let (a, m) = agent_with_metrics(&[]);
    let flood = flood(m, f);
    // In full swing once it holds all it will (a fast flood is kept short: it takes a
    // core, and other tests run beside it).
    std::thread::sleep(f.hold.min(Duration::from_secs(2)));
    let got: Vec<_> = (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            scrape(m, Duration::from_secs(10))
        })
        .collect();
    flood.end();
    eprintln!("scrapes during {f:?}: {got:?}");
    assert!(
        got.iter()
            .all(|(s, t)| s.starts_with("HTTP/1.1 200") && *t < within),
        "{got:?}"
    );
    assert_eq!(a.allocations(), 0);
}

/// Silent connects faster than the slots free up (4 slots, 500 ms grace: 8 a second)
/// filled the listen backlog while the agent held new connections there for a grace to
/// end, and the scraper's SYN was dropped: scrapes took 1-8 s or timed out (40 a second:
/// every one). New connections are accepted at once now, and silent ones are not handed
/// over by the kernel at all (TCP_DEFER_ACCEPT).
#[test]
fn a_flood_of_silent_connections_does_not_shut_scrapes_out() {
    let f = Flood {
        first: b"",
        every: Duration::from_millis(25),
        hold: Duration::from_secs(3),
    };
    scrapes_under_flood(f, 4, slack(Duration::from_secs(2)));
}

/// Peers that send one byte as they connect, as fast as they can, each took the slot of
/// the oldest head in its grace, often a scraper accepted before its request was read
/// (a review: Prometheus lost 11 of 31 scrapes; here 1 or more of 20 got EOF). A slot
/// with as many bytes waiting as a request needs is not taken now. Connects this fast
/// overflow the listen backlog now and then, whoever the server is: a scrape may wait for
/// its SYN to be sent again (1 s, 3 s), within the scrape timeout.
#[test]
fn a_flood_of_one_byte_connections_does_not_shut_scrapes_out() {
    let f = Flood {
        first: b"G",
        every: Duration::from_micros(100),
        hold: Duration::from_millis(100),
    };
    scrapes_under_flood(f, 20, Duration::from_secs(10));
}

/// Evicted metrics connections were lingered like answered ones, and a flood of them
/// pushed a control client's lingering out: one that wrote after QUIT was reset. Now
/// one never answered is closed, and at most HTTP_SLOTS metrics connections linger.
#[test]
fn a_flood_of_evicted_http_connections_does_not_cut_the_control_ports_lingering() {
    let (a, m) = agent_with_metrics(&[]);
    // A control client quits: the agent half-closes it and drains it (lingering) ...
    let mut c = TcpStream::connect(a.tcp_addr()).unwrap();
    c.set_read_timeout(Some(slack(Duration::from_secs(5))))
        .unwrap();
    c.write_all(b"QUIT\n").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let quit = Instant::now();
    // ... while 30 stalling HTTP peers take each other's slots and keep their ends open
    // (more than the lingering list holds).
    let held = stalled(&a, m, 30);
    // What the client still sends is drained, not answered with a reset.
    c.write_all(b"PING\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let late = c.write_all(b"PING\n").and_then(|_| {
        std::thread::sleep(Duration::from_millis(50));
        c.read(&mut [0u8; 16])
    });
    if quit.elapsed() > Duration::from_millis(1500) {
        // A loaded machine: the 2 s linger may be over, a reset is then right.
        eprintln!("skipped: {:?} since QUIT", quit.elapsed());
        return;
    }
    assert_eq!(
        late.map_err(|e| e.kind()),
        Ok(0),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    drop(held);
    assert_eq!(a.allocations(), 0, "allocs_since_ready");
}

/// `n` peers that each send pipelined scrapes until their socket blocks and read
/// nothing; when the agent closes one (or gives its slot to a newcomer), it connects
/// again. Until ended.
fn pipelining_hogs(m: SocketAddr, n: usize) -> Load {
    use nix::sys::socket::{setsockopt, sockopt};
    Load::start(n, move |stop| {
        let reqs = b"GET /metrics HTTP/1.1\r\n\r\n".repeat(60);
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = TcpStream::connect(m) else {
                continue;
            };
            let _ = setsockopt(&s, sockopt::RcvBuf, &1024);
            s.set_write_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                match s.write(&reqs) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        }
    })
}

/// Peers that pipeline requests and never read the answers held their slots sending, up
/// to the 10 s send timeout each time, and reconnected: 138 of 144 scrapes got 503. A
/// response its peer has taken nothing of for 500 ms now gives its slot up to a newcomer,
/// and so does a pipelining peer between two answers (under qemu its socket buffer took
/// hundreds of answers before it blocked, and four of them kept every slot busy).
#[test]
fn four_peers_that_pipeline_and_never_read_do_not_shut_scrapes_out() {
    let _load = one_load_at_a_time();
    let (a, m) = agent_with_metrics(&[]);
    let hogs = pipelining_hogs(m, 4);
    std::thread::sleep(Duration::from_secs(2));
    let got: Vec<_> = (0..5)
        .map(|_| {
            let r = scrape(m, Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(500));
            r
        })
        .collect();
    hogs.end();
    eprintln!("scrapes against 4 pipelining non-readers: {got:?}");
    assert!(
        got.iter().all(|(s, _)| s.starts_with("HTTP/1.1 200")),
        "{got:?}"
    );
    assert_eq!(a.allocations(), 0);
}

/// A peer's pipelined requests were all answered in one turn, as long as its socket
/// buffer took the answers (on loopback, hundreds): four such peers held the run loop,
/// and every control client with it, for up to 2 s under qemu. One answer per slot per
/// turn now.
#[test]
fn pipelining_peers_do_not_hold_up_the_control_port() {
    let _load = one_load_at_a_time();
    let (a, m) = agent_with_metrics(&[]);
    let hogs = pipelining_hogs(m, 4);
    let mut c = a.tcp();
    let mut worst = Duration::ZERO;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let p = Instant::now();
        assert_eq!(c.req("PING"), "PONG");
        worst = worst.max(p.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    hogs.end();
    eprintln!("slowest PING beside 4 pipelining peers: {worst:?}");
    assert!(worst < slack(Duration::from_millis(50)), "{worst:?}");
    assert_eq!(a.allocations(), 0);
}
