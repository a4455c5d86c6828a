#!/usr/bin/env python3
"""Push the blocking server's unbounded model (a thread per connection) to the machine's thread
limits and record what gives first, and whether the server still answers.

Starts one server on 127.0.0.1 (ticks and heartbeats off), then several
scripts/hold-connections.py processes that open idle SSE or WebSocket connections one after
another until the server refuses (or their share is open), and hold them for --hold seconds.
Meanwhile it samples the server's /proc/PID/status (threads, RSS) and /proc/PID/maps size
without starting any process (near kernel.pid_max nothing can be forked). When every holder
has stopped opening, it sends the probe (GET /) and GET /stats on raw sockets and records the
answers; after the holders let go, it probes again. Then it stops the holders and the server it
started (SIGTERM by PID) and prints a JSON report, including the server's stderr.

With --pid-ns-max N the server runs as PID 1 of a new PID namespace whose kernel.pid_max is N
(namespaced since Linux 6.14): it meets a real pid_max while the rest of the machine keeps its
pids. With --max-map-count N it raises vm.max_map_count for the run and restores the old value at the
end (the default 65530 stops a process at about 16,000 threads, long before kernel.pid_max).

Every step is bounded in time (--deadline); all traffic stays on 127.0.0.0/8.

Example:
    scripts/push-thread-limit.py --kind ws --processes 2 --per-process 9000 --hold 15
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def proc_reading(pid):
    r = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    r["threads"] = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    r["rss_kib"] = int(line.split()[1])
        with open(f"/proc/{pid}/maps") as f:
            r["maps"] = sum(1 for _ in f)
        r["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        r["gone"] = True
    return r


def system_pids():
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None


def ask(addr, request, timeout=5.0):
    """Sends one request on a fresh connection; returns the status line or what went wrong."""
    host, port = addr.rsplit(":", 1)
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            # The body of /stats follows the head; read a little more for it.
            try:
                while len(data) < 8192:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            head, _, body = data.partition(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            return {"status_line": line or "(closed without an answer)",
                    "body": body[:600].decode(errors="replace"),
                    "seconds": round(time.monotonic() - started, 3)}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}", "seconds": round(time.monotonic() - started, 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "c10k"))
    p.add_argument("--kind", choices=["sse", "ws"], default="ws")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--per-process", type=int, default=9000, help="connections per holder (< 19000)")
    p.add_argument("--hold", type=float, default=15.0, help="seconds holders keep their connections")
    p.add_argument("--deadline", type=float, default=300.0, help="hard cap on the whole run")
    p.add_argument("--max-map-count", type=int, help="raise vm.max_map_count for the run")
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--pid-ns-max", type=int,
                   help="run the server in a new PID namespace with this pid_max (Linux 6.14+)")
    args = p.parse_args()
    started = time.monotonic()
    deadline = started + args.deadline
    report = {"kind": args.kind, "processes": args.processes, "per_process": args.per_process,
              "pid_max": int(open("/proc/sys/kernel/pid_max").read()),
              "threads_max": int(open("/proc/sys/kernel/threads-max").read())}

    old_map_count = int(open("/proc/sys/vm/max_map_count").read())
    report["max_map_count"] = old_map_count
    if args.max_map_count:
        with open("/proc/sys/vm/max_map_count", "w") as f:
            f.write(str(args.max_map_count))
        report["max_map_count"] = args.max_map_count
    server = None
    server_pid = None
    holders = []
    try:
        serve = [args.binary, "serve", "--model", "blocking", "--threads", "unbounded",
                 "--listen", "127.0.0.1:0", "--tick-ms", "0", "--heartbeat-ms", "0",
                 "--idle-timeout-ms", "600000", *args.server_arg]
        if args.pid_ns_max:
            # The server becomes PID 1 of a new PID namespace whose own pid_max is lowered:
            # it meets a real pid_max without taking the host's pids away.
            serve = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                     f"echo {args.pid_ns_max} > /proc/sys/kernel/pid_max && exec \"$0\" \"$@\"",
                     *serve]
        server = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        addr = server.stdout.readline().strip().removeprefix("listening on ")
        server_pid = server.pid
        if args.pid_ns_max:
            with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
                server_pid = int(f.read().split()[0])
            report["pid_ns_max"] = args.pid_ns_max
        stderr_lines = []
        threading.Thread(target=lambda: stderr_lines.extend(server.stderr), daemon=True).start()
        time.sleep(0.3)
        report["server_before"] = proc_reading(server_pid)
        report["system_pids_before"] = system_pids()

        outputs = []
        for i in range(args.processes):
            sources = ",".join(f"127.0.{i + 1}.{j}" for j in range(1, 5))
            h = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "hold-connections.py"), "--target", addr,
                 "--kind", args.kind, "--count", str(args.per_process), "--hold", str(args.hold),
                 "--sources", sources, "--progress", "2000", "--max-failures", "30",
                 "--timeout", "5", "--max-seconds", str(int(args.deadline))],
                stdout=subprocess.PIPE, text=True)
            holders.append(h)
            lines = []
            outputs.append(lines)
            threading.Thread(target=lambda h=h, lines=lines: lines.extend(h.stdout), daemon=True).start()

        samples = []
        peak = {}
        while time.monotonic() < deadline:
            r = proc_reading(server_pid)
            r["t"] = round(time.monotonic() - started, 1)
            r["system_pids"] = system_pids()
            samples.append(r)
            if r.get("threads", 0) >= peak.get("threads", 0):
                peak = r
            if r.get("gone") or server.poll() is not None:
                break
            if all(any(l.startswith("SUMMARY") for l in out) for out in outputs):
                break
            time.sleep(1.0)
        report["samples"] = samples[::max(1, len(samples) // 20)]
        report["peak"] = peak
        report["server_alive_at_peak"] = server.poll() is None
        report["at_peak"] = proc_reading(server_pid)
        report["system_pids_at_peak"] = system_pids()
        report["probes_at_peak"] = [ask(addr, PROBE) for _ in range(3)]
        report["stats_at_peak"] = ask(addr, b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

        for h in holders:
            try:
                h.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                h.send_signal(signal.SIGTERM)
        report["holders"] = [[l.strip() for l in out if l.startswith(("SUMMARY", "first"))]
                             for out in outputs]
        # Give the server a moment to notice the departures and let the threads end.
        settle = time.monotonic() + 20
        while time.monotonic() < settle and server.poll() is None:
            if proc_reading(server_pid).get("threads", 0) < 100:
                break
            time.sleep(0.5)
        report["after_release"] = proc_reading(server_pid)
        report["probe_after_release"] = ask(addr, PROBE)
        report["stats_after_release"] = ask(addr, b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        report["server_exit"] = None
    finally:
        for h in holders:
            if h.poll() is None:
                h.send_signal(signal.SIGTERM)
                try:
                    h.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    h.kill()
        if server is not None:
            if server.poll() is None:
                # In a PID namespace, `server` is unshare: the signal goes to the server itself.
                os.kill(server_pid, signal.SIGTERM)
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            report["server_exit"] = server.returncode
            time.sleep(0.2)
            report["server_stderr"] = [l.rstrip() for l in stderr_lines][:40]
        if args.max_map_count:
            with open("/proc/sys/vm/max_map_count", "w") as f:
                f.write(str(old_map_count))
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
