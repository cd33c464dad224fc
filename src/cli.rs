//! Command-line parsing (argh) and validation: every check that needs no I/O, for all
//! three subcommands (`main.rs` turns an `Err` into one `error:` line and exit 64). Pure:
//! no I/O beyond what argh needs, nothing here opens a socket or a file.

use crate::limits::{
    BACKLOG_MAX, DEFAULT_BACKLOG, DEFAULT_BEACON_PORT, DEFAULT_IDLE_SECS, DEFAULT_INTERVAL_SECS,
    INTERVAL_MAX_SECS, INTERVAL_MIN_SECS, MAX_CLIENTS, MAX_LISTENERS,
};
use crate::limits::{DEFAULT_METRICS_PORT, LINE_MAX, MAX_BEACON_IFACES, MAX_METRICS_LISTENERS};
use crate::limits::{FILE_PATH_MAX, SOCKBUF_MAX, SOCKBUF_MIN, SOCK_PATH_MAX};
use crate::sys::{iface, unix};
use argh::FromArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(FromArgs, Debug)]
/// tether: a tiny network agent for embedded Linux boards (TCP control port, UDP status
/// beacon, Unix control socket), and the tools to talk to it.
#[argh(help_triggers("-h", "--help", "help"))]
pub struct Top {
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    #[argh(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Cmd {
    Agent(AgentArgs),
    Ctl(CtlArgs),
    Scan(ScanArgs),
}

#[derive(FromArgs, Debug)]
/// Run the agent in the foreground (for systemd, procd or busybox init).
#[argh(subcommand, name = "agent")]
#[argh(help_triggers("-h", "--help"))]
pub struct AgentArgs {
    /// TCP address to listen on, repeatable up to 4 (default 0.0.0.0:4545 and [::]:4545); port 0 picks a free port
    #[argh(option)]
    pub listen: Vec<String>,
    /// listen backlog, 1-4096 (default 8)
    #[argh(option, default = "DEFAULT_BACKLOG")]
    pub backlog: u16,
    /// most clients served at once, TCP and Unix together (default and maximum 16)
    #[argh(option, default = "MAX_CLIENTS")]
    pub max_clients: usize,
    /// close a client that sends nothing, or reads none of its waiting replies (then at
    /// least 10 s), for this many seconds (default 60, 0 = never)
    #[argh(option, default = "DEFAULT_IDLE_SECS")]
    pub idle_timeout: u32,
    /// beacon interface, repeatable up to 4 (default: the first up, non-loopback interface with a carrier and an IPv4 broadcast address, else the first with an IPv6 link-local address)
    #[argh(option)]
    pub iface: Vec<String>,
    /// beacon over IPv4 broadcast (4), IPv6 link-local multicast ff02::1 (6) or both (default both)
    #[argh(option, default = "String::from(\"both\")")]
    pub beacon_family: String,
    /// do not send status beacons or answer scans
    #[argh(switch)]
    pub no_beacon: bool,
    /// UDP port for beacons and scan probes (default 4546)
    #[argh(option, default = "DEFAULT_BEACON_PORT")]
    pub beacon_port: u16,
    /// seconds between beacons, 1-3600 (default 5; INTERVAL changes it at run time)
    #[argh(option, default = "DEFAULT_INTERVAL_SECS")]
    pub interval: u32,
    /// path of the Unix socket (default /run/tether/tether.sock as root, else $XDG_RUNTIME_DIR/tether.sock or /tmp/tether-$UID/tether.sock)
    #[argh(option)]
    pub socket: Option<PathBuf>,
    /// group that owns the Unix socket (mode 0660)
    #[argh(option)]
    pub socket_group: Option<String>,
    /// file holding the token whose AUTH challenge a TCP client must answer before SET/DEL/INTERVAL n/IDENTIFY (re-read on SIGHUP)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// also accept AUTH with the token itself over TCP (off by default: the token would cross the network in clear)
    #[argh(switch)]
    pub plain_auth: bool,
    /// file holding the fleet key (16-256 bytes, whitespace trimmed): every beacon and probe answer is signed with it (re-read on SIGHUP)
    #[argh(option)]
    pub fleet_key: Option<PathBuf>,
    /// LED for IDENTIFY: a /sys/class/leds/NAME directory or a brightness file
    #[argh(option)]
    pub led: Option<PathBuf>,
    /// temperature file in millidegrees C (default /sys/class/thermal/thermal_zone0/temp)
    #[argh(
        option,
        default = "String::from(\"/sys/class/thermal/thermal_zone0/temp\")"
    )]
    pub thermal: String,
    /// serve Prometheus metrics over HTTP at GET /metrics on this address, repeatable (at most 2; off by default); IP:PORT, or IP alone for port 9545; port 0 picks a free port
    #[argh(option)]
    pub metrics: Vec<String>,
    /// path of the Unix datagram socket where programs on the board publish facts, one SET or DEL line per datagram (default: publish.sock beside the control socket)
    #[argh(option)]
    pub publish: Option<PathBuf>,
    /// do not open the publish socket
    #[argh(switch)]
    pub no_publish: bool,
    /// SO_RCVBUF in bytes for every socket the agent opens (1024-4194304; Linux reports twice the value; default: the kernel's)
    #[argh(option)]
    pub rcvbuf: Option<u32>,
    /// SO_SNDBUF in bytes for every socket the agent opens (1024-4194304; Linux reports twice the value; default: the kernel's)
    #[argh(option)]
    pub sndbuf: Option<u32>,
    /// more logging (-v debug: connections; -vv trace: each request too); RUST_LOG overrides
    #[argh(switch, short = 'v')]
    pub verbose: u8,
}

#[derive(FromArgs, Debug)]
/// Send commands to an agent and print its replies: the command given as words; with no
/// words, a prompt on a terminal, else one command per line of standard input.
#[argh(subcommand, name = "ctl")]
// Not argh's default bare `help`: `tether ctl help` sends HELP, the agent's command.
#[argh(help_triggers("-h", "--help"))]
pub struct CtlArgs {
    /// the agent's Unix socket (default: the agent's default for this user, or when that is absent /run/tether/tether.sock)
    #[argh(option, short = 's')]
    pub socket: Option<PathBuf>,
    /// connect over TCP to HOST:PORT instead
    #[argh(option, short = 'c')]
    pub connect: Option<String>,
    /// seconds to wait for the connection and each reply (default 5)
    #[argh(option, short = 't', default = "5.0", from_str_fn(decimal_arg))]
    pub timeout: f64,
    /// file holding the token: over TCP, answer the agent's AUTH challenge first (the token itself is never sent)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// print STATUS, STATS and SOCKETS as the agent's one-line `OK {json}` even on a terminal
    #[argh(switch)]
    pub raw: bool,
    /// send the command (SET or DEL only) as one datagram to the agent's publish socket (publish.sock beside the -s socket) and exit without waiting for an answer
    #[argh(switch)]
    pub dgram: bool,
    /// with --dgram: the publish socket itself, for an agent that put it elsewhere
    #[argh(option)]
    pub publish: Option<PathBuf>,
    /// the command, e.g. PING, STATUS, SET room kitchen, after every option: from its first word on, everything is sent as it is (none: read commands from standard input)
    #[argh(positional, greedy)]
    pub words: Vec<String>,
}

/// ctl's options: after the command's first word they are sent as part of the command.
const CTL_OPTIONS: [&str; 12] = [
    "-h",
    "--help",
    "-s",
    "--socket",
    "-c",
    "--connect",
    "-t",
    "--timeout",
    "--token-file",
    "--raw",
    "--dgram",
    "--publish",
];

#[derive(FromArgs, Debug)]
/// Probe the LAN for agents and print one row per board.
#[argh(subcommand, name = "scan")]
#[argh(help_triggers("-h", "--help"))]
pub struct ScanArgs {
    /// interface to scan on (binds the probe socket to it)
    #[argh(option, short = 'i')]
    pub iface: Option<String>,
    /// seconds to listen for answers (default 2)
    #[argh(option, short = 't', default = "2.0", from_str_fn(decimal_arg))]
    pub timeout: f64,
    /// print JSON instead of a table
    #[argh(switch)]
    pub json: bool,
    /// write the boards that serve metrics as a Prometheus file_sd target file here (atomically); with --watch, rewrite it whenever the set changes
    #[argh(option)]
    pub prometheus_sd: Option<PathBuf>,
    /// keep listening and update the list until interrupted
    #[argh(switch)]
    pub watch: bool,
    /// UDP port agents listen on (default 4546)
    #[argh(option, default = "DEFAULT_BEACON_PORT")]
    pub port: u16,
    /// file holding the fleet key: check each board's signature (TRUST column) and list only signed boards
    #[argh(option)]
    pub fleet_key: Option<PathBuf>,
    /// with --fleet-key, also list unsigned, forged and replayed boards (without a key every board is listed anyway)
    #[argh(switch)]
    pub all: bool,
}

/// Beacon settings; `None` in [`AgentConfig::beacon`] means `--no-beacon`.
#[derive(Debug, Clone)]
pub struct BeaconConfig {
    /// `--iface` names (empty: the default interface).
    pub ifaces: Vec<String>,
    pub families: crate::beacon::Families,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: Vec<SocketAddr>,
    pub backlog: u16,
    pub max_clients: usize,
    pub idle: Option<Duration>,
    pub beacon: Option<BeaconConfig>,
    /// `--beacon-port`, kept with `--no-beacon` too: STATUS shows it.
    pub beacon_port: u16,
    pub interval_secs: u32,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub token_file: Option<PathBuf>,
    pub plain_auth: bool,
    pub fleet_key: Option<PathBuf>,
    pub led: Option<PathBuf>,
    pub thermal: String,
    pub verbose: u8,
    /// `--metrics` addresses (empty: metrics off).
    pub metrics: Vec<SocketAddr>,
    /// `--publish` path; None: beside the control socket (unless `no_publish`).
    pub publish: Option<PathBuf>,
    /// `--no-publish`.
    pub no_publish: bool,
    /// `--rcvbuf` / `--sndbuf` in bytes (None: the kernel's default).
    pub rcvbuf: Option<u32>,
    pub sndbuf: Option<u32>,
}

/// argh takes one short switch per argument, but `-vv` is what anyone who has used ssh or
/// curl types for `-v -v`: it is split here. For `agent` only, whose arguments are all
/// options and their values; ctl's words are the command it sends (`SET mood -vv`).
pub fn split_verbose<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let agent = args.first() == Some(&"agent");
    let mut out = Vec::with_capacity(args.len());
    for &a in args {
        match a.strip_prefix('-') {
            Some(v) if agent && v.len() > 1 && v.bytes().all(|b| b == b'v') => {
                out.extend(std::iter::repeat_n("-v", v.len()));
            }
            _ => out.push(a),
        }
    }
    out
}

/// `tether help ctl` (`-h`, `--help` too): that subcommand's usage. argh hands a top-level
/// `help` on to the subcommand as a bare `help`, which ctl sends as a word (the agent's HELP)
/// and the others do not take: it is asked as `ctl --help` here. Anything after the name
/// stays, so `tether help scan extra` names `extra` as the argument scan does not take.
pub fn help_first(mut args: Vec<&str>) -> Vec<&str> {
    if let ["help" | "-h" | "--help", sub @ ("agent" | "ctl" | "scan"), ..] = args[..] {
        args[..2].copy_from_slice(&[sub, "--help"]);
    }
    args
}

/// The first item given twice, if any (`--iface eth0 --iface eth0`).
fn given_twice<T: PartialEq>(items: &[T]) -> Option<&T> {
    items
        .iter()
        .enumerate()
        .find(|(i, x)| items[..*i].contains(x))
        .map(|(_, x)| x)
}

/// A `--metrics` address: `IP:PORT`, or an IP alone for [`DEFAULT_METRICS_PORT`].
pub fn metrics_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    let ip: std::net::IpAddr = ip.parse().ok()?;
    Some(SocketAddr::new(ip, DEFAULT_METRICS_PORT))
}

impl AgentArgs {
    pub fn validate(self) -> Result<AgentConfig, String> {
        let default_listen = self.listen.is_empty();
        let listen_text = if default_listen {
            vec!["0.0.0.0:4545".to_string(), "[::]:4545".to_string()]
        } else {
            self.listen
        };
        if listen_text.len() > MAX_LISTENERS {
            return Err(format!("at most {MAX_LISTENERS} --listen addresses"));
        }
        let mut listen = Vec::new();
        for l in &listen_text {
            let a: SocketAddr = l.parse().map_err(|_| {
                format!("--listen {l:?}: expected IP:PORT, e.g. 0.0.0.0:4545 or [::1]:4545")
            })?;
            listen.push(a);
        }
        if self.backlog == 0 || self.backlog > BACKLOG_MAX {
            return Err(format!(
                "--backlog {}: expected 1-{BACKLOG_MAX}",
                self.backlog
            ));
        }
        if self.max_clients == 0 || self.max_clients > MAX_CLIENTS {
            return Err(format!(
                "--max-clients {}: expected 1-{MAX_CLIENTS} (the compiled capacity)",
                self.max_clients
            ));
        }
        if !(INTERVAL_MIN_SECS..=INTERVAL_MAX_SECS).contains(&self.interval) {
            return Err(format!(
                "--interval {}: expected {INTERVAL_MIN_SECS}-{INTERVAL_MAX_SECS} seconds",
                self.interval
            ));
        }
        for i in &self.iface {
            if !iface::valid_name(i) {
                return Err(format!("--iface {i:?}: not a valid interface name"));
            }
            if self.no_beacon {
                return Err("--iface and --no-beacon contradict each other".into());
            }
        }
        if self.iface.len() > MAX_BEACON_IFACES {
            return Err(format!("at most {MAX_BEACON_IFACES} --iface interfaces"));
        }
        if let Some(i) = given_twice(&self.iface) {
            return Err(format!("--iface {i}: given twice"));
        }
        let families = crate::beacon::Families::parse(&self.beacon_family).ok_or_else(|| {
            format!(
                "--beacon-family {:?}: expected 4, 6 or both",
                self.beacon_family
            )
        })?;
        if self.beacon_port == 0 {
            return Err("--beacon-port 0: expected 1-65535".into());
        }
        if self.metrics.len() > MAX_METRICS_LISTENERS {
            return Err(format!(
                "at most {MAX_METRICS_LISTENERS} --metrics addresses"
            ));
        }
        if self.publish.is_some() && self.no_publish {
            return Err("--publish and --no-publish contradict each other".into());
        }
        sock_path("--socket", self.socket.as_deref())?;
        sock_path("--publish", self.publish.as_deref())?;
        for (option, path) in [
            ("--thermal", Some(std::path::Path::new(&self.thermal))),
            ("--led", self.led.as_deref()),
            ("--token-file", self.token_file.as_deref()),
            ("--fleet-key", self.fleet_key.as_deref()),
        ] {
            path_at_most(option, path, FILE_PATH_MAX)?;
        }
        for (name, v) in [("--rcvbuf", self.rcvbuf), ("--sndbuf", self.sndbuf)] {
            if let Some(v) = v.filter(|v| !(SOCKBUF_MIN..=SOCKBUF_MAX).contains(v)) {
                return Err(format!(
                    "{name} {v}: expected {SOCKBUF_MIN}-{SOCKBUF_MAX} bytes"
                ));
            }
        }
        let mut metrics = Vec::new();
        for m in &self.metrics {
            metrics.push(metrics_addr(m).ok_or_else(|| {
                format!("--metrics {m:?}: expected IP:PORT or IP, e.g. 0.0.0.0:9545 or [::1]:9545")
            })?);
        }
        // The same address twice would fail at bind (EADDRINUSE, exit 69) as if another
        // program held it; port 0 is a new port each time.
        let n = listen.len();
        let at = |i: usize| match i.checked_sub(n) {
            None => ("--listen", listen[i]),
            Some(m) => ("--metrics", metrics[m]),
        };
        for j in 0..n + metrics.len() {
            let (p, a) = at(j);
            if let Some((o, _)) = (0..j).map(at).find(|&(_, b)| b == a && a.port() != 0) {
                return Err(match o == p {
                    true => format!("{p} {a}: given twice"),
                    false => format!("{a}: given to both {o} and {p}"),
                });
            }
        }
        Ok(AgentConfig {
            listen,
            backlog: self.backlog,
            max_clients: self.max_clients,
            idle: (self.idle_timeout > 0)
                .then(|| Duration::from_secs(u64::from(self.idle_timeout))),
            beacon: (!self.no_beacon).then_some(BeaconConfig {
                ifaces: self.iface,
                families,
            }),
            beacon_port: self.beacon_port,
            interval_secs: self.interval,
            socket: self.socket,
            socket_group: self.socket_group,
            token_file: self.token_file,
            plain_auth: self.plain_auth,
            fleet_key: self.fleet_key,
            led: self.led,
            thermal: self.thermal,
            verbose: self.verbose,
            metrics,
            publish: self.publish,
            no_publish: self.no_publish,
            rcvbuf: self.rcvbuf,
            sndbuf: self.sndbuf,
        })
    }
}

/// A path option, not empty (no file has that name: `--led ""` would otherwise be waited
/// for, `--thermal ""` quietly never read), not beginning with `-` (argh takes any word as
/// an option's value: `--socket --no-beacon` would have made a socket file of the switch
/// and a beaconing agent; `./-x` names such a file), no longer than `max` bytes. Unix
/// socket paths (agent `--socket`, `--publish`; ctl `-s`): [`SOCK_PATH_MAX`], what sun_path
/// holds, since a longer one can be neither bound nor connected to. Files the agent opens
/// after start-up: [`FILE_PATH_MAX`], so that opening them never allocates. The message
/// gives the length, not the path (which may hold a newline).
fn path_at_most(option: &str, path: Option<&std::path::Path>, max: usize) -> Result<(), String> {
    let Some(p) = path.map(|p| p.as_os_str().as_encoded_bytes()) else {
        return Ok(());
    };
    match p.len() {
        0 => Err(format!("{option}: an empty path")),
        _ if p[0] == b'-' => Err(format!(
            "{option}: a path that begins with '-' (its value left out? ./-NAME names such a file)"
        )),
        n if n > max => Err(format!(
            "{option}: the path is {n} bytes, over the {max} this option allows"
        )),
        _ => Ok(()),
    }
}

/// A Unix socket path option: not empty (Linux would bind an abstract address instead;
/// [`path_at_most`] says so), not
/// `@NAME` (what systemd, socat and ss write for an abstract address, which has no owner or
/// mode: tether binds files only, so `@x` would have quietly been a file named `@x` in the
/// working directory; `./@x` still is), shown as it is ([`unix::shows_cleanly`]: no control character, ASCII's or C1's, no
/// bidirectional formatting character, and no space: it is one field of the ready line), at most [`SOCK_PATH_MAX`] bytes.
fn sock_path(option: &str, path: Option<&std::path::Path>) -> Result<(), String> {
    let Some(p) = path else { return Ok(()) };
    if p.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
        return Err(format!(
            "{option}: @NAME is an abstract socket, which has no owner or mode: \
             tether uses socket files only (./@NAME for a file of that name)"
        ));
    }
    if !unix::shows_cleanly(p) {
        return Err(format!(
            "{option}: the path holds a space, a control or a bidirectional formatting \
             character (it is one field of the ready line)"
        ));
    }
    path_at_most(option, path, SOCK_PATH_MAX)
}

/// A decimal number argument (`-t SECS`), read with [`crate::proto::decimal`]: std's float
/// parser would add 14 KiB to the binary for it.
fn decimal_arg(v: &str) -> Result<f64, String> {
    // `.5` and `5.` as people type them (the protocol's grammar wants a digit on each side).
    let whole = match v.as_bytes() {
        [b'.', ..] => format!("0{v}"),
        [.., b'.'] => format!("{v}0"),
        _ => v.to_string(),
    };
    crate::proto::decimal::parse(whole.as_bytes()).ok_or_else(|| "not a decimal number".into())
}

/// `-t SECS` of ctl and scan: at least a millisecond (less would be a zero timeout, which
/// sockets refuse or take as "wait forever") and below `max` seconds. The message does
/// not echo the float: formatting an f64 would link core's float printer (about 8 KiB of
/// the aarch64 binary) for this one line.
fn seconds(secs: f64, max: u32) -> Result<Duration, String> {
    (secs > 0.0 && secs < f64::from(max))
        .then(|| Duration::from_secs_f64(secs))
        .filter(|d| *d >= Duration::from_millis(1))
        .ok_or_else(|| format!("-t: expected at least 0.001 and below {max} seconds"))
}

impl CtlArgs {
    /// The first of ctl's own options among the command's words (after the first): sent
    /// to the agent as a word, which the user rarely meant (`SET k v -c host:4545` stores
    /// "v -c host:4545" on the default agent).
    pub fn misplaced_option(&self) -> Option<&str> {
        (self.words.iter().skip(1))
            .map(String::as_str)
            .find(|w| CTL_OPTIONS.contains(w))
    }

    /// Checks what can be checked without I/O (with `--dgram`, the line itself); returns
    /// the timeout. With no words, ctl reads its commands from standard input (a prompt
    /// on a terminal).
    pub fn validate(&self) -> Result<Duration, String> {
        if self.socket.is_some() && self.connect.is_some() {
            return Err("-s and -c exclude each other".into());
        }
        sock_path("-s", self.socket.as_deref())?;
        let timeout = seconds(self.timeout, 1_000_000)?;
        let line = self.words.join(" ");
        if line.len() > LINE_MAX || line.contains('\n') {
            return Err(format!(
                "the command is longer than {LINE_MAX} bytes or has a newline"
            ));
        }
        sock_path("--publish", self.publish.as_deref())?;
        if self.dgram {
            check_dgram(self, &line)?;
        } else if self.publish.is_some() {
            return Err("--publish names the socket --dgram sends to: give --dgram too".into());
        }
        Ok(timeout)
    }
}

/// `ctl --dgram`: only a well-formed SET or DEL, checked with the agent's own parser
/// (nothing comes back to say it was wrong), and only to the local publish socket.
fn check_dgram(args: &CtlArgs, line: &str) -> Result<(), String> {
    use crate::proto::request::{parse, Request};
    if args.connect.is_some() || args.token_file.is_some() {
        return Err(
            "--dgram goes to the local publish socket: -c and --token-file do not apply".into(),
        );
    }
    if args.socket.is_some() && args.publish.is_some() {
        return Err("--dgram goes to --publish, or to publish.sock beside -s: give one".into());
    }
    if args.words.is_empty() {
        return Err("--dgram sends the command given as words, e.g. --dgram SET temp 21.5 (it reads nothing from standard input)".into());
    }
    match parse(line.as_bytes()) {
        Ok(Request::Set { .. } | Request::Del(_)) => Ok(()),
        Ok(_) => Err(format!(
            "--dgram sends only SET and DEL (nothing comes back); without --dgram: tether ctl {line}"
        )),
        Err(e) => Err(format!("--dgram {line:?}: {}", e.text)),
    }
}

impl ScanArgs {
    /// Checks what can be checked without I/O; returns how long to listen per round.
    pub fn validate(&self) -> Result<Duration, String> {
        let wait = seconds(self.timeout, 86_400)?;
        if let Some(i) = &self.iface {
            if !iface::valid_name(i) {
                return Err(format!("-i {i:?}: not a valid interface name"));
            }
        }
        if self.port == 0 {
            return Err("--port 0: expected 1-65535".into());
        }
        path_at_most("--prometheus-sd", self.prometheus_sd.as_deref(), usize::MAX)?;
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AgentConfig, String> {
        let a = AgentArgs::from_args(&["agent"], args).map_err(|e| e.output)?;
        a.validate()
    }

    /// `--help` states ranges in words (argh's doc comments cannot name a constant): they
    /// are the limits the options are checked against.
    #[test]
    fn help_states_the_limits_the_options_are_checked_against() {
        use crate::limits::{BACKLOG_MAX, INTERVAL_MAX_SECS, INTERVAL_MIN_SECS};
        let help = parse(&["--help"]).unwrap_err();
        for said in [
            format!("repeatable up to {MAX_LISTENERS} (default 0.0.0.0:4545"),
            format!("listen backlog, 1-{BACKLOG_MAX} (default 8)"),
            format!("seconds between beacons, {INTERVAL_MIN_SECS}-{INTERVAL_MAX_SECS} (default"),
            format!("repeatable (at most {MAX_METRICS_LISTENERS}; off by default)"),
            format!("beacon interface, repeatable up to {MAX_BEACON_IFACES} (default"),
        ] {
            let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains(&said),
                "--help does not say {said:?}:\n{help}"
            );
        }
    }

    #[test]
    fn an_address_given_twice_is_refused_but_port_0_is_a_new_port_each_time() {
        let e = parse(&["--listen", "127.0.0.1:4545", "--listen", "127.0.0.1:4545"]);
        assert_eq!(e.unwrap_err(), "--listen 127.0.0.1:4545: given twice");
        let e = parse(&["--listen", "[::1]:9545", "--metrics", "::1"]);
        assert_eq!(
            e.unwrap_err(),
            "[::1]:9545: given to both --listen and --metrics"
        );
        let c = parse(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(parse(&["--metrics", "127.0.0.1:0", "--listen", "127.0.0.1:0"]).is_ok());
    }

    /// `help` is one of ctl's words (the agent's HELP) wherever the words begin; `-h` and
    /// `--help` are ctl's own usage.
    #[test]
    fn a_bare_help_is_a_word_of_ctls() {
        let words = |args: &[&str]| CtlArgs::from_args(&["tether", "ctl"], args).map(|c| c.words);
        assert_eq!(words(&["help"]).unwrap(), ["help"]);
        assert_eq!(words(&["-s", "help", "help"]).unwrap(), ["help"]);
        assert_eq!(words(&["--raw", "help", "x"]).unwrap(), ["help", "x"]);
        assert_eq!(
            words(&["--publish", "help", "--dgram", "help"]).unwrap(),
            ["help"]
        );
        for h in ["-h", "--help"] {
            let e = words(&[h]).unwrap_err();
            assert!(e.status.is_ok(), "{h}");
            assert!(
                e.output.starts_with("Usage: tether ctl"),
                "{h}: {}",
                e.output
            );
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.listen[0].to_string(), "0.0.0.0:4545");
        assert_eq!(c.listen[1].to_string(), "[::]:4545");
        assert_eq!(c.backlog, 8);
        assert_eq!(c.max_clients, 16);
        assert_eq!(c.idle, Some(Duration::from_secs(60)));
        assert_eq!(c.interval_secs, 5);
        assert_eq!(c.beacon_port, 4546);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--max-clients", "17"]).is_err());
        assert!(parse(&["--listen", "nonsense"]).is_err());
        assert!(parse(&["--interval", "0"]).is_err());
        assert!(parse(&["--iface", "a/b"]).is_err());
        assert!(parse(&["--iface", "waytoolonginterfacename"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--no-beacon"]).unwrap().beacon.is_none());
        assert_eq!(parse(&["-v", "-v"]).unwrap().verbose, 2);
        let split = |a: &[&'static str]| split_verbose(a);
        assert_eq!(
            split(&["agent", "-vv", "--listen", "x"]),
            ["agent", "-v", "-v", "--listen", "x"]
        );
        assert_eq!(
            split(&["agent", "-v", "-vvv"]),
            ["agent", "-v", "-v", "-v", "-v"]
        );
        assert_eq!(split(&["agent", "-", "-vx"]), ["agent", "-", "-vx"]);
        assert_eq!(
            split(&["ctl", "SET", "mood", "-vv"]),
            ["ctl", "SET", "mood", "-vv"]
        );
    }

    #[test]
    fn ctl_and_scan_checks() {
        let ctl = |a: &[&str]| CtlArgs::from_args(&["ctl"], a).unwrap().validate();
        assert_eq!(ctl(&["PING"]).unwrap(), Duration::from_secs(5));
        assert_eq!(
            ctl(&[]).unwrap(),
            Duration::from_secs(5),
            "no words: a session"
        );
        assert_eq!(ctl(&["-t", "0.5"]).unwrap(), Duration::from_millis(500));
        assert_eq!(ctl(&["-t", ".5"]).unwrap(), Duration::from_millis(500));
        assert_eq!(ctl(&["-t", "5."]).unwrap(), Duration::from_secs(5));
        for bad in [".", "", "-.5", ".5.", "..5"] {
            assert!(decimal_arg(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ctl(&["-t", "0.001"]).unwrap(), Duration::from_millis(1));
        for bad in [&["-t", "0"][..], &["-s", "a", "-c", "b:1"]] {
            assert!(ctl(bad).is_err(), "{bad:?}");
        }
        // Not a decimal number: refused while parsing, before validate.
        for bad in ["NaN", "inf", "x", "0x10", ""] {
            let e = CtlArgs::from_args(&["ctl"], &["-t", bad]).unwrap_err();
            assert!(
                e.output.contains("not a decimal number"),
                "{bad}: {}",
                e.output
            );
        }
        for bad in ["0.0009", "1e-12", "5e-324"] {
            assert!(ctl(&["-t", bad]).is_err(), "{bad}");
        }
        let path = |n: usize| format!("/{}", "s".repeat(n - 1));
        assert!(ctl(&["-s", &path(SOCK_PATH_MAX)]).is_ok());
        assert!(ctl(&["-s", &path(SOCK_PATH_MAX + 1)]).is_err());
        assert!(ctl(&["SET", "k", &"v".repeat(LINE_MAX)]).is_err());
        let scan = |a: &[&str]| ScanArgs::from_args(&["scan"], a).unwrap().validate();
        assert_eq!(scan(&[]).unwrap(), Duration::from_secs(2));
        assert!(scan(&["-t", "86400"]).is_err());
        assert!(scan(&["-i", "a/b"]).is_err());
        assert!(scan(&["-i", "eth0"]).is_ok());
        // A forgotten value takes the next option: `--prometheus-sd --watch` wrote a file
        // named `--watch` after one round instead of watching.
        assert!(scan(&["--prometheus-sd", "--watch"]).is_err());
        assert!(scan(&["--prometheus-sd", ""]).is_err());
        assert!(scan(&["--prometheus-sd", "./--watch"]).is_ok());
    }

    #[test]
    fn publish_and_buffer_sizes() {
        let c = parse(&[]).unwrap();
        assert!(c.publish.is_none() && !c.no_publish);
        assert_eq!((c.rcvbuf, c.sndbuf), (None, None));
        assert!(parse(&["--no-publish"]).unwrap().no_publish);
        assert!(parse(&["--publish", "/x/p.sock", "--no-publish"]).is_err());
        let c = parse(&["--rcvbuf", "1024", "--sndbuf", "4194304"]).unwrap();
        assert_eq!((c.rcvbuf, c.sndbuf), (Some(1024), Some(4194304)));
        for bad in ["1023", "4194305", "0"] {
            assert!(parse(&["--rcvbuf", bad]).is_err(), "{bad}");
            assert!(parse(&["--sndbuf", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["--rcvbuf", "-1"]).is_err());
        let path = |n: usize| format!("/{}", "s".repeat(n - 1));
        for opt in ["--socket", "--publish"] {
            assert!(parse(&[opt, &path(SOCK_PATH_MAX)]).is_ok(), "{opt}");
            assert!(parse(&[opt, &path(SOCK_PATH_MAX + 1)]).is_err(), "{opt}");
        }
    }

    #[test]
    fn metrics_addresses() {
        assert!(parse(&[]).unwrap().metrics.is_empty());
        let c = parse(&["--metrics", "0.0.0.0:9100", "--metrics", "::1"]).unwrap();
        assert_eq!(c.metrics[0].to_string(), "0.0.0.0:9100");
        assert_eq!(c.metrics[1].to_string(), "[::1]:9545");
        assert_eq!(
            parse(&["--metrics", "[::]"]).unwrap().metrics[0].to_string(),
            "[::]:9545"
        );
        assert!(parse(&["--metrics", "a", "--metrics", "b"]).is_err());
        assert!(parse(&[
            "--metrics",
            "1.2.3.4:9",
            "--metrics",
            "::1",
            "--metrics",
            "::2"
        ])
        .is_err());
        assert!(parse(&["--metrics", "host:9545"]).is_err());
    }
}
