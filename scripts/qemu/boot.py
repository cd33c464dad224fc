#!/usr/bin/env python3
"""Boot a real Debian kernel in qemu-system-{aarch64,arm} with tether in a busybox initramfs
and test the agent from the host. Called by scripts/qemu-boot (`-M virt`) and scripts/qemu-pi
(the raspi machines); they provide the kernel, modules, busybox (scripts/qemu/kernel.py), the
guest binary and the machine's QEMU arguments. This file is the one copy of the boot test.

Steps (each timed):
  1. write a gzip'd newc cpio: /init (busybox sh), busybox, tether, the modules in insmod
     order, a token file; the init brings the NIC up as 10.0.2.15/24 (default route via
     10.0.2.2, else a broadcast to 255.255.255.255 is ENETUNREACH), sets the clock to 2038-01-19
     03:13:57 and runs `tether agent --iface IFACE --interval 1 --token-file ...` (plus `--led` with --board);
  2. boot with user-mode networking, restrict=on (nothing the guest sends ever leaves QEMU;
     only the hostfwd of the control port comes in) and a filter-dump pcap of the guest NIC;
  3. from the host, with the host's `tether ctl -c 127.0.0.1:PORT`: PING -> PONG (retried:
     user-mode net accepts before the guest listens, then resets) and STATUS -> OK {json};
  4. --board (a Raspberry Pi machine): the guest prints its raw thermal_zone0/temp and, from
     a sampler loop, every change of the ACT LED's trigger (and of its brightness while the
     trigger is `none`) to the serial console. The host asserts STATUS's temperature equals
     the guest's /sys reading, then sends `ctl --token-file F IDENTIFY 4` and asserts that
     the trigger went to `none`, the brightness toggled between 0 and on, and the trigger
     that was there before came back;
  5. read the pcap: a UDP datagram to 255.255.255.255:4546 whose payload starts with
     {"tether":1 must have left the guest NIC (unless --beacon=skip; with --beacon=auto only
     when the guest's ready line says it beacons);
  6. past 2038: /init set the guest's clock 10 s before a 32-bit time_t ends (2038-01-19
     03:14:07 UTC), sends the agent's log to a file and, 15 s after the start, a SIGHUP:
     its line for it must be stamped past that end, the guest's own `tether ctl PING` get
     PONG, and STATUS still answered;
  7. memory, after all the above: the host connects to a second forwarded port (guest :4547,
     where a busybox `nc -l` waits); the guest then prints the agent's VmRSS and VmHWM
     (/proc/PID/status), its auxiliary vector (/proc/PID/auxv, hex: AT_PAGESZ is the page size
     the kernel gave it) and each mapping's Size and Rss (/proc/PID/smaps) to the console.
     The page size must be --page-size (4096; 16384 for the 16K-page kernel of a Pi 5); one
     line `NAME: agent VmRSS N KiB, VmHWM N KiB, smaps Rss N KiB (page size N, kernel R)` is
     printed (and appended to --mem-report FILE); more than 1 MiB resident fails. The smaps sum is
     the figure to compare: kernels before 6.2 (Debian 12's 6.1) count VmRSS/VmHWM per thread
     and add them to the process's only every 64 page faults (SPLIT_RSS_COUNTING), so an
     agent that faults little shows a VmRSS of a few KiB there; smaps walks the page tables.
QEMU is always killed at the end by its PID (some raspi machines cannot power off), also on
an error, Ctrl-C, SIGTERM from `timeout`, or if this script dies (PR_SET_PDEATHSIG).
The run directory (initramfs, console log, capture, token) is removed after a pass and kept
after a failure (or with --keep) to be looked at.
"""
import argparse
import ctypes
import gzip
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def fail(msg):
    log(f"FAIL: {msg}")
    raise SystemExit(1)


# ---------------------------------------------------------------- initramfs (newc cpio)

class Cpio:
    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        out = self.buf
        out.write(hdr.encode() + name_b)
        out.write(b"\0" * (-(110 + len(name_b)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))

    def dir(self, name):
        self._entry(name, 0o040755, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name, major, minor, mode=0o600):
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


# The agent's ready line: SPEC's fields in its order, then publish= and metrics=;
# smoke.py uses it too.
READY = re.compile(r"ready tcp=(\S+) unix=(\S+) beacon=(\S+)(?: publish=\S+)?(?: metrics=\S+)?")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /run /tmp
hostname -F /etc/hostname
while read m; do
    insmod /lib/modules/$m.ko || echo "guest: insmod $m failed"
done </etc/modules.order
IF=$(cat /etc/tether.iface)
i=0
while [ ! -e /sys/class/net/$IF ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip link set $IF up
ip addr add 10.0.2.15/24 dev $IF
# Without a default route a broadcast to 255.255.255.255 fails with ENETUNREACH.
ip route add default via 10.0.2.2
echo "guest: network up: $(ip -4 addr show $IF | grep inet)"
echo "guest-sys: uname -m=$(uname -m)"
if [ -e /etc/board ]; then
    echo "guest-sys: thermal_zone0/temp=$(cat /sys/class/thermal/thermal_zone0/temp)"
    # LED sampler: one console line per change of the trigger, and per change of the
    # brightness while no trigger drives it. Builtins only, no fork per sample: `read`
    # for the files, and for the pause a `read -t` on a FIFO nobody writes (a `sleep`
    # applet is a fork and an exec, which an emulated Pi Zero managed 1-2 times a second).
    L=/sys/class/leds/ACT
    [ -d $L ] || echo "guest-led: no $L: $(ls /sys/class/leds)"
    [ -d $L ] && (pt= pb=
    mkfifo /run/led.tick && exec 3<>/run/led.tick && rm /run/led.tick
    while :; do
        read t <$L/trigger; t=${t#*[}; t=${t%%]*}
        read b <$L/brightness
        if [ "$t" != "$pt" ] || { [ "$t" = none ] && [ "$b" != "$pb" ]; }; then
            echo "guest-led: trigger=$t brightness=$b"
        fi
        pt=$t pb=$b
        read -t 0.05 _ <&3
    done) &
fi
# 2038-01-19 03:14:07 UTC is where a 32-bit time_t ends, and a board that runs for years
# gets there (on the 32-bit Pis, musl keeps 32-bit-time_t calls for programs built for
# them; Debian 12's 32-bit busybox has such a time_t and cannot set a later date itself):
# the clock is set 10 s before it, the
# agent logs to a regular file (every line stamped, as under an init script; tail -f shows
# them on the console), and 15 s after it started a SIGHUP asks it for a line past the end;
# then the board's own `tether ctl` asks for a PONG.
date -s "2038-01-19 03:13:57" >/dev/null || echo "guest: date -s failed"
echo "guest-sys: date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
: >/run/tether.log
tail -f /run/tether.log &
echo "guest: starting /bin/tether agent $(cat /etc/tether.args)"
RUST_LOG=info /bin/tether agent $(cat /etc/tether.args) 2>>/run/tether.log &
agent=$!
(sleep 15; echo "guest: SIGHUP to the agent"; kill -HUP $agent
 out=$(/bin/tether ctl -s /run/tether.sock PING 2>&1); echo "guest-ctl: PING: $out (exit $?)") &
# The memory report (step 7 of boot.py): when the host connects to :4547, after its tests.
(nc -l -p 4547 </dev/null >/dev/null 2>&1
 echo "guest-mem: comm=$(cat /proc/$agent/comm) $(grep -E '^Vm(RSS|HWM):' /proc/$agent/status | tr -s ' \t\n' ' ')"
 echo "guest-mem: kernel=$(uname -r)"
 echo "guest-mem: auxv=$(od -An -tx1 -v /proc/$agent/auxv | tr -d ' \n')"
 awk '/^[0-9a-f]+-[0-9a-f]+ /{m=$1 " " $2 " " $6; next} /^Size:/{z=$2} /^Rss:/{print "guest-smaps: " m " Size=" z " Rss=" $2}' \
     /proc/$agent/smaps
 echo "guest-mem: end") &
wait $agent
echo "guest: tether agent exited with status $?"
poweroff -f
"""


def build_initramfs(out, kdir, tether, iface, agent_args, token, hostname, board):
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "run", "tmp", "etc", "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("init", INIT.encode(), 0o755)
    with open(os.path.join(kdir, "busybox"), "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    with open(tether, "rb") as f:
        c.file("bin/tether", f.read(), 0o755)
    with open(os.path.join(kdir, "modules.order"), "rb") as f:
        order = f.read()
    c.file("etc/modules.order", order)
    for m in order.decode().split():
        with open(os.path.join(kdir, "modules", m + ".ko"), "rb") as f:
            c.file(f"lib/modules/{m}.ko", f.read())
    c.file("etc/tether.args", (" ".join(agent_args) + "\n").encode())
    c.file("etc/tether.iface", (iface + "\n").encode())
    c.file("etc/tether.token", (token + "\n").encode(), 0o600)
    c.file("etc/machine-id", b"7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e\n")
    c.file("etc/hostname", (hostname + "\n").encode())
    if board:
        c.file("etc/board", b"")
    data = gzip.compress(c.finish(), compresslevel=1)
    with open(out, "wb") as f:
        f.write(data)
    return len(data), order.decode().split()


# ---------------------------------------------------------------- pcap

def pcap_beacons(path, port):
    """(frames, [(dst_mac, src_ip, payload)]) for UDP datagrams to 255.255.255.255:port.

    Reads a file QEMU may still be writing: a truncated last record is ignored."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0, []
    if len(data) < 24:
        return 0, []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        fail(f"{path}: not a pcap file (magic {magic.hex()})")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    if linktype != 1:
        fail(f"{path}: link type {linktype}, expected 1 (Ethernet)")
    off, frames, found = 24, 0, []
    while off + 16 <= len(data):
        incl = struct.unpack(e + "I", data[off + 8:off + 12])[0]
        pkt = data[off + 16:off + 16 + incl]
        if len(pkt) < incl:
            break
        off += 16 + incl
        frames += 1
        if len(pkt) < 14 + 20 + 8:
            continue
        dst_mac, ethertype = pkt[0:6], struct.unpack(">H", pkt[12:14])[0]
        ip = pkt[14:]
        if ethertype != 0x0800 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        if ip[16:20] != b"\xff\xff\xff\xff" or len(ip) < ihl + 8:
            continue
        udp = ip[ihl:]
        dport, ulen = struct.unpack(">HH", udp[2:6])
        if dport != port:
            continue
        found.append((dst_mac, socket.inet_ntoa(ip[12:16]), udp[8:ulen]))
    return frames, found


# ---------------------------------------------------------------- host side

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def on_signal(signum, _frame):
    raise SystemExit(f"killed by signal {signum}")


def die_with_parent():
    """In the QEMU child: get SIGKILL when this script dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Guest:
    """One QEMU process, its console log and the host's `tether ctl` pointed at it."""

    def __init__(self, a, run):
        self.a = a
        self.console = os.path.join(run, "console.log")
        self.pcap = os.path.join(run, "guest.pcap")
        self.qemu_log = os.path.join(run, "qemu.log")
        self.port = free_port()
        self.mem_port = free_port()
        self.host_tether = shlex.split(a.host_tether)
        self.proc = None

    def start(self, initrd):
        a = self.a
        cmd = [a.qemu] + shlex.split(a.machine_args) + [
            "-kernel", a.kernel, "-initrd", initrd, "-append", a.append,
            # restrict=on: the guest is isolated; its broadcasts never leave QEMU. hostfwd still works.
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:4545"
                       f",hostfwd=tcp:127.0.0.1:{self.mem_port}-:4547",
            "-device", f"{a.nic},netdev=n0",
            "-object", f"filter-dump,id=f0,netdev=n0,file={self.pcap}",
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}",
            "-no-reboot",
        ] + (["-dtb", a.dtb] if a.dtb else [])
        self.t_start = time.monotonic()
        # QEMU's own messages go to a file: a pipe nobody reads could fill and stall it.
        with open(self.qemu_log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        log(f"{os.path.basename(a.qemu)} {a.machine_args} started (pid {self.proc.pid}), "
            f"control port forwarded from 127.0.0.1:{self.port}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            log(f"qemu (pid {self.proc.pid}) killed")

    def text(self):
        try:
            with open(self.console, "rb") as f:
                return f.read().decode(errors="replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    def ctl(self, words, token_file=None, timeout=5):
        cmd = self.host_tether + ["ctl", "-c", f"127.0.0.1:{self.port}", "-t", "3"]
        if token_file:
            cmd += ["--token-file", token_file]
        try:
            p = subprocess.run(cmd + words, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, "", "timeout"
        return p.returncode, p.stdout.decode(errors="replace").strip(), p.stderr.decode(errors="replace").strip()

    def alive(self, what):
        if self.proc.poll() is not None:
            with open(self.qemu_log, "rb") as f:
                said = f.read().decode(errors="replace")[-500:]
            fail(f"qemu exited ({self.proc.returncode}) {what}: {said}\n--- console ---\n{self.text()[-2000:]}")

    def wait_console(self, pattern, timeout, what, start=0):
        """The first match of pattern in the console after offset start, waiting up to timeout."""
        end = time.monotonic() + timeout
        while True:
            m = re.compile(pattern, re.M).search(self.text(), start)
            if m:
                return m
            self.alive(f"while waiting for {what}")
            if time.monotonic() > end:
                fail(f"no {what} on the console after {timeout:.0f} s\n--- console ---\n{self.text()[-3000:]}")
            time.sleep(0.1)


# ---------------------------------------------------------------- checks

def check_pong(g, timeout):
    deadline = time.monotonic() + timeout
    tries, last = 0, ""
    while True:
        g.alive("before the guest answered")
        if "guest: tether agent exited" in g.text():
            fail(f"the guest agent exited before it answered\n--- console ---\n{g.text()[-3000:]}")
        tries += 1
        rc, out, err = g.ctl(["PING"])
        if rc == 0 and out == "PONG":
            break
        last = f"rc={rc} out={out!r} err={err!r}"
        if time.monotonic() > deadline:
            fail(f"no PONG after {timeout} s ({tries} tries, last: {last})\n--- console ---\n{g.text()[-3000:]}")
        time.sleep(0.2)
    t_pong = time.monotonic() - g.t_start
    log(f"ok   PING -> PONG from the guest {t_pong:.2f} s after qemu started ({tries} tries)")
    return t_pong


def check_arch(g, want):
    m = g.wait_console(r"^guest-sys: uname -m=(.*)$", 10, "uname -m line")
    if m.group(1).strip() != want:
        fail(f"the guest kernel says uname -m={m.group(1).strip()!r}, expected {want!r}")
    log(f"ok   the guest kernel is {want} (uname -m)")
    return want


def check_status(g):
    rc, out, err = g.ctl(["STATUS"])
    if rc != 0 or not out.startswith("OK {"):
        fail(f"STATUS -> rc={rc} {out!r} {err!r}")
    try:
        status = json.loads(out[3:])
    except ValueError as e:
        fail(f"STATUS payload is not JSON ({e}): {out!r}")
    log(f"ok   STATUS -> OK {{json}} with {len(status)} keys: {out[:160]}{'...' if len(out) > 160 else ''}")
    return status


def check_thermal(g, status):
    m = g.wait_console(r"^guest-sys: thermal_zone0/temp=(.*)$", 10, "thermal_zone0 reading")
    raw = m.group(1).strip()
    if not re.fullmatch(r"-?\d+", raw):
        fail(f"the guest has no usable /sys/class/thermal/thermal_zone0/temp: {raw!r}")
    want = int(raw) / 1000
    for key in ("temp_c", "temperature"):
        got = status.get(key)
        # STATUS carries one decimal: 25178 m°C reads 25.2.
        if not isinstance(got, (int, float)) or abs(got - want) > 0.05 + 1e-6:
            fail(f"STATUS {key}={got!r}, but the guest's thermal_zone0/temp is {raw} ({want} °C)")
    log(f"ok   STATUS temp_c={status['temp_c']} temperature={status['temperature']}: "
        f"the guest's thermal_zone0/temp reads {raw} ({want:.3f} °C)")
    return want


def check_led(g, token_file, secs=6):
    led = r"^guest-led: trigger=(\S*) brightness=(\S*)$"
    first = g.wait_console(led, 10, "ACT LED sample (guest-led: line)")
    text = g.text()
    before = list(re.finditer(led, text, re.M))[-1]
    trig0 = before.group(1)
    if trig0 in ("", "none"):
        fail(f"ACT LED trigger before IDENTIFY is {trig0!r}: restoring it would prove nothing")
    offset = len(text)
    rc, out, err = g.ctl(["IDENTIFY", str(secs)], token_file=token_file)
    if rc != 0 or out != "OK":
        fail(f"ctl --token-file IDENTIFY {secs} -> rc={rc} {out!r} {err!r}")
    t_id = time.monotonic()
    log(f"ok   ctl --token-file F IDENTIFY {secs} -> OK (trigger before: {trig0}, first sample {first.group(0)!r})")
    off = g.wait_console(r"^guest-led: trigger=none ", 5, "ACT trigger set to none by IDENTIFY", offset)
    back = g.wait_console(rf"^guest-led: trigger={re.escape(trig0)} ", secs + 10,
                          f"ACT trigger {trig0} restored after IDENTIFY", off.start())
    t_back = time.monotonic() - t_id
    seen = [(m.group(1), m.group(2)) for m in re.finditer(led, g.text()[off.start():back.end()], re.M)]
    blink = [b for t, b in seen if t == "none"]
    changes = sum(1 for x, y in zip(blink, blink[1:]) if x != y)
    # Three changes (on, off, on, off) show a blink, not one switch. The guest's sampler
    # forks nothing (a 50 ms `read -t`): an emulated Pi Zero saw 23 changes in 6 s; when it
    # paused with a `sleep` applet (a fork and an exec each pass) it saw as few as two
    # samples in 4 s on a loaded host, hence the margin.
    if "0" not in blink or not any(b not in ("", "0") for b in blink) or changes < 3:
        fail(f"ACT brightness did not toggle while IDENTIFY ran: samples with trigger=none {blink}")
    log(f"ok   ACT LED: trigger {trig0} -> none, brightness {'/'.join(dict.fromkeys(blink))} "
        f"({changes} changes seen in {secs} s), trigger {trig0} back {t_back:.1f} s after IDENTIFY")
    return changes


def check_beacon(g, mode, port):
    m = READY.search(g.text())
    ready_beacon = m.group(3) if m else None
    log(f"guest ready line: {m.group(0) if m else '(not seen on the console)'}")
    want = mode == "require" or (mode == "auto" and ready_beacon not in (None, "off"))
    if mode == "skip":
        log("beacon check skipped (--beacon=skip)")
        return None
    wait = 10.0 if want else 3.0
    end = time.monotonic() + wait
    while True:
        frames, found = pcap_beacons(g.pcap, port)
        good = [b for b in found if b[2].startswith(b'{"tether":1')]
        if good or time.monotonic() > end:
            break
        time.sleep(0.25)
    if good:
        mac, src, payload = good[0]
        if mac != b"\xff" * 6:
            fail(f"beacon to 255.255.255.255 with destination MAC {mac.hex(':')}, expected ff:ff:ff:ff:ff:ff")
        try:
            beacon = json.loads(payload)
        except ValueError as e:
            fail(f"beacon payload is not one JSON object ({e}): {payload[:200]!r}")
        log(f"ok   beacon in the pcap: {len(good)} datagram(s) {src} -> 255.255.255.255:{port}, "
            f"{len(payload)} bytes, seq={beacon.get('seq')}: {payload[:120].decode(errors='replace')}...")
        return len(good)
    if want:
        fail(f"no beacon seen: no UDP datagram to 255.255.255.255:{port} starting with "
             f'{{"tether":1 in {g.pcap} after {wait:.0f} s ({frames} frames captured, '
             f"{len(found)} to that port); guest ready line: {m.group(0) if m else None}")
    log(f"no beacon seen (guest agent runs with beacon={ready_beacon}; {frames} frames captured): "
        f"not asserted (--beacon=auto)")
    return None


def check_clock(g):
    """/init set the guest's clock 10 s before a 32-bit time_t ends (2038-01-19 03:14:07 UTC)
    and sent the agent a SIGHUP 15 s after it started: the agent's log-file line for it is
    stamped past that end, and the agent still answers."""
    m = g.wait_console(r"^guest-sys: date=(\S+)$", 10, "the guest's date line")
    if not m.group(1).startswith("2038-01-19T03:1"):
        fail(f"the guest's clock says {m.group(1)}, not 2038-01-19 03:1x: /init's date -s did not take")
    end = time.monotonic() + 40
    line = re.compile(r"^(\S+) \[INFO +tether\S*\] token file \S+: unchanged$", re.M)
    while not (s := line.search(g.text())):
        g.alive("while waiting for the agent's line after the SIGHUP")
        if "guest: tether agent exited" in g.text() or time.monotonic() > end:
            rc, out, err = g.ctl(["PING"])
            fail(f"no stamped log line for the SIGHUP sent past 2038-01-19 03:14:07 (PING now: "
                 f"rc={rc} {out!r} {err!r})\n--- console ---\n{g.text()[-3000:]}")
        time.sleep(0.2)
    if s.group(1) <= "2038-01-19T03:14:07Z":
        fail(f"the agent's line for the SIGHUP is stamped {s.group(1)}: not past the end of a 32-bit time_t")
    c = g.wait_console(r"^guest-ctl: PING: (.*)$", 10, "the guest's own ctl PING")
    if c.group(1).strip() != "PONG (exit 0)":
        fail(f"the guest's own `tether ctl PING` past 2038 said {c.group(1)!r}")
    status = check_status(g)
    log(f"ok   past the end of a 32-bit time_t: clock set to {m.group(1)}, the agent's line for "
        f"a SIGHUP stamped {s.group(1)}, the guest's ctl PING -> PONG, STATUS after it "
        f"(uptime {status.get('uptime')})")
    return s.group(1)


AT_PAGESZ = 6


def elf_word(path):
    """struct format of an auxv entry (a_type, a_val) for the ELF file's class and byte order."""
    with open(path, "rb") as f:
        ident = f.read(6)
    return ("<" if ident[5] == 1 else ">") + ("QQ" if ident[4] == 2 else "II")


RSS_BUDGET_KIB = 1024


def check_memory(g, tether, page_size, report):
    """Step 7: ask the guest (a connection to its :4547) for the agent's memory; fail unless
    the agent's AT_PAGESZ is page_size and it holds at most RSS_BUDGET_KIB. Returns (smaps
    Rss sum, VmRSS, VmHWM, page size)."""
    end, tries = time.monotonic() + 40, 0
    start = len(g.text())
    done = re.compile(r"^guest-mem: end$", re.M)
    while not done.search(g.text(), start):
        g.alive("while asking for the memory report")
        if time.monotonic() > end:
            fail(f"no memory report from the guest after {tries} connections to its :4547\n"
                 f"--- console ---\n{g.text()[-3000:]}")
        tries += 1
        try:
            # User-mode networking accepts at once and resets when nothing listens in the
            # guest: wait for the guest's nc to close (stdin /dev/null), then for the report.
            with socket.create_connection(("127.0.0.1", g.mem_port), timeout=3) as c:
                c.recv(1)
        except OSError:
            pass
        wait = time.monotonic() + 3
        while not done.search(g.text(), start) and time.monotonic() < wait:
            time.sleep(0.1)
    text = g.text()[start:]
    m = re.search(r"^guest-mem: comm=(\S*) VmHWM: (\d+) kB VmRSS: (\d+) kB", text, re.M)
    if not m:
        fail(f"the guest's memory report has no VmHWM/VmRSS of the agent:\n{text[:2000]}")
    comm, hwm, rss = m.group(1), int(m.group(2)), int(m.group(3))
    if comm != "tether":
        fail(f"the memory report is of {comm!r}, not the agent (tether)")
    a = re.search(r"^guest-mem: auxv=([0-9a-f]*)$", text, re.M)
    raw = bytes.fromhex(a.group(1)) if a else b""
    fmt = elf_word(tether)
    n = struct.calcsize(fmt)
    aux = dict(struct.unpack_from(fmt, raw, i) for i in range(0, len(raw) - n + 1, n))
    got = aux.get(AT_PAGESZ)
    if got != page_size:
        fail(f"the agent's AT_PAGESZ (its /proc/PID/auxv) is {got}, expected {page_size}")
    log(f"ok   page size {got}: AT_PAGESZ in the agent's /proc/PID/auxv")
    maps = re.findall(r"^guest-smaps: (\S+) (\S+) ?(\S*) Size=(\d+) Rss=(\d+)$", text, re.M)
    for rng, perms, name, size, mrss in maps:
        if int(mrss):
            log(f"     smaps {rng:>33} {perms} {name or '[anon]':<14} Size {size:>5} kB  Rss {mrss:>4} kB")
    if not maps:
        fail(f"the guest's memory report has no smaps lines:\n{text[:2000]}")
    k = re.search(r"^guest-mem: kernel=(\S+)", text, re.M)
    total = sum(int(m[4]) for m in maps)
    line = (f"{g.a.name}: agent VmRSS {rss} KiB, VmHWM {hwm} KiB, smaps Rss "
            f"{total} KiB (page size {got}, kernel {k.group(1) if k else '?'})")
    log(line)
    if report:
        with open(report, "a") as f:
            f.write(line + "\n")
    # The project's budget (README: RSS <= 1 MiB), on the board's own kernel and page size;
    # the smaps sum, since VmRSS lags on Debian 12's SMP kernels (above).
    held = max(total, rss)
    if held > RSS_BUDGET_KIB:
        fail(f"the agent holds {held} KiB resident, over the {RSS_BUDGET_KIB} KiB budget")
    log(f"ok   {held} KiB resident, within the {RSS_BUDGET_KIB} KiB budget")
    return total, rss, hwm, got


def main():
    # SIGTERM/SIGHUP (e.g. from `timeout`) unwind through the finally that stops qemu.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True, help="machine name for the summary line")
    ap.add_argument("--qemu", required=True, help="qemu-system-aarch64 or qemu-system-arm")
    ap.add_argument("--machine-args", required=True, help="e.g. '-M raspi3b -accel tcg,thread=single'")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--dtb")
    ap.add_argument("--append", required=True, help="kernel command line")
    ap.add_argument("--nic", required=True, help="QEMU NIC device: virtio-net-device, usb-net")
    ap.add_argument("--iface", required=True, help="the NIC's name in the guest: eth0, usb0")
    ap.add_argument("--kdir", required=True, help="scripts/qemu/kernel.py output: modules, busybox")
    ap.add_argument("--tether", required=True, help="the guest's tether binary")
    ap.add_argument("--host-tether", required=True, help="command line that runs tether on the host")
    ap.add_argument("--uname-m", required=True, help="what uname -m must say in the guest")
    ap.add_argument("--board", action="store_true", help="Raspberry Pi: thermal and ACT LED checks")
    ap.add_argument("--led", default="/sys/class/leds/ACT", help="the guest agent's --led (with --board)")
    ap.add_argument("--beacon", choices=("auto", "require", "skip"), default="auto")
    ap.add_argument("--beacon-port", type=int, default=4546)
    ap.add_argument("--workdir", required=True, help="where the run directory is made")
    ap.add_argument("--keep", action="store_true", help="keep the run directory after a pass")
    ap.add_argument("--boot-timeout", type=float, default=60)
    ap.add_argument("--page-size", type=int, default=4096, help="the guest kernel's page size (AT_PAGESZ)")
    ap.add_argument("--mem-report", help="append the agent's memory line to this file")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    run = tempfile.mkdtemp(prefix=f"run-{a.name}-", dir=a.workdir)
    initrd = os.path.join(run, "initramfs.cpio.gz")
    token = secrets.token_hex(16)
    token_file = os.path.join(run, "token")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(token + "\n")

    agent_args = ["--listen", "0.0.0.0:4545", "--socket", "/run/tether.sock", "--iface", a.iface,
                  "--interval", "1", "--token-file", "/etc/tether.token"]
    if a.board:
        agent_args += ["--led", a.led]
    size, mods = build_initramfs(initrd, a.kdir, a.tether, a.iface, agent_args, token,
                                 f"tether-{a.name}", a.board)
    log(f"initramfs {size} bytes (gzip'd newc cpio), modules: {' '.join(mods) or '-'}")
    log(f"guest runs: tether agent {' '.join(agent_args)}")

    g = Guest(a, run)
    ok = False
    summary = {}
    try:
        g.start(initrd)
        summary["first PONG"] = f"{check_pong(g, a.boot_timeout):.1f} s"
        summary["uname -m"] = check_arch(g, a.uname_m)
        status = check_status(g)
        if a.board:
            summary["thermal"] = f"{check_thermal(g, status):.3f} °C"
            summary["ACT LED"] = f"{check_led(g, token_file)} toggles"
        n = check_beacon(g, a.beacon, a.beacon_port)
        if n:
            summary["beacons"] = n
        summary["log stamped"] = check_clock(g)
        # The smaps sum first: VmRSS lags on Debian 12's SMP kernels (4 KiB, say).
        total, rss, hwm, ps = check_memory(g, a.tether, a.page_size, a.mem_report)
        summary["agent resident (smaps)"] = f"{total} KiB (VmRSS {rss}, VmHWM {hwm} KiB, page size {ps})"
        ok = True
    finally:
        g.stop()
        if ok and not a.keep:
            shutil.rmtree(run, ignore_errors=True)
        else:
            log(f"run directory kept: {run} (console.log, qemu.log, guest.pcap, initramfs)")
    log(f"{a.name}: boot test passed in {time.monotonic() - T0:.1f} s: "
        + ", ".join(f"{k} {v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
