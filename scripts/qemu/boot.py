#!/usr/bin/env python3
"""Boot an arm64 kernel in qemu-system-aarch64 with tether in a busybox initramfs and test it
from the host. Called by scripts/qemu-boot, which provides the kernel, modules and binaries.

Steps (each timed):
  1. write a gzip'd newc cpio: /init (busybox sh), busybox, tether, the 4 virtio-net modules;
  2. boot: -M virt -cpu cortex-a53, user-mode network with restrict=on (nothing the guest
     sends ever leaves QEMU; only the hostfwd of the control port comes in) and a filter-dump
     pcap of the guest NIC;
  3. from the host: `tether ctl -c 127.0.0.1:PORT PING` -> PONG and STATUS -> OK {json},
     retried (user-mode net accepts before the guest listens, then resets);
  4. read the pcap: a UDP datagram to 255.255.255.255:4546 whose payload starts with
     {"tether":1 must have left the guest NIC. Required when the guest agent's ready line says
     it beacons (beacon=IFACE:PORT) or with --beacon=require; reported only with --beacon=auto
     when the agent runs without a beacon; skipped with --beacon=skip.
QEMU is always killed at the end (and on any error / Ctrl-C).
"""
import argparse
import gzip
import io
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
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

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor, mode=0o600):
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /run /tmp
hostname -F /etc/hostname
for m in failover net_failover virtio_mmio virtio_net; do
    insmod /lib/modules/$m.ko || echo "guest: insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
# Without a default route a broadcast to 255.255.255.255 fails with ENETUNREACH.
ip route add default via 10.0.2.2
echo "guest: network up: $(ip -4 addr show eth0 | grep inet)"
echo "guest: starting /bin/tether agent $(cat /etc/tether.args)"
RUST_LOG=info /bin/tether agent $(cat /etc/tether.args)
echo "guest: tether agent exited with status $?"
poweroff -f
"""


def build_initramfs(out, busybox, tether, modules, agent_args):
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "run", "tmp", "etc", "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("init", INIT.encode(), 0o755)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    with open(tether, "rb") as f:
        c.file("bin/tether", f.read(), 0o755)
    for m in modules:
        with open(m, "rb") as f:
            c.file("lib/modules/" + os.path.basename(m), f.read())
    c.file("etc/tether.args", (" ".join(agent_args) + "\n").encode())
    c.file("etc/machine-id", b"7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e\n")
    c.file("etc/hostname", b"tether-qemu\n")
    data = gzip.compress(c.finish(), compresslevel=1)
    with open(out, "wb") as f:
        f.write(data)
    return len(data)


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

def ctl(host_tether, port, words, timeout=5):
    cmd = host_tether + ["ctl", "-c", f"127.0.0.1:{port}", "-t", "3"] + words
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", "timeout"
    return p.returncode, p.stdout.decode(errors="replace").strip(), p.stderr.decode(errors="replace").strip()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def on_signal(signum, _frame):
    raise SystemExit(f"killed by signal {signum}")


def main():
    # SIGTERM/SIGHUP (e.g. from `timeout`) unwind through the finally that stops qemu.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--modules", required=True, nargs="+")
    ap.add_argument("--busybox", required=True)
    ap.add_argument("--tether", required=True, help="the aarch64 binary for the guest")
    ap.add_argument("--host-tether", required=True, help="command line that runs tether on the host")
    ap.add_argument("--agent-args", required=True)
    ap.add_argument("--beacon", choices=("auto", "require", "skip"), default="auto")
    ap.add_argument("--beacon-port", type=int, default=4546)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--boot-timeout", type=float, default=60)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    host_tether = shlex.split(a.host_tether)
    initrd = os.path.join(a.workdir, "initramfs.cpio.gz")
    pcap = os.path.join(a.workdir, "guest.pcap")
    console = os.path.join(a.workdir, "console.log")
    for f in (pcap, console):
        if os.path.exists(f):
            os.unlink(f)

    agent_args = shlex.split(a.agent_args)
    size = build_initramfs(initrd, a.busybox, a.tether, a.modules, agent_args)
    log(f"initramfs {size} bytes (gzip'd newc cpio), guest runs: tether agent {' '.join(agent_args)}")

    port = free_port()
    qemu = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53", "-smp", "1", "-m", "512",
        "-kernel", a.kernel, "-initrd", initrd,
        "-append", "console=ttyAMA0 panic=-1 quiet",
        # restrict=on: the guest is isolated; its broadcasts never leave QEMU. hostfwd still works.
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:4545",
        "-device", "virtio-net-device,netdev=n0",
        "-object", f"filter-dump,id=f1,netdev=n0,file={pcap}",
        "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
        "-no-reboot",
    ]
    t_boot = time.monotonic()
    # Same process group as us: `timeout` (scripts/qemu-boot) kills the whole group if we hang.
    proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    log(f"qemu-system-aarch64 started (pid {proc.pid}), control port forwarded from 127.0.0.1:{port}")

    def console_text():
        try:
            with open(console, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    ok = False
    try:
        # 3. control port, retried until the guest answers.
        deadline = time.monotonic() + a.boot_timeout
        tries, last = 0, ""
        while True:
            if proc.poll() is not None:
                fail(f"qemu exited ({proc.returncode}) before the guest answered: "
                     f"{proc.stdout.read().decode(errors='replace')[-500:]}\n--- console ---\n{console_text()[-2000:]}")
            tries += 1
            rc, out, err = ctl(host_tether, port, ["PING"])
            if rc == 0 and out == "PONG":
                break
            last = f"rc={rc} out={out!r} err={err!r}"
            if time.monotonic() > deadline:
                fail(f"no PONG after {a.boot_timeout} s ({tries} tries, last: {last})\n--- console ---\n{console_text()[-3000:]}")
            time.sleep(0.2)
        t_pong = time.monotonic() - t_boot
        log(f"ok   PING -> PONG from the guest {t_pong:.2f} s after qemu started ({tries} tries)")

        rc, out, err = ctl(host_tether, port, ["STATUS"])
        if rc != 0 or not out.startswith("OK {"):
            fail(f"STATUS -> rc={rc} {out!r} {err!r}")
        try:
            status = json.loads(out[3:])
        except ValueError as e:
            fail(f"STATUS payload is not JSON ({e}): {out!r}")
        log(f"ok   STATUS -> OK {{json}} with {len(status)} keys: {out[:160]}{'...' if len(out) > 160 else ''}")

        m = re.search(r"ready tcp=(\S+) unix=(\S+) beacon=(\S+)", console_text())
        ready_beacon = m.group(3) if m else None
        log(f"guest ready line: {m.group(0) if m else '(not seen on the console)'}")

        # 4. the beacon in the guest NIC's capture.
        want = a.beacon == "require" or (a.beacon == "auto" and ready_beacon not in (None, "off"))
        if a.beacon == "skip":
            log("beacon check skipped (--beacon=skip)")
        else:
            wait = 10.0 if want else 3.0
            end = time.monotonic() + wait
            while True:
                frames, found = pcap_beacons(pcap, a.beacon_port)
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
                log(f"ok   beacon in the pcap: {len(good)} datagram(s) {src} -> 255.255.255.255:{a.beacon_port}, "
                    f"{len(payload)} bytes, seq={beacon.get('seq')}: {payload[:120].decode(errors='replace')}...")
            elif want:
                fail(f"no beacon seen: no UDP datagram to 255.255.255.255:{a.beacon_port} starting with "
                     f'{{"tether":1 in {pcap} after {wait:.0f} s ({frames} frames captured, '
                     f"{len(found)} to that port); guest ready line: {m.group(0) if m else None}")
            else:
                log(f"no beacon seen (guest agent runs with beacon={ready_beacon}; {frames} frames captured): "
                    f"not asserted yet; this becomes a hard check when the agent beacons, or with --beacon=require")
        ok = True
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log(f"qemu stopped; console log {console}, capture {pcap}")
        if not ok:
            sys.stdout.flush()
    log(f"boot test passed in {time.monotonic() - T0:.2f} s")


if __name__ == "__main__":
    main()
