#!/usr/bin/env python3
# The kernel's floor for closing loopback connections: PAIRS pairs (default 9000) opened on
# 127.0.0.x, then closed with a reset (SO_LINGER 0, "rst") or a FIN ("fin"); no epoll, no server.
#
# One process: prints the microseconds per pair, the client's close and then the peer's.
# PROCS processes (each PAIRS pairs on its own listening port and source address): all close at
# the same moment, as a load generator's workers do at the end of a run, and the time is from
# that moment until the last of them has exited and been reaped, with the machine's CPU
# (/proc/stat) over the same interval. A million pairs need the tuning of scripts/tune-linux.sh.
#
#   ulimit -n 20000; scripts/close-floor.py 9000 rst
#   scripts/close-floor.py 9000 rst 112        # 1,008,000 pairs held at once, then closed
import os, socket, struct, sys, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
mode = sys.argv[2] if len(sys.argv) > 2 else "rst"
procs = int(sys.argv[3]) if len(sys.argv) > 3 else 1


def open_pairs(source):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", 0))
    l.listen(4096)
    cs, ss = [], []
    for _ in range(n):
        c = socket.socket()
        c.bind((source, 0))
        c.connect(l.getsockname())
        s, _ = l.accept()
        if mode == "rst":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cs.append(c)
        ss.append(s)
    l.close()
    return cs, ss


def busy_jiffies():
    # user nice system idle iowait irq softirq steal: everything but idle and iowait.
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(f) - f[3] - f[4]


if procs == 1:
    cs, ss = open_pairs("127.0.0.1")
    t = time.perf_counter()
    for c in cs:
        c.close()
    t1 = time.perf_counter()
    for s in ss:
        s.close()
    t2 = time.perf_counter()
    print(mode, n, "client close %.2f us/conn, server close %.2f us/conn, total %.2f us/pair"
          % ((t1 - t) / n * 1e6, (t2 - t1) / n * 1e6, (t2 - t) / n * 1e6))
    sys.exit(0)

ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
children = []
for k in range(procs):
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        cs, ss = open_pairs("127.%d.%d.%d" % (1 + k // 62500, k // 250 % 250, 2 + k % 250))
        os.write(ready_w, b".")
        os.read(go_r, 1)  # end of file: the parent says go
        for c in cs:
            c.close()
        for s in ss:
            s.close()
        os._exit(0)
    children.append(pid)
os.close(ready_w)
os.close(go_r)
got = 0
while got < procs:
    b = os.read(ready_r, procs)
    if not b:
        sys.exit("close-floor: a process failed to open its pairs")
    got += len(b)
hz = os.sysconf("SC_CLK_TCK")
busy0 = busy_jiffies()
t = time.perf_counter()
os.close(go_w)
for _ in children:
    os.wait()
wall = time.perf_counter() - t
cpu = (busy_jiffies() - busy0) / hz
pairs = n * procs
print(mode, pairs, "pairs in %d processes: closed and reaped in %.2f s, %.2f us/pair of wall time,"
      " %.1f s of CPU (%.1f us/pair)" % (procs, wall, wall / pairs * 1e6, cpu, cpu / pairs * 1e6))
