#!/usr/bin/env python3
"""Measure what one idle long-lived connection costs a c10k server: threads and userspace RSS.

For each count N: start a fresh server on 127.0.0.1 (ticks and heartbeats off, so the
connections are really idle), read GET /stats, open N connections of one kind with
scripts/hold-connections.py, wait until /stats shows all N, let it settle, read /stats again,
then stop the holder and the server (SIGTERM to the PIDs this script started, nothing else).
Prints one JSON line per N with the deltas and the per-connection cost.

Example:
    scripts/measure-idle-cost.py --model blocking --threads unbounded --kind sse --counts 1000,5000
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
STAT_KEY = {"sse": "sse", "stream": "stream", "ws": "ws", "poll": "poll"}


def stats(addr):
    with urllib.request.urlopen(f"http://{addr}/stats", timeout=10) as r:
        return json.load(r)


def wait_for(addr, pred, seconds):
    deadline = time.monotonic() + seconds
    while True:
        s = stats(addr)
        if pred(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.2)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(args, n):
    server_cmd = [
        args.binary, "serve", "--model", args.model, "--listen", "127.0.0.1:0",
        "--tick-ms", "0", "--heartbeat-ms", "0", "--idle-timeout-ms", "600000",
    ]
    if args.model == "blocking":
        server_cmd += ["--threads", args.threads]
    server_cmd += args.server_arg
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    holder = None
    try:
        line = server.stdout.readline().strip()
        addr = line.removeprefix("listening on ")
        time.sleep(0.5)
        before = wait_for(addr, lambda s: True, 1)
        holder = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "hold-connections.py"), "--target", addr,
             "--kind", args.kind, "--count", str(n), "--hold", str(args.hold),
             "--progress", str(max(n, 1))],
            stdout=subprocess.PIPE, text=True)
        key = STAT_KEY[args.kind]
        during = wait_for(addr, lambda s: s["connections"][key] >= n, args.hold)
        time.sleep(args.settle)
        after = stats(addr)
        opened = after["connections"][key]
        d_rss = after["rss_bytes"] - before["rss_bytes"]
        d_threads = after["threads"] - before["threads"]
        return {
            "model": args.model,
            "threads_flag": args.threads if args.model == "blocking" else None,
            "kind": args.kind,
            "requested": n,
            "open": opened,
            "threads_before": before["threads"],
            "threads_after": after["threads"],
            "rss_before_kib": before["rss_bytes"] // 1024,
            "rss_after_kib": after["rss_bytes"] // 1024,
            "fds_after": after.get("fds"),
            "threads_per_conn": round(d_threads / max(opened, 1), 3),
            "rss_per_conn_kib": round(d_rss / max(opened, 1) / 1024, 2),
            "rejected": after["rejected"],
            "complete": during["connections"][key] >= n,
        }
    finally:
        if holder is not None:
            stop(holder)
        stop(server)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "c10k"))
    p.add_argument("--model", choices=["blocking", "evented"], default="blocking")
    p.add_argument("--threads", default="unbounded")
    p.add_argument("--kind", choices=sorted(STAT_KEY), default="sse")
    p.add_argument("--counts", default="1000,5000")
    p.add_argument("--hold", type=float, default=120.0, help="upper bound on one measurement")
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for serve")
    args = p.parse_args()
    for n in (int(c) for c in args.counts.split(",")):
        print(json.dumps(measure(args, n)), flush=True)


if __name__ == "__main__":
    main()
