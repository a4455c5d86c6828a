#!/usr/bin/env python3
# The kernel's floor for closing loopback connections: N pairs (default 9000) opened on 127.0.0.1,
# then closed with a reset (SO_LINGER 0, "rst") or a FIN ("fin"); prints the microseconds per pair.
#
#   ulimit -n 20000; scripts/close-floor.py 9000 rst
import socket, struct, time, sys
n = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
mode = sys.argv[2] if len(sys.argv) > 2 else "rst"
l=socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,1); l.bind(('127.0.0.1',0)); l.listen(4096)
cs=[];ss=[]
for i in range(n):
    c=socket.create_connection(l.getsockname()); s,_=l.accept(); cs.append(c); ss.append(s)
if mode=='rst':
    for c in cs: c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii',1,0))
t=time.perf_counter()
for c in cs: c.close()
t1=time.perf_counter()
for s in ss: s.close()
t2=time.perf_counter()
print(mode, n, "client close %.2f us/conn, server close %.2f us/conn, total %.2f us/pair" % ((t1-t)/n*1e6,(t2-t1)/n*1e6,(t2-t)/n*1e6))
