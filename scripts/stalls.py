#!/usr/bin/env python3
"""Who had the server's CPU when a connect storm's SYN was dropped (scripts/bench, BENCH_ONLY=stalls).

    stalls.py SERVER_COMM SERVER_CPU TRACE...

Each TRACE is the tracefs text of one storm that had a connect over 100 ms, recorded with
sched_switch, softirq_entry/exit, sys_enter_connect and sys_exit_accept4 on every CPU. A
dropped SYN shows as a load-generator thread whose connect is followed by no other connect
of its own for over 0.5 s (the kernel retransmits the SYN after 1 s). For the first such
connect, the window runs from the server's last accept before it to its first accept after
it, and the server CPU's time in that window is summed by who ran: a task by name, or a
softirq by vector and the task it interrupted. One line per trace, the largest shares first.
"""
import collections
import re
import sys

LINE = re.compile(r"\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+)(:| ->|\()\s*(.*)")
NEXT = re.compile(r"next_comm=(.+?) next_pid=")
VEC = re.compile(r"action=(\w+)")
NAMED = {}


def events(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                name = m.group(5) + ("_exit" if m.group(6) == " ->" else "")
                out.append((float(m.group(4)), m.group(1).strip(), m.group(2), int(m.group(3)), name, m.group(7)))
    return out


def first_drop(ev, server):
    connects = collections.defaultdict(list)
    accepts = []
    for t, comm, pid, _cpu, name, arg in ev:
        if name == "sys_connect" and comm == "loadgen":
            connects[pid].append(t)
        elif name == "sys_accept4_exit" and comm.startswith(server) and not arg.startswith("0xfff"):
            accepts.append(t)
    if not accepts:
        return None, accepts
    last_accept = accepts[-1]
    drops = []
    for ts in connects.values():
        for t, nxt in zip(ts, ts[1:] + [None]):
            if (nxt is not None and nxt - t > 0.5) or (nxt is None and last_accept - t > 0.5):
                drops.append(t)
    return (min(drops) if drops else None), accepts


def program(name, pid):
    """`name (of PROGRAM)` when the thread belongs to a process of another name (still running)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            tgid = next(line.split()[1] for line in f if line.startswith("Tgid:"))
        with open(f"/proc/{tgid}/comm") as f:
            prog = f.read().strip()
    except (OSError, StopIteration):
        return name
    return name if not prog or prog == name else f"{name} (of {prog}, pid {tgid})"


def shares(ev, cpu, w0, w1):
    running, label, soft, last = "?", "?", None, w0
    got = collections.Counter()
    for t, _comm, _pid, c, name, arg in ev:
        if c != cpu:
            continue
        if t > w0:
            if t > w1:
                break
            got[f"softirq {soft} (in {running})" if soft else label] += t - last
            last = t
        if name == "sched_switch":
            m = NEXT.search(arg)
            running = m.group(1) if m else "?"
            if running.startswith("kworker/"):
                running = "kworker"
            elif m and running not in NAMED:
                NAMED[running] = program(running, arg.split("next_pid=")[1].split()[0])
            label = NAMED.get(running, running)
        elif name == "softirq_entry":
            m = VEC.search(arg)
            soft = m.group(1) if m else "?"
        elif name == "softirq_exit":
            soft = None
    got[f"softirq {soft} (in {running})" if soft else label] += w1 - last
    return got


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    server, cpu = sys.argv[1], int(sys.argv[2])
    for path in sys.argv[3:]:
        ev = events(path)
        t0, accepts = first_drop(ev, server)
        if t0 is None:
            print(f"{path.rsplit('/', 1)[-1]}: no dropped SYN found in the trace")
            continue
        w0 = max((a for a in accepts if a < t0), default=t0 - 0.001)
        w1 = min((a for a in accepts if a > t0), default=t0 + 0.001)
        got = shares(ev, cpu, w0, w1)
        top = ", ".join(f"{who} {us * 1e6:.0f}" for who, us in got.most_common(4) if us * 1e6 >= 1)
        print(f"{path.rsplit('/', 1)[-1]}: no accept for {(w1 - w0) * 1e6:.0f} µs around the dropped SYN; CPU {cpu}, µs: {top}")


if __name__ == "__main__":
    main()
