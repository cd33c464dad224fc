//! More links (issue 10) across real network namespaces: beacons on two interfaces to
//! two peers, an IPv6-only link (scan finds the board at its scoped link-local address,
//! ctl reaches it there), and `--beacon-family`. Root only; skipped otherwise (fails
//! under CI). All traffic stays inside the namespaces the tests create.
//!
//! Under qemu-user (scripts/test-aarch64, test-arm) these tests say so and return: qemu-user
//! does not emulate IPV6_MULTICAST_IF, so an emulated agent beacons over IPv4 only (it
//! reports `IPV6_MULTICAST_IF: Protocol not available` in `last_error` and keeps IPv4
//! going, which `beacon::tests::one_family_failing_leaves_the_other_beaconing` and the
//! emulated beacon_netns suite check). The same code runs here natively in the same CI run.
//!
//! ```text
//!   ns P1            ns A (agent)              ns P2
//!   p1 10.233.1.2 <-veth-> a1 10.233.1.1
//!                          a2 10.233.2.1 <-veth-> p2 10.233.2.2
//!   (IPv6-only test: a1 and p1 without IPv4, link-local addresses only)
//! ```

mod common;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// True (after saying why) when these IPv6 tests cannot run: under qemu-user.
fn no_ipv6_multicast_here() -> bool {
    if emulated() {
        eprintln!("skipped under qemu-user: it does not emulate IPV6_MULTICAST_IF (IPv6 beacons); the native suite runs this test");
    }
    emulated()
}

struct Net {
    ns: Vec<Netns>,
    tag: String,
}

impl Net {
    /// Namespaces `a`, `p1`, `p2` (DAD off, so link-local addresses are usable at once).
    fn new(tag: &str) -> Net {
        Net::with_dad(tag, false)
    }

    /// Like [`Net::new`]; with `dad` the kernel's duplicate address detection stays on
    /// (a new link-local address is tentative for a second or two, as on a real board).
    fn with_dad(tag: &str, dad: bool) -> Net {
        let id = std::process::id() % 100_000;
        let tag = format!("{tag}{id}");
        let ns: Vec<Netns> = ["a", "p1", "p2"]
            .iter()
            .map(|x| Netns::new(format!("tl{x}{tag}")))
            .collect();
        for n in &ns {
            for k in ["default", "all"] {
                let key = format!("net.ipv6.conf.{k}.accept_dad={}", u8::from(dad));
                assert!(sh(&["ip", "netns", "exec", &**n, "sysctl", "-qw", &key]));
            }
        }
        Net { ns, tag }
    }

    fn a(&self) -> &str {
        &self.ns[0]
    }

    fn peer(&self, i: usize) -> &str {
        &self.ns[i]
    }

    /// The agent's end of link `i` (1 or 2) and the peer's.
    fn ifs(&self, i: usize) -> (String, String) {
        (format!("a{i}{}", self.tag), format!("p{i}{}", self.tag))
    }

    /// Link `i` between A and peer 1 or 2 (odd or even `i`), with IPv4 addresses unless
    /// `v6_only`.
    fn link(&self, i: usize, v6_only: bool) {
        self.link_with(i, v6_only, true);
    }

    /// [`Net::link`]; waits for the agent side's link-local address only with `wait_a`.
    fn link_with(&self, i: usize, v6_only: bool, wait_a: bool) {
        let (a, p) = self.ifs(i);
        let peer = 2 - i % 2;
        let (ns_a, ns_p) = (&self.ns[0], &self.ns[peer]);
        veth(ns_a, &a, ns_p, &p);
        for (ns, dev, host) in [(ns_a, &a, 1), (ns_p, &p, 2)] {
            if v6_only {
                ns.ip(&["link", "set", dev, "up"]);
            } else {
                ns.addr_up(dev, &format!("10.233.{i}.{host}/24"));
            }
        }
        for (ns, dev) in [(self.a(), &a), (self.peer(peer), &p)] {
            if ns == self.a() && !wait_a {
                continue;
            }
            assert!(
                wait_for(Duration::from_secs(10), || link_local(ns, dev).is_some()),
                "no link-local address on {dev}"
            );
        }
    }
}

/// The usable (not tentative) link-local address of `dev` in `ns`.
fn link_local(ns: &str, dev: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args([
            "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "link",
        ])
        .output_bounded();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| !l.contains("tentative"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "inet6")?;
    Some(w[i + 1].split('/').next()?.to_string())
}

fn listen(ns: &str, bind: &str, secs: f64) -> std::thread::JoinHandle<Vec<(Vec<u8>, SocketAddr)>> {
    listen_udp(ns, bind, secs)
}

fn beacons(got: &[(Vec<u8>, SocketAddr)]) -> Vec<serde_json::Value> {
    got.iter()
        .filter(|(d, _)| d.starts_with(b"{"))
        .map(|(d, _)| serde_json::from_slice(d).expect("beacon JSON"))
        .collect()
}

fn start(net: &Net, extra: &[&str]) -> Agent {
    let dir = temp_dir("links");
    let mut args = loopback_agent_args(&dir.join("t.sock"), extra);
    // Reachable from the peers (the namespaces are private).
    if let Some(i) = args.iter().position(|a| a == "--listen") {
        args[i + 1] = "[::]:4545".into();
    }
    Agent::spawn_in(Some(net.a()), &args, dir, &[])
        .unwrap_or_else(|f| panic!("agent failed: {:?} {} {}", f.status, f.stdout, f.stderr))
}

/// `tether scan ARGS --json` inside `ns`: its exit code and its rows.
fn scan_rows(ns: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let all: Vec<&str> = ["scan"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--json"])
        .collect();
    let out = tether_cmd_in(Some(ns), &all).output_bounded();
    let rows = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "scan {args:?}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), rows)
}

/// Waits until the agent sent its first beacon (slow under emulation).
fn wait_first_beacon(a: &Agent) {
    let sent = || ok_json(&a.unix().req("STATS"))["beacons_sent"] != 0;
    assert!(
        wait_for(slack(Duration::from_secs(3)), sent),
        "no beacon sent"
    );
}

fn status(a: &Agent) -> serde_json::Value {
    ok_json(&a.unix().req("STATUS"))
}

#[test]
fn two_links_each_peer_hears_only_its_own_beacon_and_ifdown_leaves_the_other() {
    if no_ipv6_multicast_here() {
        return;
    }
    if !can_netns() {
        return;
    }
    let net = Net::new("t");
    net.link(1, false);
    net.link(2, false);
    let ((a1, _), (a2, _)) = (net.ifs(1), net.ifs(2));
    let secs = 3.5 * slack(Duration::from_secs(1)).as_secs_f64();
    let on1 = listen(net.peer(1), "0.0.0.0:4546", secs);
    let on2 = listen(net.peer(2), "0.0.0.0:4546", secs);
    let on1v6 = listen(net.peer(1), "[::]:4546", secs);
    let a = start(
        &net,
        &[
            "--iface",
            &a1,
            "--iface",
            &a2,
            "--interval",
            "1",
            "--metrics",
            "127.0.0.1:9545",
        ],
    );
    assert!(
        a.ready.contains(&format!(" beacon={a1}:4546,{a2}:4546")),
        "{}",
        a.ready
    );
    let (g1, g2, g1v6) = (
        on1.join().unwrap(),
        on2.join().unwrap(),
        on1v6.join().unwrap(),
    );
    for (got, me, from) in [(&g1, &a1, "10.233.1.1"), (&g2, &a2, "10.233.2.1")] {
        let bs = beacons(got);
        assert!(bs.len() >= 2, "{me}: {} beacons", bs.len());
        assert!(
            bs.iter().all(|b| b["iface"] == me.as_str()),
            "{me} heard another link's beacon: {bs:?}"
        );
        assert!(got.iter().all(|(_, f)| f.ip().to_string() == from));
    }
    // IPv6 beacons on link 1 too, from its link-local address, which they carry.
    let ll = link_local(net.a(), &a1).unwrap();
    let b6 = beacons(&g1v6);
    assert!(b6.len() >= 2, "IPv6 beacons on {a1}: {}", b6.len());
    assert!(b6
        .iter()
        .all(|b| b["iface"] == a1.as_str() && b["addr"] == ll.as_str()));
    assert!(g1v6
        .iter()
        .all(|(_, f)| f.ip().to_string() == ll && f.is_ipv6()));

    let s = status(&a);
    let list = s["beacons"].as_array().expect("beacons list");
    assert_eq!(list.len(), 2, "{s}");
    assert_eq!(s["beacon"], list[0], "beacon is the first interface");
    for (b, me) in list.iter().zip([&a1, &a2]) {
        assert_eq!(b["iface"], me.as_str());
        assert_eq!(b["state"], "up");
        assert_eq!(b["port"], 4546);
        assert_eq!(b["families"], serde_json::json!([4, 6]));
    }

    // ifdown of link 1: its peer hears nothing more, the other keeps hearing beacons.
    assert!(sh(&["ip", "-n", net.a(), "link", "set", &a1, "down"]));
    assert!(wait_for(Duration::from_secs(5), || status(&a)["beacons"]
        [0]["state"]
        == "down"));
    let on1 = listen(net.peer(1), "0.0.0.0:4546", secs);
    let on2 = listen(net.peer(2), "0.0.0.0:4546", secs);
    let (g1, g2) = (on1.join().unwrap(), on2.join().unwrap());
    assert!(beacons(&g1).is_empty(), "beacon on a down link: {g1:?}");
    assert!(beacons(&g2).len() >= 2, "the other link stopped beaconing");
    let s = status(&a);
    assert_eq!(s["beacons"][1]["state"], "up", "{s}");
    assert_eq!(s["beacon"]["state"], "down", "{s}");

    // Prometheus has each link's state and next sequence number, as STATUS has them (a
    // beacon may go out between the two reads).
    let body = scrape_in(net.a(), "127.0.0.1:9545");
    for (i, me, state) in [(0, &a1, "down"), (1, &a2, "up")] {
        let line = format!("tether_beacon_iface_state{{iface=\"{me}\",state=\"{state}\"}} 1");
        assert!(body.lines().any(|l| l == line), "{line} in {body}");
        let key = format!("tether_beacon_iface_sequence{{iface=\"{me}\"}} ");
        let seq: u64 = body
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {body}"));
        let at_status = s["beacons"][i]["seq"].as_u64().unwrap();
        assert!(
            (at_status..=at_status + 2).contains(&seq),
            "{me}: {seq} vs STATUS {at_status}"
        );
    }
    a.stop();
}

/// GET /metrics from inside namespace `ns`: the body of a 200 response.
fn scrape_in(ns: &str, addr: &str) -> String {
    let (head, body) =
        http_get_in(ns, addr.parse().unwrap(), "/metrics").expect("/metrics answers");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

#[test]
fn ipv6_only_link_scan_finds_the_board_and_ctl_reaches_its_scoped_address() {
    if no_ipv6_multicast_here() {
        return;
    }
    if !can_netns() {
        return;
    }
    let net = Net::new("s");
    net.link(1, true);
    let (a1, p1) = net.ifs(1);
    // No --iface: the default is the first interface with an IPv6 link-local address.
    let a = start(&net, &["--interval", "1"]);
    assert!(
        a.ready.contains(&format!(" beacon={a1}:4546")),
        "{}",
        a.ready
    );
    let s = status(&a);
    assert_eq!(s["beacon"]["state"], "up", "{s}");
    assert_eq!(s["beacon"]["families"], serde_json::json!([6]), "{s}");

    let ll = link_local(net.a(), &a1).unwrap();
    let want = format!("{ll}%{p1}");
    let (code, rows) = scan_rows(net.peer(1), &["-i", &p1, "-t", "1"]);
    assert_eq!(code, Some(0), "{rows}");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["addr"], want.as_str(), "{rows:?}");
    assert_eq!(rows[0]["addrs"], serde_json::json!([want]));
    assert_eq!(rows[0]["id"], s["id"]);
    // Without -i too (every interface with a link-local address is probed).
    let out = tether_cmd_in(Some(net.peer(1)), &["scan", "-t", "1", "--json"]).output_bounded();
    assert_eq!(out.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["addr"], want.as_str(), "{rows:?}");

    // ctl reaches the board at the scoped address scan printed.
    let port = rows[0]["port"].as_u64().unwrap();
    let target = format!("[{want}]:{port}");
    let out = tether_cmd_in(Some(net.peer(1)), &["ctl", "-c", &target, "STATUS"]).output_bounded();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "ctl -c {target}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok_json(text.trim())["id"], s["id"]);
    // A scope that names no interface here leaves the agent unreachable (69, as scan -i):
    // the interface may come later.
    let bad = format!("[{ll}%nosuchif9]:{port}");
    let out = tether_cmd_in(Some(net.peer(1)), &["ctl", "-c", &bad, "PING"]).output_bounded();
    assert_eq!(out.status.code(), Some(69));

    // Probes over IPv6 are answered by unicast over IPv6, no larger than the probe.
    let answers = in_ns(net.peer(1), move || {
        let s = UdpSocket::bind("[::]:0").unwrap();
        let mut p = b"TETHER? v6probe".to_vec();
        p.resize(300, b' ');
        let idx = tether::sys::iface::info(&p1).expect("peer link").index;
        let to: SocketAddr = format!("[ff02::1%{idx}]:4546").parse().unwrap();
        s.send_to(&p, to).unwrap();
        let end = Instant::now() + Duration::from_millis(1500);
        let set = |d| s.set_read_timeout(Some(d));
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Ok((n, from)) = before(end, set, || s.recv_from(&mut buf)) {
            got.push((buf[..n].to_vec(), from));
        }
        got
    })
    .join()
    .unwrap();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].0.len() <= 300);
    assert_eq!(answers[0].1.ip().to_string(), ll);
    let b: serde_json::Value = serde_json::from_slice(&answers[0].0).unwrap();
    assert_eq!(b["nonce"], "v6probe");
    a.stop();
}

/// Each family's beacons name the metrics port a scraper reaches over that family (IPv6
/// listeners are IPv6-only): `--metrics 0.0.0.0:0` alone puts none in IPv6 beacons, which
/// would send Prometheus to a scoped link-local address where nothing listens; with
/// `[::]:0` too, IPv6 beacons name that listener's own port, and a scrape there answers.
#[test]
fn each_family_announces_the_metrics_port_it_reaches() {
    if no_ipv6_multicast_here() {
        return;
    }
    if !can_netns() {
        return;
    }
    let net = Net::new("m");
    net.link(1, false);
    let (a1, _) = net.ifs(1);
    let secs = 2.5 * slack(Duration::from_secs(1)).as_secs_f64();
    for metrics in [vec!["0.0.0.0:0"], vec!["0.0.0.0:0", "[::]:0"]] {
        let on4 = listen(net.peer(1), "0.0.0.0:4546", secs);
        let on6 = listen(net.peer(1), "[::]:4546", secs);
        let mut args = vec!["--iface", &a1, "--interval", "1"];
        for m in &metrics {
            args.extend(["--metrics", m]);
        }
        let a = start(&net, &args);
        // The real addresses, from the ready line's ` metrics=ADDR[,ADDR]`.
        let real: Vec<SocketAddr> = a
            .ready
            .split(" metrics=")
            .nth(1)
            .unwrap()
            .split(',')
            .map(|x| x.trim().parse().unwrap())
            .collect();
        let port = |v4: bool| real.iter().find(|x| x.is_ipv4() == v4).map(|x| x.port());
        let (g4, g6) = (on4.join().unwrap(), on6.join().unwrap());
        for (got, v4) in [(&g4, true), (&g6, false)] {
            let bs = beacons(got);
            assert!(
                bs.len() >= 2,
                "{metrics:?}: {} beacons (IPv4: {v4})",
                bs.len()
            );
            let want = port(v4).map_or(serde_json::Value::Null, |p| p.into());
            assert!(
                bs.iter().all(|b| b["metrics"] == want),
                "{metrics:?}, IPv4 {v4}: {bs:?}"
            );
        }
        if let Some(p) = port(false) {
            // Where scan would send Prometheus: the beacon's scoped source, that port.
            let mut at = g6.iter().find(|(d, _)| d.starts_with(b"{")).unwrap().1;
            at.set_port(p);
            let (head, body) = http_get_in(net.peer(1), at, "/metrics").expect("scrape");
            assert!(head.starts_with("HTTP/1.1 200") && body.contains("tether_build_info"));
        }
        // `start` listens on [::] only: IPv4 beacons name a control port that IPv4 peers
        // cannot reach, and start-up says so.
        let (_, log) = a.stop();
        assert!(
            log.contains("no --listen address serves IPv4: IPv4 beacons name control port 4545"),
            "{log}"
        );
    }
}

#[test]
fn beacon_family_4_sends_no_ipv6_and_6_no_ipv4() {
    if no_ipv6_multicast_here() {
        return;
    }
    if !can_netns() {
        return;
    }
    let net = Net::new("f");
    net.link(1, false);
    let (a1, _) = net.ifs(1);
    let secs = 2.5 * slack(Duration::from_secs(1)).as_secs_f64();
    for (fam, v4_heard, v6_heard) in [("4", true, false), ("6", false, true)] {
        let on4 = listen(net.peer(1), "0.0.0.0:4546", secs);
        let on6 = listen(net.peer(1), "[::]:4546", secs);
        let a = start(
            &net,
            &["--iface", &a1, "--interval", "1", "--beacon-family", fam],
        );
        let (g4, g6) = (on4.join().unwrap(), on6.join().unwrap());
        assert_eq!(
            !beacons(&g4).is_empty(),
            v4_heard,
            "family {fam}: IPv4 {g4:?}"
        );
        assert_eq!(
            !beacons(&g6).is_empty(),
            v6_heard,
            "family {fam}: IPv6 {g6:?}"
        );
        let want = if fam == "4" { [4] } else { [6] };
        assert_eq!(status(&a)["beacon"]["families"], serde_json::json!(want));
        a.stop();
    }
    // A bad family is a usage error.
    let (code, _, err) = run(&["agent", "--no-beacon", "--beacon-family", "5"]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(error_lines(&err).len(), 1, "{err}");
}

#[test]
fn no_heap_after_ready_with_four_interfaces_and_both_families() {
    if no_ipv6_multicast_here() {
        return;
    }
    if !can_netns() {
        return;
    }
    let net = Net::new("z");
    for i in 1..=4 {
        net.link(i, false);
    }
    let names: Vec<String> = (1..=4).map(|i| net.ifs(i).0).collect();
    let mut args = vec!["--interval", "1"];
    for n in &names {
        args.extend(["--iface", n.as_str()]);
    }
    let a = start(&net, &args);
    let want: Vec<String> = names.iter().map(|n| format!("{n}:4546")).collect();
    assert!(
        a.ready.contains(&format!(" beacon={}", want.join(","))),
        "{}",
        a.ready
    );
    // Five interfaces are refused.
    let (code, _, err) = run(&[
        "agent", "--iface", "a", "--iface", "b", "--iface", "c", "--iface", "d", "--iface", "e",
    ]);
    assert_eq!((code, error_lines(&err).len()), (64, 1), "{err}");

    assert!(wait_for(Duration::from_secs(5), || {
        let s = status(&a);
        (0..4).all(|i| s["beacons"][i]["families"] == serde_json::json!([4, 6]))
    }));
    // Scans over both families from both peers, garbage over both, a link down and up.
    for round in 0..3 {
        for (peer, dev) in [(1, net.ifs(1).1), (2, net.ifs(2).1)] {
            let out = tether_cmd_in(Some(net.peer(peer)), &["scan", "-t", "0.5", "--json"])
                .output_bounded();
            assert_eq!(out.status.code(), Some(0));
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let addrs = rows[0]["addrs"].as_array().unwrap();
            assert!(addrs.len() >= 2, "seen over both families: {rows}");
            assert!(
                rows[0]["addr"].as_str().unwrap().starts_with("10.233."),
                "{rows}"
            );
            let dev2 = dev.clone();
            in_ns(net.peer(peer), move || {
                let idx = tether::sys::iface::info(&dev2).unwrap().index;
                let s4 = UdpSocket::bind("0.0.0.0:0").unwrap();
                s4.set_broadcast(true).unwrap();
                let s6 = UdpSocket::bind("[::]:0").unwrap();
                let to6: SocketAddr = format!("[ff02::1%{idx}]:4546").parse().unwrap();
                for junk in [&b"garbage"[..], &[b'x'; 600][..]] {
                    let _ = s4.send_to(junk, ("255.255.255.255", 4546));
                    let _ = s6.send_to(junk, to6);
                }
            })
            .join()
            .unwrap();
        }
        if round == 1 {
            assert!(sh(&["ip", "-n", net.a(), "link", "set", &names[2], "down"]));
            std::thread::sleep(Duration::from_millis(1500));
            assert!(sh(&["ip", "-n", net.a(), "link", "set", &names[2], "up"]));
        }
    }
    let _ = a.unix().req("SOCKETS");
    let st = a.stats();
    assert!(st["probes_answered"].as_u64().unwrap() >= 6, "{st}");
    assert!(st["datagrams_dropped"].as_u64().unwrap() >= 8, "{st}");
    assert_eq!(st["allocs_since_ready"], 0, "{st}");
    a.stop();
}

#[test]
fn a_board_started_during_duplicate_address_detection_is_found_over_ipv6() {
    if no_ipv6_multicast_here() {
        return;
    }
    if !can_netns() {
        return;
    }
    let net = Net::with_dad("d", true);
    net.link_with(1, true, false);
    let (a1, p1) = net.ifs(1);
    // Started at once: the link-local address is still tentative. No --iface: the
    // tentative address already makes this the default interface.
    let a = start(&net, &["--interval", "600"]);
    assert!(
        a.ready.contains(&format!(" beacon={a1}:4546")),
        "{}",
        a.ready
    );
    // Within seconds (not the 600 s interval) the IPv6 socket is open and probes answered.
    assert!(
        wait_for(Duration::from_secs(10), || {
            status(&a)["beacon"]["families"] == serde_json::json!([6])
        }),
        "{}",
        status(&a)
    );
    let (code, rows) = scan_rows(net.peer(1), &["-i", &p1, "-t", "1"]);
    assert_eq!(code, Some(0), "{rows}");
    let ll = link_local(net.a(), &a1).unwrap();
    assert_eq!(rows[0]["addr"], format!("{ll}%{p1}").as_str(), "{rows}");
    // The log says where beacons go once IPv6 is there, not only what it said at first.
    let (_, log) = a.stop();
    assert!(
        log.contains(&format!("beacon on {a1}: up, sending to ff02::1,")),
        "{log}"
    );
}

/// `args` inside namespace `ns`: a loopback agent (no `--iface` unless `extra` has one).
fn start_in(ns: &str, extra: &[&str]) -> Agent {
    let dir = temp_dir("links");
    let args = loopback_agent_args(&dir.join("t.sock"), extra);
    Agent::spawn_in(Some(ns), &args, dir, &[])
        .unwrap_or_else(|f| panic!("agent failed: {:?} {} {}", f.status, f.stdout, f.stderr))
}

/// The ready line says `beacon=IFACE:4546`: `iface` is the one beacon interface.
fn assert_ready_beacon(a: &Agent, iface: &str) {
    let want = format!("{iface}:4546");
    assert_eq!(a.ready_field("beacon"), Some(want.as_str()), "{}", a.ready);
}

/// A namespace with `lo` up and the kernel's duplicate address detection off.
fn lone_ns(tag: &str) -> Netns {
    let ns = Netns::new(format!("tl{tag}{}", std::process::id() % 100_000));
    ns.ip(&["link", "set", "lo", "up"]);
    for k in ["default", "all"] {
        let key = format!("net.ipv6.conf.{k}.accept_dad=0");
        assert!(sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", &key]));
    }
    ns
}

/// "éth0" in UTF-8: five bytes, not ASCII.
const UTF8_IF: &str = "\u{e9}th0";

/// A namespace whose one link is the veth `éth0` (its peer `peer0` beside it), with an
/// IPv4 broadcast address.
fn utf8_ns(tag: &str) -> Netns {
    let ns = lone_ns(tag);
    ns.ip(&[
        "link", "add", "name", UTF8_IF, "type", "veth", "peer", "name", "peer0",
    ]);
    ns.ip(&["link", "set", "peer0", "up"]);
    ns.addr_up(UTF8_IF, "10.233.9.1/24");
    wait_carrier(&ns, UTF8_IF);
    ns
}

#[test]
fn a_utf8_interface_name_is_shown_as_it_is_and_is_the_default_beacon_interface() {
    if no_ipv6_multicast_here() || !can_netns() {
        return;
    }
    let ns = utf8_ns("u");
    let a = start_in(&ns, &["--interval", "1"]);
    assert_ready_beacon(&a, UTF8_IF);
    assert!(
        wait_for(Duration::from_secs(5), || status(&a)["beacon"]["state"]
            == "up"),
        "{}",
        status(&a)
    );
    let s = status(&a);
    assert_eq!(s["beacon"]["iface"], UTF8_IF, "{s}");
    let addrs = s["addresses"].as_array().expect("addresses");
    let on = |fam: &str| {
        addrs
            .iter()
            .any(|x| x["iface"] == UTF8_IF && x["addr"].as_str().unwrap().contains(fam))
    };
    assert!(
        on("10.233.9.1") && on("fe80:"),
        "IPv4 and IPv6 on {UTF8_IF}: {s}"
    );
    // Every name as the kernel holds it: no byte shown as a Latin-1 character.
    let names: Vec<&str> = addrs.iter().map(|x| x["iface"].as_str().unwrap()).collect();
    assert!(
        names.iter().all(|n| ["lo", "peer0", UTF8_IF].contains(n)),
        "{names:?}"
    );
    assert_eq!(a.stats()["allocs_since_ready"], 0);
    a.stop();
}

#[test]
fn a_utf8_interface_name_can_be_given_with_iface() {
    if no_ipv6_multicast_here() || !can_netns() {
        return;
    }
    let ns = utf8_ns("v");
    let a = start_in(&ns, &["--iface", UTF8_IF, "--interval", "1"]);
    assert_ready_beacon(&a, UTF8_IF);
    assert!(
        wait_for(Duration::from_secs(5), || {
            let s = status(&a);
            s["beacon"]["state"] == "up" && s["beacon"]["families"] == serde_json::json!([4, 6])
        }),
        "{}",
        status(&a)
    );
    assert_eq!(status(&a)["beacon"]["iface"], UTF8_IF);
    a.stop();
}

/// The byte offset of `dev`'s link-local line in the namespace's /proc/net/if_inet6.
fn if_inet6_offset(ns: &str, dev: &str) -> Option<usize> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/if_inet6"])
        .output_bounded();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("fe80") && line.split_whitespace().last() == Some(dev) {
            return Some(at);
        }
        at += line.len();
    }
    None
}

#[test]
fn the_link_local_address_is_found_among_hundreds_of_ipv6_addresses() {
    if no_ipv6_multicast_here() || !can_netns() {
        return;
    }
    let ns = lone_ns("m");
    ns.ip(&[
        "link", "add", "big0", "type", "veth", "peer", "name", "big1",
    ]);
    ns.ip(&["link", "set", "big0", "up"]);
    ns.ip(&["link", "set", "big1", "up"]);
    let dir = temp_dir("links");
    let batch = dir.join("addrs");
    let lines: String = (1..=300)
        .map(|i| format!("addr add 2001:db8:1::{i:x}/128 dev big0 nodad\n"))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    ns.ip(&["-batch", batch.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    // The file is hashed by address: make the beacon interface's line lie past its
    // first 4 KiB (a new veth, a new link-local address, until it does).
    let mut placed = false;
    for _ in 0..20 {
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        ns.ip(&["link", "set", "eth1", "up"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        assert!(wait_for(Duration::from_secs(5), || link_local(&ns, "eth0").is_some()));
        if if_inet6_offset(&ns, "eth0").is_some_and(|o| o > 4096) {
            placed = true;
            break;
        }
        ns.ip(&["link", "del", "eth0"]);
    }
    assert!(placed, "eth0's link-local line stays in the first 4 KiB");
    let a = start_in(
        &ns,
        &["--iface", "eth0", "--beacon-family", "6", "--interval", "1"],
    );
    assert!(
        wait_for(Duration::from_secs(5), || {
            let b = &status(&a)["beacon"];
            b["state"] == "up" && b["families"] == serde_json::json!([6])
        }),
        "{}",
        status(&a)
    );
    assert_eq!(a.stats()["allocs_since_ready"], 0);
    a.stop();
}

#[test]
fn the_default_beacon_interface_is_found_behind_more_than_16_addresses() {
    if !can_netns() {
        return;
    }
    let ns = lone_ns("l");
    // IPv4 only: no link-local address makes an interface the default instead.
    for k in ["default", "all"] {
        let key = format!("net.ipv6.conf.{k}.disable_ipv6=1");
        assert!(sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", &key]));
    }
    for i in 2..=17 {
        ns.ip(&["addr", "add", &format!("127.0.1.{i}/8"), "dev", "lo"]);
    }
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.ip(&["link", "set", "eth1", "up"]);
    ns.addr_up("eth0", "10.233.8.1/24");
    wait_carrier(&ns, "eth0");
    let a = start_in(&ns, &["--interval", "1"]);
    assert_ready_beacon(&a, "eth0");
    let s = status(&a);
    assert_eq!(s["beacon"]["state"], "up", "{s}");
    assert_eq!(s["beacon"]["families"], serde_json::json!([4]), "{s}");
    // STATUS lists the first 16 addresses: here all on lo.
    let addrs = s["addresses"].as_array().expect("addresses");
    assert_eq!(addrs.len(), 16, "{s}");
    assert!(addrs.iter().all(|x| x["iface"] == "lo"), "{s}");
    a.stop();
}

#[test]
fn a_board_that_starts_before_its_network_beacons_once_a_link_qualifies() {
    if !can_netns() {
        return;
    }
    // No --iface and nothing but loopback at start (a Pi whose Wi-Fi associates after
    // the agent started): no beacons, then the first link that qualifies, within an
    // interval, as if it had been named.
    let net = Net::new("b");
    let a = start(&net, &["--interval", "1"]);
    assert_eq!(a.ready_field("beacon"), Some("off"), "{}", a.ready);
    assert_eq!(status(&a)["beacons"], serde_json::json!([]));
    net.link(1, false);
    let (a1, _) = net.ifs(1);
    let heard = listen(
        net.peer(1),
        "0.0.0.0:4546",
        3.0 * slack(Duration::from_secs(1)).as_secs_f64(),
    );
    let got = heard.join().unwrap();
    let b = beacons(&got);
    assert!(
        b.iter()
            .any(|b| b["iface"] == a1.as_str() && b["addr"] == "10.233.1.1"),
        "{got:?}"
    );
    let s = status(&a);
    assert_eq!(s["beacons"][0]["iface"], a1.as_str(), "{s}");
    assert_eq!(s["beacons"][0]["state"], "up", "{s}");
    let (_, log) = a.stop();
    assert!(log.contains("no beacons until one is"), "{log}");
    assert!(
        log.contains(&format!("beacon: {a1} qualifies now")),
        "{log}"
    );
}

#[test]
fn beacons_leave_only_from_the_links_own_address_and_only_with_a_carrier() {
    if !can_netns() {
        return;
    }
    let net = Net::new("c");
    net.link(1, false);
    net.link(2, true);
    let (a1, p1) = net.ifs(1);
    let (a2, _) = net.ifs(2);
    // IPv4 beacons out of a link without an IPv4 address would carry the source address
    // the kernel lends them from another link (a1's 10.233.1.1): none go.
    let secs = 2.5 * slack(Duration::from_secs(1)).as_secs_f64();
    let on2 = listen(net.peer(2), "0.0.0.0:4546", secs);
    let a = start(
        &net,
        &[
            "--iface",
            &a2,
            "--iface",
            &a1,
            "--interval",
            "1",
            "--beacon-family",
            "4",
        ],
    );
    let got = on2.join().unwrap();
    assert!(beacons(&got).is_empty(), "{got:?}");
    let s = status(&a);
    assert_eq!(s["beacons"][0]["state"], "down", "{s}");
    assert_eq!(
        s["beacons"][0]["last_error"], "no IPv4 address: waiting",
        "{s}"
    );
    assert_eq!(s["beacons"][1]["state"], "up", "{s}");
    // The cable pulled (the peer's end down): a1 has no carrier, so it is down, and says
    // why once; back up when the carrier returns.
    assert!(sh(&["ip", "-n", net.peer(1), "link", "set", &p1, "down"]));
    let state = |want: &str| {
        wait_for(slack(Duration::from_secs(3)), || {
            status(&a)["beacons"][1]["state"] == want
        })
    };
    assert!(state("down"), "{}", status(&a));
    assert_eq!(status(&a)["beacons"][1]["last_error"], "no carrier");
    assert!(sh(&["ip", "-n", net.peer(1), "link", "set", &p1, "up"]));
    assert!(state("up"), "{}", status(&a));
    let (_, log) = a.stop();
    assert_eq!(
        log.matches(&format!("beacon on {a2}: no IPv4 address: waiting"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches(&format!("beacon on {a1}: no carrier")).count(),
        1,
        "{log}"
    );
}

#[test]
fn a_probe_from_a_second_subnet_is_answered_from_that_subnets_address() {
    if !can_netns() {
        return;
    }
    // Renumbering: the board has its old and its new address on one link, the scanner only
    // the new. The answer leaves from the new one, and must say so: an `addr` naming the
    // interface's first address is unreachable for the scanner, and with a fleet key it
    // does not match the source, so scan calls the board replayed.
    let net = Net::new("s");
    net.link(1, false);
    let (a1, p1) = net.ifs(1);
    // Under a label, as ifupdown's `eth0:1` stanzas add a second address.
    let label = format!("{a1}:n");
    assert!(sh(&[
        "ip",
        "-n",
        net.a(),
        "addr",
        "add",
        "10.233.66.1/24",
        "brd",
        "+",
        "dev",
        &a1,
        "label",
        &label
    ]));
    let p = net.peer(1);
    assert!(sh(&[
        "ip", "-n", p, "addr", "flush", "dev", &p1, "scope", "global"
    ]));
    assert!(sh(&[
        "ip",
        "-n",
        p,
        "addr",
        "add",
        "10.233.66.2/24",
        "brd",
        "+",
        "dev",
        &p1
    ]));
    let dir = temp_dir("subnets");
    let key = dir.join("fleet.key");
    std::fs::write(&key, "two-subnets-fleet-key-0123456789").unwrap();
    let key = key.to_str().unwrap();
    let a = start(
        &net,
        &[
            "--iface",
            &a1,
            "--interval",
            "600",
            "--beacon-family",
            "4",
            "--fleet-key",
            key,
        ],
    );
    // The first beacon (from the first address) before the scan, which hears only answers.
    wait_first_beacon(&a);
    let (_, rows) = scan_rows(p, &["-i", &p1, "-t", "1", "--all", "--fleet-key", key]);
    let answers: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["addrs"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "10.233.66.1"))
        })
        .collect();
    assert_eq!(answers.len(), 1, "{rows}");
    assert_eq!(answers[0]["addr"], "10.233.66.1", "{rows}");
    assert_eq!(answers[0]["trust"], "signed", "{rows}");
    // STATUS names the interface of the labelled address, not the label.
    let s = status(&a);
    let want = serde_json::json!({"iface": a1, "addr": "10.233.66.1"});
    assert!(
        s["addresses"].as_array().unwrap().contains(&want),
        "{}",
        s["addresses"]
    );
    a.stop();
}

#[test]
fn the_default_interface_is_chosen_again_when_it_is_gone() {
    if !can_netns() {
        return;
    }
    // No --iface: a1 is the default. Deleted (a USB dongle swapped for another), the next
    // that qualifies is taken within an interval, and beacons go there, their sequence
    // numbers going on from a1's (back at 0 under the same run, a scanner that heard
    // higher ones from an address would take the board's beacons there for replays).
    let net = Net::new("r");
    net.link(1, false);
    net.link(2, false);
    let (a1, _) = net.ifs(1);
    let (a2, _) = net.ifs(2);
    let a = start(&net, &["--interval", "1", "--beacon-family", "4"]);
    assert_ready_beacon(&a, &a1);
    let seq = || status(&a)["beacons"][0]["seq"].as_u64().unwrap();
    assert!(wait_for(slack(Duration::from_secs(4)), || seq() >= 2));
    assert!(sh(&["ip", "-n", net.a(), "link", "del", &a1]));
    let before = seq();
    let heard = listen(
        net.peer(2),
        "0.0.0.0:4546",
        3.0 * slack(Duration::from_secs(1)).as_secs_f64(),
    );
    let got = heard.join().unwrap();
    let on_a2: Vec<u64> = (beacons(&got).iter())
        .filter(|b| b["iface"] == a2.as_str())
        .map(|b| b["seq"].as_u64().unwrap())
        .collect();
    assert!(!on_a2.is_empty(), "{got:?}");
    assert!(
        on_a2.iter().all(|&s| s >= before),
        "{before} then {on_a2:?}"
    );
    let s = status(&a);
    assert_eq!(s["beacons"][0]["iface"], a2.as_str(), "{s}");
    assert_eq!(s["beacons"][0]["state"], "up", "{s}");
    let (_, log) = a.stop();
    assert!(
        log.contains(&format!(
            "beacon: {a2} qualifies now; beaconing on it instead of {a1} (absent)"
        )),
        "{log}"
    );
}

#[test]
fn an_answer_never_names_another_links_address() {
    if !can_netns() {
        return;
    }
    // a1's address removed within an interval (600 s here): a probe answer would leave
    // from a2's address, which the prober on link 1 cannot reach. No answer instead.
    let net = Net::new("g");
    net.link(1, false);
    net.link(2, false);
    let (a1, p1) = net.ifs(1);
    let a = start(
        &net,
        &["--iface", &a1, "--interval", "600", "--beacon-family", "4"],
    );
    // After the first look at the link (the first beacon), so the next is 600 s away.
    wait_first_beacon(&a);
    assert!(sh(&[
        "ip",
        "-n",
        net.a(),
        "addr",
        "del",
        "10.233.1.1/24",
        "dev",
        &a1
    ]));
    // The answer is dropped, counted once its delay is over (the scan may end first under
    // emulation). A probe is one datagram: under load one may be lost, so up to 3 scans.
    let dropped = || {
        ok_json(&a.unix().req("STATS"))["datagrams_dropped"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    };
    let mut seen = false;
    for _ in 0..3 {
        let (_, rows) = scan_rows(net.peer(1), &["-i", &p1, "-t", "1"]);
        assert!(!rows.to_string().contains("10.233.2.1"), "{rows}");
        if wait_for(slack(Duration::from_secs(1)), dropped) {
            seen = true;
            break;
        }
    }
    assert!(seen, "{}", a.unix().req("STATS"));
    a.stop();
}

#[test]
fn several_link_local_addresses_beacons_name_the_one_they_leave_from() {
    if no_ipv6_multicast_here() {
        return;
    }
    if !can_netns() {
        return;
    }
    // A router-like board with fe80::1 beside its own link-local address: the kernel may
    // send from either, and a keyed scan calls a datagram whose `addr` is not its source
    // replayed. The agent sets the source to the address it names.
    let net = Net::new("l");
    net.link(1, true);
    let (a1, p1) = net.ifs(1);
    for k in 1..=6 {
        let addr = format!("fe80::a:{k}/64");
        assert!(sh(&[
            "ip",
            "-n",
            net.a(),
            "addr",
            "add",
            &addr,
            "dev",
            &a1,
            "nodad"
        ]));
    }
    let dir = temp_dir("lladdrs");
    let key = dir.join("fleet.key");
    std::fs::write(&key, "several-link-locals-fleet-key-01").unwrap();
    let key = key.to_str().unwrap();
    let a = start(
        &net,
        &[
            "--iface",
            &a1,
            "--interval",
            "1",
            "--beacon-family",
            "6",
            "--fleet-key",
            key,
        ],
    );
    let (code, rows) = scan_rows(net.peer(1), &["-i", &p1, "-t", "2", "--fleet-key", key]);
    assert_eq!(code, Some(0), "{rows}");
    assert_eq!(rows[0]["trust"], "signed", "{rows}");
    a.stop();
}

#[test]
fn out_of_descriptors_an_interface_stays_up_not_absent() {
    if !can_netns() {
        return;
    }
    if !fd_limits_are_the_agents() {
        return;
    }
    // RLIMIT_NOFILE 11: the agent's own sockets (listener, Unix, publish, signalfd and two
    // per beacon interface) fit, with none to spare for the ioctl socket that looks at an
    // interface each interval. The interface was taken for absent then, its working
    // sockets closed: the beacon flapped between up and absent.
    let net = Net::new("n");
    net.link(1, false);
    net.link(2, false);
    let (a1, _) = net.ifs(1);
    let (a2, _) = net.ifs(2);
    let dir = temp_dir("links-nofile");
    let extra = ["--iface", &a1, "--iface", &a2, "--interval", "1"];
    let args = loopback_agent_args(&dir.join("t.sock"), &extra);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", net.a(), "prlimit", "--nofile=11:11", BIN]);
    cmd.args(&args);
    let a = Agent::spawn_command(cmd, dir, &[]).unwrap_or_else(|f| panic!("{}", f.stderr));
    // (No client can be served at this limit: the peers' captures tell.)
    let heard = [1, 2].map(|i| listen(net.peer(i), "0.0.0.0:4546", 4.0));
    let heard = heard.map(|h| beacons(&h.join().unwrap()).len());
    let (_, log) = a.stop();
    assert!(!log.contains("absent"), "{log}");
    assert!(
        heard.iter().all(|&n| n >= 3),
        "beacons heard per link: {heard:?}\n{log}"
    );
}

#[test]
fn short_of_fds_the_default_interfaces_mac_stays_the_board_id() {
    if !can_netns() {
        return;
    }
    if !fd_limits_are_the_agents() {
        return;
    }
    // A board without a machine id or a device-tree serial number (a placeholder
    // bind-mounted over each) takes its id from the default beacon interface's MAC. Out of fds while
    // looking for that interface, the agent used to find none and start with the host
    // name's id (and no beacon).
    let ns = lone_ns("fdid");
    ns.ip(&["link", "add", "e0", "type", "veth", "peer", "name", "p0"]);
    ns.ip(&["link", "set", "p0", "up"]);
    ns.addr_up("e0", "10.233.19.1/24");
    wait_carrier(&ns, "e0");
    let dir = temp_dir("fd-id");
    let placeholder = dir.with_extension("machine-id");
    std::fs::write(&placeholder, "").unwrap();
    let args = loopback_agent_args(&dir.join("t.sock"), &["--no-publish"]);
    let cmd = |n: u64| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns,
            "unshare",
            "-m",
            "--propagation",
            "private",
        ]);
        cmd.args(["sh", "-c"]);
        cmd.arg(concat!(
            "{ [ ! -e /etc/machine-id ] || mount --bind \"$0\" /etc/machine-id; } && ",
            "{ [ ! -e /var/lib/dbus/machine-id ] || mount --bind \"$0\" /var/lib/dbus/machine-id; } && ",
            // An ARM machine's device tree has a serial number, which comes before the MAC.
            "{ [ ! -e /proc/device-tree/serial-number ] || mount --bind \"$0\" /proc/device-tree/serial-number; } && ",
            "n=$1; shift; exec prlimit --nofile=$n:$n \"$@\""
        ));
        cmd.arg(&placeholder)
            .arg(n.to_string())
            .arg(BIN)
            .args(&args);
        cmd
    };
    let mac = "the board id comes from the beacon interface's MAC";
    let (_, log) = Agent::spawn_command(cmd(1024), dir.clone(), &[])
        .unwrap_or_else(|f| panic!("{}", f.stderr))
        .stop();
    assert!(log.contains(mac), "{log}");
    let id = logged_id(&log);
    let names = [
        "signalfd",
        "--listen",
        dir.to_str().unwrap(),
        "default beacon interface",
        "for the board id",
    ];
    let (n, a) = first_start_short_of_fds(cmd, &dir, &names);
    let (status, log) = a.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = std::fs::remove_file(&placeholder);
    assert!(log.contains(mac), "RLIMIT_NOFILE {n}: {log}");
    assert_eq!(logged_id(&log), id, "RLIMIT_NOFILE {n}: {log}");
}

#[test]
fn a_watching_scan_finds_a_board_on_a_link_that_came_after_it_started() {
    if no_ipv6_multicast_here() || !can_netns() {
        return;
    }
    // `tether scan --watch` (the tether-scan-sd service) started before its host had any
    // IPv6 link, as at boot before the network or while duplicate address detection runs:
    // it looked at the interfaces once, opened no IPv6 socket, and never listed a board
    // reached over IPv6 until it was restarted.
    let net = Net::new("wl");
    let (_, p1) = net.ifs(1);
    let mut watch = tether_cmd_in(Some(net.peer(1)), &["scan", "--watch", "-t", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_rows = || -> serde_json::Value {
        let l = rx
            .recv_timeout(slack(Duration::from_secs(5)))
            .expect("a --watch refresh");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    };
    assert_eq!(next_rows(), serde_json::json!([]), "nothing to find yet");
    // Now the link (IPv6 only) and a board behind it.
    net.link(1, true);
    let a = start(&net, &["--interval", "1"]);
    let id = status(&a)["id"].clone();
    let mut rows = serde_json::Value::Null;
    for _ in 0..6 {
        rows = next_rows();
        if rows.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    a.stop();
    assert_eq!(rows[0]["id"], id, "in 6 rounds after the link came: {rows}");
    assert!(
        rows[0]["addr"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("%{p1}"))),
        "{rows}"
    );
}

/// In the child before exec: a seccomp filter under which `setsockopt(SOL_SOCKET,
/// SO_BINDTODEVICE)` fails with EPERM, as a kernel before 5.7 answers a process without
/// CAP_NET_RAW (Raspbian Buster's 4.19 and 5.4). Every other system call is allowed.
fn refuse_bindtodevice() -> std::io::Result<()> {
    use nix::libc::{self, sock_filter, sock_fprog};
    const fn op(code: u16, k: u32) -> sock_filter {
        sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
    const fn jump_unless(k: u32, jf: u8) -> sock_filter {
        sock_filter {
            code: JEQ_K,
            jt: 0,
            jf,
            k,
        }
    }
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // struct seccomp_data: nr at 0, args[i] at 16 + 8 i (the low half first: little-endian).
    // A jump's jf skips that many instructions when the value differs: to the last, ALLOW.
    let filter: [sock_filter; 8] = [
        op(LD_W_ABS, 0),
        jump_unless(libc::SYS_setsockopt as u32, 5),
        op(LD_W_ABS, 16 + 8),
        jump_unless(libc::SOL_SOCKET as u32, 3),
        op(LD_W_ABS, 16 + 16),
        jump_unless(libc::SO_BINDTODEVICE as u32, 1),
        op(RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RET_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments; PR_SET_SECCOMP reads `prog`, which outlives it.
    let r = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            -1
        } else {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const sock_fprog,
            )
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A kernel that refuses SO_BINDTODEVICE (before 5.7, without CAP_NET_RAW): the agent
/// starts and serves, STATUS and the log say why the beacon is down, in the words
/// board/RASPBERRY-PI.md tells the operator to look for, and it tries again each interval
/// rather than exiting (the interface is there; only the socket option is refused).
#[test]
fn a_kernel_that_refuses_so_bindtodevice_leaves_the_agent_serving_and_says_why() {
    use std::os::unix::process::CommandExt;
    if !can_netns() {
        return;
    }
    if emulated() {
        eprintln!("not under qemu-user: a seccomp filter would apply to the emulator's own system calls; the native suite runs this test");
        return;
    }
    let net = Net::new("e");
    net.link(1, false);
    let (a1, _) = net.ifs(1);
    let dir = temp_dir("links-eperm");
    let args = loopback_agent_args(&dir.join("t.sock"), &["--iface", &a1, "--interval", "1"]);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", net.a(), BIN]);
    cmd.args(&args);
    // SAFETY: refuse_bindtodevice only calls prctl(2), which is async-signal-safe.
    unsafe { cmd.pre_exec(refuse_bindtodevice) };
    let peer = listen(net.peer(1), "0.0.0.0:4546", 3.0);
    let a = Agent::spawn_command(cmd, dir, &[]).unwrap_or_else(|f| panic!("{}", f.stderr));
    assert_ready_beacon(&a, &a1);
    let want = "SO_BINDTODEVICE: Operation not permitted";
    let said = || {
        let s = status(&a);
        s["beacon"]["state"] == "down" && s["beacon"]["last_error"].as_str() == Some(want)
    };
    assert!(
        wait_for(slack(Duration::from_secs(3)), said),
        "{}",
        status(&a)
    );
    assert_eq!(a.unix().req("PING"), "PONG");
    assert_eq!(a.unix().req("SET room lab"), "OK");
    let heard = beacons(&peer.join().unwrap());
    assert!(
        heard.is_empty(),
        "beacons left through a refused socket: {heard:?}"
    );
    // Still trying each interval, and still serving.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(a.unix().req("GET room"), "OK lab");
    let (status, log) = a.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(want), "{log}");
}
