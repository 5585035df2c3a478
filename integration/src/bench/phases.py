#!/usr/bin/env python3
"""Where the wall time of one `run --rm <image> <id> true` goes, phase by phase.

Companion of `berth-bench` (README, Benchmarks): the bench says how long a run takes, this
says where the time goes. Each run executes under `perf record -a` with only scheduler and a
few syscall tracepoints (fork/exec/exit, mount/umount, fsync/fdatasync, connect), so the
overhead is small and nothing is attached to the processes (strace slows exec and runc
several-fold). The process tree rooted at the daemon and the client picks out our shim, its
`runc create/start/delete` children and the container; everything else on the machine is
ignored. Needs root and `perf` (Debian package linux-perf).

The overlay unmount's sync of the upper filesystem runs in task_work after the umount2
syscall has "returned", so its end is the shim's next umount2 call (the EINVAL that ends
UnmountAll's loop), not sys_exit_umount.

Several configurations are measured in turns (round-robin), so load drift on a shared
machine hits all of them alike:

    phases.py --runs 20 \
        --config before=/old/berth,/tmp/a/berth.sock,$(pidof -s berthd-a) \
        --config after=/new/berth,/tmp/b/berth.sock,$(pidof -s berthd-b)

Each config is NAME=CLIENT,SOCKET,DAEMON_PID; CLIENT is berth's CLI or ctr (same flags). The
image must be imported in namespace `--namespace` (default `bench`) of every daemon.
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

EVENTS = [
    "sched:sched_process_fork",
    "sched:sched_process_exec",
    "sched:sched_process_exit",
    "syscalls:sys_enter_umount",
    "syscalls:sys_exit_umount",
    "syscalls:sys_enter_fdatasync",
    "syscalls:sys_exit_fdatasync",
    "syscalls:sys_enter_fsync",
    "syscalls:sys_exit_fsync",
    "syscalls:sys_enter_mount",
    "syscalls:sys_enter_connect",
]

# (label, from mark or None for the client's exec, to mark)
PHASES = [
    ("client exec -> connect (client start-up)", None, "cli_connect"),
    ("connect -> temp mount (image reads, lease, snapshot prepare)", "cli_connect", "cli_mount"),
    ("client temp mount for the user lookup (mount -> umount return)", "cli_mount", "cli_umount"),
    ("-> shim `start` exec (container create, lease delete, Tasks.Create)", "cli_umount", "shim_start"),
    ("shim `start` exec -> shim daemon exec", "shim_start", "shim_daemon"),
    ("shim daemon exec -> rootfs mount", "shim_daemon", "rootfs_mount"),
    ("rootfs mount -> runc create fork", "rootfs_mount", "runc_create_begin"),
    ("runc create", "runc_create_begin", "runc_create_end"),
    ("create reply -> runc start fork (Create reply, Start)", "runc_create_end", "runc_start_begin"),
    ("runc start", "runc_start_begin", "runc_start_end"),
    ("runc start exit -> runc delete fork (exit, Wait reply, Delete)", "runc_start_end", "runc_delete_begin"),
    ("runc delete", "runc_delete_begin", "runc_delete_end"),
    ("runc delete exit -> umount", "runc_delete_end", "umount_enter"),
    ("umount2(rootfs) incl. the upper filesystem's sync", "umount_enter", "umount_next"),
    ("-> client exit (Delete reply, container + snapshot delete)", "umount_next", "cli_exit"),
    ("total (client exec -> exit)", None, "cli_exit"),
]

LINE = re.compile(r"\s*(.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)")


def one_run(client, socket, daemon_pid, namespace, image, data):
    cmd = ["perf", "record", "-q", "-a", "-o", data]
    for e in EVENTS:
        cmd += ["-e", e]
    cid = f"phase-{time.time_ns()}"
    cmd += ["--", client, "-a", socket, "-n", namespace, "run", "--rm", image, cid, "true"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    out = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,pid,tid,time,event,trace"],
        capture_output=True, text=True, check=False,
    ).stdout
    ev = []
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            ev.append((float(m[4]) * 1000, int(m[2]), int(m[3]), m[5].split(":")[-1], m[6]))
    ev.sort()
    client_name = os.path.basename(client)
    tree, cli, t0, kids = {daemon_pid}, None, None, {}
    for t, pid, tid, name, tr in ev:
        if name == "sched_process_exec" and cli is None:
            fn = tr.split("filename=")[1].split()[0]
            if os.path.basename(fn) == client_name:
                cli, t0 = pid, t
                tree.add(pid)
        if name == "sched_process_fork" and pid in tree:
            child = int(re.search(r"child_pid=(\d+)", tr)[1])
            tree.add(child)
            kids.setdefault(pid, []).append((t, child))
    if t0 is None:
        return None
    marks, syncs, pending, shims = {}, [], {}, []
    for t, pid, tid, name, tr in ev:
        if pid not in tree:
            continue
        shim = shims[-1][1] if shims else None
        if name == "sched_process_exec" and "containerd-shim" in tr:
            shims.append((t, pid))
        elif name in ("sys_enter_fdatasync", "sys_enter_fsync"):
            pending[tid] = t
        elif name in ("sys_exit_fdatasync", "sys_exit_fsync") and tid in pending:
            start = pending.pop(tid)
            syncs.append((start, t - start))
        elif name == "sys_enter_connect" and pid == cli:
            marks.setdefault("cli_connect", t)
        elif name == "sys_enter_mount" and pid == cli and not shims:
            marks.setdefault("cli_mount", t)
        elif name == "sys_exit_umount" and pid == cli and not shims:
            marks.setdefault("cli_umount", t)
        elif name == "sys_enter_mount" and pid == shim:
            marks.setdefault("rootfs_mount", t)
        elif name == "sys_enter_umount" and pid == shim:
            if "umount_exit" in marks:
                marks.setdefault("umount_next", t)
            marks.setdefault("umount_enter", t)
        elif name == "sys_exit_umount" and pid == shim:
            marks.setdefault("umount_exit", t)
        elif name == "sched_process_exit" and pid == cli and "group_dead=true" in tr:
            marks["cli_exit"] = t
    if not shims:
        return None
    marks["shim_start"] = shims[0][0]
    marks["shim_daemon"] = shims[-1][0]
    runcs = kids.get(shims[-1][1], [])
    exits = {}
    for t, pid, tid, name, tr in ev:
        if name == "sched_process_exit" and "group_dead=true" in tr:
            exits.setdefault(pid, t)
    for step, (t, child) in zip(["runc_create", "runc_start", "runc_delete"], runcs):
        marks[step + "_begin"] = t
        if child in exits:
            marks[step + "_end"] = exits[child]
    row = {k: v - t0 for k, v in marks.items()}
    end = marks.get("cli_exit", float("inf"))
    row["fsyncs"] = sum(1 for s, _ in syncs if s < end)
    row["fsync_ms"] = sum(d for s, d in syncs if s < end)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--config", action="append", required=True,
                    help="NAME=CLIENT,SOCKET,DAEMON_PID (repeatable)")
    ap.add_argument("--namespace", default="bench")
    ap.add_argument("--image", default="docker.io/library/busybox:test")
    args = ap.parse_args()
    configs = []
    for c in args.config:
        name, rest = c.split("=", 1)
        client, socket, pid = rest.split(",")
        configs.append((name, client, socket, int(pid)))
    rows = {c[0]: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="berth-phases-") as tmp:
        data = os.path.join(tmp, "perf.data")
        for _ in range(args.runs):
            for name, client, socket, pid in configs:
                r = one_run(client, socket, pid, args.namespace, args.image, data)
                if r is None:
                    print(f"{name}: run not recognised in the trace (client or shim missing)")
                else:
                    rows[name].append(r)
                time.sleep(0.2)
    names = [c[0] for c in configs]
    print("| phase (p50 ms, min–max) | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))

    def cell(vals):
        if not vals:
            return "—"
        return f"{statistics.median(vals):.1f} ({min(vals):.1f}–{max(vals):.1f})"

    for label, a, b in PHASES:
        cells = []
        for n in names:
            vals = [r[b] - (r[a] if a else 0) for r in rows[n]
                    if b in r and (a is None or a in r)]
            cells.append(cell(vals))
        print(f"| {label} | " + " | ".join(cells) + " |")
    for k, label in [("fsyncs", "fsync/fdatasync calls before the client exits"),
                     ("fsync_ms", "time in them (ms)")]:
        print(f"| {label} | " + " | ".join(cell([r[k] for r in rows[n]]) for n in names) + " |")
    print(f"\n{args.runs} runs per configuration, taking turns; "
          f"load average {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
