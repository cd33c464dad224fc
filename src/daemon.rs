//! `tether agent`: start-up. Opens every socket (all fallible work happens here, before
//! the ready line), prints the ready line, notifies systemd, and hands over to the run
//! loop. Start-up may allocate; the run loop may not. [`run`] reads as the list of steps.

use crate::agent::{Agent, BeaconInfo, Config};
use crate::beacon::{Families, Family};
use crate::cli::AgentConfig;
use crate::limits::{secret_buf_len, MAX_LISTENERS, MAX_METRICS_LISTENERS, TOKEN_MAX};
use crate::runloop::{Devices, RunLoop, Watchdog};
use crate::sys::{self, unix::SocketFrom, SysError};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::exit::Fatal;
use crate::exit::{EX_CONFIG, EX_OSERR, EX_UNAVAILABLE, EX_USAGE};
use crate::runloop::links::Links;
use crate::runloop::publish::Publish;

fn fatal(code: u8) -> impl Fn(SysError) -> Fatal {
    move |e| Fatal {
        code,
        msg: e.to_string(),
    }
}

/// Where the board id came from ([`board_id`]), for the warning when it is not a
/// machine id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFrom {
    MachineId,
    Serial,
    Mac,
    Host,
}

/// The board id and its source: the first usable of /etc/machine-id and
/// /var/lib/dbus/machine-id (a placeholder is none), the device tree's serial number (a
/// Raspberry Pi's, fixed in its SoC), the beacon interface's MAC, the host name. The
/// first two hashed as they are read (existing ids stay as they were). A source that
/// cannot be read now (out of descriptors or memory, an I/O error) is an error, not the
/// next source: the board would announce another id until its next start.
pub fn board_id(beacon_iface: Option<&str>) -> Result<(heapless::String<16>, IdFrom), SysError> {
    board_id_from(&MACHINE_ID_FILES, DT_SERIAL, beacon_iface)
}

fn board_id_from(
    machine_ids: &[&str],
    dt_serial: &str,
    beacon_iface: Option<&str>,
) -> Result<(heapless::String<16>, IdFrom), SysError> {
    let mut buf = [0u8; 64];
    for &path in machine_ids {
        if let Some(text) = read_id_source(path, &mut buf)? {
            let id = text.trim_ascii();
            if id.len() >= 16 && !placeholder_machine_id(id) {
                return Ok((crate::id::board_id(id), IdFrom::MachineId));
            }
        }
    }
    if let Some(text) = read_id_source(dt_serial, &mut buf)? {
        // A device-tree string: NUL-terminated.
        let serial = text.split(|&c| c == 0).next().unwrap_or(&[]).trim_ascii();
        if serial.len() >= 8 && !placeholder_machine_id(serial) {
            return Ok((crate::id::board_id(serial), IdFrom::Serial));
        }
    }
    if let Some(name) = beacon_iface {
        let info = sys::iface::look(name)
            .map_err(|e| SysError::new(format!("looking up {name}'s MAC for the board id"), e))?;
        if let Some(mac) = info.and_then(|i| i.mac) {
            return Ok((crate::id::board_id(&mac), IdFrom::Mac));
        }
    }
    let b = sys::board::read("/nonexistent");
    Ok((crate::id::board_id(b.host.as_bytes()), IdFrom::Host))
}

/// A board-id file's bytes; None when it is not there, or can never be read (EACCES
/// under a sandbox: the next source then gives the same id at every start).
fn read_id_source<'b>(path: &str, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, SysError> {
    match sys::read_small_if_there(path, buf) {
        Ok(n) => Ok(n.map(|n| &buf[..n])),
        Err(e) if sys::unreadable_now(e) => {
            Err(SysError::new(format!("reading {path} for the board id"), e))
        }
        Err(_) => Ok(None),
    }
}

const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
const DT_SERIAL: &str = "/proc/device-tree/serial-number";

/// True for the machine-ids that image builders leave behind: empty, all zeros, or the
/// literal `uninitialized` (systemd's marker for "generate on first boot").
pub fn placeholder_machine_id(raw: &[u8]) -> bool {
    let id = raw.trim_ascii();
    id.iter().all(|&c| c == b'0') || id == b"uninitialized"
}

/// Says where an id that is not a machine id came from, and what that means: a MAC or a
/// host name changes with the dongle or the name, and a board whose beacon interface comes
/// late gets another id at its next start.
fn warn_id_source(from: IdFrom) {
    let what = match from {
        IdFrom::MachineId => return,
        IdFrom::Serial => "the device tree's serial number",
        IdFrom::Mac => "the beacon interface's MAC (it changes with the interface)",
        IdFrom::Host => "the host name (it changes with the name)",
    };
    let [etc, dbus] = MACHINE_ID_FILES;
    log::warn!(
        "no usable machine id in {etc} or {dbus}: the board id comes from {what}; give the \
         board one: `systemd-machine-id-setup`, or `tr -d - </proc/sys/kernel/random/uuid \
         >{etc}`"
    );
}

/// TCP (or HTTP) listeners with the addresses they really got (port 0 resolved).
type Listeners<const N: usize> = heapless::Vec<(OwnedFd, SocketAddr), N>;

/// Runs the agent until SIGTERM/SIGINT: every fallible step first, then the ready line,
/// then the run loop. A step that fails after the Unix sockets exist removes them.
pub fn run(cfg: AgentConfig) -> Result<(), Fatal> {
    let now = Instant::now();
    let fleet_key = load_fleet_key(&cfg)?;
    let run_id = new_run_id()?;
    let signals = sys::signals::Signals::install().map_err(fatal(EX_OSERR))?;
    let buffers = crate::runloop::conn::Conn::buffers(crate::limits::MAX_CLIENTS)
        .map_err(|e| fatal(EX_OSERR)(SysError::new("mapping the client buffers", e)))?;
    // --rcvbuf / --sndbuf: before the first socket, so every socket gets them.
    sys::net::set_buf_sizes(sys::net::BufSizes {
        rcvbuf: cfg.rcvbuf,
        sndbuf: cfg.sndbuf,
    });
    sys::net::note_fd_limit();
    let tcp = open_listeners(&cfg.listen, cfg.backlog, "--listen")?;
    let dead = Duration::from_secs(u64::from(crate::limits::KEEPALIVE_DEAD_SECS));
    if cfg.idle.is_none_or(|idle| idle > dead) {
        for (fd, _) in &tcp {
            sys::net::keepalive(fd.as_fd());
        }
    }
    // Checked and opened before anything that leaves a file behind.
    let metrics = open_listeners(&cfg.metrics, cfg.backlog, "--metrics")?;
    for (fd, _) in &metrics {
        // A scraper's request comes with its connection; a silent one never takes a slot.
        sys::net::defer_accept(fd.as_fd(), crate::limits::HTTP_HEAD_TIMEOUT_SECS);
    }
    let led = open_led(&cfg)?;
    let mut token_buf = [0u8; secret_buf_len(TOKEN_MAX)];
    let token = read_token(&cfg, &mut token_buf)?;
    let beacon_ifaces = beacon_ifaces(&cfg)?;
    let (id, from) =
        board_id(beacon_ifaces.first().map(String::as_str)).map_err(fatal(EX_OSERR))?;
    warn_id_source(from);
    let (unix, publish) = open_local_sockets(&cfg, now)?;
    let core_cfg = Config {
        max_clients: cfg.max_clients,
        interval_secs: cfg.interval_secs,
        led: led.is_some(),
        plain_auth: cfg.plain_auth,
    };
    let mut agent = Agent::new(now, &id, &core_cfg);
    agent.set_token(token);
    agent.token_file = cfg.token_file.is_some();
    let links = open_beacons(now, &cfg, &beacon_ifaces, &tcp, &metrics, run_id, fleet_key);
    let off_info = BeaconInfo {
        port: cfg.beacon_port,
        ..BeaconInfo::default()
    };
    let mut io = Devices::new(
        now,
        tcp,
        unix,
        led,
        cfg.thermal.clone(),
        links,
        off_info,
        cfg.token_file.clone(),
        cfg.max_clients,
    );
    let metrics_on = !metrics.is_empty();
    io.metrics = metrics;
    io.publish = publish;
    let mut rl = RunLoop::new(agent, io, signals, cfg.idle, buffers);
    if metrics_on {
        rl.http = crate::runloop::http::Http::new(now);
    }
    sys::net::warn_fd_room(cfg.max_clients);
    announce_ready(&mut rl, now, &id);
    rl.mark_ready();
    let res = rl.run();
    rl.shutdown();
    res.map_err(fatal(EX_OSERR))
}

/// `--fleet-key`: read now, so a missing or short key stops start-up.
fn load_fleet_key(cfg: &AgentConfig) -> Result<Option<crate::beacon::Signing>, Fatal> {
    let Some(p) = &cfg.fleet_key else {
        return Ok(None);
    };
    let key = crate::beacon::load_key(p, false)
        .map_err(|e| Fatal::new(e.exit_code(), crate::beacon::key_file_message(p, &e)))?;
    Ok(Some(crate::beacon::Signing {
        path: p.clone(),
        key,
    }))
}

/// This start's random `run` id (beacons carry it so scan tells clones and restarts apart).
fn new_run_id() -> Result<[u8; 8], Fatal> {
    let mut run_id = [0u8; 8];
    crate::crypto::fill_random(&mut run_id)
        .map_err(|e| Fatal::new(EX_OSERR, format!("getrandom: {e}")))?;
    Ok(run_id)
}

/// `--listen` or `--metrics` (`what`): one TCP listener per address. Where the kernel has
/// no IPv6, `[::]` is skipped with a warning when the option also names an IPv4 address
/// (the default `--listen` does: 0.0.0.0 and [::]; so does the package's `--metrics`); any
/// other failure stops start-up, naming the option (IPv6 addresses alone: no listener would
/// be left).
fn open_listeners<const N: usize>(
    addrs: &[SocketAddr],
    backlog: u16,
    what: &str,
) -> Result<Listeners<N>, Fatal> {
    let mut out = heapless::Vec::new();
    for addr in addrs {
        match sys::net::tcp_listen(*addr, backlog) {
            Ok(fd) => {
                let real = sys::net::local_inet(fd.as_fd()).unwrap_or(*addr);
                let _ = out.push((fd, real));
            }
            Err(e)
                if addrs.iter().any(SocketAddr::is_ipv4)
                    && addr.is_ipv6()
                    && addr.ip().is_unspecified()
                    && e.errno == Some(nix::errno::Errno::EAFNOSUPPORT) =>
            {
                log::warn!("IPv6 unavailable, {what} on IPv4 only: {e}");
            }
            Err(e) => return Err(Fatal::new(EX_UNAVAILABLE, format!("{what}: {e}"))),
        }
    }
    Ok(out)
}

/// May this process give its files to group `g`? Root may; anyone else only to a group
/// it is in (the effective group or a supplementary one).
fn may_use_group(g: nix::unistd::Gid) -> Result<bool, SysError> {
    use nix::unistd::{getegid, geteuid, getgroups};
    if geteuid().is_root() || getegid() == g {
        return Ok(true);
    }
    let groups = getgroups().map_err(|e| SysError::new("getgroups", e))?;
    Ok(groups.contains(&g))
}

/// The Unix control socket and the publish socket beside it, owned by `--socket-group`
/// when given.
fn open_local_sockets(
    cfg: &AgentConfig,
    now: Instant,
) -> Result<(sys::unix::UnixListener, Option<Publish>), Fatal> {
    let group = match &cfg.socket_group {
        // chgrp(2) to a group needs root (CAP_CHOWN) or membership: checked now, so a
        // group this user may not use is a configuration error like an unknown one. A
        // group database that cannot be read now is the system's (71).
        Some(name) => {
            let os = |e: SysError| {
                let code = e.errno.map_or(EX_OSERR, sys::read_failure_code);
                Fatal::new(code, format!("--socket-group {name}: {e}"))
            };
            let g = nix::unistd::Group::from_name(name)
                .map_err(|e| os(SysError::new("reading the group database", e)))?
                .ok_or_else(|| {
                    Fatal::new(EX_CONFIG, format!("--socket-group {name:?}: no such group"))
                })?;
            if !may_use_group(g.gid).map_err(os)? {
                return Err(Fatal::new(
                    EX_CONFIG,
                    format!("--socket-group {name}: this user is neither root nor in it"),
                ));
            }
            Some(g.gid)
        }
        None => None,
    };
    // A path the user did not type: an error says where it came from and how to choose
    // another.
    let (sock_path, hint) = match &cfg.socket {
        Some(p) => (p.clone(), ""),
        None => match sys::unix::default_socket_path_why() {
            (path, SocketFrom::RuntimeDir) => (
                path,
                " (the default socket, in $XDG_RUNTIME_DIR; --socket PATH sets another)",
            ),
            (path, from) => {
                if let SocketFrom::Fallback(Some(why)) = from {
                    log::warn!(
                        "XDG_RUNTIME_DIR passed over ({why}): the socket is {}",
                        path.display()
                    );
                }
                (path, " (the default socket; --socket PATH sets another)")
            }
        },
    };
    let unix = sys::unix::listen_unix(&sock_path, cfg.backlog, group).map_err(|e| {
        // (An error that names --socket says so already.)
        let hint = if e.what.contains("--socket") {
            ""
        } else {
            hint
        };
        Fatal::new(EX_UNAVAILABLE, format!("{e}{hint}"))
    })?;
    if let Some((dir, mode)) = group.and_then(|g| sys::unix::closed_to_group(&sock_path, g)) {
        log::warn!(
            "--socket-group: {} (mode {mode:o}) keeps the group from the socket",
            dir.display()
        );
    }
    let publish = open_publish(cfg, &unix, group, now).inspect_err(|_| unix.undo())?;
    sys::net::warn_capped_buf_sizes(unix.fd.as_fd());
    Ok((unix, publish))
}

/// The publish socket (`--publish`, default `publish.sock` beside the control socket),
/// bound with the control socket's rules; None with `--no-publish`.
fn open_publish(
    cfg: &AgentConfig,
    unix: &sys::unix::UnixListener,
    group: Option<nix::unistd::Gid>,
    now: Instant,
) -> Result<Option<Publish>, Fatal> {
    if cfg.no_publish {
        return Ok(None);
    }
    let path = cfg
        .publish
        .clone()
        .unwrap_or_else(|| unix.path.with_file_name("publish.sock"));
    // The same file by another name (`./a/../t.sock`, a symlink) too: the control
    // socket is live by now, and would otherwise be taken for another agent's.
    if unix.is_at(&path) {
        return Err(Fatal::new(
            EX_USAGE,
            format!(
                "--publish {}: that is the control socket (give --publish another path)",
                path.display()
            ),
        ));
    }
    let sock = sys::unix::bind_publish(&path, group)
        .map_err(|e| Fatal::new(EX_UNAVAILABLE, format!("--publish: {e}")))?;
    Ok(Some(Publish::new(sock, now)))
}

/// `--led`, checked now so a typo fails start-up, not IDENTIFY.
fn open_led(cfg: &AgentConfig) -> Result<Option<sys::led::LedFile>, Fatal> {
    let Some(p) = cfg.led.as_ref() else {
        return Ok(None);
    };
    let until = Instant::now() + Duration::from_millis(crate::limits::LED_WAIT_MS);
    let mut said = false;
    loop {
        match sys::led::LedFile::open(p) {
            Ok(led) => return Ok(Some(led)),
            // Out of fds or memory, an I/O error: not udev's doing, nothing to wait for.
            Err(e) if e.errno.is_some_and(sys::unreadable_now) => return Err(fatal(EX_OSERR)(e)),
            Err(e) if Instant::now() >= until => return Err(fatal(EX_CONFIG)(e)),
            Err(e) => {
                if !said {
                    log::warn!(
                        "{e}: waiting up to {} ms for it (udev at boot)",
                        crate::limits::LED_WAIT_MS
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The beacon interfaces: `--iface` (repeatable), else the first up, non-loopback one with
/// a broadcast address, else the first with an IPv6 link-local address; none with
/// `--no-beacon` or when there is none. Interfaces that cannot be looked at now (out of
/// fds) stop start-up, not "none is up": the board would start without a beacon interface
/// (until one is looked for again) and, without a machine id, with another id.
fn beacon_ifaces(cfg: &AgentConfig) -> Result<Vec<String>, Fatal> {
    match &cfg.beacon {
        None => Ok(Vec::new()),
        Some(bc) if !bc.ifaces.is_empty() => Ok(bc.ifaces.clone()),
        Some(_) => match sys::iface::default_beacon_iface() {
            Ok(Some(n)) => Ok(vec![n.to_string()]),
            Ok(None) => {
                log::warn!("no interface is up with a carrier and an IPv4 broadcast address or an IPv6 link-local address: no beacons until one is (looked for every interval; or use --iface)");
                Ok(Vec::new())
            }
            Err(e) => Err(fatal(EX_OSERR)(SysError::new(
                "looking for the default beacon interface",
                e,
            ))),
        },
    }
}

/// One beacon link per interface, announcing per family the control and metrics ports a
/// peer can reach over it ([`crate::beacon::Announced`]); their sockets opened.
fn open_beacons(
    now: Instant,
    cfg: &AgentConfig,
    ifaces: &[String],
    tcp: &Listeners<MAX_LISTENERS>,
    metrics: &Listeners<MAX_METRICS_LISTENERS>,
    run_id: [u8; 8],
    fleet_key: Option<crate::beacon::Signing>,
) -> Links {
    let ports =
        crate::beacon::Announced::new(tcp.iter().map(|(_, a)| *a), metrics.iter().map(|(_, a)| *a));
    let bc = cfg.beacon.as_ref();
    let mut families = bc.map(|b| b.families).unwrap_or_default();
    if bc.is_some() && families == Families::Both && !sys::net::ipv6_available() {
        // A kernel without IPv6: IPv4 beacons only, not an IPv6 socket error each interval
        // (nor a warning that no listener serves IPv6).
        log::info!("no IPv6 in this kernel: beacons over IPv4 only");
        families = Families::V4;
    }
    for (on, f, name, any) in [
        (families.v4(), Family::V4, "IPv4", "0.0.0.0"),
        (families.v6(), Family::V6, "IPv6", "[::]"),
    ] {
        if on && bc.is_some() && !ports.serves(f) {
            let (port, _) = ports.ports(f, None);
            log::warn!(
                "no --listen address serves {name}: {name} beacons name control port {port}, which {name} peers cannot reach (add --listen {any}:{port}, or --beacon-family)"
            );
        }
    }
    let mut links = Links::new(
        now,
        ifaces,
        cfg.beacon_port,
        families,
        ports,
        run_id,
        fleet_key,
        cfg.thermal.clone(),
    );
    links.open(now);
    if bc.is_some_and(|b| b.ifaces.is_empty()) {
        links.look_for_default(now);
    }
    links
}

/// `--token-file`: read now, so a missing, empty or long token stops start-up (SIGHUP
/// re-reads it: `RunLoop::reload_token`).
fn read_token<'b>(cfg: &AgentConfig, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Fatal> {
    let Some(p) = &cfg.token_file else {
        return Ok(None);
    };
    let token = sys::read_secret(p, buf, TOKEN_MAX, false)
        .map_err(|e| Fatal::new(e.exit_code(), format!("--token-file {}: {e}", p.display())))?;
    Ok(Some(token.accept_token(p)))
}

/// Prints the ready line on stdout, logs it, and tells systemd (READY=1, STATUS=, and
/// the watchdog when WatchdogSec= is set).
fn announce_ready(rl: &mut RunLoop, now: Instant, id: &str) {
    let ready = ready_line(rl);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{ready}");
    let _ = out.flush();
    drop(out);
    log::info!(
        "{ready} id={id} version={} revision={}",
        crate::agent::VERSION,
        crate::agent::REVISION
    );

    match sys::notify::Notifier::from_env() {
        Ok(Some(n)) => {
            let status = format!("READY=1\nSTATUS={ready}");
            if let Err(e) = n.notify(status.as_bytes()) {
                log::warn!("sd_notify: {}", e.desc());
            }
            let every = sys::notify::watchdog_interval();
            rl.watchdog = Some(Watchdog {
                notifier: n,
                every,
                next: every.map(|e| now + e),
            });
        }
        Ok(None) => {}
        Err(e) => log::warn!("NOTIFY_SOCKET: {}", e.desc()),
    }
}

fn ready_line(rl: &RunLoop) -> String {
    let tcp: Vec<String> = rl.io.tcp.iter().map(|(_, a)| a.to_string()).collect();
    let beacon = if rl.io.links.is_empty() {
        "off".to_string()
    } else {
        rl.io.links.ready_field()
    };
    let mut line = format!(
        "ready tcp={} unix={}",
        tcp.join(","),
        rl.io.unix.path.display()
    );
    // SPEC's three fields first, in its order (scripts parse `unix=PATH beacon=`), then
    // what later options added.
    line += &format!(" beacon={beacon}");
    if let Some(p) = &rl.io.publish {
        line += &format!(" publish={}", p.sock.path.display());
    }
    if !rl.io.metrics.is_empty() {
        let m: Vec<String> = rl.io.metrics.iter().map(|(_, a)| a.to_string()).collect();
        line += &format!(" metrics={}", m.join(","));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::{board_id_from, placeholder_machine_id, IdFrom};
    use crate::id::board_id;

    #[test]
    fn the_id_comes_from_the_first_usable_source() {
        let dir = std::env::temp_dir().join(format!("tether-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        };
        let good = "3d1219c7c4c5404aaa1f6d2a48adfda4";
        let etc = file("etc", b"uninitialized\n");
        let dbus = file("dbus", format!("{good}\n").as_bytes());
        let serial = file("serial", b"00000000c0ffee42\0");
        let zeros = file("zeros", b"0000000000000000\0");
        let missing = dir.join("missing").to_str().unwrap().to_string();
        // A placeholder in /etc/machine-id: dbus's, hashed as before.
        let got = board_id_from(&[&etc, &dbus], &serial, None).unwrap();
        assert_eq!(got, (board_id(good.as_bytes()), IdFrom::MachineId));
        // No machine id: the device tree's serial number, without its NUL.
        let got = board_id_from(&[&etc, &missing], &serial, None).unwrap();
        assert_eq!(got, (board_id(b"00000000c0ffee42"), IdFrom::Serial));
        // A serial of zeros is none either: then (no beacon interface) the host name.
        let got = board_id_from(&[&missing], &zeros, None).unwrap();
        assert_eq!(got.1, IdFrom::Host);
        // One that can never be read (here a directory: EISDIR; EACCES under a sandbox)
        // is passed over, as one that is not there: the next source gives the same id at
        // every start. (One that cannot be read now stops start-up: tests/limits.rs.)
        let unreadable = dir.to_str().unwrap();
        let got = board_id_from(&[unreadable, &dbus], &serial, None).unwrap();
        assert_eq!(got, (board_id(good.as_bytes()), IdFrom::MachineId));
        let got = board_id_from(&[&missing], unreadable, None).unwrap();
        assert_eq!(got.1, IdFrom::Host);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn placeholder_machine_ids() {
        for p in [
            &b""[..],
            b"\n",
            b"00000000000000000000000000000000\n",
            b"uninitialized\n",
        ] {
            assert!(placeholder_machine_id(p), "{p:?}");
        }
        assert!(!placeholder_machine_id(
            b"3d1219c7c4c5404aaa1f6d2a48adfda4\n"
        ));
    }
}
