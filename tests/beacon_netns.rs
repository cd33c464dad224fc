//! The beacon and `tether scan` across real network namespaces (issue 3).
//!
//! Topology, created and removed by the test itself (root only; skipped otherwise):
//!
//! ```text
//!   ns B (peer)              ns A (agent)               ns C (other side)
//!   vb 10.231.0.2/24 <-veth-> va 10.231.0.1/24
//!                             vx 10.232.0.1/24 <-veth-> vy 10.232.0.2/24
//! ```
//! The agent beacons on `va` only. Whatever reaches C proves SO_BINDTODEVICE failed.
//! All traffic stays inside these namespaces.

mod common;
use common::*;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The three namespaces; deleted on drop (which also deletes their veths).
struct Net {
    a: Netns,
    b: Netns,
    c: Netns,
    va: String,
    vb: String,
}

impl Net {
    fn new(tag: &str) -> Net {
        let id = std::process::id() % 100_000;
        let n = |x: &str| Netns::new(format!("tt{x}{tag}{id}"));
        let net = Net {
            a: n("a"),
            b: n("b"),
            c: n("c"),
            va: format!("va{tag}{id}"),
            vb: format!("vb{tag}{id}"),
        };
        net.make_va();
        let vx = format!("vx{tag}{id}");
        let vy = format!("vy{tag}{id}");
        veth(&net.a, &vx, &net.c, &vy);
        net.a.addr_up(&vx, "10.232.0.1/24");
        net.c.addr_up(&vy, "10.232.0.2/24");
        wait_carrier(&net.a, &vx);
        net
    }

    /// (Re)creates the va/vb pair: a recreated interface gets a new index.
    fn make_va(&self) {
        veth(&self.a, &self.va, &self.b, &self.vb);
        self.a.addr_up(&self.va, "10.231.0.1/24");
        self.b.addr_up(&self.vb, "10.231.0.2/24");
        wait_carrier(&self.a, &self.va);
    }
}

/// Collects every datagram arriving on UDP port 4546 in `ns` for `secs`.
fn listen(ns: &str, secs: f64) -> std::thread::JoinHandle<Vec<(Vec<u8>, SocketAddr)>> {
    listen_udp(ns, "0.0.0.0:4546", secs)
}

fn json(d: &[u8]) -> serde_json::Value {
    serde_json::from_slice(d)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(d)))
}

fn beacons(got: &[(Vec<u8>, SocketAddr)]) -> Vec<serde_json::Value> {
    got.iter()
        .filter(|(d, _)| d.starts_with(b"{"))
        .map(|(d, _)| {
            assert!(d.len() <= 512, "beacon of {} bytes", d.len());
            json(d)
        })
        .collect()
}

fn beacon_state(a: &Agent) -> String {
    let s = a.unix().req("STATUS");
    let v = json(s.strip_prefix("OK ").unwrap().as_bytes());
    v["beacon"]["state"].as_str().unwrap().to_string()
}

fn wait_state(a: &Agent, want: &str, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let s = beacon_state(a);
        if s == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "beacon state stayed {s:?}, wanted {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_agent(net: &Net, extra: &[&str]) -> Agent {
    let dir = temp_dir("beacon");
    let args = loopback_agent_args(&dir.join("t.sock"), extra);
    Agent::spawn_in(Some(&net.a), &args, dir, &[])
        .unwrap_or_else(|f| panic!("agent failed: {:?} {} {}", f.status, f.stdout, f.stderr))
}

/// Sends `count` probes of `size` bytes from namespace B (nonces `nonce`, then `nonce1`,
/// `nonce2`...: the agent answers a repeat of a waiting probe once) and returns the answers.
fn probe(net: &Net, nonce: &str, size: usize, count: usize, wait: Duration) -> Vec<Vec<u8>> {
    let nonce = nonce.to_string();
    in_ns(&net.b, move || {
        let s = UdpSocket::bind("10.231.0.2:0").unwrap();
        s.set_broadcast(true).unwrap();
        for i in 0..count {
            let n = if i == 0 { String::new() } else { i.to_string() };
            let mut p = format!("TETHER? {nonce}{n}").into_bytes();
            p.resize(size, b' ');
            s.send_to(&p, (Ipv4Addr::BROADCAST, 4546)).unwrap();
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let end = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                assert_eq!(
                    from.ip().to_string(),
                    "10.231.0.1",
                    "answer by unicast from the agent"
                );
                got.push(buf[..n].to_vec());
            }
        }
        got
    })
    .join()
    .unwrap()
}

#[test]
fn beacon_leaves_only_its_interface_and_scan_finds_it() {
    if !can_netns() {
        return;
    }
    let net = Net::new("s");
    let on_b = listen(&net.b, 3.5 * slack(Duration::from_secs(1)).as_secs_f64());
    let on_c = listen(&net.c, 3.5 * slack(Duration::from_secs(1)).as_secs_f64());
    let a = start_agent(&net, &["--iface", &net.va, "--interval", "1"]);
    assert_eq!(
        a.ready_field("beacon"),
        Some(format!("{}:4546", net.va).as_str()),
        "{}",
        a.ready
    );
    assert_eq!(a.unix().req("SET room kitchen"), "OK");

    let got_b = on_b.join().unwrap();
    let got_c = on_c.join().unwrap();
    assert!(
        got_c.is_empty(),
        "datagrams leaked to the other interface: {got_c:?}"
    );
    let bs = beacons(&got_b);
    assert!(
        bs.len() >= 2,
        "expected ≥2 beacons on {}, got {}",
        net.vb,
        bs.len()
    );
    for (d, from) in &got_b {
        assert_eq!(from.to_string(), "10.231.0.1:4546");
        assert!(d.len() <= 512);
    }
    for w in bs.windows(2) {
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1,
            "seq +1"
        );
    }
    let b = &bs[bs.len() - 1];
    assert_eq!(b["tether"], 1);
    assert_eq!(b["addr"], "10.231.0.1");
    assert_eq!(b["iface"], net.va.as_str());
    assert_eq!(b["port"].as_u64().unwrap(), u64::from(a.tcp_addr().port()));
    assert_eq!(b["facts"]["room"], "kitchen");
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    for k in ["host", "uptime", "load", "mem_avail_kb", "temp_c"] {
        assert!(b.get(k).is_some(), "beacon lacks {k}: {b}");
    }

    // A probe is answered by unicast, never larger than the probe.
    let answers = probe(&net, "n0nce42", 512, 1, slack(Duration::from_millis(800)));
    assert_eq!(answers.len(), 1, "one answer per probe");
    let ans = json(&answers[0]);
    assert_eq!(ans["nonce"], "n0nce42");
    assert_eq!(ans["id"], id.as_str());
    // Scan without -i sends each probe to 255.255.255.255 and to the directed broadcast:
    // both copies reach the agent, which answers once (one token of its rate limit).
    let twice = in_ns(&net.b, move || {
        let s = UdpSocket::bind("10.231.0.2:0").unwrap();
        s.set_broadcast(true).unwrap();
        let mut p = b"TETHER? twice".to_vec();
        p.resize(512, b' ');
        for to in [Ipv4Addr::BROADCAST, Ipv4Addr::new(10, 231, 0, 255)] {
            s.send_to(&p, (to, 4546)).unwrap();
        }
        let end = Instant::now() + slack(Duration::from_millis(800));
        let mut buf = [0u8; 600];
        let set = |d| s.set_read_timeout(Some(d));
        std::iter::from_fn(|| before(end, set, || s.recv(&mut buf)).ok()).count()
    });
    assert_eq!(twice.join().unwrap(), 1, "answers to one probe heard twice");
    let small = probe(&net, "tiny", 280, 1, slack(Duration::from_millis(800)));
    for d in &small {
        assert!(
            d.len() <= 280,
            "answer of {} bytes to a 280-byte probe",
            d.len()
        );
    }

    // `tether scan` in the peer namespace lists the agent with the right fields, with -i
    // and without it (B has no default route: each interface's directed broadcast).
    for args in [&["-i", &net.vb][..], &[]] {
        let mut argv = vec!["scan", "-t", "1", "--json"];
        argv.extend_from_slice(args);
        let out = tether_cmd_in(Some(&net.b), &argv).output_bounded();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "scan {args:?}: {err}");
        let list = json(&out.stdout);
        let rows = list.as_array().unwrap();
        assert_eq!(rows.len(), 1, "scan {args:?}: {list}");
        assert_eq!(rows[0]["id"], id.as_str());
        assert_eq!(rows[0]["addr"], "10.231.0.1");
        let port = u64::from(a.tcp_addr().port());
        assert_eq!(rows[0]["port"].as_u64().unwrap(), port);
        assert_eq!(rows[0]["facts"], 1);
    }
    let table = tether_cmd_in(Some(&net.b), &["scan", "-i", &net.vb, "-t", "1"]).output_bounded();
    let t = String::from_utf8_lossy(&table.stdout);
    assert!(t.starts_with("ID "), "{t}");
    assert!(t.contains(&id) && t.contains("10.231.0.1"), "{t}");

    // Goodbye on SIGTERM.
    let on_b = listen(&net.b, 2.0 * slack(Duration::from_secs(1)).as_secs_f64());
    std::thread::sleep(Duration::from_millis(200));
    let (status, _) = a.stop();
    assert_eq!(status.code(), Some(0));
    let got = on_b.join().unwrap();
    assert!(
        beacons(&got)
            .iter()
            .any(|b| b["bye"] == true && b["id"] == id.as_str()),
        "no goodbye beacon among {} datagrams",
        got.len()
    );
}

#[test]
fn probe_flood_is_answered_at_a_bounded_rate() {
    if !can_netns() {
        return;
    }
    let net = Net::new("f");
    // At -v, where each dropped datagram is a debug line: a flood must not flood the log.
    let dir = temp_dir("beacon");
    let args = loopback_agent_args(
        &dir.join("t.sock"),
        &["--iface", &net.va, "--interval", "60"],
    );
    let a = Agent::spawn_in(Some(&net.a), &args, dir, &[("RUST_LOG", "debug")])
        .unwrap_or_else(|f| panic!("agent failed: {:?} {}", f.status, f.stderr));
    wait_state(&a, "up", slack(Duration::from_secs(3)));
    let answers = probe(&net, "flood", 512, 300, slack(Duration::from_millis(1500)));
    // Bucket of 8 plus 4/s refill: a flood of 300 gets a small, bounded number of answers.
    let bound = 8 + 4 * (1 + slack(Duration::from_millis(1500)).as_secs() as usize);
    assert!(!answers.is_empty(), "no answer at all");
    assert!(
        answers.len() <= bound,
        "{} answers to 300 probes (bound {bound})",
        answers.len()
    );
    let stats = a.unix().req("STATS");
    // Probes beyond the bucket are counted as limited (the kernel may drop some first).
    assert!(
        json_u64(&stats, "probes_limited").unwrap() >= 100,
        "{stats}"
    );
    assert!(
        json_u64(&stats, "probes_answered").unwrap() <= bound as u64,
        "{stats}"
    );
    // Garbage datagrams are dropped and counted; the agent keeps serving. A flood of them
    // is logged at most 10 lines a second, and the next line says how many were left out.
    let garbage = |rounds: usize| {
        in_ns(&net.b, move || {
            let s = UdpSocket::bind("10.231.0.2:0").unwrap();
            s.set_broadcast(true).unwrap();
            for _ in 0..rounds {
                for d in [&b"\x00\xffgarbage"[..], b"TETHER?", &[b'x'; 600]] {
                    s.send_to(d, (Ipv4Addr::BROADCAST, 4546)).unwrap();
                }
            }
        })
        .join()
        .unwrap()
    };
    garbage(300);
    std::thread::sleep(slack(Duration::from_millis(1100)));
    garbage(1);
    std::thread::sleep(Duration::from_millis(300));
    let stats = a.unix().req("STATS");
    let dropped = json_u64(&stats, "datagrams_dropped").unwrap();
    // (The kernel drops what the socket buffer cannot hold; the agent counts the rest.)
    assert!(dropped > 30, "{stats}");
    // Beacons, probe answers and dropped garbage touch no heap either.
    assert_eq!(json_u64(&stats, "allocs_since_ready"), Some(0), "{stats}");
    assert_eq!(a.unix().req("PING"), "PONG");
    let (_, log) = a.stop();
    let lines = log.lines().filter(|l| l.contains(" dropped ")).count();
    let secs = 2 + slack(Duration::from_millis(1400)).as_secs() as usize;
    assert!(
        lines <= 10 * secs,
        "{lines} log lines for {dropped} dropped datagrams"
    );
    assert!(
        log.contains("more dropped datagrams not logged)"),
        "no count of the lines left out:\n{log}"
    );
}

/// A probe whose source address is a broadcast address on the agent's link (here the
/// broadcast of a second subnet on its interface, which the interface's own broadcast
/// address does not name; a spoofer needs no more) gets no answer: answers are sent with
/// SO_BROADCAST off, so the kernel refuses one that would go to the whole LAN.
#[test]
fn a_probe_from_a_broadcast_source_is_not_answered_to_the_lan() {
    if !can_netns() {
        return;
    }
    let net = Net::new("b");
    let va = net.va.clone();
    net.a.ip(&[
        "addr",
        "add",
        "10.233.0.1/24",
        "broadcast",
        "10.233.0.255",
        "dev",
        &va,
    ]);
    // B owns that broadcast address as a host address, so it can send from it (and
    // would receive what the agent broadcasts back to it).
    let vb = net.vb.clone();
    net.b.ip(&["addr", "add", "10.233.0.255/32", "dev", &vb]);
    let a = start_agent(&net, &["--iface", &net.va, "--interval", "60"]);
    wait_state(&a, "up", slack(Duration::from_secs(3)));
    let got = in_ns(&net.b, || {
        let s = UdpSocket::bind("10.233.0.255:40010").unwrap();
        let mut p = b"TETHER? spoofed".to_vec();
        p.resize(512, b' ');
        s.send_to(&p, ("10.231.0.1", 4546)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let end = Instant::now() + slack(Duration::from_millis(1000));
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    })
    .join()
    .unwrap();
    assert!(got.is_empty(), "answered to a broadcast source: {got:?}");
    let stats = a.unix().req("STATS");
    assert!(json_u64(&stats, "probes_answered") == Some(0), "{stats}");
    assert!(
        json_u64(&stats, "datagrams_dropped").unwrap() >= 1,
        "{stats}"
    );
    // The same probe from B's own address is answered.
    let answers = probe(&net, "plain", 512, 1, slack(Duration::from_millis(1000)));
    assert_eq!(answers.len(), 1, "a plain probe is answered");
    assert_eq!(a.unix().req("PING"), "PONG");
}

#[test]
fn interface_down_up_deleted_and_recreated() {
    if !can_netns() {
        return;
    }
    let net = Net::new("i");
    let a = start_agent(&net, &["--iface", &net.va, "--interval", "1"]);
    let within = slack(Duration::from_secs(3));
    wait_state(&a, "up", within);

    let families = |a: &Agent| {
        let s = a.unix().req("STATUS");
        json(s.strip_prefix("OK ").unwrap().as_bytes())["beacon"]["families"].to_string()
    };
    // IPv4 beacons at once; IPv6 joins once the link-local address has passed DAD.
    assert!(families(&a).starts_with("[4"), "{}", families(&a));
    assert!(sh(&["ip", "-n", &net.a, "link", "set", &net.va, "down"]));
    wait_state(&a, "down", within);
    assert_eq!(families(&a), "[]", "nothing beacons while down");
    assert!(sh(&["ip", "-n", &net.a, "link", "set", &net.va, "up"]));
    wait_state(&a, "up", within);
    assert!(families(&a).starts_with("[4"), "{}", families(&a));

    assert!(sh(&["ip", "-n", &net.a, "link", "del", &net.va]));
    wait_state(&a, "absent", within);
    assert_eq!(a.unix().req("PING"), "PONG");
    net.make_va();
    let on_b = listen(&net.b, 2.5 * slack(Duration::from_secs(1)).as_secs_f64());
    let got = on_b.join().unwrap();
    assert!(
        !beacons(&got).is_empty(),
        "no beacon after the interface was recreated"
    );
    assert_eq!(beacon_state(&a), "up");
    let (status, _) = a.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn absent_interface_at_start_and_no_default_interface() {
    if !can_netns() {
        return;
    }
    let net = Net::new("d");
    let a = start_agent(&net, &["--iface", "nosuch0", "--interval", "1"]);
    assert_eq!(a.ready_field("beacon"), Some("nosuch0:4546"), "{}", a.ready);
    wait_state(&a, "absent", slack(Duration::from_secs(3)));
    assert_eq!(a.unix().req("PING"), "PONG");
    // SOCKETS: the interface with no socket has the same keys as any socket.
    let socks = a.unix().req("SOCKETS");
    let v = json(socks.strip_prefix("OK ").unwrap().as_bytes());
    let b: Vec<_> = v["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "udp-beacon")
        .collect();
    assert_eq!(b.len(), 1, "{socks}");
    for k in ["addr", "accept_conn", "reuse_addr", "rcvbuf", "sndbuf"] {
        assert!(b[0][k].is_null(), "{k}: {socks}");
    }
    assert_eq!(b[0]["device"], "nosuch0", "{socks}");
    assert_eq!(b[0]["state"], "absent", "{socks}");
    // A mistyped --iface is said once in the log, not only in STATUS.
    let (status, err) = a.stop();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        err.matches("beacon on nosuch0: interface absent; retrying every interval")
            .count(),
        1,
        "{err}"
    );

    // A namespace with nothing but loopback: no default interface, beacons off, agent runs.
    let lonely = Netns::new(format!("ttl{}", std::process::id() % 100_000));
    let dir = temp_dir("nodefault2");
    let args = loopback_agent_args(&dir.join("t.sock"), &[]);
    let a =
        Agent::spawn_in(Some(&lonely), &args, dir, &[]).unwrap_or_else(|f| panic!("{}", f.stderr));
    assert_eq!(a.ready_field("beacon"), Some("off"), "{}", a.ready);
    assert_eq!(beacon_state(&a), "off");
    let (status, err) = a.stop();
    assert_eq!(status.code(), Some(0));
    assert!(err.contains("no beacons until one is"), "{err}");
    // Beacons still on (an interface may come): listening on loopback only, the board
    // would announce a port its LAN cannot reach, and start-up says so now, not only when
    // the interface is there at start.
    assert!(
        err.contains("no --listen address serves IPv4: IPv4 beacons name control port"),
        "{err}"
    );

    // An interface whose name holds a control character (Linux allows all but white
    // space) is never the default: it would reach the ready line, the log and systemd's
    // status raw. The next usable one is taken instead. (Veth pairs inside the namespace,
    // their peers up in a second namespace of the test's, for a carrier: what the agent
    // sends stays there.)
    let far = Netns::new(format!("ttf{}", std::process::id() % 100_000));
    let veth_to_far = |dev: &str, peer: &str, up: bool| {
        lonely.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", &far,
        ]);
        if up {
            far.ip(&["link", "set", peer, "up"]);
        }
    };
    let escaped = "e\u{1b}[2Jx";
    veth_to_far(escaped, "p0", true);
    lonely.addr_up(escaped, "10.77.1.1/24");
    let dir = temp_dir("nodefault3");
    let args = loopback_agent_args(&dir.join("t.sock"), &[]);
    let a = Agent::spawn_in(Some(&lonely), &args, dir.clone(), &[])
        .unwrap_or_else(|f| panic!("{}", f.stderr));
    assert_eq!(a.ready_field("beacon"), Some("off"), "{:?}", a.ready);
    let (status, err) = a.stop();
    assert_eq!(status.code(), Some(0));
    assert!(!err.contains('\u{1b}'), "{err:?}");
    // An address added without `brd` leaves its interface no broadcast address (the
    // kernel reads it back as 0.0.0.0, where a probe or beacon would reach only this
    // host): not the default either; d0, made after it, is.
    veth_to_far("n0", "p2", true);
    lonely.ip(&["addr", "add", "10.77.3.1/24", "dev", "n0"]);
    lonely.ip(&["link", "set", "n0", "up"]);
    // Nor one without a carrier (its peer down: a cable out), though it has all else.
    veth_to_far("c0", "p3", false);
    lonely.addr_up("c0", "10.77.4.1/24");
    veth_to_far("d0", "p1", true);
    lonely.addr_up("d0", "10.77.2.1/24");
    wait_carrier(&lonely, "d0");
    let a =
        Agent::spawn_in(Some(&lonely), &args, dir, &[]).unwrap_or_else(|f| panic!("{}", f.stderr));
    assert!(a.ready.contains(" beacon=d0:"), "{:?}", a.ready);
    let (status, err) = a.stop();
    drop(lonely);
    drop(far);
    assert_eq!(status.code(), Some(0));
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// An agent beaconing each second on `net.va`, and `tether scan --watch --json -t 1` on
/// `net.vb`, its stdout lines sent to the receiver as they come.
fn agent_and_scan_watch(net: &Net) -> (Agent, std::process::Child, mpsc::Receiver<String>) {
    let a = start_agent(net, &["--iface", &net.va, "--interval", "1"]);
    wait_state(&a, "up", slack(Duration::from_secs(3)));
    let mut watch = tether_cmd_in(
        Some(&net.b),
        &["scan", "-i", &net.vb, "-t", "1", "--watch", "--json"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let out = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (a, watch, rx)
}

#[test]
fn scan_watch_marks_a_board_that_said_goodbye() {
    if !can_netns() {
        return;
    }
    let net = Net::new("w");
    let (a, mut watch, rx) = agent_and_scan_watch(&net);
    let next_rows = |rx: &mpsc::Receiver<String>| -> serde_json::Value {
        let l = rx
            .recv_timeout(slack(Duration::from_secs(5)))
            .expect("a --watch refresh");
        json(l.as_bytes())
    };
    let first = next_rows(&rx);
    assert_eq!(first[0]["state"], "up", "{first}");
    let (status, _) = a.stop();
    assert_eq!(status.code(), Some(0));
    let mut saw_bye = false;
    for _ in 0..4 {
        let rows = next_rows(&rx);
        if rows[0]["state"] == "bye" {
            saw_bye = true;
            break;
        }
    }
    assert!(saw_bye, "--watch never marked the board bye");
    if emulated() {
        eprintln!("kernel drops not checked under qemu-user: it does not pass SO_RXQ_OVFL to the kernel (the native suite checks them)");
        let _ = watch.kill();
        let _ = watch.wait();
        return;
    }
    // A flood the scanner cannot read in time (here: while it is stopped) is dropped by
    // the kernel, and the watch says so on stderr (the service's journal).
    let pid = nix::unistd::Pid::from_raw(watch.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    in_ns(&net.a, || {
        let s = UdpSocket::bind("10.231.0.1:0").unwrap();
        for _ in 0..20_000 {
            let _ = s.send_to(&[b' '; 512], "10.231.0.2:4546");
        }
    })
    .join()
    .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    for _ in 0..2 {
        next_rows(&rx);
    }
    let _ = watch.kill();
    let mut err = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = watch.wait();
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: the kernel dropped ")),
        "no word of the kernel's drops: {err}"
    );
}

/// `scan --watch -i IFACE` whose interface is deleted and recreated (a new index) hears
/// the board again, and says so: its sockets were bound to the old index, and it heard
/// nothing for as long as it ran, every board going silent and leaving the target file,
/// without a word.
#[test]
fn scan_watch_follows_a_recreated_interface() {
    if !can_netns() {
        return;
    }
    let net = Net::new("r");
    let (_agent, mut watch, rx) = agent_and_scan_watch(&net);
    let seen = |rx: &mpsc::Receiver<String>| -> f64 {
        let l = rx.recv_timeout(slack(Duration::from_secs(5))).unwrap();
        json(l.as_bytes())[0]["seen_s"].as_f64().unwrap_or(f64::MAX)
    };
    assert!(seen(&rx) < 2.0);
    assert!(sh(&["ip", "-n", &net.a, "link", "del", &net.va]));
    std::thread::sleep(Duration::from_secs(2));
    net.make_va();
    // Rows already queued may be from before the delete: first one showing the board
    // unheard for a while, then one showing it heard again.
    let went_quiet = (0..8).any(|_| seen(&rx) >= 1.5);
    let heard_again = went_quiet && (0..8).any(|_| seen(&rx) < 1.0);
    let _ = watch.kill();
    let mut err = String::new();
    let _ = watch.stderr.take().unwrap().read_to_string(&mut err);
    let _ = watch.wait();
    assert!(went_quiet, "the board never went unheard: {err}");
    assert!(heard_again, "the board was not heard again: {err}");
    assert!(err.contains("interface was recreated"), "{err}");
}

/// A stranger on the LAN sends beacons whose id and host hold white space and invisible
/// characters: in `tether scan`'s table each board stays one line of the header's ten
/// columns, in line with the others, and nothing invisible reaches the terminal. (An id
/// with spaces showed a whole made-up row, `... up signed`, inside its own row; a
/// zero-width space made `pi-kitchen` out of another name, and its column came out short.)
#[test]
fn scan_table_keeps_a_strangers_text_to_its_own_cells() {
    if !can_netns() {
        return;
    }
    let net = Net::new("h");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let until = stop.clone();
    let sender = in_ns(&net.a, move || {
        let s = UdpSocket::bind("10.231.0.1:0").unwrap();
        let beacon = |id: &str, host: &str| {
            format!(r#"{{"tether":1,"id":"{id}","host":"{host}","addr":"10.231.0.1","port":4545}}"#)
        };
        let sent = [
            beacon(
                "f9dc1469d10fd16e pi-kitchen 10.231.0.9 4545 1d01h 0.08 47.2 1 0.1s up signed",
                "x",
            ),
            beacon(
                "a2",
                r"pi\u200b-kitchen\u2028\u00a0\u3000\ufeff\udb40\udc41",
            ),
            beacon("0123456789abcdef", "pi-normal"),
        ];
        while !until.load(std::sync::atomic::Ordering::Relaxed) {
            for d in &sent {
                let _ = s.send_to(d.as_bytes(), "10.231.0.2:4546");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let out = tether_cmd_in(Some(&net.b), &["scan", "-i", &net.vb, "-t", "1"]).output_bounded();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 4, "a header and one line per board: {t}");
    for l in &lines {
        assert_eq!(l.split_whitespace().count(), 10, "ten columns: {l:?}");
    }
    // PORT starts at one place on every line.
    let at = |l: &str, s: &str| l.chars().count() - l[l.find(s).unwrap()..].chars().count();
    let head = at(lines[0], " PORT ");
    for l in &lines[1..] {
        assert_eq!(at(l, " 4545 "), head, "{t}");
    }
    assert!(
        !t.chars()
            .any(|c| c != '\n' && (c.is_control() || !c.is_ascii())),
        "only printable ASCII and line ends: {t:?}"
    );
    assert!(t.contains(" pi?-kitchen????? "), "{t}");
}
