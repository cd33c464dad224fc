#!/usr/bin/env python3
"""Smoke test of one tether binary, optionally through a qemu-user runner.

    smoke.py --bin target/dist/tether-armv7-unknown-linux-musleabihf --runner "qemu-arm -cpu cortex-a7"
    smoke.py --bin ... --runner "qemu-arm -cpu arm1176" --expect-sigill

Starts `tether agent --listen 127.0.0.1:0 --no-beacon --socket DIR/t.sock`, waits for its
`ready tcp=ADDR unix=PATH beacon=off` line, runs `tether ctl -s PATH PING` (expects PONG),
sends SIGTERM and expects exit status 0. With --expect-sigill it instead expects the binary
to die of SIGILL (proves that the emulated CPU really lacks the instructions).
Only loopback and a Unix socket in a private temp dir are used. Prints one line per step.
"""
import argparse
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from boot import READY  # the ready line's pattern, one copy (boot.py, same folder)


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runner", default="")
    ap.add_argument("--expect-sigill", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    runner = shlex.split(a.runner)
    label = f"{os.path.basename(a.bin)} [{a.runner or 'native'}]"

    if a.expect_sigill:
        t0 = time.monotonic()
        p = subprocess.run(runner + [a.bin, "--version"], capture_output=True, timeout=a.timeout)
        # qemu-user re-raises the guest's fatal signal on itself: -4 (or 128+4 via a shell).
        if p.returncode not in (-signal.SIGILL, 128 + signal.SIGILL):
            fail(f"{label}: expected SIGILL, got exit status {p.returncode}: {p.stdout!r} {p.stderr[-300:]!r}")
        print(f"ok   {label}: dies with SIGILL as it must ({time.monotonic() - t0:.2f} s)", flush=True)
        return

    with tempfile.TemporaryDirectory(prefix="tether-smoke-") as d:
        sock = os.path.join(d, "t.sock")
        cmd = runner + [a.bin, "agent", "--listen", "127.0.0.1:0", "--no-beacon", "--socket", sock]
        t0 = time.monotonic()
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            line = b""
            deadline = t0 + a.timeout
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([agent.stdout], [], [], left)[0]:
                    fail(f"{label}: no ready line after {a.timeout} s")
                ch = os.read(agent.stdout.fileno(), 1)
                if not ch:
                    err = agent.stderr.read().decode(errors="replace")[-500:]
                    fail(f"{label}: agent exited ({agent.wait()}) before its ready line: {err}")
                line += ch
            text = line.decode().strip()
            m = READY.fullmatch(text)
            if not m:
                fail(f"{label}: unexpected ready line {text!r}")
            if m.group(2) != sock or m.group(3) != "off":
                fail(f"{label}: ready line {text!r} does not match unix={sock} beacon=off")
            print(f"ok   {label}: {text} ({time.monotonic() - t0:.2f} s)", flush=True)

            t1 = time.monotonic()
            p = subprocess.run(runner + [a.bin, "ctl", "-s", sock, "PING"], capture_output=True,
                               timeout=a.timeout)
            if p.returncode != 0 or p.stdout.strip() != b"PONG":
                fail(f"{label}: ctl PING -> exit {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r}")
            print(f"ok   {label}: ctl -s PING -> PONG ({time.monotonic() - t1:.2f} s)", flush=True)

            t2 = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            try:
                rc = agent.wait(timeout=a.timeout)
            except subprocess.TimeoutExpired:
                fail(f"{label}: agent did not exit within {a.timeout} s of SIGTERM")
            if rc != 0:
                fail(f"{label}: agent exited {rc} on SIGTERM (want 0): {agent.stderr.read()[-500:]!r}")
            if os.path.exists(sock):
                fail(f"{label}: socket {sock} still exists after a clean stop")
            print(f"ok   {label}: SIGTERM -> exit 0, socket removed ({time.monotonic() - t2:.2f} s)", flush=True)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()


if __name__ == "__main__":
    main()
