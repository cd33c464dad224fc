//! The control plane as a user sees it: the real binary over real TCP and Unix sockets.
//! Every command, the exact reply shapes, framing, pipelining and TCP AUTH.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn ping_over_tcp_and_unix_and_ctl() {
    let a = Agent::start(&[]);
    assert!(a.ready.starts_with("ready tcp=127.0.0.1:"), "{}", a.ready);
    // SPEC's fields first, in its order, then the publish socket (on by default).
    let want = format!(
        " unix={} beacon=off publish={}",
        a.unix.display(),
        a.unix.with_file_name("publish.sock").display()
    );
    assert!(a.ready.ends_with(&want), "{}", a.ready);
    assert_eq!(a.tcp().req("PING"), "PONG");
    assert_eq!(a.unix().req("ping"), "PONG");
    let (code, out, _) = a.ctl(&["PING"]);
    assert_eq!((code, out.as_str()), (0, "PONG\n"));
    let (status, _) = a.stop();
    assert_eq!(status.code(), Some(0));
}

/// With beacons off, STATUS still names the port given (it showed the default).
#[test]
fn status_without_beacons_names_the_beacon_port_given() {
    let a = Agent::start(&["--beacon-port", "5000"]);
    let s = status(&mut a.unix());
    assert_eq!(s["beacon"]["port"], 5000, "{s}");
}

const HELP: &str = "OK PING HELP STATUS GET KEYS SET DEL INTERVAL IDENTIFY STATS SOCKETS AUTH QUIT";

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

/// Checks STATUS's shape; returns it.
fn status(c: &mut Client) -> Value {
    let s = ok_json(&c.req("STATUS"));
    let id = s["id"].as_str().expect("id");
    assert!(!id.is_empty(), "{s}");
    assert!(s["host"].is_string(), "{s}");
    assert_eq!(s["version"], "0.1.0", "{s}");
    // The commit `tether --version` names (`(git HASH, DATE)`), or none.
    let v = tether_cmd_in(None, &["--version"]).output_bounded();
    let v = String::from_utf8_lossy(&v.stdout);
    let rev = v.split_once("(git ").and_then(|(_, r)| r.split_once(','));
    assert_eq!(
        s["revision"],
        rev.map_or("", |(hash, _)| hash),
        "{s} vs {v}"
    );
    assert!(num(&s, "uptime") >= 0.0);
    assert!(num(&s, "load") >= 0.0);
    assert!(num(&s, "mem_avail_kb") > 0.0, "{s}");
    assert!(
        s["temp_c"].is_null() || s["temp_c"].is_number(),
        "temp_c: {s}"
    );
    assert_eq!(s["temperature"], s["temp_c"], "{s}");
    assert!(
        num(&s["memory"], "total_kb") >= num(&s["memory"], "avail_kb"),
        "{s}"
    );
    let addrs = s["addresses"].as_array().expect("addresses");
    assert!(
        addrs
            .iter()
            .any(|a| a["addr"] == "127.0.0.1" && a["iface"].is_string()),
        "loopback missing from addresses: {s}"
    );
    assert_eq!(s["beacon"]["state"], "off", "{s}");
    assert!(s["facts"].is_object(), "{s}");
    assert!(s["clients"]["total"].as_u64().expect("clients.total") >= 1);
    assert_eq!(s["clients"]["max"], 16, "{s}");
    s
}

/// Runs every command on connections made by `mk`, which may mutate (Unix, or an
/// AUTHed TCP connection). `kind` is the SOCKETS kind of our own connection.
fn every_command(a: &Agent, mk: &dyn Fn() -> Client, kind: &str) {
    let mut c = mk();
    assert_eq!(c.req("PING"), "PONG");
    assert_eq!(c.req("HELP"), HELP);

    let s = status(&mut c);
    let own = if kind == "tcp-client" { "tcp" } else { "unix" };
    assert!(s["clients"][own].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["facts"], serde_json::json!({}), "{s}");

    // Facts: SET / GET / KEYS / DEL, and STATUS shows them.
    assert_eq!(c.req("SET room kitchen north"), "OK");
    assert_eq!(c.req("SET a.b-c_D 42"), "OK");
    assert_eq!(c.req("GET room"), "OK kitchen north");
    assert_eq!(c.req("KEYS"), "OK a.b-c_D room");
    let s = status(&mut c);
    assert_eq!(s["facts"]["room"], "kitchen north", "{s}");
    assert_eq!(s["facts"]["a.b-c_D"], "42", "{s}");
    assert_eq!(c.req("SET room hall"), "OK");
    assert_eq!(c.req("GET room"), "OK hall");
    assert_eq!(c.req("DEL room"), "OK");
    assert!(c.req("GET room").starts_with("ERR not-found "));
    assert!(c.req("DEL room").starts_with("ERR not-found "));
    assert_eq!(c.req("KEYS"), "OK a.b-c_D");
    assert_eq!(c.req("DEL a.b-c_D"), "OK");
    assert_eq!(c.req("KEYS"), "OK");

    // SET with ttl: there now, gone after about a second.
    let t0 = Instant::now();
    assert_eq!(c.req("SET blip on ttl=1"), "OK");
    assert_eq!(c.req("GET blip"), "OK on");
    let gone = wait_for(slack(Duration::from_secs(4)), || {
        c.req("GET blip").starts_with("ERR not-found ")
    });
    assert!(gone, "fact with ttl=1 did not expire");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "expired too early"
    );
    assert_eq!(c.req("KEYS"), "OK");

    // INTERVAL read / set, and STATUS agrees.
    assert_eq!(c.req("INTERVAL"), "OK 5");
    assert_eq!(c.req("INTERVAL 7"), "OK 7");
    assert_eq!(c.req("interval"), "OK 7");
    assert_eq!(status(&mut c)["beacon"]["interval"], 7);
    assert!(c.req("INTERVAL 0").starts_with("ERR bad-argument "));
    assert_eq!(c.req("INTERVAL 5"), "OK 5");

    // No --led here.
    assert!(c.req("IDENTIFY").starts_with("ERR unsupported "));

    // STATS counters move.
    let before = ok_json(&c.req("STATS"));
    for k in [
        "accepted",
        "refused_busy",
        "closed_idle",
        "requests",
        "errors",
        "bytes_in",
        "bytes_out",
        "allocs_since_ready",
    ] {
        assert!(before[k].is_u64(), "STATS has no {k}: {before}");
    }
    let mut other = mk();
    assert_eq!(other.req("PING"), "PONG");
    assert!(other.req("FOO").starts_with("ERR bad-command "));
    let after = ok_json(&c.req("STATS"));
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert!(d("accepted") >= 1, "{before}\n{after}");
    // PING, FOO (and maybe AUTH) on `other`, plus this STATS.
    assert!(d("requests") >= 3, "{before}\n{after}");
    assert_eq!(d("errors"), 1, "{before}\n{after}");
    assert!(d("bytes_in") >= "PING\nFOO\nSTATS\n".len() as u64);
    assert!(d("bytes_out") >= "PONG\n".len() as u64 + before.to_string().len() as u64);

    // SOCKETS: every listener (accept_conn true) and our own socket.
    drop(other);
    let so = ok_json(&c.req("SOCKETS"));
    let list = so["sockets"].as_array().expect("sockets array");
    let of_kind = |k: &str| list.iter().filter(|s| s["kind"] == k).collect::<Vec<_>>();
    let tcp_l = of_kind("tcp-listen");
    assert_eq!(tcp_l.len(), a.tcp.len(), "{so}");
    for (l, addr) in tcp_l.iter().zip(&a.tcp) {
        assert_eq!(l["addr"], addr.to_string(), "{so}");
        assert_eq!(l["accept_conn"], true, "{so}");
    }
    let unix_l = of_kind("unix-listen");
    assert_eq!(unix_l.len(), 1, "{so}");
    assert_eq!(unix_l[0]["addr"], a.unix.to_str().unwrap(), "{so}");
    assert_eq!(unix_l[0]["accept_conn"], true, "{so}");
    let mine = of_kind(kind);
    assert!(!mine.is_empty(), "own {kind} socket missing: {so}");
    for s in list {
        assert!(s["rcvbuf"].as_u64().unwrap_or(0) > 0, "{so}");
        assert!(s["sndbuf"].as_u64().unwrap_or(0) > 0, "{so}");
        if s["kind"].as_str().unwrap().ends_with("-client") {
            assert_eq!(s["accept_conn"], false, "{so}");
        }
    }

    // QUIT: OK, then EOF.
    assert_eq!(c.req("QUIT"), "OK");
    assert!(c.closed(), "no EOF after QUIT");
}

#[test]
fn every_command_over_unix() {
    let a = Agent::start(&[]);
    every_command(&a, &|| a.unix(), "unix-client");
}

#[test]
fn every_command_over_tcp_v4() {
    let (a, _tf) = token_agent("s3cret\n", &[]);
    let addr = a.tcp_addr();
    assert!(addr.is_ipv4());
    every_command(
        &a,
        &|| {
            let mut c = Client::tcp(addr);
            assert_eq!(c.auth("s3cret"), "OK");
            c
        },
        "tcp-client",
    );
}

#[test]
fn every_command_over_tcp_v6() {
    if !ipv6_loopback() {
        skip("cannot bind [::1] on this machine (no IPv6)");
        return;
    }
    let (a, _tf) = token_agent(
        "s3cret\n",
        &["--listen", "[::1]:0", "--listen", "127.0.0.1:0"],
    );
    assert_eq!(a.tcp.len(), 2, "{}", a.ready);
    let v6 = a.tcp[0];
    assert!(v6.is_ipv6() && v6.ip().is_loopback(), "{}", a.ready);
    every_command(
        &a,
        &|| {
            let mut c = Client::tcp(v6);
            assert_eq!(c.auth("s3cret"), "OK");
            c
        },
        "tcp-client",
    );
    // The v4 listener is a separate socket on its own port.
    assert_eq!(Client::tcp(a.tcp[1]).req("PING"), "PONG");
}

/// At boot the LED rule's chgrp may come after the agent starts: `--led` that is not
/// writable yet is waited for (up to 5 s) before it is a configuration error, which the
/// unit does not retry.
#[test]
fn an_led_that_comes_within_seconds_is_waited_for() {
    let dir = temp_dir("led-late");
    let led = dir.join("brightness");
    let later = led.clone();
    let maker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        std::fs::write(&later, "0\n").unwrap();
    });
    let a = Agent::start(&["--led", led.to_str().unwrap()]);
    maker.join().unwrap();
    assert_eq!(a.unix().req("IDENTIFY 1"), "OK");
}

#[test]
fn identify_blinks_the_led_file_and_restores_it() {
    let dir = temp_dir("led");
    let led = dir.join("brightness");
    std::fs::write(&led, "7\n").unwrap();
    let a = Agent::start(&["--led", led.to_str().unwrap()]);
    let mut c = a.unix();
    let t0 = Instant::now();
    assert_eq!(c.req("IDENTIFY 1"), "OK");
    let (mut on, mut off) = (false, false);
    let restored = wait_for(slack(Duration::from_secs(5)), || {
        match std::fs::read_to_string(&led).unwrap_or_default().trim() {
            "1" => on = true,
            "0" => off = true,
            "7" => return on && off,
            _ => {} // caught between truncate and write
        }
        false
    });
    assert!(on, "LED never went on");
    assert!(off, "LED never went off while blinking");
    assert!(restored, "LED not restored to its old content");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "blink too short"
    );
    assert_eq!(std::fs::read_to_string(&led).unwrap(), "7\n");
    // IDENTIFY 0 stops a running blink and restores at once.
    assert_eq!(c.req("IDENTIFY 60"), "OK");
    assert!(wait_for(
        slack(Duration::from_secs(2)),
        || std::fs::read_to_string(&led).unwrap_or_default().trim() == "1"
    ));
    assert_eq!(c.req("IDENTIFY 0"), "OK");
    assert_eq!(std::fs::read_to_string(&led).unwrap(), "7\n");
    assert!(c.req("IDENTIFY 3601").starts_with("ERR bad-argument "));
    // SIGTERM during a blink also puts the LED back.
    assert_eq!(c.req("IDENTIFY 60"), "OK");
    let (st, _) = a.stop();
    assert_eq!(st.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&led).unwrap(), "7\n");
}

#[test]
fn identify_without_led_is_unsupported() {
    let a = Agent::start(&[]);
    let r = a.unix().req("IDENTIFY 1");
    assert!(r.starts_with("ERR unsupported "), "{r}");
}

#[test]
fn line_limits_crlf_and_case() {
    let a = Agent::start(&[]);
    let mut c = a.tcp();
    // Exactly 255 bytes (leading spaces are allowed), with \n and with \r\n.
    let l255 = format!("{}PING", " ".repeat(251));
    assert_eq!(l255.len(), 255);
    assert_eq!(c.req(&l255), "PONG");
    assert_eq!(c.req(&format!("{l255}\r")), "PONG");
    // A 255-byte unknown word is framed and parsed, not too long.
    let r = c.req(&"X".repeat(255));
    assert!(r.starts_with("ERR bad-command "), "{r}");
    assert_eq!(c.req("PING\r"), "PONG");
    for w in ["ping", "Ping", "pInG"] {
        assert_eq!(c.req(w), "PONG");
    }
    assert_eq!(c.req("help"), HELP);
    assert_eq!(c.req("iNtErVaL"), "OK 5");
    assert_eq!(c.req("keys"), "OK");
    assert!(c.req("sTaTuS").starts_with("OK {\"id\":"));
    assert!(c.req("stats").starts_with("OK {\"accepted\":"));
    assert!(c.req("sockets").starts_with("OK {\"sockets\":["));
    let r = c.req("get nothing");
    assert!(r.starts_with("ERR not-found "), "{r}");
    let r = c.req("");
    assert!(r.starts_with("ERR bad-command "), "{r}");
    let r = c.req("PING extra");
    assert!(r.starts_with("ERR bad-argument "), "{r}");
    // A value beyond ASCII (a degree sign) is refused by what it is.
    assert_eq!(
        c.req("SET temp 21.5 °C"),
        "ERR bad-argument value must be 1-64 bytes of printable ASCII"
    );
    assert_eq!(c.req("quit"), "OK");
    assert!(c.closed());
}

#[test]
fn pipelined_requests_get_one_reply_each_in_order() {
    let a = Agent::start(&[]);
    let mut u = a.unix();
    assert_eq!(u.req("SET color blue"), "OK");
    for mut c in [a.tcp(), a.unix()] {
        let mut batch = String::new();
        let mut want: Vec<&str> = Vec::new();
        for i in 0..100 {
            let (req, rep) = match i % 7 {
                0 => ("PING", "PONG"),
                1 => ("get color\r", "OK blue"),
                2 => ("GET nope", "ERR not-found "),
                3 => ("INTERVAL", "OK 5"),
                4 => ("FROB x", "ERR bad-command "),
                5 => ("KEYS", "OK color"),
                _ => ("STATUS", "OK {\"id\":"),
            };
            batch.push_str(req);
            batch.push('\n');
            want.push(rep);
        }
        c.send(batch.as_bytes()).unwrap();
        for (i, w) in want.iter().enumerate() {
            let got = c.line().unwrap_or_else(|e| panic!("reply {i}: {e}"));
            assert!(got.starts_with(w), "reply {i}: want {w:?}, got {got:?}");
            if !w.ends_with(' ') && !w.ends_with(':') {
                assert_eq!(&got, w, "reply {i}");
            }
        }
        // Nothing extra was queued: the next line is the answer to the next request.
        assert_eq!(c.req("PING"), "PONG");
    }
}

/// TCP_NODELAY on the agent's connections: a batch of pipelined requests is answered over
/// more than one turn (one input buffer a read), and without it each reply after the first
/// waited for the client's delayed ACK of the one before (40 ms on Linux, whatever the
/// load): 1,000 PINGs in one write were answered in 42 ms, redis 0.8 ms. Not a speed test:
/// the best of five tries must beat one delayed ACK, which any machine, emulated or not,
/// does by far (0.1 ms natively).
#[test]
fn pipelined_batches_wait_for_no_delayed_ack() {
    let a = Agent::start(&[]);
    let mut c = a.tcp();
    // A conversation first, as a fleet tool's: the client's kernel then delays its ACKs.
    for _ in 0..20 {
        assert_eq!(c.req("PING"), "PONG");
    }
    let n = 1000;
    let best = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            c.send("PING\n".repeat(n).as_bytes()).unwrap();
            for i in 0..n {
                let got = c.line().unwrap_or_else(|e| panic!("reply {i}: {e}"));
                assert_eq!(got, "PONG", "reply {i}");
            }
            t0.elapsed()
        })
        .min()
        .unwrap();
    assert!(
        best < Duration::from_millis(30),
        "{n} pipelined PINGs took {best:?} at best (a delayed ACK is 40 ms)"
    );
}

#[test]
fn a_client_that_half_closes_still_gets_every_reply() {
    // `printf 'PING\n...' | nc -N`: the requests, then shutdown(SHUT_WR), then read.
    // Small socket buffers (a small board's) so the replies cannot all leave at once;
    // 1500 replies (7.5 KB) still fit the 16 KiB output buffer.
    let a = Agent::start(&["--sndbuf", "1024", "--rcvbuf", "1024"]);
    for mut c in [a.tcp(), a.unix()] {
        c.send("PING\n".repeat(1500).as_bytes()).unwrap();
        match &c.s {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
        }
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..1500 {
            let got = c.line().unwrap_or_else(|e| panic!("reply {i}: {e}"));
            assert_eq!(got, "PONG", "reply {i}");
        }
        // Then a clean end: nothing more, no half line.
        let end = c.line().unwrap_err();
        assert_eq!(end.kind(), std::io::ErrorKind::UnexpectedEof, "{end}");
    }
    let stats = a.unix().req("STATS");
    assert!(stats.contains("\"closed_slow\":0"), "{stats}");
}

#[test]
fn tcp_is_read_only_until_auth_and_unix_is_not() {
    let (a, _tf) = token_agent("s3cret\n", &[]);
    let mut t = a.tcp();
    for cmd in [
        "SET a b",
        "DEL a",
        "INTERVAL 9",
        "IDENTIFY",
        "IDENTIFY 3",
        "set a b ttl=5",
    ] {
        let r = t.req(cmd);
        assert!(r.starts_with("ERR denied "), "{cmd}: {r}");
    }
    // Reading is allowed.
    assert_eq!(t.req("INTERVAL"), "OK 5");
    assert_eq!(t.req("KEYS"), "OK");
    assert!(t.req("GET a").starts_with("ERR not-found "));
    // Unix mutates without AUTH.
    let mut u = a.unix();
    assert_eq!(u.req("SET a b"), "OK");
    assert_eq!(t.req("GET a"), "OK b");
    // The right token unlocks this connection only.
    assert_eq!(t.auth("s3cret"), "OK");
    assert_eq!(t.req("SET a c"), "OK");
    assert_eq!(t.req("INTERVAL 9"), "OK 9");
    assert_eq!(u.req("GET a"), "OK c");
    let mut t2 = a.tcp();
    assert!(t2.req("DEL a").starts_with("ERR denied "));
    assert_eq!(t.req("DEL a"), "OK");
}

/// Without `--token-file` no AUTH can succeed over TCP: the agent says so rather than
/// offering a challenge no answer meets, and `tether ctl` exits 77 with that line.
#[test]
fn without_a_token_file_tcp_says_it_is_read_only() {
    let a = Agent::start(&[]);
    let mut t = a.tcp();
    let read_only = "ERR denied read-only over TCP: this agent has no --token-file";
    for cmd in ["SET a b", "AUTH", "AUTH 0123"] {
        let r = t.req(cmd);
        assert!(r.starts_with(read_only), "{cmd}: {r}");
    }
    assert_eq!(a.stats()["auth_failures"], 0);
    let (code, out, _) = a.ctl_tcp(&["SET", "a", "b"]);
    assert_eq!(code, 77);
    assert!(out.starts_with(read_only), "{out}");
    assert_eq!(a.unix().req("SET a b"), "OK");
}

#[test]
fn wrong_token_is_denied_and_slowed() {
    let (a, _tf) = token_agent("s3cret\n", &[]);
    let mut t = a.tcp();
    let nonce = t.req("AUTH");
    let nonce = nonce.strip_prefix("OK ").expect("a nonce");
    let t0 = Instant::now();
    t.send(format!("{}\nPING\n", auth_answer(b"guess", nonce)).as_bytes())
        .unwrap();
    let r = t.line().unwrap();
    assert_eq!(r, "ERR denied wrong answer to the challenge");
    assert_eq!(t.line().unwrap(), "PONG");
    let held = t0.elapsed();
    assert!(
        held >= Duration::from_millis(800),
        "reply after a failed AUTH came after {held:?}, want about 1 s"
    );
    // Still not authorised; others are not slowed meanwhile.
    assert!(t.req("SET a b").starts_with("ERR denied "));
    let t1 = Instant::now();
    t.send(b"AUTH wrong-again\n").unwrap();
    let r = t.line().unwrap();
    assert!(r.starts_with("ERR denied"), "{r}");
    let mut other = a.tcp();
    assert_eq!(other.req("PING"), "PONG");
    assert!(
        t1.elapsed() < slack(Duration::from_millis(700)),
        "another client waited for the held one"
    );
    assert!(a.stats()["auth_failures"].as_u64().unwrap() >= 2);
    // AUTH alone is a request for a challenge, not a guess.
    let before = a.stats()["auth_failures"].as_u64().unwrap();
    assert!(other.req("AUTH").starts_with("OK "));
    assert_eq!(a.stats()["auth_failures"].as_u64().unwrap(), before);
}

#[test]
fn sighup_rereads_the_token_file() {
    let (a, tf) = token_agent("old-token\n", &[]);
    let mut kept = a.tcp();
    assert_eq!(kept.auth("old-token"), "OK");
    // The same token again: the session stays authenticated.
    a.signal(1); // SIGHUP
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(kept.req("SET k same"), "OK");
    std::fs::write(&tf, "new-token\n").unwrap();
    a.signal(1); // SIGHUP
                 // The reload has no reply of its own: retry (each failure costs a 1 s hold).
    let mut ok = false;
    for _ in 0..5 {
        let mut t = a.tcp();
        if t.auth("new-token") == "OK" {
            assert_eq!(t.req("SET k v"), "OK");
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "new token not accepted after SIGHUP");
    let r = a.tcp().auth("old-token");
    assert!(r.starts_with("ERR denied"), "old token still works: {r}");
    assert_eq!(a.unix().req("GET k"), "OK v");
    // A session the old token opened is revoked with it (a leaked token's sessions end),
    // and may authenticate again with the new one.
    let r = kept.req("SET k stale");
    assert!(r.starts_with("ERR denied authenticate first"), "{r}");
    assert_eq!(kept.auth("new-token"), "OK");
    assert_eq!(kept.req("SET k fresh"), "OK");
    // Reloading is steady-state work: no allocation, a good file or an empty one.
    std::fs::write(&tf, "").unwrap();
    a.signal(1);
    std::thread::sleep(Duration::from_millis(200));
    let r = a.tcp().req("AUTH");
    let off = "ERR denied read-only over TCP: this agent's --token-file was bad at its last reload";
    assert!(r.starts_with(off), "AUTH off: {r}");
    assert_eq!(a.stats()["allocs_since_ready"], 0);
    // A 9-byte token is taken, with a warning at start and at each reload that takes one.
    let (_, log) = a.stop();
    let short = "a token of 9 bytes can be guessed";
    assert_eq!(log.matches(short).count(), 3, "{log}");
}

#[test]
fn a_token_of_16_bytes_or_more_is_taken_without_a_warning() {
    let (a, _tf) = token_agent("0123456789abcdef\n", &[]);
    assert_eq!(a.tcp().auth("0123456789abcdef"), "OK");
    let (_, log) = a.stop();
    assert!(!log.contains("can be guessed"), "{log}");
}

#[test]
fn a_fact_past_its_ttl_is_gone_for_a_request_in_the_same_turn() {
    // The TTL runs out while the agent is stopped; GET and KEYS arrive before it resumes,
    // so they are read in the very turn whose deadline is the expiry.
    let a = Agent::start(&[]);
    let mut c = a.unix();
    assert_eq!(c.req("SET k v ttl=1"), "OK");
    assert_eq!(c.req("GET k"), "OK v");
    a.signal(19); // SIGSTOP
    std::thread::sleep(Duration::from_millis(1500));
    c.send(b"GET k\nKEYS\n").unwrap();
    a.signal(18); // SIGCONT
    assert_eq!(c.line().unwrap(), "ERR not-found no such fact");
    assert_eq!(c.line().unwrap(), "OK");
    let stats = c.req("STATS");
    assert_eq!(json_u64(&stats, "facts_expired"), Some(1), "{stats}");
}

/// A board without /proc (a chroot or a container that mounts none; here an empty tmpfs
/// over it, in a mount namespace of the agent's own): STATUS still tells the host name,
/// uptime, load and total memory (system calls, not /proc files); the available memory,
/// which only /proc/meminfo tells, is 0. Native only: qemu-user needs /proc itself.
#[test]
fn status_without_proc_still_tells_host_uptime_load_and_memory() {
    if emulated() {
        eprintln!("not under qemu-user, which needs /proc itself");
        return;
    }
    if !can_netns() {
        // The same need: root, to make a mount namespace.
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let dir = temp_dir("noproc");
    let args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon"]);
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"]);
    cmd.arg("mount -t tmpfs none /proc && exec \"$0\" \"$@\"");
    cmd.arg(BIN).args(&args);
    let a = Agent::spawn_command(cmd, dir, &[])
        .unwrap_or_else(|f| panic!("{:?} {} {}", f.status, f.stdout, f.stderr));
    let s = ok_json(&a.unix().req("STATUS"));
    assert_eq!(s["host"], host.trim_end(), "{s}");
    assert!(s["uptime"].as_u64().unwrap() > 0, "{s}");
    assert!(s["memory"]["total_kb"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["memory"]["avail_kb"], 0, "{s}");
    assert_eq!(s["loadavg"].as_array().map(Vec::len), Some(3), "{s}");
    let (code, err) = a.stop();
    assert_eq!(code.code(), Some(0), "{err}");
}
