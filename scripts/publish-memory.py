#!/usr/bin/env python3
"""What a retained history of large events costs: starts `c10k serve` (each model in turn),
publishes COUNT messages of SIZE bytes on one keep-alive connection, and prints the server's RSS
before and after. Everything runs on 127.0.0.1 and stops by itself.

    scripts/publish-memory.py [--bin target/release/c10k] [--count 1100] [--size 64000] [-- SERVER ARGS...]
"""
import argparse, socket, subprocess, sys, time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def publish(addr, count, size):
    host, port = addr.rsplit(":", 1)
    body = b"x" * size
    req = (f"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n").encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as s:
        f = s.makefile("rb")
        for _ in range(count):
            s.sendall(req)
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/c10k")
    p.add_argument("--count", type=int, default=1100)
    p.add_argument("--size", type=int, default=64000)
    p.add_argument("server_args", nargs="*")
    a = p.parse_args()
    print(f"{a.count} publishes of {a.size} B on one connection; RSS in MiB")
    print("| model | RSS before | RSS after |")
    print("|---|---:|---:|")
    for model in ["evented", "blocking"]:
        srv = subprocess.Popen([a.bin, "serve", "--model", model, "--listen", "127.0.0.1:0",
                                "--tick-ms", "0", *a.server_args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            addr = srv.stdout.readline().strip().removeprefix("listening on ")
            time.sleep(0.3)
            before = rss_mib(srv.pid)
            publish(addr, a.count, a.size)
            time.sleep(0.3)
            print(f"| {model} | {before:.1f} | {rss_mib(srv.pid):.1f} |")
        finally:
            srv.terminate()
            srv.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
