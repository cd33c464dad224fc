//! An agent on a board that has been up for 400 days: its monotonic clock is past 2^32
//! milliseconds (49.7 days), where a 32-bit millisecond count would have wrapped, and far
//! from where a fresh boot starts it. Run in a time namespace whose monotonic and boot-time
//! clocks are 400 days ahead (`unshare --time`, as root), through the runner on
//! the emulated targets: STATUS tells the uptime, and the agent's timers (a fact's TTL, the
//! idle timeout) still fire when due.
mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const OFFSET_SECS: u64 = 400 * 86_400;

/// Whether a time namespace can be made here, and entered by a program unshare execs in
/// place (as the agent is below); otherwise says why and skips (a failure under CI).
fn can_unshare_time() -> bool {
    let off = OFFSET_SECS.to_string();
    let up = Command::new("unshare")
        .args(["--time", "--boottime", &off, "cat", "/proc/uptime"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split('.')
                .next()?
                .parse::<u64>()
                .ok()
        });
    let ok = up.is_some_and(|s| s >= OFFSET_SECS);
    if !ok {
        skip(&format!(
            "`unshare --time --boottime {off} cat /proc/uptime` said {up:?}: a time namespace \
             needs root and util-linux 2.36, and a program exec'd after unshare(CLONE_NEWTIME) \
             must enter it"
        ));
    }
    ok
}

#[test]
fn an_agent_on_a_board_up_for_400_days_keeps_its_timers() {
    if !can_unshare_time() {
        return;
    }
    let host_up = std::fs::read_to_string("/proc/uptime").unwrap();
    let host_up: f64 = host_up.split(' ').next().unwrap().parse().unwrap();
    let dir = temp_dir("uptime");
    let args = loopback_agent_args(&dir.join("t.sock"), &["--no-beacon", "--idle-timeout", "1"]);
    let offset = OFFSET_SECS.to_string();
    let mut cmd = Command::new("unshare");
    // unshare then execs the agent in place (pid and signals are the agent's), which
    // enters the new time namespace there (checked above).
    cmd.args(["--time", "--monotonic", &offset, "--boottime", &offset]);
    cmd.args(runner()).arg(BIN).args(&args);
    let a = Agent::spawn_command(cmd, dir, &[])
        .unwrap_or_else(|f| panic!("{:?} {} {}", f.status, f.stdout, f.stderr));

    // The agent runs in the namespace: both its clocks are 400 days ahead.
    let offsets = std::fs::read_to_string(format!("/proc/{}/timens_offsets", a.pid())).unwrap();
    for clock in ["monotonic", "boottime"] {
        let line = offsets.lines().find(|l| l.starts_with(clock)).unwrap();
        let secs = line.split_whitespace().nth(1).unwrap();
        assert_eq!(secs, OFFSET_SECS.to_string(), "{offsets}");
    }
    let status = ok_json(&a.unix().req("STATUS"));
    let up = status["uptime"].as_u64().unwrap();
    let want = OFFSET_SECS + host_up as u64;
    assert!(
        up >= want && up < want + 120,
        "uptime {up}, want about {want}"
    );
    assert!(status["agent_uptime"].as_u64().unwrap() < 60, "{status}");

    // A fact's TTL runs out when due: not before 2 s after its SET (timed from before it),
    // and soon after.
    let mut c = a.unix();
    let set = Instant::now();
    assert_eq!(c.req("SET k v ttl=2"), "OK");
    assert_eq!(c.req("GET k"), "OK v");
    drop(c);
    let gone = || a.unix().req("GET k").starts_with("ERR not-found");
    assert!(
        wait_for(slack(Duration::from_secs(6)), gone),
        "k never expired"
    );
    let took = set.elapsed();
    assert!(took >= Duration::from_secs(2), "expired after {took:?}");

    // An idle client is closed after --idle-timeout: not before 1 s after its last
    // request (timed from before it), and soon after.
    let mut idle = a.tcp();
    idle.set_timeout(slack(Duration::from_secs(5)));
    let since = Instant::now();
    assert_eq!(idle.req("PING"), "PONG");
    idle.assert_closed_between(since, Duration::from_secs(1), slack(Duration::from_secs(3)));
    let stats = a.stats();
    assert_eq!(stats["closed_idle"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["facts_expired"].as_u64(), Some(1), "{stats}");
    let (status, err) = a.stop();
    assert_eq!(status.code(), Some(0), "{err}");
}
