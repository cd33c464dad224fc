//! End to end against a real Prometheus (issue 9, item 5): three boards in three network
//! namespaces and a scanner namespace, joined by a bridge the test creates.
//!
//! ```text
//!   ns A0 (agent) tpa0 10.233.0.1 ─┐
//!   ns A1 (agent) tpa1 10.233.0.2 ─┼─ veth ─ bridge tpbr 10.233.0.100 ─ ns S (scanner):
//!   ns A2 (agent) tpa2 10.233.0.3 ─┘          tether scan --prometheus-sd FILE --watch
//!                                             prometheus, file_sd_configs -> FILE
//! ```
//! Each agent gets its own /etc/machine-id (a bind mount private to its `ip netns exec`
//! mount namespace), so the three boards have three ids. Prometheus's data dir is a temp
//! dir, removed afterwards. All traffic stays inside these namespaces.
//!
//! Needs root, `ip netns` and Debian's `prometheus` package: skipped with a message when
//! missing, a failure under CI.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCANNER_IP: &str = "10.233.0.100";

/// Root with `ip netns` ([`can_netns`]) and a `prometheus` to run; otherwise skips, or
/// fails under CI.
fn can_run() -> bool {
    can_netns()
        && have(
            "prometheus",
            "prometheus is missing (Debian package `prometheus`)",
        )
}

/// The namespaces, the bridge and the veths; deleted on drop.
struct Net {
    agents: Vec<Netns>,
    scanner: Netns,
    bridge: String,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id() % 100_000;
        let net = Net {
            agents: (0..3).map(|i| Netns::new(format!("tpa{i}n{id}"))).collect(),
            scanner: Netns::new(format!("tpsn{id}")),
            bridge: format!("tpbr{id}"),
        };
        let members: Vec<(&Netns, String, String, String)> = (net.agents.iter().enumerate())
            .map(|(i, n)| {
                let cidr = format!("{}/24", Net::addr(i));
                (n, net.iface(i), format!("tpo{i}n{id}"), cidr)
            })
            .collect();
        bridge_lan(
            &net.scanner,
            &net.bridge,
            &format!("{SCANNER_IP}/24"),
            &members,
        );
        net
    }

    fn iface(&self, i: usize) -> String {
        format!("tpi{i}n{}", std::process::id() % 100_000)
    }

    fn addr(i: usize) -> String {
        format!("10.233.0.{}", i + 1)
    }
}

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tether agent` in `ns` with its own machine id (a bind mount private to the
/// mount namespace `ip netns exec` makes).
fn start_agent(net: &Net, i: usize, dir: &Path) -> Agent {
    let adir = dir.join(format!("agent{i}"));
    std::fs::create_dir_all(&adir).unwrap();
    let mid = adir.join("machine-id");
    std::fs::write(&mid, format!("{:032x}\n", 0x7e7e_0000_u128 + i as u128)).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &*net.agents[i], "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/machine-id && exec \"$@\"")
        .arg(&mid)
        .args(runner())
        .arg(BIN)
        .args(loopback_agent_args(
            &adir.join("a.sock"),
            &[
                "--iface",
                &net.iface(i),
                "--interval",
                "1",
                // IP alone: the default metrics port.
                "--metrics",
                "0.0.0.0",
            ],
        ));
    Agent::spawn_command(cmd, adir, &[])
        .unwrap_or_else(|f| panic!("agent {i} did not start: {} {}", f.stdout, f.stderr))
}

/// Percent-encodes a PromQL query for a URL.
fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One instant query against the Prometheus in the scanner namespace: the result vector
/// as (labels, value), or None when Prometheus does not answer (yet).
fn query(ns: &str, q: &str) -> Option<Vec<(serde_json::Value, String)>> {
    let addr = format!("{SCANNER_IP}:9090").parse().ok()?;
    let (head, body) = http_get_in(ns, addr, &format!("/api/v1/query?query={}", urlencode(q)))?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let rows = v["data"]["result"].as_array()?;
    Some(
        rows.iter()
            .map(|r| {
                let val = r["value"][1].as_str().unwrap_or("").to_string();
                (r["metric"].clone(), val)
            })
            .collect(),
    )
}

/// The instances of the series `q` returns with value `want` (or any value when None).
fn instances(ns: &str, q: &str, want: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = query(ns, q)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, val)| want.is_none_or(|w| val == w))
        .filter_map(|(m, _)| m["instance"].as_str().map(String::from))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn sd_targets(file: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let mut t: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    t.sort();
    t
}

#[test]
fn prometheus_discovers_scrapes_and_forgets_three_boards() {
    if !can_run() {
        return;
    }
    let net = Net::new();
    let dir = temp_dir("prom-e2e");
    let _cleanup = RemoveDir(dir.clone());
    let t0 = Instant::now();

    // No board yet: a one-shot scan writes `[]` (mode 0644) and exits 0; a path that
    // cannot be written is exit 73 with one error line.
    let sd_once = |path: &Path| {
        let p = path.to_string_lossy().into_owned();
        let args = [
            "scan",
            "-i",
            &net.bridge,
            "-t",
            "0.5",
            "--prometheus-sd",
            &p,
        ];
        tether_cmd_in(Some(&net.scanner), &args).output_bounded()
    };
    let empty = dir.join("empty.json");
    let out = sd_once(&empty);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "[]");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&empty).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    let mut agents = Vec::new();
    for i in 0..3 {
        let a = start_agent(&net, i, &dir);
        let want = format!("{}:4546", net.iface(i));
        assert_eq!(a.ready_field("beacon"), Some(want.as_str()), "{}", a.ready);
        assert!(a.ready.ends_with(" metrics=0.0.0.0:9545"), "{}", a.ready);
        assert_eq!(a.unix().req(&format!("SET board b{i}")), "OK");
        agents.push(Some(a));
    }
    // A file that cannot be written is found before any probe is sent (no agent answers
    // one), and said in one line.
    let answered = |a: &Option<Agent>| a.as_ref().map(|a| a.stats()["probes_answered"].clone());
    let before = answered(&agents[0]);
    for bad in [dir.join("no-such-dir").join("x.json"), dir.clone()] {
        let out = sd_once(&bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(73), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: --prometheus-sd"), "{err}");
    }
    assert_eq!(answered(&agents[0]), before, "a probe was sent");

    let sd = dir.join("sd").join("tether.json");
    std::fs::create_dir_all(sd.parent().unwrap()).unwrap();
    let sd_s = sd.to_string_lossy().into_owned();
    let scan = Proc(
        tether_cmd_in(
            Some(&net.scanner),
            &[
                "scan",
                "-i",
                &net.bridge,
                "-t",
                "1",
                "--watch",
                "--prometheus-sd",
                &sd_s,
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );

    let data = dir.join("prometheus-data");
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tether\n    file_sd_configs:\n      - files: ['{sd_s}']\n        refresh_interval: 1s\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let prom = Proc(
        Command::new("ip")
            .args(["netns", "exec", &*net.scanner, "prometheus"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={SCANNER_IP}:9090"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let want: Vec<String> = (0..3).map(|i| format!("{}:9545", Net::addr(i))).collect();
    let ns = net.scanner.to_string();
    let deadline = t0 + Duration::from_secs(60);
    let prom_log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    let mut t_file = None;
    let t_up;
    loop {
        if t_file.is_none() && sd_targets(&sd) == want {
            t_file = Some(t0.elapsed());
        }
        let up = instances(&ns, "up{job=\"tether\"}", Some("1"));
        let uptime = instances(&ns, "tether_uptime_seconds", None);
        let facts = instances(&ns, "tether_fact_info{key=\"board\"}", Some("1"));
        if up == want && uptime == want && facts == want {
            t_up = t0.elapsed();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s: file {:?}, up {up:?}, uptime {uptime:?}, facts {facts:?}\n{}",
            sd_targets(&sd),
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The file is what the issue says: ids and hosts as labels, mode 0644.
    let text = std::fs::read_to_string(&sd).unwrap();
    let groups: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["labels"]["tether_id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sorted by id: {text}");
    assert!(groups[0]["labels"]["tether_host"].is_string(), "{text}");
    let mode = std::fs::metadata(&sd).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // The fact values arrived as labels.
    let rows = query(&ns, "tether_fact_info{key=\"board\"}").unwrap();
    let mut values: Vec<String> = rows
        .iter()
        .map(|(m, _)| m["value"].as_str().unwrap().to_string())
        .collect();
    values.sort();
    assert_eq!(values, ["b0", "b1", "b2"]);

    // One board stops: it says goodbye, leaves the file, then Prometheus.
    let t_stop = Instant::now();
    // `ip netns exec` exec'd the shell, which exec'd tether: the child's pid is the agent's.
    let (status, _) = agents[0].take().unwrap().stop();
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit on SIGTERM, with its goodbye beacon"
    );
    let rest = want[1..].to_vec();
    let mut t_gone_file = None;
    let t_gone_prom;
    loop {
        if t_gone_file.is_none() && sd_targets(&sd) == rest {
            t_gone_file = Some(t_stop.elapsed());
        }
        let up = instances(&ns, "up{job=\"tether\"}", None);
        if t_gone_file.is_some() && up == rest {
            t_gone_prom = t_stop.elapsed();
            break;
        }
        assert!(
            t_stop.elapsed() < Duration::from_secs(60),
            "stopped board still there: file {:?}, up {up:?}",
            sd_targets(&sd)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "prometheus e2e: file lists 3 boards after {:.1?}, Prometheus has all 3 up with \
         tether_uptime_seconds and tether_fact_info after {:.1?}; a stopped board left the \
         file after {:.1?} and Prometheus after {:.1?}",
        t_file.unwrap_or_default(),
        t_up,
        t_gone_file.unwrap_or_default(),
        t_gone_prom
    );
    drop(prom);
    drop(scan);
    drop(agents);
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
